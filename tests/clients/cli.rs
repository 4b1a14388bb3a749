//! The `p402` binary itself: `check`, `init`, signals and graceful shutdown.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

fn p402(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(args)
        .env_remove("P402_CONFIG")
        .output()
        .expect("run p402")
}

#[test]
fn report_with_a_since_that_is_not_a_span_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write");
    for since in ["\u{e9}", "7\u{e9}", "1\u{1F600}"] {
        let out = p402(&[
            "report",
            "--config",
            path.to_str().expect("utf8"),
            "--since",
            since,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{since}: {stderr}");
        assert!(!out.status.success(), "{since}");
        assert!(stderr.contains("since"), "{since}: {stderr}");
    }
}

#[test]
fn check_reports_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8402\"\nmax_body = 5\n",
    )
    .expect("write");
    let out = p402(&["check", "--config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:1: unknown field `max_body`", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_non_loopback_listen_address_needs_api_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("open.toml");
    let config = path.to_str().expect("utf8");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:8402\"\n").expect("write");
    for command in ["check", "serve"] {
        let out = p402(&[command, "--config", config]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{}:2:10: listen = \"0.0.0.0:8402\" is reachable from other machines",
                path.display()
            )),
            "{command}: {stderr}"
        );
    }
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8402\"\napi_keys = [\"local-key-1\"]\n",
    )
    .expect("write");
    assert_eq!(p402(&["check", "--config", config]).status.code(), Some(0));
    std::fs::write(&path, "[server]\nlisten = \"[::1]:8402\"\n").expect("write");
    assert_eq!(
        p402(&["check", "--config", config]).status.code(),
        Some(0),
        "IPv6 loopback is loopback"
    );
}

#[test]
fn check_never_prints_provider_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(
        &path,
        "[providers.openai]\napi_key_env = \"P402_CHECK_KEY\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(["check", "--config", path.to_str().expect("utf8")])
        .env("P402_CHECK_KEY", "sk-very-secret-value")
        .output()
        .expect("run");
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("sk-very-secret-value"));
    assert!(all.contains("openai") && all.contains("usable"), "{all}");
    assert!(
        all.contains("groq") && all.contains("GROQ_API_KEY"),
        "{all}"
    );
}

