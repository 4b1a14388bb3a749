//! The coding agents themselves against p402: the real Claude Code CLI
//! (`claude -p`, configured through `ANTHROPIC_BASE_URL` alone) and the real
//! Codex CLI (`codex exec`, with a `[model_providers]` entry pointing at
//! p402 and `wire_api = "responses"`), each answered by a loopback server
//! that speaks its provider's API exactly.
//!
//! `.ci/run` installs the pinned npm packages into `target/agents-node`;
//! `P402_TEST_CLAUDE` and `P402_TEST_CODEX` point at other binaries.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

fn claude() -> PathBuf {
    if let Some(path) = std::env::var_os("P402_TEST_CLAUDE") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/agents-node/node_modules/@anthropic-ai/claude-code/bin/claude.exe");
    assert!(
        path.exists(),
        "Claude Code is not installed in target/agents-node: run `bash .ci/run` once"
    );
    path
}

fn codex() -> PathBuf {
    if let Some(path) = std::env::var_os("P402_TEST_CODEX") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/agents-node/node_modules/@openai/codex/bin/codex.js");
    assert!(
        path.exists(),
        "Codex CLI is not installed in target/agents-node: run `bash .ci/run` once"
    );
    path
}

/// A Responses stream, as OpenAI sends one, that says `text`.
fn responded(text: &str) -> Vec<String> {
    responses_events("gpt-5-codex", text)
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_runs_through_p402_and_every_call_is_charged() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    for _ in 0..8 {
        openai.push(Reply::RawSse(responded("PONG from the fake")));
    }
    let (stdout, _home) =
        run_codex(proxy.url("/v1"), "gpt-5-codex", "Reply with the word PONG").await;
    assert!(stdout.contains("PONG from the fake"), "{stdout}");

    // Codex's own body went to OpenAI's Responses API as it wrote it:
    // built-in tools, encrypted reasoning asked for, no p402 field.
    let sent = openai.received();
    assert!(!sent.is_empty());
    for call in &sent {
        assert_eq!(call.path, "/v1/responses", "{:?}", call.body);
        assert_eq!(
            call.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        assert_eq!(call.body["model"], "gpt-5-codex");
    }
    assert!(sent[0].body["include"]
        .as_array()
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content")));

    let report = proxy.get_json("/api/v2/report?since=1d").await;
    let total = &report["total"];
    assert_eq!(total["requests"], sent.len() as u64, "{report}");
    assert_eq!(total["estimated_requests"], 0, "{report}");
    assert_eq!(
        total["input_tokens"].as_u64(),
        Some(300 * sent.len() as u64),
        "{report}"
    );
    proxy.stop().await;
}

/// A text-only Messages stream, as Anthropic sends one.
fn said(text: &str, input_tokens: u64, output_tokens: u64) -> Vec<String> {
    let block = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    vec![
        block(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_01CC", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        block(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        block("ping", json!({"type": "ping"})),
        block(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        ),
        block(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        block(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
        ),
        block("message_stop", json!({"type": "message_stop"})),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_runs_through_p402_and_every_call_is_charged() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(Setup::default().with_provider("anthropic", &anthropic)).await;
    // Whatever Claude Code asks (its answer, and any side call such as a
    // title), the model says the same.
    for _ in 0..8 {
        anthropic.push(Reply::RawSse(said("PONG from the fake", 40, 6)));
    }
    let (result, _home) = run_claude_code(
        proxy.url(""),
        "claude-haiku-4-5",
        "Reply with the word PONG",
    )
    .await;
    assert_eq!(result["result"], "PONG from the fake", "{result}");
    assert_eq!(result["is_error"], false, "{result}");

    // Every call went to /v1/messages with Claude Code's own body: tools,
    // a system prompt, and p402's key instead of the client's.
    let sent = anthropic.received();
    assert!(!sent.is_empty());
    for call in &sent {
        assert_eq!(call.path, "/v1/messages", "{:?}", call.body);
        assert_eq!(
            call.headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            Some(PROVIDER_KEY)
        );
    }
    assert!(
        sent.iter().any(|call| call.body.get("tools").is_some()),
        "Claude Code offered its tools"
    );

    // Each call is in the ledger, charged at claude-haiku-4-5's prices from
    // the provider's usage.
    let report = proxy.get_json("/api/v2/report?since=1d&by=model").await;
    let total = &report["total"];
    assert_eq!(total["requests"], sent.len() as u64, "{report}");
    assert_eq!(total["estimated_requests"], 0, "{report}");
    assert_eq!(
        total["input_tokens"].as_u64(),
        Some(40 * sent.len() as u64),
        "{report}"
    );
    assert!(
        total["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{report}"
    );
    assert_eq!(
        report["rows"][0]["key"], "anthropic/claude-haiku-4-5",
        "{report}"
    );
    proxy.stop().await;
}

/// Runs `p402 run` with `args` (then `--` and Claude Code's own) against
/// the p402 listening at `addr`, and returns its exit code and output.
async fn p402_run_claude(
    addr: std::net::SocketAddr,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let home = tempfile::tempdir().expect("home");
    let config = home.path().join("p402.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n",
            home.path().join("data").display()
        ),
    )
    .expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(args)
        .arg("--")
        .arg(claude())
        .args([
            "-p",
            "Reply with the word PONG",
            "--model",
            "claude-haiku-4-5",
            "--output-format",
            "json",
        ])
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-client-side-anything")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("ANTHROPIC_AUTH_TOKEN");
    let output = tokio::task::spawn_blocking(move || {
        let output = command.output();
        drop(home);
        output
    })
    .await
    .expect("join")
    .expect("p402 run runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `p402 run` puts an interactive agent under a session's hard cap: an
/// agent with room to work is charged to its session; one whose budget
/// cannot pay for a call is stopped with a clear message, and nothing
/// reaches the provider.
#[tokio::test(flavor = "multi_thread")]
async fn p402_run_caps_an_agent_with_a_session() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(Setup::default().with_provider("anthropic", &anthropic)).await;
    for _ in 0..8 {
        anthropic.push(Reply::RawSse(said("PONG under a cap", 40, 6)));
    }
    let (code, stdout, stderr) =
        p402_run_claude(proxy.addr(), &["--budget", "1", "--name", "capped-agent"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("claude's JSON");
    assert_eq!(result["result"], "PONG under a cap", "{result}");
    assert!(stderr.contains("spent $"), "{stderr}");
    let sessions = proxy.get_json("/api/v2/sessions").await;
    let session = sessions["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "capped-agent")
        .cloned()
        .expect("the run's session");
    let calls = anthropic.received().len() as u64;
    assert!(calls > 0);
    assert_eq!(session["requests"], calls, "{session}");
    assert!(session["budget"]["used_usd"]
        .as_f64()
        .is_some_and(|u| u > 0.0));

    // A budget that cannot pay for one call: the agent is stopped.
    let (code, stdout, stderr) = p402_run_claude(proxy.addr(), &["--budget", "0.000001"]).await;
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    // Claude Code shows p402's own words: what is left and what was needed.
    let result: Value = serde_json::from_str(stdout.trim()).expect("claude's JSON");
    assert_eq!(result["api_error_status"], 402, "{result}");
    assert_eq!(result["api_error_type"], "billing_error", "{result}");
    assert!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.contains("has $0.000001 left")),
        "{result}"
    );
    assert!(
        stderr.contains("spent $0.000000 of $0.000001 on 0 requests"),
        "{stderr}"
    );
    assert_eq!(
        anthropic.received().len() as u64,
        calls,
        "nothing more reached the provider"
    );
    proxy.stop().await;
}

// ---- whole tool loops, on the models users pick today ------------------------
//
// Each fake provider answers the agent's first call with a call of the
// agent's own shell tool, and the call that brings the tool's result back
// with a final answer. The tool really runs: it writes `proof.txt`.

/// What the agents' shell tool is asked to run.
const PROOF_COMMAND: &str = "echo p402-tool-loop > proof.txt";

/// An SSE event block with its name.
fn sse_block(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// A Messages stream that calls `tool` with `input`, as Anthropic sends one.
fn anthropic_tool_call(model: &str, tool: &str, input: Value) -> Vec<String> {
    vec![
        sse_block(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_01TL", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 900, "output_tokens": 1}}}),
        ),
        sse_block(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block":
            {"type": "tool_use", "id": "toolu_01PROOF", "name": tool, "input": {}}}),
        ),
        sse_block(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        ),
        sse_block(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        sse_block(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 30}}),
        ),
        sse_block("message_stop", json!({"type": "message_stop"})),
    ]
}

/// A Chat Completions stream that calls `tool` with `input`, its arguments
/// in two pieces, then the usage chunk.
fn chat_tool_call(model: &str, tool: &str, input: Value) -> Vec<String> {
    let arguments = input.to_string();
    let (first, second) = arguments.split_at(arguments.len() / 2);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-TL", "object": "chat.completion.chunk", "created": 1_796_000_000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
            "id": "call_PROOF", "type": "function", "function": {"name": tool, "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": first}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": second}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-TL", "object": "chat.completion.chunk", "created": 1_796_000_000,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 900, "completion_tokens": 30, "total_tokens": 930}})
        .to_string(),
    ]
}

