//! The boundary against the real server: web pages, foreign host names,
//! non-JSON bodies, slow bodies, bad bytes, too many connections, leaks of
//! upstream text, endless streams, keys over plain HTTP, the cache across
//! keys, and a reload that would open a non-loopback listener to everyone.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn metered(server: &str, upstream: &str, cache: &str) -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            server: server.to_string(),
            upstream: upstream.to_string(),
            cache: cache.to_string(),
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

/// Sends raw bytes and returns what came back until the server closed or
/// went quiet for `wait`.
async fn raw(proxy: &TestProxy, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream, wait).await
}

async fn read_answer(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One answer with a length is enough.
                if complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .is_some_and(|n| body.len() >= n)
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn chat_request(host: &str, extra_headers: &str, content_type: &str) -> Vec<u8> {
    let body =
        json!({"model": "metered", "messages": [{"role": "user", "content": "spend my money"}]})
            .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn web_pages_and_foreign_host_names_are_refused() {
    let (fake, proxy) = metered("allowed_origins = [\"http://localhost:3000\"]\n", "", "").await;
    let host = proxy.addr().to_string();
    let wait = Duration::from_secs(5);

    // The "simple request" any page can send: text/plain, foreign origin.
    let answer = raw(
        &proxy,
        &chat_request(&host, "origin: https://evil.example\r\n", "text/plain"),
        wait,
    )
    .await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(answer.contains("origin_not_allowed"), "{answer}");
    // A cross-site fetch that hides its origin.
    let answer = raw(
        &proxy,
        &chat_request(&host, "sec-fetch-site: cross-site\r\n", "application/json"),
        wait,
    )
    .await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    // No origin, but not JSON.
    let answer = raw(&proxy, &chat_request(&host, "", "text/plain"), wait).await;
    assert_eq!(status_of(&answer), 415, "{answer}");
    // DNS rebinding: a page's own name pointed at 127.0.0.1.
    let rebound = format!(
        "GET /api/v2/sessions HTTP/1.1\r\nhost: evil.example:{}\r\nconnection: close\r\n\r\n",
        proxy.addr().port()
    );
    let answer = raw(&proxy, rebound.as_bytes(), wait).await;
    assert_eq!(status_of(&answer), 421, "{answer}");
    assert!(answer.contains("host_not_allowed"), "{answer}");
    assert!(fake.received().is_empty(), "nothing was spent");

    // p402's own pages, SDKs without an origin, and the listed origin pass.
    let own = format!("origin: http://{host}\r\n");
    let answer = raw(&proxy, &chat_request(&host, &own, "application/json"), wait).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let answer = raw(
        &proxy,
        &chat_request("localhost", "", "application/json; charset=utf-8"),
        wait,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let preflight = format!(
        "OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\norigin: http://localhost:3000\r\naccess-control-request-method: POST\r\naccess-control-request-headers: content-type, authorization\r\nconnection: close\r\n\r\n"
    );
    let answer = raw(&proxy, preflight.as_bytes(), wait)
        .await
        .to_ascii_lowercase();
    assert_eq!(status_of(&answer), 204, "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: http://localhost:3000"),
        "{answer}"
    );
    assert!(answer.contains("access-control-allow-methods:"), "{answer}");
    let listed = "origin: http://localhost:3000\r\n";
    let answer = raw(
        &proxy,
        &chat_request(&host, listed, "application/json"),
        wait,
    )
    .await
    .to_ascii_lowercase();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: http://localhost:3000"),
        "{answer}"
    );
    assert!(
        answer.contains("access-control-expose-headers: x-p402-request-id"),
        "{answer}"
    );
    assert_eq!(fake.received().len(), 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_body_times_out_without_holding_a_place() {
    let fake = FakeProvider::start().await;
    // One request at a time: the slow sender must not be it.
    let proxy = TestProxy::start(
        Setup {
            server: "body_read_timeout_seconds = 1\n".to_string(),
            extra: format!("{METERED}\n[limits]\nconcurrent_requests = 1\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let mut slow = TcpStream::connect(proxy.addr()).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"model\":",
        proxy.addr()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    // Meanwhile a ready request is served.
    assert_eq!(proxy.chat(ask("metered", "ready")).await.status(), 200);
    let answer = read_answer(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(proxy.chat(ask("metered", "after")).await.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_not_text_get_a_400_and_the_proxy_serves_on() {
    let (_fake, proxy) = metered("", "", "").await;
    let host = proxy.addr().to_string();
    let wait = Duration::from_secs(5);
    // Not UTF-8 in the query: refused by the HTTP parser with a 400.
    let mut request = b"GET /api/v2/report?since=".to_vec();
    request.extend_from_slice(&[0xff, 0xfe]);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    let answer = raw(&proxy, &request, wait).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    // UTF-8, but a character where a unit is expected: once a panic.
    let request = format!(
        "GET /api/v2/report?since=7\u{e9} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    );
    let answer = raw(&proxy, request.as_bytes(), wait).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("invalid_query"), "{answer}");
    let report = proxy.get_json("/api/v2/report?since=7d").await;
    assert!(report.get("error").is_none(), "{report}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_get_a_503() {
    let (_fake, proxy) = metered("max_connections = 3\n", "", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        // A request started but not finished keeps the connection busy.
        stream
            .write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw(
        &proxy,
        format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", proxy.addr()).as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy
                .client
                .get(proxy.url("/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_error_events_and_bad_lines_leak_nothing() {
    let (fake, proxy) = metered("", "", "").await;
    let mut body = ask("metered", "hi");
    body["stream"] = json!(true);
    // A provider that echoes p402's key in its stream's error event.
    fake.push(Reply::Sse {
        events: vec![json!({"error": {"message": format!("Incorrect API key provided: {PROVIDER_KEY}"), "type": "invalid_request_error"}}).to_string()],
        gate: None,
    });
    let text = proxy.chat(body.clone()).await.text().await.expect("body");
    assert!(!text.contains(PROVIDER_KEY), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    // A line that is not JSON: its text stays upstream.
    let secret = "upstream-internal-detail-0123456789";
    fake.push(Reply::RawSse(vec![format!(
        "data: <html>{secret}</html>\n\n"
    )]));
    let text = proxy.chat(body).await.text().await.expect("body");
    assert!(!text.contains(secret), "{text}");
    let providers = proxy.get_json("/api/v2/providers").await.to_string();
    assert!(!providers.contains(secret), "{providers}");
    assert!(!providers.contains(PROVIDER_KEY));
    proxy.stop().await;
}

/// SSE content events carrying `piece`, `count` of them, `every` apart.
fn content_events(piece: &str, count: usize, every: Duration) -> Reply {
    let event = json!({"id": "c", "object": "chat.completion.chunk", "model": "metered",
        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
    let pieces = (0..count)
        .map(|_| bytes::Bytes::from(format!("data: {event}\n\n")))
        .collect();
    Reply::Body {
        status: 200,
        content_type: "text/event-stream",
        pieces,
        every,
        end: End::Hang,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_never_ends_is_cut_off_and_paid_for() {
    // By time: events keep coming, so the idle timeout never fires.
    let (fake, proxy) = metered("", "max_stream_seconds = 1\n", "").await;
    let session = proxy.session(5.0).await;
    let mut body = ask("metered", "go on for ever");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(100);
    body["p402"] = json!({"session_id": session});
    fake.push(content_events("word ", 10_000, Duration::from_millis(20)));
    let started = std::time::Instant::now();
    let response = proxy.chat(body.clone()).await;
    let id = response
        .headers()
        .get("x-p402-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("id")
        .to_string();
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends")
        .expect("body");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(text.contains("upstream_stream_too_long"), "{text}");
    let entry = proxy.ledger_entry(&id).await.expect("charged");
    assert_eq!(entry["estimated"], true, "{entry}");
    assert!(entry["output_tokens"].as_u64() > Some(0));
    proxy.stop().await;

    // By size: what a stream has sent is held only up to the limit.
    let (fake, proxy) = metered("", "max_response_bytes = 4096\n", "").await;
    fake.push(content_events(&"x".repeat(200), 10_000, Duration::ZERO));
    let mut body = ask("metered", "a lot");
    body["stream"] = json!(true);
    let text = tokio::time::timeout(Duration::from_secs(20), proxy.chat(body).await.text())
        .await
        .expect("the stream ends")
        .expect("body");
    assert!(text.contains("upstream_response_too_large"), "{text}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_go_over_plain_http_to_another_host() {
    let fake = FakeProvider::start().await;
    // Documentation address (TEST-NET-1): never contacted, only judged.
    let far = "http://192.0.2.10/v1";
    let setup = |allow: &str| {
        Setup {
        extra: format!(
            "{METERED}\n[providers.groq]\nbase_url = \"{far}\"\napi_key_env = \"{PROVIDER_KEY_ENV}\"\n{allow}\n"
        ),
        ..Setup::default()
    }
    .with_provider("openai", &fake)
    };
    let routable = |providers: &Value| {
        providers["data"]
            .as_array()
            .and_then(|d| d.iter().find(|p| p["name"] == "groq"))
            .cloned()
            .expect("groq")
    };
    let proxy = TestProxy::start(setup("")).await;
    let groq = routable(&proxy.get_json("/api/v2/providers").await);
    assert_eq!(groq["routable"], false, "{groq}");
    assert!(groq.to_string().contains("plain HTTP"), "{groq}");
    proxy.stop().await;
    let proxy = TestProxy::start(setup("allow_insecure = true")).await;
    let groq = routable(&proxy.get_json("/api/v2/providers").await);
    assert_eq!(groq["routable"], true, "{groq}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_keys_cached_answers_are_not_served_to_another() {
    let exact_only = "enabled = true\nmodel_dir = \"/dev/null/embedder\"\n";
    for (shared, other_key_hits) in [("", false), ("share_across_keys = true\n", true)] {
        let (fake, proxy) = metered(
            "api_keys = [\"key-one\", \"key-two\"]\n",
            "",
            &format!("{exact_only}{shared}"),
        )
        .await;
        let ask_as = |key: &'static str| {
            proxy
                .client
                .post(proxy.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&ask("metered", "What is the capital of France?"))
                .send()
        };
        let cached = |answer: &Value| answer["p402_metadata"]["cached"] == json!(true);
        let first: Value = ask_as("key-one")
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert!(!cached(&first));
        let again: Value = ask_as("key-one")
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert!(cached(&again), "the same key hits");
        let other: Value = ask_as("key-two")
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(cached(&other), other_key_hits, "{shared}");
        assert_eq!(fake.received().len(), if other_key_hits { 1 } else { 2 });
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_open_a_non_loopback_listener_to_everyone() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        server: "api_keys = [\"k\"]\n".to_string(),
        extra: METERED.to_string(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    let proxy = TestProxy::start_edited(setup, |text| {
        let wildcard = text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
        assert!(wildcard.contains("0.0.0.0:0"));
        wildcard
    })
    .await;
    let data = proxy.dir.path().join("data");
    // The file now says loopback and no keys; the socket is still 0.0.0.0.
    let open = Setup {
        extra: METERED.to_string(),
        ..Setup::default()
    }
    .with_provider("openai", &fake)
    .toml(&data);
    std::fs::write(&proxy.config_path, open).expect("write");
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.health().await["config"]["status"] == "error"
        })
        .await,
        "the reload is refused"
    );
    let health = proxy.health().await;
    assert_eq!(
        health["config"]["error_at"], "[server] api_keys",
        "{health}"
    );
    let status: serde_json::Value = proxy
        .client
        .get(proxy.url("/api/v2/config"))
        .bearer_auth("k")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("not loopback")),
        "{status}"
    );
    // Keys are still required.
    let response = proxy.chat(ask("metered", "hi")).await;
    assert_eq!(response.status(), 401);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_guard_compare_and_session_writes_too() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n[limits]\nrequests_per_minute = 2\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let compare = || {
        proxy
            .client
            .post(proxy.url("/api/v2/providers/compare"))
            .json(&ask("metered", "how much?"))
            .send()
    };
    assert_eq!(compare().await.expect("sent").status(), 200);
    let create = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .json(&json!({"budget_usd": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(create.status(), 201);
    let limited = compare().await.expect("sent");
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, 429, "rate_limited").await;
    let limited = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .json(&json!({"budget_usd": 1}))
        .send()
        .await
        .expect("sent");
    expect_error(limited, 429, "rate_limited").await;
    // Reading is not limited.
    assert_eq!(
        proxy
            .client
            .get(proxy.url("/api/v2/sessions"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_header_lists_are_bounded() {
    let (_fake, proxy) = metered("", "", "").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let ok = h2.get(proxy.url("/health")).send().await.expect("h2 works");
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let huge = "a".repeat(100 * 1024);
    let refused = h2
        .get(proxy.url("/health"))
        .header("x-filler", huge)
        .send()
        .await;
    match refused {
        Ok(response) => assert_eq!(response.status(), 431, "{response:?}"),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("h2"),
            "{e}"
        ),
    }
    // The server is still there for everyone else.
    assert_eq!(
        proxy
            .client
            .get(proxy.url("/health"))
            .send()
            .await
            .expect("h1")
            .status(),
        200
    );
    proxy.stop().await;
}

/// A path or a method a provider could read otherwise than p402 never
/// reaches it: dot segments (raw, or percent-encoded, slashes too) once
/// took an image generation through `/v1/files/`, a path free under a
/// budget, and a lowercase `post` skipped the budget's check.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_and_odd_methods_never_reach_a_provider() {
    let (fake, proxy) = metered("", "", "").await;
    let session = proxy.session(0.01).await;
    let host = proxy.addr().to_string();
    let wait = Duration::from_secs(5);
    let body = json!({"model": "metered", "prompt": "a cat", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let send = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (method, path, code) in [
        (
            "POST",
            format!("/s/{session}/v1/files/../images/generations"),
            "invalid_path",
        ),
        (
            "POST",
            format!("/s/{session}/v1/files/..%2fimages%2fgenerations"),
            "invalid_path",
        ),
        (
            "POST",
            format!("/s/{session}/v1/files/%2e%2e/chat/completions"),
            "invalid_path",
        ),
        (
            "POST",
            "/v1/files/../chat/completions".to_string(),
            "invalid_path",
        ),
        ("POST", "/v1/./chat/completions".to_string(), "invalid_path"),
        (
            "post",
            format!("/s/{session}/v1/images/generations"),
            "invalid_method",
        ),
        ("Post", "/v1/chat/completions".to_string(), "invalid_method"),
    ] {
        let answer = raw(&proxy, send(method, &path).as_bytes(), wait).await;
        assert_eq!(status_of(&answer), 400, "{method} {path}: {answer}");
        assert!(answer.contains(code), "{method} {path}: {answer}");
    }
    // A priced path spelled with an escape is priced all the same.
    let answer = raw(
        &proxy,
        send("POST", &format!("/s/{session}/v1/%69mages/generations")).as_bytes(),
        wait,
    )
    .await;
    assert_eq!(status_of(&answer), 402, "{answer}");
    // A path that only starts like a free one is not free.
    let answer = raw(
        &proxy,
        send("POST", &format!("/s/{session}/v1/files-and-images")).as_bytes(),
        wait,
    )
    .await;
    assert_eq!(status_of(&answer), 402, "{answer}");
    assert!(fake.received().is_empty(), "{:?}", fake.received());
    // The proxy serves on.
    assert_eq!(proxy.chat(ask("metered", "still here")).await.status(), 200);
    proxy.stop().await;
}

/// A header value that is not UTF-8 gets a 400 (as the README says),
/// on a model call and on a forwarded path alike, and is never passed on.
#[tokio::test(flavor = "multi_thread")]
async fn header_values_that_are_not_text_get_a_400() {
    let (fake, proxy) = metered("", "", "").await;
    let host = proxy.addr().to_string();
    let wait = Duration::from_secs(5);
    for path in ["/v1/chat/completions", "/v1/files"] {
        let body = ask("metered", "hi").to_string();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-trace: caf",
            body.len()
        )
        .into_bytes();
        request.push(0xe9);
        request.extend_from_slice(format!("\r\nconnection: close\r\n\r\n{body}").as_bytes());
        let answer = raw(&proxy, &request, wait).await;
        assert_eq!(status_of(&answer), 400, "{path}: {answer}");
        assert!(answer.contains("invalid_header"), "{path}: {answer}");
        assert!(answer.contains("x-trace"), "{path}: {answer}");
    }
    assert!(fake.received().is_empty());
    proxy.stop().await;
}

/// A forwarded upload streams through (it is not read whole first), so
/// its sender gets the body deadline too: one that trickles is cut off
/// with a 408 and lets go of its place among `concurrent_requests`.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_forwarded_upload_is_cut_off_and_lets_go_of_its_place() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            server: "body_read_timeout_seconds = 1\n".to_string(),
            upstream: "first_byte_timeout_seconds = 120\n".to_string(),
            extra: format!("{METERED}\n[limits]\nconcurrent_requests = 1\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let mut slow = TcpStream::connect(proxy.addr()).await.expect("connect");
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nhost: {}\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 5000\r\n\r\n--b\r\n",
        proxy.addr()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    // Well within the upstream's 120 s: the client's deadline ends it.
    let answer = read_answer(&mut slow, Duration::from_secs(30)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(proxy.chat(ask("metered", "after")).await.status(), 200);
    proxy.stop().await;
}
