//! The chat completion request path, top to bottom:
//! read the body -> parse -> route -> call upstream (trying the next
//! candidate on a retryable failure) -> answer, buffered or streamed.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::body::{self, Body};
use crate::error::{ApiError, ErrorKind};
use crate::ids::RequestId;
use crate::metadata::{self, FailedAttempt, Timing};
use crate::providers::{self, openai};
use crate::request::{self, ChatRequest};
use crate::request_log::RequestLog;
use crate::router::{Candidate, Route};
use crate::state::{AppState, Runtime};
use crate::stream::{elapsed_ms, Relay};
use crate::tokens;
use crate::upstream::UpstreamError;

pub async fn handle(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: RequestId,
) -> Response<Body> {
    let started = Instant::now();
    match run(state, runtime, request, &request_id, started).await {
        Ok(response) => response,
        Err(error) => {
            let mut log = RequestLog::new(&request_id, false, started);
            log.failed(&error);
            log.emit();
            error.into_response(&request_id)
        }
    }
}

async fn run(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: &RequestId,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let config = runtime.config();
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, config.server.max_body_bytes).await?;
    let chat = request::parse(&bytes, &parts.headers)?;
    if let Some(session) = &chat.options.session_id {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "session_not_found",
            format!("session `{session}` does not exist"),
        ));
    }
    let input_tokens = count_input_tokens(&chat).await?;
    let route = state.router(runtime).route(&chat, input_tokens)?;

    let mut failed: Vec<FailedAttempt> = Vec::new();
    let mut all_timeouts = true;
    for candidate in &route.candidates {
        // A provider whose breaker is half-open takes one trial request at a
        // time; the others skip it.
        if !state.health().admits(&candidate.provider.name) {
            continue;
        }
        let attempt = Attempt {
            state,
            runtime,
            chat: &chat,
            route: &route,
            candidate,
            request_id,
            started,
        };
        match attempt.call(failed.clone()).await {
            Ok(response) => return Ok(response),
            Err(failure) => {
                all_timeouts &= failure.timed_out;
                state.health().record_failure(
                    &candidate.provider.name,
                    &failure.detail,
                    runtime.breaker_policy(),
                );
                tracing::warn!(
                    request_id = %request_id,
                    provider = %candidate.provider.name,
                    model = %candidate.upstream_model,
                    "upstream attempt failed: {}",
                    failure.detail
                );
                failed.push(FailedAttempt {
                    provider: candidate.provider.name.clone(),
                    model: candidate.model_name().to_string(),
                    status: failure.status,
                });
            }
        }
    }
    Err(every_attempt_failed(&failed, all_timeouts))
}

/// `POST /api/v2/providers/compare`: what this chat request would cost on
/// every model that could serve it, cheapest first. Nothing is sent upstream.
pub async fn compare(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: RequestId,
) -> Response<Body> {
    let result = async {
        let (parts, body) = request.into_parts();
        let bytes = read_body(body, &parts.headers, runtime.config().server.max_body_bytes).await?;
        let chat = request::parse(&bytes, &parts.headers)?;
        let input_tokens = count_input_tokens(&chat).await?;
        let quotes = state.router(runtime).quotes(&chat, input_tokens);
        Ok::<_, ApiError>(serde_json::json!({
            "object": "list",
            "requested_model": chat.model,
            "input_tokens": input_tokens,
            "data": quotes,
        }))
    }
    .await;
    match result {
        Ok(value) => crate::api::json_response(http::StatusCode::OK, &value),
        Err(error) => error.into_response(&request_id),
    }
}

/// Input tokens of the request; large prompts are counted on a blocking
/// thread so that tokenizing them never stalls the async workers.
async fn count_input_tokens(chat: &ChatRequest) -> Result<u64, ApiError> {
    if tokens::text_bytes(&chat.body) <= tokens::INLINE_LIMIT {
        return Ok(tokens::count_input(&chat.body));
    }
    let body = chat.body.clone();
    tokio::task::spawn_blocking(move || tokens::count_input(&body))
        .await
        .map_err(|e| ApiError::internal(format!("token counting failed: {e}")))
}

/// Why one candidate gave no usable answer, when another may.
struct Failure {
    /// The HTTP status, or a word for what happened instead.
    status: Value,
    timed_out: bool,
    detail: String,
}

impl Failure {
    fn new(status: impl Into<Value>, detail: impl Into<String>) -> Self {
        Failure {
            status: status.into(),
            timed_out: false,
            detail: detail.into(),
        }
    }
}

struct Attempt<'a> {
    state: &'a AppState,
    runtime: &'a Runtime,
    chat: &'a ChatRequest,
    route: &'a Route,
    candidate: &'a Candidate,
    request_id: &'a RequestId,
    started: Instant,
}

