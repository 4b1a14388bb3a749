//! Faults, injected on both sides of the proxy: upstreams that refuse,
//! reset, hang, truncate, drip, answer garbage or never stop answering;
//! clients that send headers slowly, hang up mid-stream, send bodies no
//! parser should recurse into, or open thousands of connections. In every
//! case the client gets a clear error in the SPEC's shape (or an SSE error
//! event once a stream has begun), no reservation is left behind, and the
//! ledger holds exactly what was generated.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{timeout, Instant};

const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

/// Many faults in a row must not open the circuit breaker: each test
/// checks what one fault does, not what the breaker does after several.
const NO_BREAKER: &str = "circuit_breaker_failures = 1000\n";

/// Nothing in these tests should take this long; it only stops a broken
/// proxy from hanging the suite.
const LIMIT: Duration = Duration::from_secs(20);

async fn metered(upstream: &str, server: &str) -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            upstream: upstream.to_string(),
            server: server.to_string(),
            routing: NO_BREAKER.to_string(),
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

/// A request charged to `session`, with a small output limit.
fn charged(session: &str, stream: bool, text: &str) -> Value {
    let mut body = ask("metered", text);
    body["max_tokens"] = json!(100);
    body["stream"] = json!(stream);
    body["p402"] = json!({"session_id": session});
    body
}