/// A Chat Completions stream that says `text`.
fn chat_said(model: &str, text: &str) -> Vec<String> {
    stream_events(model, &[text], true)
}

/// A Responses stream that calls `tool` with `input`, as OpenAI sends one.
fn responses_tool_call(model: &str, tool: &str, input: Value) -> Vec<String> {
    let block = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_string();
        sse_block(&name, data)
    };
    let arguments = input.to_string();
    let item = json!({"type": "function_call", "id": "fc_PROOF", "call_id": "call_PROOF",
        "name": tool, "arguments": arguments, "status": "completed"});
    let done = json!({"id": "resp_TL", "object": "response", "created_at": 1_796_000_000,
        "status": "completed", "model": model, "output": [item],
        "usage": {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 930}});
    vec![
        block(
            json!({"type": "response.created", "sequence_number": 0, "response": {
            "id": "resp_TL", "object": "response", "created_at": 1_796_000_000,
            "status": "in_progress", "model": model, "output": []}}),
        ),
        block(
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": "function_call", "id": "fc_PROOF", "call_id": "call_PROOF",
                "name": tool, "arguments": "", "status": "in_progress"}}),
        ),
        block(
            json!({"type": "response.function_call_arguments.delta", "sequence_number": 2,
            "item_id": "fc_PROOF", "output_index": 0, "delta": arguments}),
        ),
        block(
            json!({"type": "response.function_call_arguments.done", "sequence_number": 3,
            "item_id": "fc_PROOF", "output_index": 0, "arguments": arguments}),
        ),
        block(
            json!({"type": "response.output_item.done", "sequence_number": 4, "output_index": 0, "item": item}),
        ),
        block(json!({"type": "response.completed", "sequence_number": 5, "response": done})),
    ]
}

