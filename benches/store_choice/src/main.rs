//! Measures the three embedded stores p402 could keep its data in: redb
//! (what it uses now), fjall, and sled 0.34 (what it used before, as the
//! baseline), on the two workloads that matter to the proxy:
//!
//! * the ledger: every billed request is a *settlement* that must be on disk
//!   before the client is answered, so its durable-commit latency is on the
//!   request path, and under load the writer thread groups settlements into
//!   one commit, so group-commit throughput bounds requests per second;
//! * the response cache: many ~1 KB entries that must not make start-up slow.
//!
//! A bare append + `fdatasync` of 300 bytes is measured too: it is the floor
//! any durable commit on this disk pays.
//!
//! Run: `cargo run --release --manifest-path benches/store_choice/Cargo.toml`

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

/// Sequential durable settlements timed one by one.
const SETTLEMENTS: usize = 2_000;
/// Untimed settlements first, so file creation and first-page allocation
/// are not counted as settlement latency.
const WARMUP: usize = 20;
/// Settlements per durable commit in the group-commit run, and commits.
const GROUP: usize = 64;
const BATCHES: usize = 200;
/// Cache-like entries written before the open-time measurement.
const CACHE_ENTRIES: u64 = 100_000;
const CACHE_VALUE_LEN: usize = 1_000;
/// Entries per (non-durable) transaction while filling the cache.
const FILL_CHUNK: u64 = 1_000;
/// Reopenings whose median is reported.
const REOPENS: usize = 3;

/// The two totals every settlement adds to, as in the proxy's `spend`
/// table: the caller's API key and the global account (20-byte keys).
const ACCOUNTS: [&[u8]; 2] = [b"spend:key:bench-0001", b"spend:all:everyone00"];

/// A ledger key: 24 bytes, like the proxy's request ids.
fn ledger_key(i: usize) -> Vec<u8> {
    format!("req-{i:020}").into_bytes()
}

/// A ~300-byte JSON ledger entry, shaped like the proxy's `LedgerEntry`.
fn ledger_value(i: usize) -> Vec<u8> {
    let mut v = format!(
        "{{\"id\":\"req-{i:020}\",\"ts\":\"2026-01-01T00:00:00Z\",\"key\":\"bench-0001\",\
         \"model\":\"gpt-4o-mini\",\"provider\":\"openai\",\"input_tokens\":{},\
         \"output_tokens\":{},\"cost_nanos\":{},\"direct_nanos\":{},\"cache\":\"miss\",\
         \"status\":200,\"latency_ms\":{},\"note\":\"",
        i % 4096,
        i % 512,
        i * 7 % 100_000,
        i * 9 % 100_000,
        i % 900
    )
    .into_bytes();
    v.resize(298, b'x');
    v.extend_from_slice(b"\"}");
    v
}

/// Read-modify-write of a ~60-byte JSON totals record
/// (`{"cost_nanos":<20 digits>,"requests":<12 digits>}`, 59 bytes); the
/// fixed-width numbers keep parsing trivial so the stores are what is timed.
fn bump_totals(old: Option<&[u8]>) -> Vec<u8> {
    let (cost, reqs) = old
        .and_then(|b| {
            let s = std::str::from_utf8(b).ok()?;
            Some((s.get(14..34)?.parse::<u64>().ok()?, s.get(46..58)?.parse::<u64>().ok()?))
        })
        .unwrap_or((0, 0));
    format!("{{\"cost_nanos\":{:020},\"requests\":{:012}}}", cost + 1_234, reqs + 1).into_bytes()
}

/// A 1,000-byte cache value: JSON text around pseudo-random hex, so that
/// fjall's LZ4 compresses it about as much as a real response, not to nothing.
fn cache_value(id: u64) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = b"{\"choices\":[{\"message\":{\"content\":\"".to_vec();
    while v.len() < CACHE_VALUE_LEN - 6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(format!("{x:016x} ").as_bytes());
    }
    v.truncate(CACHE_VALUE_LEN - 6);
    v.extend_from_slice(b"\"}}]}");
    v.resize(CACHE_VALUE_LEN, b' ');
    v
}

