//! p402 under systemd: the test plays the service manager, binding the
//! `$NOTIFY_SOCKET` datagram socket and reading what the real binary says
//! (readiness, watchdog, reload, stopping); and the data directory and log
//! format p402 picks from what systemd puts in its environment.

#![cfg(unix)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Long enough for a debug build on a busy machine; never waited out when
/// things work.
const LIMIT: Duration = Duration::from_secs(30);

/// What the test's WATCHDOG_USEC asks for: pings every 100 ms.
const WATCHDOG: Duration = Duration::from_millis(200);

/// One notification: its `KEY=value` lines.
#[derive(Debug, Clone)]
struct Notice {
    lines: Vec<String>,
    at: Instant,
}

impl Notice {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn is_watchdog_only(&self) -> bool {
        self.lines == ["WATCHDOG=1"]
    }
}

/// The service manager's end of the notify socket. A std socket, read on
/// the blocking pool: a non-blocking read of it sees exactly what the kernel
/// holds, which "nothing more was sent" needs.
struct Manager {
    socket: Arc<UnixDatagram>,
    path: PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager {
            socket: Arc::new(socket),
            path,
        }
    }

    /// The next notification, within `limit`.
    async fn next(&self, limit: Duration) -> Option<Notice> {
        let socket = self.socket.clone();
        tokio::task::spawn_blocking(move || {
            socket.set_read_timeout(Some(limit)).expect("read timeout");
            let mut buffer = vec![0u8; 4096];
            match socket.recv(&mut buffer) {
                Ok(length) => Some(notice(&buffer[..length])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
                Err(e) => panic!("read the notify socket: {e}"),
            }
        })
        .await
        .expect("reader")
    }

    /// A notification already sent, if there is one.
    fn try_next(&self) -> Option<Notice> {
        self.socket.set_nonblocking(true).expect("non-blocking");
        let mut buffer = vec![0u8; 4096];
        let received = self.socket.recv(&mut buffer);
        self.socket.set_nonblocking(false).expect("blocking");
        match received {
            Ok(length) => Some(notice(&buffer[..length])),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("read the notify socket: {e}"),
        }
    }

    /// The next notification that is not a watchdog ping; the pings seen on
    /// the way are counted into `pings`.
    async fn next_event(&self, pings: &mut Vec<Notice>) -> Notice {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let notice = self
                .next(left)
                .await
                .expect("p402 sent a notification in time");
            if notice.is_watchdog_only() {
                pings.push(notice);
            } else {
                return notice;
            }
        }
    }
}

fn notice(datagram: &[u8]) -> Notice {
    let text = std::str::from_utf8(datagram).expect("notifications are UTF-8");
    Notice {
        lines: text.lines().map(str::to_string).collect(),
        at: Instant::now(),
    }
}

/// `p402 serve` as systemd would run it, stderr kept in a file.
struct Service {
    child: Child,
    stderr: PathBuf,
}

impl Service {
    fn start(config: &Path, envs: &[(&str, &str)], stderr: PathBuf) -> Service {
        set_provider_key();
        let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
        for var in REAL_KEY_VARS.iter().chain(&[
            "P402_CONFIG",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
            "STATE_DIRECTORY",
        ]) {
            command.env_remove(var);
        }
        let child = command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn p402");
        Service { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to end, within `limit`.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on a random loopback port, with its data in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("p402.toml");
    std::fs::write(&path, Setup::default().toml(&dir.join("data"))).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn tells_systemd_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path());
    let manager = Manager::bind(dir.path());
    let watchdog_usec = WATCHDOG.as_micros().to_string();
    let mut service = Service::start(
        &config,
        &[
            ("NOTIFY_SOCKET", manager.path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", &watchdog_usec),
        ],
        dir.path().join("stderr.log"),
    );

    // 1. READY=1 comes first, and by then the port takes connections.
    let ready = manager
        .next(LIMIT)
        .await
        .unwrap_or_else(|| panic!("no READY=1: {}", service.log()));
    assert!(ready.has("READY=1"), "{ready:?}");
    let status = ready.value("STATUS").expect("a STATUS with READY");
    let addr: SocketAddr = status
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in STATUS: {status}"));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .expect("the port accepts connections as soon as READY=1 is sent");
    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["status"], "healthy");

    // 2. Watchdog pings keep coming, at about half of WATCHDOG_USEC. Those
    //    already queued are skipped, so that arrival times are send times.
    while let Some(queued) = manager.try_next() {
        assert!(queued.is_watchdog_only(), "{queued:?}");
    }
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let notice = manager
            .next(LIMIT)
            .await
            .unwrap_or_else(|| panic!("watchdog pings stopped: {}", service.log()));
        assert!(notice.is_watchdog_only(), "{notice:?}");
        pings.push(notice);
    }
    // Three periods of WATCHDOG / 2 are 300 ms; a reader that falls behind
    // can only shorten what it measures, hence the margin.
    let span = pings[3].at - pings[0].at;
    assert!(
        span >= WATCHDOG,
        "3 ping periods took {span:?}: faster than half of {WATCHDOG:?} each"
    );

