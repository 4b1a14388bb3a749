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

const THRESHOLDS: [f32; 6] = [0.50, 0.70, 0.80, 0.85, 0.90, 0.95];
/// The candidate floor p402 ships: `[cache] similarity`'s default, as
/// `p402.toml` has it.
fn shipped_floor() -> f32 {
    p402::config::CacheConfig::default().similarity.0 as f32
}

/// Candidate floors tried on the `tune` split of the hard sets.
const FLOORS: [f32; 9] = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.80, 0.90];

/// The false-hit rates the search on `tune` may reach: half the issue's
/// targets (2% overall, 5% for each kind), because every split read fresh
/// so far has shown more false hits than `tune` did (`cache_fresh3`: 4.1%
/// against tune's 2.0%) and recall has room above its 60% goal.
const TUNE_FALSE_HITS: f64 = 0.01;
const TUNE_FALSE_HITS_PER_KIND: f64 = 0.025;

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

    fn verify(&mut self, asked: &str, cached: &str) -> f32 {
        self.runtime
            .block_on(self.embedder.verify(asked, cached))
            .expect("verify")
    }
}

/// Whether the guards and the verifier at `tuning` accept `cached` for
/// `asked` (what `lookup` does with a candidate).
fn accepted(e: &mut Embeddings, asked: &str, cached: &str, cosine: f32) -> bool {
    let tuning = guard::Tuning::CHOSEN;
    let refusal = guard::check(asked, cached, cosine);
    let same_words = refusal.is_none() && guard::same_words(asked, cached);
    guard::verifier_bar(refusal, same_words, tuning)
        .is_some_and(|bar| e.verify(asked, cached) >= bar)
}

/// Top-1 over a store: the index of the best candidate from `threshold`,
/// or with `guarded` the closest that the guards and the verifier accept
/// among those near the best (as `lookup` does).
fn best(
    e: &mut Embeddings,
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
    let top = scored.first().map_or(0.0, |s| s.1);
    scored
        .into_iter()
        .take_while(|(_, c)| !guarded || *c >= top - guard::RUNNER_UP_MARGIN)
        .find(|(i, c)| !guarded || accepted(e, query, &store[*i].0, *c))
        .map(|(i, _)| i)
}

/// One labelled pair of a hard set.
struct Pair {
    set: &'static str,
    split: String,
    kind: String,
    positive: bool,
    cosine: f32,
    /// The verifier's confidence.
    verified: f32,
    /// The same content words on both sides (`guard::same_words`).
    same_words: bool,
    a: String,
    b: String,
}

/// Recall, false-hit rate and (hits, pairs) per negative kind of `pairs`,
/// where `hit` says whether the `i`th pair is a hit.
fn rates(
    pairs: &[&Pair],
    hit: impl Fn(usize, &Pair) -> bool,
) -> (f64, f64, BTreeMap<String, (usize, usize)>) {
    let (mut tp, mut pos, mut fp, mut neg) = (0, 0, 0, 0);
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        let h = hit(i, p);
        if p.positive {
            pos += 1;
            tp += usize::from(h);
        } else {
            neg += 1;
            fp += usize::from(h);
            let k = kinds.entry(p.kind.clone()).or_default();
            k.0 += usize::from(h);
            k.1 += 1;
        }
    }
    (
        tp as f64 / pos.max(1) as f64,
        fp as f64 / neg.max(1) as f64,
        kinds,
    )
}

/// A rule for the hard sets: candidates from `floor`, then the guards and
/// the verifier as `tuning` has them (`None`: cosine alone).
#[derive(Clone, Copy)]
struct Rule {
    floor: f32,
    tuning: Option<guard::Tuning>,
}

impl Rule {
    fn hits(self, p: &Pair, refusal: Option<guard::Refusal>) -> bool {
        p.cosine >= self.floor
            && self.tuning.is_none_or(|t| {
                guard::verifier_bar(refusal, refusal.is_none() && p.same_words, t)
                    .is_some_and(|bar| p.verified >= bar)
            })
    }

    fn refusal(self, p: &Pair) -> Option<guard::Refusal> {
        self.tuning
            .and_then(|t| guard::check_tuned(&p.a, &p.b, p.cosine, t))
    }
}