/// What the benchmark needs from a store. Each method is one transaction.
trait Store: Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Res<Self>;
    /// Settlements `range` in one atomic transaction, durable on return.
    fn settle(&self, range: std::ops::Range<usize>) -> Res<()>;
    /// Cache entries `ids` in one transaction; durable only if `durable`.
    fn fill(&self, ids: std::ops::Range<u64>, durable: bool) -> Res<()>;
    /// An extra step before closing that makes the next open faster, if the
    /// store has one; `Ok(false)` if it has none.
    fn close(self) -> Res<bool> {
        Ok(false)
    }
}

mod redb_store {
    use super::*;
    use redb::{Database, Durability, ReadableTable, TableDefinition};

    type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
    const LEDGER: Def = TableDefinition::new("ledger");
    const SPEND: Def = TableDefinition::new("spend");
    const CACHE: Def = TableDefinition::new("cache");

    pub struct Redb(Database);

    impl Store for Redb {
        const NAME: &'static str = "redb";
        /// Opens the file and every table, as the proxy does at start-up.
        fn open(dir: &Path) -> Res<Self> {
            let db = Database::create(dir.join("p402.redb"))?;
            let tx = db.begin_write()?;
            tx.open_table(LEDGER)?;
            tx.open_table(SPEND)?;
            tx.open_table(CACHE)?;
            tx.commit()?;
            Ok(Redb(db))
        }
        fn settle(&self, range: std::ops::Range<usize>) -> Res<()> {
            let mut tx = self.0.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                let mut ledger = tx.open_table(LEDGER)?;
                let mut spend = tx.open_table(SPEND)?;
                for i in range {
                    ledger.insert(&ledger_key(i)[..], &ledger_value(i)[..])?;
                    for acct in ACCOUNTS {
                        let new = bump_totals(spend.get(acct)?.as_ref().map(|g| g.value()));
                        spend.insert(acct, &new[..])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        }
        fn fill(&self, ids: std::ops::Range<u64>, durable: bool) -> Res<()> {
            let mut tx = self.0.begin_write()?;
            tx.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
            {
                let mut cache = tx.open_table(CACHE)?;
                for id in ids {
                    cache.insert(&id.to_be_bytes()[..], &cache_value(id)[..])?;
                }
            }
            tx.commit()?;
            Ok(())
        }
    }
}

mod fjall_store {
    use super::*;
    use fjall::{
        KeyspaceCreateOptions, PersistMode, SingleWriterTxDatabase as Db,
        SingleWriterTxKeyspace as Ks, Slice,
    };

    /// The single-writer transactional database: its write transaction reads
    /// its own writes, which the totals read-modify-write needs, and like the
    /// proxy's writer thread there is only ever one writer.
    pub struct Fjall {
        db: Db,
        ledger: Ks,
        spend: Ks,
        cache: Ks,
    }

    impl Store for Fjall {
        const NAME: &'static str = "fjall";
        fn open(dir: &Path) -> Res<Self> {
            let db = Db::builder(dir).open()?;
            let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default);
            Ok(Fjall { ledger: ks("ledger")?, spend: ks("spend")?, cache: ks("cache")?, db })
        }
        /// `PersistMode::SyncAll` makes `commit` write the batch to the
        /// journal and `fsync` it before returning (fjall `batch/mod.rs`,
        /// `journal/writer.rs`); the default (`None`) does not sync at all.
        fn settle(&self, range: std::ops::Range<usize>) -> Res<()> {
            let mut tx = self.db.write_tx().durability(Some(PersistMode::SyncAll));
            for i in range {
                tx.insert(&self.ledger, ledger_key(i), ledger_value(i));
                for acct in ACCOUNTS {
                    tx.fetch_update(&self.spend, acct, |old| {
                        Some(Slice::from(bump_totals(old.map(|v| &v[..]))))
                    })?;
                }
            }
            tx.commit()?;
            Ok(())
        }
        fn fill(&self, ids: std::ops::Range<u64>, durable: bool) -> Res<()> {
            let mode = durable.then_some(PersistMode::SyncAll);
            let mut tx = self.db.write_tx().durability(mode);
            for id in ids {
                tx.insert(&self.cache, id.to_be_bytes(), cache_value(id));
            }
            tx.commit()?;
            Ok(())
        }
        /// Flushes the memtables to table files, so that reopening need not
        /// replay the journal (only for the note below the table).
        fn close(self) -> Res<bool> {
            for ks in [&self.ledger, &self.spend, &self.cache] {
                ks.inner().rotate_memtable_and_wait()?;
            }
            Ok(true)
        }
    }
}

mod sled_store {
    use super::*;
    use sled::transaction::ConflictableTransactionResult;
    use sled::{Db, Transactional, Tree};

