//! A real `redis-server` on a free loopback port, for the team budget
//! tests (`.ci/run` installs Debian's `redis-server`). Nothing is saved to
//! disk: a restart starts empty, as after losing the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Extra arguments (TLS) kept for restarts.
    args: Vec<String>,
}

fn binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let path = Path::new(dir).join("redis-server");
        if path.exists() {
            return path;
        }
    }
    panic!(
        "redis-server is not installed: `apt-get install redis-server` (bash .ci/run installs it)"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None)
    }

    /// With `tls_port`, Redis listens with TLS there (and plain TCP on
    /// `port` stays off).
    pub fn start_with(args: Vec<String>, tls_port: Option<u16>) -> Self {
        let port = tls_port.unwrap_or_else(free_port);
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().expect("dir"),
            args,
        };
        server.launch(tls_port.is_some());
        server
    }

    fn launch(&mut self, tls: bool) {
        let mut command = Command::new(binary());
        let port = self.port.to_string();
        if tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("spawn redis-server"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server still answers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        let tls = self.args.iter().any(|a| a.starts_with("--tls"));
        self.launch(tls);
    }

    /// One command through `redis-cli`, for checks from outside p402.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
