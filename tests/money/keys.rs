//! With local keys, one key sees only its own sessions: not in the latest
//! requests, not in an audited entry, not in the report by session, not in
//! the metrics. Totals stay visible to all; clearing the cache, which
//! touches every key's answers, is the operator's (the first key's).

use crate::common::*;
use serde_json::{json, Value};

const ADMIN: &str = "k-operator";
const K1: &str = "k1-alice";
const K2: &str = "k2-bob";

async fn get(proxy: &TestProxy, key: &str, path: &str) -> reqwest::Response {
    proxy
        .client
        .get(proxy.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("sent")
}

async fn get_json(proxy: &TestProxy, key: &str, path: &str) -> Value {
    let response = get(proxy, key, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_never_sees_another_keys_sessions() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            server: format!("api_keys = [\"{ADMIN}\", \"{K1}\", \"{K2}\"]\n"),
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let created: Value = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .bearer_auth(K1)
        .json(&json!({"budget_usd": 1}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let session = created["session_id"].as_str().expect("id").to_string();
    let mut body = ask("metered", "alice's question");
    body["p402"] = json!({"session_id": session});
    let answer: Value = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(K1)
        .json(&body)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = answer["p402_metadata"]["request_id"]
        .as_str()
        .expect("request id")
        .to_string();
    // And one request of k2's own, in no session.
    let theirs: Value = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(K2)
        .json(&ask("metered", "bob's question"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        theirs["p402_metadata"]["request_id"].is_string(),
        "{theirs}"
    );

    // The owner sees its session everywhere.
    let latest = get_json(&proxy, K1, "/api/v2/requests").await;
    assert!(latest.to_string().contains(&session), "{latest}");
    assert_eq!(
        get(&proxy, K1, &format!("/api/v2/requests/{id}"))
            .await
            .status(),
        200
    );
    let report = get_json(&proxy, K1, "/api/v2/report?by=session").await;
    assert!(report.to_string().contains(&session), "{report}");
    let metrics = get(&proxy, K1, "/metrics")
        .await
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(&format!("session:{session}")), "{metrics}");

    // Another key sees none of it, but the totals are whole.
    let latest = get_json(&proxy, K2, "/api/v2/requests").await;
    assert!(!latest.to_string().contains(&session), "{latest}");
    assert_eq!(latest["data"].as_array().map(Vec::len), Some(1), "{latest}");
    let refused = get(&proxy, K2, &format!("/api/v2/requests/{id}")).await;
    expect_error(refused, 404, "request_not_found").await;
    let report = get_json(&proxy, K2, "/api/v2/report?by=session").await;
    assert!(!report.to_string().contains(&session), "{report}");
    assert_eq!(report["total"]["requests"], 2, "{report}");
    assert!(
        report.to_string().contains("(other keys' sessions)"),
        "{report}"
    );
    let metrics = get(&proxy, K2, "/metrics")
        .await
        .text()
        .await
        .expect("text");
    assert!(!metrics.contains(&session), "{metrics}");
    // A scrape by k1 in between leaves nothing of its for k2 either.
    let _ = get(&proxy, K1, "/metrics").await.text().await;
    let metrics = get(&proxy, K2, "/metrics")
        .await
        .text()
        .await
        .expect("text");
    assert!(!metrics.contains(&session), "{metrics}");

    // Clearing every key's cached answers is the operator's.
    let clear = |key: &'static str| {
        proxy
            .client
            .post(proxy.url("/api/v2/cache/clear"))
            .bearer_auth(key)
            .send()
    };
    expect_error(clear(K2).await.expect("sent"), 403, "admin_only").await;
    assert_eq!(clear(ADMIN).await.expect("sent").status(), 200);
    proxy.stop().await;
}
