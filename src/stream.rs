//! Streaming answers back to the client as they arrive.
//!
//! A relay task reads the upstream's events and writes each one to the
//! client the moment it is parsed: nothing is buffered beyond one event. At
//! the end it adds the `choices: []` chunk with `p402_metadata`, then
//! `data: [DONE]`. A failure after the first byte cannot change the HTTP
//! status any more, so it becomes an OpenAI-style error event.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{self, Body};
use crate::budget::Reservation;
use crate::cache::{self, Probe};
use crate::catalog::Usage;
use crate::charge::{self, Charge, Used};
use crate::config::CacheConfig;
use crate::error::{ApiError, ErrorKind};
use crate::ids::RequestId;
use crate::limits::Permit;
use crate::metadata::{self, FailedAttempt, Timing};
use crate::metadata::{Costs, SessionInfo};
use crate::provider_health::BreakerPolicy;
use crate::providers::{openai, EventStream, StreamEvent};
use crate::replay;
use crate::request_log::RequestLog;
use crate::router::{Candidate, Route};
use crate::state::AppState;

/// Events in flight between the relay and hyper; small, because each one is
/// written out as soon as the client's socket takes it.
const CHANNEL_CAPACITY: usize = 16;

/// Everything the relay needs to finish the request on its own.
pub struct Relay {
    /// Where to store the streamed answer in the cache, if it may be.
    pub probe: Option<Probe>,
    pub cache_config: CacheConfig,
    pub state: AppState,
    pub charge: Charge,
    /// Settled when the stream ends, however it ends.
    pub reservation: Option<Reservation>,
    /// The concurrency slot, held until the stream ends.
    pub permit: Option<Permit>,
    /// Counted before dispatch; used when the provider reports no usage.
    pub input_tokens: u64,
    pub breaker: BreakerPolicy,
    pub request_id: RequestId,
    pub route: Route,
    pub candidate: Candidate,
    pub failover: Vec<FailedAttempt>,
    pub started: Instant,
    pub upstream_started: Instant,
    pub client_wants_usage: bool,
    pub idle_timeout: Duration,
}

impl Relay {
    /// Starts relaying `events` and returns the response whose body they feed.
    pub fn respond(self, events: EventStream) -> Response<Body> {
        let (tx, body) = body::channel(CHANNEL_CAPACITY);
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        metadata::early_headers(headers, &self.request_id, &self.candidate);
        tokio::spawn(self.run(events, tx));
        response
    }

