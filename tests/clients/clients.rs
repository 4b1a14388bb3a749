//! Real clients against p402, each configured through OPENAI_BASE_URL (or
//! ANTHROPIC_BASE_URL) alone, or the base URL for curl: the official `openai`
//! SDKs for Python and Node, the official `anthropic` SDK for Python,
//! LangChain's `ChatOpenAI`, and curl following the README's quickstart. Each script prints what it saw; the assertions are here.
//!
//! `.ci/run` installs the pinned Python packages into `target/sdk-venv` and
//! the npm package into `target/sdk-node`. `P402_TEST_PYTHON` (an interpreter
//! with `openai` and `langchain-openai`) and `P402_TEST_NODE_MODULES` (a
//! `node_modules` with `openai`) point elsewhere.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

/// `gpt-4o-mini` at catalog prices for the fake's usage (12 prompt tokens at
/// $0.15/M, 3 completion tokens at $0.60/M), in nano-dollars.
const ANSWER_NANOS: i64 = 3_600;
const ANSWER_USD: f64 = 0.000_003_6;

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("P402_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo_path("target/sdk-venv/bin/python");
    assert!(
        venv.exists(),
        "the Python clients (openai, langchain-openai) are not installed: run `bash .ci/run` once"
    );
    venv
}

fn node_modules() -> PathBuf {
    let dir = std::env::var_os("P402_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target/sdk-node/node_modules"));
    assert!(
        dir.join("openai/package.json").exists(),
        "the openai npm package is not installed in {}: run `bash .ci/run` once",
        dir.display()
    );
    dir
}

/// Runs one of `tests/sdk/*` (Python, Node or bash, by its extension)
/// against `proxy`, with `env` added, and returns what it printed.
async fn run_client(name: &str, proxy: &TestProxy, env: &[(&str, String)]) -> String {
    let script = repo_path("tests/sdk").join(name);
    let mut command = match script.extension().and_then(|e| e.to_str()) {
        Some("py") => Command::new(python()),
        Some("cjs") => {
            let mut node = Command::new("node");
            node.env("NODE_PATH", node_modules());
            node
        }
        Some("sh") => Command::new("bash"),
        other => panic!("no client runs {other:?} scripts"),
    };
    command
        .arg(&script)
        .env("OPENAI_BASE_URL", proxy.url("/v1"))
        .env("OPENAI_API_KEY", "sk-client-side-anything")
        .env("OPENAI_MAX_RETRIES", "0")
        .env("P402_URL", proxy.url(""))
        .env("ANTHROPIC_BASE_URL", proxy.url(""))
        .env("ANTHROPIC_API_KEY", "sk-ant-client-side-anything")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        // LangChain prefers OPENAI_API_BASE to OPENAI_BASE_URL, and traces
        // to LangSmith when asked to: neither may leak in from the caller.
        .env_remove("OPENAI_API_BASE")
        .env_remove("LANGSMITH_TRACING")
        .env_remove("LANGCHAIN_TRACING_V2");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("cannot start the client for {name}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing = ["ModuleNotFoundError", "Cannot find module"]
        .iter()
        .any(|sign| stderr.contains(sign));
    assert!(
        output.status.success(),
        "{name} failed{}:\n{}{stderr}",
        if missing {
            " (a client library is missing: run `bash .ci/run` once)"
        } else {
            ""
        },
        String::from_utf8_lossy(&output.stdout),
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs a client script that prints one JSON object.
async fn run_script(name: &str, proxy: &TestProxy, env: &[(&str, String)]) -> Value {
    let out = run_client(name, proxy, env).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name} prints JSON ({e}): {out}"))
}

fn assert_usd(value: &Value, expected: f64) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("not a USD amount: {value}"));
    assert!((got - expected).abs() < 1e-12, "{got} USD, not {expected}");
}

/// A USD figure sent as text, as in the `x-p402-cost-usd` header.
fn assert_usd_text(value: &Value, expected: f64) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a header value: {value}"));
    let usd: f64 = text
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a USD figure: {e}"));
    assert_usd(&json!(usd), expected);
}

/// What OpenAI answers when the model calls a tool.
fn tool_call_completion() -> Value {
    json!({
        "id": "chatcmpl-tool1", "object": "chat.completion", "created": 1_764_000_000,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_test", "service_tier": "default",
        "choices": [{
            "index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{"id": "call_w1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
        }],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
    })
}

