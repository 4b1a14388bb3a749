//! The relay: a streamed answer, passed to the client as it arrives.
//!
//! A task of its own reads the provider's events and writes each one to
//! the client (through its door's writer) the moment it is parsed: nothing
//! is held beyond one event. The task owns the request's finish: whatever
//! happens (the end, a failure, a client that hangs up, a shutdown), what
//! was generated is settled before the last bytes go out. A failure after
//! the first byte cannot change the HTTP status any more, so it becomes an
//! error event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::Body;
use crate::budget::Reservation;
use crate::cache;
use crate::cache::replay;
use crate::catalog::Usage;
use crate::cost::{self, Used};
use crate::door::StreamWriter;
use crate::error::{ApiError, ErrorKind};
use crate::limits::Permit;
use crate::providers::{openai, Adapter, EventStream, StreamError, StreamEvent};

use super::context::{Context, Plan, Served};
use super::finish::{self, Ending, Exit};
use super::watch::Watch;

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
    native: Option<crate::providers::native::Tally>,
}

/// Starts relaying `events`, and returns the response whose body they feed.
pub fn start(
    cx: Arc<Context>,
    plan: Arc<Plan>,
    served: Served<'static>,
    events: EventStream,
    watch: Watch,
    reservation: Option<Reservation>,
    permit: Option<Permit>,
) -> Response<Body> {
    let (tx, response) = finish::respond_streaming(&cx, &served.candidate);
    let upstream = cx.runtime.upstream.config();
    let relay = Relay {
        writer: cx
            .door
            .stream(&cx.chat, Some(served.candidate.model_name())),
        idle_timeout: upstream.idle_timeout_seconds.duration(),
        max_duration: upstream.max_stream_seconds.duration(),
        cx: Arc::clone(&cx),
        plan,
        served,
        reservation,
        permit,
        watch,
    };
    cx.state.spawn(relay.run(events, tx));
    response
}

impl Relay {
    async fn run(mut self, mut events: EventStream, tx: mpsc::Sender<Bytes>) {
        let mut kept = Kept {
            native: Adapter::of(&self.served.candidate.provider)
                .native_dialect(&self.served.candidate, &self.cx.chat)
                .map(crate::providers::native::Tally::new),
            ..Kept::default()
        };
        let end = self.pass(&mut events, &tx, &mut kept).await;
        let error = end.error();
        // The relay owns the upstream body: dropping it here, not at the
        // end of the task, cancels an upstream the client no longer
        // listens to.
        drop(events);
        if let Some(error) = &error {
            // The provider has the prompt and bills it, whether the client
            // hung up (SPEC §5) or the stream timed out or broke off (§14):
            // settled as estimated below, however little arrived. Only an
            // error event before anything was generated, the provider's
            // own refusal, is free.
            let paid =
                kept.usage.is_some() || kept.generated || !matches!(end, StreamEnd::ProviderError);
            if !paid {
                // Like any error answered before generating: this costs
                // nothing, and the reservation goes back.
                drop(self.reservation.take());
                self.report_failure(&end, error, &tx).await;
                let exit = Exit::Unanswered {
                    plan: &self.plan,
                    served: &self.served,
                };
                finish::finish(&self.cx, exit, stream_ending(Some(error))).await;
                return;
            }
        }
        // Whatever happened, what was generated was paid for: settle it
        // (from the usage chunk, or from the text received) before the
        // stream's last bytes go out.
        let partial = kept.native.as_ref().and_then(|n| n.partial());
        let mut used = match (kept.usage, partial) {
            // Cut off before its final count: the provider's input count,
            // and the output counted from what arrived.
            (None, Some(partial)) => Used {
                usage: crate::catalog::Usage {
                    output_tokens: crate::tokens::count_text(&kept.text),
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
        let exit = Exit::Answered {
            plan: &self.plan,
            served: &self.served,
            used,
            reservation: self.reservation.take(),
        };
        let metadata = finish::finish(&self.cx, exit, stream_ending(error.as_ref())).await;
        match (&error, metadata) {
            (None, metadata) => {
                self.store_in_cache(&kept, &used).await;
                for event in metadata.iter().flat_map(|m| self.writer.end(m)) {
                    if tx.send(event).await.is_err() {
                        break;
                    }
                }
            }
            (Some(error), _) => self.report_failure(&end, error, &tx).await,
        }
        drop(self.permit.take());
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
                    bytes = crate::providers::redact_key(bytes, key.expose());
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

/// The status line went out with the first byte, whatever follows.
fn stream_ending(error: Option<&ApiError>) -> Ending<'_> {
    Ending { status: 200, error }
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
            || delta.get(crate::providers::THINKING).is_some();
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
