//! Clients that walk away: once a request is sent upstream the provider
//! bills it, so p402 reads the answer and settles it whether or not anyone
//! is still listening (SPEC §5). Budgets stay a cap for agents that cancel,
//! users who press Ctrl-C and clients with short timeouts.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The fake's usage: 12 prompt and 3 completion tokens of `metered`.
const ACTUAL_COST: f64 = 0.003012;

async fn setup() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n[budgets.global]\nbudget_usd = 100\nperiod = \"month\"\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

fn in_session(session: &str, stream: bool) -> Value {
    let mut body = ask("metered", "answer slowly");
    body["max_tokens"] = json!(10);
    body["stream"] = json!(stream);
    body["p402"] = json!({"session_id": session});
    body
}

async fn session_view(proxy: &TestProxy, session: &str) -> Value {
    proxy.get_json(&format!("/api/v2/sessions/{session}")).await
}

async fn global_used(proxy: &TestProxy) -> f64 {
    let budgets = proxy.get_json("/api/v2/budgets").await;
    budgets["data"]
        .as_array()
        .and_then(|d| d.iter().find(|b| b["name"] == "global"))
        .and_then(|b| b["budget"]["used_usd"].as_f64())
        .expect("global budget")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_gives_up_before_the_answer_is_still_charged() {
    let (fake, proxy) = setup().await;
    let session = proxy.session(1.0).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    for stream in [false, true] {
        fake.push(Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Normal),
        ));
        let gave_up = impatient
            .post(proxy.url("/v1/chat/completions"))
            .json(&in_session(&session, stream))
            .send()
            .await;
        assert!(gave_up.is_err(), "the client timed out (stream: {stream})");
    }
    // The provider answered after the client left; both are settled.
    assert!(
        eventually(Duration::from_secs(10), || async {
            session_view(&proxy, &session).await["requests"] == 2
        })
        .await,
        "both requests are in the ledger: {}",
        session_view(&proxy, &session).await
    );
    let view = session_view(&proxy, &session).await;
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    // The non-streamed one from its usage; the stream, whose reader was
    // gone at its first chunk, from what it had sent (estimated), never $0.
    assert!(used >= ACTUAL_COST + 1e-9, "{view}");
    assert_eq!(view["budget"]["reserved_usd"].as_f64(), Some(0.0), "{view}");
    assert!((global_used(&proxy).await - used).abs() < 1e-9);
    assert_eq!(fake.received().len(), 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_hanging_up_at_random_never_push_spend_past_the_budget() {
    const BUDGET: f64 = 0.05;
    let (fake, proxy) = setup().await;
    let session = proxy.session(BUDGET).await;
    for _ in 0..50 {
        fake.push(Reply::Delay(
            Duration::from_millis(300),
            Box::new(Reply::Normal),
        ));
    }
    let clients = (0..50u64).map(|i| {
        let url = proxy.url("/v1/chat/completions");
        let body = in_session(&session, i % 3 == 0);
        async move {
            // Hang-ups spread from before the answer to after it.
            let patience = Duration::from_millis(50 + (i * 37) % 600);
            let client = reqwest::Client::builder()
                .timeout(patience)
                .build()
                .expect("client");
            let _ = client.post(url).json(&body).send().await;
        }
    });
    futures_util::future::join_all(clients).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            session_view(&proxy, &session).await["budget"]["reserved_usd"].as_f64() == Some(0.0)
        })
        .await,
        "every reservation is settled or released"
    );
    let view = session_view(&proxy, &session).await;
    let used = view["budget"]["used_usd"].as_f64().expect("used");
    let requests = view["requests"].as_u64().expect("requests");
    assert!(used <= BUDGET + 1e-9, "spent {used} of {BUDGET}: {view}");
    assert!(requests > 0, "{view}");
    // Every request the provider received was charged.
    assert_eq!(requests as usize, fake.received().len(), "{view}");
    proxy.stop().await;
}

/// Requests still waiting on a provider when shutdown's grace runs out are
/// stopped, and charged as estimates: the provider has them.
#[tokio::test(flavor = "multi_thread")]
async fn requests_stopped_by_shutdown_are_charged_as_estimates() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        // The provider must still be silent when shutdown's grace is over.
        upstream: "first_byte_timeout_seconds = 60\n".to_string(),
        extra: format!("{METERED}\n[budgets.global]\nbudget_usd = 100\nperiod = \"month\"\n"),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    let proxy = TestProxy::start_edited(setup, |text| {
        let short = text.replace("shutdown_grace_seconds = 10", "shutdown_grace_seconds = 1");
        assert!(short.contains("shutdown_grace_seconds = 1\n"));
        short
    })
    .await;
    let session = proxy.session(1.0).await;
    // One answer that never comes, one stream that stops after its first
    // content.
    fake.push(Reply::Hang);
    let first = stream_events("metered", &["Hello", " there"], true);
    fake.push(Reply::Sse {
        events: first,
        gate: Some(std::sync::Arc::new(tokio::sync::Notify::new())),
    });
    for stream in [false, true] {
        let client = proxy.client.clone();
        let url = proxy.url("/v1/chat/completions");
        let body = in_session(&session, stream);
        tokio::spawn(async move {
            if let Ok(response) = client.post(url).json(&body).send().await {
                let _ = response.text().await;
            }
        });
        let sent = stream as usize + 1;
        assert!(
            eventually(Duration::from_secs(5), || async {
                fake.received().len() == sent
            })
            .await
        );
    }
    let started = std::time::Instant::now();
    let proxy = proxy.restart().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let view = session_view(&proxy, &session).await;
    assert_eq!(view["requests"], 2, "{view}");
    assert!(view["budget"]["used_usd"].as_f64() > Some(0.0), "{view}");
    assert_eq!(view["budget"]["reserved_usd"].as_f64(), Some(0.0), "{view}");
    proxy.stop().await;
}
