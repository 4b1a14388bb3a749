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
    // full, everything before `before`.
    let gone_before = if keys.len() < at_most {
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
        self.write(Write {
            ops: vec![Op::DropEntries {
                before,
                at_most: BATCH,
            }],
            only_if_present: None,
        })
        .await?;
        let end = super::ledger_key_at(before);
        Ok(self
            .first_key(Table::Ledger)?
            .is_some_and(|first| first < end))
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
