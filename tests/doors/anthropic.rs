//! Claude through p402: OpenAI-format requests in, Anthropic's Messages API
//! on the wire (checked by a loopback fake), OpenAI-format answers out.

use crate::common::*;
use serde_json::{json, Value};

/// A Claude model with round prices, on a fake Anthropic.
const CLAUDE: &str = r#"
[[models]]
id = "claude-test"
provider = "anthropic"
input_per_mtok = 1.0
cached_input_per_mtok = 0.1
cache_write_per_mtok = 1.25
output_per_mtok = 5.0
context = 200000
max_output = 8192
capabilities = ["tools", "vision", "json_schema", "streaming"]
quality = 50
"#;

async fn claude() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup {
            extra: CLAUDE.to_string(),
            ..Setup::default()
        }
        .with_provider("anthropic", &fake),
    )
    .await;
    (fake, proxy)
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_is_translated_both_ways_and_priced() {
    let (fake, proxy) = claude().await;
    let body = json!({"model": "claude-test", "temperature": 0.5, "stop": ["END"], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"}]});
    let answer: Value = proxy.chat_json(body).await;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 12);
    let meta = &answer["p402_metadata"];
    assert_eq!(meta["provider"], "anthropic");
    // 12 * 1 + 3 * 5 = 27 $/M
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.000027));

    let sent = &fake.received()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], PROVIDER_KEY);
    assert!(sent.headers.get("anthropic-version").is_some());
    assert!(
        sent.headers.get("authorization").is_none(),
        "Anthropic takes x-api-key only"
    );
    assert_eq!(sent.body["model"], "claude-test");
    assert_eq!(sent.body["system"], "Be brief.");
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
    assert!(
        sent.body["max_tokens"].as_u64().is_some_and(|n| n > 0),
        "max_tokens is always set"
    );
    assert_eq!(sent.body["stop_sequences"], json!(["END"]));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_cache_reads_and_writes_are_priced_at_their_own_rates() {
    let (fake, proxy) = claude().await;
    let mut message = anthropic_message("claude-test", false);
    message["usage"] = json!({"input_tokens": 100, "output_tokens": 10,
        "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000});
    fake.push(Reply::Json(200, message));
    let answer: Value = proxy.chat_json(ask("claude-test", "long context")).await;
    assert_eq!(answer["usage"]["prompt_tokens"], 1300);
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cached_tokens"],
        1000
    );
    // 100 * 1 + 1000 * 0.1 + 200 * 1.25 + 10 * 5 = 100 + 100 + 250 + 50 = 500 $/M
    assert_eq!(answer["p402_metadata"]["cost_usd"].as_f64(), Some(0.0005));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_round_trip_and_stream_their_arguments() {
    let (fake, proxy) = claude().await;
    let mut body = ask("claude-test", "Weather in Paris?");
    body["tools"] = tools();
    body["tool_choice"] = json!("required");
    let answer: Value = proxy.chat_json(body.clone()).await;
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().expect("args"))
            .expect("json"),
        json!({"city": "Paris"})
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let sent = &fake.received()[0].body;
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));

    body["stream"] = json!(true);
    let text = proxy.chat(body).await.text().await.expect("stream");
    let chunks = stream_chunks(&text);
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("arguments are JSON"),
        json!({"city": "Paris"})
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let last = chunks.last().expect("metadata chunk");
    assert_eq!(last["p402_metadata"]["output_tokens"], 3);
    assert_eq!(last["p402_metadata"]["cost_usd"].as_f64(), Some(0.000027));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_errors_take_the_spec_shape() {
    let (fake, proxy) = claude().await;
    fake.push(Reply::Json(400, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate"}})));
    let response = proxy.chat(ask("claude-test", "x")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("messages: roles must alternate"),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");

    fake.push(Reply::Json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let error = expect_error(
        proxy.chat(ask("claude-test", "x")).await,
        502,
        "upstream_failed",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("anthropic/claude-test: 529"),
        "{error}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_is_routable_in_cost_mode_and_fails_over_on_overload() {
    let anthropic = FakeProvider::start_anthropic().await;
    let backup = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            routing: "default_mode = \"cost\"\n".into(),
            extra: format!("{CLAUDE}\n[[models]]\nid = \"backup\"\nprovider = \"alpha\"\ninput_per_mtok = 2\noutput_per_mtok = 10\ncontext = 100000\nmax_output = 8192\ncapabilities = [\"tools\", \"streaming\"]\nquality = 50\n"),
            ..Setup::default()
        }
        .with_provider("anthropic", &anthropic)
        .with_provider("alpha", &backup),
    )
    .await;
    let answer: Value = proxy.chat_json(ask("backup", "hi")).await;
    assert_eq!(
        answer["p402_metadata"]["provider"], "anthropic",
        "claude-test is cheaper and as good"
    );
    anthropic.push(Reply::Json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let answer: Value = proxy.chat_json(ask("backup", "hi")).await;
    assert_eq!(answer["p402_metadata"]["provider"], "alpha");
    assert_eq!(answer["p402_metadata"]["failover"][0]["status"], 529);
    proxy.stop().await;
}

/// What Anthropic's API cannot say at all (`n` above 1) is the client's to
/// change: a 400 that keeps the translation's code and names the model,
/// never a 502 the SDKs would retry, and nothing reaches the provider.
#[tokio::test(flavor = "multi_thread")]
async fn an_untranslatable_chat_request_is_a_400_naming_the_field_and_model() {
    let (fake, proxy) = claude().await;
    let mut body = ask("claude-haiku-4-5", "Two answers, please");
    body["n"] = json!(2);
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 400);
    assert_eq!(should_retry(&response), Some("false"));
    let error = expect_error(response, 400, "unsupported_parameter").await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`n`") && message.contains("`claude-haiku-4-5`"),
        "{message}"
    );
    assert!(fake.received().is_empty());
    proxy.stop().await;
}
