//! Routing decisions on a fixed test catalog.

use super::*;
use crate::catalog::BuiltinCatalog;
use crate::config::parse;
use crate::request;
use serde_json::{json, Value};

const TEST_CATALOG: &str = r#"
as_of = "test"
[[providers]]
name = "openai"
base_url = "https://openai.test/v1"
api_key_env = "OPENAI_API_KEY"
api = "openai"
[[providers]]
name = "groq"
base_url = "https://groq.test/v1"
api_key_env = "GROQ_API_KEY"
api = "openai"
[[providers]]
name = "deepseek"
base_url = "https://deepseek.test/v1"
api_key_env = "DEEPSEEK_API_KEY"
api = "openai"
[[providers]]
name = "mistral"
base_url = "https://mistral.test/v1"
api_key_env = "MISTRAL_API_KEY"
api = "openai"
[[providers]]
name = "ollama"
base_url = "http://127.0.0.1:9/v1"
api = "openai"

[[models]]
id = "big"
provider = "openai"
input_per_mtok = 2.5
output_per_mtok = 10
context = 128000
max_output = 16384
capabilities = ["tools", "vision", "json_schema", "streaming"]
quality = 70
speed_tps = 80

[[models]]
id = "small"
provider = "openai"
input_per_mtok = 0.15
output_per_mtok = 0.6
context = 128000
max_output = 16384
capabilities = ["tools", "vision", "json_schema", "streaming"]
quality = 62
speed_tps = 90

[[models]]
id = "nano"
provider = "openai"
input_per_mtok = 0.1
output_per_mtok = 0.4
context = 128000
max_output = 16384
capabilities = ["tools", "streaming"]
quality = 40
speed_tps = 150

[[models]]
id = "unpriced"
provider = "openai"
context = 128000
capabilities = ["tools", "streaming"]
quality = 69

[[models]]
id = "fast"
provider = "groq"
input_per_mtok = 0.05
output_per_mtok = 0.08
context = 8192
max_output = 8192
capabilities = ["tools", "streaming"]
quality = 61
speed_tps = 800

[[models]]
id = "chat"
provider = "deepseek"
input_per_mtok = 0.28
output_per_mtok = 0.42
context = 64000
max_output = 8192
capabilities = ["tools", "json_schema", "streaming"]
quality = 66
speed_tps = 30

[[models]]
id = "large"
provider = "mistral"
input_per_mtok = 2.0
output_per_mtok = 6.0
context = 128000
max_output = 16384
capabilities = ["tools", "streaming"]
quality = 70
speed_tps = 60

[[models]]
id = "local"
provider = "ollama"
input_per_mtok = 0
output_per_mtok = 0
context = 32000
capabilities = ["streaming"]
quality = 66
quality_estimated = false
speed_tps = 40
"#;

struct Fixture {
    catalog: Catalog,
    config: RoutingConfig,
    health: ProviderHealth,
    sticky: Sticky,
}

fn fixture(config: &str) -> Fixture {
    let base: BuiltinCatalog = Catalog::parse_base(TEST_CATALOG).expect("test catalog");
    let config = parse("t.toml", config).expect("config");
    let keys = [
        "OPENAI_API_KEY",
        "GROQ_API_KEY",
        "DEEPSEEK_API_KEY",
        "MISTRAL_API_KEY",
    ];
    let catalog = Catalog::build_from(&base, None, &config, |name| {
        keys.contains(&name).then(|| "k".to_string())
    });
    Fixture {
        catalog,
        config: config.routing,
        health: ProviderHealth::default(),
        sticky: Sticky::default(),
    }
}

impl Fixture {
    fn router(&self) -> Router<'_> {
        Router {
            catalog: &self.catalog,
            config: &self.config,
            health: &self.health,
            sticky: &self.sticky,
        }
    }

    fn route(&self, body: Value) -> Result<Route, crate::error::ApiError> {
        self.route_tokens(body, 20)
    }

    fn route_tokens(
        &self,
        body: Value,
        input_tokens: u64,
    ) -> Result<Route, crate::error::ApiError> {
        let chat = request::parse(body.to_string().as_bytes(), &http::HeaderMap::new())
            .expect("valid request");
        self.router()
            .route(&chat, input_tokens)
            .map_err(crate::error::ApiError::from)
    }

    fn picks(&self, body: Value) -> Vec<String> {
        self.route(body)
            .expect("routed")
            .candidates
            .iter()
            .map(|c| format!("{}/{}", c.provider.name, c.model_name()))
            .collect()
    }
}

fn ask(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    body
}

