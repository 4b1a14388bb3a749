//! Hot reload of p402.toml: valid edits apply while serving, invalid ones
//! are refused whole and reported, and editors' rename-saves are seen.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Saves the way editors do: write a temporary file, rename it over.
fn save_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn valid_edits_apply_and_invalid_ones_keep_the_old_config() {
    let first = FakeProvider::start().await;
    let second = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &first)).await;
    let data_dir = proxy.dir.path().join("data");
    assert_eq!(proxy.chat(ask("gpt-4o-mini", "one")).await.status(), 200);
    assert_eq!(first.received().len(), 1);

    // 1. A valid edit, saved by rename: the next requests go to the new base_url.
    let moved = Setup::default()
        .with_provider("openai", &second)
        .toml(&data_dir);
    save_atomically(&proxy.config_path, &moved);
    let applied = eventually(LIMIT, || async {
        proxy.chat(ask("gpt-4o-mini", "two")).await.status() == 200 && !second.received().is_empty()
    })
    .await;
    assert!(applied, "the edited base_url was never applied");
    let health = proxy.health().await;
    assert_eq!(health["config"]["status"], "ok");
    assert!(health["config"]["reloads"].as_u64() >= Some(1));

    // 2. An invalid edit, written in place: refused, reported with its place.
    let broken = format!("{moved}\n[limits]\nrequests_per_minute = \"lots\"\n");
    std::fs::write(&proxy.config_path, &broken).expect("write");
    let reported = eventually(LIMIT, || async {
        proxy.health().await["config"]["status"] == "error"
    })
    .await;
    assert!(reported, "the invalid file never showed in health");
    let health = proxy.health().await;
    let at = health["config"]["error_at"]
        .as_str()
        .expect("error place")
        .to_string();
    let line = broken
        .lines()
        .position(|l| l.contains("\"lots\""))
        .expect("line")
        + 1;
    assert!(
        at.ends_with(&format!("p402.toml:{line}:23")),
        "health must say file:line:col, got {at}"
    );
    // The full error, behind the key (none set here).
    let error = proxy.get_json("/api/v2/config").await["error"]
        .as_str()
        .expect("error text")
        .to_string();
    assert!(
        error.contains(&format!("p402.toml:{line}:23:")),
        "error must carry file:line:col, got {error}"
    );
    assert_eq!(health["status"], "healthy", "still serving");
    let before = second.received().len();
    assert_eq!(proxy.chat(ask("gpt-4o-mini", "three")).await.status(), 200);
    assert_eq!(
        second.received().len(),
        before + 1,
        "the last good config stays in force"
    );

    // 3. A fixed file clears the error.
    save_atomically(
        &proxy.config_path,
        &moved.replace(
            "first_byte_timeout_seconds = 5",
            "first_byte_timeout_seconds = 6",
        ),
    );
    let cleared = eventually(LIMIT, || async {
        proxy.health().await["config"]["status"] == "ok"
    })
    .await;
    assert!(cleared, "a valid file did not clear the error");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_changes_apply_to_new_requests() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let data_dir = proxy.dir.path().join("data");
    let answer: serde_json::Value = proxy.chat_json(ask("gpt-4o-mini", "x")).await;
    assert_eq!(answer["p402_metadata"]["mode"], "passthrough");

    let setup = Setup {
        routing: "default_mode = \"speed\"\npin = [\"gpt-4o-mini\"]\n".into(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    std::fs::write(&proxy.config_path, setup.toml(&data_dir)).expect("write");
    let applied = eventually(LIMIT, || async {
        let answer: serde_json::Value = proxy.chat_json(ask("gpt-4o-mini", "x")).await;
        answer["p402_metadata"]["mode"] == "speed"
    })
    .await;
    assert!(applied);
    proxy.stop().await;
}