    // 3. SIGHUP: RELOADING=1 (with the time systemd 253+ wants), then READY=1
    //    once the file has been read again.
    service.signal("HUP");
    let reloading = manager.next_event(&mut pings).await;
    assert!(reloading.has("RELOADING=1"), "{reloading:?}");
    let monotonic = reloading.value("MONOTONIC_USEC").expect("MONOTONIC_USEC");
    assert!(monotonic.parse::<u64>().is_ok_and(|usec| usec > 0));
    let reloaded = manager.next_event(&mut pings).await;
    assert!(reloaded.has("READY=1"), "{reloaded:?}");
    assert!(
        reloaded
            .value("STATUS")
            .is_some_and(|s| s.starts_with("config reloaded")),
        "{reloaded:?}"
    );
    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert!(health["config"]["reloads"].as_u64() >= Some(1), "{health}");

    // 4. A SIGHUP over a broken file: still READY=1 (p402 serves on with the
    //    old config), and the status says why the file was refused.
    let text = std::fs::read_to_string(&config).expect("config");
    let broken = format!("{text}\n[limits]\nrequests_per_minute = \"lots\"\n");
    let line = broken
        .lines()
        .position(|l| l.contains("\"lots\""))
        .expect("line")
        + 1;
    std::fs::write(&config, &broken).expect("break the config");
    let client = reqwest::Client::new();
    let refused = eventually(LIMIT, || async {
        let health: Value = match client.get(format!("http://{addr}/health")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        health["config"]["status"] == "error"
    })
    .await;
    assert!(refused, "the broken file never showed in /health");
    service.signal("HUP");
    let reloading = manager.next_event(&mut pings).await;
    assert!(reloading.has("RELOADING=1"), "{reloading:?}");
    let reloaded = manager.next_event(&mut pings).await;
    assert!(reloaded.has("READY=1"), "{reloaded:?}");
    let status = reloaded.value("STATUS").unwrap_or_default();
    assert!(
        status.starts_with("config reload refused")
            && status.contains(&format!("p402.toml:{line}:")),
        "{status}"
    );
    // The reloads took over two debounce periods (250 ms each): the pings
    // went on meanwhile.
    assert!(pings.len() > 4, "no watchdog ping during the reloads");

    // 5. SIGTERM: STOPPING=1, no ping after it, and a clean exit.
    service.signal("TERM");
    let stopping = manager.next_event(&mut pings).await;
    assert!(stopping.has("STOPPING=1"), "{stopping:?}");
    assert_eq!(
        service.exit_code(LIMIT).await,
        Some(0),
        "p402 did not exit cleanly: {}",
        service.log()
    );
    assert!(
        manager.try_next().is_none(),
        "nothing may follow STOPPING=1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_notify_socket_nothing_is_sent_and_p402_serves() {
    // A plain run (no systemd) must not trip over the missing variables.
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path());
    let mut service = Service::start(&config, &[], dir.path().join("stderr.log"));
    let started = eventually(LIMIT, || async {
        service.log().contains("listening on http://")
    })
    .await;
    assert!(started, "{}", service.log());
    service.signal("TERM");
    assert_eq!(service.exit_code(LIMIT).await, Some(0), "{}", service.log());
    let log = service.log();
    assert!(
        !log.contains("cannot notify systemd") && !log.contains("watchdog"),
        "{log}"
    );
}

// ---- the data directory ---------------------------------------------------------

fn check_data_dir(config_text: &str, state_directory: Option<&Path>) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    std::fs::write(&path, config_text).expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
    command
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("STATE_DIRECTORY")
        .env("XDG_DATA_HOME", dir.path().join("xdg"));
    if let Some(state) = state_directory {
        command.env("STATE_DIRECTORY", state);
    }
    let out = command.output().expect("run p402 check");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("data_dir: "))
        .expect("check prints data_dir")
        .to_string()
}