#[test]
fn cost_mode_picks_the_cheapest_within_the_quality_floor() {
    let f = fixture("");
    // big has quality 70: floor 60. nano (40) is out, unpriced is out, the
    // keyless local model is out until its server has answered a probe.
    assert_eq!(
        f.picks(ask("big", json!({}))),
        ["groq/fast", "deepseek/chat", "openai/small"]
    );
}

#[test]
fn each_mode_orders_by_its_goal() {
    let f = fixture("");
    let first = |mode: Value| f.picks(ask("big", json!({"p402": {"mode": mode}})))[0].clone();
    // quality: big and mistral/large tie at 70; the cheaper one wins the tie.
    assert_eq!(first(json!("quality")), "mistral/large");
    assert_eq!(first(json!("speed")), "groq/fast");
    assert_eq!(first(json!("cost")), "groq/fast");
    assert_eq!(first(json!("balanced")), "groq/fast");
    assert_eq!(first(json!({"quality": 1.0})), "mistral/large");
    assert_eq!(first(json!("passthrough")), "openai/big");
}

#[test]
fn the_request_implies_capabilities() {
    let f = fixture("");
    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    assert_eq!(f.picks(ask("big", image))[0], "openai/small");
    let schema = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}});
    assert_eq!(
        f.picks(ask("big", schema)),
        ["deepseek/chat", "openai/small", "openai/big"]
    );
    let required = json!({"p402": {"require_capabilities": ["vision"]}});
    assert_eq!(f.picks(ask("big", required))[0], "openai/small");
}

#[test]
fn long_context_skips_small_windows() {
    let f = fixture("");
    let route = f
        .route_tokens(ask("big", json!({})), 20_000)
        .expect("routed");
    let names: Vec<_> = route
        .candidates
        .iter()
        .map(|c| c.model_name().to_string())
        .collect();
    assert!(!names.contains(&"fast".to_string()), "{names:?}");
    assert_eq!(
        names[0], "small",
        "input-heavy: the cheaper input price wins"
    );
    let e = f
        .route_tokens(ask("big", json!({})), 200_000)
        .expect_err("too long for all");
    assert_eq!(e.code, "no_eligible_model");
    assert!(
        e.message.contains("context window too small"),
        "{}",
        e.message
    );
}

#[test]
fn an_output_limit_above_a_models_maximum_excludes_it() {
    let f = fixture("");
    let picks = f.picks(ask("big", json!({"max_tokens": 10000})));
    assert!(
        !picks
            .iter()
            .any(|p| p == "groq/fast" || p == "deepseek/chat"),
        "{picks:?}"
    );
}

#[test]
fn exclusions_preferences_and_pins() {
    let f = fixture("[routing]\npin = [\"bi*\"]\n");
    assert_eq!(
        f.picks(ask("big", json!({}))),
        ["openai/big"],
        "pinned by glob"
    );
    let f = fixture("");
    let excluded = f.picks(ask("big", json!({"p402": {"exclude_providers": ["groq"]}})));
    assert!(
        excluded.iter().all(|p| !p.starts_with("groq/")),
        "{excluded:?}"
    );
    assert_eq!(excluded[0], "deepseek/chat");
    let preferred = f.picks(ask(
        "big",
        json!({"p402": {"prefer_providers": ["openai"]}}),
    ));
    assert_eq!(preferred[0], "openai/small");
    assert_eq!(
        f.picks(ask("small", json!({"p402": {"model": "big"}}))),
        ["openai/big"]
    );
    assert_eq!(
        f.picks(ask("fast", json!({"p402": {"provider": "groq"}}))),
        ["groq/fast"]
    );
    assert_eq!(
        f.picks(ask("big", json!({"p402": {"failover": false}}))),
        ["groq/fast"]
    );
}

#[test]
fn auto_routes_by_the_mode_alone() {
    let f = fixture("");
    // No requested model, so no quality floor: the cheapest priced model wins.
    assert_eq!(f.picks(ask("auto", json!({})))[0], "groq/fast");
    assert_eq!(
        f.picks(ask("auto", json!({"p402": {"mode": "quality"}})))[0],
        "mistral/large"
    );
}

#[test]
fn unknown_models_are_never_rewritten() {
    let f = fixture("");
    assert_eq!(
        f.picks(ask("groq/brand-new", json!({}))),
        ["groq/brand-new"]
    );
    let e = f.route(ask("mystery", json!({}))).expect_err("ambiguous");
    assert_eq!(e.code, "model_not_found");
}