/// Sends a chat request and reads the whole answer: status, request id and
/// body text.
async fn exchange(proxy: &TestProxy, body: Value) -> (u16, String, String) {
    timeout(LIMIT, async {
        let response = proxy.chat(body).await;
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("x-p402-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap_or_default();
        (status, id, text)
    })
    .await
    .expect("p402 answered in time")
}

/// The session once no reservation is held for it any more (a stream
/// settles as it ends, a hang-up a moment after).
async fn released(proxy: &TestProxy, session: &str) -> Value {
    let path = format!("/api/v2/sessions/{session}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = proxy.get_json(&path).await;
        if view["budget"]["reserved_usd"].as_f64() == Some(0.0) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "a reservation is still held: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failed request costs nothing: no ledger entry, nothing spent, nothing held.
async fn assert_nothing_charged(proxy: &TestProxy, session: &str, request_id: &str, case: &str) {
    let view = released(proxy, session).await;
    assert_eq!(
        view["budget"]["used_usd"].as_f64(),
        Some(0.0),
        "{case}: {view}"
    );
    assert_eq!(view["requests"], 0, "{case}: {view}");
    let entry = proxy.ledger_entry(request_id).await;
    assert!(entry.is_none(), "{case}: charged {entry:?}");
}

/// A failed attempt the provider received is charged as an estimate
/// (SPEC §14): its ledger entry `entry_id` (the request's id, or
/// `<id>.<attempt>` for an attempt failed over from) is marked estimated,
/// holds the prompt and `output` tokens at the metered prices, and is what
/// the session paid.
async fn assert_billed_as_estimate(
    proxy: &TestProxy,
    session: &str,
    entry_id: &str,
    output: u64,
    case: &str,
) {
    let view = released(proxy, session).await;
    let entry = proxy
        .ledger_entry(entry_id)
        .await
        .unwrap_or_else(|| panic!("{case}: the billed attempt is not in the ledger"));
    assert_eq!(entry["estimated"], true, "{case}: {entry}");
    let input = entry["input_tokens"].as_u64().expect("input tokens");
    assert!(input > 0, "{case}: {entry}");
    assert_eq!(
        entry["output_tokens"].as_u64(),
        Some(output),
        "{case}: {entry}"
    );
    let cost = entry["cost_nanos"].as_i64().expect("cost");
    assert_eq!(
        cost,
        (input * 1_000 + output * 1_000_000) as i64,
        "{case}: {entry}"
    );
    assert_eq!(view["requests"], 1, "{case}: {view}");
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!(
        (used * 1e9 - cost as f64).abs() < 0.5,
        "{case}: the session paid {used}, the ledger says {cost} nanos"
    );
}

/// A stream cut after content is settled from what was received, counted
/// by p402 and marked estimated; the session paid exactly that.
async fn assert_charged_as_estimated(
    proxy: &TestProxy,
    session: &str,
    request_id: &str,
    min_output: u64,
    case: &str,
) {
    let view = released(proxy, session).await;
    let entry = proxy
        .ledger_entry(request_id)
        .await
        .unwrap_or_else(|| panic!("{case}: the generated tokens are not in the ledger"));
    assert_eq!(entry["estimated"], true, "{case}: {entry}");
    let input = entry["input_tokens"].as_u64().expect("input tokens");
    let output = entry["output_tokens"].as_u64().expect("output tokens");
    assert!(input > 0, "{case}: {entry}");
    assert!(output >= min_output, "{case}: {entry}");
    let cost = entry["cost_nanos"].as_i64().expect("cost");
    assert_eq!(
        cost,
        (input * 1_000 + output * 1_000_000) as i64,
        "{case}: {entry}"
    );
    assert_eq!(view["requests"], 1, "{case}: {view}");
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!(
        (used * 1e9 - cost as f64).abs() < 0.5,
        "{case}: the session paid {used}, the ledger says {cost} nanos"
    );
}

/// The last `data:` event of a stream, which must be an error object from
/// p402 (or, when `ours` is false, the provider's own, passed through).
fn final_error(text: &str, case: &str) -> Value {
    assert!(
        !text.contains("[DONE]"),
        "{case}: a failed stream ends without [DONE]: {text}"
    );
    let events = sse_data(text);
    let last: Value = events
        .last()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_else(|| panic!("{case}: no JSON event at the end: {text}"));
    let error = last
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("{case}: the stream does not end with an error event: {text}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {error}"
    );
    error
}

/// The text of the first `n` events of a stream (no `[DONE]`).
fn stream_head(pieces: &[&str], n: usize) -> String {
    sse_text(&stream_events("metered", pieces, false)[..n])
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---- upstream faults -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_before_an_answer_are_billed_only_when_the_provider_had_it() {
    let (fake, proxy) = metered("first_byte_timeout_seconds = 1", "").await;
    let answer = completion("metered", "Hello there!", 12, 3).to_string();
    let half = &answer[..answer.len() / 2];
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // The last column: whether the provider had the request and may bill
    // it (it timed out or broke off: the prompt and the reserved 100 output
    // tokens), or answered something that is not an answer (free).
    let cases: Vec<(&str, Reply, u16, &str, &str, bool)> = vec![
        (
            "headers never come",
            Reply::Hang,
            504,
            "upstream_timeout",
            "timeout",
            true,
        ),
        (
            "reset in the middle of the body",
            Reply::then(JSON, half, End::Reset),
            502,
            "upstream_failed",
            "invalid_response",
            true,
        ),
        (
            "closed in the middle of the body",
            Reply::then(JSON, half, End::Close),
            502,
            "upstream_failed",
            "invalid_response",
            true,
        ),
        (
            "the body stops coming",
            Reply::then(JSON, half, End::Hang),
            504,
            "upstream_timeout",
            "timeout",
            true,
        ),
        (
            "a 200 whose body is not JSON",
            Reply::then(
                JSON,
                "<html><body>502 Bad Gateway</body></html>",
                End::Finish,
            ),
            502,
            "upstream_failed",
            "invalid_response",
            false,
        ),
        (
            "a 200 with an empty body",
            Reply::Body {
                status: 200,
                content_type: JSON,
                pieces: vec![],
                every: Duration::ZERO,
                end: End::Finish,
            },
            502,
            "upstream_failed",
            "invalid_response",
            false,
        ),
        (
            "a 200 with an error body",
            Reply::Json(
                200,
                json!({"error": {"message": "The server is overloaded", "type": "server_error", "code": null}}),
            ),
            502,
            "upstream_failed",
            "invalid_response",
            false,
        ),
        (
            "a 200 of 100,000 nested arrays",
            Reply::then(JSON, &nested, End::Finish),
            502,
            "upstream_failed",
            "invalid_response",
            false,
        ),
    ];
    for (case, reply, status, code, attempt, billed) in cases {
        let session = proxy.session(1.0).await;
        fake.push(reply);
        let response = timeout(LIMIT, proxy.chat(charged(&session, false, case)))
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer"));
        assert_eq!(response.status().as_u16(), status, "{case}");
        let error = expect_error(response, status, code).await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("openai/metered: {attempt}")),
            "{case}: {error}"
        );
        let request_id = error["request_id"].as_str().expect("request id");
        if billed {
            let attempt = format!("{request_id}.1");
            assert_billed_as_estimate(&proxy, &session, &attempt, 100, case).await;
        } else {
            assert_nothing_charged(&proxy, &session, request_id, case).await;
        }
    }
    // The proxy serves normally after all of that.
    let session = proxy.session(1.0).await;
    let answer = proxy
        .chat_json(charged(&session, false, "still there?"))
        .await;
    assert_eq!(answer["p402_metadata"]["cost_usd"].as_f64(), Some(0.003012));
    proxy.stop().await;
}

/// Three providers of rising price for the same quality: cost mode tries
/// alpha, then gamma, then beta.
const MARKET: &str = r#"
[[models]]
id = "cheap"
provider = "alpha"
input_per_mtok = 0.1
output_per_mtok = 100.0
context = 100000
max_output = 1000
capabilities = ["streaming"]
quality = 50

[[models]]
id = "middle"
provider = "gamma"
input_per_mtok = 0.5
output_per_mtok = 500.0
context = 100000
max_output = 1000
capabilities = ["streaming"]
quality = 50

[[models]]
id = "dear"
provider = "beta"
input_per_mtok = 1.0
output_per_mtok = 1000.0
context = 100000
max_output = 1000
capabilities = ["streaming"]
quality = 50
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_before_headers_or_a_refused_connection_fails_over() {
    let alpha = FakeProvider::start().await;
    let beta = FakeProvider::start().await;
    let setup = Setup {
        providers: vec![(
            "gamma".to_string(),
            format!("http://127.0.0.1:{}/v1", dead_port()),
        )],
        upstream: "first_byte_timeout_seconds = 0.5".to_string(),
        routing: format!("default_mode = \"cost\"\n{NO_BREAKER}"),
        extra: MARKET.to_string(),
        ..Setup::default()
    }
    .with_provider("alpha", &alpha)
    .with_provider("beta", &beta);
    let proxy = TestProxy::start(setup).await;
    let request = |session: &str, stream: bool, text: &str| {
        let mut body = ask("dear", text);
        body["max_tokens"] = json!(100);
        body["stream"] = json!(stream);
        body["p402"] = json!({"session_id": session});
        body
    };
    // alpha had the request and timed out: it may bill it, so the attempt
    // is charged as an estimate (SPEC §14); gamma never got it: free.
    let check_failover = |meta: &Value, case: &str| -> f64 {
        let failover = meta["failover"].as_array().expect("failover");
        assert_eq!(failover.len(), 2, "{case}: {meta}");
        assert_eq!(
            (
                &failover[0]["provider"],
                &failover[0]["model"],
                &failover[0]["status"]
            ),
            (&json!("alpha"), &json!("cheap"), &json!("timeout")),
            "{case}: {meta}"
        );
        assert_eq!(
            (
                &failover[1]["provider"],
                &failover[1]["model"],
                &failover[1]["status"]
            ),
            (&json!("gamma"), &json!("middle"), &json!("connect_error")),
            "{case}: {meta}"
        );
        assert!(failover[1].get("cost_usd").is_none(), "{case}: {meta}");
        let alpha_cost = failover[0]["cost_usd"].as_f64().expect("alpha's estimate");
        assert!(alpha_cost > 0.0, "{case}: {meta}");
        alpha_cost
    };

    // Not streamed: alpha hangs, gamma refuses, beta answers.
    let session = proxy.session(1.0).await;
    alpha.push(Reply::Hang);
    let answer = timeout(LIMIT, proxy.chat_json(request(&session, false, "one")))
        .await
        .expect("answered");
    let meta = &answer["p402_metadata"];
    assert_eq!(meta["provider"], "beta", "{answer}");
    let alpha_cost = check_failover(meta, "not streamed");
    // The answer: 12 * 1 + 3 * 1000 = 3012 $/M.
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.003012));
    let id = meta["request_id"].as_str().expect("id");
    let estimate = proxy
        .ledger_entry(&format!("{id}.1"))
        .await
        .expect("alpha's entry");
    assert_eq!(estimate["provider"], "alpha", "{estimate}");
    assert_eq!(estimate["estimated"], true, "{estimate}");
    // A whole answer may have been generated in full: the reserved 100.
    assert_eq!(estimate["output_tokens"], 100, "{estimate}");
    assert!(
        proxy.ledger_entry(&format!("{id}.2")).await.is_none(),
        "gamma is free"
    );
    let view = released(&proxy, &session).await;
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!(
        (used - (0.003012 + alpha_cost)).abs() < 1e-9,
        "both attempts are paid: {view}"
    );
    assert_eq!(view["requests"], 2);

    // Streamed: the same, before any byte went to the client; the stream
    // that never started is charged its prompt.
    let session = proxy.session(1.0).await;
    alpha.push(Reply::Hang);
    let (status, _, text) = exchange(&proxy, request(&session, true, "two")).await;
    assert_eq!(status, 200, "{text}");
    let chunks = stream_chunks(&text);
    let meta = &chunks.last().expect("metadata chunk")["p402_metadata"];
    assert_eq!(meta["provider"], "beta", "{meta}");
    let alpha_cost = check_failover(meta, "streamed");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there!");
    let id = meta["request_id"].as_str().expect("id");
    let estimate = proxy
        .ledger_entry(&format!("{id}.1"))
        .await
        .expect("alpha's entry");
    assert_eq!(estimate["output_tokens"], 0, "{estimate}");
    let view = released(&proxy, &session).await;
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!((used - (0.003012 + alpha_cost)).abs() < 1e-9, "{view}");

    // All three fail: a 502 that names every attempt; the two that timed
    // out are paid, the refused connection is not.
    let session = proxy.session(1.0).await;
    alpha.push(Reply::Hang);
    beta.push(Reply::Hang);
    let response = timeout(LIMIT, proxy.chat(request(&session, false, "three")))
        .await
        .expect("answered");
    let error = expect_error(response, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap_or_default();
    for attempt in [
        "alpha/cheap: timeout",
        "gamma/middle: connect_error",
        "beta/dear: timeout",
    ] {
        assert!(message.contains(attempt), "{attempt} in {error}");
    }
    let request_id = error["request_id"].as_str().expect("id");
    let mut paid = 0;
    for (attempt, provider) in [(1, Some("alpha")), (2, None), (3, Some("beta"))] {
        let entry = proxy.ledger_entry(&format!("{request_id}.{attempt}")).await;
        assert_eq!(
            entry.as_ref().map(|e| e["provider"].clone()),
            provider.map(|p| json!(p)),
            "attempt {attempt}: {entry:?}"
        );
        paid += entry.map_or(0, |e| e["cost_nanos"].as_i64().unwrap_or(0));
    }
    let view = released(&proxy, &session).await;
    assert_eq!(view["requests"], 2, "{view}");
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    assert!(paid > 0 && (used * 1e9 - paid as f64).abs() < 0.5, "{view}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_after_content_is_settled_from_what_arrived() {
    let (fake, proxy) = metered("idle_timeout_seconds = 0.5", "").await;
    let pieces = ["The quick brown fox"];
    // The role chunk and the content chunk, then the fault.
    let head = stream_head(&pieces, 2);
    let not_json = format!("{head}data: {{\"choices\": [\n\n");
    let error_event = format!(
        "{head}data: {}\n\n",
        json!({"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}})
    );
    // What happened, the error code, and a word of its message.
    let cases: Vec<(&str, Reply, &str, &str)> = vec![
        (
            "a clean end without [DONE]",
            Reply::then(SSE, &head, End::Finish),
            "upstream_stream_ended",
            "closed the stream",
        ),
        (
            "the connection closed",
            Reply::then(SSE, &head, End::Close),
            "upstream_stream_error",
            "EOF",
        ),
        (
            "the connection reset",
            Reply::then(SSE, &head, End::Reset),
            "upstream_stream_error",
            "reset",
        ),
        (
            "silence past the idle timeout",
            Reply::then(SSE, &head, End::Hang),
            "upstream_timeout",
            "sent nothing",
        ),
        (
            "an event that is not JSON",
            Reply::then(SSE, &not_json, End::Finish),
            "upstream_stream_error",
            "not JSON",
        ),
        (
            "the provider's own error event",
            Reply::then(SSE, &error_event, End::Finish),
            "overloaded",
            "overloaded",
        ),
    ];
    for (case, reply, code, word) in cases {
        let session = proxy.session(1.0).await;
        fake.push(reply);
        let (status, request_id, text) = exchange(&proxy, charged(&session, true, case)).await;
        assert_eq!(
            status, 200,
            "{case}: the status went out with the first byte"
        );
        assert!(text.contains("The quick brown fox"), "{case}: {text}");
        let error = final_error(&text, case);
        assert_eq!(error["code"], code, "{case}: {text}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(word),
            "{case}: {error}"
        );
        if code != "overloaded" {
            assert_eq!(error["request_id"], request_id.as_str(), "{case}: {error}");
        }
        assert_charged_as_estimated(&proxy, &session, &request_id, 4, case).await;
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_before_any_content_is_charged_its_prompt() {
    let (fake, proxy) = metered("idle_timeout_seconds = 0.5", "").await;
    let role_only = stream_head(&["never sent"], 1);
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "headers, then silence",
            Reply::Body {
                status: 200,
                content_type: SSE,
                pieces: vec![],
                every: Duration::ZERO,
                end: End::Hang,
            },
            "upstream_timeout",
        ),
        (
            "the role chunk, then a reset",
            Reply::then(SSE, &role_only, End::Reset),
            "upstream_stream_error",
        ),
        (
            "a keep-alive comment, then the end",
            Reply::then(SSE, ": keep-alive\n\n", End::Finish),
            "upstream_stream_ended",
        ),
    ];
    for (case, reply, code) in cases {
        let session = proxy.session(1.0).await;
        fake.push(reply);
        let (status, request_id, text) = exchange(&proxy, charged(&session, true, case)).await;
        assert_eq!(status, 200, "{case}");
        let error = final_error(&text, case);
        assert_eq!(error["code"], code, "{case}: {text}");
        assert_eq!(error["request_id"], request_id.as_str(), "{case}");
        // The provider had the prompt: billed, with nothing streamed.
        assert_billed_as_estimate(&proxy, &session, &request_id, 0, case).await;
    }
    // The provider's own error event before anything was generated is an
    // error it answered before generating: free.
    let session = proxy.session(1.0).await;
    let error_event = format!(
        "{role_only}data: {}\n\n",
        json!({"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}})
    );
    fake.push(Reply::then(SSE, &error_event, End::Finish));
    let (status, request_id, text) =
        exchange(&proxy, charged(&session, true, "an error event")).await;
    assert_eq!(status, 200);
    let error = final_error(&text, "an error event");
    assert_eq!(error["message"], "overloaded", "{text}");
    assert_nothing_charged(&proxy, &session, &request_id, "an error event").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_drip_under_the_idle_timeout_completes() {
    let (fake, proxy) = metered("idle_timeout_seconds = 0.5", "").await;
    let events = stream_events("metered", &["Hello", " there", "!"], true);
    // The first event a few bytes at a time: it takes about a second to
    // arrive whole, twice the idle timeout, but no gap comes near it.
    let first = format!("data: {}\n\n", events[0]);
    let mut pieces: Vec<bytes::Bytes> = first
        .as_bytes()
        .chunks(4)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    pieces.push(sse_text(&events[1..]).into());
    fake.push(Reply::Body {
        status: 200,
        content_type: SSE,
        pieces,
        every: Duration::from_millis(15),
        end: End::Finish,
    });
    // Keep-alive comments (as OpenRouter sends while a model thinks) are
    // bytes on the wire, not events, for a second between two events.
    let mut beats = vec![format!("data: {}\n\n", events[0]).into()];
    beats.extend((0..10).map(|_| bytes::Bytes::from_static(b": keep-alive\n\n")));
    beats.push(sse_text(&events[1..]).into());
    fake.push(Reply::Body {
        status: 200,
        content_type: SSE,
        pieces: beats,
        every: Duration::from_millis(100),
        end: End::Finish,
    });
    for case in ["a drip of 4 bytes", "keep-alive comments"] {
        let session = proxy.session(1.0).await;
        let (status, _, text) = exchange(&proxy, charged(&session, true, case)).await;
        assert_eq!(status, 200, "{case}");
        let chunks = stream_chunks(&text);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello there!", "{case}");
        let meta = &chunks.last().expect("metadata")["p402_metadata"];
        assert_eq!(meta["cost_usd"].as_f64(), Some(0.003012), "{case}: {meta}");
        assert!(meta.get("cost_estimated").is_none(), "{case}: {meta}");
        let view = released(&proxy, &session).await;
        assert_eq!(
            view["budget"]["used_usd"].as_f64(),
            Some(0.003012),
            "{case}"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_over_max_response_bytes_is_refused_without_holding_it() {
    let (fake, proxy) = metered("max_response_bytes = 65536", "").await;
    let fill = bytes::Bytes::from(vec![b'a'; 16 * 1024]);

    // Not streamed: the body is read up to the limit, then dropped.
    let session = proxy.session(1.0).await;
    fake.push(Reply::Endless {
        content_type: JSON,
        head: bytes::Bytes::from_static(
            b"{\"id\":\"chatcmpl-big\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
        ),
        fill: fill.clone(),
    });
    let response = timeout(LIMIT, proxy.chat(charged(&session, false, "big")))
        .await
        .expect("answered");
    let error = expect_error(response, 502, "upstream_failed").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("openai/metered: response_too_large"),
        "{error}"
    );
    let request_id = error["request_id"].as_str().expect("id");
    // The provider generated it and bills it: the reserved 100 tokens.
    let attempt = format!("{request_id}.1");
    assert_billed_as_estimate(&proxy, &session, &attempt, 100, "enormous answer").await;
    assert!(
        eventually(Duration::from_secs(5), || async { fake.hangups() >= 1 }).await,
        "p402 stopped reading the enormous answer"
    );

    // Streamed: one event that never ends.
    let session = proxy.session(1.0).await;
    let head = format!(
        "{}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"",
        stream_head(&["x"], 1)
    );
    fake.push(Reply::Endless {
        content_type: SSE,
        head: head.into(),
        fill,
    });
    let (status, request_id, text) = exchange(&proxy, charged(&session, true, "big stream")).await;
    assert_eq!(status, 200);
    let error = final_error(&text, "enormous event");
    assert_eq!(error["code"], "upstream_response_too_large", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_response_bytes"),
        "{error}"
    );
    // Settled from what arrived, like any stream cut after content.
    let view = released(&proxy, &session).await;
    let entry = proxy.ledger_entry(&request_id).await.expect("billed");
    assert_eq!(entry["estimated"], true, "{entry}");
    assert!(view["budget"]["used_usd"].as_f64() > Some(0.0), "{view}");
    assert!(
        eventually(Duration::from_secs(5), || async { fake.hangups() >= 2 }).await,
        "p402 stopped reading the enormous stream"
    );
    proxy.stop().await;
}

// ---- client faults -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_client_hanging_up_mid_stream_cancels_the_upstream_and_pays_what_was_generated() {
    // A long idle timeout: the upstream must be cancelled because the
    // client left, not because the provider went quiet.
    let (fake, proxy) = metered("idle_timeout_seconds = 60", "").await;
    let session = proxy.session(1.0).await;
    let gate = Arc::new(Notify::new());
    // The fake sends the role chunk, then waits at the gate (never opened)
    // with the rest: the client leaves after the first content.
    let mut events = stream_events("metered", &["partial answer here", " and the rest"], true);
    events.remove(0);
    fake.push(Reply::Sse {
        events,
        gate: Some(gate.clone()),
    });
    let response = proxy.chat(charged(&session, true, "hang up on me")).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-p402-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let mut stream = response.bytes_stream();
    let first = timeout(LIMIT, stream.next())
        .await
        .expect("the first chunk arrives")
        .expect("a chunk")
        .expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("partial answer here"));
    drop(stream);

    assert!(
        eventually(Duration::from_secs(5), || async { fake.hangups() == 1 }).await,
        "the upstream request was not cancelled when the client left"
    );
    let view = released(&proxy, &session).await;
    assert_eq!(view["requests"], 1, "{view}");
    assert_charged_as_estimated(&proxy, &session, &request_id, 3, "client hang-up").await;
    proxy.stop().await;
}

/// Reads from `stream` until the server closes it (EOF or an error);
/// false if it is still open after `limit`.
async fn closed_within(stream: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> bool {
    timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_and_silent_connections_are_dropped_while_others_are_served() {
    let (_fake, proxy) = metered("", "header_read_timeout_seconds = 0.5").await;
    let addr = proxy.addr();
    // Headers one byte every 100 ms, for far longer than the timeout.
    let slow = TcpStream::connect(addr).await.expect("connect");
    let (mut slow_read, mut slow_write) = slow.into_split();
    let writer = tokio::spawn(async move {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: p402\r\nX-Slow: ";
        if slow_write.write_all(head).await.is_err() {
            return;
        }
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow_write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    // A connection that never sends a byte, and one that stops after one.
    let (mut silent_read, _silent_write) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    let (mut one_byte_read, mut one_byte_write) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    one_byte_write.write_all(b"P").await.expect("write");

    // Others are served meanwhile.
    for i in 0..3 {
        let response = proxy.chat(ask("metered", &format!("served {i}"))).await;
        assert_eq!(response.status(), 200);
    }
    for (name, half) in [
        ("slow headers", &mut slow_read),
        ("no bytes at all", &mut silent_read),
        ("one byte", &mut one_byte_read),
    ] {
        assert!(
            closed_within(half, Duration::from_secs(5)).await,
            "a connection with {name} was not dropped"
        );
    }
    writer.abort();
    let response = proxy.chat(ask("metered", "after")).await;
    assert_eq!(response.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_idle_connections_do_not_stop_the_proxy() {
    // Within max_connections (its own test is in tests/doors/boundary.rs): what
    // is checked here is that idle ones are dropped and others served.
    let (_fake, proxy) = metered(
        "",
        "header_read_timeout_seconds = 2\nmax_connections = 4096",
    )
    .await;
    let addr = proxy.addr();
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        idle.push(stream.into_split());
    }
    let requests = (0..20).map(|i| {
        let proxy = &proxy;
        async move {
            timeout(LIMIT, proxy.chat(ask("metered", &format!("busy {i}"))))
                .await
                .expect("answered")
                .status()
        }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200);
    }
    assert_eq!(proxy.health().await["status"], "healthy");
    // None of the idle connections is kept past the header timeout.
    let closes = idle.into_iter().map(|(mut read, write)| async move {
        let closed = closed_within(&mut read, Duration::from_secs(15)).await;
        drop(write);
        closed
    });
    let closed = futures_util::future::join_all(closes).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "idle connections still open");
    assert_eq!(proxy.chat(ask("metered", "after")).await.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_concurrency_limit_requests_get_429_not_a_queue() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n[limits]\nconcurrent_requests = 3\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    // Three streams hold the three slots: each waits at the gate after
    // its first event.
    let gate = Arc::new(Notify::new());
    let mut held = Vec::new();
    for i in 0..3 {
        fake.push(Reply::Sse {
            events: stream_events("metered", &["held"], false),
            gate: Some(gate.clone()),
        });
        let mut body = ask("metered", &format!("hold {i}"));
        body["stream"] = json!(true);
        let response = proxy.chat(body).await;
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        timeout(LIMIT, stream.next())
            .await
            .expect("first chunk")
            .expect("chunk")
            .expect("bytes");
        held.push(stream);
    }
    // Everyone else is refused at once, in the SPEC's shape.
    let refused = (0..30).map(|i| {
        let proxy = &proxy;
        async move {
            timeout(LIMIT, proxy.chat(ask("metered", &format!("refused {i}"))))
                .await
                .expect("refused at once, not queued")
        }
    });
    for response in futures_util::future::join_all(refused).await {
        assert!(response.headers().contains_key("retry-after"));
        expect_error(response, 429, "too_many_concurrent_requests").await;
    }
    assert_eq!(fake.received().len(), 3, "no refused request went upstream");
    // The held streams finish whole, and their slots come back.
    gate.notify_waiters();
    for mut stream in held {
        let mut text = Vec::new();
        while let Some(chunk) = timeout(LIMIT, stream.next()).await.expect("rest") {
            text.extend_from_slice(&chunk.expect("bytes"));
        }
        stream_chunks(&String::from_utf8_lossy(&text));
    }
    let served = eventually(Duration::from_secs(5), || async {
        proxy.chat(ask("metered", "a slot is free")).await.status() == 200
    })
    .await;
    assert!(served, "the slots never came back");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_request_bodies_get_a_clean_400() {
    let (fake, proxy) = metered("", "").await;
    let post = |path: &'static str, body: Vec<u8>| {
        proxy
            .client
            .post(proxy.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let deep_arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let deep_in_messages =
        format!(r#"{{"model":"metered","messages":[{{"role":"user","content":{deep_arrays}}}]}}"#);
    let mut bad_utf8 = br#"{"model":"metered","messages":[{"role":"user","content":"caf"#.to_vec();
    bad_utf8.extend_from_slice(&[0xc3, 0x28, 0xff, 0xfe]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        (
            "100,000 nested arrays",
            "/v1/chat/completions",
            deep_arrays.clone().into_bytes(),
        ),
        (
            "100,000 nested objects",
            "/v1/chat/completions",
            deep_objects.into_bytes(),
        ),
        (
            "nested arrays as content",
            "/v1/chat/completions",
            deep_in_messages.into_bytes(),
        ),
        (
            "invalid UTF-8 in a string",
            "/v1/chat/completions",
            bad_utf8.clone(),
        ),
        (
            "nested arrays to compare",
            "/api/v2/providers/compare",
            deep_arrays.clone().into_bytes(),
        ),
        (
            "invalid UTF-8 to compare",
            "/api/v2/providers/compare",
            bad_utf8,
        ),
    ];
    for (case, path, body) in cases {
        let response = timeout(LIMIT, post(path, body))
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer"))
            .expect("sent");
        let error = expect_error(response, 400, "invalid_json").await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("not valid JSON")),
            "{case}: {error}"
        );
    }
    // Sessions parse their own bodies.
    let response = post("/api/v2/sessions", deep_arrays.into_bytes())
        .await
        .expect("sent");
    expect_error(response, 400, "invalid_session").await;
    // A header p402 reads, in bytes that are not text.
    let response = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header(
            "x-p402-mode",
            reqwest::header::HeaderValue::from_bytes(&[0xff, 0xfe]).expect("header"),
        )
        .json(&ask("metered", "x"))
        .send()
        .await
        .expect("sent");
    expect_error(response, 400, "invalid_header").await;

    assert!(fake.received().is_empty(), "nothing reached the provider");
    assert_eq!(proxy.chat(ask("metered", "still fine")).await.status(), 200);
    proxy.stop().await;
}
