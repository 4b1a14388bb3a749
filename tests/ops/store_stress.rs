//! The store under sustained mixed load, with a watchdog.
//!
//! sled 0.34 once froze the suite (and could freeze p402): a cache store
//! held sled's segment accountant while it waited for a file truncation
//! queued on sled's I/O pool, whose threads all waited for that same
//! accountant. This test drives one database as p402 does — cache stores
//! and evictions, hit-count writes, ledger settlements (awaited and
//! queued), session writes, reads, and a second database whose large cache
//! loads in the background while it is written — from several threads at
//! once, and fails as soon as any single operation takes longer than
//! [`STUCK`], printing what every worker was doing and, where gdb is
//! installed, every thread's stack.
//!
//! `P402_STRESS_SECONDS` sets how long it runs (CI: the default); the soak
//! figures in BENCHMARKS.md come from long runs of this same test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p402::cache::index::Index;
use p402::cache::scope::Scope;
use p402::cache::{Cache, Probe};
use p402::catalog::Usage;
use p402::config::CacheConfig;
use p402::store::{LedgerEntry, Store};
use serde_json::json;

/// One operation longer than this is a hang.
const STUCK: Duration = Duration::from_secs(10);
const DEFAULT_SECONDS: u64 = 45;

/// What one worker is doing now, for the watchdog.
#[derive(Default)]
struct Activity {
    current: Mutex<Option<(&'static str, Instant)>>,
    done: AtomicU64,
}

impl Activity {
    /// Runs one operation under the watchdog's eye.
    fn run<T>(&self, what: &'static str, op: impl FnOnce() -> T) -> T {
        *self.current.lock().expect("activity") = Some((what, Instant::now()));
        let out = op();
        *self.current.lock().expect("activity") = None;
        self.done.fetch_add(1, Ordering::Relaxed);
        out
    }

    fn stuck_for(&self) -> Option<(&'static str, Duration)> {
        let current = *self.current.lock().expect("activity");
        current.map(|(what, since)| (what, since.elapsed()))
    }
}

fn entry(id: String, cost: i64) -> LedgerEntry {
    LedgerEntry {
        door: None,
        time: chrono::Utc::now(),
        request_id: id,
        session: None,
        budgets: vec![],
        provider: "openai".into(),
        model: Some("gpt-4o-mini".into()),
        input_tokens: 12,
        output_tokens: 3,
        cached_input_tokens: 0,
        cost_nanos: cost,
        direct_nanos: cost * 2,
        cached: false,
        estimated: false,
        client_session: None,
        forwarded: None,
    }
}

/// A pseudo-random unit vector, so that stores also write vectors.
fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

fn store_answer(cache: &Cache, scope: Scope, i: u64, config: &CacheConfig) {
    let answer = json!({
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x".repeat(200 + (i % 7) as usize * 300)}, "finish_reason": "stop"}],
    });
    cache
        .store_blocking(
            Probe::new(scope, format!("question {i}"), Some(vector(i)), 3600),
            &answer,
            &Usage::default(),
            "openai",
            "gpt-4o-mini",
            config,
        )
        .expect("cache store");
}

/// A current-thread runtime per worker: the store's async calls, and the
/// cache's hit-count writes that go to `spawn_blocking`.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn mixed_load_never_hangs() {
    let seconds = std::env::var("P402_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let run_for = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("dir");
    let other_dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("open");
    // Small enough that stores keep evicting: deletes are what free and
    // truncate the database's segments.
    let config = CacheConfig {
        max_entries: 1500,
        ..CacheConfig::default()
    };
    let cache = Cache::open(&store).expect("cache");
    let stop = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(AtomicU64::new(0));
    let mut workers: Vec<(&'static str, Arc<Activity>, std::thread::JoinHandle<()>)> = Vec::new();
    let mut spawn = |name: &'static str, work: Box<dyn FnOnce(Arc<Activity>) + Send>| {
        let activity = Arc::new(Activity::default());
        let mine = Arc::clone(&activity);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(mine))
            .expect("thread");
        workers.push((name, activity, handle));
    };

