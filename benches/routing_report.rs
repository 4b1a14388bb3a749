//! The routing report: a fixed, mixed set of realistic requests routed with
//! the built-in catalog (every provider given a key), showing where the
//! traffic goes, what it costs against sending every request to the model it
//! named, and how many choices break a capability or context limit (must be
//! 0; each choice is re-checked here independently of the router).
//!
//! Then, on measured quality (SPEC section 13): the request-category rules'
//! accuracy on the labelled set `benches/data/categories.tsv` (a confusion
//! matrix, and the time one decision takes), and a mix of general, coding,
//! math, creative and long prompts asked of every cloud chat model, routed
//! in cost mode at `max_quality_drop` 0, 10 and 25: the savings against the
//! requested model, and how many substitutes are rated lower than it in the
//! request's category (0 by construction at drop 0: asserted).
//!
//! Run: `cargo bench --bench routing_report` (prints Markdown for BENCHMARKS.md).

use std::collections::BTreeMap;
use std::time::Instant;

use p402::catalog::arena::Category;
use p402::catalog::{Capability, Catalog, QualitySource, Usage};
use p402::ops::provider_health::ProviderHealth;
use p402::router::{category, Needs, Router, Sticky};
use p402::wire::request;
use serde_json::{json, Value};

struct Case {
    kind: &'static str,
    body: Value,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let countries = [
        "France", "Japan", "Kenya", "Peru", "Norway", "Vietnam", "Chile", "Egypt", "Canada",
        "India",
    ];
    let short_models = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-6.2-astra",
        "claude-sonnet-5-5",
        "gemini-4-neon",
        "auto",
    ];
    for i in 0..90 {
        let model = short_models[i % short_models.len()];
        let mode = ["cost", "cost", "cost", "quality", "speed", "balanced"][i % 6];
        cases.push(Case {
            kind: "short Q&A",
            body: json!({"model": model, "p402": {"mode": mode}, "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": format!("What is the capital of {} and what is it known for?", countries[i % countries.len()])}]}),
        });
    }
    let snippet = "fn parse(input: &str) -> Result<Vec<u32>, std::num::ParseIntError> {\n    input.split(',').map(|s| s.trim().parse()).collect()\n}\n";
    for i in 0..40 {
        let model = [
            "gpt-6.2-sol",
            "claude-opus-5-5",
            "gpt-6.1-terra",
            "grok-4.7",
        ][i % 4];
        cases.push(Case {
            kind: "code",
            body: json!({"model": model, "max_tokens": 2000, "messages": [
                {"role": "system", "content": "You are a senior Rust reviewer."},
                {"role": "user", "content": format!("Review this code and suggest improvements (case {i}):\n{}", snippet.repeat(10 + i))}]}),
        });
    }
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "book_table", "description": "Book a restaurant",
        "parameters": {"type": "object", "properties": {"place": {"type": "string"}, "people": {"type": "integer"}}}}}]);
    for i in 0..30 {
        let model = ["gpt-4o", "gpt-6.2-sol", "gemini-4-carbon"][i % 3];
        cases.push(Case {
            kind: "tool calls",
            body: json!({"model": model, "tools": tools, "tool_choice": "auto", "messages": [
                {"role": "user", "content": format!("What's the weather in {}? Then book a table for {}.", countries[i % 10], 2 + i % 5)}]}),
        });
    }
    let page = "The history of the region spans many centuries of trade, migration and change. "
        .repeat(40);
    for i in 0..20 {
        let model = ["gemini-4-neon", "gpt-6.2-astra"][i % 2];
        let pages = [40, 120, 400, 1200][i % 4];
        cases.push(Case {
            kind: "long context",
            body: json!({"model": model, "messages": [
                {"role": "user", "content": format!("{}\n\nSummarize the document above in five bullet points.", page.repeat(pages))}]}),
        });
    }
    for i in 0..15 {
        let model = ["gpt-4o", "claude-sonnet-5-5", "gemini-4-carbon"][i % 3];
        cases.push(Case {
            kind: "images",
            body: json!({"model": model, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": format!("https://example.com/photo-{i}.jpg")}}]}]}),
        });
    }
    for i in 0..15 {
        let model = ["gpt-6.1-terra", "gpt-4o"][i % 2];
        cases.push(Case {
            kind: "json_schema",
            body: json!({"model": model, "response_format": {"type": "json_schema", "json_schema": {"name": "person",
                "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}},
                "messages": [{"role": "user", "content": format!("Extract the person: 'Ana, {} years old'", 20 + i)}]}),
        });
    }
    cases
}

fn needs_of(body: &Value) -> Vec<Capability> {
    let mut needs = Vec::new();
    if body.get("tools").is_some() {
        needs.push(Capability::Tools);
    }
    if body.to_string().contains("\"image_url\"") {
        needs.push(Capability::Vision);
    }
    if body.pointer("/response_format/type") == Some(&json!("json_schema")) {
        needs.push(Capability::JsonSchema);
    }
    needs
}

fn main() {
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

    let cases = cases();
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    let (mut routed_total, mut direct_total, mut violations, mut refused) = (0.0, 0.0, 0, 0);
    for case in &cases {
        let chat = request::parse(case.body.to_string().as_bytes(), &http::HeaderMap::new())
            .expect("valid request");
        let tokens = p402::wire::tokens::count_input(&chat.body);
        let route = match router.route(&chat, tokens) {
            Ok(route) => route,
            Err(e) => {
                refused += 1;
                eprintln!("refused ({}): {}", case.kind, e);
                continue;
            }
        };
        let chosen = &route.candidates[0];
        let model = chosen
            .model
            .as_ref()
            .expect("routed models are catalog models");
        let fits_context = model.context.is_none_or(|c| tokens + 1024 <= u64::from(c));
        if !needs_of(&case.body)
            .iter()
            .all(|n| model.capabilities.contains(n))
            || !fits_context
        {
            violations += 1;
        }
        *by_model
            .entry(format!("{}/{}", model.provider, model.id))
            .or_default() += 1;
        let output = p402::router::EXPECTED_OUTPUT_TOKENS.min(
            chat.body
                .get("max_tokens")
                .and_then(Value::as_u64)
                .map_or(u32::MAX, |m| m as u32),
        );
        let usage = Usage {
            input_tokens: tokens,
            output_tokens: u64::from(output),
            ..Usage::default()
        };
        let routed = chosen.price().map_or(0.0, |p| p.cost(&usage).to_dollars());
        let direct = route
            .baseline
            .map_or(routed, |p| p.cost(&usage).to_dollars());
        routed_total += routed;
        direct_total += direct;
        let entry = by_kind.entry(case.kind).or_default();
        entry.0 += 1;
        entry.1 += routed;
        entry.2 += direct;
    }

    println!("Routing report: {} requests, built-in catalog as of {}, every provider keyed, default config (max_quality_drop 0, quality_floor 0.85).\n", cases.len(), p402::catalog::as_of());
    println!("| kind | requests | routed cost | cost on requested model | saved |");
    println!("|---|---:|---:|---:|---:|");
    for (kind, (n, routed, direct)) in &by_kind {
        println!(
            "| {kind} | {n} | ${routed:.4} | ${direct:.4} | {:.0}% |",
            100.0 * (1.0 - routed / direct)
        );
    }
    println!(
        "| **all** | {} | **${routed_total:.4}** | **${direct_total:.4}** | **{:.0}%** |\n",
        cases.len() - refused,
        100.0 * (1.0 - routed_total / direct_total)
    );
    println!("| model chosen | requests | share |");
    println!("|---|---:|---:|");
    let mut shares: Vec<_> = by_model.into_iter().collect();
    shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let served = (cases.len() - refused) as f64;
    for (model, n) in shares {
        println!("| {model} | {n} | {:.1}% |", 100.0 * n as f64 / served);
    }
    println!("\ncapability or context violations: {violations}; requests refused: {refused}");
    assert_eq!(
        violations, 0,
        "the router chose a model that cannot serve a request"
    );

    categories();
    for drop in [0, 10, 25] {
        quality_mix(drop);
    }
}

/// The categories the rules decide, in the confusion matrix's order.
const DECIDED: [Category; 7] = [
    Category::Overall,
    Category::Coding,
    Category::Math,
    Category::CreativeWriting,
    Category::HardPrompts,
    Category::LongerQuery,
    Category::Vision,
];

/// A labelled set: `(label, request body)`; the tuning set with the
/// requests carrying an image.
fn labelled(file: &str, with_images: bool) -> Vec<(Category, Value)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/benches/data/{file}"))
        .unwrap_or_else(|e| panic!("benches/data/{file}: {e}"));
    let mut set = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (label, prompt) = line.split_once('\t').expect("label TAB prompt");
        let label = DECIDED
            .into_iter()
            .find(|c| c.as_str() == label)
            .unwrap_or_else(|| panic!("unknown label {label}"));
        let prompt = expand(&prompt.replace("\\n", "\n"), root);
        set.push((
            label,
            json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}),
        ));
    }
    if !with_images {
        return set;
    }
    for (i, question) in [
        "What is in this picture?",
        "Read the text on this sign.",
        "Is this mole something I should get checked?",
        "What breed is this dog?",
        "Describe this chart and its trend.",
        "Transcribe the handwriting in this photo.",
        "What's wrong with this plant's leaves?",
        "Write a caption for this photo.",
        "Solve the equation written on this whiteboard.",
        "What does this error screenshot say and how do I fix it?",
    ]
    .into_iter()
    .enumerate()
    {
        set.push((
            Category::Vision,
            json!({"model": "auto", "messages": [{"role": "user", "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": format!("https://example.com/{i}.jpg")}}]}]}),
        ));
    }
    set
}

