//! The database: the ledger of settled requests, sessions, spend totals per
//! account, and the cache's entries, in one redb file
//! (`<data_dir>/p402.redb`).
//!
//! A settled request is written to the ledger and added to every account it
//! was charged to in one transaction, committed durably before the response
//! ends, so `kill -9` at any moment leaves either the whole charge or none of
//! it. Every write goes through one thread (`writer`), where concurrent
//! settlements share fsyncs; reads are redb's snapshots and never wait for
//! a write.
//!
//! Why redb and not sled: sled 0.34 deadlocked under p402's load
//! (issue 25; spacejam/sled#1412). A writer holding sled's segment
//! accountant waited for a file truncation queued on sled's I/O pool, whose
//! threads all waited for that accountant, and nothing in the way p402 used
//! sled could rule it out. redb runs no threads of its own: a write is done
//! by the thread that commits it. Data dirs from before are migrated once
//! (`migrate`).
//!
//! Reports read hourly sums (`rollup`) kept in the same transactions as the
//! entries, never the entries themselves, so that their cost does not grow
//! with the ledger; old entries are dropped (`retention`).

mod entry;
mod migrate;
pub mod retention;
pub mod rollup;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use entry::{Forwarded, LedgerEntry, Totals};
use writer::{Done, Job, Settlement, Slot, Writer};

/// Why a store operation failed; `Locked`, `Damaged` and `Migrate` tell
/// the operator what to do, the rest are for the log and `/health`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb itself failed (I/O, a transaction, a table).
    #[error("the database failed: {0}")]
    Db(#[from] redb::Error),
    /// A JSON record that does not parse.
    #[error("a stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A record of p402's own binary layout that does not follow it.
    #[error("a stored record is malformed: {0}")]
    Malformed(String),
    /// The writer's last commit failed, for this reason; shared (`Arc`)
    /// because one failure answers every write of its group.
    #[error("the database could not commit: {0}")]
    Commit(Arc<String>),
    /// The writer thread could not be spawned.
    #[error("the database writer thread could not start: {0}")]
    Thread(std::io::Error),
    /// The writer thread is gone, so nothing more can be written.
    #[error("the database writer has stopped")]
    WriterStopped,
    /// Another process holds the database's lock.
    #[error(
        "the database {} is in use by another p402{holder}: stop it, or give this one another data_dir",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// ` (pid N)`, or empty when the pid is unknown.
        holder: String,
    },
    /// The file is not a database redb can read (truncated, overwritten).
    #[error(
        "the database {shown} is damaged ({detail}) and cannot be read. Move it aside to start with an empty ledger and cache (mv {shown} {shown}.damaged; the spend it recorded is then not counted), or restore a backup",
        shown = path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What redb found wrong.
        detail: String,
    },
    /// A write was not done within this long ([`DEADLINE`]).
    #[error("the database did not finish a write within {0:?}: the disk or the database is stuck")]
    Stalled(Duration),
    /// The old sled data dir could not be copied into redb.
    #[error("the database from before p402 moved to redb could not be migrated: {0}")]
    Migrate(String),
    /// A read came while the writer swaps in a reopened database; the next
    /// one will find it.
    #[error("the database is being reopened after a failed write")]
    Reopening,
    /// Something the code guarantees did not hold: a bug, not bad data.
    #[error("internal error: {0}")]
    Invariant(&'static str),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// A key and its value, as read from a table.
pub type Record = (Vec<u8>, Vec<u8>);

/// The tables; keys and values are bytes, ordered as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// request id -> [`LedgerEntry`] (JSON).
    Ledger,
    /// session id -> session (JSON).
    Sessions,
    /// account -> [`Totals`] (JSON).
    Spend,
    /// cache entry id -> entry (see `cache::record`).
    Cache,
    /// cache entry id -> the entry's index record.
    CacheIndex,
    /// `<account>@<threshold>` -> a budget alert and its delivery (JSON,
    /// see `alerts`).
    Alerts,
    /// hour and grouping -> the ledger's sums for them (`rollup`).
    Rollup,
    /// The database's own marks: the sums' version, the retention mark.
    Meta,
}

