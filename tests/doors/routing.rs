//! Routing across several loopback providers: the mode's choice, failover,
//! the circuit breaker, and cost figures checked by hand.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Three providers of our own, with models whose prices make the arithmetic
/// easy to check by hand. The built-in providers have no keys in tests.
struct Market {
    alpha: FakeProvider,
    beta: FakeProvider,
    gamma: FakeProvider,
    proxy: TestProxy,
}

const MODELS: &str = r#"
[[models]]
id = "premium"
provider = "alpha"
input_per_mtok = 5.0
output_per_mtok = 20.0
context = 128000
max_output = 16384
capabilities = ["tools", "vision", "json_schema", "streaming"]
quality = 60
speed_tps = 50

[[models]]
id = "mid"
provider = "beta"
input_per_mtok = 0.5
output_per_mtok = 2.0
context = 128000
max_output = 16384
capabilities = ["tools", "json_schema", "streaming"]
quality = 55
speed_tps = 400

[[models]]
id = "budget"
provider = "gamma"
input_per_mtok = 0.1
output_per_mtok = 0.4
cached_input_per_mtok = 0.025
context = 32000
max_output = 8192
capabilities = ["tools", "streaming"]
quality = 52
speed_tps = 100

[[models]]
id = "tiny"
provider = "gamma"
input_per_mtok = 0.02
output_per_mtok = 0.05
context = 8192
max_output = 4096
capabilities = ["streaming"]
quality = 20
speed_tps = 900
"#;

async fn market(routing: &str, upstream: &str) -> Market {
    let alpha = FakeProvider::start().await;
    let beta = FakeProvider::start().await;
    let gamma = FakeProvider::start().await;
    let setup = Setup {
        routing: format!("default_mode = \"cost\"\n{routing}"),
        upstream: upstream.to_string(),
        extra: MODELS.to_string(),
        ..Setup::default()
    }
    .with_provider("alpha", &alpha)
    .with_provider("beta", &beta)
    .with_provider("gamma", &gamma);
    let proxy = TestProxy::start(setup).await;
    Market {
        alpha,
        beta,
        gamma,
        proxy,
    }
}

/// One provider as `/api/v2/providers` shows it.
async fn provider_view(proxy: &TestProxy, name: &str) -> Value {
    let providers = proxy.get_json("/api/v2/providers").await;
    providers["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no provider {name} in {providers}"))
}

