//! Desktop notifications, through the freedesktop notification service
//! where there is one (`[alerts] desktop = true`).
//!
//! `notify-send` (libnotify) speaks to that service on any Linux desktop;
//! a machine without it (a server, a container, a Mac) simply gets none:
//! the log line, the dashboard, the metric and the webhook still say it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Shows `summary` and `body` on the desktop, if this machine can; never
/// waits for it, never fails.
pub fn notify(summary: String, body: String) {
    let Some(program) = notify_send() else {
        tracing::debug!("no notify-send on PATH: no desktop notification");
        return;
    };
    // A blocking thread: the child is waited for (reaped) there, not on an
    // async worker.
    tokio::task::spawn_blocking(move || match show(&program, &summary, &body) {
        Ok(status) if status.success() => {}
        // No session bus or notification daemon: nothing to show on.
        Ok(status) => tracing::debug!("notify-send exited with {status}"),
        Err(e) => tracing::debug!("notify-send could not run: {e}"),
    });
}

/// Runs `program` (a `notify-send`) for one notification.
fn show(program: &Path, summary: &str, body: &str) -> std::io::Result<ExitStatus> {
    Command::new(program)
        .args(["--app-name=p402", "--urgency=normal", "--"])
        .arg(format!("p402: {summary}"))
        .arg(body)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// `notify-send` on `PATH`, if it is there.
fn notify_send() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("notify-send"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_notification_is_the_summary_and_the_body_as_notify_send_takes_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("args");
        let program = dir.path().join("notify-send");
        std::fs::write(
            &program,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", out.display()),
        )
        .expect("script");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let status = show(
            &program,
            "budget global has used 80%",
            "$8.00 of $10.00 used",
        )
        .expect("ran");
        assert!(status.success());
        let args = std::fs::read_to_string(&out).expect("args");
        assert_eq!(
            args.lines().collect::<Vec<_>>(),
            vec![
                "--app-name=p402",
                "--urgency=normal",
                "--",
                "p402: budget global has used 80%",
                "$8.00 of $10.00 used"
            ]
        );
    }
}
