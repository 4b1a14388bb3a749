//! The ledger at scale: retention of old entries, reports from the hourly
//! sums past them, and exports, through the real server and the binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use chrono::{DateTime, Utc};
use p402::store::{LedgerEntry, Store};
use serde_json::Value;

/// A request id as p402 mints it, for a request begun at `time`.
fn id_at(time: DateTime<Utc>) -> String {
    let secs = u64::try_from(time.timestamp()).expect("after 1970");
    let stamp = uuid::Timestamp::from_unix(uuid::NoContext, secs, time.timestamp_subsec_nanos());
    format!("req_{}", uuid::Uuid::new_v7(stamp).simple())
}

fn entry_at(time: DateTime<Utc>, cost_nanos: i64) -> LedgerEntry {
    LedgerEntry {
        time,
        request_id: id_at(time),
        session: Some("ses_ledger".into()),
        budgets: vec!["team".into()],
        provider: "openai".into(),
        model: Some("metered".into()),
        input_tokens: 10,
        output_tokens: 2,
        cached_input_tokens: 0,
        cost_nanos,
        direct_nanos: cost_nanos * 3,
        cached: false,
        estimated: false,
        client_session: Some("=cmd|' /C calc'!A0".into()),
        door: Some("chat".into()),
        forwarded: None,
    }
}

/// A data dir holding `old` entries settled 40 to 30 days ago and `recent`
/// ones in the last day, written as a running p402 would have.
async fn ledger_with_history(dir: &Path, old: usize, recent: usize) -> (Vec<String>, Vec<String>) {
    let store = Store::open(dir).expect("store");
    let accounts = vec!["session:ses_ledger".to_string()];
    let now = Utc::now();
    let mut ids = (Vec::new(), Vec::new());
    for n in 0..old {
        let time = now - chrono::Duration::days(40) + chrono::Duration::minutes(n as i64 * 20);
        let entry = entry_at(time, 1_000 + n as i64);
        store.record(&entry, &accounts).await.expect("record");
        ids.0.push(entry.request_id);
    }
    for n in 0..recent {
        let time = now - chrono::Duration::hours(20) + chrono::Duration::minutes(n as i64 * 10);
        let entry = entry_at(time, 5_000);
        store.record(&entry, &accounts).await.expect("record");
        ids.1.push(entry.request_id);
    }
    (ids.0, ids.1)
}

fn p402(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("P402_CONFIG")
        .output()
        .expect("run p402")
}

/// With `[ledger] keep_entries_days`, a running p402 drops the entries
/// older than that by itself; the report over the whole period is the
/// same as before, and says it reaches past the entries kept, on the API
/// and in `p402 report`; the session charged keeps its spend.
#[tokio::test(flavor = "multi_thread")]
async fn old_entries_are_dropped_and_reports_still_count_them() {
    let data = tempfile::tempdir().expect("dir");
    let (old, recent) = ledger_with_history(data.path(), 1_200, 30).await;
    let proxy = TestProxy::start(Setup {
        data_dir: Some(data.path().to_path_buf()),
        extra: "[ledger]\nkeep_entries_days = 10\n".to_string(),
        ..Setup::default()
    })
    .await;
    let mut dropped = false;
    for _ in 0..600 {
        if proxy.ledger_entry(&old[old.len() - 1]).await.is_none() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "the old entries were not dropped");
    assert!(proxy.ledger_entry(&old[0]).await.is_none());
    assert!(proxy.ledger_entry(&recent[0]).await.is_some());

    let report = proxy.get_json("/api/v2/report?since=60d").await;
    assert_eq!(report["total"]["requests"], 1_230, "{report}");
    assert!(report["entries_dropped_before"].is_string(), "{report}");
    let recent_only = proxy.get_json("/api/v2/report?since=2d").await;
    assert_eq!(recent_only["total"]["requests"], 30);
    assert!(recent_only.get("entries_dropped_before").is_none());
    let svg = proxy
        .client
        .get(proxy.url("/api/v2/dashboard/spend.svg?since=60d&step=day"))
        .send()
        .await
        .expect("chart")
        .text()
        .await
        .expect("svg");
    assert!(
        svg.contains("openai"),
        "the chart still draws the dropped days"
    );
    proxy.stop().await;

    // Offline, the command line answers from the database the same way.
    let store = Store::open(data.path()).expect("store");
    assert_eq!(
        store.totals("session:ses_ledger").expect("totals").requests,
        1_230,
        "a session's spend never depends on the entries kept"
    );
    assert_eq!(store.ledger_len(), 30);
    drop(store);
    let config = data.path().join("offline.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = {:?}\n",
            data.path().display().to_string()
        ),
    )
    .expect("config");
    let out = p402(&config, &["report", "--since", "60d"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("reaches past the ledger entries kept"),
        "{table}"
    );
    assert!(table.contains("1230"), "{table}");
}