/// The same tool call streamed as OpenAI streams it: the call's name first,
/// its arguments in pieces, then the finish and the usage chunk.
fn tool_call_stream() -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-tool2", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "gpt-4o-mini", "usage": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_w2",
            "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        Value::Null,
    )];
    for piece in ["{\"ci", "ty\": \"Pa", "ris\"}"] {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    events.push(
        json!({"id": "chatcmpl-tool2", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "gpt-4o-mini", "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}})
        .to_string(),
    );
    events.push("[DONE]".into());
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_chat_stream_and_extra_body() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let seen = run_script("openai_python.py", &proxy, &[]).await;

    assert_eq!(seen["plain"]["content"], "Hello there!");
    assert_eq!(seen["plain"]["finish_reason"], "stop");
    assert_eq!(seen["plain"]["total_tokens"], 15);
    assert_eq!(seen["plain"]["metadata"]["provider"], "openai");
    assert_eq!(seen["plain"]["metadata"]["mode"], "cost");
    assert_eq!(seen["headers"]["x-p402-provider"], "openai");
    assert_eq!(seen["headers"]["x-p402-cached"], "false");

    assert_eq!(seen["stream"]["content"], "Hello there!");
    assert_eq!(seen["stream"]["finish_reasons"], json!(["stop"]));
    assert_eq!(
        seen["stream"]["usage_chunks"], 0,
        "no usage for a client that did not ask"
    );
    assert_eq!(seen["stream"]["metadata"]["output_tokens"], 3);

    assert_eq!(seen["stream_usage"]["usage_chunks"], 1);
    assert_eq!(seen["stream_usage"]["total_tokens"], 15);
    assert!(seen["stream_usage"]["metadata"]["cost_usd"].is_f64());

    assert_eq!(seen["bad_mode"]["class"], "BadRequestError");
    assert_eq!(seen["bad_mode"]["status"], 400);

    // The SDK's extra_body reached p402 and went no further.
    let received = fake.received();
    assert_eq!(
        received.len(),
        4,
        "the bad-mode request never reached the provider"
    );
    assert!(received.iter().all(|r| r.body.get("p402").is_none()));
    assert!(received
        .iter()
        .all(|r| r.headers["authorization"] == format!("Bearer {PROVIDER_KEY}").as_str()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_against_claude_with_tools() {
    let fake = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup {
            extra: "[[models]]\nid = \"claude-test\"\nprovider = \"anthropic\"\ninput_per_mtok = 1\noutput_per_mtok = 5\ncontext = 200000\nmax_output = 8192\ncapabilities = [\"tools\", \"streaming\"]\nquality = 50\n".into(),
            ..Setup::default()
        }
        .with_provider("anthropic", &fake),
    )
    .await;
    let seen = run_script("openai_python_claude.py", &proxy, &[]).await;
    assert_eq!(seen["plain"]["content"], "Hello there!");
    assert_eq!(seen["plain"]["provider"], "anthropic");
    assert_eq!(seen["stream"], "Hello there!");
    assert_eq!(seen["tool"]["name"], "get_weather");
    assert_eq!(seen["tool"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(seen["tool"]["finish_reason"], "tool_calls");
    assert_eq!(seen["tool_stream"]["name"], "get_weather");
    assert_eq!(seen["tool_stream"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(seen["stream_usage_total"], 15);
    // The tool result went to Anthropic as a tool_result block.
    let second = &fake.received()[3].body;
    let blocks = second["messages"].to_string();
    assert!(
        blocks.contains("tool_result")
            && blocks.contains("toolu_01A")
            && blocks.contains("18C, sunny"),
        "{second}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_node_sdk_chat_stream_tools_and_p402_field() {
    let fake = FakeProvider::start().await;
    for _ in 0..4 {
        fake.push(Reply::Normal);
    }
    fake.push(Reply::Json(200, tool_call_completion()));
    fake.push(Reply::Sse {
        events: tool_call_stream(),
        gate: None,
    });
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let seen = run_script("openai_node.cjs", &proxy, &[]).await;

    let plain = &seen["plain"];
    assert_eq!(plain["content"], "Hello there!");
    assert_eq!(plain["finish_reason"], "stop");
    assert_eq!(plain["total_tokens"], 15);
    // The top-level p402 field reached p402: cost mode chose the model sent
    // upstream, and the savings are measured against the one asked for.
    let meta = &plain["metadata"];
    assert_eq!(meta["provider"], "openai");
    assert_eq!(meta["mode"], "cost");
    assert_eq!(meta["requested_model"], "gpt-4o-mini");
    let received = fake.received();
    assert_eq!(meta["model"], received[0].body["model"]);
    assert_usd(&meta["direct_cost"], ANSWER_USD);
    let cost = meta["cost_usd"].as_f64().expect("cost");
    assert!(cost > 0.0 && cost <= ANSWER_USD, "{meta}");
    assert_usd(&meta["savings"], ANSWER_USD - cost);
    // The answer's request id finds the same charge in the ledger.
    let request_id = meta["request_id"].as_str().expect("id");
    let entry = proxy
        .get_json(&format!("/api/v2/requests/{request_id}"))
        .await;
    assert_eq!(entry["direct_nanos"], ANSWER_NANOS);
    assert_usd(
        &json!(entry["cost_nanos"].as_i64().expect("nanos") as f64 / 1e9),
        cost,
    );
    assert_eq!(entry["estimated"], false);

    assert_eq!(seen["headers"]["x-p402-provider"], "openai");
    assert_eq!(seen["headers"]["x-p402-model"], "gpt-4o-mini");
    assert_eq!(seen["headers"]["x-p402-cached"], "false");
    assert!(seen["headers"]["x-p402-request-id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_")));

    let stream = &seen["stream"];
    assert_eq!(stream["content"], "Hello there!");
    assert_eq!(stream["finish_reasons"], json!(["stop"]));
    assert_eq!(
        stream["usage_chunks"], 0,
        "no usage for a client that did not ask"
    );
    assert_eq!(stream["metadata"]["mode"], "cost");
    assert_eq!(stream["metadata"]["input_tokens"], 12);
    assert_eq!(stream["metadata"]["output_tokens"], 3);
    assert_usd(&stream["metadata"]["cost_usd"], cost);

    let with_usage = &seen["stream_usage"];
    assert_eq!(with_usage["content"], "Hello there!");
    assert_eq!(with_usage["usage_chunks"], 1);
    assert_eq!(with_usage["total_tokens"], 15);
    assert_usd(&with_usage["metadata"]["cost_usd"], ANSWER_USD);

    assert_eq!(seen["tool"]["id"], "call_w1");
    assert_eq!(seen["tool"]["name"], "get_weather");
    assert_eq!(seen["tool"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(seen["tool"]["finish_reason"], "tool_calls");
    assert_eq!(seen["tool"]["provider"], "openai");
    assert_eq!(seen["tool_stream"]["name"], "get_weather");
    assert_eq!(seen["tool_stream"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(seen["tool_stream"]["finish_reason"], "tool_calls");

    assert_eq!(seen["bad_mode"]["class"], "BadRequestError");
    assert_eq!(seen["bad_mode"]["status"], 400);

    let received = fake.received();
    assert_eq!(
        received.len(),
        6,
        "the bad-mode request never reached the provider"
    );
    assert!(received.iter().all(|r| r.body.get("p402").is_none()));
    assert!(received[4].body["tools"].is_array());
    assert_eq!(
        received[2].body["stream_options"]["include_usage"], true,
        "p402 asks for usage the client did not"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn langchain_chat_openai_invoke_stream_and_tools() {
    let fake = FakeProvider::start().await;
    for _ in 0..3 {
        fake.push(Reply::Normal);
    }
    fake.push(Reply::Json(200, tool_call_completion()));
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let session = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .json(&json!({"budget_usd": 1, "name": "langchain"}))
        .send()
        .await
        .expect("create session")
        .json::<Value>()
        .await
        .expect("session JSON");
    let session_id = session["session_id"].as_str().expect("session id");
    let seen = run_script(
        "langchain_chat.py",
        &proxy,
        &[("P402_SESSION", session_id.to_string())],
    )
    .await;

    let usage = json!({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15});
    let invoke = &seen["invoke"];
    assert_eq!(invoke["content"], "Hello there!");
    assert_eq!(invoke["finish_reason"], "stop");
    assert_eq!(invoke["model_name"], "gpt-4o-mini");
    for key in ["input_tokens", "output_tokens", "total_tokens"] {
        assert_eq!(invoke["usage"][key], usage[key], "{invoke}");
    }
    // LangChain keeps only the fields it knows, so p402_metadata is gone;
    // the x-p402-* headers (include_response_headers) carry the figures.
    assert_eq!(invoke["headers"]["x-p402-provider"], "openai");
    assert_usd_text(&invoke["headers"]["x-p402-cost-usd"], ANSWER_USD);

    // LangChain does not ask for stream usage once a base URL is set...
    assert_eq!(seen["default_stream_usage"], Value::Null);
    let quiet = &seen["stream_default"];
    assert_eq!(quiet["content"], "Hello there!");
    assert_eq!(quiet["finish_reason"], "stop");
    assert_eq!(quiet["usage"], Value::Null, "{quiet}");
    // ...but p402 asked the provider, so the charge is exact, not estimated.
    assert_eq!(
        fake.received()[1].body["stream_options"]["include_usage"],
        true
    );
    let request_id = quiet["headers"]["x-p402-request-id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request id header: {quiet}"));
    let entry = proxy
        .get_json(&format!("/api/v2/requests/{request_id}"))
        .await;
    assert_eq!(entry["input_tokens"], 12);
    assert_eq!(entry["output_tokens"], 3);
    assert_eq!(entry["cost_nanos"], ANSWER_NANOS);
    assert_eq!(entry["estimated"], false);
    assert_eq!(entry["session"], session_id);

    // With stream_usage=True the usage comes through to LangChain.
    let counted = &seen["stream_usage"];
    assert_eq!(counted["content"], "Hello there!");
    for key in ["input_tokens", "output_tokens", "total_tokens"] {
        assert_eq!(counted["usage"][key], usage[key], "{counted}");
    }

    assert_eq!(
        seen["tool"]["calls"],
        json!([{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_w1"}])
    );
    assert_eq!(seen["tool"]["finish_reason"], "tool_calls");

    // extra_body's p402 object charged the invoke and the default stream to
    // the session, and was not forwarded.
    let spent = proxy
        .get_json(&format!("/api/v2/sessions/{session_id}"))
        .await;
    assert_usd(&spent["budget"]["used_usd"], 2.0 * ANSWER_USD);
    assert_eq!(spent["requests"], 2);
    let received = fake.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|r| r.body.get("p402").is_none()));
    proxy.stop().await;
}

/// Splits the quickstart script's output into its `### name` steps.
fn steps(out: &str) -> HashMap<String, String> {
    out.split("### ")
        .filter(|step| !step.is_empty())
        .map(|step| {
            let (name, body) = step.split_once('\n').unwrap_or((step, ""));
            (name.trim().to_string(), body.to_string())
        })
        .collect()
}

fn step_json(steps: &HashMap<String, String>, name: &str) -> Value {
    let body = steps.get(name).unwrap_or_else(|| panic!("no step {name}"));
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("step {name} ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_quickstart_step_by_step() {
    let fake = FakeProvider::start().await;
    // The cache without its embedding model: exact repeats only.
    let proxy = TestProxy::start(
        Setup {
            cache: "enabled = true\nmodel_dir = \"/dev/null/embedder\"\n".into(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let out = run_client("curl_quickstart.sh", &proxy, &[]).await;
    let steps = steps(&out);

    let health = step_json(&steps, "health");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["cache"], "exact-only", "{health}");

    let session = step_json(&steps, "session");
    assert_eq!(session["object"], "session");
    assert_eq!(session["name"], "quickstart");
    assert_eq!(session["status"], "active");
    assert_usd(&session["budget"]["remaining_usd"], 5.0);
    let id = session["session_id"].as_str().expect("session id");

    let chat = step_json(&steps, "chat");
    assert_eq!(chat["choices"][0]["message"]["content"], "Hello there!");
    let meta = &chat["p402_metadata"];
    assert_eq!(meta["provider"], "openai", "{chat}");
    assert_eq!(meta["model"], "gpt-4o-mini");
    assert_eq!(meta["cached"], false);
    assert_usd(&meta["cost_usd"], ANSWER_USD);
    assert_eq!(meta["session_id"], id);
    assert_usd(&meta["session_remaining_usd"], 5.0 - ANSWER_USD);

    let repeat = step_json(&steps, "repeat");
    assert_eq!(repeat["choices"][0]["message"]["content"], "Hello there!");
    let meta = &repeat["p402_metadata"];
    assert_eq!(meta["cached"], true, "{repeat}");
    assert_eq!(meta["provider"], "cache");
    assert_usd(&meta["cost_usd"], 0.0);
    assert_usd(&meta["savings"], ANSWER_USD);

    let headers: HashMap<String, String> = steps["headers"]
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    assert_eq!(headers["x-p402-provider"], "openai", "{headers:?}");
    assert_eq!(headers["x-p402-model"], "gpt-4o-mini");
    assert_eq!(headers["x-p402-cached"], "false");
    assert_usd_text(&json!(headers["x-p402-cost-usd"]), ANSWER_USD);
    assert!(headers["x-p402-request-id"].starts_with("req_"));

    let chunks = stream_chunks(&steps["stream"]);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there!");
    // No chunk without a choice (curl asked for no usage); the figures on
    // the last one, which finishes the choice.
    assert!(
        chunks.iter().all(|c| c["choices"][0].is_object()),
        "{chunks:?}"
    );
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["p402_metadata"]["output_tokens"], 3);

    // Two answers charged to the session (the body field and the header);
    // the cached repeat cost nothing and saved what the first one cost.
    let spent = step_json(&steps, "spent");
    assert_eq!(spent["requests"], 3, "{spent}");
    assert_usd(&spent["budget"]["used_usd"], 2.0 * ANSWER_USD);
    assert_usd(&spent["savings_usd"], ANSWER_USD);

    let models = step_json(&steps, "models");
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini"),
        "{models}"
    );
    assert_eq!(
        fake.received().len(),
        3,
        "the repeat never reached the provider"
    );
    proxy.stop().await;
}

/// The anthropic SDK through `/v1/messages`: its token count, a Claude
/// model answered by an Anthropic provider as it came (whole, streamed,
/// with tools), an OpenAI model translated both ways, and a cap refused in
/// Anthropic's shape.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_count_messages_stream_tools_and_errors() {
    let anthropic = FakeProvider::start_anthropic().await;
    let openai = FakeProvider::start().await;
    anthropic.push(Reply::Json(200, json!({"input_tokens": 42})));
    let proxy = TestProxy::start(
        Setup::default()
            .with_provider("anthropic", &anthropic)
            .with_provider("openai", &openai),
    )
    .await;
    let seen = run_script("anthropic_python.py", &proxy, &[]).await;
    assert_eq!(seen["count_tokens"], 42, "{seen}");
    assert_eq!(anthropic.received()[0].path, "/v1/messages/count_tokens");
    assert_eq!(seen["plain"]["text"], "Hello there!", "{seen}");
    assert_eq!(seen["plain"]["stop_reason"], "end_turn");
    assert_eq!(seen["plain"]["usage"]["input_tokens"], 12);
    assert_eq!(seen["plain"]["headers"]["x-p402-provider"], "anthropic");
    assert!(
        seen["plain"]["headers"]["x-p402-cost-usd"].is_string(),
        "{seen}"
    );
    assert_eq!(seen["stream"]["text"], "Hello there!", "{seen}");
    assert_eq!(seen["stream"]["stop_reason"], "end_turn");
    assert_eq!(seen["stream"]["output_tokens"], 3);
    assert_eq!(seen["tools"]["stop_reason"], "tool_use", "{seen}");
    assert_eq!(seen["tools"]["tool"], "get_weather");
    assert_eq!(seen["tools"]["input"], json!({"city": "Paris"}));
    assert_eq!(seen["translated"]["type"], "message", "{seen}");
    assert!(seen["translated"]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(seen["translated"]["stop_reason"], "end_turn");
    assert_eq!(seen["capped"]["status"], 402, "{seen}");
    assert_eq!(seen["capped"]["type"], "billing_error");
    assert_eq!(seen["capped"]["code"], "MAX_COST_EXCEEDED");
    // The Claude calls (and the count) went to Anthropic, the OpenAI one
    // to OpenAI.
    assert_eq!(anthropic.received().len(), 4);
    assert_eq!(openai.received().len(), 1);
    proxy.stop().await;
}

/// The openai SDK's `client.responses` through `/v1/responses` (passed to
/// OpenAI as written, and translated for Claude, whole and streamed) and
/// `client.embeddings` through `/v1/embeddings`.
#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_responses_and_embeddings() {
    let openai = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    openai.push(Reply::Json(
        200,
        json!({"id": "resp_sdk", "object": "response", "created_at": 1_796_000_000,
            "status": "completed", "model": "gpt-4o-mini", "output": [{"type": "message",
            "id": "msg_sdk", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello from OpenAI", "annotations": []}]}],
            "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13}}),
    ));
    openai.push(Reply::Json(
        200,
        json!({"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5]},
                     {"object": "embedding", "index": 1, "embedding": [0.25, 0.75]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
    ));
    let proxy = TestProxy::start(
        Setup::default()
            .with_provider("openai", &openai)
            .with_provider("anthropic", &anthropic),
    )
    .await;
    let seen = run_script("openai_python_responses.py", &proxy, &[]).await;
    assert_eq!(seen["native"]["text"], "Hello from OpenAI", "{seen}");
    assert_eq!(seen["native"]["input_tokens"], 9);
    assert_eq!(seen["native"]["metadata"]["provider"], "openai");
    assert_eq!(seen["translated"]["text"], "Hello there!", "{seen}");
    assert_eq!(seen["translated"]["status"], "completed");
    assert_eq!(seen["translated"]["metadata"]["provider"], "anthropic");
    assert_eq!(seen["stream"]["first"], "response.created", "{seen}");
    assert_eq!(seen["stream"]["last"], "response.completed", "{seen}");
    assert_eq!(seen["stream"]["text"], "Hello there!", "{seen}");
    assert_eq!(seen["embeddings"]["count"], 2, "{seen}");
    assert_eq!(seen["embeddings"]["first"], json!([0.5, -0.5]));
    assert_eq!(seen["embeddings"]["prompt_tokens"], 2);
    assert_eq!(openai.received()[0].path, "/v1/responses");
    assert_eq!(openai.received()[1].path, "/v1/embeddings");
    assert_eq!(anthropic.received().len(), 2);
    proxy.stop().await;
}

/// The loop in OpenAI's own docs reads `chunk.choices[0]` of every chunk:
/// p402 sends no chunk without a choice that the client did not ask for,
/// on a model served as it is and on one translated from Anthropic, and
/// the figures still arrive (on the last chunk that has a choice).
#[tokio::test(flavor = "multi_thread")]
async fn the_docs_stream_loop_reads_every_chunk() {
    let openai = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup::default()
            .with_provider("openai", &openai)
            .with_provider("anthropic", &anthropic),
    )
    .await;
    for model in ["gpt-4o-mini", "claude-haiku-4-5"] {
        let out = run_script(
            "openai_python_stream_loop.py",
            &proxy,
            &[("P402_MODEL", model.to_string())],
        )
        .await;
        assert!(
            out["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{model}: {out}"
        );
        let metadata = &out["metadata"];
        assert_eq!(metadata["requested_model"], model, "{out}");
        assert!(
            metadata["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
            "{out}"
        );
    }
    proxy.stop().await;
}

/// The OpenAI Agents SDK (Responses, with its `include: []`) on a current
/// Claude model: the request is translated, the function tool's call comes
/// back as a Responses function call, the tool runs, and its result goes
/// back to Claude.
#[tokio::test(flavor = "multi_thread")]
async fn openai_agents_sdk_runs_a_tool_on_claude() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(Setup::default().with_provider("anthropic", &anthropic)).await;
    let call = json!({"id": "msg_01AG", "type": "message", "role": "assistant",
        "model": "claude-sonnet-5-5", "stop_reason": "tool_use", "stop_sequence": null,
        "content": [{"type": "tool_use", "id": "toolu_01AG", "name": "write_proof",
            "input": {"text": "p402-tool-loop"}}],
        "usage": {"input_tokens": 300, "output_tokens": 20}});
    let done = json!({"id": "msg_01AH", "type": "message", "role": "assistant",
        "model": "claude-sonnet-5-5", "stop_reason": "end_turn", "stop_sequence": null,
        "content": [{"type": "text", "text": "The proof file is written."}],
        "usage": {"input_tokens": 340, "output_tokens": 8}});
    for _ in 0..6 {
        anthropic.push(Reply::Agent {
            call: Box::new(Reply::Json(200, call.clone())),
            done: Box::new(Reply::Json(200, done.clone())),
        });
    }
    let dir = tempfile::tempdir().expect("dir");
    let proof = dir.path().join("proof.txt");
    let out = run_script(
        "openai_agents_claude.py",
        &proxy,
        &[
            ("P402_MODEL", "claude-sonnet-5-5".to_string()),
            ("P402_PROOF", proof.display().to_string()),
        ],
    )
    .await;
    assert_eq!(out["final_output"], "The proof file is written.", "{out}");
    assert_eq!(out["calls"], json!(["p402-tool-loop"]), "{out}");
    let written = std::fs::read_to_string(&proof).expect("the tool wrote the file");
    assert_eq!(written.trim(), "p402-tool-loop");
    let sent = anthropic.received();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(carries_tool_result(&sent[1].body), "{}", sent[1].body);
    proxy.stop().await;
}
