//! `p402 run [--budget USD] [--max-usd-per-hour USD] [--name N] [--mode M] -- CMD ARGS...`: a
//! command (Claude Code, Codex, any agent) under a session's hard cap.
//!
//! Neither Claude Code nor Codex can cap what an interactive session
//! spends. `p402 run` creates a session on the running p402 (starting one
//! in the background if none answers), runs the command with every base-URL
//! variable pointing at that session, passes its exit code through, and
//! says what it spent and saved.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::commands::{call_server, load_config};
use crate::config::Config;
use crate::router::mode::Mode;

/// The session's budget when `--budget` is not given.
pub const DEFAULT_BUDGET_USD: f64 = 5.0;

/// How long a p402 started here may take to answer.
const START_WAIT: Duration = Duration::from_secs(30);

/// What the run's session may spend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cap {
    /// In all (`--budget`); [`DEFAULT_BUDGET_USD`] when not given.
    pub budget: Option<f64>,
    /// Over any rolling hour (`--max-usd-per-hour`).
    pub max_usd_per_hour: Option<f64>,
}

/// `p402 run`: runs `command` under a new session capped by `cap`, and
/// exits with the command's exit code (1 when p402 itself fails first).
pub fn run(
    explicit: Option<&Path>,
    cap: Cap,
    name: Option<String>,
    mode: Option<Mode>,
    command: &[String],
) -> ExitCode {
    match session_run(explicit, cap, name, mode, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("p402 run: {e}");
            ExitCode::from(1)
        }
    }
}

fn session_run(
    explicit: Option<&Path>,
    cap: Cap,
    name: Option<String>,
    mode: Option<Mode>,
    command: &[String],
) -> Result<ExitCode, String> {
    let Some((program, args)) = command.split_first() else {
        return Err(
            "no command: write it after `--`, as in `p402 run --budget 2 -- claude`".into(),
        );
    };
    let loaded = load_config(explicit)?;
    let config = &loaded.config;
    ensure_running(explicit, config)?;
    let budget = cap.budget.unwrap_or(DEFAULT_BUDGET_USD);
    let mut body = json!({"budget_usd": budget, "name": name.unwrap_or_else(|| program.clone())});
    if let Some(mode) = mode {
        body["mode"] = json!(mode);
    }
    if let Some(per_hour) = cap.max_usd_per_hour {
        body["max_usd_per_hour"] = json!(per_hour);
    }
    let session = call_server(config, http::Method::POST, "/api/v2/sessions", Some(&body))?
        .ok_or("the running p402 stopped answering")?;
    let id = session["session_id"]
        .as_str()
        .ok_or("the running p402 created no session")?
        .to_string();
    let base = format!("http://{}/s/{id}", address(config));
    let hourly = cap
        .max_usd_per_hour
        .map_or_else(String::new, |h| format!(" and at most {} an hour", usd(h)));
    eprintln!(
        "p402 run: session {id}, a {} cap{hourly}; {program} talks to {base}",
        usd(budget)
    );
    let mut child = Command::new(program);
    child
        .args(args)
        .env("OPENAI_BASE_URL", format!("{base}/v1"))
        .env("OPENAI_API_BASE", format!("{base}/v1"))
        .env("ANTHROPIC_BASE_URL", &base);
    // With local keys, the command's key must be one of them.
    if let Some(key) = config.server.api_keys.first() {
        child
            .env("OPENAI_API_KEY", key.get_ref())
            .env("ANTHROPIC_API_KEY", key.get_ref());
    }
    let status = child
        .status()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let path = format!("/api/v2/sessions/{id}");
    if let Ok(Some(view)) = call_server(config, http::Method::GET, &path, None) {
        eprintln!("p402 run: {}", summary(&view));
    }
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal.
        None => ExitCode::from(1),
    })
}

/// Dollars as a person reads them: cents, or more digits for less.
fn usd(amount: f64) -> String {
    if amount >= 0.01 || amount == 0.0 {
        format!("${amount:.2}")
    } else {
        format!("${amount:.6}")
    }
}

/// What the session spent, in one line.
fn summary(view: &Value) -> String {
    let dollars = |v: &Value| v.as_f64().unwrap_or(0.0);
    format!(
        "session {} spent ${:.6} of {} on {} requests, saved ${:.6}{}",
        view["session_id"].as_str().unwrap_or("?"),
        dollars(&view["budget"]["used_usd"]),
        usd(dollars(&view["budget"]["total_usd"])),
        view["requests"].as_u64().unwrap_or(0),
        dollars(&view["savings_usd"]),
        if dollars(&view["budget"]["remaining_usd"]) <= 0.0 {
            " (the cap was reached)"
        } else {
            ""
        },
    )
}

/// The address the running p402 answers at.
fn address(config: &Config) -> std::net::SocketAddr {
    let mut addr = *config.server.listen.get_ref();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Starts `p402 serve` in the background unless one already answers, and
/// waits until it does. It keeps running after the command, as the user's
/// p402; its log goes to `<data_dir>/p402-run.log`.
fn ensure_running(explicit: Option<&Path>, config: &Config) -> Result<(), String> {
    if call_server(config, http::Method::GET, "/health", None)?.is_some() {
        return Ok(());
    }
    if config.server.listen.get_ref().port() == 0 {
        return Err("no p402 answers, and [server] listen names no port to start one on".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find p402 itself: {e}"))?;
    let dir = crate::server::serve::data_dir(config);
    crate::ops::private::create_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let log_path = dir.join("p402-run.log");
    let log = crate::ops::private::create_file(&log_path)
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
    let mut serve = Command::new(exe);
    serve.arg("serve");
    if let Some(path) = explicit {
        serve.arg("--config").arg(path);
    }
    let child = serve
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start p402: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < START_WAIT {
        std::thread::sleep(Duration::from_millis(200));
        if call_server(config, http::Method::GET, "/health", None)?.is_some() {
            eprintln!(
                "p402 run: started p402 in the background (pid {}, log {}); it keeps running",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
    }
    Err(format!(
        "p402 did not start within {START_WAIT:?}; see {}",
        log_path.display()
    ))
}