/// Runs Claude Code (`claude -p PROMPT`) on `model` against `base`,
/// allowed to use its Bash tool, in a fresh home; returns its JSON result
/// and the home.
async fn run_claude_code(base: String, model: &str, prompt: &str) -> (Value, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("home");
    let binary = claude();
    let dir = home.path().to_path_buf();
    let model = model.to_string();
    let prompt = prompt.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args([
                "-p",
                &prompt,
                "--model",
                &model,
                "--allowedTools",
                "Bash",
                "--output-format",
                "json",
            ])
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_API_KEY", "sk-ant-client-side-anything")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("ANTHROPIC_MODEL")
            .output()
    })
    .await
    .expect("join")
    .expect("claude runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "claude failed:\n{stdout}\n{stderr}"
    );
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("claude printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (result, home)
}

/// Runs Codex CLI (`codex exec PROMPT`) on `model` against `base` (its
/// `/v1`), with its sandbox off so its shell tool can write, in a fresh
/// home; returns what it printed and the home.
async fn run_codex(base: String, model: &str, prompt: &str) -> (String, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("home");
    let codex_home = home.path().join(".codex");
    std::fs::create_dir_all(&codex_home).expect("codex home");
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"{model}\"\nmodel_provider = \"p402\"\n\n[model_providers.p402]\nname = \"p402\"\nbase_url = \"{base}\"\nwire_api = \"responses\"\nenv_key = \"P402_CODEX_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n"
        ),
    )
    .expect("config");
    let script = codex();
    let dir = home.path().to_path_buf();
    let prompt = prompt.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([
                "exec",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                &prompt,
            ])
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("CODEX_HOME", dir.join(".codex"))
            .env("P402_CODEX_KEY", "sk-client-side-anything")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .output()
    })
    .await
    .expect("join")
    .expect("codex runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "codex failed:\n{stdout}\n{stderr}");
    (stdout, home)
}

/// The file the agent's tool wrote, proving the tool really ran.
fn assert_proof(home: &tempfile::TempDir) {
    let proof = std::fs::read_to_string(home.path().join("proof.txt"))
        .unwrap_or_else(|e| panic!("the agent's tool did not write proof.txt: {e}"));
    assert_eq!(proof.trim(), "p402-tool-loop");
}

