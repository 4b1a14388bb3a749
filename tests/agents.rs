//! The coding agents themselves against p402: the real Claude Code CLI
//! (`claude -p`, configured through `ANTHROPIC_BASE_URL` alone), answered by
//! a loopback server that speaks Anthropic's Messages API exactly.
//!
//! `.ci/run` installs the pinned npm package into `target/agents-node`;
//! `P402_TEST_CLAUDE` points at another `claude` binary.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
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
    let home = tempfile::tempdir().expect("home");
    let binary = claude();
    let base = proxy.url("");
    let dir = home.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args([
                "-p",
                "Reply with the word PONG",
                "--model",
                "claude-haiku-4-5",
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