    async fn run(mut self, mut events: EventStream, tx: mpsc::Sender<Bytes>) {
        let mut usage: Option<Usage> = None;
        // What the answer said, to count its tokens if no usage arrives
        // (and to store it in the cache).
        let mut text = String::new();
        let mut content = String::new();
        let mut finish: Option<Value> = None;
        let mut tool_calls = false;
        // id, created and model of the upstream's chunks, echoed in ours.
        let mut envelope: Option<(Value, Value, Value)> = None;
        let outcome: Result<(), ApiError> = loop {
            let next = match tokio::time::timeout(self.idle_timeout, events.next()).await {
                Err(_) => {
                    break Err(ApiError::new(
                        ErrorKind::UpstreamTimeout,
                        "upstream_timeout",
                        format!(
                            "the provider sent nothing for {:?} in the middle of the stream",
                            self.idle_timeout
                        ),
                    ))
                }
                Ok(None) => {
                    break Err(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_ended",
                        "the provider closed the stream before it was complete",
                    ))
                }
                Ok(Some(Err(e))) => {
                    break Err(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_error",
                        e.to_string(),
                    ))
                }
                Ok(Some(Ok(event))) => event,
            };
            let chunk = match next {
                StreamEvent::Done => break Ok(()),
                StreamEvent::Chunk(chunk) => chunk,
            };
            if chunk.get("error").is_some() {
                // The provider's own error event goes through as it is.
                let _ = tx.send(event(&chunk)).await;
                break Err(ApiError::new(
                    ErrorKind::UpstreamFailed,
                    "upstream_error_event",
                    "the provider sent an error event",
                ));
            }
            if envelope.is_none() {
                envelope = Some((
                    chunk.get("id").cloned().unwrap_or(Value::Null),
                    chunk.get("created").cloned().unwrap_or(Value::Null),
                    chunk.get("model").cloned().unwrap_or(Value::Null),
                ));
            }
            if let Some(reported) = openai::usage(&chunk) {
                usage = Some(reported);
            }
            if usage.is_none() {
                charge::generated_text(&chunk, "delta", &mut text);
            }
            if self.probe.is_some() {
                collect_answer(&chunk, &mut content, &mut finish, &mut tool_calls);
            }
            let Some(out) = self.for_client(chunk) else {
                continue;
            };
            if tx.send(out).await.is_err() {
                break Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "client_disconnected",
                    "the client closed the connection mid-stream",
                ));
            }
        };

        let upstream_ms = elapsed_ms(self.upstream_started);
        // The relay owns the upstream body: dropping it here, not at the end
        // of the task, cancels an upstream the client no longer listens to.
        drop(events);
        // Whatever happened, what was generated was paid for: settle it
        // (from the usage chunk, or from the text received) before the
        // stream's last bytes go out.
        let used = Used::of(usage, self.input_tokens, &text);
        let costs = Costs::of(
            Some(&used.usage),
            self.candidate.price(),
            self.route.baseline,
        );
        let entry = charge::ledger_entry(
            &self.request_id,
            &self.charge,
            &self.candidate,
            &used,
            &costs,
        );
        charge::settle(self.state.book(), self.reservation.take(), &entry).await;
        let session = self.charge.session.as_ref().map(|s| SessionInfo {
            id: s.id.clone(),
            remaining: self.charge.session_remaining(self.state.book()),
        });
        let metadata = metadata::build(
            &self.request_id,
            &self.route,
            &self.candidate,
            Some(&used),
            self.failover.clone(),
            Timing {
                latency_ms: elapsed_ms(self.started),
                provider_latency_ms: upstream_ms,
            },
            session,
        );
        let mut log = RequestLog::new(&self.request_id, true, self.started);
        log.answered(&metadata);
        // The status line went out with the first byte, whatever follows.
        log.status(200);
        if let (Ok(()), Some(probe)) = (&outcome, self.probe.take()) {
            let (id, _, model) =
                envelope
                    .clone()
                    .unwrap_or((Value::Null, Value::Null, Value::Null));
            let answer = json!({
                "id": id, "object": "chat.completion", "created": cache::now(), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                    "finish_reason": finish.unwrap_or(Value::Null)}],
                "usage": {"prompt_tokens": used.usage.input_tokens, "completion_tokens": used.usage.output_tokens,
                    "total_tokens": used.usage.input_tokens + used.usage.output_tokens},
            });
            if !tool_calls && replay::storable(&answer, false) {
                let stored = self.state.cache().store(
                    probe,
                    &answer,
                    &used.usage,
                    &self.candidate.provider.name,
                    self.candidate.model_name(),
                    &self.cache_config,
                );
                if let Err(e) = stored {
                    tracing::warn!(request_id = %self.request_id, "could not store the answer in the cache: {e}");
                }
            }
        }
        match outcome {
            Ok(()) => {
                let (id, created, model) =
                    envelope.unwrap_or((Value::Null, Value::Null, Value::Null));
                let last = json!({
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "p402_metadata": metadata,
                });
                if tx.send(event(&last)).await.is_ok() {
                    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                }
            }
            Err(error) => {
                if error.code != "client_disconnected" {
                    self.state.health().record_failure(
                        &self.candidate.provider.name,
                        &error.message,
                        self.breaker,
                    );
                }
                if error.code != "client_disconnected" && error.code != "upstream_error_event" {
                    let _ = tx.send(event(&error.to_json(&self.request_id))).await;
                }
                log.failed(&error);
            }
        }
        log.emit(self.state.metrics());
        drop(self.permit.take());
    }

    /// The chunk as the client should see it, or `None` to hold it back.
    /// p402 always asks upstream for usage; a client that did not ask gets
    /// neither the usage-only chunk nor `usage` fields on other chunks.
    fn for_client(&self, mut chunk: Value) -> Option<Bytes> {
        if self.client_wants_usage {
            return Some(event(&chunk));
        }
        let object = chunk.as_object_mut()?;
        let has_choices = object
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if !has_choices && object.contains_key("usage") {
            return None;
        }
        object.remove("usage");
        Some(event(&chunk))
    }
}

/// Gathers what a cached copy of a streamed answer needs.
fn collect_answer(
    chunk: &Value,
    content: &mut String,
    finish: &mut Option<Value>,
    tool_calls: &mut bool,
) {
    for choice in chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let delta = &choice["delta"];
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            content.push_str(text);
        }
        *tool_calls |= delta.get("tool_calls").is_some_and(|c| !c.is_null());
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            *finish = Some(reason.clone());
        }
    }
}

fn event(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
