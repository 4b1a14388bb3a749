//! The servers under test run as child processes, so that each one's CPU
//! time and memory can be read from `/proc` apart from the load generator's.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`
/// (`sysconf(_SC_CLK_TCK)`, 100 on every Linux this runs on).
const CLOCK_TICKS: f64 = 100.0;

/// Lines a child printed, the last `KEPT` of them, for error messages and for
/// finding its listening line.
#[derive(Default)]
struct Output {
    lines: Mutex<VecDeque<String>>,
    changed: Condvar,
}

const KEPT: usize = 200;

/// A server under test. Killed (with its whole process tree) when dropped.
pub struct Server {
    pub name: String,
    child: std::process::Child,
    output: Arc<Output>,
}

impl Server {
    /// Starts `command` with stdout and stderr collected and stdin a pipe
    /// (the bench's own children exit when it closes).
    pub fn spawn(name: &str, mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let output = Arc::new(Output::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut lines = output.lines.lock().expect("lines");
                    if lines.len() == KEPT {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                    output.changed.notify_all();
                }
            });
        }
        Server {
            name: name.to_string(),
            child,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `listening on http://ADDR` line p402 (and the bench's
    /// own servers) print once they accept connections.
    pub fn wait_listening(&mut self, limit: Duration) -> SocketAddr {
        let deadline = Instant::now() + limit;
        let mut lines = self.output.lines.lock().expect("lines");
        loop {
            let found = lines.iter().find_map(|line| {
                line.split("listening on http://")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .trim_end_matches(['/', ',', ')'])
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                panic!("{} did not start:\n{}", self.name, self.tail());
            }
            lines = self
                .output
                .changed
                .wait_timeout(lines, deadline - now)
                .expect("lines")
                .0;
        }
    }

    /// Fails with the child's last output if it has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.tail());
        }
    }

    pub fn tail(&self) -> String {
        let lines = self.output.lines.lock().expect("lines");
        let skip = lines.len().saturating_sub(40);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// CPU seconds (user + system) the server's process tree has used.
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).into_iter().map(cpu_of).sum()
    }

    /// `(VmRSS, VmHWM)` in KiB, summed over the process tree.
    pub fn memory_kib(&self) -> (u64, u64) {
        tree(self.pid())
            .into_iter()
            .map(memory_of)
            .fold((0, 0), |(r, h), (rss, hwm)| (r + rss, h + hwm))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids = tree(self.pid());
        for pid in pids.iter().rev() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
    }
}

/// A process and its descendants (LiteLLM's workers are children of its
/// master process).
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is the
/// state (field 3), 1 the parent (field 4), 11 and 12 utime and stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn cpu_of(pid: u32) -> f64 {
    stat_fields(pid).map_or(0.0, |f| {
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS
    })
}

fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// For the bench's own child servers: end the process when the bench that
/// started it goes away (its end of our stdin closes), even if it was
/// killed before it could kill us.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// The machine's 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}
