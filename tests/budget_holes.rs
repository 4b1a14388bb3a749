//! The ways past a hard cap an adversarial review found (issue 37), each
//! reproduced against the real server: whatever a provider bills, a
//! budgeted request reserves for it first, or is refused.

mod common;

use common::*;
use serde_json::json;

async fn metered() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

/// `n` has the provider write (and bill) that many answers, each up to
/// the output limit: the reservation and the lowered limit cover them all.
#[tokio::test(flavor = "multi_thread")]
async fn every_choice_n_asks_for_is_reserved_for() {
    let (fake, proxy) = metered().await;
    // $2 pays two answers of 1000 tokens ($0.001 each), not four.
    let session = proxy.session(2.0).await;
    let mut body = ask("metered", "four answers");
    body["n"] = json!(4);
    body["max_tokens"] = json!(1000);
    body["p402"] = json!({"session_id": session});
    let response = proxy.chat(body.clone()).await;
    assert_eq!(response.status(), 200);
    let sent = fake.received()[0].body.clone();
    assert_eq!(sent["n"], 4, "n goes upstream as asked");
    let limit = sent["max_completion_tokens"].as_u64().expect("a limit");
    assert!(
        4 * limit * 1_000_000 < 2_000_000_000,
        "four answers of {limit} tokens cost more than the session holds: {sent}"
    );
    assert!(limit >= 256, "{sent}");

    // Sixteen answers of even the smallest useful length do not fit: 402,
    // and nothing goes upstream.
    body["n"] = json!(16);
    let refused = proxy.chat(body).await;
    let error = expect_error(refused, 402, "SESSION_BUDGET_EXCEEDED").await;
    assert!(
        error["needed_usd"].as_f64().is_some_and(|n| n > 4.0),
        "{error}"
    );
    assert_eq!(fake.received().len(), 1);

    proxy.stop().await;
}
