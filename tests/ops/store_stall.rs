//! A stuck disk never becomes an outage.
//!
//! p402's data dir is put on a real ext4 file system (a loop device) that
//! the test freezes with `fsfreeze`: from then on every write to it blocks
//! in the kernel, exactly as on a hung disk. A budgeted request in flight
//! gets its answer once the settlement's deadline passes; the next ones are
//! refused at once with 503 `ledger_unavailable` (a forwarded call charged
//! to a session too); `/health` answers 503
//! with the store `stalled`; unbudgeted requests go on without waiting.
//! Thawed, the store catches up by itself and nothing was lost.
//!
//! Mounting needs root, as CI runs (see `common::disk`).

use std::time::Duration;

use crate::common::disk::Disk;
use crate::common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_disk_refuses_budgeted_requests_and_loses_nothing() {
    let Some(disk) = Disk::or_skip(Disk::ext4(), "store_stall") else {
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

    disk.freeze();
    // In flight when the disk stops: the answer was paid for, so it goes
    // out once the settlement's deadline has passed, not never.
    let started = std::time::Instant::now();
    let stuck = proxy.chat(budgeted(&session)).await;
    assert_eq!(stuck.status(), 200);
    ids.push(request_id(&stuck));
    assert!(started.elapsed() < Duration::from_secs(20));

    // The write has now been stuck for longer than the deadline: budgeted
    // requests are refused at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let refused = proxy.chat(budgeted(&session)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let error = expect_error(refused, 503, "ledger_unavailable").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("stuck")),
        "{error}"
    );
    // A forwarded call charged to the session is refused the same way: its
    // entry could not be written either.
    let forwarded = proxy
        .client
        .post(proxy.url(&format!("/s/{session}/v1/moderations")))
        .json(&serde_json::json!({"input": "hello"}))
        .send()
        .await
        .expect("moderations");
    expect_error(forwarded, 503, "ledger_unavailable").await;
    let health = proxy
        .client
        .get(proxy.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.expect("health json");
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["store"]["state"], "stalled");

    // Unbudgeted traffic flows without waiting on the disk.
    let started = std::time::Instant::now();
    let free = proxy.chat(ask("metered", "no session")).await;
    assert_eq!(free.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an unbudgeted request waited on the stuck store for {:?}",
        started.elapsed()
    );
    ids.push(request_id(&free));

    disk.thaw();
    assert!(
        eventually(Duration::from_secs(20), || async {
            proxy.health().await["store"]["state"] == "ok"
        })
        .await,
        "the store recovers by itself"
    );
    let after = proxy.chat(budgeted(&session)).await;
    assert_eq!(after.status(), 200);
    ids.push(request_id(&after));
    for id in &ids {
        assert!(
            proxy.ledger_entry(id).await.is_some(),
            "request {id} is in the ledger"
        );
    }
    let read = proxy.get_json(&format!("/api/v2/sessions/{session}")).await;
    assert_eq!(read["requests"], 3, "{read}");
    let proxy = proxy.restart().await;
    for id in &ids {
        assert!(proxy.ledger_entry(id).await.is_some(), "{id} after restart");
    }
    proxy.stop().await;
}
