//! The one thread that writes to the database.
//!
//! redb allows one write transaction at a time, and a durable commit waits
//! for the disk. Every write goes through this thread, in the order it was
//! sent: the jobs that arrive while one commit is under way share the next
//! transaction and its single fsync (group commit), no tokio worker ever
//! waits for the disk, and no two writers ever wait for each other.
//!
//! A batch is committed durably when anyone in it waits for durability (a
//! budget's settlement, a flush, a session). Jobs nobody waits for (the
//! ledger entries of unbudgeted requests and free cache hits, cache
//! entries, hit counts) are held for up to the group-commit window
//! (`[server] ledger_group_commit_ms`, 100 ms by default) and committed
//! durably together: one transaction and one fsync for all the requests of
//! that window, where each used to get its own. A job that does wait takes
//! the held ones along at once. A crash loses at most one window of what
//! nobody waited for, never a budget's charge. Those riding along with a
//! commit that was not durable are made durable within the same window.
//!
//! A commit that fails (a full disk, an I/O error) leaves redb refusing
//! every later write until the file is opened again, so the writer then
//! lets go of the database and reopens it, once a second, until that
//! works. Ledger settlements that could not be written meanwhile, or were
//! committed without an fsync before the failure, are kept and written
//! first once it does: a settlement already in the ledger is not applied
//! twice, so writing one again is safe.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redb::{Durability, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::{Op, StoreError, Table, Totals, Write};

/// Jobs in one transaction at most, so that waiters from a long burst are
/// answered in bounded time rather than after the whole queue.
const MAX_BATCH: usize = 512;
/// The group-commit window when none is configured.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// How long after a failed commit the database is reopened, to see
/// whether writes work again; doubled after each failed try, up to
/// [`REOPEN_AT_MOST`], since opening a file that was not closed cleanly
/// reads all of it.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_AT_MOST: Duration = Duration::from_secs(15);
/// Settlements kept for writing once a failed disk recovers, at most; a
/// settlement is a few hundred bytes, so this bounds the memory a long
/// outage can take to tens of megabytes. Beyond it the oldest are logged
/// and dropped.
const MAX_KEPT: usize = 100_000;

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
#[derive(Clone)]
pub(super) struct Settlement {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub accounts: Vec<String>,
    pub cost_nanos: i64,
    pub direct_nanos: i64,
    /// What the entry adds to the hourly sums, written with it.
    pub rollup: super::rollup::Addition,
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
    /// Answer once every job sent before this one is committed, or, while
    /// the database is failing, answered (and kept where it was a
    /// settlement).
    Caught { done: Done },
    /// Make everything written so far durable.
    Flush { done: Done },
}

impl Job {
    /// Whether anyone waits for this job: then its batch is committed at
    /// once, rather than held for the group-commit window.
    fn has_waiter(&self) -> bool {
        match self {
            Job::Settle { done, .. } | Job::Write { done, .. } => done.is_some(),
            Job::Caught { .. } | Job::Flush { .. } => true,
        }
    }

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
    /// Why, for `/health` and the refusals.
    reason: Mutex<String>,
}

