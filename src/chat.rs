//! The chat completion request path, top to bottom:
//! read the body -> parse -> route -> call upstream (trying the next
//! candidate on a retryable failure) -> answer, buffered or streamed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyDataStream, BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::body::{self, Body};
use crate::budget::Reservation;
use crate::cache::{Cache, Hit, Probe};
use crate::catalog::Api;
use crate::charge::{self, Charge, Reserved, Used};
use crate::error::{ApiError, ErrorKind};
use crate::ids::RequestId;
use crate::limits::Permit;
use crate::metadata::{self, FailedAttempt, Timing};
use crate::metadata::{Costs, SessionInfo};
use crate::metrics::{ErrorLabels, ProviderLabels};
use crate::providers::{self, openai};
use crate::replay::{self, Replay};
use crate::request::{self, ChatRequest};
use crate::request_log::RequestLog;
use crate::router::{Candidate, ModeChoice, Needs, Route};
use crate::state::{AppState, Runtime};
use crate::store::LedgerEntry;
use crate::stream::{elapsed_ms, Relay, Watch, Watched};
use crate::tokens;
use crate::upstream::UpstreamError;

/// Serves a chat completion on a task of its own, which the client's
/// connection does not own: hyper drops the handler when the client hangs
/// up, but a request already sent upstream is read to its end and settled
/// all the same (the provider bills it either way), so that walking away
/// can never make a budget stop counting. Shutdown waits for these tasks.
pub async fn handle(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    request_id: RequestId,
    local_key: Option<String>,
) -> Response<Body> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task_state = state.clone();
    let task_id = request_id.clone();
    state.spawn(async move {
        let response = respond(&task_state, &runtime, request, task_id, local_key).await;
        // The client may be gone: the work was done for the ledger.
        let _ = answer.send(response);
    });
    match answered.await {
        Ok(response) => response,
        Err(_) => ApiError::internal("the request's task ended without an answer")
            .into_response(&request_id),
    }
}

