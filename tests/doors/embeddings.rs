//! `/v1/embeddings`: forwarded to the model's provider, priced from the
//! catalog, charged and ledgered, and answered again from the cache only
//! for the very same input.

use crate::common::*;
use serde_json::{json, Value};

fn vectors(model: &str, prompt_tokens: u64) -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.011, -0.022, 0.033]}],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    })
}

async fn embed(proxy: &TestProxy, body: Value) -> reqwest::Response {
    proxy
        .client
        .post(proxy.url("/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_are_priced_ledgered_and_cached_exactly() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            cache: "enabled = true\nmodel_dir = \"/dev/null/embedder\"\n".into(),
            ..Setup::default()
        }
        .with_provider("openai", &openai),
    )
    .await;
    let session = proxy.session(1.0).await;
    openai.push(Reply::Json(
        200,
        vectors("text-embedding-3-small", 5_000_000),
    ));
    let body = json!({"model": "text-embedding-3-small", "input": "hello world",
        "p402": {"session_id": session}});
    let response = embed(&proxy, body.clone()).await;
    assert_eq!(response.status(), 200);
    let cost: f64 = response
        .headers()
        .get("x-p402-cost-usd")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("cost header");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["data"][0]["embedding"],
        json!([0.011, -0.022, 0.033])
    );
    // 5M tokens at $0.02 per million.
    assert!((cost - 0.1).abs() < 1e-9, "{cost}");
    assert_eq!(answer["p402_metadata"]["cached"], false);
    let id = answer["p402_metadata"]["request_id"]
        .as_str()
        .expect("id")
        .to_string();
    let sent = openai.received();
    assert_eq!(sent[0].path, "/v1/embeddings");
    assert_eq!(sent[0].body["model"], "text-embedding-3-small");
    assert!(sent[0].body.get("p402").is_none());
    assert_eq!(
        sent[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    let entry = proxy.ledger_entry(&id).await.expect("ledger entry");
    assert_eq!(entry["input_tokens"], 5_000_000);
    assert_eq!(entry["model"], "text-embedding-3-small");
    let view = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(view["requests"], 1, "{view}");

    // The very same input: the same vectors, free, from the cache.
    let again = embed(&proxy, body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again
            .headers()
            .get("x-p402-cached")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["data"], answer["data"]);
    assert_eq!(
        openai.received().len(),
        1,
        "the provider was not asked again"
    );

    // Another input is not "close enough": it goes to the provider.
    openai.push(Reply::Json(200, vectors("text-embedding-3-small", 3)));
    let other = embed(
        &proxy,
        json!({"model": "text-embedding-3-small", "input": "hello world!"}),
    )
    .await;
    assert_eq!(other.status(), 200);
    assert_eq!(openai.received().len(), 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_that_cannot_pay_for_the_input_refuses_it() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let session = proxy.session(0.0000001).await;
    let long = "word ".repeat(20_000);
    let response = embed(
        &proxy,
        json!({"model": "text-embedding-3-large", "input": long, "p402": {"session_id": session}}),
    )
    .await;
    expect_error(response, 402, "SESSION_BUDGET_EXCEEDED").await;
    assert!(openai.received().is_empty());
    proxy.stop().await;
}

/// Every request leaves its count in `/metrics` by the door it came in by:
/// embeddings and forwarded calls as well as chat.
#[tokio::test(flavor = "multi_thread")]
async fn side_doors_are_counted_by_door() {
    let openai = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &openai)).await;
    let _ = proxy.chat_json(ask("gpt-4o-mini", "hello")).await;
    openai.push(Reply::Json(200, vectors("text-embedding-3-small", 3)));
    let response = embed(
        &proxy,
        json!({"model": "text-embedding-3-small", "input": "hello"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    openai.push(Reply::Json(
        200,
        json!({"id": "modr-1", "model": "omni-moderation-latest", "results": [{"flagged": false}]}),
    ));
    let response = proxy
        .client
        .post(proxy.url("/v1/moderations"))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.expect("body");
    // A token count is free, and counted by its door all the same.
    let response = proxy
        .client
        .post(proxy.url("/v1/messages/count_tokens"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // The forwarded call's line is written once its body has gone through.
    let scrape = || async {
        proxy
            .client
            .get(proxy.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let written = eventually(std::time::Duration::from_secs(10), || async {
        scrape().await.contains("door=\"forward\"")
    })
    .await;
    let metrics = scrape().await;
    assert!(written, "{metrics}");
    let count = |door: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("p402_requests_total{") && l.contains(&format!("door=\"{door}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(
        (
            count("chat"),
            count("embeddings"),
            count("forward"),
            count("count_tokens")
        ),
        (1, 1, 1, 1),
        "{metrics}"
    );
    proxy.stop().await;
}