impl Pulse {
    fn new() -> Self {
        Pulse {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
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

    /// Why writes are failing, if they are.
    pub(super) fn failing(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        let reason = self
            .reason
            .lock()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |r| r.clone());
        Some(reason)
    }

    fn fail(&self, error: &StoreError) {
        let mut reason = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *reason = error.to_string();
        self.failing.store(true, Ordering::Release);
    }

    fn recovered(&self) {
        self.failing.store(false, Ordering::Release);
    }
}

/// The database as the readers share it: empty only while the writer is
/// reopening a failed one.
pub(super) type Slot = Arc<ArcSwapOption<redb::Database>>;

/// The handle; dropping it stops the thread after it has answered every
/// queued job, and waits for it, so that the database is closed (and its
/// lock released) when the store is gone.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    pub(super) pulse: Arc<Pulse>,
    /// The group-commit window in microseconds, changed on reload.
    window: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread on the database in `slot`, which it reopens from
    /// `path` after a failure.
    pub(super) fn start(slot: Slot, path: PathBuf) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let pulse = Arc::new(Pulse::new());
        let window = Arc::new(AtomicU64::new(micros(DEFAULT_WINDOW)));
        let engine = Engine {
            window: Arc::clone(&window),
            db: slot.load_full(),
            slot,
            path,
            pulse: Arc::clone(&pulse),
            kept: Vec::new(),
            unsynced: Vec::new(),
            undurable_since: None,
            reopen_at: None,
            backoff: REOPEN_FIRST,
        };
        let thread = std::thread::Builder::new()
            .name("p402-store".into())
            .spawn(move || engine.run(&queue))
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            pulse,
            window,
        })
    }

    /// How long jobs nobody waits for may be held before their commit.
    pub(super) fn set_window(&self, window: Duration) {
        self.window.store(micros(window), Ordering::Relaxed);
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

fn micros(window: Duration) -> u64 {
    u64::try_from(window.as_micros()).unwrap_or(u64::MAX)
}

/// The writer thread's state.
struct Engine {
    /// The group-commit window, in microseconds.
    window: Arc<AtomicU64>,
    /// The database writes go to; `None` while a failed one is reopened.
    db: Option<Arc<redb::Database>>,
    slot: Slot,
    path: PathBuf,
    pulse: Arc<Pulse>,
    /// Settlements not yet written for sure: they failed, or were committed
    /// without an fsync before a commit failed. Written first on recovery.
    kept: Vec<Settlement>,
    /// Settlements committed since the last durable commit: a failure
    /// before the next one can lose them, so they are kept until then.
    unsynced: Vec<Settlement>,
    /// When the oldest commit that is not yet durable was made.
    undurable_since: Option<Instant>,
    /// While writes are failing: when to reopen the database next.
    reopen_at: Option<Instant>,
    /// The wait before the next try after that.
    backoff: Duration,
}

impl Engine {
    fn window(&self) -> Duration {
        Duration::from_micros(self.window.load(Ordering::Relaxed))
    }

    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        let mut batch = Vec::new();
        // When the oldest job of a batch nobody waits for arrived.
        let mut held_since: Option<Instant> = None;
        loop {
            let window = self.window();
            let wake = [
                self.reopen_at,
                self.undurable_since.map(|since| since + window),
                held_since.map(|since| since + window),
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match wake {
                None => match queue.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                },
                Some(at) => {
                    match queue.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return self.close(batch),
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
            // Nobody waits for any of it: hold it for the window, so that
            // the requests of the window share one commit.
            let waited = batch.iter().any(Job::has_waiter);
            if !batch.is_empty() && !waited && batch.len() < MAX_BATCH {
                let since = *held_since.get_or_insert_with(Instant::now);
                if since.elapsed() < window && self.reopen_at.is_none() {
                    continue;
                }
            }
            // Held for its window: committed durably, so that the window
            // bounds what a crash can lose.
            let held = held_since.take().is_some() && !waited;
            self.step(std::mem::take(&mut batch), held);
        }
    }

    /// Closing: everything queued is committed (or kept), and durable.
    fn close(mut self, batch: Vec<Job>) {
        if self.reopen_at.is_some() {
            self.reopen();
        }
        if self.reopen_at.is_none() {
            self.step(batch, true);
        } else {
            self.refuse(batch);
        }
        if self.reopen_at.is_some() {
            self.kept.append(&mut self.unsynced);
            tracing::error!(
                "the database's last writes may be lost, {} ledger entries among them",
                self.kept.len()
            );
        }
    }

    /// Commits one batch (empty: a durability or recovery tick), or, while
    /// the database is failing and cannot be reopened yet, answers it.
    fn step(&mut self, jobs: Vec<Job>, durable: bool) {
        if self.reopen_at.is_some_and(|at| Instant::now() >= at) {
            self.reopen();
        }
        let Some(db) = self.db.clone().filter(|_| self.reopen_at.is_none()) else {
            return self.refuse(jobs);
        };
        let durable = durable
            || jobs.is_empty()
            || !self.kept.is_empty()
            || jobs.iter().any(Job::wants_durability);
        let replayed = std::mem::take(&mut self.kept);
        let (committed, written) = commit(&db, &replayed, jobs, durable, &self.pulse);
        match committed {
            Ok(()) => {
                self.pulse.recovered();
                self.backoff = REOPEN_FIRST;
                if durable {
                    self.unsynced.clear();
                    self.undurable_since = None;
                } else {
                    self.unsynced.extend(written);
                    self.undurable_since.get_or_insert_with(Instant::now);
                }
                if !replayed.is_empty() {
                    tracing::info!(
                        "the database accepts writes again; {} kept ledger entries written",
                        replayed.len()
                    );
                }
            }
            Err(e) => {
                tracing::error!("a database commit failed, so the database is reopened: {e}");
                self.pulse.fail(&e);
                self.kept = replayed;
                let unsynced = std::mem::take(&mut self.unsynced);
                self.keep(unsynced);
                self.keep(written);
                self.undurable_since = None;
                // Let go at once, so that no write goes to a database that
                // refuses them all; reopen a little later.
                self.db = None;
                self.reopen_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(REOPEN_AT_MOST);
            }
        }
    }

    /// Answers the jobs of a database that cannot take them, keeping their
    /// settlements for when it can.
    fn refuse(&mut self, jobs: Vec<Job>) {
        let reason = Arc::new(self.pulse.failing().unwrap_or_default());
        for job in jobs {
            match job {
                Job::Settle { settlement, done } => {
                    self.keep(vec![settlement]);
                    if let Some(done) = done {
                        done.send(Err(StoreError::Commit(Arc::clone(&reason))));
                    }
                }
                Job::Write {
                    done: Some(done), ..
                }
                | Job::Flush { done } => done.send(Err(StoreError::Commit(Arc::clone(&reason)))),
                Job::Write { done: None, .. } => {}
                // Nothing sent before it will be committed before recovery:
                // readers go on with what is there.
                Job::Caught { done } => done.send(Ok(())),
            }
        }
    }

    fn keep(&mut self, settlements: Vec<Settlement>) {
        self.kept.extend(settlements);
        if self.kept.len() > MAX_KEPT {
            let dropped = self.kept.len() - MAX_KEPT;
            for lost in self.kept.drain(..dropped) {
                tracing::error!(
                    entry = %String::from_utf8_lossy(&lost.key),
                    "a ledger entry is lost: the database has been failing for too long"
                );
            }
        }
    }

    /// Lets go of the failed database and opens the file again; on
    /// failure, tries again after the backoff. A reader still in the
    /// old one keeps its file locked; until it is done, the old one stays
    /// readable.
    fn reopen(&mut self) {
        self.db = None;
        let old = self.slot.swap(None).map(|db| Arc::downgrade(&db));
        match super::open_file(&self.path) {
            Ok(db) => {
                let db = Arc::new(db);
                self.slot.store(Some(Arc::clone(&db)));
                self.db = Some(db);
                self.reopen_at = None;
                tracing::info!("the database was reopened after a failed write");
            }
            Err(e) => {
                if let Some(db) = old.and_then(|old| old.upgrade()) {
                    self.slot.store(Some(db));
                }
                tracing::warn!("the database cannot be reopened yet: {e}");
                self.reopen_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(REOPEN_AT_MOST);
            }
        }
    }
}

/// Applies `replayed` and `jobs` in one transaction and answers each job.
/// Gives back the jobs' settlements (moved out, not copied): those not yet
/// durable are kept until they are.
fn commit(
    db: &redb::Database,
    replayed: &[Settlement],
    jobs: Vec<Job>,
    durable: bool,
    pulse: &Pulse,
) -> (Result<(), StoreError>, Vec<Settlement>) {
    pulse
        .busy_since
        .store(pulse.now_ms() + 1, Ordering::Release);
    let (result, answers) = match db.begin_write().map_err(StoreError::from) {
        Err(e) => (Err(e), jobs.into_iter().map(|job| (job, None)).collect()),
        Ok(mut tx) => apply_all(&mut tx, replayed, jobs, durable).map_or_else(
            |(e, answers)| (Err(e), answers),
            |answers| (tx.commit().map_err(StoreError::from), answers),
        ),
    };
    pulse.busy_since.store(0, Ordering::Release);
    let shared = result.as_ref().err().map(|e| Arc::new(e.to_string()));
    let mut settlements = Vec::new();
    for (job, own) in answers {
        let outcome = match (own, &shared) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(StoreError::Commit(Arc::clone(e))),
            (None, None) => Ok(()),
        };
        settlements.extend(answer(job, outcome));
    }
    (result, settlements)
}

type Answers = Vec<(Job, Option<StoreError>)>;

/// Applies each job; a job that cannot be applied (a corrupt total, say)
/// is skipped with its own error, and a storage failure fails them all.
fn apply_all(
    tx: &mut WriteTransaction,
    replayed: &[Settlement],
    jobs: Vec<Job>,
    durable: bool,
) -> Result<Answers, (StoreError, Answers)> {
    let unanswered = |jobs: Vec<Job>| jobs.into_iter().map(|job| (job, None)).collect();
    let set = tx.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    if let Err(e) = set {
        return Err((StoreError::from(e), unanswered(jobs)));
    }
    let tx: &WriteTransaction = tx;
    let mut run = None;
    for settlement in replayed {
        match settling(&mut run, tx).and_then(|run| run.settle(settlement)) {
            Ok(()) => {}
            Err(
                e @ (StoreError::Corrupt(_) | StoreError::Malformed(_) | StoreError::Invariant(_)),
            ) => tracing::error!(
                entry = %String::from_utf8_lossy(&settlement.key),
                "a kept ledger entry cannot be written: {e}"
            ),
            Err(e) => return Err((e, unanswered(jobs))),
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let applied = match &job {
            Job::Settle { settlement, .. } => {
                settling(&mut run, tx).and_then(|run| run.settle(settlement))
            }
            Job::Write { write, .. } => close(&mut run).and_then(|()| apply(tx, write)),
            Job::Caught { .. } | Job::Flush { .. } => Ok(()),
        };
        match applied {
            Ok(()) => answers.push((job, None)),
            Err(
                e @ (StoreError::Corrupt(_) | StoreError::Malformed(_) | StoreError::Invariant(_)),
            ) => answers.push((job, Some(e))),
            Err(e) => {
                answers.push((job, None));
                answers.extend(jobs.map(|job| (job, None)));
                return Err((e, answers));
            }
        }
    }
    if let Err(e) = close(&mut run) {
        return Err((e, answers));
    }
    Ok(answers)
}

/// Answers `job`, and gives back its settlement if it had one.
fn answer(job: Job, outcome: Result<(), StoreError>) -> Option<Settlement> {
    match job {
        Job::Settle { settlement, done } => {
            match done {
                Some(done) => done.send(outcome),
                None => {
                    if let Err(e) = outcome {
                        tracing::warn!(
                            entry = %String::from_utf8_lossy(&settlement.key),
                            "could not write a ledger entry yet (it is kept and written once the database recovers): {e}"
                        );
                    }
                }
            }
            return Some(settlement);
        }
        Job::Write { done: None, .. } => {
            if let Err(e) = outcome {
                tracing::debug!("a background database write failed: {e}");
            }
        }
        Job::Write {
            done: Some(done), ..
        }
        | Job::Caught { done }
        | Job::Flush { done } => done.send(outcome),
    }
    None
}

/// The tables a run of consecutive settlements writes, opened once for
/// the run instead of three times per settlement, and the hourly sums it
/// adds, written once per row when the run ends. A run ends before any
/// other write (which may open the same tables) and at the end of the
/// transaction.
struct Settling<'tx> {
    ledger: redb::Table<'tx, &'static [u8], &'static [u8]>,
    spend: redb::Table<'tx, &'static [u8], &'static [u8]>,
    rollups: redb::Table<'tx, &'static [u8], &'static [u8]>,
    sums: super::rollup::Pending,
}

impl<'tx> Settling<'tx> {
    fn open(tx: &'tx WriteTransaction) -> Result<Self, StoreError> {
        Ok(Settling {
            ledger: tx.open_table(Table::Ledger.definition())?,
            spend: tx.open_table(Table::Spend.definition())?,
            rollups: tx.open_table(Table::Rollup.definition())?,
            sums: super::rollup::Pending::default(),
        })
    }

    /// Writes the entry and adds it to every account's totals and to its
    /// hour's sums, unless the ledger has it already (a kept settlement
    /// written again after a failure it had in fact survived). Every total
    /// and the hour's row are read and checked before anything is written,
    /// so a corrupt one fails this settlement alone and leaves no half of
    /// it behind.
    fn settle(&mut self, settlement: &Settlement) -> Result<(), StoreError> {
        if self.ledger.get(settlement.key.as_slice())?.is_some() {
            return Ok(());
        }
        let mut totals = Vec::with_capacity(settlement.accounts.len());
        for account in &settlement.accounts {
            let mut sum: Totals = match self.spend.get(account.as_bytes())? {
                Some(bytes) => serde_json::from_slice(bytes.value())?,
                None => Totals::default(),
            };
            sum.cost_nanos = sum.cost_nanos.saturating_add(settlement.cost_nanos);
            sum.direct_nanos = sum.direct_nanos.saturating_add(settlement.direct_nanos);
            sum.requests += 1;
            totals.push((account, serde_json::to_vec(&sum)?));
        }
        self.sums.add(&self.rollups, &settlement.rollup)?;
        for (account, bytes) in totals {
            self.spend.insert(account.as_bytes(), bytes.as_slice())?;
        }
        self.ledger
            .insert(settlement.key.as_slice(), settlement.value.as_slice())?;
        Ok(())
    }

    /// Ends the run: the hourly sums it added are written.
    fn close(mut self) -> Result<(), StoreError> {
        self.sums.write(&mut self.rollups)
    }
}

/// The run of settlements under way, opened by the first one.
fn settling<'r, 'tx>(
    run: &'r mut Option<Settling<'tx>>,
    tx: &'tx WriteTransaction,
) -> Result<&'r mut Settling<'tx>, StoreError> {
    match run {
        Some(settling) => Ok(settling),
        None => Ok(run.insert(Settling::open(tx)?)),
    }
}

/// Ends the run of settlements under way, if there is one.
fn close(run: &mut Option<Settling<'_>>) -> Result<(), StoreError> {
    run.take().map_or(Ok(()), Settling::close)
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
            Op::DropEntries { before, at_most } => {
                super::retention::drop_entries(tx, *before, *at_most)?;
            }
        }
    }
    Ok(())
}