impl Table {
    const ALL: [Table; 8] = [
        Table::Ledger,
        Table::Sessions,
        Table::Spend,
        Table::Cache,
        Table::CacheIndex,
        Table::Alerts,
        Table::Rollup,
        Table::Meta,
    ];

    /// The names are sled's tree names, so that a migrated data dir reads
    /// the same.
    pub fn name(self) -> &'static str {
        match self {
            Table::Ledger => "ledger",
            Table::Sessions => "sessions",
            Table::Spend => "spend",
            Table::Cache => "cache",
            Table::CacheIndex => "cache_index",
            Table::Alerts => "alerts",
            Table::Rollup => "rollup",
            Table::Meta => "meta",
        }
    }

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

/// One change, applied by the writer thread in order with every other.
#[derive(Debug, Clone)]
pub enum Op {
    /// Sets a key's value in a table.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Removes a key, if present.
    Remove(Table, Vec<u8>),
    /// Empties a table.
    Clear(Table),
    /// Remove up to `at_most` ledger entries begun before `before`
    /// (`retention`).
    DropEntries {
        /// Entries whose request began before this are dropped.
        before: DateTime<Utc>,
        /// The most to drop in one transaction, so that it stays short.
        at_most: usize,
    },
}

/// Changes applied together, atomically.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// The changes, applied in order.
    pub ops: Vec<Op>,
    /// Apply only while this key is present in this table: a cache hit's
    /// count must not bring back an entry cleared or evicted since.
    pub only_if_present: Option<(Table, Vec<u8>)>,
}

/// How long an operation on the request path waits for the database before
/// it gives up and says the store is stuck. A durable commit takes well
/// under a millisecond on a working disk.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The store's condition, for `/health` and the systemd watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Commits succeed and none is overdue.
    Ok,
    /// The last commit failed (disk full, I/O error), for this reason; the
    /// writer keeps reopening the database until one succeeds.
    Failing(String),
    /// A write has been under way for longer than [`DEADLINE`].
    Stalled(Duration),
}

/// A cheap-to-clone handle; the writer thread lives as long as the last one.
#[derive(Clone)]
pub struct Store {
    /// Empty only for the moment the writer reopens a failed database.
    db: Slot,
    writer: Arc<Writer>,
}

/// The database file in a data dir.
const FILE: &str = "p402.redb";
/// The process id of the p402 that has the database open, written beside
/// it so that a second one can say who holds the lock.
const PID_FILE: &str = "p402.pid";

/// How long `Store::open` waits for the database's lock. Within one process
/// a store that was just closed can still hold it for a moment, until the
/// last handle (a cache's loader thread, say) lets go; a p402 that is
/// running holds it for good, and the error then says so.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// redb's page cache. Reads are of small records; the cache's index lives
/// in memory on its own.
const PAGE_CACHE_BYTES: usize = 64 << 20;