impl Attempt<'_> {
    /// One try at one candidate: an answer for the client (including a 4xx
    /// the request itself caused), or a failure worth trying elsewhere.
    async fn call(&self, failover: Vec<FailedAttempt>) -> Result<Response<Body>, Failure> {
        let upstream_request =
            openai::build_request(&self.candidate.provider, self.candidate, self.chat)
                .map_err(|e| Failure::new("request_error", e.message))?;
        let upstream_started = Instant::now();
        let response = match self.runtime.upstream.send(upstream_request).await {
            Ok(response) => response,
            Err(error) => {
                let (status, timed_out) = match &error {
                    UpstreamError::Timeout(_) => ("timeout", true),
                    UpstreamError::Connect(_) => ("connect_error", false),
                    UpstreamError::Request(_) => ("request_error", false),
                };
                return Err(Failure {
                    status: status.into(),
                    timed_out,
                    detail: error.to_string(),
                });
            }
        };
        let status = response.status();
        if providers::is_retryable(status) {
            return Err(Failure::new(status.as_u16(), format!("HTTP {status}")));
        }
        // The provider answered as a provider should: healthy, whatever the
        // request's own fate.
        let provider = &self.candidate.provider.name;
        self.state
            .health()
            .record_success(provider, upstream_started.elapsed());
        if !status.is_success() {
            return self.relay_client_error(response).await;
        }
        if let Some(key) = self.route.conversation {
            self.state
                .sticky()
                .record(key, provider, self.candidate.model_name());
        }
        if self.chat.stream {
            let is_sse = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if !is_sse {
                return Err(Failure::new(
                    "invalid_response",
                    "a stream was asked for but the answer is not text/event-stream",
                ));
            }
            let relay = Relay {
                state: self.state.clone(),
                breaker: self.runtime.breaker_policy(),
                request_id: self.request_id.clone(),
                route: self.route.clone(),
                candidate: self.candidate.clone(),
                failover,
                started: self.started,
                upstream_started,
                client_wants_usage: self.chat.client_wants_usage,
                idle_timeout: self
                    .runtime
                    .upstream
                    .config()
                    .idle_timeout_seconds
                    .duration(),
            };
            return Ok(relay.respond(openai::events(response.into_body())));
        }

        let bytes = self.read_upstream_body(response.into_body()).await?;
        let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new("invalid_response", format!("the answer is not JSON: {e}"))
        })?;
        let Some(object) = answer.as_object_mut() else {
            return Err(Failure::new(
                "invalid_response",
                "the answer is not a JSON object",
            ));
        };
        if object.contains_key("error") || !object.contains_key("choices") {
            return Err(Failure::new(
                "invalid_response",
                "a 200 answer without choices (an error body)",
            ));
        }
        let usage = openai::usage(&Value::Object(object.clone()));
        let metadata = metadata::build(
            self.request_id,
            self.route,
            self.candidate,
            usage.as_ref(),
            failover,
            Timing {
                latency_ms: elapsed_ms(self.started),
                provider_latency_ms: elapsed_ms(upstream_started),
            },
        );
        let metadata_json = serde_json::to_value(&metadata)
            .map_err(|e| Failure::new("internal_error", e.to_string()))?;
        object.insert("p402_metadata".to_string(), metadata_json);
        let bytes = serde_json::to_vec(&answer)
            .map_err(|e| Failure::new("internal_error", e.to_string()))?;

        let mut log = RequestLog::new(self.request_id, false, self.started);
        log.answered(&metadata);
        log.status(200);
        log.emit();

        let mut response = Response::new(body::full(bytes));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        metadata::headers(headers, &metadata);
        Ok(response)
    }

    /// A 4xx the request caused goes back as the provider sent it.
    async fn relay_client_error(
        &self,
        response: Response<Incoming>,
    ) -> Result<Response<Body>, Failure> {
        let (parts, body) = response.into_parts();
        let bytes = self.read_upstream_body(body).await?;
        let mut log = RequestLog::new(self.request_id, false, self.started);
        log.status(parts.status.as_u16());
        log.emit();
        let mut out = Response::new(body::full(bytes));
        *out.status_mut() = parts.status;
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            out.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        metadata::early_headers(out.headers_mut(), self.request_id, self.candidate);
        Ok(out)
    }

    async fn read_upstream_body(&self, body: Incoming) -> Result<Bytes, Failure> {
        let config = self.runtime.upstream.config();
        let limited = Limited::new(
            body,
            usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX),
        );
        match tokio::time::timeout(
            config.first_byte_timeout_seconds.duration(),
            limited.collect(),
        )
        .await
        {
            Err(_) => Err(Failure {
                status: "timeout".into(),
                timed_out: true,
                detail: "the answer did not finish arriving in time".to_string(),
            }),
            Ok(Err(e)) => Err(Failure::new(
                "invalid_response",
                format!("reading the answer failed: {e}"),
            )),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }
}

fn every_attempt_failed(failed: &[FailedAttempt], all_timeouts: bool) -> ApiError {
    let attempts: Vec<String> = failed
        .iter()
        .map(|a| {
            let status = match &a.status {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}/{}: {}", a.provider, a.model, status)
        })
        .collect();
    let (kind, code, summary) = if all_timeouts && !failed.is_empty() {
        (
            ErrorKind::UpstreamTimeout,
            "upstream_timeout",
            "no provider answered in time",
        )
    } else {
        (
            ErrorKind::UpstreamFailed,
            "upstream_failed",
            "every eligible provider failed",
        )
    };
    ApiError::new(kind, code, format!("{summary} ({})", attempts.join("; ")))
}

/// Reads the request body, refusing it as soon as it passes `limit` bytes
/// rather than after holding it all.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            "payload_too_large",
            format!("the request body is larger than max_body_bytes ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid(
            "unreadable_body",
            format!("could not read the request body: {e}"),
        )),
    }
}
