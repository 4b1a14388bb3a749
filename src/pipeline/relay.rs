//! The relay: a streamed answer, passed to the client as it arrives.
//!
//! A task of its own reads the provider's events and writes each one to
//! the client (through its door's writer) the moment it is parsed: nothing
//! is held beyond one event. Whatever happens (the end, a failure, a
//! client that hangs up, a shutdown), the relay says how the stream
//! [`Ended`] and what it used; the driver's task finishes the request with
//! that, and only then do the stream's last bytes go out ([`Ended::close`]),
//! so what was generated is settled first. A failure after the first byte
//! cannot change the HTTP status any more, so it becomes an error event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::cache;
use crate::cache::replay;
use crate::catalog::Usage;
use crate::endpoint::StreamWriter;
use crate::money::budget::Reservation;
use crate::money::cost::{self, Used};
use crate::server::body::Body;
use crate::server::error::{ApiError, ErrorKind};
use crate::server::limits::Permit;
use crate::wire::{openai, Adapter, EventStream, StreamError, StreamEvent};

use super::context::{Context, Plan, Served};
use super::finish::{self, Ending, Exit};
use super::watch::Watch;

/// A stream being relayed: the relay's state and the provider's events.
pub struct Relaying {
    relay: Relay,
    events: EventStream,
    tx: mpsc::Sender<Bytes>,
}

/// How a relayed stream ended and what it used, for the finish; then the
/// last bytes the client gets.
pub struct Ended {
    relay: Relay,
    tx: mpsc::Sender<Bytes>,
    end: StreamEnd,
    error: Option<ApiError>,
    kept: Kept,
    /// What the provider generated and bills; `None` when it refused with
    /// its own error event before generating anything, which is free.
    used: Option<Used>,
}

/// How a relayed stream ended, which decides what is charged, whether the
/// provider's breaker hears of it and what the client is told.
enum StreamEnd {
    /// The provider finished it.
    Complete,
    /// The client hung up: not the provider's fault, and nobody to tell.
    ClientGone,
    /// p402 is shutting down.
    Aborted,
    /// The provider's own error event, already passed to the client: free
    /// when nothing was generated before it.
    ProviderError,
    /// It timed out, broke off or grew too large.
    Failed(ApiError),
}

impl StreamEnd {
    /// The error the request's log line and metadata record, `None` for a
    /// complete stream.
    fn error(&self) -> Option<ApiError> {
        match self {
            StreamEnd::Complete => None,
            StreamEnd::ClientGone => Some(ApiError::new(
                ErrorKind::InvalidRequest,
                "client_disconnected",
                "the client closed the connection mid-stream",
            )),
            StreamEnd::Aborted => Some(ApiError::new(
                ErrorKind::Unavailable,
                "shutting_down",
                "p402 is shutting down; the stream is charged for what it sent, as an estimate",
            )),
            StreamEnd::ProviderError => Some(ApiError::new(
                ErrorKind::UpstreamFailed,
                "upstream_error_event",
                "the provider sent an error event",
            )),
            StreamEnd::Failed(error) => Some(error.clone()),
        }
    }
}

/// Everything the relay needs to finish the request on its own.
struct Relay {
    cx: Arc<Context>,
    plan: Arc<Plan>,
    served: Served<'static>,
    /// Settled when the stream ends, however it ends.
    reservation: Option<Reservation>,
    /// The concurrency slot, held until the stream ends.
    permit: Option<Permit>,
    writer: StreamWriter,
    idle_timeout: Duration,
    /// The longest the whole stream may run.
    max_duration: Duration,
    /// What the upstream body's bytes did: when they last came, whether an
    /// event grew too large.
    watch: Watch,
}

/// What the relay keeps of the answer as it passes.
#[derive(Default)]
struct Kept {
    usage: Option<Usage>,
    /// What the answer said, to count its tokens if no usage arrives.
    text: String,
    /// The answer's content, for the cache.
    content: String,
    finish: Option<Value>,
    tool_calls: bool,
    /// Whether the provider generated anything: a failed stream that did
    /// not is not charged.
    generated: bool,
    /// id and model of the upstream's chunks, for the cached copy.
    envelope: Option<(Value, Value)>,
    /// What a stream in the client's own dialect reported; `None` for a
    /// stream of OpenAI chunks.
    native: Option<crate::wire::native::Tally>,
}