    pub struct Sled {
        db: Db,
        ledger: Tree,
        spend: Tree,
        cache: Tree,
    }

    impl Store for Sled {
        const NAME: &'static str = "sled 0.34";
        fn open(dir: &Path) -> Res<Self> {
            let db = sled::open(dir)?;
            Ok(Sled {
                ledger: db.open_tree("ledger")?,
                spend: db.open_tree("spend")?,
                cache: db.open_tree("cache")?,
                db,
            })
        }
        /// sled's transactions are not durable by themselves: the proxy
        /// followed each with `flush()`, which is what is timed here.
        fn settle(&self, range: std::ops::Range<usize>) -> Res<()> {
            (&self.ledger, &self.spend).transaction(
                |(ledger, spend)| -> ConflictableTransactionResult<(), sled::Error> {
                    for i in range.clone() {
                        ledger.insert(ledger_key(i), ledger_value(i))?;
                        for acct in ACCOUNTS {
                            let new = bump_totals(spend.get(acct)?.as_deref());
                            spend.insert(acct, new)?;
                        }
                    }
                    Ok(())
                },
            )?;
            self.db.flush()?;
            Ok(())
        }
        fn fill(&self, ids: std::ops::Range<u64>, durable: bool) -> Res<()> {
            let mut batch = sled::Batch::default();
            for id in ids {
                batch.insert(&id.to_be_bytes()[..], cache_value(id));
            }
            self.cache.apply_batch(batch)?;
            if durable {
                self.db.flush()?;
            }
            Ok(())
        }
    }
}

/// One row of the table.
#[derive(Default)]
struct Row {
    name: &'static str,
    p50_us: f64,
    p99_us: f64,
    group_per_s: Option<f64>,
    open_ms: Option<f64>,
    size_mb: Option<f64>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn latencies(mut run: impl FnMut(usize) -> Res<()>) -> Res<(f64, f64)> {
    for i in 0..WARMUP {
        run(i)?;
    }
    let mut times = Vec::with_capacity(SETTLEMENTS);
    for i in WARMUP..WARMUP + SETTLEMENTS {
        let t = Instant::now();
        run(i)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.50), percentile(&times, 0.99)))
}

