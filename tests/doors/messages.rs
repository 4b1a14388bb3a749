//! The Anthropic Messages door (`/v1/messages`), spoken as Anthropic's
//! clients speak it, against loopback providers that speak each API
//! exactly: forwarded as it came to an Anthropic provider (thinking,
//! `cache_control`, beta headers untouched), translated for an OpenAI one
//! when nothing is lost, charged either way, and every error in
//! Anthropic's shape.

use crate::common::*;
use serde_json::{json, Value};

const MODELS: &str = r#"
[[models]]
id = "metered-claude"
provider = "anthropic"
input_per_mtok = 1.0
output_per_mtok = 1000.0
context = 100000
max_output = 1000
capabilities = ["tools", "streaming", "vision"]
quality = 50
"#;

async fn setup() -> (FakeProvider, FakeProvider, TestProxy) {
    let anthropic = FakeProvider::start_anthropic().await;
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n{MODELS}"),
            ..Setup::default()
        }
        .with_provider("anthropic", &anthropic)
        .with_provider("openai", &openai),
    )
    .await;
    (anthropic, openai, proxy)
}

/// What Claude Code sends: a system prompt with a cache point, extended
/// thinking, and a tool.
fn claude_code_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 500,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 200},
        "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}}]}],
        "metadata": {"user_id": "user_abc"}
    })
}

