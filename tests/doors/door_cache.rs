//! The cache on every door: an answer stored from one API is replayed in
//! the client's own, whole or streamed; what only a provider's own dialect
//! can say (thinking, reasoning items) is never replayed without it; and
//! agent turns (tools, earlier turns) hit only on an exact repeat.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

async fn setup(cache: String) -> (FakeProvider, FakeProvider, TestProxy) {
    let anthropic = FakeProvider::start_anthropic().await;
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            cache,
            ..Setup::default()
        }
        .with_provider("anthropic", &anthropic)
        .with_provider("openai", &openai),
    )
    .await;
    (anthropic, openai, proxy)
}

async fn post(proxy: &TestProxy, path: &str, body: &Value) -> reqwest::Response {
    let response = proxy
        .client
        .post(proxy.url(path))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "{path}");
    response
}

fn cached(response: &reqwest::Response) -> bool {
    response.headers()["x-p402-cached"] == "true"
}

/// The data of every event in an SSE body (`event:` lines and comments
/// aside).
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

fn question(text: &str, stream: bool) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 300, "stream": stream,
        "system": "Be brief.", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_messages_answer_is_replayed_in_anthropics_shape_whole_and_streamed() {
    let (anthropic, _openai, proxy) = setup("enabled = true\n".into()).await;
    // Stored from a native stream, answered whole.
    let first = post(&proxy, "/v1/messages", &question("What is redb?", true)).await;
    assert!(!cached(&first));
    first.text().await.expect("body");
    let response = post(&proxy, "/v1/messages", &question("What is redb?", false)).await;
    assert!(cached(&response));
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "Hello there!"}])
    );
    assert_eq!(answer["stop_reason"], "end_turn");

    // Replayed as Anthropic's events.
    let response = post(&proxy, "/v1/messages", &question("What is redb?", true)).await;
    assert!(cached(&response));
    let text = response.text().await.expect("body");
    let events = events(&text);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"), "{text}");
    assert_eq!(kinds.last(), Some(&"message_stop"), "{text}");
    let said: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "Hello there!");
    assert_eq!(events[0]["message"]["model"], "claude-haiku-4-5");
    assert_eq!(
        anthropic.received().len(),
        1,
        "only the first went upstream"
    );

    // Stored from a whole native answer too, and free in the ledger.
    post(&proxy, "/v1/messages", &question("What is sled?", false)).await;
    let response = post(&proxy, "/v1/messages", &question("What is sled?", false)).await;
    assert!(cached(&response));
    let id = request_id(&response);
    assert_eq!(anthropic.received().len(), 2);
    let entry = proxy.ledger_entry(&id).await.expect("ledger entry");
    assert_eq!(entry["cached"], true, "{entry}");
    assert_eq!(entry["cost_nanos"], 0, "{entry}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thinking_request_matches_only_itself_and_thinking_is_never_dropped() {
    let (anthropic, _openai, proxy) = setup("enabled = true\n".into()).await;
    let thinking = |budget: u64| {
        let mut body = question("Why is the sky blue?", false);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        body
    };
    // An answer with nothing but text is stored, under the whole body.
    post(&proxy, "/v1/messages", &thinking(200)).await;
    assert!(cached(&post(&proxy, "/v1/messages", &thinking(200)).await));
    // Another thinking budget, or none, is another request.
    assert!(!cached(&post(&proxy, "/v1/messages", &thinking(250)).await));
    assert!(!cached(
        &post(
            &proxy,
            "/v1/messages",
            &question("Why is the sky blue?", false)
        )
        .await
    ));
    assert_eq!(anthropic.received().len(), 3);

    // An answer with a thinking block is not stored: replayed without it,
    // it would not be the answer the client asked for.
    let mut with_thinking = anthropic_message("claude-haiku-4-5", false);
    with_thinking["content"] = json!([
        {"type": "thinking", "thinking": "Rayleigh scattering.", "signature": "sig-opaque"},
        {"type": "text", "text": "Scattering."}
    ]);
    anthropic.push(Reply::Json(200, with_thinking.clone()));
    let response = post(&proxy, "/v1/messages", &thinking(300)).await;
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["content"], with_thinking["content"]);
    assert!(!cached(&post(&proxy, "/v1/messages", &thinking(300)).await));
    assert_eq!(anthropic.received().len(), 5);
    proxy.stop().await;
}

fn plain_response(id: &str, output: Value) -> Value {
    json!({
        "id": id, "object": "response", "created_at": 1_796_000_000, "status": "completed",
        "model": "gpt-4o-mini", "error": null, "incomplete_details": null, "output": output,
        "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 28}
    })
}

