//! The Responses door (`/v1/responses`), spoken as Codex CLI and the Agents
//! SDK speak it, against loopback providers that speak each API exactly:
//! forwarded as it came to OpenAI (stored state, reasoning, built-in tools
//! untouched), translated for another provider when nothing is lost,
//! charged either way, with `p402_metadata` in the response object.

use crate::common::*;
use serde_json::{json, Value};

async fn setup() -> (FakeProvider, FakeProvider, TestProxy) {
    let openai = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup::default()
            .with_provider("openai", &openai)
            .with_provider("anthropic", &anthropic),
    )
    .await;
    (openai, anthropic, proxy)
}

/// A `response` exactly as OpenAI returns one.
fn openai_response(model: &str) -> Value {
    json!({
        "id": "resp_01", "object": "response", "created_at": 1_796_000_000, "status": "completed",
        "model": model, "error": null, "incomplete_details": null,
        "output": [
            {"type": "reasoning", "id": "rs_01", "summary": [], "encrypted_content": "gAAAAB-opaque"},
            {"type": "message", "id": "msg_01", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hello from Responses", "annotations": []}]}
        ],
        "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 28}
    })
}

/// A Responses stream as OpenAI sends it, one `event:`/`data:` block each.
fn openai_response_stream(model: &str) -> Vec<String> {
    let block = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or_default()
        )
    };
    let shell = json!({"id": "resp_02", "object": "response", "created_at": 1_796_000_000,
        "status": "in_progress", "model": model, "output": []});
    let mut done = openai_response(model);
    done["id"] = json!("resp_02");
    vec![
        block(json!({"type": "response.created", "sequence_number": 0, "response": shell})),
        block(
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": "message", "id": "msg_02", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        block(
            json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_02",
            "output_index": 0, "content_index": 0, "delta": "Hello from "}),
        ),
        block(
            json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_02",
            "output_index": 0, "content_index": 0, "delta": "Responses"}),
        ),
        block(
            json!({"type": "response.output_item.done", "sequence_number": 4, "output_index": 0,
            "item": done["output"][1]}),
        ),
        block(json!({"type": "response.completed", "sequence_number": 5, "response": done})),
    ]
}

/// What Codex sends: stateless, but with reasoning kept encrypted and a
/// built-in tool.
fn codex_like(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "instructions": "You are a coding agent.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]}],
        "tools": [{"type": "web_search"}, {"type": "function", "name": "exec_command",
            "description": "Run a command", "parameters": {"type": "object", "properties": {}}, "strict": false}],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "store": false,
        "stream": stream,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1"
    })
}