async fn post(proxy: &TestProxy, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = proxy
        .client
        .post(proxy.url("/v1/messages?beta=true"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_messages_request_goes_to_anthropic_as_it_came_and_is_charged() {
    let (anthropic, openai, proxy) = setup().await;
    let body = claude_code_request("metered-claude", false);
    let response = post(
        &proxy,
        &body,
        &[
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "the-clients-own-key"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let cost: f64 = response
        .headers()
        .get("x-p402-cost-usd")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("cost header");
    let id = request_id(&response);
    let answer: Value = response.json().await.expect("json");
    // The answer as Anthropic sent it, with no p402 member in it.
    assert_eq!(answer, anthropic_message("metered-claude", true));

    let sent = anthropic.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/messages");
    // The body as the client wrote it: thinking, cache points, tools.
    assert_eq!(sent[0].body, body);
    let header = |name: &str| {
        sent[0]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("anthropic-beta").as_deref(),
        Some("interleaved-thinking-2025-05-14")
    );
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    // p402's provider key, never the client's.
    assert_eq!(header("x-api-key").as_deref(), Some(PROVIDER_KEY));
    assert!(openai.received().is_empty());

    // 12 input and 3 output tokens at $1 and $1000 per million.
    let expected = 12.0 * 1e-6 + 3.0 * 1e-3;
    assert!((cost - expected).abs() < 1e-9, "{cost}");
    let entry = proxy.ledger_entry(&id).await.expect("ledger entry");
    assert_eq!(entry["input_tokens"], 12);
    assert_eq!(entry["output_tokens"], 3);
    assert_eq!(entry["provider"], "anthropic");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_messages_request_is_relayed_event_by_event_and_charged() {
    let (anthropic, _openai, proxy) = setup().await;
    let session = proxy.session(5.0).await;
    let mut body = claude_code_request("metered-claude", true);
    body["p402"] = json!({"session_id": session});
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let id = request_id(&response);
    let text = response.text().await.expect("body");
    // Every event Anthropic sent, in order and as sent, then the figures
    // in a comment line.
    let upstream: String = anthropic_stream("metered-claude", true).concat();
    assert!(text.starts_with(&upstream), "{text}");
    let comment = text[upstream.len()..].trim();
    let figures: Value = serde_json::from_str(
        comment
            .strip_prefix(": p402_metadata ")
            .expect("a metadata comment"),
    )
    .expect("metadata json");
    assert_eq!(figures["request_id"], id.as_str());
    assert_eq!(figures["input_tokens"], 12);
    assert_eq!(figures["output_tokens"], 3);

    // The session was charged, and the reserved limit went out.
    let sent = anthropic.received();
    assert_eq!(sent[0].body["max_tokens"], 500);
    assert_eq!(sent[0].body["thinking"], body["thinking"]);
    assert!(sent[0].body.get("p402").is_none());
    let view = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(view["requests"], 1, "{view}");
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!((used - (12.0 * 1e-6 + 3.0 * 1e-3)).abs() < 1e-9, "{view}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_messages_request_is_translated_for_an_openai_model() {
    let (anthropic, openai, proxy) = setup().await;
    let body = json!({
        "model": "metered",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stop_sequences": ["END"],
    });
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["content"][0]["type"], "text");
    assert!(answer["content"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(answer["stop_reason"], "end_turn");
    assert!(answer["usage"]["input_tokens"].as_u64().is_some());
    assert!(answer.get("p402_metadata").is_none());

    let sent = openai.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(
        sent[0].body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent[0].body["messages"][1],
        json!({"role": "user", "content": "Say hello"})
    );
    assert_eq!(sent[0].body["stop"], json!(["END"]));
    assert!(anthropic.received().is_empty());

    // Streamed: Anthropic's events, built from OpenAI's chunks.
    let mut body = body;
    body["stream"] = json!(true);
    let text = post(&proxy, &body, &[]).await.text().await.expect("body");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert!(names.contains(&"content_block_start"), "{text}");
    assert!(names.contains(&"content_block_delta"), "{text}");
    assert_eq!(
        &names[names.len() - 3..],
        &["content_block_stop", "message_delta", "message_stop"],
        "{text}"
    );
    assert!(text.contains(": p402_metadata "), "{text}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_only_messages_can_say_is_never_sent_to_another_api() {
    let (anthropic, openai, proxy) = setup().await;
    // Extended thinking asked of an OpenAI model is a hint, said there as
    // a reasoning effort.
    let response = post(&proxy, &claude_code_request("metered", false), &[]).await;
    assert_eq!(response.status(), 200);
    let sent = openai.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.get("thinking").is_none(), "{}", sent[0].body);

    // A document has no Chat Completions equivalent: a 400 naming it and
    // the model, which the SDKs are told not to retry.
    let mut body = claude_code_request("metered", false);
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a"}},
        {"type": "text", "text": "Summarise it."},
    ]}]);
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(should_retry(&response), Some("false"));
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "untranslatable_request");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("messages[0].content[0]") && message.contains("`metered`"),
        "{message}"
    );
    assert_eq!(openai.received().len(), 1, "nothing more was sent");
    assert!(anthropic.received().is_empty());
    proxy.stop().await;
}

/// Claude Code's current bodies put system-role turns inside `messages`:
/// accepted, forwarded as they came to Anthropic, and kept in place as
/// system messages when translated.
#[tokio::test(flavor = "multi_thread")]
async fn system_turns_inside_messages_are_accepted_and_kept_in_place() {
    let (anthropic, openai, proxy) = setup().await;
    let mut body = claude_code_request("metered-claude", false);
    body["messages"] = json!([
        {"role": "user", "content": "list the files"},
        {"role": "system", "content": [{"type": "text", "text": "# Environment: linux"}]},
        {"role": "user", "content": "and the hidden ones"},
    ]);
    body["context_management"] =
        json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]});
    body["output_config"] = json!({"effort": "high"});
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(anthropic.received()[0].body, body, "forwarded as it came");

    body["model"] = json!("metered");
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status(), 200);
    let sent = &openai.received()[0].body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "system", "user"], "{sent}");
    assert_eq!(sent["messages"][2]["content"], "# Environment: linux");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_come_in_anthropics_shape() {
    let (_anthropic, _openai, proxy) = setup().await;
    // Malformed: no max_tokens.
    let response = post(
        &proxy,
        &json!({"model": "metered-claude", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 400);
    let id = request_id(&response);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("max_tokens")));
    assert_eq!(error["request_id"], id.as_str());

    // A budget that cannot pay: 402, billing_error, with the figures.
    let session = proxy.session(0.0001).await;
    let mut body = claude_code_request("metered-claude", false);
    body["p402"] = json!({"session_id": session});
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status(), 402);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "billing_error");
    assert_eq!(error["error"]["code"], "SESSION_BUDGET_EXCEEDED");
    assert!(error["error"]["remaining_usd"].as_f64().is_some());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_key_may_come_as_x_api_key() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup {
            extra: MODELS.to_string(),
            server: "api_keys = [\"p402-local-key-1\"]".to_string(),
            ..Setup::default()
        }
        .with_provider("anthropic", &anthropic),
    )
    .await;
    let body = json!({"model": "metered-claude", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]});
    let refused = post(&proxy, &body, &[]).await;
    assert_eq!(refused.status(), 401);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["type"], "authentication_error");
    let allowed = post(&proxy, &body, &[("x-api-key", "p402-local-key-1")]).await;
    assert_eq!(allowed.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_counted_by_the_provider_that_bills_them_or_by_p402() {
    let (anthropic, _openai, proxy) = setup().await;
    anthropic.push(Reply::Json(200, json!({"input_tokens": 42})));
    let body = json!({"model": "metered-claude",
        "messages": [{"role": "user", "content": "How many tokens is this?"}]});
    let counted: Value = proxy
        .client
        .post(proxy.url("/v1/messages/count_tokens?beta=true"))
        .header("anthropic-beta", "token-counting-2024-11-01")
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(counted, json!({"input_tokens": 42}));
    let sent = anthropic.received();
    assert_eq!(sent[0].path, "/v1/messages/count_tokens");
    assert_eq!(sent[0].body, body);
    assert_eq!(
        sent[0]
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok()),
        Some(PROVIDER_KEY)
    );
    // An OpenAI model: p402's own count, and no ledger entry either way.
    let mut body = body;
    body["model"] = json!("metered");
    let counted: Value = proxy
        .client
        .post(proxy.url("/v1/messages/count_tokens"))
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        counted["input_tokens"].as_u64().is_some_and(|n| n > 5),
        "{counted}"
    );
    assert_eq!(counted["p402_estimated"], true, "{counted}");
    let report = proxy.get_json("/api/v2/report?since=1d").await;
    assert_eq!(report["total"]["requests"], 0, "{report}");
    proxy.stop().await;
}

