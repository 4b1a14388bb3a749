//! Accepting connections and dispatching requests to handlers.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1, or
//! HTTP/2 with prior knowledge) and registered with a graceful-shutdown
//! watcher, so that on SIGTERM the listener closes at once while requests
//! already in flight run to completion within the grace period.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod boundary;
pub(crate) mod error;
pub mod ids;
pub(crate) mod limits;
pub(crate) mod paced;
pub mod serve;
pub(crate) mod target;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api;
use crate::endpoint::Door;
use crate::ops::state::AppState;
use crate::pipeline;
use crate::server::body::Body;
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use boundary::Checked;

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    pub(crate) async fn bind(addr: SocketAddr, state: AppState) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server { listener, state })
    }

    /// The address bound, with the port the system chose when asked for 0.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits up to
    /// the configured grace period for open requests to finish; returns
    /// once every connection task has ended.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, state } = self;
        let Ok(bound) = listener.local_addr() else {
            tracing::error!("the listener has no address; not serving");
            return;
        };
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_timeout = state
            .runtime()
            .config()
            .server
            .header_read_timeout_seconds
            .duration();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        // HTTP/2 lets one connection open many streams and send large
        // header lists; both are bounded, and a silent peer is pinged and
        // dropped when it does not answer.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .keep_alive_interval(Some(H2_PING_EVERY))
            .keep_alive_timeout(H2_PING_TIMEOUT);
        tokio::pin!(shutdown);
        // Every connection's task, so that shutdown can end those still open
        // after the grace period and wait until each has let go of the state
        // (and with it the database).
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _peer) = tokio::select! {
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let max_connections = state.runtime().config().server.max_connections;
            if connections.len() >= max_connections {
                tokio::spawn(refuse_connection(stream));
                continue;
            }
            let state = state.clone();
            let requested = Arc::new(AtomicBool::new(false));
            let first = requested.clone();
            let service = service_fn(move |request| {
                let state = state.clone();
                first.store(true, Ordering::Release);
                async move { Ok::<_, Infallible>(dispatch(&state, bound, request).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            connections.spawn(async move {
                tokio::pin!(connection);
                // hyper times out slow headers only once it knows the
                // protocol, i.e. after the connection's first bytes: a
                // client that connects and sends nothing (or a byte) would
                // hold its socket for ever. Whoever has not sent a whole
                // request within the header timeout is dropped.
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = tokio::time::sleep(header_timeout) => {
                        if !requested.load(Ordering::Acquire) {
                            tracing::debug!("connection dropped: no request within {header_timeout:?}");
                            return;
                        }
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!("connection ended with an error: {e}");
                }
            });
        }
        drop(listener);
        let grace = state
            .runtime()
            .config()
            .server
            .shutdown_grace_seconds
            .duration();
        tracing::info!(
            "shutting down: no new connections, waiting up to {grace:?} for requests in flight"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining connections");
            connections.abort_all();
        }
        while connections.join_next().await.is_some() {}
    }
}

/// HTTP/2 streams one connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;
/// The largest header list an HTTP/2 peer may send.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Past `max_connections`: a short 503 instead of a silent reset, so the
/// client knows to come back.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = ApiError::new(
        ErrorKind::Unavailable,
        "too_many_connections",
        "p402 has [server] max_connections open; try again shortly",
    )
    .to_json(&RequestId::new())
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Every response carries its request id, whichever handler produced it;
/// the boundary (src/server/boundary.rs) is checked before anything else.
async fn dispatch(
    state: &AppState,
    bound: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let request_id = RequestId::new();
    // Before anything reads the path or the method: one that a provider
    // could read otherwise than p402 goes no further.
    if let Err(error) =
        crate::server::target::check(request.method(), request.uri().path(), request.headers())
    {
        return ApiError::from(error).into_response(&request_id);
    }
    let checked = boundary::check(
        &state.runtime().config().server,
        bound,
        request.method(),
        request.uri().path(),
        request.uri().authority().map(|a| a.as_str()),
        request.headers(),
    );
    let mut response = match checked {
        Checked::Answer(Ok(response)) => response,
        Checked::Answer(Err(error)) => error.into_response(&request_id),
        Checked::Pass(pass) => {
            let mut response = route(state, request, &request_id).await;
            pass.decorate(&mut response);
            response
        }
    };
    if !response.headers().contains_key("x-p402-request-id") {
        if let Ok(value) = http::HeaderValue::from_str(request_id.as_str()) {
            response.headers_mut().insert("x-p402-request-id", value);
        }
    }
    response
}

/// Routes a request to its handler. Health is open to all (monitors and
/// systemd probe it); everything else needs a local key when keys are set.
async fn route(
    state: &AppState,
    mut request: Request<Incoming>,
    request_id: &RequestId,
) -> Response<Body> {
    let request_id = request_id.clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    // `/s/{session}/v1/...`: a session for tools that only let one set a
    // base URL. It is the session header's, so the usual rules apply (a
    // session named in the body still wins, and it must be the caller's).
    let path = match session_prefix(&path) {
        Some((session, rest)) => {
            match http::HeaderValue::from_str(session) {
                Ok(value) => {
                    request.headers_mut().insert("x-p402-session", value);
                }
                Err(_) => {
                    return ApiError::invalid(
                        "invalid_session",
                        "the session id in the path is not valid text",
                    )
                    .into_response(&request_id)
                }
            }
            rest.to_string()
        }
        None => path,
    };
    let query = request.uri().query().map(str::to_string);
    let method = request.method().clone();
    let runtime = state.runtime();

    if matches!(path.as_str(), "/health" | "/api/v2/health") {
        return match method {
            Method::GET | Method::HEAD => api::health(state),
            _ => method_not_allowed(&request_id, "GET"),
        };
    }
    // The dashboard's page holds no data: it asks for a key itself when
    // `api_keys` is set, and everything it reads needs one.
    if method == Method::GET && matches!(path.as_str(), "" | "/dashboard") {
        return crate::api::dashboard::page();
    }
    // A model call's errors come in its caller's dialect, from the first.
    let door = match path.as_str() {
        "/v1/messages" | "/v1/messages/count_tokens" => Some(Door::Messages),
        "/v1/responses" => Some(Door::Responses),
        "/v1/chat/completions" | "/api/v2/chat/completions" => Some(Door::Chat),
        _ => None,
    };
    let local_key = match auth::check(runtime.config(), request.headers()) {
        Ok(key) => key,
        Err(error) => return door.unwrap_or(Door::Chat).error(&error, &request_id),
    };
    if reads_the_ledger(&path) {
        // Cache hits' free entries are queued, not awaited: what a client
        // was answered before this request must show in what it reads.
        if let Err(e) = state.book().store().caught_up().await {
            return ApiError::internal(format!("ledger: {e}")).into_response(&request_id);
        }
    }
    // What this key may see of other keys' sessions (src/api/visibility.rs).
    let viewer = || {
        crate::api::visibility::Viewer::of(state, &runtime, local_key.as_deref())
            .map_err(|e| ApiError::internal(format!("sessions: {e}")))
    };
    if let Some(id) = path.strip_prefix("/api/v2/requests/") {
        return match (method, viewer()) {
            (_, Err(error)) => error.into_response(&request_id),
            (Method::GET, Ok(viewer)) => api::ledger_entry(state, id, &request_id, &viewer),
            _ => method_not_allowed(&request_id, "GET"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/v2/sessions") {
        return api::sessions(
            state,
            &runtime,
            request,
            rest,
            &request_id,
            local_key.as_deref(),
        )
        .await;
    }
    match (method, path.as_str()) {
        (
            Method::POST,
            "/v1/chat/completions" | "/api/v2/chat/completions" | "/v1/messages" | "/v1/responses",
        ) => {
            let door = door.unwrap_or(Door::Chat);
            pipeline::handle(state, runtime, request, request_id, local_key, door).await
        }
        (Method::POST, "/v1/embeddings") => {
            let door = crate::endpoint::embeddings::Embeddings;
            pipeline::handle(state, runtime, request, request_id, local_key, door).await
        }
        (Method::POST, "/v1/messages/count_tokens") => {
            let door = crate::endpoint::count_tokens::CountTokens;
            pipeline::handle(state, runtime, request, request_id, local_key, door).await
        }
        (Method::GET, "/v1/models") => {
            let anthropic = request.headers().contains_key("anthropic-version");
            api::models(state, anthropic)
        }
        // What a client probes its base URL with.
        (Method::HEAD, "") => http::Response::new(crate::server::body::full(bytes::Bytes::new())),
        (Method::GET, "/api/v2/models") => api::catalog(state),
        (Method::GET, "/metrics") => match viewer() {
            Ok(viewer) => api::metrics(state, &runtime, &viewer).await,
            Err(error) => error.into_response(&request_id),
        },
        (Method::GET, "/api/v2/providers") => api::providers(state),
        (Method::GET, "/api/v2/config") => api::config(state),
        (Method::GET, "/api/v2/cache/stats") => {
            api::cache(state, &runtime, false, &request_id).await
        }
        (Method::POST, "/api/v2/cache/clear") => match viewer() {
            Ok(viewer) => match viewer.admin("clearing the cache") {
                Ok(()) => api::cache(state, &runtime, true, &request_id).await,
                Err(error) => error.into_response(&request_id),
            },
            Err(error) => error.into_response(&request_id),
        },
        (Method::GET, "/api/v2/report") => match viewer() {
            Ok(viewer) => api::report(state, query.as_deref(), &request_id, &viewer),
            Err(error) => error.into_response(&request_id),
        },
        // Every key's entries: the admin key's to read, as clearing the
        // cache is.
        (Method::GET, "/api/v2/export") => match viewer() {
            Ok(viewer) => match viewer.admin("exporting the ledger") {
                Ok(()) => crate::ops::export::handle(state, query.as_deref(), &request_id).await,
                Err(error) => error.into_response(&request_id),
            },
            Err(error) => error.into_response(&request_id),
        },
        (Method::GET, "/api/v2/requests") => match viewer() {
            Ok(viewer) => {
                crate::api::dashboard::latest(state, query.as_deref(), &request_id, &viewer)
            }
            Err(error) => error.into_response(&request_id),
        },
        (Method::GET, "/api/v2/quality") => crate::api::dashboard::quality(state),
        (Method::GET, "/api/v2/dashboard/spend.svg") => {
            crate::api::dashboard::spend(state, query.as_deref(), &request_id)
        }
        (Method::GET, "/api/v2/budgets") => api::budgets(state, &runtime, &request_id).await,
        (Method::GET, "/api/v2/alerts") => api::alerts(state, local_key.as_deref(), &request_id),
        (Method::POST, "/api/v2/providers/compare") => {
            api::compare(state, &runtime, request, request_id).await
        }
        (Method::POST, "/api/v2/route/explain") => {
            api::explain(state, &runtime, request, query.as_deref(), request_id).await
        }
        (
            _,
            "/v1/chat/completions" | "/api/v2/chat/completions" | "/v1/messages" | "/v1/responses",
        ) => method_not_allowed(&request_id, "POST"),
        (_, "/v1/models" | "/api/v2/models" | "/api/v2/providers") => {
            method_not_allowed(&request_id, "GET")
        }
        (_, "/api/v2/providers/compare" | "/api/v2/route/explain") => {
            method_not_allowed(&request_id, "POST")
        }
        (_, other) if crate::server::boundary::forwarded_as_is(other) => {
            let door = crate::endpoint::forward::Forward::new(request.method(), other);
            pipeline::handle(state, runtime, request, request_id, local_key, door).await
        }
        (_, other) => ApiError::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no such endpoint: {other}"),
        )
        .into_response(&request_id),
    }
}

/// The session and the rest of a `/s/{session}/...` path.
fn session_prefix(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/s/")?;
    let slash = rest.find('/')?;
    let (session, rest) = rest.split_at(slash);
    (!session.is_empty()).then_some((session, rest))
}

/// The endpoints that answer from the ledger: an audited request, sessions'
/// spend, the report, the budgets, the chart and the export.
fn reads_the_ledger(path: &str) -> bool {
    path.starts_with("/api/v2/requests")
        || path.starts_with("/api/v2/sessions")
        || matches!(
            path,
            "/api/v2/report" | "/api/v2/budgets" | "/api/v2/dashboard/spend.svg" | "/api/v2/export"
        )
}

fn method_not_allowed(request_id: &RequestId, allowed: &'static str) -> Response<Body> {
    let mut response = ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method_not_allowed",
        format!("this endpoint accepts {allowed} only"),
    )
    .into_response(request_id);
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    response
}
