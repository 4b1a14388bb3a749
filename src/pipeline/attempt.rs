//! The attempt stage: one try at one candidate. The request goes out in
//! the provider's API with exactly the output limit reserved for it, and
//! what comes back is an answer, a stream, or an [`AttemptError`] that says
//! whether another candidate is worth trying.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, Limited};
use hyper::body::Incoming;

use crate::money::metadata::AttemptStatus;
use crate::ops::metrics::ProviderLabels;
use crate::router::Candidate;
use crate::wire::upstream::UpstreamError;
use crate::wire::{Adapter, Answer, EventStream};

use super::context::{Context, Plan};
use super::watch::{Watch, Watched};

/// What a candidate gave.
pub enum Upstream {
    /// A whole answer.
    Whole(Answer),
    /// A stream of events, and what its bytes are doing.
    Stream(EventStream, Watch),
    /// p402 is shutting down past its grace; `sent` says whether the
    /// provider had the request (and bills it) by then.
    Stopped { sent: bool },
}

/// Why a candidate gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The request cannot be put in this provider's API: another
    /// provider may take it; if none can, the client is told why, in a
    /// 400 that keeps the translation's own code.
    #[error("{0}")]
    Translate(crate::wire::TranslateError),
    /// No answer: the connection failed, the request could not be sent,
    /// or no status came in time.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A status worth trying elsewhere: rate limits, server errors, the
    /// provider refusing p402's key.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// The provider does not have the model; it answered as it should.
    #[error("model not found")]
    ModelMissing(StatusCode),
    #[error("{0}")]
    InvalidResponse(String),
    /// A success whose body stopped coming or broke off: the provider was
    /// generating, and bills it (`timed_out` says which).
    #[error("{reason}")]
    Cut { reason: String, timed_out: bool },
    #[error("the answer is larger than [upstream] max_response_bytes ({0} bytes)")]
    TooLarge(u64),
    /// The provider refused the request itself (a 4xx it caused): another
    /// provider would too, so it goes back to the client as it is.
    #[error("refused with HTTP {status}")]
    Refused {
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
}

impl AttemptError {
    /// Whether another candidate may do better.
    pub fn retryable(&self) -> bool {
        !matches!(self, AttemptError::Refused { .. })
    }

    /// Whether this counts against the provider's circuit breaker: not
    /// when it merely lacks the model, or the request was at fault.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            AttemptError::ModelMissing(_)
                | AttemptError::Refused { .. }
                | AttemptError::Translate(_)
        )
    }

    pub fn timed_out(&self) -> bool {
        matches!(
            self,
            AttemptError::Upstream(UpstreamError::Timeout(_))
                | AttemptError::Cut {
                    timed_out: true,
                    ..
                }
        )
    }

    /// Whether the provider had the request and may bill it although no
    /// answer came (SPEC §14): it timed out or broke off after the request
    /// went out, or its answer was more than p402 would read. An error it
    /// answered before generating anything (a status with an error body),
    /// a refused connection, or a request never sent is free.
    pub fn billed(&self) -> bool {
        matches!(
            self,
            AttemptError::Upstream(UpstreamError::Timeout(_) | UpstreamError::Request(_))
                | AttemptError::Cut { .. }
                | AttemptError::TooLarge(_)
        )
    }

    /// The status reported in `p402_metadata.failover` and the metrics:
    /// the HTTP status, or a word for what happened instead.
    pub fn status(&self) -> AttemptStatus {
        match self {
            AttemptError::Status(status)
            | AttemptError::ModelMissing(status)
            | AttemptError::Refused { status, .. } => AttemptStatus::Http(status.as_u16()),
            AttemptError::Translate(_) | AttemptError::Upstream(UpstreamError::Request(_)) => {
                AttemptStatus::RequestError
            }
            AttemptError::Upstream(UpstreamError::Timeout(_))
            | AttemptError::Cut {
                timed_out: true, ..
            } => AttemptStatus::Timeout,
            AttemptError::Cut { .. } | AttemptError::InvalidResponse(_) => {
                AttemptStatus::InvalidResponse
            }
            AttemptError::Upstream(UpstreamError::Connect(_)) => AttemptStatus::ConnectError,
            AttemptError::TooLarge(_) => AttemptStatus::ResponseTooLarge,
        }
    }
}

