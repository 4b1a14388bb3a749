//! p402 holds people's provider keys: they go to the provider and nowhere
//! else. The real binary runs with debug logs through successes, failures
//! and a provider that echoes the key back; then every place p402 writes
//! (client responses and headers, logs, metrics, the APIs, the database
//! files, the CLI) is searched for it. And a request cannot send p402, and
//! its key, to another host.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// Every file under `dir`, read whole.
fn file_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(file_contents(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_keys_appear_nowhere_but_in_requests_to_the_provider() {
    set_provider_key();
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let config = dir.path().join("p402.toml");
    let setup = Setup {
        cache: "enabled = true\n".into(),
        ..Setup::default()
    }
    .with_provider("openai", &fake);
    std::fs::write(&config, setup.toml(&data)).expect("write config");
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "debug")
        .env(PROVIDER_KEY_ENV, PROVIDER_KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn p402");
    let client = reqwest::Client::new();
    let addr = {
        let mut found = None;
        for _ in 0..300 {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                found = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
            }
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("p402 started")
    };
    let url = |path: &str| format!("http://{addr}{path}");

    // A success, a cached repeat, a stream, a refused key echoed back (a
    // 401 is a provider failure: p402 answers 502), a 4xx passed through
    // with the key in it, and a 500.
    let echo = |status: u16| {
        Reply::Json(
            status,
            json!({"error": {"message": format!("Incorrect API key provided: {PROVIDER_KEY}"), "type": "invalid_request_error", "code": "invalid_api_key"}}),
        )
    };
    fake.push(Reply::Normal);
    fake.push(Reply::Sse {
        events: stream_events("gpt-4o-mini", &["Hel", "lo"], true),
        gate: None,
    });
    fake.push(echo(401));
    fake.push(echo(400));
    fake.push(echo(500));
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    let bodies = [
        ask("gpt-4o-mini", "What is a key?"),
        ask("gpt-4o-mini", "What is a key?"),
        json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Stream it"}]}),
        ask("gpt-4o-mini", "refused"),
        ask("gpt-4o-mini", "bad request"),
        ask("gpt-4o-mini", "server error"),
    ];
    let mut statuses = Vec::new();
    for body in bodies {
        let response = client
            .post(url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("send");
        statuses.push(response.status().as_u16());
        let headers = format!("{:?}", response.headers());
        let text = response.bytes().await.expect("body").to_vec();
        seen.push(("response headers".into(), headers.into_bytes()));
        seen.push(("response body".into(), text));
    }
    assert_eq!(statuses, [200, 200, 200, 502, 400, 502], "{seen:?}");
    let passed_through = String::from_utf8_lossy(&seen[9].1).to_string();
    assert!(
        passed_through.contains("Incorrect API key provided: [redacted]"),
        "the provider's message reaches the client, without the key: {passed_through}"
    );
    for path in [
        "/health",
        "/metrics",
        "/api/v2/providers",
        "/api/v2/report",
        "/api/v2/budgets",
        "/api/v2/sessions",
        "/api/v2/cache/stats",
        "/api/v2/models",
    ] {
        let response = client.get(url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        seen.push((path.into(), response.bytes().await.expect("body").to_vec()));
    }
    // The provider did get the key: the search below is not vacuous.
    let received = fake.received();
    assert!(received.iter().any(|r| r
        .headers
        .get("authorization")
        .is_some_and(|v| v.to_str().unwrap_or("").contains(PROVIDER_KEY))));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let p402 = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_p402"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env(PROVIDER_KEY_ENV, PROVIDER_KEY)
            .output()
            .expect("run p402");
        [out.stdout, out.stderr].concat()
    };
    for args in [
        &["check"][..],
        &["report", "--json"],
        &["sessions", "--json"],
        &["cache", "stats", "--json"],
        &["models"],
    ] {
        seen.push((format!("p402 {}", args.join(" ")), p402(args)));
    }
    seen.push((
        "logs".into(),
        std::fs::read(&log_path).expect("read the log"),
    ));
    let logs = String::from_utf8_lossy(&seen.last().expect("logs").1).to_string();
    assert!(
        logs.contains("\"level\":\"DEBUG\""),
        "debug logs were on: {logs}"
    );
    let files = file_contents(&data);
    assert!(
        files.iter().any(|(name, _)| name.contains("db")),
        "the database is there"
    );
    seen.extend(files);
    for (place, bytes) in &seen {
        assert!(
            !contains(bytes, PROVIDER_KEY),
            "the provider key leaked into {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_cannot_send_p402_to_another_host() {
    let fake = FakeProvider::start().await;
    let elsewhere = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup::default().with_provider("openai", &fake)).await;
    let client = reqwest::Client::new();
    let target = elsewhere.base_url();

    // Host header and absolute-form request target naming another host.
    let raw = format!(
        "POST {target}/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {{len}}\r\nConnection: close\r\n\r\n{{body}}",
        elsewhere.addr
    );
    let body = ask("gpt-4o-mini", "where do I go?").to_string();
    let request = raw
        .replace("{len}", &body.len().to_string())
        .replace("{body}", &body);
    let mut stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();

    // Fields a client might try: a base URL in the body or in `p402`, a
    // provider-prefixed model.
    let attempts = [
        json!({"model": "gpt-4o-mini", "base_url": target, "api_base": target, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-4o-mini", "p402": {"base_url": target}, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": format!("{target}/gpt-4o-mini"), "messages": [{"role": "user", "content": "hi"}]}),
    ];
    let mut statuses = Vec::new();
    for body in attempts {
        let response = client
            .post(proxy.url("/v1/chat/completions"))
            .header("x-forwarded-host", elsewhere.addr.to_string())
            .json(&body)
            .send()
            .await
            .expect("send");
        statuses.push(response.status().as_u16());
    }
    assert!(
        elsewhere.received().is_empty(),
        "another host was reached: {:?}",
        elsewhere.received()
    );
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert_eq!(
        statuses[1], 400,
        "an unknown p402 field is refused, not followed"
    );
    // Whatever was answered came from the configured provider only.
    for received in fake.received() {
        assert_eq!(received.path, "/v1/chat/completions");
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory under `dir` whose mode lets others in.
#[cfg(unix)]
fn readable_by_others(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    if mode(dir) & 0o077 != 0 {
        out.push((dir.display().to_string(), mode(dir)));
    }
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(readable_by_others(&path));
        } else if mode(&path) & 0o077 != 0 {
            out.push((path.display().to_string(), mode(&path)));
        }
    }
    out
}

/// The data directory (spend, sessions, cached answers) is its user's
/// alone: a looser one made before is tightened, the database is 0600,
/// and what the store keeps of a local key is a salted digest, not the
/// SHA-256 anyone could test guesses against.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_is_private_and_holds_no_bare_key_digest() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let openai = FakeProvider::start().await;
    let root = tempfile::tempdir().expect("dir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = "k1-SECRETVALUE";
    let proxy = TestProxy::start(
        Setup {
            server: format!("api_keys = [\"{key}\"]\n"),
            data_dir: Some(data.clone()),
            ..Setup::default()
        }
        .with_provider("openai", &openai),
    )
    .await;
    let created = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .bearer_auth(key)
        .json(&json!({"budget_usd": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    proxy.stop().await;
    assert_eq!(readable_by_others(&data), Vec::new());
    assert_eq!(mode(&data.join("p402.redb")), 0o600);
    let bare: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (path, bytes) in file_contents(&data) {
        assert!(
            !contains(&bytes, &bare),
            "{path} holds the key's bare SHA-256"
        );
        assert!(!contains(&bytes, key), "{path} holds the key");
    }
}

/// `p402 run` with no p402 running starts one, and the data directory and
/// log it creates for it are private too.
#[cfg(unix)]
#[test]
fn p402_run_creates_a_private_data_dir_and_log() {
    let home = tempfile::tempdir().expect("home");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let data = home.path().join("data");
    let config = home.path().join("p402.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[cache]\nenabled = false\n",
            data.display()
        ),
    )
    .expect("config");
    let output = Command::new(env!("CARGO_BIN_EXE_p402"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--")
        .arg("true")
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("p402 run runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // The p402 it started keeps running: stop it (by the pid it printed).
    let pid = stderr
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse::<i32>().ok());
    if let Some(pid) = pid {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    assert!(output.status.success(), "{stderr}");
    assert!(pid.is_some(), "{stderr}");
    assert_eq!(mode(&data), 0o700, "{stderr}");
    assert_eq!(mode(&data.join("p402-run.log")), 0o600);
    assert_eq!(readable_by_others(&data), Vec::new());
}

/// A refused reload is reported on `/health`, which needs no key, by its
/// place only: the error can quote the file, and a key written where a
/// list was expected is the key. The full error is behind the key.
#[tokio::test(flavor = "multi_thread")]
async fn health_says_where_a_reload_failed_and_quotes_no_value() {
    let openai = FakeProvider::start().await;
    let key = "k1-SECRETVALUE";
    let setup = Setup {
        server: format!("api_keys = [\"{key}\"]\n"),
        ..Setup::default()
    }
    .with_provider("openai", &openai);
    let proxy = TestProxy::start(setup).await;
    let data = proxy.dir.path().join("data");
    let broken = Setup {
        server: format!("api_keys = \"{key}\"\n"),
        ..Setup::default()
    }
    .with_provider("openai", &openai)
    .toml(&data);
    std::fs::write(&proxy.config_path, &broken).expect("write");
    let refused = eventually(Duration::from_secs(10), || async {
        proxy.health().await["config"]["status"] == "error"
    })
    .await;
    assert!(refused, "the broken file is refused");
    let health = proxy.health().await;
    assert!(!health.to_string().contains("SECRETVALUE"), "{health}");
    let line = broken
        .lines()
        .position(|l| l.starts_with("api_keys"))
        .expect("line")
        + 1;
    assert!(
        health["config"]["error_at"]
            .as_str()
            .is_some_and(|at| at.contains(&format!("p402.toml:{line}:"))),
        "{health}"
    );
    // Without the key: 401. With it: the whole error.
    let anonymous = proxy
        .client
        .get(proxy.url("/api/v2/config"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    let full: serde_json::Value = proxy
        .client
        .get(proxy.url("/api/v2/config"))
        .bearer_auth(key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        full["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid type") && e.contains(&format!(":{line}:"))),
        "{full}"
    );
    proxy.stop().await;
}