#[test]
fn state_directory_wins_over_the_configs_data_dir() {
    let state = Path::new("/var/lib/p402-test-state");
    // No data_dir in the file: systemd's StateDirectory= is used.
    assert_eq!(check_data_dir("", Some(state)), state.display().to_string());
    // systemd may list several; the first is p402's.
    let several = Path::new("/var/lib/p402-a:/var/lib/p402-b");
    assert_eq!(check_data_dir("", Some(several)), "/var/lib/p402-a");
    // Under systemd, StateDirectory= wins over a data_dir in the file (SPEC §1)...
    let named = "[server]\ndata_dir = \"/srv/p402-data\"\n";
    assert_eq!(
        check_data_dir(named, Some(state)),
        state.display().to_string()
    );
    // ...which is used everywhere else.
    assert_eq!(check_data_dir(named, None), "/srv/p402-data");
    // Not under systemd: the XDG default.
    assert!(check_data_dir("", None).ends_with("/xdg/p402"));
}

// ---- log format -----------------------------------------------------------------

/// Runs `p402 serve` against a port that is taken, so that it logs its
/// config line and exits; returns its first log line.
fn first_log_line(args: &[&str], journal_stream: JournalStream) -> String {
    let taken = TcpListener::bind("127.0.0.1:0").expect("take a port");
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("p402.toml");
    let text = Setup::default().toml(&dir.path().join("data")).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", taken.local_addr().expect("addr")),
    );
    std::fs::write(&config, text).expect("write config");
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    match journal_stream {
        JournalStream::Unset => {}
        JournalStream::IsStderr => {
            use std::os::unix::fs::MetadataExt;
            let meta = stderr.metadata().expect("stat stderr");
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        JournalStream::Elsewhere => {
            command.env("JOURNAL_STREAM", "0:1");
        }
    }
    let out = command.stderr(stderr).output().expect("run p402");
    assert_eq!(out.status.code(), Some(1), "the port was taken");
    let log = std::fs::read_to_string(&stderr_path).expect("log");
    assert!(log.contains("cannot listen on"), "{log}");
    log.lines().next().expect("a log line").to_string()
}

#[derive(Clone, Copy)]
enum JournalStream {
    Unset,
    /// systemd connected stderr to journald.
    IsStderr,
    /// Inherited from a service, but stderr now goes elsewhere.
    Elsewhere,
}

fn is_json_log(line: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|v| v["level"] == "INFO" && v["fields"].is_object())
}

#[test]
fn logs_are_json_under_journald_and_text_elsewhere() {
    let journald = first_log_line(&[], JournalStream::IsStderr);
    assert!(is_json_log(&journald), "under journald: {journald}");
    let plain = first_log_line(&[], JournalStream::Unset);
    assert!(
        !is_json_log(&plain) && plain.contains("INFO") && plain.contains("config:"),
        "not under journald: {plain}"
    );
    let inherited = first_log_line(&[], JournalStream::Elsewhere);
    assert!(
        !is_json_log(&inherited),
        "stderr is not the journal: {inherited}"
    );
    let asked = first_log_line(&["--log-format", "json"], JournalStream::Unset);
    assert!(is_json_log(&asked), "--log-format json: {asked}");
    let text = first_log_line(&["--log-format", "text"], JournalStream::IsStderr);
    assert!(!is_json_log(&text), "--log-format text: {text}");
}