/// The hard sets (`cache_dev.tsv`, written for p402; `fow_cache_pairs.tsv`,
/// public; `cache_fresh.tsv`, `cache_fresh2.tsv` and `cache_fresh3.tsv`,
/// written for p402 as test splits after the ones before had been read,
/// each made `tune` once read; `cache_written.tsv`, `cache_written2.tsv`
/// and `cache_written3.tsv`, written for p402 to teach and tune the
/// verifier on the kinds of question the fresh splits showed it weak on;
/// `cache_fresh4.tsv`, the test split that replaced them). Their `train`
/// rows taught the verifier; the candidate floor and the guards' and
/// verifier's thresholds are chosen on the `tune` rows (the most recall
/// within `TUNE_FALSE_HITS` overall and `TUNE_FALSE_HITS_PER_KIND` in
/// every kind); everything is reported on the `test` rows, which nothing
/// was chosen on. Oldest first.
const HARD_SETS: [&str; 9] = [
    "cache_dev.tsv",
    "fow_cache_pairs.tsv",
    "cache_fresh.tsv",
    "cache_written.tsv",
    "cache_fresh2.tsv",
    "cache_written2.tsv",
    "cache_fresh3.tsv",
    "cache_written3.tsv",
    "cache_fresh4.tsv",
];

