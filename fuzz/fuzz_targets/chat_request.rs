//! A client's chat completion request, from its bytes to the upstream
//! requests p402 would send: `request::parse` (the body and its `p402`
//! object, plus `X-P402-*` headers), token counting, the cache probe, the
//! router, and the request built for each candidate (OpenAI-compatible and
//! Anthropic).
//!
//! Input: optional header lines (`name: value`), a NUL byte, then the body.
//! Without a NUL the whole input is the body.

#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use p402::cache::Cache;
use p402::catalog::Catalog;
use p402::config::{CacheConfig, Config};
use p402::ops::provider_health::ProviderHealth;
use p402::wire;
use p402::wire::request;
use p402::router::{Needs, Router, Sticky};
use p402::wire::tokens;
use serde_json::{json, Value};

struct World {
    config: Config,
    /// Every provider has a key, so every one can be routed to.
    catalog: Catalog,
    sticky: Sticky,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = Config::default();
        let catalog = Catalog::build(&config, |_| Some("sk-fuzz".to_string()));
        World {
            config,
            catalog,
            sticky: Sticky::default(),
        }
    })
}

fn headers(head: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&[][..], data),
    };
    let Ok(chat) = request::parse(body, &headers(head)) else {
        return;
    };
    assert!(!chat.body.contains_key("p402"), "the p402 object leaked");
    assert!(!chat.model.is_empty());
    if let Some(cost) = chat.options.max_cost {
        assert!(cost.is_finite() && cost >= 0.0, "max_cost {cost} accepted");
    }

    let world = world();
    let input_tokens = tokens::count_input(&chat.body);
    let needs = Needs::of(&chat, input_tokens);
    let _ = Cache::probe(&chat, &json!("cost"), &CacheConfig::default(), Some("k"));
    if let Some(messages) = chat.body.get("messages").and_then(Value::as_array) {
        let _ = Sticky::continuing(messages);
    }

    let health = ProviderHealth::default();
    let router = Router {
        catalog: &world.catalog,
        config: &world.config.routing,
        health: &health,
        sticky: &world.sticky,
    };
    let _ = router.quotes(&chat, input_tokens);
    let Ok(route) = router.route(&chat, input_tokens) else {
        return;
    };
    for candidate in &route.candidates {
        if let Some(model) = &candidate.model {
            let _ = needs.expected_cost(model);
            let _ = needs.minimum_cost(model);
        }
        let _ = wire::Adapter::of(&candidate.provider).build_request(candidate, &chat, None);
    }
    // The Anthropic translation too, whatever the router chose.
    if let Some(provider) = world.catalog.provider("anthropic") {
        let model = world
            .catalog
            .models()
            .iter()
            .find(|m| m.provider == "anthropic")
            .cloned();
        let candidate = p402::router::Candidate {
            provider: provider.clone(),
            upstream_model: "claude-fuzz".to_string(),
            model,
            expected_cost: None,
        };
        let _ = wire::Adapter::of(provider).build_request(&candidate, &chat, None);
    }
});
