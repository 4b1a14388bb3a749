//! Streaming answers back to the client as they arrive.
//!
//! A relay task reads the upstream's events and writes each one to the
//! client the moment it is parsed: nothing is buffered beyond one event. At
//! the end it adds the `choices: []` chunk with `p402_metadata`, then
//! `data: [DONE]`. A failure after the first byte cannot change the HTTP
//! status any more, so it becomes an OpenAI-style error event.
//!
//! The upstream's bytes are watched on their way to the SSE parser
//! ([`Watched`]): the idle timeout counts silence on the wire, not between
//! events, and one event may not grow past `[upstream] max_response_bytes`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
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
    /// The longest the whole stream may run.
    pub max_duration: Duration,
    /// What the upstream body's bytes did: when they last came, whether an
    /// event grew too large.
    pub watch: Watch,
}

/// The error code of a relay whose client went away.
const CLIENT_GONE: &str = "client_disconnected";
/// The error code of a relay stopped by shutdown.
const ABORTED: &str = "shutting_down";

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
        let state = self.state.clone();
        state.spawn(self.run(events, tx));
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
        // Whether the provider generated anything: a failed stream that
        // did not is not charged.
        let mut generated = false;
        // id, created and model of the upstream's chunks, echoed in ours.
        let mut envelope: Option<(Value, Value, Value)> = None;
        let outcome: Result<(), ApiError> = loop {
            let next = match self.next_event(&mut events, &tx).await {
                Err(error) => break Err(error),
                Ok(None) => {
                    break Err(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_ended",
                        "the provider closed the stream before it was complete",
                    ))
                }
                Ok(Some(Err(_))) if self.watch.too_large() => {
                    break Err(ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_response_too_large",
                        format!(
                            "the provider sent an event larger than [upstream] max_response_bytes ({} bytes)",
                            self.watch.max_event_bytes
                        ),
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
                // The provider's own error event goes through, less p402's
                // provider key if it echoes it (as a refused key often is).
                let mut bytes = event(&chunk);
                if let Some(key) = &self.candidate.provider.api_key {
                    bytes = crate::providers::redact_key(bytes, key.expose());
                }
                let _ = tx.send(bytes).await;
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
            generated |= generates(&chunk);
            if usage.is_none() {
                charge::generated_text(&chunk, "delta", &mut text);
            }
            if self.probe.is_some() {
                collect_answer(&chunk, &mut content, &mut finish, &mut tool_calls);
            }
            // What is held of the answer is bounded like a whole answer, and
            // the stream's length in time like its silences.
            let held = (text.len() + content.len()) as u64;
            if held > self.watch.max_event_bytes {
                break Err(ApiError::new(
                    ErrorKind::UpstreamFailed,
                    "upstream_response_too_large",
                    format!(
                        "the provider's answer grew past [upstream] max_response_bytes ({} bytes)",
                        self.watch.max_event_bytes
                    ),
                ));
            }
            if self.upstream_started.elapsed() > self.max_duration {
                break Err(ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream_stream_too_long",
                    format!(
                        "the stream ran past [upstream] max_stream_seconds ({:?})",
                        self.max_duration
                    ),
                ));
            }
            let Some(out) = self.for_client(chunk) else {
                continue;
            };
            if tx.send(out).await.is_err() {
                break Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    CLIENT_GONE,
                    "the client closed the connection mid-stream",
                ));
            }
        };

        let upstream_ms = elapsed_ms(self.upstream_started);
        // The relay owns the upstream body: dropping it here, not at the end
        // of the task, cancels an upstream the client no longer listens to.
        drop(events);
        if let Err(error) = &outcome {
            // A client that hung up does not make the request free: the
            // provider has the prompt and bills it (SPEC §5), so it is
            // settled as estimated below, however little arrived.
            if usage.is_none() && !generated && error.code != CLIENT_GONE && error.code != ABORTED {
                // Nothing was generated: like any failed attempt, this costs
                // nothing, and the reservation goes back.
                drop(self.reservation.take());
                self.finish_unanswered(error, &tx).await;
                return;
            }
        }
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
        let ledger_warning =
            charge::settle(self.state.book(), self.reservation.take(), &entry).await;
        let session = self.charge.session.as_ref().map(|s| SessionInfo {
            id: s.id.clone(),
            remaining: self.charge.session_remaining(self.state.book()),
        });
        let mut metadata = metadata::build(
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
        metadata.ledger_warning = ledger_warning;
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
                let stored = self
                    .state
                    .cache()
                    .store(
                        probe,
                        &answer,
                        &used.usage,
                        &self.candidate.provider.name,
                        self.candidate.model_name(),
                        &self.cache_config,
                    )
                    .await;
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
                self.report_failure(&error, &tx).await;
                log.failed(&error);
            }
        }
        log.emit(self.state.metrics());
        drop(self.permit.take());
    }

    /// The next upstream event, waiting while bytes keep arriving (a slow
    /// drip, SSE comments) and giving up after `idle_timeout` of silence on
    /// the wire, or as soon as the client is gone.
    async fn next_event(
        &self,
        events: &mut EventStream,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Option<Result<StreamEvent, crate::providers::StreamError>>, ApiError> {
        loop {
            let deadline = self.watch.last_bytes() + self.idle_timeout;
            tokio::select! {
                // A client that hangs up while the provider is quiet is
                // noticed now, not at the next chunk: the upstream request
                // is cancelled at once.
                () = tx.closed() => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidRequest,
                        CLIENT_GONE,
                        "the client closed the connection mid-stream",
                    ))
                }
                () = self.state.aborting().cancelled() => {
                    return Err(ApiError::new(
                        ErrorKind::Unavailable,
                        ABORTED,
                        "p402 is shutting down; the stream is charged for what it sent, as an estimate",
                    ))
                }
                next = tokio::time::timeout_at(deadline, events.next()) => match next {
                    Ok(next) => return Ok(next),
                    // Bytes came in the meantime, just no whole event yet.
                    Err(_) if self.watch.last_bytes() + self.idle_timeout > tokio::time::Instant::now() => {}
                    Err(_) => {
                        return Err(ApiError::new(
                            ErrorKind::UpstreamTimeout,
                            "upstream_timeout",
                            format!(
                                "the provider sent nothing for {:?} in the middle of the stream",
                                self.idle_timeout
                            ),
                        ))
                    }
                },
            }
        }
    }

    /// Counts a failure against the provider (unless the client left) and
    /// tells the client, unless the provider's own error event already did.
    async fn report_failure(&self, error: &ApiError, tx: &mpsc::Sender<Bytes>) {
        if error.code != CLIENT_GONE {
            self.state.health().record_failure(
                &self.candidate.provider.name,
                &error.message,
                self.breaker,
            );
        }
        if error.code != CLIENT_GONE && error.code != "upstream_error_event" {
            let _ = tx.send(event(&error.to_json(&self.request_id))).await;
        }
    }

    /// Ends a stream that failed before anything was generated: no charge,
    /// no ledger entry, an error event for the client.
    async fn finish_unanswered(mut self, error: &ApiError, tx: &mpsc::Sender<Bytes>) {
        self.report_failure(error, tx).await;
        let metadata = metadata::build(
            &self.request_id,
            &self.route,
            &self.candidate,
            None,
            self.failover.clone(),
            Timing {
                latency_ms: elapsed_ms(self.started),
                provider_latency_ms: elapsed_ms(self.upstream_started),
            },
            None,
        );
        let mut log = RequestLog::new(&self.request_id, true, self.started);
        log.answered(&metadata);
        log.status(200);
        log.failed(error);
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

/// What [`Watched`] saw of an upstream body, shared with the relay.
#[derive(Clone)]
pub struct Watch {
    start: tokio::time::Instant,
    /// Milliseconds after `start` when bytes last arrived.
    last_ms: Arc<AtomicU64>,
    too_large: Arc<AtomicBool>,
    pub max_event_bytes: u64,
}

impl Watch {
    /// Starts watching now (the response headers count as activity).
    pub fn new(max_event_bytes: u64) -> Self {
        Watch {
            start: tokio::time::Instant::now(),
            last_ms: Arc::default(),
            too_large: Arc::default(),
            max_event_bytes,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// When bytes last arrived.
    pub fn last_bytes(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// Whether the body was cut off because one event passed the limit.
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Acquire)
    }
}

/// An upstream SSE body on its way to the parser: notes when bytes arrive,
/// and ends with an error once one event (the bytes since the last blank
/// line) passes `max_event_bytes`, which a parser would otherwise buffer
/// without limit.
pub struct Watched<S> {
    inner: S,
    watch: Watch,
    /// Bytes since the last event boundary.
    pending: u64,
    /// At the start of a line: a line break here ends the event.
    line_start: bool,
    /// The last byte was a CR: an LF now only completes that line break.
    after_cr: bool,
    done: bool,
}

/// Why a watched body stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchedError {
    #[error("{0}")]
    Read(String),
    #[error("an event passed {0} bytes")]
    TooLarge(u64),
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Watch) -> Self {
        Watched {
            inner,
            watch,
            pending: 0,
            line_start: true,
            after_cr: false,
            done: false,
        }
    }

    /// Follows SSE line breaks (LF, CRLF, CR) through `bytes`; an empty
    /// line ends an event.
    fn follow(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.pending += 1;
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    if self.line_start {
                        self.pending = 0;
                    }
                    self.line_start = true;
                    self.after_cr = byte == b'\r';
                }
                _ => {
                    self.line_start = false;
                    self.after_cr = false;
                }
            }
        }
    }
}

