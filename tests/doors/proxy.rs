//! The proxy core end to end: a real p402 on loopback in front of fake
//! OpenAI-format providers.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

async fn proxy_with_openai() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    (fake, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn non_stream_round_trip_adds_metadata_and_uses_the_provider_key() {
    let (fake, proxy) = proxy_with_openai().await;
    let mut body = ask("gpt-4o-mini", "Say hello");
    body["p402"] = json!({"mode": "passthrough", "cache": false});
    body["temperature"] = json!(0.3);
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let answer: Value = response.json().await.expect("json");

    assert_eq!(answer["choices"][0]["message"]["content"], "Hello there!");
    let meta = &answer["p402_metadata"];
    assert_eq!(meta["provider"], "openai");
    assert_eq!(meta["model"], "gpt-4o-mini");
    assert_eq!(meta["requested_model"], "gpt-4o-mini");
    assert_eq!(meta["mode"], "passthrough");
    assert_eq!(meta["cached"], false);
    assert_eq!(meta["input_tokens"], 12);
    assert_eq!(meta["output_tokens"], 3);
    // 12 * 0.15 + 3 * 0.60 = 3.6 $/M tokens -> $0.0000036
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.0000036));
    assert_eq!(meta["direct_cost"].as_f64(), Some(0.0000036));
    assert_eq!(meta["savings"].as_f64(), Some(0.0));
    assert!(meta["cost_source"]
        .as_str()
        .is_some_and(|s| s.starts_with("catalog ")));
    assert_eq!(meta["failover"], json!([]));
    let id = meta["request_id"].as_str().expect("request id");
    assert!(id.starts_with("req_"));
    assert!(meta["latency_ms"].is_u64() && meta["provider_latency_ms"].is_u64());

    assert_eq!(headers["x-p402-request-id"], id);
    assert_eq!(headers["x-p402-provider"], "openai");
    assert_eq!(headers["x-p402-model"], "gpt-4o-mini");
    assert_eq!(headers["x-p402-cached"], "false");
    assert_eq!(headers["x-p402-cost-usd"], "0.000003600");
    assert_eq!(headers["x-p402-savings"], "0.000000000");

    let received = fake.received();
    assert_eq!(received.len(), 1);
    let upstream = &received[0];
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(
        upstream.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str(),
        "the provider's key, never the client's"
    );
    assert!(upstream.body.get("p402").is_none(), "p402 object stripped");
    assert_eq!(upstream.body["temperature"], 0.3);
    assert_eq!(upstream.body["model"], "gpt-4o-mini");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn savings_are_priced_against_the_requested_model() {
    // The requested model's provider has its own price table entry via
    // [[models]]; the answer is billed at the served model's prices.
    let fake = FakeProvider::start().await;
    let setup = Setup {
        extra: "[[models]]\nid = \"cheap-model\"\nprovider = \"openai\"\ninput_per_mtok = 0.10\noutput_per_mtok = 0.40\n".into(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    let proxy = TestProxy::start(setup).await;
    let mut body = ask("gpt-4o", "hi");
    body["p402"] = json!({"model": "cheap-model"});
    let answer: Value = proxy.chat_json(body).await;
    let meta = &answer["p402_metadata"];
    assert_eq!(meta["model"], "cheap-model");
    assert_eq!(meta["requested_model"], "gpt-4o");
    assert_eq!(meta["cost_source"], "config");
    // cost: 12 * 0.10 + 3 * 0.40 = 2.4 $/M; direct (gpt-4o): 12 * 2.5 + 3 * 10 = 60 $/M
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.0000024));
    assert_eq!(meta["direct_cost"].as_f64(), Some(0.00006));
    assert_eq!(meta["savings"].as_f64(), Some(0.0000576));
    assert_eq!(fake.received()[0].body["model"], "cheap-model");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_without_usage_request_hides_usage_and_ends_with_metadata() {
    let (fake, proxy) = proxy_with_openai().await;
    let mut body = ask("gpt-4o-mini", "Say hello");
    body["stream"] = json!(true);
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-p402-provider"], "openai");
    let text = response.text().await.expect("body");
    let events = sse_data(&text);

    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk json"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there!");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage for a client that did not ask"
    );
    assert!(text.contains("\"finish_reason\":\"stop\""));
    // SPEC section 3 (amended): no chunk without a choice the client did
    // not ask for; the figures ride on the one that finishes the choice.
    assert!(
        chunks.iter().all(|c| c["choices"][0].is_object()),
        "{chunks:?}"
    );
    let last = chunks.last().expect("metadata chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["object"], "chat.completion.chunk");
    assert_eq!(last["id"], "chatcmpl-stream1");
    let meta = &last["p402_metadata"];
    assert_eq!(meta["input_tokens"], 12);
    assert_eq!(meta["output_tokens"], 3);
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.0000036));

    let upstream = &fake.received()[0].body;
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "p402 always asks upstream for usage"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_with_usage_request_forwards_the_usage_chunk() {
    let (_fake, proxy) = proxy_with_openai().await;
    let mut body = ask("gpt-4o-mini", "Say hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = proxy.chat(body).await.text().await.expect("body");
    let events = sse_data(&text);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk json"))
        .collect();
    let usage_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["usage"].is_object() && c["choices"] == json!([]))
        .collect();
    assert_eq!(usage_chunks.len(), 1);
    assert_eq!(usage_chunks[0]["usage"]["total_tokens"], 15);
    // The metadata chunk comes after the usage chunk, right before [DONE].
    let last = chunks.last().expect("last");
    assert!(last.get("p402_metadata").is_some());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_chunks_are_forwarded_as_they_arrive() {
    let (fake, proxy) = proxy_with_openai().await;
    let gate = Arc::new(Notify::new());
    fake.push(Reply::Sse {
        events: stream_events("gpt-4o-mini", &["first", " second"], true),
        gate: Some(gate.clone()),
    });
    let mut body = ask("gpt-4o-mini", "hi");
    body["stream"] = json!(true);
    let response = proxy.chat(body).await;
    let mut stream = response.bytes_stream();
    // The upstream holds everything after its first event until the gate
    // opens; p402 must hand that first event over before then.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the first chunk arrives while upstream is still generating")
        .expect("a chunk")
        .expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("first") && rest.contains(" second"));
    assert!(rest.ends_with("data: [DONE]\n\n"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_errors_use_the_spec_shape() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        server: "max_body_bytes = 2048".into(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    let proxy = TestProxy::start(setup).await;
    let post = |body: &'static str| {
        proxy
            .client
            .post(proxy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    expect_error(post("{not json").await.expect("sent"), 400, "invalid_json").await;
    expect_error(
        post(r#"{"model":"gpt-4o"}"#).await.expect("sent"),
        400,
        "missing_messages",
    )
    .await;
    expect_error(
        post(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"p402":{"max_kost":1}}"#)
            .await
            .expect("sent"),
        400,
        "invalid_p402",
    )
    .await;
    let error = expect_error(
        post(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"p402":{"mode":"cheapest"}}"#)
            .await
            .expect("sent"),
        400,
        "invalid_p402",
    )
    .await;
    assert!(error["message"]
        .as_str()
        .unwrap_or("")
        .contains("unknown mode"));
    let bad_header = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header("x-p402-mode", "fastest")
        .json(&ask("gpt-4o", "x"))
        .send()
        .await
        .expect("sent");
    expect_error(bad_header, 400, "invalid_mode").await;

    // Over max_body_bytes, announced by Content-Length...
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4000)}]});
    let response = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .expect("sent");
    expect_error(response, 413, "payload_too_large").await;
    // ...and streamed in chunks without a length, caught while reading.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .expect("sent");
    expect_error(response, 413, "payload_too_large").await;

    let response = proxy
        .client
        .get(proxy.url("/api/v2/nothing"))
        .send()
        .await
        .expect("sent");
    // (Unknown paths under /v1/ are OpenAI's: they are forwarded, see
    // tests/doors/forward.rs.)
    expect_error(response, 404, "not_found").await;
    let response = proxy
        .client
        .get(proxy.url("/v1/chat/completions"))
        .send()
        .await
        .expect("sent");
    expect_error(response, 405, "method_not_allowed").await;
    let response = proxy
        .chat(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "p402": {"session_id": "ses_nope"}}))
        .await;
    expect_error(response, 404, "session_not_found").await;

    assert!(
        fake.received().is_empty(),
        "no bad request reached the provider"
    );
    // The proxy still serves after all of that.
    assert_eq!(
        proxy
            .chat(ask("gpt-4o-mini", "still there?"))
            .await
            .status(),
        200
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_map_to_502_504_and_client_errors_pass_through() {
    let (fake, proxy) = proxy_with_openai().await;

    fake.push(Reply::Json(
        500,
        json!({"error": {"message": "boom", "type": "server_error"}}),
    ));
    let error = expect_error(
        proxy.chat(ask("gpt-4o-mini", "x")).await,
        502,
        "upstream_failed",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("openai/gpt-4o-mini: 500"),
        "{error}"
    );

    let upstream_400 = json!({"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}});
    fake.push(Reply::Json(400, upstream_400.clone()));
    let response = proxy.chat(ask("gpt-4o-mini", "x")).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("x-p402-request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body, upstream_400,
        "a 4xx the request caused goes back unchanged"
    );

    fake.push(Reply::Json(
        200,
        json!({"error": {"message": "overloaded"}}),
    ));
    expect_error(
        proxy.chat(ask("gpt-4o-mini", "x")).await,
        502,
        "upstream_failed",
    )
    .await;

    fake.push(Reply::Hang);
    let error = expect_error(
        proxy.chat(ask("gpt-4o-mini", "x")).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("timeout"),
        "{error}"
    );

    // A stream that fails before its first byte still gets a real status.
    fake.push(Reply::Json(
        503,
        json!({"error": {"message": "unavailable"}}),
    ));
    let mut body = ask("gpt-4o-mini", "x");
    body["stream"] = json!(true);
    expect_error(proxy.chat(body).await, 502, "upstream_failed").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_502() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let setup = Setup {
        providers: vec![("openai".into(), format!("http://127.0.0.1:{port}/v1"))],
        ..Setup::default()
    };
    let proxy = TestProxy::start(setup).await;
    let error = expect_error(
        proxy.chat(ask("gpt-4o-mini", "x")).await,
        502,
        "upstream_failed",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("connect_error"),
        "{error}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mid_stream_failure_becomes_an_error_event() {
    let (fake, proxy) = proxy_with_openai().await;
    let mut events = stream_events("gpt-4o-mini", &["partial"], true);
    events.truncate(2); // role chunk and one piece, then the upstream closes
    fake.push(Reply::Sse { events, gate: None });
    let mut body = ask("gpt-4o-mini", "x");
    body["stream"] = json!(true);
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "upstream_stream_ended", "{text}");
    assert!(!text.contains("[DONE]"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_models() {
    let (_fake, proxy) = proxy_with_openai().await;
    let response = proxy
        .client
        .get(proxy.url("/health"))
        .send()
        .await
        .expect("health");
    assert!(response.headers()["x-p402-request-id"]
        .to_str()
        .is_ok_and(|id| id.starts_with("req_")));
    let health: Value = response.json().await.expect("json");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    // openai has the test key; ollama is keyless and not running here.
    assert_eq!(health["providers"], 1);
    assert_eq!(health["cache"], "disabled");
    assert!(health["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(health["config"]["status"], "ok");
    let same: Value = proxy
        .client
        .get(proxy.url("/api/v2/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(same["status"], "healthy");

    let models: Value = proxy
        .client
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini"));
    assert!(ids.contains(&"llama3.2") || !ids.is_empty());
    assert!(models["data"]
        .as_array()
        .expect("data")
        .iter()
        .all(|m| m["object"] == "model"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_api_keys_guard_everything_but_health() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        server: "api_keys = [\"p402-local-key\"]".into(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    let proxy = TestProxy::start(setup).await;
    let no_key = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .json(&ask("gpt-4o-mini", "x"))
        .send()
        .await
        .expect("sent");
    expect_error(no_key, 401, "missing_api_key").await;
    // TestProxy::chat sends a client key that is not a local key.
    expect_error(
        proxy.chat(ask("gpt-4o-mini", "x")).await,
        401,
        "invalid_api_key",
    )
    .await;
    let ok = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("p402-local-key")
        .json(&ask("gpt-4o-mini", "x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        fake.received()[0].headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    assert_eq!(proxy.health().await["status"], "healthy");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_http2_cleartext_with_prior_knowledge() {
    let (_fake, proxy) = proxy_with_openai().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .post(proxy.url("/v1/chat/completions"))
        .json(&ask("gpt-4o-mini", "over h2c"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["p402_metadata"]["provider"], "openai");
    proxy.stop().await;
}

/// An unbudgeted passthrough request is routed on a bound of its prompt's
/// tokens, not a count; when the answer reports no usage the prompt is
/// counted after all, so the estimate is the same as a budgeted request's.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_without_usage_is_estimated_from_an_exact_count_even_unbudgeted() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let mut no_usage = completion("metered", "Hello there!", 0, 0);
    if let Some(object) = no_usage.as_object_mut() {
        object.remove("usage");
    }
    let question = "Explain, in two sentences, what a write-ahead log is for.";
    let session = proxy.session(1.0).await;
    let mut estimates = Vec::new();
    for budgeted in [true, false] {
        fake.push(Reply::Json(200, no_usage.clone()));
        let mut body = ask("metered", question);
        if budgeted {
            body["p402"] = json!({"session_id": session});
        }
        let response = proxy.chat(body).await;
        assert_eq!(response.status(), 200);
        let id = request_id(&response);
        let entry = proxy.ledger_entry(&id).await.expect("ledger entry");
        assert_eq!(entry["estimated"], true, "{entry}");
        estimates.push(entry["input_tokens"].clone());
    }
    assert_eq!(estimates[0], estimates[1], "{estimates:?}");
    assert!(
        estimates[0].as_u64().is_some_and(|n| n > 10 && n < 40),
        "{estimates:?}"
    );
    proxy.stop().await;
}

/// A request p402 changes nothing in goes upstream as the client's own
/// bytes; one it changes, or one whose meaning a parser could read
/// differently (a key written twice), goes as p402 wrote it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_body_goes_upstream_byte_for_byte() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let send = |body: &'static str| {
        proxy
            .client
            .post(proxy.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let as_written = "{ \"model\":\"metered\",  \"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}],\n \"temperature\": 1.0000000000000002, \"vendor_extra\": {\"b\": 1, \"a\": 2}}";
    assert_eq!(send(as_written).await.expect("sent").status(), 200);
    assert_eq!(fake.received()[0].raw.as_ref(), as_written.as_bytes());

    // A key written twice: p402 reads the last, and so does the provider.
    let twice = r#"{"model":"metered","messages":[{"role":"user","content":"hi"}],"temperature":0.1,"temperature":0.9}"#;
    assert_eq!(send(twice).await.expect("sent").status(), 200);
    let sent = &fake.received()[1];
    assert_ne!(sent.raw.as_ref(), twice.as_bytes());
    assert_eq!(sent.body["temperature"], 0.9);
    assert_eq!(
        String::from_utf8_lossy(&sent.raw)
            .matches("temperature")
            .count(),
        1
    );

    // p402's own options are taken out.
    let options =
        r#"{"model":"metered","messages":[{"role":"user","content":"hi"}],"p402":{"cache":false}}"#;
    assert_eq!(send(options).await.expect("sent").status(), 200);
    assert!(fake.received()[2].body.get("p402").is_none());

    // The deprecated limit name is renamed for OpenAI.
    let old_name =
        r#"{"model":"metered","messages":[{"role":"user","content":"hi"}],"max_tokens":20}"#;
    assert_eq!(send(old_name).await.expect("sent").status(), 200);
    let sent = &fake.received()[3];
    assert_eq!(sent.body["max_completion_tokens"], 20);
    assert!(sent.body.get("max_tokens").is_none());
    proxy.stop().await;
}

/// A provider's own name for a model (Fireworks' `accounts/...` path) is
/// not what the client reads: `model` is the catalog id of the model that
/// served, the same in a whole answer and in every chunk of a stream.
#[tokio::test(flavor = "multi_thread")]
async fn answers_name_the_served_model_by_its_catalog_id() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("fireworks", &fake)).await;
    let upstream = "accounts/fireworks/models/glm-5p3";
    fake.push(Reply::Json(200, completion(upstream, "Hi.", 10, 2)));
    let answer = proxy.chat_json(ask("glm-5p3", "Say hi")).await;
    assert_eq!(answer["model"], "glm-5p3", "{answer}");
    assert_eq!(fake.received()[0].body["model"], upstream);

    fake.push(Reply::Sse {
        events: stream_events(upstream, &["Hi", "."], true),
        gate: None,
    });
    let mut body = ask("glm-5p3", "Say hi");
    body["stream"] = json!(true);
    let text = proxy.chat(body).await.text().await.expect("body");
    let chunks = stream_chunks(&text);
    assert!(!chunks.is_empty());
    for chunk in &chunks {
        assert_eq!(chunk["model"], "glm-5p3", "{chunk}");
    }
    proxy.stop().await;
}