fn message_item(text: &str) -> Value {
    json!({"type": "message", "id": "msg_01", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_responses_answer_is_replayed_as_a_response_and_reasoning_is_never_dropped() {
    let (_anthropic, openai, proxy) = setup("enabled = true\n".into()).await;
    let ask = |text: &str, stream: bool| {
        json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": text,
            "store": false, "stream": stream})
    };
    openai.push(Reply::Json(
        200,
        plain_response("resp_01", json!([message_item("Fourty-two.")])),
    ));
    post(&proxy, "/v1/responses", &ask("What is the answer?", false)).await;
    let response = post(&proxy, "/v1/responses", &ask("What is the answer?", false)).await;
    assert!(cached(&response));
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["id"], "resp_01");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["output"][0]["content"][0]["text"], "Fourty-two.");
    assert_eq!(answer["p402_metadata"]["cached"], true);

    // Streamed, the full event sequence, from the cache.
    let response = post(&proxy, "/v1/responses", &ask("What is the answer?", true)).await;
    assert!(cached(&response));
    let text = response.text().await.expect("body");
    let events = events(&text);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"), "{text}");
    assert_eq!(kinds.last(), Some(&"response.completed"), "{text}");
    let said: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(said, "Fourty-two.");
    // One response, one id, from the first event to the last.
    let ids: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.pointer("/response/id"))
        .collect();
    assert!(ids.iter().all(|id| *id == "resp_01"), "{ids:?}");
    assert_eq!(openai.received().len(), 1);

    // A response with a reasoning item is not stored.
    openai.push(Reply::Json(
        200,
        plain_response(
            "resp_02",
            json!([{"type": "reasoning", "id": "rs_01", "summary": [], "encrypted_content": "gAAAA"},
                message_item("Seven.")]),
        ),
    ));
    post(
        &proxy,
        "/v1/responses",
        &ask("How many days in a week?", false),
    )
    .await;
    openai.push(Reply::Json(
        200,
        plain_response("resp_03", json!([message_item("Seven.")])),
    ));
    let again = post(
        &proxy,
        "/v1/responses",
        &ask("How many days in a week?", false),
    )
    .await;
    assert!(!cached(&again));
    assert_eq!(openai.received().len(), 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_turns_hit_only_on_an_exact_repeat() {
    let (_anthropic, openai, proxy) =
        setup(semantic_cache("store_tool_calls = true\n").await).await;
    let ready = eventually(Duration::from_secs(60), || async {
        proxy.health().await["cache"] == "connected"
    })
    .await;
    assert!(ready, "the embedding model never loaded");
    let tool = json!([{"type": "function", "function": {"name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]);
    let ask = |text: &str, tools: bool| {
        let mut body = json!({"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}]});
        if tools {
            body["tools"] = tool.clone();
        }
        body
    };
    let is_cached = |response: reqwest::Response| cached(&response);
    let first = "What is the capital of France?";
    let paraphrase = "Tell me the capital of France.";

    // A single turn without tools: a paraphrase hits.
    proxy.chat(ask(first, false)).await;
    assert!(is_cached(proxy.chat(ask(paraphrase, false)).await));

    // With tools: only the exact repeat.
    proxy.chat(ask(first, true)).await;
    assert!(!is_cached(proxy.chat(ask(paraphrase, true)).await));
    assert!(is_cached(proxy.chat(ask(first, true)).await));

    // After earlier turns: only the exact repeat.
    let turns = |text: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "I am planning a trip."},
            {"role": "assistant", "content": "Where to?"},
            {"role": "user", "content": text}]})
    };
    proxy.chat(turns(first)).await;
    assert!(!is_cached(proxy.chat(turns(paraphrase)).await));
    assert!(is_cached(proxy.chat(turns(first)).await));
    assert_eq!(openai.received().len(), 5);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_always_lets_a_paraphrase_answer_an_agent_turn() {
    let (_anthropic, openai, proxy) =
        setup(semantic_cache("store_tool_calls = true\nsemantic = \"always\"\n").await).await;
    let ready = eventually(Duration::from_secs(60), || async {
        proxy.health().await["cache"] == "connected"
    })
    .await;
    assert!(ready, "the embedding model never loaded");
    let ask = |text: &str| {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "tools": [{"type": "function", "function": {"name": "read_file"}}]})
    };
    proxy.chat(ask("What is the capital of France?")).await;
    let response = proxy.chat(ask("Tell me the capital of France.")).await;
    assert!(cached(&response));
    assert_eq!(openai.received().len(), 1);
    proxy.stop().await;
}
