//! Cache index lookup time at 10k, 100k and 1M entries, all in one scope
//! (the worst case: one application, one system prompt) and spread over
//! 1,000 scopes; the IVF layout's build time and recall against the full
//! scan; memory per entry; and start-up with 1M entries stored in the database.
//!
//! Run: `cargo bench --bench cache_lookup` (prints Markdown; the start-up
//! part writes about 3 GB to a temporary directory). Set
//! `P402_BENCH_STARTUP_ENTRIES` to change its size (0 skips it), and
//! `P402_BENCH_STARTUP_ONLY=1` to run only that part.

use std::time::{Duration, Instant};

use p402::cache::index::{Index, Slot, IVF_MIN};
use p402::cache::scope::Scope;
use p402::cache::{Cache, Probe};
use p402::catalog::Usage;
use p402::config::CacheConfig;
use p402::embed::DIMENSIONS;
use p402::store::Store;
use serde_json::json;

/// Deterministic pseudo-random unit vectors: no clusters, the hardest case
/// for an IVF layout (real embeddings cluster by topic).
fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..DIMENSIONS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    normalize(v)
}

fn normalize(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

/// A rewording of stored entry `target`: cosine about 0.95 to it, the
/// region where the cache's threshold (0.90) decides.
fn near(target: u64, q: u64) -> Vec<f32> {
    let noise = vector(90_000_000 + q);
    normalize(
        vector(target)
            .iter()
            .zip(&noise)
            .map(|(a, b)| a * 0.95 + b * 0.31)
            .collect(),
    )
}

fn scope(i: u64) -> Scope {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    Scope(s)
}

fn slot(i: u64) -> Slot {
    Slot {
        id: i,
        expires: u64::MAX,
        last_used: i,
    }
}

fn percentile(mut times: Vec<f64>, p: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    times[((times.len() - 1) as f64 * p).round() as usize]
}

const QUERIES: u64 = 201;

/// Median and p99 lookup in ms, and how many near duplicates came back as
/// the best match.
fn lookups(index: &Index, n: u64, scopes: u64) -> (f64, f64, u64) {
    let mut found = 0;
    let times: Vec<f64> = (0..QUERIES)
        .map(|q| {
            let target = (q * 4_999) % n;
            let v = near(target, q);
            let start = Instant::now();
            let best = index.nearest(&scope(target % scopes), &v, 4, 0.88, 0);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            if best.first().map(|f| f.id) == Some(target) {
                found += 1;
            }
            ms
        })
        .collect();
    (
        percentile(times.clone(), 0.5),
        percentile(times, 0.99),
        found,
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn lookup_table() {
    println!("| entries | scopes | layout | median lookup | p99 lookup | near duplicates found | index bytes per entry | layout build |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for n in [10_000u64, 100_000, 1_000_000] {
        for scopes in [1u64, 1000] {
            let mut index = Index::with_ivf_min(usize::MAX);
            for i in 0..n {
                index.insert(scope(i % scopes), i, Some(&vector(i)), slot(i));
            }
            let (p50, p99, found) = lookups(&index, n, scopes);
            let bytes = index.bytes() / index.len();
            println!(
                "| {n} | {scopes} | flat scan | {p50:.3} ms | {p99:.3} ms | {found}/{QUERIES} | {bytes} | – |"
            );
            if scopes == 1 && n as usize >= IVF_MIN {
                let start = Instant::now();
                index.build_ivf(&scope(0));
                let build = start.elapsed().as_secs_f64();
                let (p50, p99, found) = lookups(&index, n, scopes);
                let bytes = index.bytes() / index.len();
                println!(
                    "| {n} | {scopes} | IVF | {p50:.3} ms | {p99:.3} ms | {found}/{QUERIES} | {bytes} | {build:.1} s |"
                );
            }
        }
    }
}

/// Fills a store through the cache's own write path, then times
/// opening it: reading the index records, and the background IVF build.
fn startup(entries: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = CacheConfig {
        max_entries: entries + 1,
        ..CacheConfig::default()
    };
    let one = scope(1);
    let response = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_764_000_000u64,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "A realistic answer of a few sentences, about the length a chat model gives to a short factual question. It is stored whole and replayed on a hit, so its size counts toward the database."}}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 40, "total_tokens": 64},
    });
    let fill = Instant::now();
    {
        let store = Store::open(dir.path()).expect("store");
        let cache = Cache::open(&store).expect("cache");
        for i in 0..entries {
            let probe = Probe::new(
                one,
                format!("synthetic question number {i} about a topic"),
                Some(vector(i)),
                86_400 * 30,
            );
            cache
                .store_blocking(
                    probe,
                    &response,
                    &Usage::default(),
                    "openai",
                    "gpt-4o-mini",
                    &config,
                )
                .expect("store");
        }
        store.flush_blocking().expect("flush");
    }
    let fill = fill.elapsed().as_secs_f64();
    let disk: u64 = walk(dir.path());
    // Opened in a fresh process, so that memory and time are its own.
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .env(OPEN_ONLY, dir.path())
        .output()
        .expect("run the open phase");
    let opened = String::from_utf8_lossy(&out.stdout);
    println!("| entries stored | on disk | fill (cache write path) | the database opens | cache open returns (p402 listens) | all entries loaded | IVF layout ready | RSS when loaded | with IVF | index bytes per entry |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {entries} | {:.2} GB | {fill:.0} s | {} |",
        disk as f64 / 1e9,
        opened.trim()
    );
}

/// The open phase, in its own process: time to open, to load every entry,
/// to lay out the IVF; resident memory after each.
fn open_only(dir: &std::path::Path) {
    let one = scope(1);
    let start = Instant::now();
    let store = Store::open(dir).expect("store");
    let sled_open = start.elapsed().as_secs_f64();
    let cache = Cache::open(&store).expect("cache");
    let open = start.elapsed().as_secs_f64();
    while !cache.is_loaded() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let loaded = start.elapsed().as_secs_f64();
    let rss_loaded = rss_mib();
    while !cache.ivf_ready(&one) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = start.elapsed().as_secs_f64();
    let rss_ready = rss_mib();
    let stats = cache.stats(&CacheConfig::default());
    println!(
        "{sled_open:.2} s | {open:.2} s | {loaded:.1} s | {ready:.1} s | {rss_loaded:.0} MiB | {rss_ready:.0} MiB | {}",
        stats["bytes_per_entry"]
    );
}

const OPEN_ONLY: &str = "P402_BENCH_OPEN_ONLY";

fn walk(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(dir) = std::env::var_os(OPEN_ONLY) {
        open_only(std::path::Path::new(&dir));
        return;
    }
    let startup_entries = std::env::var("P402_BENCH_STARTUP_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    if startup_entries > 0 {
        startup(startup_entries);
        println!();
    }
    if std::env::var_os("P402_BENCH_STARTUP_ONLY").is_none() {
        lookup_table();
    }
}
