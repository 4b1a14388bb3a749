//! Everything else under `/v1/`: OpenAI's paths p402 does not serve itself
//! (files, uploads, audio, images, moderations, batches, stored responses,
//! ...) are forwarded as they are to `[routing] passthrough_provider`
//! (default `openai`), with that provider's key, streamed both ways, so
//! that setting `OPENAI_BASE_URL` to p402 never breaks a tool with a 404.
//!
//! p402 cannot price what it does not read: each such request is ledgered
//! as unpriced, with its path, status and bytes. A request charged to a
//! budget may not use it to spend outside the cap, so a budgeted request
//! that is not a read or a delete is forwarded only to paths that cost
//! nothing per call (see [`free`]). One exception is priced: a finished
//! background job fetched here (`GET /v1/responses/{id}`) is charged its
//! usage, once (see `background`).

use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::catalog::Provider;
use crate::endpoint::background;
use crate::ops::state::{AppState, Runtime};
use crate::pipeline::charge::Charge;
use crate::pipeline::{finish_side, Side, SideEntry};
use crate::server::body::{self, Body};
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::store::{Forwarded, LedgerEntry};
use crate::wire::request::from_headers;

/// Chunks in flight between the upstream answer and the client.
const CHANNEL_CAPACITY: usize = 16;

/// Headers that describe one hop, not the request, and p402's own.
const NOT_FORWARDED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "x-api-key",
    "x-p402-session",
];

/// Paths a budgeted request may `POST` (or `PUT`, `PATCH`) to: they move
/// no money per call
/// (moderations are free; files, uploads and vector stores hold data; a
/// stored response can be cancelled). `path` is read as the provider will
/// read it: percent-decoded (dot segments never get this far, see
/// `target`), and a prefix counts only up to a `/`.
fn free(path: &str) -> bool {
    let decoded = crate::server::target::percent_decode(path.as_bytes());
    let Ok(path) = std::str::from_utf8(&decoded) else {
        return false;
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    path == "/v1/moderations"
        || under("/v1/files")
        || under("/v1/uploads")
        || under("/v1/vector_stores")
        || (path.starts_with("/v1/responses/")
            && path.ends_with("/cancel")
            && path.matches('/').count() == 4)
}

/// Methods that read or delete: no provider bills them per call.
fn spends(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    )
}

pub async fn handle(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    path: &str,
    request_id: &RequestId,
    local_key: Option<&str>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    match forward(state, runtime, request, path, request_id, local_key).await {
        // Answered: its line is written once the body has gone through.
        Ok(response) => response,
        // Refused before it went anywhere: its line now.
        Err(error) => {
            let ending = Side {
                door: "forward",
                endpoint: Some(path),
                status: error.status().as_u16(),
                error: Some(&error),
                served: None,
                entry: None,
            };
            finish_side(state, request_id, started, None, ending).await;
            error.into_response(request_id)
        }
    }
}

async fn forward(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    path: &str,
    request_id: &RequestId,
    local_key: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let config = runtime.config();
    let name = &config.routing.passthrough_provider;
    let provider = runtime
        .catalog
        .provider(name)
        .filter(|p| p.is_usable())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NoProvider,
                "passthrough_unavailable",
                format!(
                    "{path} is forwarded as it is to [routing] passthrough_provider `{name}`, which is not configured with a key"
                ),
            )
        })?
        .clone();
    let options = from_headers(request.headers())?;
    let charge = Charge::for_options(runtime, state.sessions(), state.book(), &options, local_key)?;
    let method = request.method().clone();
    if charge.is_budgeted() && spends(&method) && !free(path) {
        return Err(ApiError::new(
            ErrorKind::BudgetExceeded,
            "unpriced_endpoint",
            format!(
                "{path} is forwarded as it is and p402 cannot price it, so a request charged to a budget may not use it: send it without a session, or from a key with no budget"
            ),
        ));
    }
    let _permit = state.limiter().admit(&config.limits)?;
    let (parts, body) = request.into_parts();
    let uri = upstream_uri(&provider, path, parts.uri.query())?;
    let mut upstream = Request::builder().method(method.clone()).uri(uri);
    for (header_name, value) in &parts.headers {
        let lower = header_name.as_str();
        if !NOT_FORWARDED.contains(&lower) && !lower.starts_with("x-p402-") {
            upstream = upstream.header(header_name, value);
        }
    }
    upstream = with_key(upstream, &provider)?;
    let counted = Counted::default();
    let bytes_in = counted.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            bytes_in.add(data.len());
        }
        frame
    });
    let allowed = config.server.body_read_timeout_seconds.duration();
    let (body, too_slow) = crate::server::paced::Paced::new(body, allowed);
    let body = body.boxed();
    let upstream = upstream
        .body(body)
        .map_err(|e| ApiError::internal(format!("cannot build the forwarded request: {e}")))?;
    let started = Instant::now();
    let answer = runtime
        .upstream
        .send_streamed(upstream)
        .await
        .map_err(|e| {
            if too_slow.load(std::sync::atomic::Ordering::Acquire) {
                return ApiError::from(crate::pipeline::read::BodyError::Timeout(allowed));
            }
            ApiError::new(
                ErrorKind::UpstreamFailed,
                "upstream_failed",
                format!("provider `{}` did not answer {path}: {e}", provider.name),
            )
        })?;
    let status = answer.status();
    let (answer_parts, answer_body) = answer.into_parts();
    let (tx, client_body) = body::channel(CHANNEL_CAPACITY);
    let mut response = Response::new(client_body);
    *response.status_mut() = status;
    copy_answer_headers(&answer_parts.headers, response.headers_mut());
    if let Ok(value) = HeaderValue::from_str(&provider.name) {
        response.headers_mut().insert("x-p402-provider", value);
    }
    let entry = Pending {
        request_id: request_id.clone(),
        provider: provider.name.clone(),
        endpoint: format!("{method} {path}"),
        status: status.as_u16(),
        charge,
        bytes_in: counted,
        started,
    };
    let ledger = state.clone();
    let key = provider.api_key.clone();
    // A fetched response may be a finished background job, charged once
    // its body has been read (see `background`).
    let mut kept = (method == Method::GET && status.is_success() && background::is_fetch(path))
        .then(bytes::BytesMut::new);
    state.spawn(async move {
        let mut body = answer_body;
        let mut bytes_out = 0u64;
        let mut whole = false;
        loop {
            let Some(frame) = body.frame().await else {
                whole = true;
                break;
            };
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                bytes_out += data.len() as u64;
                if let Some(buffer) = kept.as_mut() {
                    if buffer.len() + data.len() <= background::MAX_RESULT_BYTES {
                        buffer.extend_from_slice(&data);
                    } else {
                        tracing::warn!(request_id = %entry.request_id, "a fetched response over {} bytes is not read for a background job's usage", background::MAX_RESULT_BYTES);
                        kept = None;
                    }
                }
                // An error body that echoes p402's key does not pass it on.
                let data = match (&key, status.is_success()) {
                    (Some(key), false) => crate::wire::redact_key(data, key.expose()),
                    _ => data,
                };
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        }
        let job = kept
            .filter(|_| whole)
            .and_then(|bytes| background::finished(&bytes));
        entry.record(&ledger, bytes_out, job).await;
    });
    Ok(response)
}

