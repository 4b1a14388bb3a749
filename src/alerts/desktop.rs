//! Desktop notifications, through the freedesktop notification service
//! where there is one (`[alerts] desktop = true`).
//!
//! `notify-send` (libnotify) speaks to that service on any Linux desktop;
//! a machine without it (a server, a container, a Mac) simply gets none:
//! the log line, the dashboard, the metric and the webhook still say it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Shows `summary` and `body` on the desktop, if this machine can; never
/// waits for it, never fails.
pub fn notify(summary: String, body: String) {
    let Some(program) = notify_send() else {
        tracing::debug!("no notify-send on PATH: no desktop notification");
        return;
    };
    // A blocking thread: the child is waited for (reaped) there, not on an
    // async worker.
    tokio::task::spawn_blocking(move || {
        let shown = Command::new(program)
            .args(["--app-name=p402", "--urgency=normal", "--"])
            .arg(format!("p402: {summary}"))
            .arg(body)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match shown {
            Ok(status) if status.success() => {}
            // No session bus or notification daemon: nothing to show on.
            Ok(status) => tracing::debug!("notify-send exited with {status}"),
            Err(e) => tracing::debug!("notify-send could not run: {e}"),
        }
    });
}

/// `notify-send` on `PATH`, if it is there.
fn notify_send() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("notify-send"))
        .find(|candidate| candidate.is_file())
}
