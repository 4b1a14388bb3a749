//! The ways past a hard cap an adversarial review found (issue 37), each
//! reproduced against the real server: whatever a provider bills, a
//! budgeted request reserves for it first, or is refused.

use crate::common::*;
use serde_json::{json, Value};

async fn metered() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

/// `n` has the provider write (and bill) that many answers, each up to
/// the output limit: the reservation and the lowered limit cover them all.
#[tokio::test(flavor = "multi_thread")]
async fn every_choice_n_asks_for_is_reserved_for() {
    let (fake, proxy) = metered().await;
    // $2 pays two answers of 1000 tokens ($0.001 each), not four.
    let session = proxy.session(2.0).await;
    let mut body = ask("metered", "four answers");
    body["n"] = json!(4);
    body["max_tokens"] = json!(1000);
    body["p402"] = json!({"session_id": session});
    let response = proxy.chat(body.clone()).await;
    assert_eq!(response.status(), 200);
    let sent = fake.received()[0].body.clone();
    assert_eq!(sent["n"], 4, "n goes upstream as asked");
    let limit = sent["max_completion_tokens"].as_u64().expect("a limit");
    assert!(
        4 * limit * 1_000_000 < 2_000_000_000,
        "four answers of {limit} tokens cost more than the session holds: {sent}"
    );
    assert!(limit >= 256, "{sent}");

    // Sixteen answers of even the smallest useful length do not fit: 402,
    // and nothing goes upstream.
    body["n"] = json!(16);
    let refused = proxy.chat(body).await;
    let error = expect_error(refused, 402, "SESSION_BUDGET_EXCEEDED").await;
    assert!(
        error["needed_usd"].as_f64().is_some_and(|n| n > 4.0),
        "{error}"
    );
    assert_eq!(fake.received().len(), 1);

    proxy.stop().await;
}

/// A Responses `response` as OpenAI returns a background job: queued, no
/// usage yet; or finished, with the usage it is billed for.
fn background_job(id: &str, status: &str, output_tokens: u64) -> Value {
    let usage = if status == "queued" {
        Value::Null
    } else {
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 10 + output_tokens})
    };
    json!({"id": id, "object": "response", "created_at": 1_796_000_000, "status": status,
        "background": true, "model": "metered", "error": null, "incomplete_details": null,
        "output": [], "usage": usage})
}

fn background_request() -> Value {
    json!({"model": "metered", "input": "write a long essay", "background": true})
}

/// Under a budget a background job is refused, saying why: it runs after
/// p402 has answered, with no usage to hold the cap by.
#[tokio::test(flavor = "multi_thread")]
async fn a_budget_refuses_background_jobs() {
    let (fake, proxy) = metered().await;
    let session = proxy.session(0.05).await;
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/responses")))
        .json(&background_request())
        .send()
        .await
        .expect("sent");
    let error = expect_error(response, 400, "background_under_budget").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("background")),
        "{error}"
    );
    assert!(fake.received().is_empty());
    proxy.stop().await;
}

/// Without a budget a background job goes upstream once (its queued
/// answer is no failure to fail over from), and it is charged when its
/// result is fetched through p402, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_background_job_runs_once_and_is_charged_when_fetched() {
    let (fake, proxy) = metered().await;
    fake.push(Reply::Json(200, background_job("resp_bg1", "queued", 0)));
    let response = proxy
        .client
        .post(proxy.url("/v1/responses"))
        .json(&background_request())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let queued: Value = response.json().await.expect("json");
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(fake.received().len(), 1, "one job, never failed over");

    // The finished job, fetched twice: 10 input tokens ($0.00001) and 4000
    // output tokens ($4) on `metered`, charged the first time only.
    for _ in 0..2 {
        fake.push(Reply::Json(
            200,
            background_job("resp_bg1", "completed", 4000),
        ));
    }
    let mut costs = Vec::new();
    for _ in 0..2 {
        let fetched = proxy
            .client
            .get(proxy.url("/v1/responses/resp_bg1"))
            .send()
            .await
            .expect("sent");
        assert_eq!(fetched.status(), 200);
        let id = request_id(&fetched);
        let body: Value = fetched.json().await.expect("json");
        assert_eq!(body["status"], "completed");
        let entry = proxy.ledger_entry(&id).await.expect("ledgered");
        costs.push(entry["cost_nanos"].as_i64().expect("cost"));
        if costs.len() == 1 {
            assert_eq!(entry["model"], "metered", "{entry}");
            assert_eq!(entry["output_tokens"], 4000, "{entry}");
        }
    }
    assert_eq!(costs, vec![4_000_010_000, 0]);
    let report = proxy.get_json("/api/v2/report").await;
    assert!(
        report.to_string().contains("4.00001"),
        "the report shows the job's cost: {report}"
    );
    proxy.stop().await;
}

