//! Routing decisions on a fixed test catalog.

use super::*;
use crate::catalog::BuiltinCatalog;
use crate::config::parse;
use crate::wire::request;
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

    fn route(&self, body: Value) -> Result<Route, crate::server::error::ApiError> {
        self.route_tokens(body, 20)
    }

    fn route_tokens(
        &self,
        body: Value,
        input_tokens: u64,
    ) -> Result<Route, crate::server::error::ApiError> {
        let chat = request::parse(body.to_string().as_bytes(), &http::HeaderMap::new())
            .expect("valid request");
        self.router()
            .route(&chat, input_tokens)
            .map_err(crate::server::error::ApiError::from)
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
    let policy = crate::ops::provider_health::BreakerPolicy {
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

/// Models named by their Arena names, so the rule is tested on the real
/// ratings of the built-in copy. Prices make `qwen`, `oss` and `guess`
/// cheaper than `haiku`, and `grok47` cheaper than `grok43`.
const RATED_CATALOG: &str = r#"
as_of = "test"
[[providers]]
name = "openai"
base_url = "https://openai.test/v1"
api_key_env = "OPENAI_API_KEY"
api = "openai"

# overall 1414, coding 1481, math 1400, creative writing 1388
[[models]]
id = "haiku"
provider = "openai"
input_per_mtok = 1.0
output_per_mtok = 5.0
capabilities = ["tools", "streaming"]
quality = 16
arena = "claude-haiku-4-5-20251001"

# overall 1438 (low 1433), coding 1502 (1493), math 1456 (1436),
# creative writing 1364: worse at writing only
[[models]]
id = "qwen"
provider = "openai"
input_per_mtok = 0.3
output_per_mtok = 2.4
capabilities = ["tools", "streaming"]
quality = 48
arena = "qwen3.8-27b"

# overall 1318: worse at everything, and the cheapest
[[models]]
id = "oss"
provider = "openai"
input_per_mtok = 0.075
output_per_mtok = 0.3
capabilities = ["tools", "streaming"]
quality = 25
arena = "gpt-oss-20b"

# a guess, however high, never stands in for a measured model
[[models]]
id = "guess"
provider = "openai"
input_per_mtok = 0.01
output_per_mtok = 0.01
capabilities = ["tools", "streaming"]
quality = 99
quality_source = "estimated"

# overall 1441 +-4, and 1442 (low 1434): above it only within its noise
[[models]]
id = "grok43"
provider = "openai"
input_per_mtok = 3.0
output_per_mtok = 12.0
capabilities = ["tools", "streaming"]
quality = 45
arena = "grok-4.3"

[[models]]
id = "grok47"
provider = "openai"
input_per_mtok = 2.5
output_per_mtok = 11.0
capabilities = ["tools", "streaming"]
quality = 60
arena = "grok-4.7-xhigh"
"#;

fn rated(config: &str) -> Fixture {
    let base: BuiltinCatalog = Catalog::parse_base(RATED_CATALOG).expect("rated catalog");
    let config = parse("t.toml", config).expect("config");
    let catalog = Catalog::build_from(&base, None, &config, |name| {
        (name == "OPENAI_API_KEY").then(|| "k".to_string())
    });
    Fixture {
        catalog,
        config: config.routing,
        health: ProviderHealth::default(),
        sticky: Sticky::default(),
    }
}

fn say(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

const GENERAL: &str = "What is the capital of Australia?";
const CODING: &str = "Write a Python function that parses a CSV file into a list of dicts";
const MATH: &str = "Prove that the square root of 2 is irrational.";
const CREATIVE: &str = "Write a poem about autumn rain in the style of Basho";

#[test]
fn a_substitute_must_be_rated_as_high_in_the_requests_category() {
    let f = rated("");
    // Overall, coding and math: qwen is rated higher than haiku even at the
    // low end of its interval; oss never is, and the guess is not measured.
    for text in [GENERAL, CODING, MATH] {
        assert_eq!(f.picks(say("haiku", text))[0], "openai/qwen", "{text}");
    }
    // Creative writing: qwen is rated lower there, so haiku serves.
    let route = f.route(say("haiku", CREATIVE)).expect("routed");
    assert_eq!(
        route.quality.category,
        crate::catalog::arena::Category::CreativeWriting
    );
    assert_eq!(
        route.candidates[0].model_name(),
        "haiku",
        "{:?}",
        route
            .candidates
            .iter()
            .map(|c| c.model_name())
            .collect::<Vec<_>>()
    );
    for route in [say("haiku", GENERAL), say("haiku", CREATIVE)].map(|b| f.picks(b)) {
        assert!(
            !route
                .iter()
                .any(|m| m == "openai/oss" || m == "openai/guess"),
            "{route:?}"
        );
    }
}

#[test]
fn noise_is_never_taken_for_an_upgrade_and_the_drop_is_the_users_to_allow() {
    // grok47's rating (1442) is above grok43's (1441) only within its
    // interval (low 1434): at drop 0 it does not stand in.
    let f = rated("");
    assert_eq!(f.picks(say("grok43", GENERAL))[0], "openai/grok43");
    // Allowing 10 points lets it (1434 >= 1431), and still not oss.
    let f = rated("[routing]\nmax_quality_drop = 10\n");
    let picks = f.picks(say("grok43", GENERAL));
    assert!(picks.contains(&"openai/grok47".to_string()), "{picks:?}");
    assert!(!picks.contains(&"openai/oss".to_string()), "{picks:?}");
    // At 200 points the cheapest measured model serves; the guess never.
    let f = rated("[routing]\nmax_quality_drop = 200\n");
    let picks = f.picks(say("haiku", CREATIVE));
    assert_eq!(picks[0], "openai/oss");
    assert!(!picks.contains(&"openai/guess".to_string()), "{picks:?}");
}

#[test]
fn an_estimated_model_may_be_stood_in_for_by_a_measured_one() {
    // The guess is requested: measured models are judged by the 0-100
    // scores (no rating to compare with), so none reaches 99...
    let f = rated("");
    assert_eq!(f.picks(say("guess", GENERAL))[0], "openai/guess");
    let route = f.route(say("guess", GENERAL)).expect("routed");
    assert!(route.quality.compared.is_none());
    // ...and with a user's own [[models]] score lower, the cheaper measured
    // models stand in.
    let f = rated(
        "[[models]]\nid = \"guess\"\nprovider = \"openai\"\ninput_per_mtok = 0.5\noutput_per_mtok = 5\nquality = 20\nquality_source = \"estimated\"\n",
    );
    assert_eq!(f.picks(say("guess", GENERAL))[0], "openai/oss");
}

#[test]
fn quality_mode_ranks_by_the_rating_in_the_category() {
    let f = rated("");
    // Coding: qwen (1502), grok43 (1488, low 1482), then haiku (1481);
    // grok47 (1488, but low 1472) and oss are not admitted, nor the guess.
    let picks = f.picks(json!({"model": "haiku", "messages": [{"role": "user", "content": CODING}], "p402": {"mode": "quality"}}));
    assert_eq!(picks, ["openai/qwen", "openai/grok43", "openai/haiku"]);
    // Auto: every measured model in the order of its rating, the guess last.
    let picks = f.picks(json!({"model": "auto", "messages": [{"role": "user", "content": MATH}], "p402": {"mode": "quality"}}));
    assert_eq!(picks[0], "openai/qwen");
}

#[test]
fn the_quality_note_says_category_ratings_and_source() {
    let f = rated("");
    let route = f.route(say("haiku", CODING)).expect("routed");
    let note = QualityNote::of(
        &route.quality,
        route.candidates[0].model.as_ref().expect("model"),
    );
    let json = serde_json::to_value(&note).expect("json");
    assert_eq!(json["category"], "coding");
    assert_eq!(json["requested"], 1481);
    assert_eq!(json["served"], 1502);
    assert_eq!(json["source"], "arena");
    assert!(json.get("rated_in").is_none());
}

#[test]
fn balanced_mode_weighs_the_same_ratings() {
    let f = rated("");
    let ask = |model: &str, text: &str| json!({"model": model, "messages": [{"role": "user", "content": text}], "p402": {"mode": "balanced"}});
    // qwen is the cheapest admitted model and rated near the top overall.
    let picks = f.picks(ask("haiku", GENERAL));
    assert_eq!(picks[0], "openai/qwen", "{picks:?}");
    assert!(
        !picks
            .iter()
            .any(|p| p == "openai/oss" || p == "openai/guess"),
        "{picks:?}"
    );
    // Auto: nothing to stand in for, so every model competes; the guess,
    // cheapest of all but unmeasured, earns no quality credit and does not
    // win against measured models.
    let picks = f.picks(ask("auto", CODING));
    assert_ne!(picks[0], "openai/guess", "{picks:?}");
}
