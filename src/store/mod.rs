//! The sled database: the ledger of settled requests, sessions, and spend
//! totals per account.
//!
//! A settled request is written to the ledger and added to every account it
//! was charged to in one transaction, then flushed before the response ends,
//! so `kill -9` at any moment leaves either the whole charge or none of it.
//! All of that happens on one thread of its own ([`writer`]), where
//! concurrent settlements share fsyncs.

mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;
use writer::{Settlement, Writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the database could not make its writes durable: {0}")]
    Flush(Arc<sled::Error>),
    #[error("the ledger writer thread could not start: {0}")]
    Thread(std::io::Error),
    #[error("the ledger writer has stopped")]
    WriterStopped,
}

/// One settled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub time: DateTime<Utc>,
    pub request_id: String,
    pub session: Option<String>,
    /// Names of the file-declared budgets charged.
    pub budgets: Vec<String>,
    pub provider: String,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    pub cost_nanos: i64,
    pub direct_nanos: i64,
    /// Answered from p402's cache.
    pub cached: bool,
    /// Cost computed from counted tokens because the provider sent no usage.
    pub estimated: bool,
}

impl LedgerEntry {
    pub fn cost(&self) -> Usd {
        Usd::from_nanos(self.cost_nanos)
    }

    pub fn direct(&self) -> Usd {
        Usd::from_nanos(self.direct_nanos)
    }
}

/// What an account has been charged, as kept in the `spend` tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub cost_nanos: i64,
    pub direct_nanos: i64,
    pub requests: u64,
}

impl Totals {
    pub fn cost(&self) -> Usd {
        Usd::from_nanos(self.cost_nanos)
    }

    pub fn direct(&self) -> Usd {
        Usd::from_nanos(self.direct_nanos)
    }
}

/// A cheap-to-clone handle: sled's trees are reference-counted, and the
/// writer thread lives as long as the last handle.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    ledger: sled::Tree,
    sessions: sled::Tree,
    spend: sled::Tree,
    writer: Arc<Writer>,
}