    // Cache stores (with evictions) in two scopes.
    for worker in 0..2u64 {
        let (cache, config, stop) = (cache.clone(), config.clone(), Arc::clone(&stop));
        spawn(
            "cache-store",
            Box::new(move |me| {
                let scope = Scope([worker as u8 + 1; 32]);
                let mut i = worker << 40;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    me.run("cache store", || store_answer(&cache, scope, i, &config));
                }
            }),
        );
    }
    // Exact lookups of recent questions: hits write their counts.
    {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        spawn(
            "cache-lookup",
            Box::new(move |me| {
                let rt = runtime();
                let scope = Scope([1; 32]);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut probe = Probe::new(scope, format!("question {}", n % 400), None, 3600);
                    me.run("cache lookup", || {
                        rt.block_on(cache.lookup(&mut probe, 0.9)).expect("lookup")
                    });
                }
            }),
        );
    }
    // Ledger settlements, awaited (durable) and queued (free).
    for _ in 0..2 {
        let (store, stop, settled) = (store.clone(), Arc::clone(&stop), Arc::clone(&settled));
        spawn(
            "ledger",
            Box::new(move |me| {
                let rt = runtime();
                let accounts = vec!["session:s".to_string(), "budget:global:total".to_string()];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = p402::server::ids::RequestId::new().to_string();
                    if n % 4 == 0 {
                        me.run("free ledger entry", || {
                            store
                                .record_queued(&entry(id, 0), &accounts)
                                .expect("queued")
                        });
                    } else {
                        me.run("ledger settlement", || {
                            rt.block_on(store.record(&entry(id, 3), &accounts))
                                .expect("settled")
                        });
                    }
                    settled.fetch_add(1, Ordering::Relaxed);
                }
            }),
        );
    }
    // Session writes and reads, ledger reads.
    {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        spawn(
            "sessions",
            Box::new(move |me| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("ses_{}", n % 50);
                    me.run("session write", || {
                        store
                            .put_session(&id, &json!({"id": id, "n": n}))
                            .expect("session")
                    });
                    me.run("session read", || {
                        store.session::<serde_json::Value>(&id).expect("read")
                    });
                    me.run("totals read", || store.totals("session:s").expect("totals"));
                    if n % 100 == 0 {
                        me.run("ledger scan", || {
                            store
                                .entries_since(chrono::Utc::now() - chrono::Duration::seconds(1))
                                .count()
                        });
                    }
                }
            }),
        );
    }
    // A second database whose large cache loads in the background while
    // it is written, reopened over and over.
    {
        let (config, stop) = (config.clone(), Arc::clone(&stop));
        let path = other_dir.path().to_path_buf();
        spawn(
            "reopen-loader",
            Box::new(move |me| {
                // Larger than what loads before `open_with` returns (it is
                // given no time), bounded so that it does not grow for ever.
                let loading = CacheConfig {
                    max_entries: 6000,
                    ..config
                };
                let scope = Scope([9; 32]);
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let store = me.run("open", || Store::open(&path).expect("open"));
                    let cache = me.run("cache open", || {
                        Cache::open_with(&store, Index::default(), Duration::ZERO).expect("cache")
                    });
                    for _ in 0..400 {
                        next += 1;
                        me.run("cache store (loading)", || {
                            store_answer(&cache, scope, next, &loading)
                        });
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    me.run("close", || drop((cache, store)));
                }
            }),
        );
    }

    // The watchdog.
    let started = Instant::now();
    let mut hang = None;
    while started.elapsed() < run_for && hang.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        hang = workers.iter().find_map(|(name, activity, handle)| {
            if handle.is_finished() {
                return Some(format!("worker {name} ended early (it panicked)"));
            }
            activity
                .stuck_for()
                .filter(|(_, for_)| *for_ > STUCK)
                .map(|(what, for_)| format!("{name}: {what} running for {for_:?}"))
        });
    }
    if let Some(hang) = hang {
        eprintln!("the store hung after {:?}: {hang}", started.elapsed());
        for (name, activity, _) in &workers {
            eprintln!(
                "  {name}: {} operations, now {:?}",
                activity.done.load(Ordering::Relaxed),
                activity.stuck_for()
            );
        }
        print_stacks();
        panic!("the store hung: {hang}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for (name, activity, handle) in workers {
        let finished = Instant::now() + STUCK;
        while !handle.is_finished() {
            assert!(Instant::now() < finished, "{name} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().expect("worker");
        let done = activity.done.load(Ordering::Relaxed);
        println!("{name}: {done} operations");
        total += done;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "store stress: {total} operations in {minutes:.2} min, 0 hangs (longest allowed {STUCK:?})"
    );
    // Every settlement is counted once, and everything is still readable.
    let rt = runtime();
    rt.block_on(store.caught_up()).expect("caught up");
    let totals = store.totals("session:s").expect("totals");
    assert_eq!(totals.requests, settled.load(Ordering::Relaxed));
    assert_eq!(store.ledger_len() as u64, settled.load(Ordering::Relaxed));
}

/// Every thread's stack, from gdb where it is installed. gdb stops this
/// process while it reads it, this thread included, so it writes to a file
/// rather than to a pipe that this thread would have to drain; debuginfod
/// is off since, offline, its look-ups would wait out their timeouts.
fn print_stacks() {
    let pid = std::process::id().to_string();
    let out = std::env::temp_dir().join(format!("p402-stress-stacks-{pid}.txt"));
    let ran = std::fs::File::create(&out).and_then(|file| {
        std::process::Command::new("timeout")
            .args(["120", "gdb", "-nx", "-iex", "set debuginfod enabled off"])
            .args(["-p", &pid, "-batch", "-ex", "thread apply all bt"])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .status()
    });
    match ran.and_then(|_| std::fs::read_to_string(&out)) {
        Ok(stacks) => eprintln!("{stacks}"),
        Err(e) => eprintln!("(no stacks: gdb could not run: {e})"),
    }
}
