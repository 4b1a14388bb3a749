//! Telling systemd how p402 is doing, for the `Type=notify` units in
//! `systemd/`:
//!
//! - `READY=1` once the config is loaded and the listener is bound, with the
//!   address in `STATUS=` (what `systemctl status` shows);
//! - `RELOADING=1` when SIGHUP asks for a re-read, and `READY=1` again once
//!   the file has been read, applied or refused (p402 serves on either way);
//! - `STOPPING=1` when shutdown begins;
//! - `WATCHDOG=1` at half of `WatchdogSec=`, and only after p402 has answered
//!   its own `/health` through its listener: a wedged accept loop or runtime
//!   stops the pings, and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use crate::store::Store;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinHandle;

/// Startup, or a reload, is done; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    imp::send(&[Message::Ready, Message::Status(&one_line(status))]);
}

/// A SIGHUP re-read of the config has begun.
pub fn reloading() {
    imp::send(&[Message::Reloading]);
}

/// Shutdown has begun: no new connections, requests in flight finish.
pub fn stopping() {
    imp::send(&[
        Message::Stopping,
        Message::Status("stopping: finishing requests in flight"),
    ]);
}

/// The watchdog period systemd asks for (`WatchdogSec=`, passed as
/// `$WATCHDOG_USEC`), unless it is meant for another process
/// (`$WATCHDOG_PID`) or is zero.
pub fn watchdog_period() -> Option<Duration> {
    imp::watchdog_period().filter(|period| !period.is_zero())
}

/// Pings systemd's watchdog while p402 answers its own health check.
/// Dropping it stops the pings; [`Watchdog::stop`] also waits until no ping
/// can still be on its way.
pub struct Watchdog {
    task: JoinHandle<()>,
}

impl Watchdog {
    /// Starts pinging when systemd asked for a watchdog; `addr` is where
    /// p402 listens, `store` its database.
    pub fn start(addr: SocketAddr, store: Store) -> Option<Watchdog> {
        let period = watchdog_period()?;
        tracing::info!(
            "systemd watchdog: {period:?}; p402 checks its own /health and a database round trip every {:?}",
            period / 2
        );
        let task = tokio::spawn(ping_while_healthy(probe_addr(addr), store, period / 2));
        Some(Watchdog { task })
    }

    /// Stops the pings and returns once the last one, if any, has been sent.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every `every` (half the watchdog period), asks `/health` through the
/// listener and sends one job through the database's writer thread, and
/// pings only when both answer within half of `every` (health with 200,
/// which a stalled store turns into 503). A failed or slow check sends no
/// ping; systemd restarts p402 once a whole period passes without one, that
/// is after one or two such checks in a row: a stuck disk or database
/// restarts the service like a wedged runtime does.
async fn ping_while_healthy(addr: SocketAddr, store: Store, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let check = async {
            answers_health(addr).await?;
            store
                .round_trip(every / 2)
                .await
                .map_err(|e| format!("the database: {e}"))
        };
        match tokio::time::timeout(every / 2, check).await {
            Ok(Ok(())) => imp::send(&[Message::Watchdog]),
            Ok(Err(e)) => {
                tracing::warn!("systemd watchdog: the check on {addr} failed ({e}); no ping")
            }
            Err(_) => tracing::warn!(
                "systemd watchdog: /health on {addr} took over {:?}; no ping",
                every / 2
            ),
        }
    }
}

/// Where to reach the listener from this host: a wildcard listen address
/// is reached through the loopback of its family.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// One `GET /health` over a fresh connection: proves the listener accepts,
/// the runtime schedules the connection task and the handler reads the state.
/// Nothing is spawned, so a check abandoned at its timeout leaves nothing
/// behind.
async fn answers_health(addr: SocketAddr) -> Result<(), String> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let request = http::Request::get("/health")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    // `Connection: close`: the connection ends with the answer.
    let (response, _) = tokio::join!(sender.send_request(request), connection);
    let response = response.map_err(|e| e.to_string())?;
    match response.status() {
        http::StatusCode::OK => Ok(()),
        status => Err(format!("status {status}")),
    }
}

/// The notify protocol is one `KEY=value` per line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// What p402 tells systemd; rendered by `sd-notify`.
enum Message<'a> {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
    Status(&'a str),
}

#[cfg(unix)]
mod imp {
    use std::time::Duration;

    use sd_notify::NotifyState;

    use super::Message;

    pub fn send(messages: &[Message]) {
        let mut states = Vec::with_capacity(messages.len() + 1);
        for message in messages {
            match message {
                Message::Ready => states.push(NotifyState::Ready),
                Message::Reloading => {
                    states.push(NotifyState::Reloading);
                    // systemd 253+ pairs a reload with this timestamp.
                    if let Ok(now) = NotifyState::monotonic_usec_now() {
                        states.push(now);
                    }
                }
                Message::Stopping => states.push(NotifyState::Stopping),
                Message::Watchdog => states.push(NotifyState::Watchdog),
                Message::Status(text) => states.push(NotifyState::Status(text)),
            }
        }
        // Without $NOTIFY_SOCKET this sends nothing and succeeds.
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!("cannot notify systemd ($NOTIFY_SOCKET): {e}");
        }
    }

    pub fn watchdog_period() -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

#[cfg(not(unix))]
mod imp {
    use std::time::Duration;

    use super::Message;

    pub fn send(_messages: &[Message]) {}

    pub fn watchdog_period() -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8402".parse().unwrap();
        let v6: SocketAddr = "[::]:8402".parse().unwrap();
        let lan: SocketAddr = "192.168.1.7:8402".parse().unwrap();
        assert_eq!(probe_addr(v4), "127.0.0.1:8402".parse().unwrap());
        assert_eq!(probe_addr(v6), "[::1]:8402".parse().unwrap());
        assert_eq!(probe_addr(lan), lan);
    }

    /// Serves one canned HTTP answer per connection.
    async fn answering(reply: &'static str) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_a_200_from_health_counts_as_alive() {
        let ok = answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(answers_health(ok).await, Ok(()));

        let failing =
            answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert!(answers_health(failing).await.is_err());

        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        assert!(answers_health(closed).await.is_err());
    }
}