#[test]
fn init_writes_a_valid_config_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("conf").join("p402.toml");
    let target = path.to_str().expect("utf8");
    let out = p402(&["init", target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&path).expect("written");
    assert!(written.contains("[routing]") && written.contains('#'));
    let out = p402(&["check", "--config", target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&path, "# mine\n").expect("write");
    let out = p402(&["init", target]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "# mine\n");
}

#[test]
fn serve_refuses_an_invalid_config_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(&path, "[routing]\ndefault_mode = 7\n").expect("write");
    let out = p402(&["serve", "--config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("p402.toml:2:16:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_requests_in_flight_then_exits_0() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::Delay(
        Duration::from_millis(1500),
        Box::new(Reply::Json(
            200,
            completion("gpt-4o-mini", "slow answer", 5, 2),
        )),
    ));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(
        &path,
        Setup::default()
            .with_provider("openai", &fake)
            .toml(&dir.path().join("data")),
    )
    .expect("write");
    let mut process = ProxyProcess::start(&path);
    let url = format!("http://{}/v1/chat/completions", process.addr);

    let arrived = fake.arrived.notified();
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&ask("gpt-4o-mini", "take your time"))
            .send()
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("request reached the provider");
    process.signal("TERM");

    let response = in_flight
        .await
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "slow answer");

    let status = tokio::task::spawn_blocking(move || {
        let status = process.child.wait().expect("wait");
        (status, process)
    })
    .await
    .expect("join");
    assert_eq!(
        status.0.code(),
        Some(0),
        "{:?}",
        status.1.stderr_lines.lock().expect("lines")
    );
    let lines = status.1.stderr_lines.lock().expect("lines").join("\n");
    assert!(lines.contains("shutting down"), "{lines}");
    assert!(
        !lines.contains(PROVIDER_KEY),
        "the provider key never appears in logs"
    );
    assert!(
        lines.contains("request_id=req_"),
        "one log line per request: {lines}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &path,
        Setup::default().with_provider("openai", &fake).toml(&data),
    )
    .expect("write");
    let process = ProxyProcess::start(&path);
    let health_url = format!("http://{}/health", process.addr);
    let health = || async {
        reqwest::get(&health_url)
            .await
            .expect("health")
            .json::<Value>()
            .await
            .expect("json")
    };
    assert_eq!(health().await["config"]["reloads"], 0);
    // SIGHUP re-reads the file even though it did not change.
    process.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        health().await["config"]["reloads"] == 1
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload");
    assert_eq!(health().await["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_report_read_a_running_server_and_a_stopped_database() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = Setup::default()
        .with_provider("openai", &fake)
        .toml(&dir.path().join("data"))
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&path, config).expect("write");
    let mut process = ProxyProcess::start(&path);
    let base = format!("http://{}", process.addr);
    let client = reqwest::Client::new();
    let session: Value = client
        .post(format!("{base}/api/v2/sessions"))
        .json(&serde_json::json!({"budget_usd": 3, "name": "cli-test"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = session["session_id"].as_str().expect("id").to_string();
    let mut body = ask("gpt-4o-mini", "hello");
    body["p402"] = serde_json::json!({"session_id": id});
    assert_eq!(
        client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );

    let config_arg = path.to_str().expect("utf8").to_string();
    let run = move |args: Vec<&'static str>| {
        let config_arg = config_arg.clone();
        std::thread::spawn(move || {
            let mut all = args.clone();
            all.push("--config");
            let out = Command::new(env!("CARGO_BIN_EXE_p402"))
                .args(&all)
                .arg(&config_arg)
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .join()
        .expect("thread")
    };
    // While the server runs (it holds the database), the CLI asks it.
    let live: Value = serde_json::from_str(&run(vec!["sessions", "--json"])).expect("json");
    assert_eq!(live["sessions"][0]["session_id"], id.as_str());
    assert_eq!(live["sessions"][0]["requests"], 1);
    let table = run(vec!["sessions"]);
    assert!(table.contains("cli-test") && table.contains(&id), "{table}");

    process.signal("TERM");
    let _ = process.child.wait();
    // Stopped: the CLI reads the database itself.
    let report: Value =
        serde_json::from_str(&run(vec!["report", "--json", "--by", "session"])).expect("json");
    assert_eq!(report["rows"][0]["key"], id.as_str());
    assert_eq!(report["total"]["requests"], 1);
    assert!(report["total"]["cost_usd"]
        .as_f64()
        .is_some_and(|c| c > 0.0));
    let table = run(vec!["report", "--since", "1d", "--by", "model"]);
    assert!(table.contains("openai/gpt-4o-mini"), "{table}");
    let offline: Value = serde_json::from_str(&run(vec!["sessions", "--json"])).expect("json");
    assert_eq!(
        offline["sessions"][0]["budget"]["used_usd"],
        live["sessions"][0]["budget"]["used_usd"]
    );
}

/// A second p402 on the same data dir says which process holds it; a
/// damaged database file says so and how to get going again.
#[test]
fn start_up_errors_name_the_lock_holder_and_a_damaged_file() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let config = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, Setup::default().toml(&data)).expect("write");
        path
    };
    let first_config = config("first.toml");
    let first = ProxyProcess::start(&first_config);
    let second = p402(&[
        "serve",
        "--config",
        config("second.toml").to_str().expect("utf8"),
    ]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another p402 (pid {})",
            first.child.id()
        )),
        "{stderr}"
    );
    drop(first);

    let damaged = tempfile::tempdir().expect("dir");
    let data = damaged.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("p402.redb"), vec![0x5a; 700]).expect("garbage");
    let path = damaged.path().join("p402.toml");
    std::fs::write(
        &path,
        Setup::default()
            .toml(&data)
            .replace("127.0.0.1:0", "127.0.0.1:1"),
    )
    .expect("write");
    let out = p402(&["report", "--config", path.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains(".damaged"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn dashboard_prints_the_address_of_the_page() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"0.0.0.0:18403\"\napi_keys = [\"k\"]\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write");
    // No opener on the PATH: the address is printed all the same.
    let out = Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(["dashboard", "--config", path.to_str().expect("utf8")])
        .env("PATH", dir.path())
        .env_remove("P402_CONFIG")
        .output()
        .expect("run p402");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http://127.0.0.1:18403/dashboard"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not answering"), "{stderr}");
}