/// Prepares the relay of `events`, and returns the response whose body
/// they will feed once [`Relaying::run`] runs.
pub fn start(
    cx: Arc<Context>,
    plan: Arc<Plan>,
    served: Served<'static>,
    events: EventStream,
    watch: Watch,
    reservation: Option<Reservation>,
    permit: Permit,
) -> (Relaying, Response<Body>) {
    let (tx, response) = finish::respond_streaming(&cx, &served.candidate);
    let upstream = cx.runtime.upstream.config();
    let relay = Relay {
        writer: cx
            .door
            .stream(&cx.chat, Some(served.candidate.model_name())),
        idle_timeout: upstream.idle_timeout_seconds.duration(),
        max_duration: upstream.max_stream_seconds.duration(),
        cx,
        plan,
        served,
        reservation,
        permit: Some(permit),
        watch,
    };
    (Relaying { relay, events, tx }, response)
}

impl Relaying {
    /// Passes the events to the client until the stream ends, however it
    /// ends, and works out what it used.
    pub async fn run(self) -> Ended {
        let Relaying {
            mut relay,
            mut events,
            tx,
        } = self;
        let mut kept = Kept {
            native: Adapter::of(&relay.served.candidate.provider)
                .native_dialect(&relay.served.candidate, &relay.cx.chat)
                .map(crate::wire::native::Tally::new),
            ..Kept::default()
        };
        let end = relay.pass(&mut events, &tx, &mut kept).await;
        let error = end.error();
        // The relay owns the upstream body: dropping it here, not at the
        // end of the task, cancels an upstream the client no longer
        // listens to.
        drop(events);
        // The provider has the prompt and bills it, whether the client hung
        // up (SPEC §5) or the stream timed out or broke off (§14): settled
        // as estimated, however little arrived. Only an error event before
        // anything was generated, the provider's own refusal, is free.
        let paid = error.is_none()
            || kept.usage.is_some()
            || kept.generated
            || !matches!(end, StreamEnd::ProviderError);
        let used = if paid {
            Some(relay.used(&kept).await)
        } else {
            // Like any error answered before generating: this costs
            // nothing, and the reservation goes back.
            drop(relay.reservation.take());
            None
        };
        Ended {
            relay,
            tx,
            end,
            error,
            kept,
            used,
        }
    }
}

impl Ended {
    /// The reservation the stream's charge settles, taken once.
    pub fn reservation(&mut self) -> Option<Reservation> {
        self.relay.reservation.take()
    }

    /// What the finish settles: what was generated, from the usage chunk
    /// or from the text received; nothing for a free refusal.
    pub fn exit(&self, reservation: Option<Reservation>) -> Exit<'_> {
        let (plan, served) = (&*self.relay.plan, &self.relay.served);
        match &self.used {
            Some(used) => Exit::Answered {
                plan,
                served,
                used: *used,
                reservation,
            },
            None => Exit::Unanswered { plan, served },
        }
    }

    /// The status line went out with the first byte, whatever follows.
    pub fn ending(&self) -> Ending<'_> {
        Ending {
            status: 200,
            error: self.error.as_ref(),
            attempts: self.relay.served.failover.len(),
        }
    }

    /// The stream's last bytes, once the finish has settled it: the
    /// metadata event of a complete stream (which is then cached), or the
    /// failure. The concurrency slot is given back last.
    pub async fn close(mut self, metadata: Option<crate::money::metadata::Metadata>) {
        match (&self.error, &self.used) {
            (None, Some(used)) => {
                self.relay.store_in_cache(&self.kept, used).await;
                for event in metadata.iter().flat_map(|m| self.relay.writer.end(m)) {
                    if self.tx.send(event).await.is_err() {
                        break;
                    }
                }
            }
            (Some(error), _) => self.relay.report_failure(&self.end, error, &self.tx).await,
            (None, None) => {}
        }
        drop(self.relay.permit.take());
    }
}

impl Relay {
    /// What a stream that was paid for used.
    async fn used(&self, kept: &Kept) -> Used {
        let partial = kept.native.as_ref().and_then(|n| n.partial());
        let mut used = match (kept.usage, partial) {
            // Cut off before its final count: the provider's input count,
            // and the output counted from what arrived.
            (None, Some(partial)) => Used {
                usage: crate::catalog::Usage {
                    output_tokens: crate::wire::tokens::count_text(&kept.text),
                    ..partial
                },
                estimated: true,
            },
            (Some(usage), _) => Used::of(Some(usage), self.plan.input_tokens, ""),
            (None, None) => Used::of(
                None,
                self.plan.input_for_estimate(&self.cx.chat).await,
                &kept.text,
            ),
        };
        if used.estimated {
            let seen = kept.native.as_ref().map_or(0, |n| n.searches_started());
            used.usage.web_searches = used.usage.web_searches.max(seen);
        }
        used
    }