/// How long `Store::open` waits for the database's lock. Within one process
/// a store that was just closed can still hold it for a moment, since
/// sled's I/O threads close the file after the last handle is gone (sled's
/// own tests block on the lock for that reason); a p402 that is running
/// holds it for good, and the error then names the lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// sled reports a held lock only as an `io::Error` with this text.
fn lock_is_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(dir.join("db")).open() {
                Err(e) if lock_is_held(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => break opened?,
            }
        };
        let ledger = db.open_tree("ledger")?;
        let spend = db.open_tree("spend")?;
        Ok(Store {
            writer: Arc::new(Writer::start(db.clone(), ledger.clone(), spend.clone())?),
            sessions: db.open_tree("sessions")?,
            ledger,
            spend,
            db,
        })
    }

    /// Another tree in the same database (the cache keeps its own).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes everything written so far durable, on the writer thread.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush().await
    }

    /// Flushes from synchronous code (the CLI).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Writes a settled request and adds it to `accounts`, atomically and
    /// durably.
    pub async fn record(&self, entry: &LedgerEntry, accounts: &[String]) -> Result<(), StoreError> {
        self.writer.record(Self::settlement(entry, accounts)?).await
    }

    /// Queues an entry that moves no money (a cache hit) and returns at
    /// once, so that a hit waits neither for the disk nor for the writer
    /// thread. The entry is written in order with every other settlement
    /// and becomes durable with the next one's flush or sled's own, at most
    /// half a second later: a crash in between loses the record of a free
    /// answer, never a charge. Readers that must see it wait for
    /// [`Store::caught_up`] first.
    pub fn record_free(&self, entry: &LedgerEntry, accounts: &[String]) -> Result<(), StoreError> {
        debug_assert_eq!(
            entry.cost_nanos, 0,
            "an entry that costs goes through `record`"
        );
        self.writer.queue(Self::settlement(entry, accounts)?)
    }

    /// Returns once every entry recorded before the call is in the ledger,
    /// so that a report or an audit read right after an answer includes it.
    pub async fn caught_up(&self) -> Result<(), StoreError> {
        self.writer.caught_up().await
    }

    fn settlement(entry: &LedgerEntry, accounts: &[String]) -> Result<Settlement, StoreError> {
        Ok(Settlement {
            key: entry.request_id.as_bytes().to_vec(),
            value: serde_json::to_vec(entry)?,
            accounts: accounts.to_vec(),
            cost_nanos: entry.cost_nanos,
            direct_nanos: entry.direct_nanos,
        })
    }

    pub fn totals(&self, account: &str) -> Result<Totals, StoreError> {
        match self.spend.get(account.as_bytes())? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(Totals::default()),
        }
    }

    pub fn entry(&self, request_id: &str) -> Result<Option<LedgerEntry>, StoreError> {
        match self.ledger.get(request_id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Ledger entries from `since` on, oldest first. Request ids are UUIDv7,
    /// so the keys are in time order and the scan starts at `since`.
    pub fn entries_since(
        &self,
        since: DateTime<Utc>,
    ) -> impl Iterator<Item = Result<LedgerEntry, StoreError>> {
        let millis = u64::try_from(since.timestamp_millis()).unwrap_or(0);
        let start = format!("req_{millis:012x}");
        self.ledger.range(start.into_bytes()..).map(|item| {
            let (_, value) = item?;
            Ok(serde_json::from_slice(&value)?)
        })
    }

    pub fn ledger_len(&self) -> usize {
        self.ledger.len()
    }

    pub fn put_session<T: Serialize>(&self, id: &str, session: &T) -> Result<(), StoreError> {
        self.sessions
            .insert(id.as_bytes(), serde_json::to_vec(session)?)?;
        Ok(())
    }

    pub fn session<T: for<'de> Deserialize<'de>>(&self, id: &str) -> Result<Option<T>, StoreError> {
        match self.sessions.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn sessions<T: for<'de> Deserialize<'de>>(&self) -> Result<Vec<T>, StoreError> {
        self.sessions
            .iter()
            .map(|item| {
                let (_, value) = item?;
                Ok(serde_json::from_slice(&value)?)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn entry(id: &str) -> LedgerEntry {
        LedgerEntry {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, cost: i64) -> LedgerEntry {
        LedgerEntry {
            cost_nanos: cost,
            direct_nanos: cost * 2,
            ..tests_support::entry(id)
        }
    }

    /// sled's `flush_async` once deadlocked against ledger transactions
    /// under concurrent settlements (sled#1308), blocking both tokio
    /// workers for good: every one of these must finish, each counted once.
    /// The workload runs on a runtime of its own so that a hang fails the
    /// test instead of stalling it.
    #[test]
    fn concurrent_settlements_all_finish_and_count_once() {
        const TASKS: usize = 64;
        const EACH: usize = 200;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("open");
        let accounts = vec!["session:a".to_string(), "budget:g:total".to_string()];
        let (done, finished) = std::sync::mpsc::channel();
        let workload = store.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for _ in 0..TASKS {
                    let store = workload.clone();
                    let accounts = accounts.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..EACH {
                            let id = crate::ids::RequestId::new().to_string();
                            store
                                .record(&entry(&id, 3), &accounts)
                                .await
                                .expect("record");
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("task");
                }
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("settlements stopped finishing (deadlock)");
        let totals = store.totals("session:a").expect("totals");
        assert_eq!(totals.requests, (TASKS * EACH) as u64);
        assert_eq!(totals.cost_nanos, (TASKS * EACH * 3) as i64);
        assert_eq!(store.ledger_len(), TASKS * EACH);
    }

    /// A store closed while another open waits for the lock is opened;
    /// one that stays open makes the other fail, naming the lock.
    #[test]
    fn open_waits_for_a_lock_that_is_being_released() {
        let dir = tempfile::tempdir().expect("dir");
        let held = Store::open(dir.path()).expect("open");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let reopened = Store::open(dir.path());
        release.join().expect("released");
        assert!(reopened.is_ok(), "{:?}", reopened.err());
        drop(reopened);

        let _kept = Store::open(dir.path()).expect("open");
        let started = Instant::now();
        let refused = Store::open(dir.path()).err().expect("the lock is held");
        assert!(refused.to_string().contains("lock"), "{refused}");
        assert!(started.elapsed() >= LOCK_WAIT);
    }

    /// A free entry is queued, not awaited: readers that wait for
    /// `caught_up` see it, and closing the store writes what is queued.
    #[tokio::test]
    async fn free_entries_are_written_in_order_and_kept_at_close() {
        let dir = tempfile::tempdir().expect("dir");
        let accounts = vec!["session:a".to_string()];
        let ids: Vec<String> = (0..50)
            .map(|_| crate::ids::RequestId::new().to_string())
            .collect();
        {
            let store = Store::open(dir.path()).expect("open");
            for id in &ids {
                let free = LedgerEntry {
                    direct_nanos: 4,
                    ..tests_support::entry(id)
                };
                store.record_free(&free, &accounts).expect("queued");
            }
            store.caught_up().await.expect("caught up");
            assert!(store.entry(&ids[49]).expect("read").is_some());
            assert_eq!(store.totals("session:a").expect("totals").requests, 50);
            // Queued after the read: written when the store closes.
            store
                .record_free(&tests_support::entry("req_last"), &accounts)
                .expect("queued");
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.entry("req_last").expect("read").is_some());
        assert_eq!(
            store.totals("session:a").expect("totals"),
            Totals {
                cost_nanos: 0,
                direct_nanos: 200,
                requests: 51
            }
        );
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = Store::open(dir.path()).expect("open");
            let accounts = vec!["session:a".to_string(), "budget:g:total".to_string()];
            store
                .record(
                    &entry(&crate::ids::RequestId::new().to_string(), 5),
                    &accounts,
                )
                .await
                .expect("record");
            store
                .record(
                    &entry(&crate::ids::RequestId::new().to_string(), 7),
                    &accounts[..1],
                )
                .await
                .expect("record");
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.totals("session:a").expect("totals"),
            Totals {
                cost_nanos: 12,
                direct_nanos: 24,
                requests: 2
            }
        );
        assert_eq!(
            store.totals("budget:g:total").expect("totals").cost_nanos,
            5
        );
        assert_eq!(
            store
                .entries_since(Utc::now() - chrono::Duration::hours(1))
                .count(),
            2
        );
        assert_eq!(
            store
                .entries_since(Utc::now() + chrono::Duration::hours(1))
                .count(),
            0
        );
    }
}
