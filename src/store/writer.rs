//! The one thread that writes to the database.
//!
//! redb allows one write transaction at a time, and a durable commit waits
//! for the disk. Every write goes through this thread, in the order it was
//! sent: the jobs that arrive while one commit is under way share the next
//! transaction and its single fsync (group commit), no tokio worker ever
//! waits for the disk, and no two writers ever wait for each other.
//!
//! A batch is committed durably when anyone in it waits for durability (a
//! settlement, a flush, a session); otherwise it is committed without an
//! fsync, and a durable commit follows within [`DURABLE_WITHIN`] so that a
//! crash loses at most that much of what nobody waited for (cache entries,
//! hit counts, the ledger entries of free cache hits), never a charge.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::{Op, StoreError, Table, Totals, Write};

/// Jobs in one transaction at most, so that waiters from a long burst are
/// answered in bounded time rather than after the whole queue.
const MAX_BATCH: usize = 512;
/// How long a write that nobody waits for may stay in memory only.
const DURABLE_WITHIN: Duration = Duration::from_millis(500);

/// Whoever waits for a job: a task, or a thread that may block.
pub(super) enum Done {
    Task(oneshot::Sender<Result<(), StoreError>>),
    Thread(mpsc::SyncSender<Result<(), StoreError>>),
}

impl Done {
    fn send(self, result: Result<(), StoreError>) {
        // A waiter that has gone away (its client hung up) needs no answer.
        match self {
            Done::Task(tx) => drop(tx.send(result)),
            Done::Thread(tx) => drop(tx.send(result)),
        }
    }
}

/// A ledger entry (`key` → `value`) and what it adds to each account.
pub(super) struct Settlement {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub accounts: Vec<String>,
    pub cost_nanos: i64,
    pub direct_nanos: i64,
}

pub(super) enum Job {
    /// Write a settlement; answer `done` once it is on disk, or, with no
    /// one waiting (a cache hit's free entry), log a failure here.
    Settle {
        settlement: Settlement,
        done: Option<Done>,
    },
    /// Apply a write; answer once it is committed (durably if `durable`).
    Write {
        write: Write,
        durable: bool,
        done: Option<Done>,
    },
    /// Answer once every job sent before this one is committed.
    Caught { done: Done },
    /// Make everything written so far durable.
    Flush { done: Done },
}

impl Job {
    fn wants_durability(&self) -> bool {
        matches!(
            self,
            Job::Settle { done: Some(_), .. }
                | Job::Flush { .. }
                | Job::Write { durable: true, .. }
        )
    }
}

/// The writer's heartbeat, read by `/health`, the systemd watchdog and the
/// request path: a write that has been under way for too long means the
/// disk (or the database) is stuck, and budgeted requests must not wait on
/// it.
#[derive(Debug)]
pub(super) struct Pulse {
    epoch: Instant,
    /// Milliseconds since `epoch` at which the batch under way started,
    /// plus one; 0 while the writer is idle.
    busy_since: AtomicU64,
    /// The last commit failed (disk full, I/O error); cleared by the next
    /// one that succeeds.
    failing: AtomicBool,
}

impl Pulse {
    fn new() -> Self {
        Pulse {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long the write under way has taken so far, if one is.
    pub(super) fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

/// The handle; dropping it stops the thread after it has answered every
/// queued job, and waits for it, so that the database is closed (and its
/// lock released) when the store is gone.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    pub(super) pulse: Arc<Pulse>,
}

impl Writer {
    pub(super) fn start(db: Arc<redb::Database>) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let pulse = Arc::new(Pulse::new());
        let beat = Arc::clone(&pulse);
        let thread = std::thread::Builder::new()
            .name("p402-store".into())
            .spawn(move || run(&db, &queue, &beat))
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            pulse,
        })
    }

    pub(super) fn send(&self, job: Job) -> Result<(), StoreError> {
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
                tracing::error!("the database writer thread panicked");
            }
        }
    }
}

fn run(db: &redb::Database, queue: &mpsc::Receiver<Job>, pulse: &Pulse) {
    let mut batch = Vec::new();
    // When the oldest commit that is not yet durable was made.
    let mut undurable_since: Option<Instant> = None;
    loop {
        let first = match undurable_since {
            None => match queue.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Some(since) => {
                let left = DURABLE_WITHIN.saturating_sub(since.elapsed());
                match queue.recv_timeout(left) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    // Closing: what is queued was answered; make it durable.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        if let Err(e) = commit(db, Vec::new(), true, pulse) {
                            tracing::error!("the database's last writes may be lost: {e}");
                        }
                        return;
                    }
                }
            }
        };
        batch.extend(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.is_empty() || batch.iter().any(Job::wants_durability);
        match commit(db, std::mem::take(&mut batch), durable, pulse) {
            Ok(()) if durable => undurable_since = None,
            Ok(()) => {
                undurable_since.get_or_insert_with(Instant::now);
            }
            Err(e) => tracing::error!("a database commit failed: {e}"),
        }
    }
}

