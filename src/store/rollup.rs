//! Hourly sums of the ledger, kept beside it so that a report costs the
//! same at ten million entries as at ten thousand.
//!
//! Every settlement adds its entry to one row: the hour it settled in and
//! what it is grouped by (provider, model, door, session, the client's own
//! session and the budgets charged). The row is updated by the writer thread
//! in the same transaction as the entry (see `writer::settle`), so the sums
//! and the ledger never disagree, and a settlement written again after a
//! failure is not added twice. Rows are never dropped: the ledger's
//! retention (`retention`) removes old entries, and the sums answer for them.
//!
//! A row's key is the hour (big-endian, so rows sort by time) followed by
//! the grouping's JSON; its value is eight integers. A reader takes the rows
//! of the hours it needs by one range read.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use redb::{ReadableTable, Table as RedbTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{LedgerEntry, StoreError, Table};

/// Seconds in the sums' granularity.
pub const HOUR_SECS: i64 = 3600;

/// What a row groups its entries by. Everything a report can group by is
/// here, so any grouping is a sum over rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dims {
    /// The provider that answered, or `cache`.
    pub provider: String,
    /// The model that answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) door: Option<String>,
    /// The p402 session charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The client's own session (an agent run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
    /// The file-declared budgets charged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<String>,
}

impl Dims {
    /// The row an entry is added to.
    pub(crate) fn of(entry: &LedgerEntry) -> Self {
        Dims {
            provider: entry.provider.clone(),
            model: entry.model.clone(),
            door: entry.door.clone(),
            session: entry.session.clone(),
            client_session: entry.client_session.clone(),
            budgets: entry.budgets.clone(),
        }
    }
}

/// What the entries of a row add up to. Money in nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    /// Entries added.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost_nanos: i64,
    pub(crate) direct_nanos: i64,
    /// What answers from the cache saved (their direct cost less their
    /// cost), the part of the savings the cache earned.
    pub cache_savings_nanos: i64,
    /// Answers served from the cache.
    pub cached: u64,
    /// Charges computed from counted tokens (the provider sent no usage).
    pub estimated: u64,
}

/// The stored width of [`Sums`]: eight 8-byte integers.
const SUMS_BYTES: usize = 64;

impl Sums {
    /// One entry's contribution.
    pub(crate) fn of(entry: &LedgerEntry) -> Self {
        Sums {
            requests: 1,
            input_tokens: entry.input_tokens,
            output_tokens: entry.output_tokens,
            cost_nanos: entry.cost_nanos,
            direct_nanos: entry.direct_nanos,
            cache_savings_nanos: if entry.cached {
                entry.direct_nanos.saturating_sub(entry.cost_nanos)
            } else {
                0
            },
            cached: u64::from(entry.cached),
            estimated: u64::from(entry.estimated),
        }
    }

    pub(crate) fn add(&mut self, other: &Sums) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        self.direct_nanos = self.direct_nanos.saturating_add(other.direct_nanos);
        self.cache_savings_nanos = self
            .cache_savings_nanos
            .saturating_add(other.cache_savings_nanos);
        self.cached = self.cached.saturating_add(other.cached);
        self.estimated = self.estimated.saturating_add(other.estimated);
    }

    fn to_bytes(self) -> [u8; SUMS_BYTES] {
        let fields = [
            self.requests.to_be_bytes(),
            self.input_tokens.to_be_bytes(),
            self.output_tokens.to_be_bytes(),
            self.cost_nanos.to_be_bytes(),
            self.direct_nanos.to_be_bytes(),
            self.cache_savings_nanos.to_be_bytes(),
            self.cached.to_be_bytes(),
            self.estimated.to_be_bytes(),
        ];
        let mut out = [0u8; SUMS_BYTES];
        for (slot, field) in out.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&field);
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != SUMS_BYTES {
            return Err(StoreError::Malformed(format!(
                "an hourly sum of {} bytes, not {SUMS_BYTES}",
                bytes.len()
            )));
        }
        let mut fields = bytes.chunks_exact(8).map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            word
        });
        let mut next = || fields.next().unwrap_or_default();
        Ok(Sums {
            requests: u64::from_be_bytes(next()),
            input_tokens: u64::from_be_bytes(next()),
            output_tokens: u64::from_be_bytes(next()),
            cost_nanos: i64::from_be_bytes(next()),
            direct_nanos: i64::from_be_bytes(next()),
            cache_savings_nanos: i64::from_be_bytes(next()),
            cached: u64::from_be_bytes(next()),
            estimated: u64::from_be_bytes(next()),
        })
    }
}