async fn post(proxy: &TestProxy, body: &Value) -> reqwest::Response {
    proxy
        .client
        .post(proxy.url("/v1/responses"))
        .header("openai-beta", "responses=v1")
        .json(body)
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_responses_request_goes_to_openai_as_it_came_and_is_charged() {
    let (openai, anthropic, proxy) = setup().await;
    openai.push(Reply::Json(200, openai_response("gpt-4o-mini")));
    let body = codex_like(false);
    let response = post(&proxy, &body).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let mut answer: Value = response.json().await.expect("json");
    let figures = answer
        .as_object_mut()
        .and_then(|o| o.remove("p402_metadata"))
        .expect("p402_metadata in the response object");
    // Otherwise the response as OpenAI sent it, reasoning included.
    assert_eq!(answer, openai_response("gpt-4o-mini"));
    assert_eq!(figures["request_id"], id.as_str());
    assert_eq!(figures["input_tokens"], 20);
    assert_eq!(figures["output_tokens"], 8);

    let sent = openai.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/responses");
    assert_eq!(sent[0].body, body);
    assert_eq!(
        sent[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert_eq!(
        sent[0]
            .headers
            .get("openai-beta")
            .and_then(|v| v.to_str().ok()),
        Some("responses=v1")
    );
    assert!(anthropic.received().is_empty());
    let entry = proxy.ledger_entry(&id).await.expect("entry");
    assert_eq!(entry["input_tokens"], 20);
    assert_eq!(entry["output_tokens"], 8);
    assert!(
        entry["cost_nanos"].as_i64().is_some_and(|c| c > 0),
        "{entry}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_responses_request_is_relayed_with_the_figures_in_its_last_event() {
    let (openai, _anthropic, proxy) = setup().await;
    let session = proxy.session(5.0).await;
    openai.push(Reply::RawSse(openai_response_stream("gpt-4o-mini")));
    let mut body = codex_like(true);
    body["p402"] = json!({"session_id": session});
    let response = post(&proxy, &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let upstream = openai_response_stream("gpt-4o-mini");
    // Every event but the last as OpenAI sent it.
    let head: String = upstream[..upstream.len() - 1].concat();
    assert!(text.starts_with(&head), "{text}");
    let last = text[head.len()..].trim();
    let data: Value = serde_json::from_str(
        last.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line"),
    )
    .expect("json");
    assert_eq!(data["type"], "response.completed");
    assert_eq!(
        data["response"]["output"][1]["content"][0]["text"],
        "Hello from Responses"
    );
    assert_eq!(data["response"]["p402_metadata"]["output_tokens"], 8);
    // Budgeted: the reserved limit went out under Responses' own name.
    let sent = openai.received();
    assert!(
        sent[0].body["max_output_tokens"].as_u64().is_some(),
        "{:?}",
        sent[0].body
    );
    assert!(sent[0].body.get("p402").is_none());
    let view = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(view["requests"], 1, "{view}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_responses_request_is_translated_for_claude() {
    let (openai, anthropic, proxy) = setup().await;
    let body = json!({
        "model": "claude-haiku-4-5",
        "instructions": "Be brief.",
        "input": "Say hello",
        "max_output_tokens": 100,
    });
    let response = post(&proxy, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(answer["output"][0]["content"][0]["text"], "Hello there!");
    assert_eq!(answer["usage"]["input_tokens"], 12);
    assert_eq!(answer["p402_metadata"]["provider"], "anthropic");
    let sent = anthropic.received();
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].body["system"], "Be brief.");
    assert_eq!(sent[0].body["max_tokens"], 100);
    assert!(openai.received().is_empty());

    // Streamed: Responses events built from the translation.
    let mut body = body;
    body["stream"] = json!(true);
    let text = post(&proxy, &body).await.text().await.expect("body");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ],
        "{text}"
    );
    let completed: Value = serde_json::from_str(
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data"),
    )
    .expect("json");
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        "Hello there!"
    );
    assert!(completed["response"]["p402_metadata"].is_object());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_state_is_never_sent_to_another_api() {
    let (openai, anthropic, proxy) = setup().await;
    let body = json!({"model": "claude-haiku-4-5", "input": "and then?",
        "previous_response_id": "resp_earlier"});
    let response = post(&proxy, &body).await;
    // A request to change, not a failure to retry: 400, naming the field
    // and the model, never a 503 the SDKs would retry.
    assert_eq!(response.status(), 400);
    assert_eq!(should_retry(&response), Some("false"));
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "untranslatable_request", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`previous_response_id`") && message.contains("`claude-haiku-4-5`"),
        "{message}"
    );
    assert!(openai.received().is_empty());
    assert!(anthropic.received().is_empty());
    proxy.stop().await;
}

/// What the OpenAI Agents SDK and Codex always send (`include`, `store`,
/// `reasoning`, `client_metadata`, a namespace of tools, web search) does
/// not keep a request from Claude: the namespace's tools go by flat names
/// and come back named as the client knows them, and the web search
/// becomes Anthropic's own web search tool. A provider with no web search
/// answers without it, and the answer says so.
#[tokio::test(flavor = "multi_thread")]
async fn agents_fields_translate_and_namespaced_calls_come_back_named() {
    let (openai, anthropic, proxy) = setup().await;
    let groq = FakeProvider::start().await;
    let groq_proxy = TestProxy::start(Setup::default().with_provider("groq", &groq)).await;
    anthropic.push(Reply::Json(
        200,
        json!({"id": "msg_01NS", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "stop_reason": "tool_use", "stop_sequence": null,
            "content": [{"type": "tool_use", "id": "toolu_NS", "name": "agents__spawn",
                "input": {"task": "look"}}],
            "usage": {"input_tokens": 30, "output_tokens": 9}}),
    ));
    let mut body = json!({
        "model": "claude-haiku-4-5", "input": "Spawn a helper", "max_output_tokens": 100,
        "include": [], "store": true, "reasoning": {"effort": "low", "summary": "auto"},
        "client_metadata": {"x-codex-turn-metadata": "{}"}, "prompt_cache_key": "k1",
        "tools": [
            {"type": "namespace", "name": "agents", "description": "Sub-agents", "tools": [
                {"type": "function", "name": "spawn", "description": "Spawn one",
                 "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]},
            {"type": "web_search", "external_web_access": false},
        ],
    });
    let response = post(&proxy, &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-p402-dropped").is_none());
    let answer: Value = response.json().await.expect("json");
    let call = &answer["output"][0];
    assert_eq!(call["type"], "function_call", "{answer}");
    assert_eq!(call["name"], "spawn", "{answer}");
    assert_eq!(call["namespace"], "agents", "{answer}");
    assert_eq!(answer["model"], "claude-haiku-4-5");
    assert!(
        answer["id"].as_str().is_some_and(|id| id == "resp_01NS"),
        "{answer}"
    );
    let sent = &anthropic.received()[0].body;
    assert_eq!(sent["tools"][0]["name"], "agents__spawn", "{sent}");
    assert_eq!(sent["tools"][1]["type"], "web_search_20250305", "{sent}");
    assert!(openai.received().is_empty());

    // On a provider of Chat Completions alone: the web search is left out.
    body["model"] = json!("openai/gpt-oss-20b");
    let response = post(&groq_proxy, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-p402-dropped")
            .and_then(|v| v.to_str().ok()),
        Some("web_search")
    );
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["p402_metadata"]["dropped"], json!(["web_search"]));
    let sent = &groq.received()[0].body;
    assert!(sent.get("p402_web_search").is_none(), "{sent}");
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(1), "{sent}");
    groq_proxy.stop().await;
    proxy.stop().await;
}

/// A function call streamed from Claude comes out as Responses' own
/// function-call events, its arguments in pieces, then whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_translated_function_call_streams_as_responses_events() {
    let (_openai, anthropic, proxy) = setup().await;
    let body = json!({
        "model": "claude-haiku-4-5",
        "input": "Weather in Paris?",
        "max_output_tokens": 100,
        "stream": true,
        "tools": [{"type": "function", "name": "get_weather", "description": "The weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    });
    let text = post(&proxy, &body).await.text().await.expect("body");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert!(
        names.contains(&"response.function_call_arguments.delta"),
        "{text}"
    );
    assert!(
        names.contains(&"response.function_call_arguments.done"),
        "{text}"
    );
    let completed: Value = serde_json::from_str(
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data"),
    )
    .expect("json");
    let call = &completed["response"]["output"][0];
    assert_eq!(call["type"], "function_call", "{completed}");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["call_id"], "toolu_01S");
    let arguments: Value =
        serde_json::from_str(call["arguments"].as_str().expect("arguments")).expect("json");
    assert_eq!(arguments, json!({"city": "Paris"}));
    let sent = anthropic.received();
    assert_eq!(sent[0].body["tools"][0]["name"], "get_weather");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_effort_becomes_claudes_thinking_budget() {
    let (_openai, anthropic, proxy) = setup().await;
    let mut thought = anthropic_message("claude-haiku-4-5", false);
    thought["content"] = json!([
        {"type": "thinking", "thinking": "A greeting is wanted.", "signature": "sig-opaque"},
        {"type": "text", "text": "Hello there!"}
    ]);
    anthropic.push(Reply::Json(200, thought));
    let body = json!({
        "model": "claude-haiku-4-5",
        "input": "Say hello",
        "max_output_tokens": 4000,
        "temperature": 0.2,
        "reasoning": {"effort": "medium"},
    });
    let response = post(&proxy, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    // The thinking stays with Anthropic; the answer is the text.
    assert_eq!(
        answer["output"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["output"][0]["content"][0]["text"], "Hello there!");
    let sent = anthropic.received();
    assert_eq!(
        sent[0].body["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(sent[0].body["max_tokens"], 4000);
    assert!(
        sent[0].body.get("temperature").is_none(),
        "{}",
        sent[0].body
    );

    // A limit too small to think within leaves thinking out.
    let mut small = body.clone();
    small["max_output_tokens"] = json!(500);
    assert_eq!(post(&proxy, &small).await.status(), 200);
    let sent = anthropic.received();
    assert!(sent[1].body.get("thinking").is_none(), "{}", sent[1].body);
    assert_eq!(sent[1].body["temperature"], 0.2);
    proxy.stop().await;
}

/// A Claude answer's signed thinking goes back to a `store: false` client
/// inside a reasoning item's `encrypted_content`, and comes back to Claude
/// in place, signature and all, on the next turn of the tool loop (so
/// thinking stays on after a tool call).
#[tokio::test(flavor = "multi_thread")]
async fn claudes_signed_thinking_survives_a_store_false_tool_loop() {
    let (_openai, anthropic, proxy) = setup().await;
    let thinking = json!({"type": "thinking", "thinking": "The user wants the date.",
        "signature": "EqQBCkYIBxgCKkD-signed"});
    anthropic.push(Reply::Json(
        200,
        json!({"id": "msg_01TH", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5", "stop_reason": "tool_use", "stop_sequence": null,
            "content": [thinking, {"type": "tool_use", "id": "toolu_TH", "name": "shell",
                "input": {"cmd": "date"}}],
            "usage": {"input_tokens": 40, "output_tokens": 30}}),
    ));
    let tools = json!([{"type": "function", "name": "shell", "description": "Run",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]);
    let first = json!({"model": "claude-haiku-4-5", "input": "What day is it?",
        "max_output_tokens": 8000, "store": false, "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "medium"}, "tools": tools});
    let answer: Value = post(&proxy, &first).await.json().await.expect("json");
    let reasoning = answer["output"][0].clone();
    assert_eq!(reasoning["type"], "reasoning", "{answer}");
    assert!(
        reasoning["encrypted_content"]
            .as_str()
            .is_some_and(|c| c.contains("EqQBCkYIBxgCKkD-signed")),
        "{answer}"
    );
    let call = answer["output"][1].clone();
    assert_eq!(call["type"], "function_call", "{answer}");
    // Thinking is p402's to carry: never a field of the answer itself.
    assert!(!answer.to_string().contains("p402_thinking"), "{answer}");

    let second = json!({"model": "claude-haiku-4-5", "max_output_tokens": 8000,
    "store": false, "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "medium"}, "tools": tools,
    "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What day is it?"}]},
        reasoning,
        call,
        {"type": "function_call_output", "call_id": "toolu_TH", "output": "Sunday"},
    ]});
    let response = post(&proxy, &second).await;
    assert_eq!(response.status(), 200);
    let sent = anthropic.received();
    assert_eq!(sent.len(), 2);
    let turn = &sent[1].body["messages"][1];
    assert_eq!(turn["role"], "assistant", "{}", sent[1].body);
    assert_eq!(turn["content"][0], thinking, "{}", sent[1].body);
    assert_eq!(turn["content"][1]["type"], "tool_use", "{}", sent[1].body);
    assert_eq!(
        sent[1].body["thinking"]["type"], "enabled",
        "{}",
        sent[1].body
    );
    proxy.stop().await;
}

/// Streamed, the signed thinking arrives as a reasoning item of its own,
/// whole, before the answer's other items, and is in the final response.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_thinking_becomes_a_reasoning_item() {
    let (_openai, anthropic, proxy) = setup().await;
    let block = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    anthropic.push(Reply::RawSse(vec![
        block(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01ST", "type": "message",
            "role": "assistant", "model": "claude-haiku-4-5", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 40, "output_tokens": 1}}}),
        ),
        block(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        block(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Short answer."}}),
        ),
        block(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQB-streamed"}}),
        ),
        block(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        block(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "text", "text": ""}}),
        ),
        block(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "Sunday."}}),
        ),
        block(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        block(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
            "stop_sequence": null}, "usage": {"output_tokens": 12}}),
        ),
        block("message_stop", json!({"type": "message_stop"})),
    ]));
    let body = json!({"model": "claude-haiku-4-5", "input": "What day is it?", "stream": true,
        "max_output_tokens": 8000, "store": false, "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "medium"}});
    let text = post(&proxy, &body).await.text().await.expect("body");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect();
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(added[0]["type"], "reasoning", "{text}");
    assert!(
        added[0]["encrypted_content"]
            .as_str()
            .is_some_and(|c| c.contains("EqQB-streamed") && c.contains("Short answer.")),
        "{text}"
    );
    assert_eq!(added[1]["type"], "message", "{text}");
    let completed = events
        .iter()
        .find(|e| e["type"] == "response.completed")
        .expect("completed");
    assert_eq!(completed["response"]["output"][0]["type"], "reasoning");
    assert_eq!(
        completed["response"]["output"][1]["content"][0]["text"],
        "Sunday."
    );
    assert!(!text.contains("p402_thinking"), "{text}");
    proxy.stop().await;
}