#[test]
fn max_cost_is_402_when_only_price_stands_in_the_way() {
    let f = fixture("");
    let e = f
        .route(ask("big", json!({"p402": {"max_cost": 0.000000001}})))
        .expect_err("too cheap");
    assert_eq!(e.code, "MAX_COST_EXCEEDED");
    assert_eq!(e.status(), http::StatusCode::PAYMENT_REQUIRED);
    // A cap the cheapest fits keeps only what fits.
    let picks = f.picks(ask("big", json!({"p402": {"max_cost": 0.0001}})));
    assert!(
        picks.contains(&"groq/fast".to_string()) && !picks.contains(&"openai/big".to_string()),
        "{picks:?}"
    );
}

#[test]
fn ties_are_broken_by_cost_then_name() {
    let f = fixture(
        "[[models]]\nid = \"fast-twin\"\nprovider = \"groq\"\ninput_per_mtok = 0.05\noutput_per_mtok = 0.08\ncontext = 8192\nmax_output = 8192\ncapabilities = [\"tools\"]\nquality = 61\nspeed_tps = 800\n",
    );
    let route = f
        .route(ask(
            "big",
            json!({"p402": {"exclude_providers": ["deepseek", "openai", "mistral"]}}),
        ))
        .expect("routed");
    let names: Vec<_> = route
        .candidates
        .iter()
        .map(|c| c.model_name().to_string())
        .collect();
    assert_eq!(names, ["fast", "fast-twin"]);
}

#[test]
fn an_open_circuit_skips_the_provider() {
    let f = fixture("");
    let policy = crate::provider_health::BreakerPolicy {
        failures: 1,
        cooldown: std::time::Duration::from_secs(60),
    };
    f.health.record_failure("groq", "500", policy);
    assert_eq!(f.picks(ask("big", json!({})))[0], "deepseek/chat");
}

#[test]
fn a_reachable_local_server_joins_the_routing_with_the_models_it_lists() {
    let f = fixture("");
    f.health.set_reachable("ollama", true);
    // Answering is not enough: the model must be installed.
    assert_eq!(f.picks(ask("big", json!({})))[0], "groq/fast");
    f.health
        .set_installed("ollama", Some(["local".to_string()].into_iter().collect()));
    assert_eq!(f.picks(ask("big", json!({})))[0], "ollama/local");
    f.health.mark_missing("ollama", "local:latest");
    assert_eq!(f.picks(ask("big", json!({})))[0], "groq/fast");
    f.health
        .set_installed("ollama", Some(["local".to_string()].into_iter().collect()));
    assert_eq!(f.picks(ask("big", json!({})))[0], "ollama/local");
    f.health.set_reachable("ollama", false);
    assert_eq!(f.picks(ask("big", json!({})))[0], "groq/fast");
}

#[test]
fn an_estimated_quality_stands_in_only_for_models_rated_at_or_below_it() {
    let estimated = r#"
[[models]]
id = "local"
provider = "ollama"
input_per_mtok = 0
output_per_mtok = 0
context = 32000
capabilities = ["streaming"]
quality = 66
"#;
    for (routing, first) in [
        // 66 is within the floor of `big` (70 x 0.85), but only an estimate
        // (the default for a keyless provider), and below 70 itself.
        ("", "groq/fast"),
        (
            "[routing]\ntrust_estimated_quality = true\n",
            "ollama/local",
        ),
        ("[routing]\nprefer_local = true\n", "ollama/local"),
    ] {
        let f = fixture(&format!("{routing}{estimated}"));
        f.health.set_reachable("ollama", true);
        f.health
            .set_installed("ollama", Some(["local".to_string()].into_iter().collect()));
        assert_eq!(f.picks(ask("big", json!({})))[0], first, "{routing}");
        // For a model rated at or below the estimate it may stand in.
        assert_eq!(
            f.picks(ask("fast", json!({})))[0],
            "ollama/local",
            "{routing}"
        );
    }
}

#[test]
fn a_conversation_sticks_to_the_model_that_served_it() {
    let f = fixture("");
    let body = json!({"model": "big", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "and then?"}]});
    let route = f.route(body.clone()).expect("routed");
    let key = route.conversation.expect("a conversation key");
    f.sticky.record(key, "deepseek", "chat");
    assert_eq!(f.picks(body)[0], "deepseek/chat");
}

#[test]
fn dated_snapshots_keep_their_id() {
    let f = fixture("");
    let route = f
        .route(ask(
            "big-2024-08-06",
            json!({"p402": {"mode": "passthrough"}}),
        ))
        .expect("routed");
    assert_eq!(route.candidates[0].upstream_model, "big-2024-08-06");
    assert!(route.candidates[0].price().is_some());
}