fn hard_sets(e: &mut Embeddings) {
    // `P402_QUALITY_SCORES=FILE`: the verifier's confidences from a file
    // (`asked TAB cached TAB confidence` per line), to measure a candidate
    // verifier (`benches/verifier/score.py`) before building it in.
    let scores: Option<BTreeMap<(String, String), f32>> = std::env::var_os("P402_QUALITY_SCORES")
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read the scores");
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    let (a, b, v) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
                    Some(((a.to_string(), b.to_string()), v))
                })
                .collect()
        });
    let mut pairs = Vec::new();
    for name in HARD_SETS {
        for row in data(name) {
            let cosine = cosine(&e.of(&row[3]), &e.of(&row[4]));
            pairs.push(Pair {
                set: name,
                split: row[0].clone(),
                kind: row[1].clone(),
                positive: row[2] == "1",
                cosine,
                verified: match &scores {
                    Some(s) => *s
                        .get(&(row[3].clone(), row[4].clone()))
                        .expect("a score for every pair"),
                    None => e.verify(&row[3], &row[4]),
                },
                same_words: guard::same_words(&row[3], &row[4]),
                a: row[3].clone(),
                b: row[4].clone(),
            });
        }
    }
    let select = |split: &str, sets: &[&str]| -> Vec<&Pair> {
        pairs
            .iter()
            .filter(|p| p.split == split && sets.contains(&p.set))
            .collect()
    };
    // `P402_QUALITY_DECISIONS=FILE`: every pair's decision at the shipped
    // thresholds (`Tuning::CHOSEN`, candidates from the shipped floor), to compare two
    // models pair by pair.
    if let Some(path) = std::env::var_os("P402_QUALITY_DECISIONS") {
        let shipped = Rule {
            floor: shipped_floor(),
            tuning: Some(guard::Tuning::CHOSEN),
        };
        let lines: String = pairs
            .iter()
            .map(|p| {
                let hit = shipped.hits(p, shipped.refusal(p));
                format!(
                    "{}\t{}\t{}\t{}\t{hit}\t{:.3}\t{:.3}\t{}\t{}\n",
                    p.split, p.set, p.kind, p.positive, p.cosine, p.verified, p.a, p.b
                )
            })
            .collect();
        std::fs::write(&path, lines).expect("write the decisions");
    }
    let tune = select("tune", &HARD_SETS);
    let meets = |(_, f, kinds): &(f64, f64, BTreeMap<String, (usize, usize)>)| {
        *f <= TUNE_FALSE_HITS
            && kinds
                .values()
                .all(|(h, n)| *h as f64 <= TUNE_FALSE_HITS_PER_KIND * *n as f64)
    };
    let worst = |kinds: &BTreeMap<String, (usize, usize)>| {
        kinds
            .values()
            .map(|(h, n)| *h as f64 / *n as f64)
            .fold(0.0, f64::max)
    };
    // The search: every floor with every tuning. The guards' refusals
    // depend only on their own three settings, so they are worked out
    // once per setting.
    // The fact guards' bars are held at `facts` here, and searched
    // after, from this search's best (below).
    let main_search = |facts: guard::FactBars| {
        let mut best: Option<(f64, Rule)> = None;
        let mut closest: Option<(f64, f64, Rule)> = None;
        for close_enough in [0.86, 0.90, 0.94, 1.01] {
            for reworded in [0.60, 0.70, 0.80, 0.90] {
                for max_swapped in [2, 3, 4] {
                    let words = guard::Tuning {
                        close_enough,
                        reworded,
                        max_swapped,
                        facts,
                        ..guard::Tuning::CHOSEN
                    };
                    let refusals: Vec<_> = tune
                        .iter()
                        .map(|p| guard::refusals(&p.a, &p.b, p.cosine, words))
                        .collect();
                    for verified in [0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95] {
                        let bars = [verified, 0.9, 0.95, 0.98, 0.99, 1.01]
                            .into_iter()
                            // Strictest first: on a tie the search keeps the
                            // fact guards, and those counting added words,
                            // standing.
                            .flat_map(|o| [1.01, 0.995, 0.99, 0.98, 0.95].map(|f| (o, f)))
                            .flat_map(|(o, f)| {
                                [1.01, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6]
                                    .map(|a| (o, f, a))
                            });
                        // The same words moved: at the rewordings' bar first, so
                        // that a tie between two `same_words` bars under the same
                        // other bars keeps it there.
                        let bars = bars.flat_map(|b| {
                            [verified, 0.6, 0.5, 0.3, 0.0]
                                .into_iter()
                                .filter(move |s| *s <= verified)
                                .enumerate()
                                .filter(|(i, s)| *i == 0 || *s < verified)
                                .map(move |(_, s)| (b, s))
                        });
                        for ((overrule, overrule_fact, overrule_added), same_words) in bars {
                            if overrule < verified
                                || overrule_fact < verified
                                || overrule_added < verified
                            {
                                continue;
                            }
                            let tuning = guard::Tuning {
                                verified,
                                same_words,
                                overrule,
                                overrule_fact,
                                overrule_added,
                                ..words
                            };
                            for floor in FLOORS {
                                let rule = Rule {
                                    floor,
                                    tuning: Some(tuning),
                                };
                                let r = rates(&tune, |i, p| {
                                    rule.hits(p, guard::strictest(&refusals[i], tuning))
                                });
                                if meets(&r) && best.is_none_or(|b| r.0 > b.0) {
                                    best = Some((r.0, rule));
                                }
                                let miss = (r.1 - TUNE_FALSE_HITS).max(0.0)
                                    + (worst(&r.2) - TUNE_FALSE_HITS_PER_KIND).max(0.0);
                                if closest.is_none_or(|c| miss < c.0 || (miss == c.0 && r.0 > c.1))
                                {
                                    closest = Some((miss, r.0, rule));
                                }
                            }
                        }
                    }
                }
            }
        }
        (best, closest)
    };
    // Then the bar to overrule each fact guard, one guard at a time with
    // the rest of the rule held, twice round: the strictest bar first, and
    // a lower one kept only for more recall within the targets. Searched
    // apart from the rest because seven more settings would multiply the
    // search above by 6^7; never below 0.95, because a fact guard refuses
    // on what the text says and only a very sure verifier should overrule
    // it. The two searches take turns, from no fact guard overruled, until
    // recall stops rising.
    let ascend = |rule: Rule| -> (Rule, f64) {
        let tuning = rule.tuning.unwrap_or(guard::Tuning::CHOSEN);
        let refusals: Vec<_> = tune
            .iter()
            .map(|p| guard::refusals(&p.a, &p.b, p.cosine, tuning))
            .collect();
        let score = |rule: Rule| {
            let t = rule.tuning.unwrap_or(guard::Tuning::CHOSEN);
            rates(&tune, |i, p| {
                rule.hits(p, guard::strictest(&refusals[i], t))
            })
        };
        let mut rule = rule;
        let mut recall = score(rule).0;
        for _ in 0..2 {
            for guard in 0..7 {
                for bar in [1.01, 0.995, 0.99, 0.98, 0.97, 0.95] {
                    let Some(t) = rule.tuning else { break };
                    let mut facts = t.facts;
                    *[
                        &mut facts.numbers,
                        &mut facts.negation,
                        &mut facts.opposites,
                        &mut facts.entity,
                        &mut facts.direction,
                        &mut facts.form,
                        &mut facts.question_word,
                    ][guard] = bar;
                    let tried = Rule {
                        tuning: Some(guard::Tuning { facts, ..t }),
                        ..rule
                    };
                    let r = score(tried);
                    if meets(&r) && r.0 > recall {
                        (rule, recall) = (tried, r.0);
                    }
                }
            }
        }
        (rule, recall)
    };
    let mut facts = guard::FactBars::NEVER;
    let mut found: Option<(f64, Rule)> = None;
    let rule = loop {
        let (best, closest) = main_search(facts);
        let Some((_, rule)) = best else {
            if let Some((recall, rule)) = found {
                break (recall, rule);
            }
            let Some((miss, recall, rule)) = closest else {
                return;
            };
            println!("### Hard sets\n\nOn the tune split nothing meets the search's false-hit targets ({:.1}% overall, {:.1}% per kind); closest (over by {miss:.3}): recall {recall:.3}, candidates from {:.2}, {:?}.\n", TUNE_FALSE_HITS * 100.0, TUNE_FALSE_HITS_PER_KIND * 100.0, rule.floor, rule.tuning);
            break (recall, rule);
        };
        let (rule, recall) = ascend(rule);
        if found.is_some_and(|(r, _)| recall <= r) {
            break found.unwrap_or((recall, rule));
        }
        found = Some((recall, rule));
        facts = rule.tuning.map_or(facts, |t| t.facts);
    };
    let (recall, rule) = rule;
    if found.is_some() {
        println!("### Hard sets\n\nOn the tune split, the most recall within the search's false-hit targets ({:.1}% overall, {:.1}% per kind): {recall:.3}, with candidates from {:.2} and {:?}.\n", TUNE_FALSE_HITS * 100.0, TUNE_FALSE_HITS_PER_KIND * 100.0, rule.floor, rule.tuning);
    }
    // `P402_QUALITY_TUNE_ONLY=1`: where each of the tune split's misses
    // and false hits was decided under the shipped rule (`Tuning::CHOSEN`,
    // candidates from the shipped floor, as `p402.toml` has it), then stop before the
    // test split, so that a change can be studied and chosen without
    // seeing it.
    if std::env::var_os("P402_QUALITY_TUNE_ONLY").is_some() {
        let shipped = Rule {
            floor: shipped_floor(),
            tuning: Some(guard::Tuning::CHOSEN),
        };
        let (recall, false_hits, _) = rates(&tune, |_, p| shipped.hits(p, shipped.refusal(p)));
        println!(
            "The shipped rule on the tune split: recall {recall:.3}, false hits {false_hits:.3}.\n"
        );
        account(&tune, shipped);
        return;
    }
    if rule.tuning != Some(guard::Tuning::CHOSEN) {
        println!(
            "**guard::Tuning::CHOSEN ({:?}) is not what this search chose.**\n",
            guard::Tuning::CHOSEN
        );
    }
    println!("On the test split (never used to choose or to train anything):\n");
    println!("| set (test split) | rule | recall | false hits | false hits per kind |");
    println!("|---|---|---:|---:|---|");
    let chosen = guard::Tuning::CHOSEN;
    let guards_only = guard::Tuning {
        verified: 0.0,
        same_words: 0.0,
        overrule: 1.01,
        overrule_fact: 1.01,
        overrule_added: 1.01,
        facts: guard::FactBars::NEVER,
        ..chosen
    };
    // The chosen rule with no fact guard overruled, to show what the
    // overruling adds.
    let facts_stand = rule.tuning.map(|t| guard::Tuning {
        overrule_fact: 1.01,
        facts: guard::FactBars::NEVER,
        ..t
    });
    // The verifier alone: no guard refuses, so its own bar decides.
    let verifier_only = guard::Tuning {
        close_enough: 0.0,
        reworded: 0.0,
        max_swapped: usize::MAX,
        same_words: chosen.verified,
        ..chosen
    };
    // What p402 ships, when the search on tune chose otherwise: the figures
    // a user gets.
    let shipped = Rule {
        floor: shipped_floor(),
        tuning: Some(chosen),
    };
    let shipped_differs = rule.tuning != shipped.tuning || rule.floor != shipped.floor;
    const DEV: &str = "cache_dev.tsv";
    const FOW: &str = "fow_cache_pairs.tsv";
    const FRESH: &str = "cache_fresh4.tsv";
    for (label, sets) in [
        ("both older sets", &[DEV, FOW][..]),
        ("cache_dev (p402's)", &[DEV][..]),
        ("fow-cache (public)", &[FOW][..]),
        ("fresh4 (p402's, 2026-12-07)", &[FRESH][..]),
        ("all three", &[DEV, FOW, FRESH][..]),
    ] {
        let test = select("test", sets);
        let mut rules = vec![
            (
                "cosine >= 0.90 alone".to_string(),
                Rule {
                    floor: 0.90,
                    tuning: None,
                },
            ),
            (
                format!("cosine >= {:.2} + guards", rule.floor),
                Rule {
                    tuning: Some(guards_only),
                    ..rule
                },
            ),
            (
                format!(
                    "cosine >= {:.2} + verifier >= {:.2}",
                    rule.floor, chosen.verified
                ),
                Rule {
                    tuning: Some(verifier_only),
                    ..rule
                },
            ),
            (
                format!(
                    "cosine >= {:.2} + guards + verifier, no fact guard overruled",
                    rule.floor
                ),
                Rule {
                    tuning: facts_stand,
                    ..rule
                },
            ),
            (
                format!("cosine >= {:.2} + guards + verifier (chosen)", rule.floor),
                rule,
            ),
        ];
        if shipped_differs {
            rules.push((
                format!(
                    "cosine >= {:.2} + guards + verifier (shipped: Tuning::CHOSEN)",
                    shipped_floor()
                ),
                shipped,
            ));
        }
        for (name, rule) in rules {
            let (recall, false_hits, kinds) = if rule.tuning == Some(verifier_only) {
                rates(&test, |_, p| rule.hits(p, None))
            } else {
                rates(&test, |_, p| rule.hits(p, rule.refusal(p)))
            };
            let per_kind: Vec<String> = kinds
                .iter()
                .map(|(k, (h, n))| format!("{k} {h}/{n}"))
                .collect();
            println!(
                "| {label} | {name} | {recall:.3} | {false_hits:.3} | {} |",
                per_kind.join(", ")
            );
        }
    }
    let started = std::time::Instant::now();
    for p in &pairs {
        let _ = guard::check(&p.a, &p.b, p.cosine);
    }
    let (p50, p99) = percentiles(pairs.iter().map(|p| {
        let started = std::time::Instant::now();
        let _ = guard::check(&p.a, &p.b, p.cosine);
        started.elapsed()
    }));
    println!(
        "\nThe guards take {:.0} µs p50 and {:.0} µs p99 per candidate pair, on {} pairs (first pass, with the lexicon's loading: {:.0} ms).\n",
        p50 * 1e6,
        p99 * 1e6,
        pairs.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let sample = &pairs[..300];
    let (p50, p99) = percentiles(sample.iter().map(|p| {
        let started = std::time::Instant::now();
        let _ = e.verify(&p.a, &p.b);
        started.elapsed()
    }));
    println!(
        "The verifier takes {:.2} ms p50 and {:.2} ms p99 per candidate pair (both ways round), on {} pairs, through the model thread.\n",
        p50 * 1e3,
        p99 * 1e3,
        sample.len(),
    );
}

