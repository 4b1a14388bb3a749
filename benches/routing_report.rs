//! The routing report: a fixed, mixed set of realistic requests routed with
//! the built-in catalog (every provider given a key), showing where the
//! traffic goes, what it costs against sending every request to the model it
//! named, and how many choices break a capability or context limit (must be
//! 0; each choice is re-checked here independently of the router).
//!
//! Run: `cargo bench --bench routing_report` (prints Markdown for BENCHMARKS.md).

use std::collections::BTreeMap;

use p402::catalog::{Capability, Catalog, Usage};
use p402::provider_health::ProviderHealth;
use p402::request;
use p402::router::{Router, Sticky};
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
        let tokens = p402::tokens::count_input(&chat.body);
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

    println!("Routing report: {} requests, built-in catalog as of {}, every provider keyed, default config (quality_floor 0.85).\n", cases.len(), p402::catalog::as_of());
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
}