/// Tools that only let one set a base URL charge a session by its path;
/// Claude Code's own session id is kept with each ledger entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_in_the_base_url_is_charged_and_the_agents_session_recorded() {
    let (anthropic, openai, proxy) = setup().await;
    let session = proxy.session(5.0).await;
    let body = json!({"model": "metered-claude", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/messages?beta=true")))
        .header("x-claude-code-session-id", "cc-run-7")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let chat = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/chat/completions")))
        .json(&ask("metered", "hello"))
        .send()
        .await
        .expect("send");
    assert_eq!(chat.status(), 200);
    let view = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(view["requests"], 2, "{view}");
    let entry = proxy.ledger_entry(&id).await.expect("entry");
    assert_eq!(entry["session"], session.as_str());
    assert_eq!(entry["client_session"], "cc-run-7");
    let by_run = proxy
        .get_json("/api/v2/report?since=1d&by=client_session")
        .await;
    let keys: Vec<&str> = by_run["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row["key"].as_str())
        .collect();
    assert!(keys.contains(&"cc-run-7"), "{by_run}");
    assert_eq!(anthropic.received().len(), 1);
    assert_eq!(openai.received().len(), 1);

    // A session that does not exist is refused, in the door's dialect.
    let refused = proxy
        .client
        .post(proxy.url("/s/ses_nope/v1/messages"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 404);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");
    proxy.stop().await;
}

/// What Claude Code probes its base URL with: `HEAD /` and the model list,
/// in Anthropic's shape when asked as Anthropic's clients ask.
#[tokio::test(flavor = "multi_thread")]
async fn the_probes_of_anthropic_clients_are_answered() {
    let (_anthropic, _openai, proxy) = setup().await;
    let head = proxy
        .client
        .head(proxy.url("/"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    let listed: Value = proxy
        .client
        .get(proxy.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let data = listed["data"].as_array().expect("data");
    assert!(data.iter().any(|m| m["id"] == "metered-claude"), "{listed}");
    assert!(data.iter().all(|m| m["type"] == "model"), "{listed}");
    assert_eq!(listed["has_more"], false);
    proxy.stop().await;
}

/// Anthropic's clients back off by status: an overload (529) or a rate
/// limit (429) every provider reported is passed on as such, in
/// Anthropic's shape.
#[tokio::test(flavor = "multi_thread")]
async fn an_overload_every_provider_reported_is_passed_on_as_529() {
    let (anthropic, _openai, proxy) = setup().await;
    anthropic.push(Reply::Json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let body = json!({"model": "metered-claude", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status().as_u16(), 529);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "overloaded_error", "{error}");
    anthropic.push(Reply::Json(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
    ));
    let response = post(&proxy, &body, &[]).await;
    assert_eq!(response.status().as_u16(), 429);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");
    proxy.stop().await;
}
