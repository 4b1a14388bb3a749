//! The rest of OpenAI's API under `/v1/`: forwarded as it is to the
//! passthrough provider with its key, uploads and all, answered as the
//! provider answered, and ledgered as unpriced; never usable to spend
//! outside a budget.

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn other_paths_are_forwarded_as_they_are_and_ledgered() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let file = json!({"id": "file-abc", "object": "file", "bytes": 11, "purpose": "batch"});
    openai.push(Reply::Json(200, file.clone()));
    // A multipart upload, as the openai SDK sends `files.create`.
    let form = "--p402-boundary\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
        --p402-boundary\r\ncontent-disposition: form-data; name=\"file\"; filename=\"data.jsonl\"\r\n\
        content-type: application/octet-stream\r\n\r\nhello world\r\n--p402-boundary--\r\n";
    let response = proxy
        .client
        .post(proxy.url("/v1/files?note=1"))
        .header("authorization", "Bearer sk-the-clients-own")
        .header(
            "content-type",
            "multipart/form-data; boundary=p402-boundary",
        )
        .body(form)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-p402-provider")
            .and_then(|v| v.to_str().ok()),
        Some("openai")
    );
    let id = response
        .headers()
        .get("x-p402-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_string();
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer, file);
    let sent = openai.received();
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].path, "/v1/files");
    assert_eq!(sent[0].query.as_deref(), Some("note=1"));
    assert!(sent[0]
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data")));
    assert!(String::from_utf8_lossy(&sent[0].raw).contains("hello world"));
    assert_eq!(
        sent[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    let entry = proxy.ledger_entry(&id).await.expect("ledger entry");
    assert_eq!(entry["forwarded"]["endpoint"], "POST /v1/files");
    assert_eq!(entry["forwarded"]["status"], 200);
    assert!(
        entry["forwarded"]["bytes_in"]
            .as_u64()
            .is_some_and(|n| n > 11),
        "{entry}"
    );
    assert_eq!(entry["cost_nanos"], 0);

    // A stored response is read and deleted at OpenAI.
    openai.push(Reply::Json(
        200,
        json!({"id": "resp_1", "object": "response"}),
    ));
    let got = proxy
        .client
        .get(proxy.url("/v1/responses/resp_1/input_items"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    openai.push(Reply::Json(
        404,
        json!({"error": {"message": "No response found", "type": "invalid_request_error"}}),
    ));
    let gone = proxy
        .client
        .delete(proxy.url("/v1/responses/resp_2"))
        .send()
        .await
        .expect("delete");
    assert_eq!(gone.status(), 404, "the provider's own answer, not p402's");
    let sent = openai.received();
    assert_eq!(
        (sent[1].method.as_str(), sent[1].path.as_str()),
        ("GET", "/v1/responses/resp_1/input_items")
    );
    assert_eq!(
        (sent[2].method.as_str(), sent[2].path.as_str()),
        ("DELETE", "/v1/responses/resp_2")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_cannot_be_spent_through_a_path_p402_cannot_price() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let session = proxy.session(5.0).await;
    let refused = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/audio/speech")))
        .json(&json!({"model": "tts-1", "input": "hello", "voice": "alloy"}))
        .send()
        .await
        .expect("send");
    let error = expect_error(refused, 402, "unpriced_endpoint").await;
    assert!(error["message"]
        .as_str()
        .is_some_and(|m| m.contains("/v1/audio/speech")));
    assert!(openai.received().is_empty());
    // Free paths still go through in a session.
    openai.push(Reply::Json(200, json!({"id": "modr-1", "results": []})));
    let allowed = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/moderations")))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .expect("send");
    assert_eq!(allowed.status(), 200);
    assert_eq!(openai.received()[0].path, "/v1/moderations");
    proxy.stop().await;
}

/// What held against the review, kept: a forwarded path cannot name
/// another host (`@`, `//`, a backslash, an absolute URL in the path),
/// and the provider key goes only to the configured provider.
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_path_cannot_send_the_key_elsewhere() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let openai = FakeProvider::start().await;
    let elsewhere = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let other = elsewhere.addr;
    for path in [
        format!("/v1/files@{other}/x"),
        format!("/v1//{other}/files"),
        format!("/v1/files/..;@{other}/x"),
        format!("/v1/http://{other}/v1/files"),
        format!("/v1/%2F%2F{other}/files"),
        format!("/v1/files\\\\{other}"),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            proxy.addr()
        );
        let mut stream = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(answer.starts_with("HTTP/1.1 "), "{path}: {answer}");
    }
    assert!(
        elsewhere.received().is_empty(),
        "another host was reached: {:?}",
        elsewhere.received()
    );
    for received in openai.received() {
        assert!(received.path.starts_with("/v1/"), "{}", received.path);
    }
    proxy.stop().await;
}