/// A job's result fetched as a stream (`?stream=true`) is charged from
/// the stream's final event, once, like a whole fetch.
#[tokio::test(flavor = "multi_thread")]
async fn a_background_job_fetched_as_a_stream_is_charged_once() {
    let (fake, proxy) = metered().await;
    let events = |done: &Value| {
        vec![
            json!({"type": "response.created", "sequence_number": 0,
                "response": background_job("resp_bg2", "in_progress", 0)})
            .to_string(),
            json!({"type": "response.output_text.delta", "sequence_number": 1,
                "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "essay"})
            .to_string(),
            json!({"type": "response.completed", "sequence_number": 2, "response": done})
                .to_string(),
        ]
    };
    let done = background_job("resp_bg2", "completed", 2000);
    let mut costs = Vec::new();
    for _ in 0..2 {
        fake.push(Reply::Sse {
            events: events(&done),
            gate: None,
        });
        let fetched = proxy
            .client
            .get(proxy.url("/v1/responses/resp_bg2?stream=true"))
            .send()
            .await
            .expect("sent");
        assert_eq!(fetched.status(), 200);
        let id = request_id(&fetched);
        let body = fetched.text().await.expect("stream");
        assert!(body.contains("response.completed"), "{body}");
        let charged = eventually(std::time::Duration::from_secs(10), || async {
            proxy.ledger_entry(&id).await.is_some()
        })
        .await;
        assert!(charged, "the fetch is ledgered");
        let entry = proxy.ledger_entry(&id).await.expect("ledgered");
        costs.push(entry["cost_nanos"].as_i64().expect("cost"));
    }
    // 10 input tokens and 2000 output tokens on `metered`, the first time.
    assert_eq!(costs, vec![2_000_010_000, 0]);
    proxy.stop().await;
}

/// Input the provider reads from its own storage (an uploaded file, a
/// stored response) cannot be counted, but cannot pass the model's
/// context window either: a budget reserves that much input.
#[tokio::test(flavor = "multi_thread")]
async fn input_p402_cannot_count_is_reserved_as_the_whole_context() {
    let (fake, proxy) = metered().await;
    // `metered`: a context of 100,000 tokens at $1/M is $0.1 of input.
    let session = proxy.session(0.5).await;
    let mut body = json!({"model": "metered", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarise this"},
        {"type": "file", "file": {"file_id": "file-abc"}}]}]});
    body["p402"] = json!({"session_id": session});
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    let sent = fake.received()[0].body.clone();
    let limit = sent["max_completion_tokens"].as_u64().expect("a limit");
    // $0.1 of input leaves $0.4: 400 output tokens at most, not ~500.
    assert!(limit <= 400, "{sent}");

    // A stored conversation, through the Responses door.
    let mut answer = background_job("resp_2", "completed", 5);
    answer["background"] = json!(false);
    fake.push(Reply::Json(200, answer));
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/responses")))
        .json(&json!({"model": "metered", "input": "and then?", "previous_response_id": "resp_1"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let sent = fake.received()[1].body.clone();
    let limit = sent["max_output_tokens"].as_u64().expect("a limit");
    assert!(limit <= 400, "{sent}");
    proxy.stop().await;
}

/// A dated snapshot goes upstream as named and is charged at its own
/// price (`gpt-4o-2024-05-13` is $5/$15, not gpt-4o's $2.50/$10); one the
/// catalog does not list is charged as the dearest of its family.
#[tokio::test(flavor = "multi_thread")]
async fn dated_snapshots_are_charged_at_their_own_or_their_familys_highest_price() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    // The fake reports 12 prompt and 3 completion tokens.
    for (model, nanos) in [
        ("gpt-4o", 12 * 2_500 + 3 * 10_000),
        ("gpt-4o-2024-05-13", 12 * 5_000 + 3 * 15_000),
        ("gpt-4o-2024-11-20", 12 * 5_000 + 3 * 15_000),
    ] {
        let answer = proxy.chat_json(ask(model, "hello")).await;
        let sent = fake.received().last().expect("sent").body.clone();
        assert_eq!(sent["model"], model, "goes upstream as named");
        let id = answer["p402_metadata"]["request_id"]
            .as_str()
            .expect("request id")
            .to_string();
        let entry = proxy.ledger_entry(&id).await.expect("ledgered");
        assert_eq!(entry["cost_nanos"], nanos, "{model}: {entry}");
    }
    proxy.stop().await;
}

/// Reasoning streamed as text (`reasoning_content`) is billed as output:
/// a stream that ends before its usage is estimated with it, not as the
/// few tokens of the answer alone.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_reasoning_is_counted_when_the_usage_never_comes() {
    let (fake, proxy) = metered().await;
    let thought = "step by step, the careful model considers every option in turn ";
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "metered", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for _ in 0..20 {
        events.push(chunk(json!({"reasoning_content": thought}), Value::Null));
    }
    events.push(chunk(json!({"content": "Yes."}), Value::Null));
    events.push(chunk(json!({}), json!("stop")));
    events.push("[DONE]".to_string());
    fake.push(Reply::Sse { events, gate: None });
    let mut body = ask("metered", "think first");
    body["stream"] = json!(true);
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let _ = response.text().await.expect("stream");
    let entry = proxy.ledger_entry(&id).await.expect("ledgered");
    assert_eq!(entry["estimated"], true, "{entry}");
    // 20 pieces of 11 words each: well over 200 tokens of thought.
    assert!(
        entry["output_tokens"].as_u64().is_some_and(|n| n > 200),
        "{entry}"
    );
    proxy.stop().await;
}