impl<S, E> Stream for Watched<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    type Item = Result<Bytes, WatchedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        match next {
            None => Poll::Ready(None),
            // "connection reset by peer" is in the source chain, not in
            // hyper's top message.
            Some(Err(e)) => Poll::Ready(Some(Err(WatchedError::Read(
                crate::upstream::error_chain(&e),
            )))),
            Some(Ok(bytes)) => {
                self.watch.touch();
                self.follow(&bytes);
                if self.pending > self.watch.max_event_bytes {
                    self.done = true;
                    self.watch.too_large.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(WatchedError::TooLarge(
                        self.watch.max_event_bytes,
                    ))));
                }
                Poll::Ready(Some(Ok(bytes)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` through a watched stream with a limit of `max` bytes
    /// and says where it ended: every piece passed, or an error at piece n.
    async fn watch_pieces(pieces: &[&str], max: u64) -> (usize, Option<WatchedError>, Watch) {
        let watch = Watch::new(max);
        let bytes: Vec<Result<Bytes, std::io::Error>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        let mut watched = Watched::new(futures_util::stream::iter(bytes), watch.clone());
        let mut passed = 0;
        while let Some(next) = watched.next().await {
            match next {
                Ok(_) => passed += 1,
                Err(e) => return (passed, Some(e), watch),
            }
        }
        (passed, None, watch)
    }

    #[tokio::test]
    async fn an_event_may_not_grow_past_the_limit_whatever_its_line_breaks() {
        // Many small events, with each kind of SSE line break, pass a limit
        // far below their total.
        for line_break in ["\n", "\r\n", "\r"] {
            let event = format!("data: {}{line_break}{line_break}", "x".repeat(20));
            let pieces: Vec<&str> = std::iter::repeat_n(event.as_str(), 50).collect();
            let (passed, error, watch) = watch_pieces(&pieces, 64).await;
            assert_eq!((passed, error.is_none()), (50, true), "{line_break:?}");
            assert!(!watch.too_large());
        }
        // An event split over chunks, the blank line between two of them.
        let (passed, error, _) =
            watch_pieces(&["data: abc\r", "\n\r", "\ndata: d\n", "\n"], 12).await;
        assert_eq!((passed, error.is_none()), (4, true));
        // Many data lines without a blank line are one growing event.
        let line = "data: xxxxxxxxxx\n";
        let (passed, error, watch) = watch_pieces(&[line; 10], 64).await;
        assert_eq!(passed, 3, "the fourth line takes the event past 64 bytes");
        assert!(matches!(error, Some(WatchedError::TooLarge(64))));
        assert!(watch.too_large());
        // And so is one line that never ends.
        let (passed, error, _) = watch_pieces(&["data: ", &"y".repeat(100)], 64).await;
        assert_eq!(passed, 1);
        assert!(error.is_some());
    }

    #[tokio::test]
    async fn bytes_count_as_activity_even_without_an_event() {
        let watch = Watch::new(1024);
        let before = watch.last_bytes();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let comment: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b": keep-alive\n"))];
        let mut watched = Watched::new(futures_util::stream::iter(comment), watch.clone());
        while watched.next().await.is_some() {}
        assert!(watch.last_bytes() >= before + Duration::from_millis(20));
    }

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
