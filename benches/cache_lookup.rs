//! Cache index lookup time at 10k, 100k and 1M entries, all in one scope
//! (the worst case: one application, one system prompt) and spread over
//! 1,000 scopes; and the index's memory per entry.
//!
//! Run: `cargo bench --bench cache_lookup` (prints Markdown).

use std::time::Instant;

use p402::cache::index::{Index, Slot};
use p402::cache::scope::Scope;
use p402::embed::DIMENSIONS;

/// Deterministic pseudo-random unit vectors (no model needed to time a scan).
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
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

fn scope(i: u64) -> Scope {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    Scope(s)
}

fn median_ms(index: &Index, scopes: u64, queries: u64) -> f64 {
    let mut times: Vec<f64> = (0..queries)
        .map(|q| {
            let v = vector(10_000_000 + q);
            let start = Instant::now();
            let found = index.nearest(&scope(q % scopes), &v, 4, 0.5, 0);
            std::hint::black_box(found);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    println!("| entries | scopes | median lookup | index bytes per entry |");
    println!("|---:|---:|---:|---:|");
    for n in [10_000u64, 100_000, 1_000_000] {
        for scopes in [1u64, 1000] {
            let mut index = Index::default();
            for i in 0..n {
                index.insert(
                    scope(i % scopes),
                    i,
                    Some(&vector(i)),
                    Slot {
                        id: i,
                        expires: u64::MAX,
                        last_used: i,
                    },
                );
            }
            let ms = median_ms(&index, scopes, 51);
            println!(
                "| {n} | {scopes} | {ms:.3} ms | {} |",
                index.bytes() / index.len()
            );
        }
    }
}