/// The hour `time` falls in, as hours since 1970 (0 for anything before).
pub fn hour_of(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp().div_euclid(HOUR_SECS)).unwrap_or(0)
}

/// The start of hour number `hour`.
pub fn hour_start(hour: u64) -> DateTime<Utc> {
    let secs = i64::try_from(hour)
        .unwrap_or(i64::MAX / HOUR_SECS)
        .saturating_mul(HOUR_SECS);
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What one settlement adds to the sums: the row's key and the amounts.
#[derive(Debug, Clone)]
pub struct Addition {
    key: Vec<u8>,
    sums: Sums,
}

/// [`Dims`] borrowed from an entry, for a row's key: written exactly as
/// [`Dims`] is (a row is found by these bytes), without copying the
/// entry's strings on every settlement.
#[derive(Serialize)]
struct DimsOf<'a> {
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    door: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_session: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    budgets: &'a [String],
}

impl<'a> DimsOf<'a> {
    fn of(entry: &'a LedgerEntry) -> Self {
        DimsOf {
            provider: &entry.provider,
            model: entry.model.as_deref(),
            door: entry.door.as_deref(),
            session: entry.session.as_deref(),
            client_session: entry.client_session.as_deref(),
            budgets: &entry.budgets,
        }
    }
}

impl Addition {
    /// What settling `entry` adds; fails only if its grouping cannot be
    /// encoded as the row key.
    pub(crate) fn of(entry: &LedgerEntry) -> Result<Self, StoreError> {
        Ok(Addition {
            key: key(hour_of(entry.time), &DimsOf::of(entry))?,
            sums: Sums::of(entry),
        })
    }

    /// The row's key, for tests that write a row of their own.
    #[cfg(test)]
    pub(super) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The rows a run of settlements in one transaction adds to, held until
/// the run ends and then written once each. The settlements of a group
/// commit mostly share a few rows (one hour, one model, one door), so
/// each row is read and written once per commit instead of once per
/// request: most of what the sums cost the writer thread.
#[derive(Debug, Default)]
pub(super) struct Pending {
    rows: BTreeMap<Vec<u8>, Sums>,
}

impl Pending {
    /// Adds `addition` to its row, read from the table the first time this
    /// run meets it. An unreadable row fails the settlement alone: it is
    /// read and checked before anything is added or written.
    pub(super) fn add(
        &mut self,
        rows: &RedbTable<&'static [u8], &'static [u8]>,
        addition: &Addition,
    ) -> Result<(), StoreError> {
        if let Some(sums) = self.rows.get_mut(addition.key.as_slice()) {
            sums.add(&addition.sums);
            return Ok(());
        }
        let mut sums = match rows.get(addition.key.as_slice())? {
            Some(bytes) => Sums::from_bytes(bytes.value())?,
            None => Sums::default(),
        };
        sums.add(&addition.sums);
        self.rows.insert(addition.key.clone(), sums);
        Ok(())
    }

    /// Writes every row the run added to, in the same transaction.
    pub(super) fn write(
        self,
        rows: &mut RedbTable<&'static [u8], &'static [u8]>,
    ) -> Result<(), StoreError> {
        for (key, sums) in self.rows {
            rows.insert(key.as_slice(), sums.to_bytes().as_slice())?;
        }
        Ok(())
    }
}

fn key(hour: u64, dims: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    let mut key = Vec::with_capacity(128);
    key.extend_from_slice(&hour.to_be_bytes());
    serde_json::to_writer(&mut key, dims)?;
    Ok(key)
}

/// One row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub(crate) hour: u64,
    pub(crate) dims: Dims,
    pub(crate) sums: Sums,
}

