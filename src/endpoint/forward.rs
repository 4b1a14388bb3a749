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

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::catalog::Provider;
use crate::endpoint::background;
use crate::ops::state::AppState;
use crate::pipeline::call::{Call, Endpoint, Reached, Received, Served};
use crate::pipeline::charge::Charge;
use crate::pipeline::SideEntry;
use crate::server::body::{self, Body};
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::store::{Forwarded, LedgerEntry};
use crate::wire::request::{from_headers, P402Options};

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

/// The door of everything else under `/v1/`: `path` is forwarded as it is.
#[derive(Clone)]
pub(crate) struct Forward {
    /// The path asked for.
    pub path: String,
    /// `METHOD path`, for the log line and the ledger.
    endpoint: String,
}

impl Forward {
    pub fn new(method: &Method, path: &str) -> Self {
        Forward {
            path: path.to_string(),
            endpoint: format!("{method} {path}"),
        }
    }
}

/// A forwarded request, ready to go: its provider, its head and its body.
pub(crate) struct Outgoing {
    provider: std::sync::Arc<Provider>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Incoming,
    /// Who pays: from the `x-p402-*` headers.
    options: P402Options,
}

/// The head of the provider's answer; its body comes through `body`.
pub(crate) struct Head {
    status: http::StatusCode,
    headers: HeaderMap,
    provider: String,
    body: Body,
}

impl Endpoint for Forward {
    const STREAMS_BODY: bool = true;
    type Request = Outgoing;
    type Answer = Head;

    fn name(&self) -> &'static str {
        "forward"
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }

    fn parse(&self, cx: &Call<'_>, parts: Parts, body: Received) -> Result<Outgoing, ApiError> {
        let Received::Streamed(body) = body else {
            return Err(ApiError::internal("a forwarded body was read whole"));
        };
        let path = &self.path;
        let config = cx.runtime.config();
        let name = &config.routing.passthrough_provider;
        let provider = cx
            .runtime
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
        let options = from_headers(&parts.headers)?;
        let uri = upstream_uri(&provider, path, parts.uri.query())?;
        Ok(Outgoing {
            provider,
            method: parts.method,
            uri,
            headers: parts.headers,
            body,
            options,
        })
    }

    fn options<'r>(&self, out: &'r Outgoing) -> Option<&'r P402Options> {
        Some(&out.options)
    }

    async fn reach(&self, cx: &mut Call<'_>, out: Outgoing) -> Result<Reached<Head>, ApiError> {
        let path = &self.path;
        let charge = cx.charge()?;
        if charge.is_budgeted() && spends(&out.method) && !free(path) {
            return Err(ApiError::new(
                ErrorKind::BudgetExceeded,
                "unpriced_endpoint",
                format!(
                    "{path} is forwarded as it is and p402 cannot price it, so a request charged to a budget may not use it: send it without a session, or from a key with no budget"
                ),
            ));
        }
        let Outgoing {
            provider,
            method,
            uri,
            headers,
            body,
            ..
        } = out;
        let mut upstream = Request::builder().method(method.clone()).uri(uri);
        for (header_name, value) in &headers {
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
        let allowed = cx
            .runtime
            .config()
            .server
            .body_read_timeout_seconds
            .duration();
        let (body, too_slow) = crate::server::paced::Paced::new(body, allowed);
        let upstream = upstream
            .body(body.boxed())
            .map_err(|e| ApiError::internal(format!("cannot build the forwarded request: {e}")))?;
        let answer = cx
            .runtime
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
        let entry = Pending {
            request_id: cx.id.clone(),
            provider: provider.name.clone(),
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            charge: charge.clone(),
            bytes_in: counted,
        };
        // A fetched response may be a finished background job, charged once
        // its body has been read (see `background`).
        let kept = (method == Method::GET && status.is_success() && background::is_fetch(path))
            .then(bytes::BytesMut::new);
        let relay = relay(
            cx.state.clone(),
            entry,
            answer_body,
            tx,
            kept,
            provider.api_key.clone(),
        );
        Ok(Reached::Relayed {
            answer: Head {
                status,
                headers: answer_parts.headers,
                provider: provider.name.clone(),
                body: client_body,
            },
            status: status.as_u16(),
            relay: Box::pin(relay),
        })
    }

    fn render(&self, _cx: &Call<'_>, head: Head) -> Response<Body> {
        let mut response = Response::new(head.body);
        *response.status_mut() = head.status;
        copy_answer_headers(&head.headers, response.headers_mut());
        if let Ok(value) = HeaderValue::from_str(&head.provider) {
            response.headers_mut().insert("x-p402-provider", value);
        }
        response
    }
}

/// Passes the answer's body to the client as it comes, counting it, and
/// ends with its ledger entry (a finished background job's charge in it).
async fn relay(
    state: AppState,
    entry: Pending,
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    mut kept: Option<bytes::BytesMut>,
    key: Option<crate::catalog::ApiKey>,
) -> Served {
    let success = (200..300).contains(&entry.status);
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
            let data = match (&key, success) {
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
    entry.record(&state, bytes_out, job).await
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
}

impl Pending {
    /// Its entry; a finished background `job` in the answer is priced
    /// and charged with it (written now, once per job), the first time it
    /// is fetched.
    async fn record(
        self,
        state: &AppState,
        bytes_out: u64,
        job: Option<background::Finished>,
    ) -> Served {
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
        Served {
            provider: self.provider.clone(),
            model: entry.model.clone(),
            entry: Some(SideEntry {
                entry,
                reservation: None,
                settled: charged,
            }),
        }
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
