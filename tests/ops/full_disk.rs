//! A full disk never loses a charge.
//!
//! p402's data dir is put on a small tmpfs that the test fills to the last
//! byte. The budgeted request in flight still gets its paid-for answer;
//! from then on budgeted requests are refused with 503 `ledger_unavailable`
//! and `/health` says why, while unbudgeted requests go on. Once space is
//! freed, p402 reopens its database by itself, writes the entries it kept
//! meanwhile, and takes budgeted requests again: every request is in the
//! ledger, each counted once, also after a restart.
//!
//! Mounting needs root, as CI runs (see `common::disk`).

use std::time::Duration;

use crate::common::disk::Disk;
use crate::common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_budgeted_requests_and_recovers_by_itself() {
    let Some(disk) = Disk::or_skip(Disk::tmpfs(16), "full_disk") else {
        return;
    };
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: METERED.to_string(),
            data_dir: Some(disk.path().join("data")),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let session = proxy.session(10.0).await;
    let first = proxy.chat(budgeted(&session)).await;
    assert_eq!(first.status(), 200);
    let mut ids = vec![request_id(&first)];

    let filler = disk.fill();
    // Sent while the store still looked well: the provider answered and
    // was paid, so the answer goes out, and its charge is kept in memory
    // (the session's balance counts it) until it can be written. The
    // first commit may still fit in room redb's file had inside it, so
    // requests go on until one commit fails and the next is refused.
    let refused = loop {
        let response = proxy.chat(budgeted(&session)).await;
        if response.status() != 200 {
            break response;
        }
        ids.push(request_id(&response));
        assert!(ids.len() < 100, "a full disk was never noticed");
    };
    assert!(
        ids.len() >= 2,
        "the request that found the disk full was answered"
    );
    let error = expect_error(refused, 503, "ledger_unavailable").await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("No space left"), "{error}");
    let health = proxy.health().await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["store"]["state"], "failing", "{health}");
    assert!(
        health["store"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("No space left")),
        "{health}"
    );
    let upstream_before = fake.received().len();

    // Unbudgeted traffic goes on, warned; its entries wait for the disk.
    for n in 0..3 {
        let free = proxy.chat(ask("metered", &format!("no session {n}"))).await;
        assert_eq!(free.status(), 200);
        ids.push(request_id(&free));
        let answer: Value = free.json().await.expect("answer");
        let warning = answer["p402_metadata"]["ledger_warning"].as_str();
        assert!(warning.is_some_and(|w| w.contains("kept")), "{answer}");
    }
    assert_eq!(fake.received().len(), upstream_before + 3);

    std::fs::remove_file(&filler).expect("free the disk");
    assert!(
        eventually(Duration::from_secs(60), || async {
            proxy.health().await["store"]["state"] == "ok"
        })
        .await,
        "the store recovers by itself: {}",
        proxy.health().await
    );
    let after = proxy.chat(budgeted(&session)).await;
    assert_eq!(after.status(), 200);
    ids.push(request_id(&after));
    let answer: Value = after.json().await.expect("answer");
    assert!(
        answer["p402_metadata"].get("ledger_warning").is_none(),
        "{answer}"
    );

    for id in &ids {
        assert!(
            proxy.ledger_entry(id).await.is_some(),
            "request {id} is in the ledger"
        );
    }
    // Every budgeted answer, each counted once: the unbudgeted three are
    // not the session's.
    let budgeted_answers = ids.len() - 3;
    let read = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(read["requests"], budgeted_answers, "{read}");
    let spent = read["budget"]["used_usd"].as_f64().unwrap_or_default();
    let proxy = proxy.restart().await;
    for id in &ids {
        assert!(proxy.ledger_entry(id).await.is_some(), "{id} after restart");
    }
    let reread = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(reread["requests"], budgeted_answers, "{reread}");
    assert_eq!(
        reread["budget"]["used_usd"].as_f64().unwrap_or_default(),
        spent
    );
    assert!(spent > 0.0, "{reread}");
    proxy.stop().await;
}