/// Sends the request to `candidate` with `limit` as its output limit (the
/// one reserved for it, in a budgeted request), and reads what comes back.
/// Returns when the request went upstream, with the outcome.
pub async fn send(
    cx: &Context,
    plan: &Plan,
    candidate: &Candidate,
    limit: Option<u32>,
) -> (Instant, Result<Upstream, AttemptError>) {
    let started = Instant::now();
    let outcome = exchange(cx, plan, candidate, limit, started).await;
    (started, outcome)
}

async fn exchange(
    cx: &Context,
    plan: &Plan,
    candidate: &Candidate,
    limit: Option<u32>,
    started: Instant,
) -> Result<Upstream, AttemptError> {
    let adapter = Adapter::of(&candidate.provider);
    let native = adapter.native_dialect(candidate, &cx.chat);
    // Exactly the reserved limit goes out.
    let request = adapter
        .build_request(candidate, &cx.chat, limit)
        .map_err(AttemptError::Translate)?;
    if cx.state.aborting().is_cancelled() {
        return Ok(Upstream::Stopped { sent: false });
    }
    let sent = tokio::select! {
        sent = cx.runtime.upstream.send(request) => sent,
        () = cx.state.aborting().cancelled() => return Ok(Upstream::Stopped { sent: true }),
    };
    let response = sent?;
    let health = cx.state.health();
    let provider = &candidate.provider.name;
    let status = response.status();
    if !status.is_success() {
        let (parts, body) = response.into_parts();
        // The status says it all when its body does not come: an error
        // the provider answered before generating, which costs nothing.
        let Ok(bytes) = read_whole(cx, body).await else {
            return Err(AttemptError::Status(status));
        };
        let verdict = adapter.error(status, bytes);
        if verdict.model_missing {
            health.mark_missing(provider, &candidate.upstream_model);
            health.record_success(provider, started.elapsed());
            return Err(AttemptError::ModelMissing(status));
        }
        if verdict.retryable {
            return Err(AttemptError::Status(status));
        }
        health.record_success(provider, started.elapsed());
        return Err(AttemptError::Refused {
            status: verdict.status,
            content_type: adapter.error_content_type(&parts.headers),
            body: verdict.body,
        });
    }
    // The provider answered as a provider should.
    cx.state
        .metrics()
        .upstream_latency
        .get_or_create(&ProviderLabels {
            provider: provider.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    health.record_success(provider, started.elapsed());
    if let Some(key) = plan.route.conversation {
        cx.state
            .sticky()
            .record(key, provider, candidate.model_name());
    }
    if cx.chat.stream {
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(AttemptError::InvalidResponse(
                "a stream was asked for but the answer is not text/event-stream".into(),
            ));
        }
        let watch = Watch::new(cx.runtime.upstream.config().max_response_bytes);
        let bytes = Watched::new(BodyDataStream::new(response.into_body()), watch.clone());
        return Ok(Upstream::Stream(
            adapter.decode_stream(bytes, native),
            watch,
        ));
    }
    let bytes = tokio::select! {
        read = read_whole(cx, response.into_body()) => read.map_err(ReadError::into_cut)?,
        () = cx.state.aborting().cancelled() => return Ok(Upstream::Stopped { sent: true }),
    };
    // Kept as it came when nothing needs its tree: not to be cached.
    adapter
        .read_answer(bytes, native, plan.probe.is_none())
        .map(Upstream::Whole)
        .map_err(AttemptError::InvalidResponse)
}

/// Why a whole upstream body could not be read.
enum ReadError {
    TimedOut,
    TooLarge(u64),
    Broken(String),
}

impl ReadError {
    /// The attempt error of a success whose body failed: the provider was
    /// answering, so it is billed.
    fn into_cut(self) -> AttemptError {
        match self {
            ReadError::TimedOut => AttemptError::Cut {
                reason: "the answer did not finish arriving in time".into(),
                timed_out: true,
            },
            ReadError::TooLarge(limit) => AttemptError::TooLarge(limit),
            ReadError::Broken(e) => AttemptError::Cut {
                reason: format!("reading the answer failed: {e}"),
                timed_out: false,
            },
        }
    }
}

/// A whole upstream body, within the first-byte deadline and the size limit.
async fn read_whole(cx: &Context, body: Incoming) -> Result<Bytes, ReadError> {
    let config = cx.runtime.upstream.config();
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
        Err(_) => Err(ReadError::TimedOut),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ReadError::TooLarge(config.max_response_bytes))
        }
        Ok(Err(e)) => Err(ReadError::Broken(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