/// Which stage of a semantic lookup decided the pair `p` under `rule`:
/// the candidate floor, a guard (with its firmness and the verifier's bar,
/// if any), or the verifier's own bar.
fn stage(p: &Pair, rule: Rule) -> String {
    if p.cosine < rule.floor {
        return format!("not a candidate (cosine < {:.2})", rule.floor);
    }
    let Some(tuning) = rule.tuning else {
        return "cosine alone".to_string();
    };
    let refusal = rule.refusal(p);
    match (refusal, guard::verifier_bar(refusal, p.same_words, tuning)) {
        (None, _) if p.same_words => format!(
            "no guard, same words; verifier bar {:.2}",
            tuning.same_words
        ),
        (None, _) => format!("no guard; verifier bar {:.2}", tuning.verified),
        (Some(r), None) => format!("{:?} guard {r:?}, never overruled", r.firmness()),
        (Some(r), Some(bar)) => format!("{:?} guard {r:?}; verifier bar {bar:.2}", r.firmness()),
    }
}

/// The tune split's misses (paraphrases that did not hit) and false hits
/// under `rule`, counted by the stage that decided them, each with its
/// pairs: what a change to the guards or the candidates has to work on.
fn account(tune: &[&Pair], rule: Rule) {
    for (title, wrong) in [("Paraphrases missed", true), ("False hits", false)] {
        let mut by: BTreeMap<String, Vec<&Pair>> = BTreeMap::new();
        for p in tune.iter().copied() {
            if p.positive == wrong && rule.hits(p, rule.refusal(p)) != p.positive {
                by.entry(stage(p, rule)).or_default().push(p);
            }
        }
        let total: usize = by.values().map(Vec::len).sum();
        let of = tune.iter().filter(|p| p.positive == wrong).count();
        println!("#### {title} on the tune split: {total} of {of}\n");
        println!("| decided by | pairs |\n|---|---:|");
        for (why, pairs) in &by {
            println!("| {why} | {} |", pairs.len());
        }
        println!();
        for (why, pairs) in &by {
            for p in pairs {
                println!(
                    "- {why}: {} `{}` / `{}` (cosine {:.3}, verifier {:.3})",
                    p.kind, p.a, p.b, p.cosine, p.verified
                );
            }
        }
        println!();
    }
    // What the guards hold back: near misses the verifier alone would have
    // let through, by the guard that refused them. A guard refined to let
    // more paraphrases through must not let these in.
    let Some(tuning) = rule.tuning else {
        return;
    };
    // Each guard's refusals: of paraphrases and of near misses, and the
    // verifier's highest confidence in a near miss it refused, which is
    // how low a bar to overrule it could go on this split.
    let mut by_guard: BTreeMap<String, (usize, usize, f32)> = BTreeMap::new();
    for p in tune.iter().filter(|p| p.cosine >= rule.floor) {
        if let Some(r) = rule.refusal(p) {
            let g = by_guard
                .entry(format!("{:?} {r:?}", r.firmness()))
                .or_insert((0, 0, 0.0));
            if p.positive {
                g.0 += 1;
            } else {
                g.1 += 1;
                g.2 = g.2.max(p.verified);
            }
        }
    }
    println!("#### Refusals on the tune split, by guard\n");
    println!("| guard | paraphrases refused | near misses refused | verifier's highest on a near miss refused |");
    println!("|---|---:|---:|---:|");
    for (g, (pos, neg, top)) in &by_guard {
        println!("| {g} | {pos} | {neg} | {top:.3} |");
    }
    println!();
    let held: Vec<&Pair> = tune
        .iter()
        .copied()
        .filter(|p| !p.positive && p.cosine >= rule.floor && p.verified >= tuning.verified)
        .filter(|p| !rule.hits(p, rule.refusal(p)))
        .collect();
    println!(
        "#### Near misses on the tune split that only a guard held back: {}\n",
        held.len()
    );
    for p in held {
        println!(
            "- {}: {} `{}` / `{}` (cosine {:.3}, verifier {:.3})",
            stage(p, rule),
            p.kind,
            p.a,
            p.b,
            p.cosine,
            p.verified
        );
    }
    println!();
}

/// The median and 99th percentile of `times`, in seconds.
fn percentiles(times: impl Iterator<Item = std::time::Duration>) -> (f64, f64) {
    let mut times: Vec<f64> = times.map(|t| t.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
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

    hard_sets(&mut e);
    // `P402_QUALITY_HARD_ONLY=1`: the hard sets only.
    if std::env::var_os("P402_QUALITY_HARD_ONLY").is_some() {
        return;
    }

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
            .push((c, accepted(&mut e, a, b, c)));
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
                match best(&mut e, &row[2], &qv, &store, t, guarded) {
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
                if let Some(j) = best(&mut e, &row[1], &qv, &store, t, guarded) {
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
            let c = cosine(&e.of(&r[1]), &e.of(&r[2]));
            (c, r[3] == "1", accepted(&mut e, &r[1], &r[2], c))
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