/// A file redb cannot make sense of (truncated, overwritten) is reported
/// as damaged, with the way out; any other failure as it is.
fn damaged_or(error: redb::DatabaseError, path: &Path) -> StoreError {
    use std::io::ErrorKind;
    match error {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Damaged {
                path: path.to_path_buf(),
                detail,
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData) =>
        {
            StoreError::Damaged {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
        e => StoreError::from(e),
    }
}

/// Opens (or creates) the database file, with every table in it so that
/// reads need not ask.
fn open_file(path: &Path) -> Result<redb::Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
        .map_err(|e| damaged_or(e, path))?;
    let tx = db.begin_write()?;
    for table in Table::ALL {
        tx.open_table(table.definition())?;
    }
    tx.commit()?;
    Ok(db)
}

impl Store {
    /// Opens the database in the data dir `dir` (migrating a sled one
    /// first), waits a moment for a lock a closing store still holds,
    /// builds the hourly sums if missing and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        migrate::from_sled_if_present(dir, &path)?;
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match open_file(&path) {
                Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) => {
                    let holder = std::fs::read_to_string(dir.join(PID_FILE))
                        .ok()
                        .and_then(|pid| pid.trim().parse::<u32>().ok())
                        .map_or_else(String::new, |pid| format!(" (pid {pid})"));
                    return Err(StoreError::Locked { path, holder });
                }
                Err(e) => return Err(e),
                Ok(db) => break db,
            }
        };
        rollup::build_if_missing(&db)?;
        // Best effort: only the message of a second p402 depends on it.
        let _ = std::fs::write(dir.join(PID_FILE), std::process::id().to_string());
        let db: Slot = Arc::new(arc_swap::ArcSwapOption::from_pointee(db));
        Ok(Store {
            writer: Arc::new(Writer::start(Arc::clone(&db), path)?),
            db,
        })
    }

    /// The database to read from.
    fn db(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.db.load_full().ok_or(StoreError::Reopening)
    }

    /// Makes everything written so far durable, on the writer thread.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.wait(|done| Job::Flush { done }).await
    }

    /// Flushes from synchronous code (the CLI).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.wait_blocking(|done| Job::Flush { done })
    }

    /// Writes a settled request and adds it to `accounts`, atomically and
    /// durably.
    pub async fn record(&self, entry: &LedgerEntry, accounts: &[String]) -> Result<(), StoreError> {
        let settlement = Self::settlement(entry, accounts)?;
        self.wait(|done| Job::Settle {
            settlement,
            done: Some(done),
        })
        .await
    }

    /// Queues an entry and returns at once, so that its request waits
    /// neither for the disk nor for the writer thread: a cache hit's free
    /// entry, or an unbudgeted request's. The entry is written in order
    /// with every other settlement, group-committed durably with the others
    /// of its window (see [`Store::set_group_commit_window`]): a crash in
    /// between loses the record of a free answer or of one no budget
    /// counts, never a budget's charge. Readers that must see it wait for
    /// [`Store::caught_up`] first.
    pub fn record_queued(
        &self,
        entry: &LedgerEntry,
        accounts: &[String],
    ) -> Result<(), StoreError> {
        self.writer.send(Job::Settle {
            settlement: Self::settlement(entry, accounts)?,
            done: None,
        })
    }

    /// How long writes nobody waits for (unbudgeted ledger entries, cache
    /// writes) are held, so that those of one window share one commit.
    pub fn set_group_commit_window(&self, window: std::time::Duration) {
        self.writer.set_window(window);
    }

    /// Returns once every entry recorded before the call is in the ledger,
    /// so that a report or an audit read right after an answer includes it.
    pub async fn caught_up(&self) -> Result<(), StoreError> {
        self.wait(|done| Job::Caught { done }).await
    }

    /// Applies `write` and returns once it is committed (not necessarily
    /// durable: see `writer`).
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.wait(|done| Job::Write {
            write,
            durable: false,
            done: Some(done),
        })
        .await
    }

    /// [`Store::write`] from synchronous code, durably if asked.
    pub fn write_blocking(&self, write: Write, durable: bool) -> Result<(), StoreError> {
        self.wait_blocking(|done| Job::Write {
            write,
            durable,
            done: Some(done),
        })
    }

    /// Queues `write` and returns at once; a failure is only logged.
    pub fn write_later(&self, write: Write) -> Result<(), StoreError> {
        self.writer.send(Job::Write {
            write,
            durable: false,
            done: None,
        })
    }

    /// Sends a job and waits for its answer, at most [`DEADLINE`].
    async fn wait(&self, job: impl FnOnce(Done) -> Job) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(job(Done::Task(tx)))?;
        match tokio::time::timeout(DEADLINE, rx).await {
            Ok(answer) => answer.map_err(|_| StoreError::WriterStopped)?,
            Err(_) => Err(StoreError::Stalled(DEADLINE)),
        }
    }

    /// [`Store::wait`] for synchronous code; it blocks the calling thread.
    fn wait_blocking(&self, job: impl FnOnce(Done) -> Job) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.writer.send(job(Done::Thread(tx)))?;
        match rx.recv_timeout(DEADLINE) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Stalled(DEADLINE)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::WriterStopped),
        }
    }

    /// Whether writes are going through: `/health` reports it, the systemd
    /// watchdog stops pinging on a stall, and budgeted requests are
    /// refused rather than left waiting on a stuck disk.
    pub fn condition(&self) -> Condition {
        match self.writer.pulse.busy_for() {
            Some(busy) if busy > DEADLINE => Condition::Stalled(busy),
            _ => self
                .writer
                .pulse
                .failing()
                .map_or(Condition::Ok, Condition::Failing),
        }
    }

    /// A round trip through the writer thread within `within`: what the
    /// systemd watchdog asks before each ping.
    pub async fn round_trip(&self, within: Duration) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(Job::Caught {
            done: Done::Task(tx),
        })?;
        match tokio::time::timeout(within, rx).await {
            Ok(answer) => answer.map_err(|_| StoreError::WriterStopped)?,
            Err(_) => Err(StoreError::Stalled(within)),
        }
    }

    fn settlement(entry: &LedgerEntry, accounts: &[String]) -> Result<Settlement, StoreError> {
        Ok(Settlement {
            key: entry.request_id.as_bytes().to_vec(),
            value: serde_json::to_vec(entry)?,
            accounts: accounts.to_vec(),
            cost_nanos: entry.cost_nanos,
            direct_nanos: entry.direct_nanos,
            rollup: rollup::Addition::of(entry)?,
        })
    }

    /// The value under `key`, read from the latest committed state.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(table.definition())?;
        Ok(table.get(key)?.map(|value| value.value().to_vec()))
    }

    /// The smallest key in `table`.
    pub fn first_key(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(table.definition())?;
        let first = table.first()?.map(|(key, _)| key.value().to_vec());
        Ok(first)
    }

    /// The greatest key in `table`.
    pub fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(table.definition())?;
        let last = table.last()?.map(|(key, _)| key.value().to_vec());
        Ok(last)
    }

    /// Up to `limit` records after `after` (from the start without it), in
    /// key order: for readers that go through a large table in steps.
    pub fn scan(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        use std::ops::Bound;
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(table.definition())?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in table.range::<&[u8]>((lower, Bound::Unbounded))? {
            if out.len() == limit {
                break;
            }
            let (key, value) = item?;
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// The number of records in `table`.
    pub(crate) fn len(&self, table: Table) -> Result<u64, StoreError> {
        let tx = self.db()?.begin_read()?;
        Ok(tx.open_table(table.definition())?.len()?)
    }

    /// What `account` has been charged so far; zero if never charged.
    pub fn totals(&self, account: &str) -> Result<Totals, StoreError> {
        match self.get(Table::Spend, account.as_bytes())? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(Totals::default()),
        }
    }

    /// The ledger entry of request `request_id`, if kept.
    pub fn entry(&self, request_id: &str) -> Result<Option<LedgerEntry>, StoreError> {
        match self.get(Table::Ledger, request_id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Ledger entries from `since` on, oldest first. Request ids are UUIDv7,
    /// so the keys are in time order and the scan starts at `since`. The
    /// iterator reads one snapshot: entries settled meanwhile are not in it.
    pub fn entries_since(
        &self,
        since: DateTime<Utc>,
    ) -> Box<dyn Iterator<Item = Result<LedgerEntry, StoreError>>> {
        let start = ledger_key_at(since);
        let range = self
            .db()
            .and_then(|db| Ok(db.begin_read()?))
            .and_then(|tx| Ok(tx.open_table(Table::Ledger.definition())?))
            .and_then(|table| Ok(table.range::<&[u8]>(start.as_slice()..)?));
        match range {
            Ok(range) => Box::new(range.map(|item| {
                let (_, value) = item?;
                Ok(serde_json::from_slice(value.value())?)
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// What the ledger adds up to from `since` on, from the hourly sums
    /// (see `rollup::period`): what every report and chart reads.
    pub fn period(&self, since: DateTime<Utc>) -> Result<rollup::Period, StoreError> {
        let tx = self.db()?.begin_read()?;
        rollup::period(&tx, since)
    }

    /// Up to `limit` ledger entries whose requests began from `from` and
    /// after the key `after` (the last of the previous page), oldest first:
    /// for readers that go through a long stretch of the ledger in pages,
    /// each its own snapshot, holding no transaction between them.
    pub fn entries_page(
        &self,
        from: DateTime<Utc>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, LedgerEntry)>, StoreError> {
        use std::ops::Bound;
        let start = ledger_key_at(from);
        let lower = match after {
            Some(after) if after >= start.as_slice() => Bound::Excluded(after),
            _ => Bound::Included(start.as_slice()),
        };
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(Table::Ledger.definition())?;
        let mut page = Vec::with_capacity(limit.min(4096));
        for item in table.range::<&[u8]>((lower, Bound::Unbounded))?.take(limit) {
            let (key, value) = item?;
            page.push((key.value().to_vec(), serde_json::from_slice(value.value())?));
        }
        Ok(page)
    }

    /// The latest `limit` ledger entries, newest first.
    pub fn latest_entries(&self, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        let table = self
            .db()
            .and_then(|db| Ok(db.begin_read()?))
            .and_then(|tx| Ok(tx.open_table(Table::Ledger.definition())?))?;
        let mut entries = Vec::with_capacity(limit);
        for item in table.iter()?.rev().take(limit) {
            let (_, value) = item?;
            entries.push(serde_json::from_slice(value.value())?);
        }
        Ok(entries)
    }

    /// The number of ledger entries kept, 0 when the database cannot be
    /// read (only tests ask).
    pub fn ledger_len(&self) -> usize {
        self.len(Table::Ledger)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Writes a session durably; returns once it is on disk.
    pub fn put_session<T: Serialize>(&self, id: &str, session: &T) -> Result<(), StoreError> {
        let write = Write {
            ops: vec![Op::Put(
                Table::Sessions,
                id.as_bytes().to_vec(),
                serde_json::to_vec(session)?,
            )],
            only_if_present: None,
        };
        self.write_blocking(write, true)
    }

    /// The session stored under `id`, if any.
    pub fn session<T: for<'de> Deserialize<'de>>(&self, id: &str) -> Result<Option<T>, StoreError> {
        match self.get(Table::Sessions, id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn sessions<T: for<'de> Deserialize<'de>>(&self) -> Result<Vec<T>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(Table::Sessions.definition())?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, value) = item?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }
}

/// The first ledger key of requests begun at `time`. Request ids are
/// `req_` and a UUIDv7, whose first 12 hex digits are the milliseconds since
/// 1970, so keys sort by the time their request began.
fn ledger_key_at(time: DateTime<Utc>) -> Vec<u8> {
    let millis = u64::try_from(time.timestamp_millis()).unwrap_or(0);
    format!("req_{millis:012x}").into_bytes()
}

/// When the request of ledger key `key` began, if it is a UUIDv7 id.
pub fn ledger_key_time(key: &[u8]) -> Option<DateTime<Utc>> {
    let hex = std::str::from_utf8(key.strip_prefix(b"req_")?.get(..12)?).ok()?;
    let millis = i64::from_str_radix(hex, 16).ok()?;
    chrono::TimeZone::timestamp_millis_opt(&Utc, millis).single()
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A request id as p402 would have minted it at `time`.
    pub fn id_at(time: DateTime<Utc>) -> String {
        let secs = u64::try_from(time.timestamp()).expect("after 1970");
        let stamp =
            uuid::Timestamp::from_unix(uuid::NoContext, secs, time.timestamp_subsec_nanos());
        format!("req_{}", uuid::Uuid::new_v7(stamp).simple())
    }

    /// An entry whose request began at `began` and settled `took` later.
    pub fn entry_at(began: DateTime<Utc>, took: chrono::Duration) -> LedgerEntry {
        LedgerEntry {
            time: began + took,
            ..entry(&id_at(began))
        }
    }

    pub fn entry(id: &str) -> LedgerEntry {
        LedgerEntry {
            door: None,
            time: Utc::now(),
            request_id: id.to_string(),
            session: None,
            budgets: vec![],
            provider: "p".into(),
            model: Some("m".into()),
            input_tokens: 1,
            output_tokens: 1,
            cached_input_tokens: 0,
            cost_nanos: 0,
            direct_nanos: 0,
            cached: false,
            estimated: false,
            client_session: None,
            forwarded: None,
        }
    }
}

#[cfg(test)]
mod tests;
