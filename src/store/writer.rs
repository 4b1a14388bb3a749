//! The one thread that writes settlements to the ledger and makes writes
//! durable.
//!
//! Why a thread of its own: sled's `flush_async` runs on sled's small I/O
//! pool, and the buffer writes a flush waits for are queued on that same
//! pool. Under concurrent settlements every pool thread ended up inside a
//! flush, holding sled's process-wide concurrency-control lock for reading,
//! while the ledger transactions on the tokio workers waited for it for
//! writing: p402 stopped answering for good at 16 concurrent requests
//! (spacejam/sled#1308). Here one dedicated thread applies the settlements
//! and calls the blocking flush itself, so nothing waits on sled's pool, no
//! tokio worker waits on an fsync, and every settlement that arrives during
//! one fsync shares the next one (group commit).

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::oneshot;

use super::{StoreError, Totals};

/// Settlements applied before one fsync at most, so that waiters from a long
/// burst are answered in bounded time rather than after the whole queue.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A ledger entry (`key` → `value`) and what it adds to each account.
pub(super) struct Settlement {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub accounts: Vec<String>,
    pub cost_nanos: i64,
    pub direct_nanos: i64,
}

enum Job {
    /// Write a settlement and answer once it is on disk.
    Record {
        settlement: Settlement,
        reply: Reply,
    },
    /// Write a settlement that nobody waits for (a cache hit's free entry);
    /// a failure is logged here, since there is no one to tell.
    Queue { settlement: Settlement },
    /// Answer once every job sent before this one is written.
    Caught { reply: Reply },
    /// Make everything written so far (sessions, say) durable.
    Flush { reply: Reply },
}

/// What the thread writes to.
struct Trees {
    db: sled::Db,
    ledger: sled::Tree,
    spend: sled::Tree,
}

/// The handle; dropping the last one stops the thread after it has answered
/// every queued job, and waits for it, so that the database is closed (and
/// its lock released) when the store is gone.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(
        db: sled::Db,
        ledger: sled::Tree,
        spend: sled::Tree,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let trees = Trees { db, ledger, spend };
        let thread = std::thread::Builder::new()
            .name("p402-ledger".into())
            .spawn(move || run(&trees, &queue))
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Writes a settlement atomically, and returns once it is on disk.
    pub(super) async fn record(&self, settlement: Settlement) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Record { settlement, reply })?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Queues a settlement and returns at once; it is written in order with
    /// everything else and reaches the disk with the next flush.
    pub(super) fn queue(&self, settlement: Settlement) -> Result<(), StoreError> {
        self.send(Job::Queue { settlement })
    }

    /// Returns once everything queued before the call is written.
    pub(super) async fn caught_up(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Caught { reply })?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Flush { reply })?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterStopped)?
            .send(job)
            .map_err(|_| StoreError::WriterStopped)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the queue is empty.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the ledger writer thread panicked");
            }
        }
    }
}

fn run(trees: &Trees, queue: &mpsc::Receiver<Job>) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        for job in batch.drain(..) {
            match job {
                Job::Record { settlement, reply } => match trees.apply(&settlement) {
                    Ok(()) => waiting.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Queue { settlement } => {
                    if let Err(e) = trees.apply(&settlement) {
                        tracing::error!(
                            entry = %String::from_utf8_lossy(&settlement.key),
                            "could not write a free ledger entry: {e}"
                        );
                    }
                }
                Job::Caught { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Job::Flush { reply } => waiting.push(reply),
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let flushed = trees.db.flush().map_err(Arc::new);
        for reply in waiting.drain(..) {
            // A waiter that has gone away (its client hung up) needs no answer.
            let _ = reply.send(match &flushed {
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::Flush(Arc::clone(e))),
            });
        }
    }
}

impl Trees {
    fn apply(&self, settlement: &Settlement) -> Result<(), StoreError> {
        let Settlement {
            key,
            value,
            accounts,
            cost_nanos,
            direct_nanos,
        } = settlement;
        let result = (&self.ledger, &self.spend).transaction(|(ledger, spend)| {
            ledger.insert(key.as_slice(), value.as_slice())?;
            for account in accounts {
                let mut totals: Totals = match spend.get(account.as_bytes())? {
                    Some(bytes) => serde_json::from_slice(&bytes)
                        .map_err(|e| ConflictableTransactionError::Abort(StoreError::Corrupt(e)))?,
                    None => Totals::default(),
                };
                totals.cost_nanos = totals.cost_nanos.saturating_add(*cost_nanos);
                totals.direct_nanos = totals.direct_nanos.saturating_add(*direct_nanos);
                totals.requests += 1;
                let bytes = serde_json::to_vec(&totals)
                    .map_err(|e| ConflictableTransactionError::Abort(StoreError::Corrupt(e)))?;
                spend.insert(account.as_bytes(), bytes)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }
}