fn meta(answer: &Value) -> &Value {
    &answer["p402_metadata"]
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_mode_picks_the_cheapest_eligible_and_prices_it_exactly() {
    let m = market("", "").await;
    let answer: Value = m.proxy.chat_json(ask("premium", "What is 2+2?")).await;
    let meta = meta(&answer);
    // premium (60) allows substitutes from 51 up: budget (52) is the cheapest;
    // tiny (20) is below the floor.
    assert_eq!(meta["provider"], "gamma");
    assert_eq!(meta["model"], "budget");
    assert_eq!(meta["requested_model"], "premium");
    assert_eq!(meta["mode"], "cost");
    // The fake reports 12 prompt and 3 completion tokens.
    // cost:   12 * 0.1 + 3 * 0.4 = 2.4 $/M     -> $0.0000024
    // direct: 12 * 5.0 + 3 * 20  = 120 $/M     -> $0.00012
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.0000024));
    assert_eq!(meta["direct_cost"].as_f64(), Some(0.00012));
    assert_eq!(meta["savings"].as_f64(), Some(0.0001176));
    assert_eq!(m.gamma.received()[0].body["model"], "budget");
    assert!(m.alpha.received().is_empty());
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_prompt_tokens_are_priced_at_their_own_rate() {
    let m = market("", "").await;
    let mut reply = completion("budget", "cached", 1000, 100);
    reply["usage"]["prompt_tokens_details"]["cached_tokens"] = json!(800);
    m.gamma.push(Reply::Json(200, reply));
    let answer: Value = m.proxy.chat_json(ask("premium", "long prompt")).await;
    // 200 * 0.1 + 800 * 0.025 + 100 * 0.4 = 20 + 20 + 40 = 80 $/M
    assert_eq!(meta(&answer)["cost_usd"].as_f64(), Some(0.00008));
    // direct at premium, which has no cached price: 1000 * 5 + 100 * 20 = 7000 $/M
    assert_eq!(meta(&answer)["direct_cost"].as_f64(), Some(0.007));
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quality_speed_and_capabilities_change_the_choice() {
    let m = market("", "").await;
    let with = |mode: &str| {
        let mut body = ask("premium", "hi");
        body["p402"] = json!({"mode": mode});
        body
    };
    let answer: Value = m.proxy.chat_json(with("quality")).await;
    assert_eq!(meta(&answer)["model"], "premium");
    let answer: Value = m.proxy.chat_json(with("speed")).await;
    assert_eq!(meta(&answer)["model"], "mid");

    let mut schema = ask("premium", "give me json");
    schema["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
    let answer: Value = m.proxy.chat_json(schema).await;
    assert_eq!(meta(&answer)["model"], "mid", "budget has no json_schema");

    let mut image = ask("premium", "x");
    image["messages"] = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]);
    let answer: Value = m.proxy.chat_json(image).await;
    assert_eq!(meta(&answer)["model"], "premium", "only premium has vision");
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_on_500_429_and_timeout_then_metadata_lists_the_failures() {
    let m = market("", "first_byte_timeout_seconds = 1").await;
    for failure in [
        Reply::Json(500, json!({"error": {"message": "internal"}})),
        Reply::Json(429, json!({"error": {"message": "rate limited"}})),
        Reply::Hang,
    ] {
        m.gamma.push(failure);
        let answer: Value = m.proxy.chat_json(ask("premium", "hi")).await;
        let meta = meta(&answer);
        // The next candidate is on another provider: beta's mid.
        assert_eq!(meta["provider"], "beta", "{answer}");
        assert_eq!(meta["model"], "mid");
        let failover = meta["failover"].as_array().expect("failover list");
        assert_eq!(failover.len(), 1);
        assert_eq!(failover[0]["provider"], "gamma");
        assert_eq!(failover[0]["model"], "budget");
        // mid: 12 * 0.5 + 3 * 2 = 12 $/M; nothing is charged for the failure.
        assert_eq!(meta["cost_usd"].as_f64(), Some(0.000012));
    }
    let statuses: Vec<Value> = m
        .beta
        .received()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(statuses.len(), 3);
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_fail_over_before_the_first_byte() {
    let m = market("", "").await;
    m.gamma.push(Reply::Json(
        503,
        json!({"error": {"message": "unavailable"}}),
    ));
    let mut body = ask("premium", "stream please");
    body["stream"] = json!(true);
    let response = m.proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-p402-provider"], "beta");
    let text = response.text().await.expect("body");
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(&events[events.len() - 2]).expect("metadata chunk");
    assert_eq!(last["p402_metadata"]["provider"], "beta");
    assert_eq!(last["p402_metadata"]["failover"][0]["status"], 503);
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_error_is_not_failed_over() {
    let m = market("", "").await;
    m.gamma.push(Reply::Json(
        400,
        json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
    ));
    let response = m.proxy.chat(ask("premium", "hi")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], "bad tool schema");
    assert!(m.beta.received().is_empty() && m.alpha.received().is_empty());
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_provider_down_is_502_listing_each_attempt() {
    let m = market("", "").await;
    m.gamma.push(Reply::Json(500, json!({})));
    m.beta.push(Reply::Json(502, json!({})));
    m.alpha.push(Reply::Json(503, json!({})));
    let error = expect_error(
        m.proxy.chat(ask("premium", "hi")).await,
        502,
        "upstream_failed",
    )
    .await;
    let message = error["message"].as_str().expect("message");
    for attempt in ["gamma/budget: 500", "beta/mid: 502", "alpha/premium: 503"] {
        assert!(message.contains(attempt), "{message}");
    }
    // failover: false stops after the first.
    m.gamma.push(Reply::Json(500, json!({})));
    let mut body = ask("premium", "hi");
    body["p402"] = json!({"failover": false});
    let error = expect_error(m.proxy.chat(body).await, 502, "upstream_failed").await;
    assert!(
        !error["message"].as_str().unwrap_or("").contains("beta"),
        "{error}"
    );
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_breaker_opens_then_closes_after_a_good_trial() {
    let m = market(
        "circuit_breaker_failures = 2\ncircuit_breaker_cooldown_seconds = 0.5\n",
        "",
    )
    .await;
    for _ in 0..2 {
        m.gamma.push(Reply::Json(500, json!({})));
        let answer: Value = m.proxy.chat_json(ask("premium", "hi")).await;
        assert_eq!(meta(&answer)["provider"], "beta");
    }
    let gamma = provider_view(&m.proxy, "gamma").await;
    assert_eq!(gamma["health"]["circuit"], "open", "{gamma}");
    assert_eq!(gamma["health"]["consecutive_failures"], 2);

    // While open, gamma is skipped without being tried.
    let before = m.gamma.received().len();
    let answer: Value = m.proxy.chat_json(ask("premium", "hi")).await;
    assert_eq!(meta(&answer)["provider"], "beta");
    assert_eq!(meta(&answer)["failover"], json!([]));
    assert_eq!(m.gamma.received().len(), before);

    // After the cool-down a trial goes through, succeeds, and closes it.
    let closed = eventually(Duration::from_secs(10), || async {
        let answer: Value = m.proxy.chat_json(ask("premium", "hi")).await;
        meta(&answer)["provider"] == "gamma"
    })
    .await;
    assert!(closed, "the breaker never let a trial through");
    let gamma = provider_view(&m.proxy, "gamma").await;
    assert_eq!(gamma["health"]["circuit"], "closed");
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_providers_and_compare_endpoints() {
    let m = market("", "").await;
    let models: Value = m
        .proxy
        .client
        .get(m.proxy.url("/api/v2/models"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let data = models["data"].as_array().expect("list");
    let budget = data.iter().find(|x| x["id"] == "budget").expect("budget");
    assert_eq!(budget["routable"], true);
    assert_eq!(budget["input_per_mtok"], 0.1);
    assert_eq!(budget["cached_input_per_mtok"], 0.025);
    let gpt = data
        .iter()
        .find(|x| x["provider"] == "openai")
        .expect("a built-in openai model");
    assert_eq!(gpt["routable"], false);
    assert!(gpt["unroutable_reason"]
        .as_str()
        .unwrap_or("")
        .contains("OPENAI_API_KEY"));
    assert!(models["as_of"].is_string());

    let providers: Value = m
        .proxy
        .client
        .get(m.proxy.url("/api/v2/providers"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = providers["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "openai",
        "anthropic",
        "google",
        "deepseek",
        "groq",
        "mistral",
        "together",
        "fireworks",
        "xai",
        "cerebras",
        "perplexity",
        "openrouter",
        "ollama",
        "alpha",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    let compare: Value = m
        .proxy
        .client
        .post(m.proxy.url("/api/v2/providers/compare"))
        .json(&ask("premium", "What is the capital of France?"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let quotes = compare["data"].as_array().expect("quotes");
    let order: Vec<&str> = quotes.iter().filter_map(|q| q["model"].as_str()).collect();
    assert_eq!(
        order,
        ["tiny", "budget", "mid", "premium"],
        "cheapest first"
    );
    let costs: Vec<f64> = quotes
        .iter()
        .filter_map(|q| q["expected_cost_usd"].as_f64())
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(quotes[0]["meets_quality_floor"], false);
    assert_eq!(quotes[1]["meets_quality_floor"], true);
    assert!(compare["input_tokens"].as_u64().is_some_and(|n| n > 5));
    assert!(
        m.alpha.received().is_empty()
            && m.beta.received().is_empty()
            && m.gamma.received().is_empty()
    );
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_cost_below_every_candidate_is_402() {
    let m = market("", "").await;
    let mut body = ask("premium", "hi");
    body["p402"] = json!({"max_cost": 0.0000000001});
    let error = expect_error(m.proxy.chat(body).await, 402, "MAX_COST_EXCEEDED").await;
    assert!(error["message"].as_str().unwrap_or("").contains("max_cost"));
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_costs_errors_and_circuits() {
    let m = market(
        "circuit_breaker_failures = 1\ncircuit_breaker_cooldown_seconds = 60\n",
        "",
    )
    .await;
    m.gamma.push(Reply::Json(500, json!({})));
    let answer: Value = m.proxy.chat_json(ask("premium", "hi")).await;
    assert_eq!(meta(&answer)["provider"], "beta");
    let response = m
        .proxy
        .client
        .get(m.proxy.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.expect("text");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    assert!(line("p402_requests_total{").contains("provider=\"beta\""));
    assert!(line("p402_requests_total{").ends_with(" 1"));
    assert!(line("p402_upstream_errors_total{").contains("provider=\"gamma\""));
    assert!(line("p402_circuit_open{provider=\"gamma\"}").ends_with(" 1"));
    assert!(line("p402_circuit_open{provider=\"beta\"}").ends_with(" 0"));
    assert!(line("p402_tokens_total{provider=\"beta\",direction=\"input\"}").ends_with(" 12"));
    // mid: 12 * 0.5 + 3 * 2 = 12 $/M
    let cost: f64 = line("p402_cost_usd_total{provider=\"beta\"}")
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("number");
    assert!((cost - 0.000012).abs() < 1e-12, "{cost}");
    assert!(text.contains("p402_request_duration_seconds_bucket"));
    assert!(text.contains("# EOF"));
    m.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_door_routes_and_fails_over_alike_and_is_counted_by_door() {
    let m = market("", "").await;
    // Anthropic Messages, translated for the OpenAI-speaking market.
    m.gamma
        .push(Reply::Json(500, json!({"error": {"message": "internal"}})));
    let response = m
        .proxy
        .client
        .post(m.proxy.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "premium", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-p402-provider"], "beta");
    assert_eq!(response.headers()["x-p402-failover-count"], "1");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], "Hello there!");

    // The Responses API, likewise.
    m.gamma
        .push(Reply::Json(500, json!({"error": {"message": "internal"}})));
    let response = m
        .proxy
        .client
        .post(m.proxy.url("/v1/responses"))
        .json(&json!({"model": "premium", "input": "hi", "store": false}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["object"], "response");
    let figures = &answer["p402_metadata"];
    assert_eq!(figures["provider"], "beta", "{answer}");
    assert_eq!(figures["mode"], "cost");
    assert_eq!(figures["failover"][0]["provider"], "gamma");
    assert_eq!(figures["failover"][0]["status"], 500);

    let text = m
        .proxy
        .client
        .get(m.proxy.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    for door in ["messages", "responses"] {
        let counted = text.lines().any(|l| {
            l.starts_with("p402_requests_total{")
                && l.contains(&format!("door=\"{door}\""))
                && l.contains("provider=\"beta\"")
                && l.ends_with(" 1")
        });
        assert!(counted, "no {door} request counted in\n{text}");
    }
    m.proxy.stop().await;
}
