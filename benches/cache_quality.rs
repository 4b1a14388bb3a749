//! How well the semantic cache tells paraphrases from near misses, with the
//! real model, on public labelled data and p402's own hard cases: recall and
//! false hits at several thresholds, with and without the guards.
//!
//! Run: `cargo bench --bench cache_quality` (fetches the model into
//! target/embedder on first run; prints Markdown for BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use p402::cache::guard;
use p402::embed::{fetch, Embedder};

const THRESHOLDS: [f32; 6] = [0.80, 0.85, 0.88, 0.90, 0.92, 0.95];

fn data(name: &str) -> Vec<Vec<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/data")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Embeddings {
    embedder: Embedder,
    runtime: tokio::runtime::Runtime,
    memo: BTreeMap<String, Vec<f32>>,
}

impl Embeddings {
    fn of(&mut self, text: &str) -> Vec<f32> {
        if let Some(v) = self.memo.get(text) {
            return v.clone();
        }
        let v = self
            .runtime
            .block_on(self.embedder.embed(text))
            .expect("embed");
        self.memo.insert(text.to_string(), v.clone());
        v
    }
}

/// Top-1 over a store: (index of best, cosine), the best that passes the
/// guards when `guarded`.
fn best(
    query: &str,
    qv: &[f32],
    store: &[(String, Vec<f32>)],
    threshold: f32,
    guarded: bool,
) -> Option<usize> {
    let mut scored: Vec<(usize, f32)> = store
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i, cosine(qv, v)))
        .filter(|(_, c)| *c >= threshold)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
        .into_iter()
        .map(|(i, _)| i)
        .find(|i| !guarded || guard::check(query, &store[*i].0).is_none())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/embedder");
    runtime
        .block_on(fetch::ensure(&dir))
        .expect("fetch the model");
    let embedder = Embedder::load(&dir).expect("load the model");
    let mut e = Embeddings {
        embedder,
        runtime,
        memo: BTreeMap::new(),
    };

    // 1. p402's hard cases, pairwise.
    let cases = data("hard_cases.tsv");
    println!("### Hard cases (pairwise): hit rate per kind\n");
    println!(
        "Paraphrases should hit; every other kind should not (its rate is the false-hit rate).\n"
    );
    println!(
        "| kind | n | guards | {} |",
        THRESHOLDS.map(|t| format!("t={t:.2}")).join(" | ")
    );
    println!("|---|---:|---|{}|", THRESHOLDS.map(|_| "---:").join("|"));
    let mut kinds: BTreeMap<String, Vec<(f32, bool)>> = BTreeMap::new();
    for row in &cases {
        let (kind, a, b) = (&row[0], &row[2], &row[3]);
        let c = cosine(&e.of(a), &e.of(b));
        kinds
            .entry(kind.clone())
            .or_default()
            .push((c, guard::check(a, b).is_none()));
    }
    for (kind, pairs) in &kinds {
        for guarded in [false, true] {
            let cells: Vec<String> = THRESHOLDS
                .iter()
                .map(|t| {
                    let hits = pairs
                        .iter()
                        .filter(|(c, pass)| *c >= *t && (!guarded || *pass))
                        .count();
                    format!("{:.0}%", 100.0 * hits as f64 / pairs.len() as f64)
                })
                .collect();
            println!(
                "| {kind} | {} | {} | {} |",
                pairs.len(),
                if guarded { "on" } else { "off" },
                cells.join(" | ")
            );
        }
    }

    // 2. GPTCache mock: store every origin, look up every paraphrase.
    let mock = data("gptcache_mock_pairs.tsv");
    let store: Vec<(String, Vec<f32>)> = mock.iter().map(|r| (r[1].clone(), e.of(&r[1]))).collect();
    println!("\n### GPTCache mock (999 paraphrase lookups against 999 stored sentences)\n");
    println!("| t | guards | correct hits | wrong hits | misses |");
    println!("|---|---|---:|---:|---:|");
    for t in THRESHOLDS {
        for guarded in [false, true] {
            let (mut correct, mut wrong, mut miss) = (0, 0, 0);
            for (i, row) in mock.iter().enumerate() {
                let qv = e.of(&row[2]);
                match best(&row[2], &qv, &store, t, guarded) {
                    Some(j) if j == i => correct += 1,
                    Some(_) => wrong += 1,
                    None => miss += 1,
                }
            }
            println!(
                "| {t:.2} | {} | {correct} | {wrong} | {miss} |",
                if guarded { "on" } else { "off" }
            );
        }
    }

    // 3. BANKING77 shared store.
    let queries = data("banking77_test_queries.tsv");
    let cached: Vec<&Vec<String>> = queries.iter().filter(|r| r[3] == "cache").collect();
    let asked: Vec<&Vec<String>> = queries.iter().filter(|r| r[3] == "query").collect();
    let store: Vec<(String, Vec<f32>)> =
        cached.iter().map(|r| (r[1].clone(), e.of(&r[1]))).collect();
    println!("\n### BANKING77 shared store (1,540 lookups against 1,540 stored queries; a hit is correct when the intents match)\n");
    println!("| t | guards | hit rate | hit precision |");
    println!("|---|---|---:|---:|");
    for t in THRESHOLDS {
        for guarded in [false, true] {
            let (mut hits, mut right) = (0, 0);
            for row in &asked {
                let qv = e.of(&row[1]);
                if let Some(j) = best(&row[1], &qv, &store, t, guarded) {
                    hits += 1;
                    if cached[j][2] == row[2] {
                        right += 1;
                    }
                }
            }
            println!(
                "| {t:.2} | {} | {:.2} | {:.3} |",
                if guarded { "on" } else { "off" },
                hits as f64 / asked.len() as f64,
                if hits == 0 {
                    0.0
                } else {
                    right as f64 / hits as f64
                }
            );
        }
    }

    // 4. BANKING77 pairwise.
    let pairs = data("banking77_pairs.tsv");
    println!("\n### BANKING77 pairwise (1,540 same-intent pairs, 1,540 hard negatives)\n");
    println!("| t | guards | recall | false-hit rate |");
    println!("|---|---|---:|---:|");
    let scored: Vec<(f32, bool, bool)> = pairs
        .iter()
        .map(|r| {
            (
                cosine(&e.of(&r[1]), &e.of(&r[2])),
                r[3] == "1",
                guard::check(&r[1], &r[2]).is_none(),
            )
        })
        .collect();
    for t in THRESHOLDS {
        for guarded in [false, true] {
            let hit = |(c, _, pass): &(f32, bool, bool)| *c >= t && (!guarded || *pass);
            let pos = scored.iter().filter(|s| s.1).count();
            let neg = scored.len() - pos;
            let tp = scored.iter().filter(|s| s.1 && hit(s)).count();
            let fp = scored.iter().filter(|s| !s.1 && hit(s)).count();
            println!(
                "| {t:.2} | {} | {:.3} | {:.3} |",
                if guarded { "on" } else { "off" },
                tp as f64 / pos as f64,
                fp as f64 / neg as f64
            );
        }
    }
}
