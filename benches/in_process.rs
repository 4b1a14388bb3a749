//! The request path's in-process steps, one by one, with criterion: parse,
//! token count, routing over the full catalog, the upstream rewrite (OpenAI
//! and Anthropic), cache scope hashing, budget reservation (and release),
//! settlement into the ledger next to a bare fdatasync on the same disk (its
//! floor), and a cache index lookup.
//!
//! Run: `cargo bench --bench in_process` (criterion's report in
//! target/criterion; the medians go to BENCHMARKS.md).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use p402::cache::index::{Index, Slot};
use p402::cache::scope::{self, Scope};
use p402::catalog::Catalog;
use p402::embed::DIMENSIONS;
use p402::money::budget::{Account, Book, Plan};
use p402::money::Usd;
use p402::ops::provider_health::ProviderHealth;
use p402::router::{Router, Sticky};
use p402::store::{LedgerEntry, Store};
use p402::wire::request::{self, ChatRequest};
use serde_json::{json, Value};

/// A typical agent turn: a system prompt, some history, a question.
fn body() -> Value {
    json!({
        "model": "gpt-4o",
        "temperature": 0.2,
        "max_tokens": 800,
        "messages": [
            {"role": "system", "content": "You are a concise, careful assistant for a software team. Answer with code when it helps, and say when you are unsure."},
            {"role": "user", "content": "How do I read a file line by line in Rust?"},
            {"role": "assistant", "content": "Use std::io::BufReader over std::fs::File and call .lines(); each item is an io::Result<String>."},
            {"role": "user", "content": "And how do I skip empty lines and count the rest, without collecting into a Vec first?"}
        ]
    })
}

fn parse(bytes: &[u8]) -> ChatRequest {
    request::parse(bytes, &http::HeaderMap::new()).expect("valid request")
}

fn unit(seed: u64) -> Vec<f32> {
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

fn request_path(c: &mut Criterion) {
    let bytes = body().to_string().into_bytes();
    c.bench_function("parse a chat request (4 messages)", |b| {
        b.iter(|| parse(black_box(&bytes)))
    });
    // An ordinary non-streamed answer (about 1.5 KB), as passed through.
    let answer = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "Paris is the capital of France. ".repeat(40)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 187, "total_tokens": 211}
    })
    .to_string()
    .into_bytes();
    c.bench_function("passthrough answer: UTF-8 check alone (1.5 KB)", |b| {
        b.iter(|| std::str::from_utf8(black_box(&answer)).is_ok())
    });
    c.bench_function(
        "passthrough answer: read its usage, UTF-8 checked (1.5 KB)",
        |b| b.iter(|| p402::wire::openai::passable_usage(black_box(&answer))),
    );
    let chat = parse(&bytes);
    c.bench_function("count input tokens (o200k)", |b| {
        b.iter(|| p402::wire::tokens::count_input(black_box(&chat.body)))
    });

    let config = p402::config::parse("bench", "").expect("default config");
    let catalog = Catalog::build(&config, |_| Some("bench-key".to_string()));
    let health = ProviderHealth::default();
    let sticky = Sticky::default();
    let router = Router {
        catalog: &catalog,
        config: &config.routing,
        health: &health,
        sticky: &sticky,
    };
    let tokens = p402::wire::tokens::count_input(&chat.body);
    let mut cost = body();
    cost["p402"] = json!({"mode": "cost"});
    let cost = parse(cost.to_string().as_bytes());
    c.bench_function("route over the full catalog (mode cost)", |b| {
        b.iter(|| router.route(black_box(&cost), tokens).expect("routed"))
    });
    let route = router.route(&cost, tokens).expect("routed");
    let openai = route.candidates[0].clone();
    c.bench_function("rewrite for the upstream (OpenAI)", |b| {
        b.iter(|| {
            p402::wire::Adapter::of(&openai.provider).build_request(&openai, black_box(&chat), None)
        })
    });
    let mut claude = body();
    claude["model"] = json!("claude-sonnet-5-5");
    let claude = parse(claude.to_string().as_bytes());
    let route = router.route(&claude, tokens).expect("routed");
    let anthropic = route.candidates[0].clone();
    c.bench_function("rewrite for the upstream (Anthropic)", |b| {
        b.iter(|| {
            p402::wire::Adapter::of(&anthropic.provider).build_request(
                &anthropic,
                black_box(&claude),
                None,
            )
        })
    });
    c.bench_function("cache scope hashing", |b| {
        b.iter(|| scope::split(black_box(&chat.body), "gpt-4o", &json!("passthrough")))
    });
}

fn budgets(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path()).expect("store");
    let book: Arc<Book> = Book::new(store);
    let accounts = || {
        vec![
            Account::session("ses_bench", Usd::from_dollars(1e6).expect("usd")),
            Account::cap(Usd::from_dollars(1.0).expect("usd"), "max_cost"),
        ]
    };
    let plan = |_: Usd| {
        Ok(Plan {
            reserve: Usd::from_dollars(0.01).expect("usd"),
            output_limit: 1000,
            lowered: false,
        })
    };
    c.bench_function("budget: reserve and release (session + cap)", |b| {
        b.iter(|| {
            let reserved = book.reserve(accounts(), plan).expect("store");
            drop(black_box(reserved));
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut n = 0u64;
    c.bench_function("budget: reserve and settle into the ledger (fsync)", |b| {
        b.iter_batched(
            || {
                n += 1;
                LedgerEntry {
                    door: None,
                    time: chrono::Utc::now(),
                    request_id: format!("req_bench_{n}"),
                    session: Some("ses_bench".into()),
                    budgets: Vec::new(),
                    provider: "openai".into(),
                    model: Some("gpt-4o-mini".into()),
                    input_tokens: 120,
                    output_tokens: 40,
                    cached_input_tokens: 0,
                    cost_nanos: 42_000,
                    direct_nanos: 700_000,
                    cached: false,
                    estimated: false,
                    client_session: None,
                    forwarded: None,
                }
            },
            |entry| {
                let (reservation, _) = book
                    .reserve(accounts(), plan)
                    .expect("store")
                    .expect("fits");
                runtime
                    .block_on(reservation.settle(&entry))
                    .expect("settled");
            },
            BatchSize::SmallInput,
        )
    });
    // The floor under any settlement that is durable before the answer:
    // one small write and its fdatasync on the same disk, with no database.
    let mut file = std::fs::File::create(dir.path().join("floor")).expect("file");
    let record = [b'x'; 300];
    c.bench_function("the disk alone: write 300 bytes and fdatasync", |b| {
        b.iter(|| {
            use std::io::Write;
            file.write_all(&record).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
}

fn cache_index(c: &mut Criterion) {
    for n in [10_000u64, 100_000] {
        let mut index = Index::default();
        let scope = Scope([1; 32]);
        for i in 0..n {
            index.insert(
                scope,
                i,
                Some(&unit(i)),
                Slot {
                    id: i,
                    expires: u64::MAX,
                    last_used: i,
                },
            );
        }
        if index.claim_ivf_build(&scope) {
            index.build_ivf(&scope);
        }
        let query = unit(n / 2);
        c.bench_function(
            &format!("cache index lookup, {n} entries in one scope"),
            |b| b.iter(|| index.nearest(&scope, black_box(&query), 4, 0.88, 0)),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = request_path, budgets, cache_index
}
criterion_main!(benches);