/// The rows of the hours from `first` up to and including `last`, in hour
/// order.
pub(super) fn read(
    rows: &impl ReadableTable<&'static [u8], &'static [u8]>,
    first: u64,
    last: u64,
) -> Result<Vec<Row>, StoreError> {
    let start = first.to_be_bytes();
    let mut out = Vec::new();
    for item in rows.range::<&[u8]>(start.as_slice()..)? {
        let (key, value) = item?;
        let key = key.value();
        let Some((hour, dims)) = key.split_first_chunk::<8>() else {
            return Err(StoreError::Malformed(
                "an hourly sum's key is too short".to_string(),
            ));
        };
        let hour = u64::from_be_bytes(*hour);
        if hour > last {
            break;
        }
        out.push(Row {
            hour,
            dims: serde_json::from_slice(dims)?,
            sums: Sums::from_bytes(value.value())?,
        });
    }
    Ok(out)
}

/// The version of the sums' layout a database holds, in [`Table::Meta`];
/// absent in a database written before the sums existed.
const VERSION_KEY: &[u8] = b"rollup_version";
const VERSION: &[u8] = b"1";

/// Builds the sums from the whole ledger, once: for a database from before
/// they existed (or an empty one). One transaction writes every row and the
/// version mark together, so a crash half-way leaves neither and the next
/// start begins again. Runs before the writer thread starts, so no
/// settlement can slip between the read and the write.
pub(super) fn build_if_missing(db: &redb::Database) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        let meta = tx.open_table(Table::Meta.definition())?;
        if meta.get(VERSION_KEY)?.is_some() {
            return Ok(());
        }
    }
    let entries = {
        let ledger = tx.open_table(Table::Ledger.definition())?;
        redb::ReadableTableMetadata::len(&ledger)?
    };
    if entries > 0 {
        tracing::info!("building the ledger's hourly sums from its {entries} entries (once)");
    }
    let sums = sum_ledger(&tx)?;
    tx.delete_table(Table::Rollup.definition())?;
    {
        let mut rows = tx.open_table(Table::Rollup.definition())?;
        for (key, sums) in &sums {
            rows.insert(key.as_slice(), sums.to_bytes().as_slice())?;
        }
        let mut meta = tx.open_table(Table::Meta.definition())?;
        meta.insert(VERSION_KEY, VERSION)?;
    }
    tx.commit()?;
    if entries > 0 {
        tracing::info!(rows = sums.len(), "the ledger's hourly sums are built");
    }
    Ok(())
}

fn sum_ledger(tx: &WriteTransaction) -> Result<BTreeMap<Vec<u8>, Sums>, StoreError> {
    let ledger = tx.open_table(Table::Ledger.definition())?;
    let mut sums: BTreeMap<Vec<u8>, Sums> = BTreeMap::new();
    for item in ledger.iter()? {
        let (_, value) = item?;
        let entry: LedgerEntry = serde_json::from_slice(value.value())?;
        let addition = Addition::of(&entry)?;
        sums.entry(addition.key).or_default().add(&addition.sums);
    }
    Ok(sums)
}

/// How far before a period's start the ledger is read for the entries of
/// its first, partial hour: an entry's key is the time its request began,
/// its `time` when it settled, and a long stream settles minutes later.
pub const LOOKBACK_SECS: i64 = 15 * 60;

/// What the ledger adds up to from a time on, as sums by grouping.
#[derive(Debug, Clone)]
pub struct Period {
    /// Each part at the time it stands for: an hour's start for a row, an
    /// entry's own time for the entries of a partial first hour.
    pub parts: Vec<Part>,
    /// The time the sums start at: the one asked for, or the start of its
    /// hour when the entries of that hour are no longer kept.
    pub start: DateTime<Utc>,
    /// When the period reaches past the entries kept: the time before which
    /// they were dropped (`[ledger] keep_entries_days`).
    pub entries_dropped_before: Option<DateTime<Utc>>,
}