async fn respond(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: RequestId,
    local_key: Option<String>,
) -> Response<Body> {
    let started = Instant::now();
    match run(
        state,
        runtime,
        request,
        &request_id,
        started,
        local_key.as_deref(),
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            let mut log = RequestLog::new(&request_id, false, started);
            log.failed(&error);
            log.emit(state.metrics());
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
    local_key: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let config = runtime.config();
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, &config.server).await?;
    // Taken once the body is in: a slow sender must not hold a place that
    // a ready request could use.
    let mut permit = Some(state.limiter().admit(&config.limits)?);
    let chat = request::parse(&bytes, &parts.headers)?;
    let charge = Charge::resolve(runtime, state.sessions(), state.book(), &chat, local_key)?;
    charge.ensure_ledger(state.book())?;
    let mode = chat
        .options
        .mode
        .unwrap_or(ModeChoice::Named(config.routing.default_mode));
    let mut probe = Cache::probe(
        &chat,
        &serde_json::to_value(mode).unwrap_or(Value::Null),
        &config.cache,
        local_key,
    );
    if let Some(probe) = probe.as_mut() {
        match state.cache().lookup(probe, config.cache.similarity.0).await {
            Ok(Some(hit)) => {
                return Ok(serve_hit(
                    state, runtime, &chat, &charge, &hit, mode, request_id, started,
                ))
            }
            Ok(None) => {
                state.metrics().cache_misses.inc();
            }
            Err(e) => {
                tracing::warn!(request_id = %request_id, "cache lookup failed, asking a provider: {e}")
            }
        }
    }
    let input_tokens = count_input_tokens(&chat).await?;
    let route = state.router(runtime).route(&chat, input_tokens)?;
    let output_limit = Needs::of(&chat, input_tokens).output_limit;

    let mut failed: Vec<FailedAttempt> = Vec::new();
    let mut all_timeouts = true;
    let mut shortfalls = Vec::new();
    let mut unpriced = 0;
    for candidate in &route.candidates {
        // A provider whose breaker is half-open takes one trial request at a
        // time; the others skip it.
        if !state.health().admits(&candidate.provider.name) {
            continue;
        }
        let (reservation, max_tokens) =
            match charge.reserve(state.book(), candidate, input_tokens, output_limit)? {
                Reserved::Held(reservation, limit) => (Some(reservation), Some(limit)),
                Reserved::Unbudgeted => (None, None),
                Reserved::Unpriced => {
                    unpriced += 1;
                    state.health().release_trial(&candidate.provider.name);
                    continue;
                }
                Reserved::Short(shortfall) => {
                    shortfalls.push((shortfall, candidate.model_name().to_string()));
                    state.health().release_trial(&candidate.provider.name);
                    continue;
                }
            };
        let attempt = Attempt {
            state,
            runtime,
            probe: probe.clone(),
            chat: &chat,
            route: &route,
            candidate,
            request_id,
            started,
            charge: &charge,
            input_tokens,
            max_tokens,
        };
        match attempt.call(failed.clone(), reservation, &mut permit).await {
            Ok(response) => return Ok(response),
            Err(failure) => {
                all_timeouts &= failure.timed_out;
                if !failure.provider_sound {
                    state.health().record_failure(
                        &candidate.provider.name,
                        &failure.detail,
                        runtime.breaker_policy(),
                    );
                }
                let status = match &failure.status {
                    Value::String(word) => word.clone(),
                    other => other.to_string(),
                };
                state
                    .metrics()
                    .upstream_errors
                    .get_or_create(&ErrorLabels {
                        provider: candidate.provider.name.clone(),
                        status,
                    })
                    .inc();
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
    if failed.is_empty() && !shortfalls.is_empty() {
        return Err(charge::shortfall_error(&shortfalls, &charge, state.book()));
    }
    if failed.is_empty() && unpriced > 0 {
        return Err(ApiError::invalid(
            "unpriced_model",
            "this request is charged to a budget, and its model has no price in the catalog: add input_per_mtok and output_per_mtok under [[models]] in p402.toml (0 for a free local model)",
        ));
    }
    if failed.is_empty() {
        return Err(ApiError::new(
            ErrorKind::NoProvider,
            "no_provider_available",
            "every candidate provider is failing (circuit open); try again shortly",
        ));
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
        let bytes = read_body(body, &parts.headers, &runtime.config().server).await?;
        let _permit = state.limiter().admit(&runtime.config().limits)?;
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

/// A successful upstream answer on its way to the client.
enum Answer {
    /// An OpenAI answer passed on byte for byte, metadata appended.
    AsItCame(Bytes),
    /// Built as a tree: translated, to be cached, or with no usage.
    Tree(Value),
}

/// Why one candidate gave no usable answer, when another may.
struct Failure {
    /// The HTTP status, or a word for what happened instead.
    status: Value,
    timed_out: bool,
    detail: String,
    /// The provider answered as it should (it only lacks the model), so
    /// its circuit breaker does not count this.
    provider_sound: bool,
}

impl Failure {
    fn new(status: impl Into<Value>, detail: impl Into<String>) -> Self {
        Failure {
            status: status.into(),
            timed_out: false,
            detail: detail.into(),
            provider_sound: false,
        }
    }
}

struct Attempt<'a> {
    state: &'a AppState,
    /// Where to store the answer in the cache, if it may be.
    probe: Option<Probe>,
    runtime: &'a Runtime,
    chat: &'a ChatRequest,
    route: &'a Route,
    candidate: &'a Candidate,
    request_id: &'a RequestId,
    started: Instant,
    charge: &'a Charge,
    input_tokens: u64,
    /// In a budgeted request, the output limit that was reserved for: it is
    /// the one sent, whatever limit fields the client wrote.
    max_tokens: Option<u32>,
}

impl Attempt<'_> {
    /// One try at one candidate: an answer for the client (including a 4xx
    /// the request itself caused), or a failure worth trying elsewhere. The
    /// reservation is settled with the answer, or released with a failure.
    async fn call(
        &self,
        failover: Vec<FailedAttempt>,
        reservation: Option<Reservation>,
        permit: &mut Option<Permit>,
    ) -> Result<Response<Body>, Failure> {
        let api = self.candidate.provider.api;
        let lowered;
        let chat = match self.max_tokens {
            // Exactly the reserved limit goes out (the provider adapters
            // rename it for the target).
            Some(limit) => {
                let mut copy = self.chat.clone();
                copy.body.remove("max_completion_tokens");
                copy.body
                    .insert("max_tokens".to_string(), Value::from(limit));
                lowered = copy;
                &lowered
            }
            None => self.chat,
        };
        let upstream_request =
            providers::build_request(&self.candidate.provider, self.candidate, chat)
                .map_err(|e| Failure::new("request_error", e.message))?;
        // Shutting down past its grace: nothing more goes upstream.
        if self.state.aborting().is_cancelled() {
            return Ok(shutting_down(self.request_id));
        }
        let upstream_started = Instant::now();
        let sent = tokio::select! {
            sent = self.runtime.upstream.send(upstream_request) => sent,
            () = self.state.aborting().cancelled() => {
                return Ok(self.abandon(reservation).await);
            }
        };
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let (status, timed_out) = match &error {
                    UpstreamError::Timeout(_) => ("timeout", true),
                    UpstreamError::Connect(_) => ("connect_error", false),
                    UpstreamError::Request(_) => ("request_error", false),
                };
                return Err(Failure {
                    timed_out,
                    ..Failure::new(status, error.to_string())
                });
            }
        };
        let status = response.status();
        if !status.is_success() {
            let (parts, body) = response.into_parts();
            let bytes = self.read_upstream_body(body).await?;
            let verdict = providers::error(api, status, bytes);
            if verdict.model_missing {
                self.state.health().mark_missing(
                    &self.candidate.provider.name,
                    &self.candidate.upstream_model,
                );
                self.state
                    .health()
                    .record_success(&self.candidate.provider.name, upstream_started.elapsed());
                return Err(Failure {
                    provider_sound: true,
                    ..Failure::new(status.as_u16(), "model not found")
                });
            }
            if verdict.retryable {
                return Err(Failure::new(status.as_u16(), format!("HTTP {status}")));
            }
            self.state
                .health()
                .record_success(&self.candidate.provider.name, upstream_started.elapsed());
            return Ok(self.client_error(verdict, &parts.headers));
        }
        // The provider answered as a provider should.
        let provider = &self.candidate.provider.name;
        self.state
            .metrics()
            .upstream_latency
            .get_or_create(&ProviderLabels {
                provider: provider.clone(),
            })
            .observe(upstream_started.elapsed().as_secs_f64());
        self.state
            .health()
            .record_success(provider, upstream_started.elapsed());
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
            let watch = Watch::new(self.runtime.upstream.config().max_response_bytes);
            let relay = Relay {
                probe: self.probe.clone(),
                cache_config: self.runtime.config().cache.clone(),
                state: self.state.clone(),
                charge: self.charge.clone(),
                reservation,
                permit: permit.take(),
                input_tokens: self.input_tokens,
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
                max_duration: self.runtime.upstream.config().max_stream_seconds.duration(),
                watch: watch.clone(),
            };
            let bytes = Watched::new(BodyDataStream::new(response.into_body()), watch);
            let events = match api {
                Api::Openai => openai::decode_stream(bytes),
                Api::Anthropic => providers::anthropic::translate_stream(bytes),
            };
            return Ok(relay.respond(events));
        }

        let bytes = tokio::select! {
            read = self.read_upstream_body(response.into_body()) => read?,
            () = self.state.aborting().cancelled() => {
                return Ok(self.abandon(reservation).await);
            }
        };
        // An OpenAI answer that reports its usage and is not to be cached is
        // passed on as it came, with the metadata appended: building and
        // re-serializing its tree was a tenth of p402's CPU per request.
        let passable = (api == Api::Openai && self.probe.is_none())
            .then(|| openai::passable_usage(&bytes))
            .flatten();
        let (mut answer, used) = match passable {
            Some(usage) => (
                Answer::AsItCame(bytes),
                Used::of(Some(usage), self.input_tokens, ""),
            ),
            None => {
                let answer = self.answer_tree(api, &bytes)?;
                let used = match openai::usage(&answer) {
                    reported @ Some(_) => Used::of(reported, self.input_tokens, ""),
                    None => {
                        let mut text = String::new();
                        charge::generated_text(&answer, "message", &mut text);
                        Used::of(None, self.input_tokens, &text)
                    }
                };
                (Answer::Tree(answer), used)
            }
        };
        let costs = Costs::of(
            Some(&used.usage),
            self.candidate.price(),
            self.route.baseline,
        );
        let entry =
            charge::ledger_entry(self.request_id, self.charge, self.candidate, &used, &costs);
        let provider_latency_ms = elapsed_ms(upstream_started);
        // Durable before the answer leaves: a crash after this point cannot
        // lose the charge.
        let ledger_warning = charge::settle(self.state.book(), reservation, &entry).await;
        if let (Some(probe), Answer::Tree(answer)) = (self.probe.clone(), &answer) {
            let config = &self.runtime.config().cache;
            if replay::storable(answer, config.store_tool_calls) {
                let stored = self
                    .state
                    .cache()
                    .store(
                        probe,
                        answer,
                        &used.usage,
                        &self.candidate.provider.name,
                        self.candidate.model_name(),
                        config,
                    )
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(request_id = %self.request_id, "could not store the answer in the cache: {e}");
                }
            }
        }
        let mut metadata = metadata::build(
            self.request_id,
            self.route,
            self.candidate,
            Some(&used),
            failover,
            Timing {
                latency_ms: elapsed_ms(self.started),
                provider_latency_ms,
            },
            self.session_info(),
        );
        metadata.ledger_warning = ledger_warning;
        let internal = |e: serde_json::Error| Failure::new("internal_error", e.to_string());
        let bytes = match &mut answer {
            Answer::AsItCame(bytes) => {
                let metadata = serde_json::to_vec(&metadata).map_err(internal)?;
                openai::with_member(bytes, "p402_metadata", &metadata).ok_or_else(|| {
                    Failure::new("internal_error", "the answer lost its closing brace")
                })?
            }
            Answer::Tree(answer) => {
                if let Some(object) = answer.as_object_mut() {
                    object.insert(
                        "p402_metadata".to_string(),
                        serde_json::to_value(&metadata).map_err(internal)?,
                    );
                }
                serde_json::to_vec(answer).map_err(internal)?
            }
        };

        let mut log = RequestLog::new(self.request_id, false, self.started);
        log.answered(&metadata);
        log.status(200);
        log.emit(self.state.metrics());

        let mut response = Response::new(body::full(bytes));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        metadata::headers(headers, &metadata);
        Ok(response)
    }

    /// A successful answer as an OpenAI `chat.completion` tree, or why it
    /// is not one.
    fn answer_tree(&self, api: Api, bytes: &[u8]) -> Result<Value, Failure> {
        let answer =
            providers::completion(api, bytes).map_err(|e| Failure::new("invalid_response", e))?;
        let Some(object) = answer.as_object() else {
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
        Ok(answer)
    }

    fn session_info(&self) -> Option<SessionInfo> {
        let session = self.charge.session.as_ref()?;
        Some(SessionInfo {
            id: session.id.clone(),
            remaining: self.charge.session_remaining(self.state.book()),
        })
    }

    /// A 4xx the request caused goes back to the client: as the provider
    /// sent it, or in OpenAI's shape for providers that speak another API.
    fn client_error(
        &self,
        verdict: providers::ErrorVerdict,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let mut log = RequestLog::new(self.request_id, false, self.started);
        log.status(verdict.status.as_u16());
        log.emit(self.state.metrics());
        let body = match &self.candidate.provider.api_key {
            Some(key) => providers::redact_key(verdict.body, key.expose()),
            None => verdict.body,
        };
        let mut out = Response::new(body::full(body));
        *out.status_mut() = verdict.status;
        let content_type = match self.candidate.provider.api {
            crate::catalog::Api::Openai => headers.get(header::CONTENT_TYPE).cloned(),
            crate::catalog::Api::Anthropic => Some(HeaderValue::from_static("application/json")),
        };
        if let Some(content_type) = content_type {
            out.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        metadata::early_headers(out.headers_mut(), self.request_id, self.candidate);
        out
    }

    /// p402 must stop (shutdown past its grace) while the provider has the
    /// request: it bills it, so it is settled as an estimate (the prompt,
    /// no answer) rather than dropped at $0.
    async fn abandon(&self, reservation: Option<Reservation>) -> Response<Body> {
        let used = Used::of(None, self.input_tokens, "");
        let costs = Costs::of(
            Some(&used.usage),
            self.candidate.price(),
            self.route.baseline,
        );
        let entry =
            charge::ledger_entry(self.request_id, self.charge, self.candidate, &used, &costs);
        // The entry is kept in memory if it cannot be written now, and no
        // one is left to warn.
        let _ = charge::settle(self.state.book(), reservation, &entry).await;
        shutting_down(self.request_id)
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
                timed_out: true,
                ..Failure::new("timeout", "the answer did not finish arriving in time")
            }),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::new(
                "response_too_large",
                format!(
                    "the answer is larger than [upstream] max_response_bytes ({} bytes)",
                    config.max_response_bytes
                ),
            )),
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
    } else if !failed.is_empty() && failed.iter().all(|a| a.status == 404) {
        (
            ErrorKind::NotFound,
            "model_not_found",
            "no provider tried has this model",
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

/// What a request gets when p402 stops it at shutdown.
fn shutting_down(request_id: &RequestId) -> Response<Body> {
    ApiError::new(
        ErrorKind::Unavailable,
        "shutting_down",
        "p402 is shutting down; a request the provider had received is charged as an estimate",
    )
    .into_response(request_id)
}

/// Answers from the cache: free, and recorded in the ledger with the direct
/// cost it avoided, so reports show cache savings.
#[allow(clippy::too_many_arguments)]
fn serve_hit(
    state: &AppState,
    runtime: &Runtime,
    chat: &ChatRequest,
    charge: &Charge,
    hit: &Hit,
    mode: ModeChoice,
    request_id: &RequestId,
    started: Instant,
) -> Response<Body> {
    let direct = replay::direct_cost(hit, state.router(runtime).baseline(&chat.model));
    let entry = LedgerEntry {
        time: chrono::Utc::now(),
        request_id: request_id.to_string(),
        session: charge.session.as_ref().map(|s| s.id.clone()),
        budgets: charge.budgets.clone(),
        provider: "cache".to_string(),
        model: None,
        input_tokens: hit.entry.input_tokens,
        output_tokens: hit.entry.output_tokens,
        cached_input_tokens: 0,
        cost_nanos: 0,
        direct_nanos: direct.nanos(),
        cached: true,
        estimated: false,
    };
    let accounts: Vec<String> = charge
        .accounts
        .iter()
        .filter_map(|a| a.key.clone())
        .collect();
    if let Err(e) = state.book().store().record_queued(&entry, &accounts) {
        tracing::error!(request_id = %request_id, "could not record the cache hit in the ledger: {e}");
    }
    state.cache().record_saving(direct);
    let replay = Replay {
        hit,
        request_id,
        mode,
        requested_model: &chat.model,
        direct,
        latency_ms: elapsed_ms(started),
        session: charge.session.as_ref().map(|s| SessionInfo {
            id: s.id.clone(),
            remaining: charge.session_remaining(state.book()),
        }),
    };
    let metadata = replay.metadata();
    let mut log = RequestLog::new(request_id, chat.stream, started);
    log.answered(&metadata);
    log.status(200);
    log.emit(state.metrics());
    if chat.stream {
        replay.sse(&metadata, chat.client_wants_usage)
    } else {
        replay.json(&metadata)
    }
}

/// Reads the request body within `[server] body_read_timeout_seconds`,
/// refusing it as soon as it passes `max_body_bytes` rather than after
/// holding it all.
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, ApiError> {
    let deadline = server.body_read_timeout_seconds.duration();
    tokio::time::timeout(deadline, read_limited(body, headers, server.max_body_bytes))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorKind::RequestTimeout,
                "body_timeout",
                format!("the request body did not arrive within {deadline:?}"),
            ))
        })
}

async fn read_limited(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
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