/// The calls the fake received, with the tool's result handed back in the
/// last of them (the loop went round once, whole).
fn assert_loop_went_round(fake: &FakeProvider, path: &str) {
    let sent = fake.received();
    assert!(
        sent.iter()
            .any(|call| call.path == path && !carries_tool_result(&call.body)),
        "no first call on {path}: {sent:?}"
    );
    let back = sent
        .iter()
        .find(|call| call.path == path && carries_tool_result(&call.body))
        .unwrap_or_else(|| panic!("the tool's result never came back on {path}"));
    assert!(
        back.body.to_string().contains("p402-tool-loop") || back.body.to_string().contains("proof"),
        "{}",
        back.body
    );
}

/// Claude Code on a current Claude model, in the shipped default mode: its
/// bodies (system-role turns inside `messages`, adaptive thinking, context
/// editing) reach Anthropic as it wrote them, and its Bash tool runs.
#[tokio::test(flavor = "multi_thread")]
async fn claude_code_runs_a_tool_loop_on_claude_sonnet_5_5() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(Setup::default().with_provider("anthropic", &anthropic)).await;
    for _ in 0..12 {
        anthropic.push(Reply::Agent {
            call: Box::new(Reply::RawSse(anthropic_tool_call(
                "claude-sonnet-5-5",
                "Bash",
                json!({"command": PROOF_COMMAND, "description": "Write the proof file"}),
            ))),
            done: Box::new(Reply::RawSse(said("The proof file is written.", 950, 8))),
        });
    }
    let (result, home) =
        run_claude_code(proxy.url(""), "claude-sonnet-5-5", "Write the proof file").await;
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "The proof file is written.", "{result}");
    assert_proof(&home);
    assert_loop_went_round(&anthropic, "/v1/messages");
    for call in anthropic.received() {
        assert!(
            call.body["model"]
                .as_str()
                .is_some_and(|m| m.starts_with("claude-")),
            "{}",
            call.body["model"]
        );
    }
    let report = proxy.get_json("/api/v2/report?since=1d").await;
    assert_eq!(
        report["total"]["requests"],
        anthropic.received().len() as u64,
        "{report}"
    );
    proxy.stop().await;
}

/// Claude Code on an OpenAI model: its Messages bodies are translated to
/// Chat Completions (system turns in place, thinking as a reasoning
/// effort), the tool call and its result translated both ways.
#[tokio::test(flavor = "multi_thread")]
async fn claude_code_runs_a_tool_loop_on_an_openai_model() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let input = json!({"command": PROOF_COMMAND, "description": "Write the proof file"});
    let call = json!({"id": "chatcmpl-TL", "object": "chat.completion", "created": 1_796_000_000,
        "model": "gpt-6.2-sol", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_PROOF",
            "type": "function", "function": {"name": "Bash", "arguments": input.to_string()}}]}}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 30, "total_tokens": 930}});
    for _ in 0..12 {
        openai.push(Reply::Agent {
            call: Box::new(Reply::ByStream {
                stream: Box::new(Reply::Sse {
                    events: chat_tool_call("gpt-6.2-sol", "Bash", input.clone()),
                    gate: None,
                }),
                whole: Box::new(Reply::Json(200, call.clone())),
            }),
            done: Box::new(Reply::ByStream {
                stream: Box::new(Reply::Sse {
                    events: chat_said("gpt-6.2-sol", "The proof file is written."),
                    gate: None,
                }),
                whole: Box::new(Reply::Json(
                    200,
                    completion("gpt-6.2-sol", "The proof file is written.", 950, 8),
                )),
            }),
        });
    }
    let (result, home) =
        run_claude_code(proxy.url(""), "gpt-6.2-sol", "Write the proof file").await;
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "The proof file is written.", "{result}");
    assert_proof(&home);
    assert_loop_went_round(&openai, "/v1/chat/completions");
    // Claude Code's system turns arrived as system messages.
    let first = &openai.received()[0].body;
    assert!(
        first["messages"].as_array().is_some_and(|m| m
            .iter()
            .filter(|m| m["role"] == "system")
            .count()
            >= 2),
        "{first}"
    );
    proxy.stop().await;
}