/// `{{doc:FILE:START:LEN}}` -> that slice of a file of the repository.
fn expand(prompt: &str, root: &str) -> String {
    let Some(start) = prompt.find("{{doc:") else {
        return prompt.to_string();
    };
    let end = prompt[start..].find("}}").expect("closed") + start;
    let spec: Vec<&str> = prompt[start + 6..end].split(':').collect();
    let text = std::fs::read_to_string(format!("{root}/{}", spec[0])).expect("doc");
    let (mut from, len): (usize, usize) = (
        spec[1].parse().expect("start"),
        spec[2].parse().expect("len"),
    );
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut to = (from + len).min(text.len());
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    format!(
        "{}{}{}",
        &prompt[..start],
        &text[from..to],
        &prompt[end + 2..]
    )
}

fn categories() {
    for (file, with_images, what) in [
        (
            "categories.tsv",
            true,
            "the set the rules were revised on (first run: 61.5%)",
        ),
        (
            "categories_holdout.tsv",
            false,
            "held out: written after the revision, never used to change the rules",
        ),
    ] {
        let accuracy = category_matrix(file, with_images, what);
        assert!(
            accuracy >= 0.75,
            "{file}: the category rules' accuracy fell to {accuracy}"
        );
    }
}

fn category_matrix(file: &str, with_images: bool, what: &str) -> f64 {
    let set = labelled(file, with_images);
    let mut matrix = [[0usize; DECIDED.len()]; DECIDED.len()];
    let index = |c: Category| DECIDED.iter().position(|d| *d == c).expect("decided");
    let parsed: Vec<(Category, request::ChatRequest, Needs)> = set
        .iter()
        .map(|(label, body)| {
            let chat = request::parse(body.to_string().as_bytes(), &http::HeaderMap::new())
                .expect("valid request");
            let needs = Needs::of(&chat, 100);
            (*label, chat, needs)
        })
        .collect();
    for (label, chat, needs) in &parsed {
        matrix[index(*label)][index(category::of(chat, needs))] += 1;
    }
    // The time of one decision, over the whole set, a few rounds.
    let rounds = 20;
    let mut times = Vec::with_capacity(rounds * parsed.len());
    for _ in 0..rounds {
        for (_, chat, needs) in &parsed {
            let one = Instant::now();
            std::hint::black_box(category::of(chat, needs));
            times.push(one.elapsed());
        }
    }
    times.sort();
    let mean = times.iter().sum::<std::time::Duration>() / times.len() as u32;
    let p99 = times[times.len() * 99 / 100];
    let slowest = times[times.len() - 1];
    let correct: usize = (0..DECIDED.len()).map(|i| matrix[i][i]).sum();
    println!(
        "\nRequest categories on benches/data/{file}, {what}: {} labelled requests{}, accuracy {:.1}% ({correct}/{}); one decision takes {:.1} µs on average, {:.1} µs at the 99th percentile, {:.1} µs at most ({} build).\n",
        parsed.len(),
        if with_images { " (10 of them with an image)" } else { "" },
        100.0 * correct as f64 / parsed.len() as f64,
        parsed.len(),
        mean.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        slowest.as_secs_f64() * 1e6,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    print!("| labelled \\ decided |");
    for c in DECIDED {
        print!(" {} |", c.as_str());
    }
    println!(" recall |");
    println!("|---|{}---:|", "---:|".repeat(DECIDED.len()));
    for (i, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        print!("| {} |", DECIDED[i].as_str());
        for n in row {
            print!(" {n} |");
        }
        if total == 0 {
            println!(" - |");
        } else {
            println!(" {:.0}% |", 100.0 * row[i] as f64 / total as f64);
        }
    }
    correct as f64 / parsed.len() as f64
}

/// Prompts of the quality mix, by kind.
fn mix_prompts() -> Vec<(&'static str, String)> {
    let mut prompts: Vec<(&'static str, String)> = Vec::new();
    for p in [
        "What are the main differences between a crocodile and an alligator?",
        "How do vaccines train the immune system?",
        "What is a good itinerary for three days in Rome?",
        "Why do cats purr?",
    ] {
        prompts.push(("general", p.to_string()));
    }
    for p in [
        "Write a Python function that merges two sorted lists into one sorted list.",
        "How do I fix 'borrowed value does not live long enough' in this Rust code?\n```rust\nfn first(v: Vec<String>) -> &str { &v[0] }\n```",
        "Write a SQL query that finds duplicate emails in a users table.",
        "Explain how to debug a memory leak in a Node.js service.",
    ] {
        prompts.push(("coding", p.to_string()));
    }
    for p in [
        "Prove that there are infinitely many prime numbers.",
        "Solve for x: 2x^2 - 8x + 6 = 0.",
        "What is the probability of drawing two aces from a deck without replacement?",
        "Compute the derivative of ln(x^2 + 1).",
    ] {
        prompts.push(("math", p.to_string()));
    }
    for p in [
        "Write a poem about a city waking up at dawn.",
        "Write a short story about a robot who learns to garden.",
        "Write a limerick about a forgetful wizard.",
        "Write the opening scene of a fantasy novel where the hero is a baker.",
    ] {
        prompts.push(("creative", p.to_string()));
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, from) in [
        ("README.md", 0),
        ("ARCHITECTURE.md", 0),
        ("README.md", 20000),
        ("BENCHMARKS.md", 10000),
    ] {
        prompts.push((
            "long",
            expand(
                &format!(
                    "{{{{doc:{file}:{from}:6000}}}}\n\nSummarize the text above for a busy reader."
                ),
                root,
            ),
        ));
    }
    prompts
}

/// Every cloud chat model asked every prompt of the mix in cost mode:
/// savings, and substitutes rated lower in the request's category.
fn quality_mix(drop: u32) {
    let config = p402::config::parse("bench", &format!("[routing]\nmax_quality_drop = {drop}\n"))
        .expect("config");
    let catalog = Catalog::build(&config, |_| Some("bench-key".to_string()));
    let health = ProviderHealth::default();
    let sticky = Sticky::default();
    let router = Router {
        catalog: &catalog,
        config: &config.routing,
        health: &health,
        sticky: &sticky,
    };
    let requested: Vec<String> = catalog
        .models()
        .iter()
        .filter(|m| !m.capabilities.contains(&Capability::Embeddings))
        .filter(|m| catalog.provider(&m.provider).is_some_and(|p| !p.is_local()))
        .map(|m| format!("{}/{}", m.provider, m.id))
        .collect();
    #[derive(Default)]
    struct Row {
        requests: usize,
        substituted: usize,
        lower: usize,
        unmeasured_requested: usize,
        to_estimated: usize,
        routed: f64,
        direct: f64,
    }
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    let mut worst: Vec<(f64, String)> = Vec::new();
    for (kind, prompt) in mix_prompts() {
        for model in &requested {
            let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
            let chat = request::parse(body.to_string().as_bytes(), &http::HeaderMap::new())
                .expect("valid request");
            let tokens = p402::wire::tokens::count_input(&chat.body);
            let Ok(route) = router.route(&chat, tokens) else {
                continue;
            };
            let served = route.candidates[0].model.as_ref().expect("catalog model");
            let asked = catalog.find(model).expect("requested");
            let usage = Usage {
                input_tokens: tokens,
                output_tokens: u64::from(p402::router::EXPECTED_OUTPUT_TOKENS),
                ..Usage::default()
            };
            let row = rows.entry(kind).or_default();
            row.requests += 1;
            row.routed += served.price.map_or(0.0, |p| p.cost(&usage).to_dollars());
            row.direct += asked.price.map_or(0.0, |p| p.cost(&usage).to_dollars());
            if served.id == asked.id && served.provider == asked.provider {
                continue;
            }
            row.substituted += 1;
            if served.quality_source == QualitySource::Estimated {
                row.to_estimated += 1;
            }
            // Rated lower: the served model's point rating below the
            // requested one's, in the category the request's ratings are
            // read in (the request's, or overall where the requested model
            // has none).
            let standard = &route.quality;
            match (standard.compared, standard.requested) {
                (Some(c), Some(bar)) => {
                    let rating = served.rating(c).map_or(f64::MIN, |r| r.rating);
                    if rating < bar.rating {
                        row.lower += 1;
                        worst.push((
                            bar.rating - rating,
                            format!(
                                "{model} -> {}/{} ({kind}, {c}: {:.0} -> {:.0})",
                                served.provider, served.id, bar.rating, rating
                            ),
                        ));
                    }
                }
                _ => row.unmeasured_requested += 1,
            }
        }
    }
    println!(
        "\nQuality mix at max_quality_drop = {drop}: {} prompts (general, coding, math, creative, long) asked of each of the {} cloud chat models, cost mode, every provider keyed.\n",
        mix_prompts().len(),
        requested.len()
    );
    println!("| kind | requests | substituted | rated lower in its category | substitutes for an unmeasured model | substitutes of estimated quality | routed cost | cost on requested model | saved |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Row::default();
    for (kind, row) in &rows {
        println!(
            "| {kind} | {} | {} | {} | {} | {} | ${:.4} | ${:.4} | {:.0}% |",
            row.requests,
            row.substituted,
            row.lower,
            row.unmeasured_requested,
            row.to_estimated,
            row.routed,
            row.direct,
            100.0 * (1.0 - row.routed / row.direct)
        );
        all.requests += row.requests;
        all.substituted += row.substituted;
        all.lower += row.lower;
        all.unmeasured_requested += row.unmeasured_requested;
        all.to_estimated += row.to_estimated;
        all.routed += row.routed;
        all.direct += row.direct;
    }
    println!(
        "| **all** | {} | {} | **{}** | {} | {} | ${:.4} | ${:.4} | **{:.0}%** |",
        all.requests,
        all.substituted,
        all.lower,
        all.unmeasured_requested,
        all.to_estimated,
        all.routed,
        all.direct,
        100.0 * (1.0 - all.routed / all.direct)
    );
    worst.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    worst.dedup_by(|a, b| a.1 == b.1);
    if !worst.is_empty() {
        println!(
            "\nLargest drops: {}",
            worst
                .iter()
                .take(3)
                .map(|w| w.1.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if drop == 0 {
        assert_eq!(
            all.lower, 0,
            "at drop 0 no substitute may be rated lower in its category"
        );
    }
}