/// `GET /api/v2/export` needs the local key and streams every entry of the
/// range as CSV or JSON lines; `p402 export` gets the same from the
/// running p402, and from the database when none runs.
#[tokio::test(flavor = "multi_thread")]
async fn exports_stream_the_entries_of_a_range() {
    let data = tempfile::tempdir().expect("dir");
    let (old, recent) = ledger_with_history(data.path(), 1_500, 20).await;
    let proxy = TestProxy::start(Setup {
        data_dir: Some(data.path().to_path_buf()),
        server: "api_keys = [\"local-key-1\"]".to_string(),
        extra: "[ledger]\nkeep_entries_days = 0\n".to_string(),
        ..Setup::default()
    })
    .await;
    let get = |path: &str, key: Option<&str>| {
        let mut request = proxy.client.get(proxy.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(
        get("/api/v2/export?since=60d", None)
            .await
            .expect("sent")
            .status(),
        401
    );
    let bad = get("/api/v2/export?format=csv", Some("local-key-1"))
        .await
        .expect("sent");
    assert_eq!(bad.status(), 400);

    let csv = get("/api/v2/export?since=60d&format=csv", Some("local-key-1"))
        .await
        .expect("sent");
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/csv"));
    let csv = csv.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("time,request_id,provider,model"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + 1_520);
    assert!(lines[1].contains(&old[0]) && lines[1].contains(",0.000001000,0.000003000,"));
    // A client's session header that looks like a formula stays text.
    assert!(lines[1].contains("\"'=cmd|' /C calc'!A0\""), "{}", lines[1]);

    // Only the recent ones, as JSON lines, with until.
    let until = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let path = format!(
        "/api/v2/export?since=2d&until={}&format=jsonl",
        until.replace('+', "%2B")
    );
    let jsonl = get(&path, Some("local-key-1"))
        .await
        .expect("sent")
        .text()
        .await
        .expect("jsonl");
    let ids: Vec<String> = jsonl
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("a JSON line");
            entry["request_id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids, recent);
    let none = get("/api/v2/export?since=60d&until=50d", Some("local-key-1"))
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert_eq!(none, "");

    // The command line, asking the running p402 (which holds the database).
    let live = data.path().join("live.toml");
    std::fs::write(
        &live,
        format!(
            "[server]\nlisten = \"{}\"\napi_keys = [\"local-key-1\"]\ndata_dir = {:?}\n",
            proxy.addr(),
            data.path().display().to_string()
        ),
    )
    .expect("config");
    let out = tokio::task::spawn_blocking(move || {
        p402(&live, &["export", "--since", "2d", "--format", "jsonl"])
    })
    .await
    .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), jsonl);
    proxy.stop().await;

    // And from the database, with nothing running.
    let offline = data.path().join("offline.toml");
    std::fs::write(
        &offline,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = {:?}\n",
            data.path().display().to_string()
        ),
    )
    .expect("config");
    let out = p402(&offline, &["export", "--since", "60d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), csv);
    let out = p402(&offline, &["export", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}