/// Codex CLI on an OpenAI model: its Responses bodies go to OpenAI as they
/// are, and its shell tool runs.
#[tokio::test(flavor = "multi_thread")]
async fn codex_runs_a_tool_loop_on_an_openai_model() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    for _ in 0..12 {
        openai.push(Reply::Agent {
            call: Box::new(Reply::RawSse(responses_tool_call(
                "gpt-6.2-sol",
                "exec_command",
                json!({"cmd": PROOF_COMMAND}),
            ))),
            done: Box::new(Reply::RawSse(responded("The proof file is written."))),
        });
    }
    let (stdout, home) = run_codex(proxy.url("/v1"), "gpt-6.2-sol", "Write the proof file").await;
    assert!(stdout.contains("The proof file is written."), "{stdout}");
    assert_proof(&home);
    assert_loop_went_round(&openai, "/v1/responses");
    proxy.stop().await;
}

/// Codex CLI on a current Claude model: its Responses bodies (namespace
/// tools, web search, encrypted reasoning asked for, `store: false`) are
/// translated to Anthropic Messages, with the web search left out and
/// said so, and the shell tool's call and result translated both ways.
#[tokio::test(flavor = "multi_thread")]
async fn codex_runs_a_tool_loop_on_claude_sonnet_5_5() {
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(Setup::default().with_provider("anthropic", &anthropic)).await;
    for _ in 0..12 {
        anthropic.push(Reply::Agent {
            call: Box::new(Reply::RawSse(anthropic_tool_call(
                "claude-sonnet-5-5",
                "exec_command",
                json!({"cmd": PROOF_COMMAND}),
            ))),
            done: Box::new(Reply::RawSse(said("The proof file is written.", 950, 8))),
        });
    }
    let (stdout, home) = run_codex(
        proxy.url("/v1"),
        "claude-sonnet-5-5",
        "Write the proof file",
    )
    .await;
    assert!(stdout.contains("The proof file is written."), "{stdout}");
    assert_proof(&home);
    assert_loop_went_round(&anthropic, "/v1/messages");
    let first = &anthropic.received()[0].body;
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"exec_command"), "{tools:?}");
    assert!(
        tools.iter().any(|t| t.starts_with("multi_agent_v1__")),
        "namespace tools flattened: {tools:?}"
    );
    proxy.stop().await;
}

// ---- the corpus of real agent requests ----------------------------------------