/// One row of a [`Period`] (an hour's sums for one grouping), or one
/// entry of a partial first hour.
#[derive(Debug, Clone)]
pub struct Part {
    /// The hour's start, or the entry's own time.
    pub time: DateTime<Utc>,
    pub(crate) dims: Dims,
    pub(crate) sums: Sums,
}

/// The sums from `since` on, read in one snapshot: every whole hour from
/// its row, and the hour `since` falls inside of from its entries, so that
/// the period starts exactly at `since` while those are kept. The work is
/// the number of hours and groupings, never the number of entries, except
/// for that one hour.
pub(super) fn period(
    tx: &redb::ReadTransaction,
    since: DateTime<Utc>,
) -> Result<Period, StoreError> {
    let meta = tx.open_table(Table::Meta.definition())?;
    let dropped = super::retention::dropped_before(&meta)?;
    let reaches_past = dropped.filter(|d| since < *d);
    let first = hour_of(since);
    let first_start = hour_start(first);
    let exact_hour = first_start == since;
    let scan_from = since - chrono::Duration::seconds(LOOKBACK_SECS);
    let edge_kept = dropped.is_none_or(|d| scan_from >= d);
    let mut parts = Vec::new();
    let (start, whole_from) = if exact_hour || !edge_kept {
        (if exact_hour { since } else { first_start }, first)
    } else {
        let next = hour_start(first + 1);
        let ledger = tx.open_table(Table::Ledger.definition())?;
        let from = super::ledger_key_at(scan_from);
        let to = super::ledger_key_at(next);
        for item in ledger.range::<&[u8]>(from.as_slice()..to.as_slice())? {
            let (_, value) = item?;
            let entry: LedgerEntry = serde_json::from_slice(value.value())?;
            if entry.time >= since && entry.time < next {
                parts.push(Part {
                    time: entry.time,
                    dims: Dims::of(&entry),
                    sums: Sums::of(&entry),
                });
            }
        }
        (since, first + 1)
    };
    let rows = tx.open_table(Table::Rollup.definition())?;
    for row in read(&rows, whole_from, u64::MAX)? {
        parts.push(Part {
            time: hour_start(row.hour),
            dims: row.dims,
            sums: row.sums,
        });
    }
    Ok(Period {
        parts,
        start,
        entries_dropped_before: reaches_past,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_their_bytes() {
        let sums = Sums {
            requests: 3,
            input_tokens: 10,
            output_tokens: 20,
            cost_nanos: -5,
            direct_nanos: i64::MAX,
            cache_savings_nanos: 7,
            cached: 1,
            estimated: 2,
        };
        assert_eq!(Sums::from_bytes(&sums.to_bytes()).expect("read"), sums);
        assert!(Sums::from_bytes(&[0; 12]).is_err());
    }

    /// A row's key is the same bytes whether written from the entry or
    /// from the grouping read back, so that an entry adds to its row.
    #[test]
    fn keys_from_an_entry_are_the_keys_of_its_grouping() {
        let bare = crate::store::tests_support::entry("req_a");
        let full = LedgerEntry {
            door: Some("chat".into()),
            session: Some("sess_1".into()),
            client_session: Some("run \"7\"".into()),
            budgets: vec!["daily".into(), "team".into()],
            model: None,
            ..crate::store::tests_support::entry("req_b")
        };
        for entry in [&bare, &full] {
            let hour = hour_of(entry.time);
            assert_eq!(
                key(hour, &DimsOf::of(entry)).expect("key"),
                key(hour, &Dims::of(entry)).expect("key"),
            );
        }
    }

    #[test]
    fn hours_count_from_1970() {
        let at = |h, m, s| {
            Utc.with_ymd_and_hms(2026, 12, 6, h, m, s)
                .single()
                .expect("time")
        };
        let hour = hour_of(at(7, 59, 59));
        assert_eq!(hour_start(hour), at(7, 0, 0));
        assert_eq!(hour_of(hour_start(hour + 1)), hour + 1);
    }
}