/// The provider's URL for `path`: its base URL already ends in `/v1`.
fn upstream_uri(provider: &Provider, path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let url = match query {
        Some(query) => format!("{}{rest}?{query}", provider.base_url),
        None => format!("{}{rest}", provider.base_url),
    };
    url.parse()
        .map_err(|e| ApiError::invalid("invalid_path", format!("cannot forward to `{url}`: {e}")))
}

fn with_key(
    builder: http::request::Builder,
    provider: &Provider,
) -> Result<http::request::Builder, ApiError> {
    Ok(match crate::wire::key_header(provider)? {
        Some((name, value)) => builder.header(name, value),
        None => builder,
    })
}

fn copy_answer_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !NOT_FORWARDED.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
            to.append(name, value.clone());
        }
    }
}

/// Bytes counted as they pass, shared with the counting body.
#[derive(Clone, Default)]
struct Counted(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Counted {
    fn add(&self, n: usize) {
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The ledger entry of a forwarded request, written once its answer ends.
struct Pending {
    request_id: RequestId,
    provider: String,
    endpoint: String,
    status: u16,
    charge: Charge,
    bytes_in: Counted,
    started: Instant,
}

impl Pending {
    /// Writes the entry; a finished background `job` in the answer is
    /// priced and charged with it, the first time it is fetched.
    async fn record(self, state: &AppState, bytes_out: u64, job: Option<background::Finished>) {
        let mut entry = self.charge.entry(&self.request_id, &self.provider);
        entry.forwarded = Some(Forwarded {
            endpoint: self.endpoint.clone(),
            status: self.status,
            bytes_in: self.bytes_in.get(),
            bytes_out,
        });
        let charged = match job {
            Some(job) => self.charge_job(state, &job, &mut entry).await,
            None => false,
        };
        let model = entry.model.clone();
        let ending = Side {
            door: "forward",
            endpoint: Some(&self.endpoint),
            status: self.status,
            error: None,
            served: Some((&self.provider, model.as_deref())),
            entry: Some(SideEntry {
                entry,
                reservation: None,
                settled: charged,
            }),
        };
        finish_side(
            state,
            &self.request_id,
            self.started,
            Some(&self.charge),
            ending,
        )
        .await;
    }

    /// Charges a finished background job with `entry` (its model, tokens
    /// and cost filled in), unless it was charged before; says whether the
    /// entry was written.
    async fn charge_job(
        &self,
        state: &AppState,
        job: &background::Finished,
        entry: &mut LedgerEntry,
    ) -> bool {
        let runtime = state.runtime();
        let Some(cost) = job.cost(&runtime.catalog, &self.provider) else {
            tracing::warn!(request_id = %self.request_id, model = %job.model, "a background job's model has no price in the catalog; its result is not charged");
            return false;
        };
        let mut charged = entry.clone();
        charged.door = Some("responses".into());
        charged.model = Some(job.model.clone());
        charged.input_tokens = job.usage.input_tokens;
        charged.cached_input_tokens = job.usage.cached_input_tokens;
        charged.output_tokens = job.usage.output_tokens;
        charged.cost_nanos = cost.nanos();
        charged.direct_nanos = cost.nanos();
        let accounts = self.charge.accounts.clone();
        match background::charge_once(state.book(), job, accounts, &charged).await {
            Ok(true) => {
                *entry = charged;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(request_id = %self.request_id, "could not charge background job {}: {e}", job.id);
                false
            }
        }
    }
}