/// Where the recorded requests live (`tests/corpus/README.md`).
fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The headers of an API kept in a fixture (no session or device ids).
const FIXTURE_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// Writes what `fake` received as fixtures named `{client}__{model}__{n}`.
fn keep_fixtures(fake: &FakeProvider, client: &str, model: &str) -> usize {
    let sent = fake.received();
    for (n, call) in sent.iter().enumerate() {
        let door = match call.path.as_str() {
            "/v1/messages" => "messages",
            "/v1/responses" => "responses",
            "/v1/chat/completions" => "chat",
            other => panic!("{client} called {other}"),
        };
        let headers: serde_json::Map<String, Value> = FIXTURE_HEADERS
            .iter()
            .filter_map(|name| {
                let value = call.headers.get(*name)?.to_str().ok()?;
                Some((name.to_string(), Value::from(value)))
            })
            .collect();
        let fixture = json!({"client": client, "door": door, "model": model,
            "turn": if carries_tool_result(&call.body) { "tool-result" } else { "first" },
            "headers": headers, "body": call.body});
        let path = corpus_dir().join(format!("{client}__{model}__{n}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&fixture).expect("JSON"))
            .expect("write a fixture");
    }
    sent.len()
}

/// Records what the pinned agents send, straight to a fake provider (no
/// p402 in between), into `tests/corpus/`: Claude Code for each current
/// Claude model and one OpenAI model, Codex CLI for each current OpenAI
/// model and one Claude model, a tool loop's second turn for each, the
/// OpenAI Agents SDK and the anthropic SDK with a system-role message.
/// Run by `tests/corpus/record.sh` when the pinned versions move.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "records fixtures: run by tests/corpus/record.sh"]
async fn record_the_agent_corpus() {
    std::fs::create_dir_all(corpus_dir()).expect("corpus dir");
    let claude_models = [
        "claude-fable-5-2",
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "gpt-6.2-sol",
    ];
    for model in claude_models {
        let fake = FakeProvider::start_anthropic().await;
        let looped = model == "claude-sonnet-5-5";
        for _ in 0..8 {
            fake.push(Reply::Agent {
                call: Box::new(Reply::RawSse(if looped {
                    anthropic_tool_call(
                        model,
                        "Bash",
                        json!({"command": PROOF_COMMAND, "description": "Write the proof file"}),
                    )
                } else {
                    said("Done.", 900, 3)
                })),
                done: Box::new(Reply::RawSse(said("Done.", 950, 3))),
            });
        }
        let base = fake.base_url().trim_end_matches("/v1").to_string();
        let _ = run_claude_code(base, model, "Write the proof file").await;
        assert!(keep_fixtures(&fake, "claude-code", model) > 0);
    }
    let codex_models = [
        "gpt-6.2-astra",
        "gpt-6.2-sol",
        "gpt-6.1-terra",
        "gpt-6-luna",
        "claude-sonnet-5-5",
    ];
    for model in codex_models {
        let fake = FakeProvider::start().await;
        let looped = model == "gpt-6.2-sol";
        for _ in 0..8 {
            fake.push(Reply::Agent {
                call: Box::new(Reply::RawSse(if looped {
                    responses_tool_call(model, "exec_command", json!({"cmd": PROOF_COMMAND}))
                } else {
                    responses_events(model, "Done.")
                })),
                done: Box::new(Reply::RawSse(responses_events(model, "Done."))),
            });
        }
        let _ = run_codex(fake.base_url(), model, "Write the proof file").await;
        assert!(keep_fixtures(&fake, "codex", model) > 0);
    }
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let openai = FakeProvider::start().await;
    let proof = tempfile::tempdir().expect("dir");
    let status = Command::new(&python)
        .arg(scripts.join("openai_agents_claude.py"))
        .env("OPENAI_BASE_URL", openai.base_url())
        .env("OPENAI_API_KEY", "sk-anything")
        .env("P402_MODEL", "claude-sonnet-5-5")
        .env("P402_PROOF", proof.path().join("proof.txt"))
        .status()
        .expect("the Agents SDK runs");
    assert!(status.success());
    keep_fixtures(&openai, "openai-agents", "claude-sonnet-5-5");
    let anthropic = FakeProvider::start_anthropic().await;
    let status = Command::new(&python)
        .arg(scripts.join("anthropic_system_turn.py"))
        .env(
            "ANTHROPIC_BASE_URL",
            anthropic.base_url().trim_end_matches("/v1"),
        )
        .env("ANTHROPIC_API_KEY", "sk-ant-anything")
        .env("P402_MODEL", "claude-sonnet-5-5")
        .status()
        .expect("the anthropic SDK runs");
    assert!(status.success());
    keep_fixtures(&anthropic, "anthropic-sdk", "claude-sonnet-5-5");
}

/// Every recorded agent request is accepted by its door in every routing
/// mode and served by a provider that carries it: as it came by one that
/// speaks its API, or translated by one that does not.
#[tokio::test(flavor = "multi_thread")]
async fn every_door_accepts_the_agent_corpus_in_every_mode() {
    let openai = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    let proxy = TestProxy::start(
        Setup::default()
            .with_provider("openai", &openai)
            .with_provider("anthropic", &anthropic),
    )
    .await;
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 12, "the corpus: {fixtures:?}");
    let client = reqwest::Client::new();
    for path in &fixtures {
        let fixture: Value =
            serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON");
        let door = fixture["door"].as_str().expect("door");
        let url = match door {
            "messages" => proxy.url("/v1/messages?beta=true"),
            "responses" => proxy.url("/v1/responses"),
            _ => proxy.url("/v1/chat/completions"),
        };
        for mode in ["cost", "quality", "speed", "balanced", "passthrough"] {
            let mut request = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-p402-mode", mode)
                .body(fixture["body"].to_string());
            for (name, value) in fixture["headers"].as_object().into_iter().flatten() {
                request = request.header(name, value.as_str().unwrap_or_default());
            }
            let response = request.send().await.expect("p402 answers");
            let status = response.status();
            let provider = response
                .headers()
                .get("x-p402-provider")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.text().await.unwrap_or_default();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            assert_eq!(status, 200, "{name} in {mode}: {body}");
            assert!(
                provider == "openai" || provider == "anthropic",
                "{name} in {mode}: served by {provider:?}"
            );
            assert!(
                !body.contains("\"error\""),
                "{name} in {mode}: an error in the answer: {body}"
            );
        }
    }
    proxy.stop().await;
}