    /// Passes events to the client until the stream ends or fails.
    async fn pass(
        &mut self,
        events: &mut EventStream,
        tx: &mpsc::Sender<Bytes>,
        kept: &mut Kept,
    ) -> StreamEnd {
        loop {
            let next = match self.next_event(events, tx).await {
                Ok(next) => next,
                Err(end) => return end,
            };
            let (native, chunk) = match next {
                None => {
                    return StreamEnd::Failed(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_ended",
                        "the provider closed the stream before it was complete",
                    ))
                }
                Some(Err(_)) if self.watch.too_large() => {
                    return StreamEnd::Failed(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_response_too_large",
                        format!(
                            "the provider sent an event larger than [upstream] max_response_bytes ({} bytes)",
                            self.watch.max_event_bytes
                        ),
                    ))
                }
                Some(Err(e)) => {
                    return StreamEnd::Failed(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_error",
                        e.to_string(),
                    ))
                }
                Some(Ok(StreamEvent::Done)) => return StreamEnd::Complete,
                Some(Ok(StreamEvent::Chunk(chunk))) => (None, chunk),
                Some(Ok(StreamEvent::Native { name, data })) => (Some(name), data),
            };
            if chunk.get("error").is_some() {
                // The provider's own error event goes through, less p402's
                // provider key if it echoes it (as a refused key often is).
                let mut bytes = self.writer.provider_error(&chunk);
                if let Some(key) = &self.served.candidate.provider.api_key {
                    bytes = crate::wire::redact_key(bytes, key.expose());
                }
                let _ = tx.send(bytes).await;
                return StreamEnd::ProviderError;
            }
            match (&native, kept.native.as_mut()) {
                (Some(_), Some(tally)) => {
                    kept.generated |= tally.read(&chunk, &mut kept.text);
                    kept.usage = tally.usage();
                }
                _ => self.keep(&chunk, kept),
            }
            // What is held of the answer is bounded like a whole answer, and
            // the stream's length in time like its silences.
            let held = (kept.text.len() + kept.content.len()) as u64;
            if held > self.watch.max_event_bytes {
                return StreamEnd::Failed(ApiError::new(
                    ErrorKind::UpstreamFailed,
                    "upstream_response_too_large",
                    format!(
                        "the provider's answer grew past [upstream] max_response_bytes ({} bytes)",
                        self.watch.max_event_bytes
                    ),
                ));
            }
            if self.served.upstream_started.elapsed() > self.max_duration {
                return StreamEnd::Failed(ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream_stream_too_long",
                    format!(
                        "the stream ran past [upstream] max_stream_seconds ({:?})",
                        self.max_duration
                    ),
                ));
            }
            let out = match native {
                None => self.writer.chunk(chunk),
                Some(name) => self.writer.native(&name, &chunk),
            };
            let Some(out) = out else {
                continue;
            };
            if tx.send(out).await.is_err() {
                return StreamEnd::ClientGone;
            }
        }
    }

    /// Notes what the settlement and the cached copy need from a chunk.
    fn keep(&self, chunk: &Value, kept: &mut Kept) {
        if kept.envelope.is_none() {
            kept.envelope = Some((
                chunk.get("id").cloned().unwrap_or(Value::Null),
                chunk.get("model").cloned().unwrap_or(Value::Null),
            ));
        }
        if let Some(reported) = openai::usage(chunk) {
            kept.usage = Some(reported);
        }
        kept.generated |= generates(chunk);
        if kept.usage.is_none() {
            cost::generated_text(chunk, "delta", &mut kept.text);
        }
        if self.plan.probe.is_some() {
            collect_answer(
                chunk,
                &mut kept.content,
                &mut kept.finish,
                &mut kept.tool_calls,
            );
        }
    }

    /// A complete streamed answer, stored as the `chat.completion` it adds
    /// up to, when it may be.
    async fn store_in_cache(&self, kept: &Kept, used: &Used) {
        let Some(probe) = self.plan.probe.clone() else {
            return;
        };
        let candidate = &self.served.candidate;
        let (id, model) = kept
            .envelope
            .clone()
            .unwrap_or_else(|| (Value::Null, Value::from(candidate.model_name())));
        // A stream in the client's dialect is stored only when it was plain
        // text: then any door can replay it as it was.
        let (content, finish) = match &kept.native {
            None => (kept.content.as_str(), kept.finish.clone()),
            Some(tally) => match tally.plain() {
                Some((text, finish)) => (text, Some(finish.clone())),
                None => return,
            },
        };
        let answer = json!({
            "id": id, "object": "chat.completion", "created": cache::now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                "finish_reason": finish.unwrap_or(Value::Null)}],
            "usage": {"prompt_tokens": used.usage.input_tokens, "completion_tokens": used.usage.output_tokens,
                "total_tokens": used.usage.input_tokens + used.usage.output_tokens},
        });
        if kept.tool_calls || !replay::storable(&answer, false) {
            return;
        }
        let stored = self
            .cx
            .state
            .cache()
            .store(
                probe,
                &answer,
                &used.usage,
                &candidate.provider.name,
                candidate.model_name(),
                &self.cx.runtime.config().cache,
            )
            .await;
        if let Err(e) = stored {
            tracing::warn!(request_id = %self.cx.id, "could not store the answer in the cache: {e}");
        }
    }

    /// The next upstream event, waiting while bytes keep arriving (a slow
    /// drip, SSE comments) and giving up after `idle_timeout` of silence on
    /// the wire, or as soon as the client is gone.
    async fn next_event(
        &self,
        events: &mut EventStream,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Option<Result<StreamEvent, StreamError>>, StreamEnd> {
        loop {
            let deadline = self.watch.last_bytes() + self.idle_timeout;
            tokio::select! {
                // A client that hangs up while the provider is quiet is
                // noticed now, not at the next chunk: the upstream request
                // is cancelled at once.
                () = tx.closed() => return Err(StreamEnd::ClientGone),
                () = self.cx.state.aborting().cancelled() => return Err(StreamEnd::Aborted),
                next = tokio::time::timeout_at(deadline, events.next()) => match next {
                    Ok(next) => return Ok(next),
                    // Bytes came in the meantime, just no whole event yet.
                    Err(_) if self.watch.last_bytes() + self.idle_timeout > tokio::time::Instant::now() => {}
                    Err(_) => {
                        return Err(StreamEnd::Failed(ApiError::new(
                            ErrorKind::UpstreamTimeout,
                            "upstream_timeout",
                            format!(
                                "the provider sent nothing for {:?} in the middle of the stream",
                                self.idle_timeout
                            ),
                        )))
                    }
                },
            }
        }
    }

    /// Counts a failure against the provider (unless the client left) and
    /// tells the client, unless the provider's own error event already did.
    async fn report_failure(
        &mut self,
        end: &StreamEnd,
        error: &ApiError,
        tx: &mpsc::Sender<Bytes>,
    ) {
        // Neither a client that left nor p402's own shutdown is the
        // provider's failure.
        if !matches!(end, StreamEnd::ClientGone | StreamEnd::Aborted) {
            self.cx.state.health().record_failure(
                &self.served.candidate.provider.name,
                &error.message,
                self.cx.runtime.breaker_policy(),
            );
        }
        if !matches!(end, StreamEnd::ClientGone | StreamEnd::ProviderError) {
            let _ = tx.send(self.writer.error(error, &self.cx.id)).await;
        }
    }
}