/// Applies `jobs` in one transaction and answers each of them.
fn commit(
    db: &redb::Database,
    jobs: Vec<Job>,
    durable: bool,
    pulse: &Pulse,
) -> Result<(), StoreError> {
    pulse
        .busy_since
        .store(pulse.now_ms() + 1, Ordering::Release);
    let (result, answers) = match db.begin_write().map_err(StoreError::from) {
        Err(e) => (Err(e), jobs.into_iter().map(|job| (job, None)).collect()),
        Ok(mut tx) => apply_all(&mut tx, jobs, durable).map_or_else(
            |(e, answers)| (Err(e), answers),
            |answers| (tx.commit().map_err(StoreError::from), answers),
        ),
    };
    pulse.busy_since.store(0, Ordering::Release);
    pulse.failing.store(result.is_err(), Ordering::Release);
    let shared = result.as_ref().err().map(|e| Arc::new(e.to_string()));
    for (job, own) in answers {
        let outcome = match (own, &shared) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(StoreError::Commit(Arc::clone(e))),
            (None, None) => Ok(()),
        };
        answer(job, outcome);
    }
    result
}

type Answers = Vec<(Job, Option<StoreError>)>;

/// Applies each job; a job that cannot be applied (a corrupt total, say)
/// is skipped with its own error, and a storage failure fails them all.
fn apply_all(
    tx: &mut WriteTransaction,
    jobs: Vec<Job>,
    durable: bool,
) -> Result<Answers, (StoreError, Answers)> {
    let set = tx.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    let mut answers = Vec::with_capacity(jobs.len());
    if let Err(e) = set {
        let e = StoreError::from(e);
        return Err((e, jobs.into_iter().map(|job| (job, None)).collect()));
    }
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let applied = match &job {
            Job::Settle { settlement, .. } => settle(tx, settlement),
            Job::Write { write, .. } => apply(tx, write),
            Job::Caught { .. } | Job::Flush { .. } => Ok(()),
        };
        match applied {
            Ok(()) => answers.push((job, None)),
            Err(e @ (StoreError::Corrupt(_) | StoreError::Invariant(_))) => {
                answers.push((job, Some(e)))
            }
            Err(e) => {
                answers.push((job, None));
                answers.extend(jobs.map(|job| (job, None)));
                return Err((e, answers));
            }
        }
    }
    Ok(answers)
}

fn answer(job: Job, outcome: Result<(), StoreError>) {
    match job {
        Job::Settle {
            settlement,
            done: None,
        } => {
            if let Err(e) = outcome {
                tracing::error!(
                    entry = %String::from_utf8_lossy(&settlement.key),
                    "could not write a free ledger entry: {e}"
                );
            }
        }
        Job::Write { done: None, .. } => {
            if let Err(e) = outcome {
                tracing::debug!("a background database write failed: {e}");
            }
        }
        Job::Settle {
            done: Some(done), ..
        }
        | Job::Write {
            done: Some(done), ..
        }
        | Job::Caught { done }
        | Job::Flush { done } => done.send(outcome),
    }
}

/// Writes the entry and adds it to every account's totals. Every total is
/// read and checked before anything is written, so a corrupt one fails this
/// settlement alone and leaves no half of it behind.
fn settle(tx: &WriteTransaction, settlement: &Settlement) -> Result<(), StoreError> {
    let mut spend = tx.open_table(Table::Spend.definition())?;
    let mut totals = Vec::with_capacity(settlement.accounts.len());
    for account in &settlement.accounts {
        let mut sum: Totals = match spend.get(account.as_bytes())? {
            Some(bytes) => serde_json::from_slice(bytes.value())?,
            None => Totals::default(),
        };
        sum.cost_nanos = sum.cost_nanos.saturating_add(settlement.cost_nanos);
        sum.direct_nanos = sum.direct_nanos.saturating_add(settlement.direct_nanos);
        sum.requests += 1;
        totals.push((account, serde_json::to_vec(&sum)?));
    }
    for (account, bytes) in totals {
        spend.insert(account.as_bytes(), bytes.as_slice())?;
    }
    tx.open_table(Table::Ledger.definition())?
        .insert(settlement.key.as_slice(), settlement.value.as_slice())?;
    Ok(())
}

fn apply(tx: &WriteTransaction, write: &Write) -> Result<(), StoreError> {
    if let Some((table, key)) = &write.only_if_present {
        if tx
            .open_table(table.definition())?
            .get(key.as_slice())?
            .is_none()
        {
            return Ok(());
        }
    }
    for op in &write.ops {
        match op {
            Op::Put(table, key, value) => {
                tx.open_table(table.definition())?
                    .insert(key.as_slice(), value.as_slice())?;
            }
            Op::Remove(table, key) => {
                tx.open_table(table.definition())?.remove(key.as_slice())?;
            }
            Op::Clear(table) => {
                tx.delete_table(table.definition())?;
                tx.open_table(table.definition())?;
            }
        }
    }
    Ok(())
}
