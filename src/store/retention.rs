//! Dropping ledger entries older than `[ledger] keep_entries_days`.
//!
//! The ledger grows by a few hundred bytes a request; the hourly sums
//! (`rollup`) answer every report, so old entries are needed only to audit
//! one request or export it. They are dropped in batches of [`BATCH`], each
//! one ordinary write of the writer thread, sent one at a time: a
//! settlement waits for at most one small batch, never for the whole drop.
//!
//! Nothing that decides money reads entries: budgets and sessions are the
//! running totals of the `spend` table, and reports read the sums. The time
//! before which entries are gone is kept in [`Table::Meta`], so that a
//! report reaching past it can say so and count whole hours from the sums.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Op, Store, StoreError, Table, Write};

/// Entries removed per write: a few milliseconds of the writer's time.
pub const BATCH: usize = 500;
/// The pause between two batches, so that settlements have the writer to
/// themselves most of the time while a large backlog is dropped.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);
/// How often the ledger is looked at once nothing is due.
const EVERY: Duration = Duration::from_secs(600);

/// The time before which entries were dropped, as milliseconds since 1970
/// (big-endian), in [`Table::Meta`].
const DROPPED_BEFORE_KEY: &[u8] = b"entries_dropped_before";

/// When entries were last dropped: everything settled before this time is
/// gone from the ledger (and only counted in the sums).
pub(super) fn dropped_before(
    meta: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let Some(value) = meta.get(DROPPED_BEFORE_KEY)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value
        .value()
        .try_into()
        .map_err(|_| StoreError::Malformed("the retention mark is not 8 bytes".to_string()))?;
    Ok(Utc.timestamp_millis_opt(i64::from_be_bytes(bytes)).single())
}

/// Removes up to `at_most` entries whose keys are before `before`'s, and
/// moves the retention mark forward to what is now gone. Called by the
/// writer thread for [`Op::DropEntries`].
pub(super) fn drop_entries(
    tx: &WriteTransaction,
    before: DateTime<Utc>,
    at_most: usize,
) -> Result<(), StoreError> {
    let mut ledger = tx.open_table(Table::Ledger.definition())?;
    let end = super::ledger_key_at(before);
    let mut keys = Vec::with_capacity(at_most.min(BATCH));
    for item in ledger.range::<&[u8]>(..end.as_slice())?.take(at_most) {
        let (key, _) = item?;
        keys.push(key.value().to_vec());
    }
    for key in &keys {
        ledger.remove(key.as_slice())?;
    }
    // Everything before the last key removed is gone; with the batch not
    // full, everything before `before`. Nothing removed, nothing to mark:
    // a ledger younger than the retention has dropped nothing.
    let gone_before = if keys.is_empty() {
        None
    } else if keys.len() < at_most {
        Some(before)
    } else {
        keys.last().and_then(|key| super::ledger_key_time(key))
    };
    let mut meta = tx.open_table(Table::Meta.definition())?;
    let known = dropped_before(&meta)?;
    if let Some(gone) = gone_before.filter(|gone| known.is_none_or(|known| *gone > known)) {
        meta.insert(
            DROPPED_BEFORE_KEY,
            gone.timestamp_millis().to_be_bytes().as_slice(),
        )?;
    }
    Ok(())
}

impl Store {
    /// Drops one batch of entries settled before `before`; says whether
    /// any such entry is left.
    pub async fn drop_entries_before(&self, before: DateTime<Utc>) -> Result<bool, StoreError> {
        let end = super::ledger_key_at(before);
        let due = |first: Option<Vec<u8>>| first.is_some_and(|first| first < end);
        // Nothing due, no write: most rounds cost the writer nothing.
        if !due(self.first_key(Table::Ledger)?) {
            return Ok(false);
        }
        self.write(Write {
            ops: vec![Op::DropEntries {
                before,
                at_most: BATCH,
            }],
            only_if_present: None,
        })
        .await?;
        Ok(due(self.first_key(Table::Ledger)?))
    }

    /// The time before which entries were dropped, if any were.
    pub fn entries_dropped_before(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        dropped_before(&tx.open_table(Table::Meta.definition())?)
    }
}

