//! Log output: readable on a terminal, JSON for machines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr goes to journald (`$JOURNAL_STREAM`), text otherwise.
    Auto,
    /// Plain lines, for a person reading a terminal.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// The log writer's thread: dropping it (at the end of `main`) writes out
/// what is still queued.
pub type Guard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// `RUST_LOG` overrides the default level (`info`).
///
/// Lines go to stderr through a writer thread (tracing-appender's
/// non-blocking writer), so a request's log line costs it a queue push,
/// not a `write` system call. The queue blocks rather than drop lines when
/// stderr cannot keep up: the request log is a record, not a sample.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("p402-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests start several servers in one process):
    // the first writer stays, and this one's thread ends with its guard.
    result.ok().map(|()| guard)
}

/// systemd sets `$JOURNAL_STREAM` to the `device:inode` of the stream it
/// connects to journald. The variable is inherited by children whose stderr
/// may go elsewhere (a shell started from a service, `p402 ... 2>file`), so,
/// as systemd.exec(5) advises, it counts only when it names stderr itself.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(stream) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    stderr_identity() == Some(stream)
}

/// `"8:1234"` -> `(8, 1234)`: device and inode, in decimal.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

#[cfg(unix)]
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn stderr_identity() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_journal_stream("0:99"), Some((0, 99)));
        assert_eq!(parse_journal_stream(""), None);
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream("-1:5"), None);
    }
}