/// A model that bills $0.01 for each web search its provider runs.
const SEARCHERS: &str = r#"
[[models]]
id = "searcher"
provider = "openai"
input_per_mtok = 1.0
output_per_mtok = 10.0
web_search_per_call = 0.01
context = 100000
max_output = 1000
capabilities = ["tools", "streaming"]
quality = 50

[[models]]
id = "claude-searcher"
provider = "anthropic"
input_per_mtok = 1.0
output_per_mtok = 10.0
web_search_per_call = 0.01
context = 100000
max_output = 1000
capabilities = ["tools", "streaming"]
quality = 50
"#;

/// A finished Responses answer that ran `searches` web searches.
fn searched(searches: usize) -> Value {
    let mut output: Vec<Value> = (0..searches)
        .map(|i| {
            json!({"type": "web_search_call", "id": format!("ws_{i}"), "status": "completed",
            "action": {"type": "search", "query": "p402 news"}})
        })
        .collect();
    output.push(
        json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": "Here is the news.", "annotations": []}]}),
    );
    json!({"id": "resp_ws", "object": "response", "created_at": 1_796_000_000, "status": "completed",
        "model": "searcher", "error": null, "incomplete_details": null, "output": output,
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}})
}

/// Web searches are billed per call on top of the tokens: a budget
/// reserves for as many as may run and sends that limit with the request
/// (so no more can run), and each search that ran is charged, on the
/// Responses door (OpenAI's `web_search_call` items) and the Messages door
/// (Anthropic's `server_tool_use.web_search_requests`).
#[tokio::test(flavor = "multi_thread")]
async fn web_searches_are_reserved_capped_and_charged_per_call() {
    let openai = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup {
            extra: SEARCHERS.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &openai)
        .with_provider("anthropic", &anthropic),
    )
    .await;
    let tokens = 10 * 1_000 + 5 * 10_000;
    let search = 10_000_000;

    // Responses, budgeted, no limit of the client's: five searches are
    // reserved and `max_tool_calls` says so upstream; two ran.
    let session = proxy.session(1.0).await;
    openai.push(Reply::Json(200, searched(2)));
    let asked =
        json!({"model": "searcher", "input": "what is new?", "tools": [{"type": "web_search"}]});
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/responses")))
        .json(&asked)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let sent = openai.received()[0].body.clone();
    assert_eq!(sent["max_tool_calls"], 5, "{sent}");
    let entry = proxy.ledger_entry(&id).await.expect("ledgered");
    assert_eq!(entry["cost_nanos"], tokens + 2 * search, "{entry}");

    // A session that cannot pay for the searches that may run is refused
    // before anything goes upstream: a lowered output limit does not make
    // room for them.
    let poor = proxy.session(0.04).await;
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{poor}/v1/responses")))
        .json(&asked)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 402);
    assert_eq!(openai.received().len(), 1);
    // The client's own limit is what is reserved: one search fits.
    openai.push(Reply::Json(200, searched(1)));
    let mut one = asked.clone();
    one["max_tool_calls"] = json!(1);
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{poor}/v1/responses")))
        .json(&one)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(openai.received()[1].body["max_tool_calls"], 1);

    // Without a budget nothing is added to the request, and the searches
    // are still charged.
    openai.push(Reply::Json(200, searched(3)));
    let response = proxy
        .client
        .post(proxy.url("/v1/responses"))
        .json(&asked)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    assert!(openai.received()[2].body.get("max_tool_calls").is_none());
    let entry = proxy.ledger_entry(&id).await.expect("ledgered");
    assert_eq!(entry["cost_nanos"], tokens + 3 * search, "{entry}");

    // Messages to Claude: each search tool gets `max_uses` under a budget,
    // and the searches Anthropic reports are charged.
    anthropic.push(Reply::Json(
        200,
        json!({"id": "msg_ws", "type": "message", "role": "assistant", "model": "claude-searcher",
            "content": [{"type": "text", "text": "Here is the news."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5,
                "server_tool_use": {"web_search_requests": 4}}}),
    ));
    let response = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/messages")))
        .json(&json!({"model": "claude-searcher", "max_tokens": 100,
            "messages": [{"role": "user", "content": "what is new?"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let sent = anthropic.received()[0].body.clone();
    assert_eq!(sent["tools"][0]["max_uses"], 5, "{sent}");
    let entry = proxy.ledger_entry(&id).await.expect("ledgered");
    assert_eq!(entry["cost_nanos"], tokens + 4 * search, "{entry}");
    proxy.stop().await;
}
