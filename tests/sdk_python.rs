//! The official `openai` Python SDK against p402, through OPENAI_BASE_URL
//! alone. `.ci/run` installs the SDK into `target/sdk-venv`; set
//! `P402_TEST_PYTHON` to use another interpreter that has it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("P402_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    assert!(
        venv.exists(),
        "the openai SDK is not installed: run `bash .ci/run` once, or `python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install openai`"
    );
    venv
}

/// Runs one of `tests/sdk/*.py` against `proxy` through OPENAI_BASE_URL
/// alone, and returns the JSON it prints.
async fn run_script(name: &str, proxy: &TestProxy) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name);
    let base_url = proxy.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", "sk-client-side-anything")
            .env("OPENAI_MAX_RETRIES", "0")
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("script prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_chat_stream_and_extra_body() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let seen = run_script("openai_python.py", &proxy).await;

    assert_eq!(seen["plain"]["content"], "Hello there!");
    assert_eq!(seen["plain"]["finish_reason"], "stop");
    assert_eq!(seen["plain"]["total_tokens"], 15);
    assert_eq!(seen["plain"]["metadata"]["provider"], "openai");
    assert_eq!(seen["plain"]["metadata"]["mode"], "cost");
    assert_eq!(seen["headers"]["x-p402-provider"], "openai");
    assert_eq!(seen["headers"]["x-p402-cached"], "false");

    assert_eq!(seen["stream"]["content"], "Hello there!");
    assert_eq!(
        seen["stream"]["finish_reasons"],
        serde_json::json!(["stop"])
    );
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
    let seen = run_script("openai_python_claude.py", &proxy).await;
    assert_eq!(seen["plain"]["content"], "Hello there!");
    assert_eq!(seen["plain"]["provider"], "anthropic");
    assert_eq!(seen["stream"], "Hello there!");
    assert_eq!(seen["tool"]["name"], "get_weather");
    assert_eq!(
        seen["tool"]["arguments"],
        serde_json::json!({"city": "Paris"})
    );
    assert_eq!(seen["tool"]["finish_reason"], "tool_calls");
    assert_eq!(seen["tool_stream"]["name"], "get_weather");
    assert_eq!(
        seen["tool_stream"]["arguments"],
        serde_json::json!({"city": "Paris"})
    );
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