/// Apparent size of every file under `dir` (what `du --apparent-size` says).
fn dir_size(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// Runs the three measurements on `S`; also returns the open time after
/// the store's extra close step, if it has one.
fn bench<S: Store>(base: &Path) -> Res<(Row, Option<f64>)> {
    let mut row = Row { name: S::NAME, ..Row::default() };

    // 1. One settlement per durable commit.
    let dir = tempfile::tempdir_in(base)?;
    let store = S::open(dir.path())?;
    (row.p50_us, row.p99_us) = latencies(|i| store.settle(i..i + 1))?;
    drop(store);
    drop(dir);

    // 2. Group commit: GROUP settlements per durable commit.
    let dir = tempfile::tempdir_in(base)?;
    let store = S::open(dir.path())?;
    store.settle(0..GROUP)?; // warm-up, untimed
    let t = Instant::now();
    for b in 1..=BATCHES {
        store.settle(b * GROUP..(b + 1) * GROUP)?;
    }
    row.group_per_s = Some((BATCHES * GROUP) as f64 / t.elapsed().as_secs_f64());
    drop(store);
    drop(dir);

    // 3. Open time with a filled cache, closed cleanly (dropped) first.
    let dir = tempfile::tempdir_in(base)?;
    let store = S::open(dir.path())?;
    let mut id = 0;
    while id < CACHE_ENTRIES {
        let end = (id + FILL_CHUNK).min(CACHE_ENTRIES);
        store.fill(id..end, end == CACHE_ENTRIES)?;
        id = end;
    }
    drop(store);
    row.size_mb = Some(dir_size(dir.path())? as f64 / 1e6);
    let mut opens = Vec::new();
    for _ in 0..REOPENS {
        let t = Instant::now();
        let store = S::open(dir.path())?;
        opens.push(t.elapsed());
        drop(store);
    }
    opens.sort();
    row.open_ms = Some(opens[REOPENS / 2].as_secs_f64() * 1e3);

    // The same reopening after the store's own close step (fjall: memtables
    // flushed to table files, so the journal need not be replayed).
    if !S::open(dir.path())?.close()? {
        return Ok((row, None));
    }
    let t = Instant::now();
    drop(S::open(dir.path())?);
    Ok((row, Some(t.elapsed().as_secs_f64() * 1e3)))
}

/// Measurement 4, the floor: write 300 bytes to a file and `fdatasync` it. Appending
/// grows the file, so each sync also commits the new size to the ext4
/// journal. Overwriting in place does not, like fjall's preallocated
/// journal or redb's reused pages, so both are shown.
fn baseline(base: &Path, append: bool) -> Res<Row> {
    use std::io::{Seek, SeekFrom};
    let dir = tempfile::tempdir_in(base)?;
    let mut file = std::fs::File::create(dir.path().join("fsync.bin"))?;
    let record = [b'x'; 300];
    file.write_all(&record)?;
    file.sync_all()?;
    let (p50_us, p99_us) = latencies(|_| {
        if !append {
            file.seek(SeekFrom::Start(0))?;
        }
        file.write_all(&record)?;
        file.sync_data()?;
        Ok(())
    })?;
    let name = if append { "append 300 B + fdatasync" } else { "overwrite 300 B + fdatasync" };
    Ok(Row { name, p50_us, p99_us, ..Row::default() })
}

fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("({cmd} failed: {e})"))
}

fn main() -> Res<()> {
    // Temp dirs go under this crate's own target dir: the same disk as the
    // repository and the proxy's data dir in development, and gitignored.
    let base = PathBuf::from(
        std::env::var("STORE_CHOICE_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_string()),
    );
    std::fs::create_dir_all(&base)?;
    let fs = shell("stat", &["-f", "-c", "%T", &base.display().to_string()]);
    println!(
        "{} · {} cores · {fs} at {} · `cargo run --release --manifest-path benches/store_choice/Cargo.toml`\n",
        shell("date", &["-u", "+%F"]),
        shell("nproc", &[]),
        base.display(),
    );

    let mut notes = Vec::new();
    let mut rows = Vec::new();
    for (row, flushed_open) in [
        bench::<redb_store::Redb>(&base)?,
        bench::<fjall_store::Fjall>(&base)?,
        bench::<sled_store::Sled>(&base)?,
    ] {
        if let Some(ms) = flushed_open {
            notes.push(format!(
                "{}: open {ms:.1} ms when its memtables were flushed before closing",
                row.name
            ));
        }
        rows.push(row);
    }
    rows.push(baseline(&base, true)?);
    rows.push(baseline(&base, false)?);

    let opt = |v: Option<f64>, prec: usize| v.map_or("–".into(), |v| format!("{v:.prec$}"));
    println!(
        "| store | settle p50 µs | settle p99 µs | group commit ({GROUP}/commit) settlements/s \
         | open {CACHE_ENTRIES} entries ms | size MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} |",
            r.name,
            r.p50_us,
            r.p99_us,
            opt(r.group_per_s, 0),
            opt(r.open_ms, 1),
            opt(r.size_mb, 1)
        );
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    Ok(())
}