/// Keeps the ledger to `keep()` (read again each round, so a reload takes
/// effect; `None` keeps everything), for as long as the store is open.
/// Failures are logged and tried again next round: a full disk must not
/// stop the proxy, and settlements go on regardless.
pub async fn run(store: Store, keep: impl Fn() -> Option<chrono::Duration>) {
    loop {
        let mut rest = EVERY;
        if let Some(keep) = keep() {
            let before = Utc::now() - keep;
            match store.drop_entries_before(before).await {
                Ok(true) => rest = BETWEEN_BATCHES,
                Ok(false) => {}
                Err(StoreError::WriterStopped) => return,
                Err(e) => tracing::warn!("could not drop old ledger entries: {e}"),
            }
        }
        tokio::time::sleep(rest).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::report::{self, GroupBy};
    use crate::store::tests_support::entry_at;
    use crate::store::Totals;

    /// Old entries are dropped batch by batch until none is left; the
    /// reports over the whole period, the budgets' and sessions' totals and
    /// the recent entries are as they were, and a report reaching back past
    /// the drop says so.
    #[tokio::test]
    async fn old_entries_go_and_nothing_that_counts_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let now = Utc::now();
        let accounts = vec!["session:s".to_string(), "budget:b:total".to_string()];
        let mut old = Vec::new();
        let mut recent = Vec::new();
        // Entries settled 20 to 10 days ago, then in the last day.
        for n in 0..(BATCH as i64 * 2 + 37) {
            let began = now - chrono::Duration::days(20) + chrono::Duration::minutes(n * 10);
            let entry = crate::store::LedgerEntry {
                cost_nanos: n,
                direct_nanos: 2 * n,
                ..entry_at(began, chrono::Duration::seconds(3))
            };
            store.record(&entry, &accounts).await.expect("record");
            old.push(entry);
        }
        for n in 0..40 {
            let began = now - chrono::Duration::hours(20) + chrono::Duration::minutes(n * 5);
            let entry = entry_at(began, chrono::Duration::seconds(1));
            store.record(&entry, &accounts).await.expect("record");
            recent.push(entry);
        }
        let since = crate::store::rollup::hour_start(crate::store::rollup::hour_of(
            now - chrono::Duration::days(30),
        ));
        let before = report::build(&store, since, GroupBy::Day).expect("report");
        let totals = store.totals("session:s").expect("totals");
        assert!(before.entries_dropped_before.is_none());
        // Nothing older than 30 days: nothing dropped, and nothing claimed.
        let nothing_due = now - chrono::Duration::days(30);
        assert!(!store.drop_entries_before(nothing_due).await.expect("drop"));
        assert_eq!(store.entries_dropped_before().expect("mark"), None);
        assert_eq!(store.ledger_len(), old.len() + recent.len());

        // Kept to the millisecond, as the ledger's keys are.
        let cutoff = chrono::DurationRound::duration_trunc(
            now - chrono::Duration::days(2),
            chrono::Duration::milliseconds(1),
        )
        .expect("cutoff");
        let mut rounds = 0;
        while store.drop_entries_before(cutoff).await.expect("drop") {
            rounds += 1;
            assert!(rounds < 10, "the drop does not end");
        }
        // Two full batches and a last one.
        assert_eq!(rounds, 2);

        assert_eq!(store.ledger_len(), recent.len());
        assert!(store.entry(&old[0].request_id).expect("read").is_none());
        assert!(store
            .entry(&old[old.len() - 1].request_id)
            .expect("read")
            .is_none());
        assert!(store.entry(&recent[0].request_id).expect("read").is_some());
        assert_eq!(store.entries_dropped_before().expect("mark"), Some(cutoff));

        let after = report::build(&store, since, GroupBy::Day).expect("report");
        assert_eq!(after.rows, before.rows);
        assert_eq!(after.total, before.total);
        assert_eq!(
            after.entries_dropped_before,
            Some(cutoff.to_rfc3339()),
            "the report says it reaches past the entries kept"
        );
        let table = report::table_from(&serde_json::to_value(&after).expect("json"));
        assert!(
            table.contains("reaches past the ledger entries kept"),
            "{table}"
        );
        // From inside an hour whose entries are gone: that whole hour.
        let inside = old[5].time + chrono::Duration::seconds(1);
        let whole = report::build(&store, inside, GroupBy::Provider).expect("report");
        assert_eq!(
            whole.since,
            crate::store::rollup::hour_start(crate::store::rollup::hour_of(inside)).to_rfc3339()
        );
        // Within the entries kept: nothing to say.
        let kept = report::build(&store, now - chrono::Duration::days(1), GroupBy::Provider)
            .expect("report");
        assert!(kept.entries_dropped_before.is_none());
        assert_eq!(kept.total.requests, 40);

        assert_eq!(store.totals("session:s").expect("totals"), totals);
        assert_eq!(
            store.totals("budget:b:total").expect("totals"),
            Totals {
                requests: old.len() as u64 + 40,
                ..totals
            }
        );
    }
}