/// Whether a chunk carries anything the model generated: a delta with
/// more than its role (content, tool calls, reasoning, a refusal).
fn generates(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|choice| choice.get("delta").and_then(Value::as_object))
        .flatten()
        .any(|(key, value)| match value {
            Value::Null => false,
            Value::String(text) => key != "role" && !text.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => true,
        })
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
        // An answer with thinking is not stored either: replayed without
        // it, it would not be the answer asked for.
        *tool_calls |= delta.get("tool_calls").is_some_and(|c| !c.is_null())
            || delta.get(crate::wire::THINKING).is_some();
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            *finish = Some(reason.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_deltas_with_more_than_a_role_count_as_generated() {
        let chunk = |delta: Value| json!({"choices": [{"index": 0, "delta": delta}]});
        assert!(!generates(&chunk(
            json!({"role": "assistant", "content": "", "refusal": null})
        )));
        assert!(!generates(&chunk(json!({}))));
        assert!(!generates(&json!({"choices": [], "usage": null})));
        assert!(generates(&chunk(json!({"content": "Hi"}))));
        assert!(generates(&chunk(
            json!({"reasoning_content": "Let me think"})
        )));
        assert!(generates(&chunk(json!({"tool_calls": [{"index": 0,
            "function": {"name": "get_weather", "arguments": ""}}]}))));
    }
}
