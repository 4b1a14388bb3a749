//! What every request passed on in the client's own dialect shares,
//! whichever the dialect: its body for the routed model, its stream's
//! events parsed once, and the plain-text view of its answer that the cache
//! can hold. The dialects (`anthropic::native`, `responses`) build on it;
//! `native` tells them apart.

use bytes::Bytes;
use futures_util::{future, stream, StreamExt};
use serde_json::Value;

use super::{checked_sse_bytes, not_json, EventStream, StreamError, StreamEvent};

/// A native answer as it arrives, kept while it is nothing but text: the
/// form in which the cache can hold it and any door replay it.
#[derive(Debug, Default)]
pub struct Plain {
    text: String,
    finish: Option<Value>,
    /// Something came that plain text cannot say (thinking, a tool call).
    other: bool,
}

impl Plain {
    pub(crate) fn text(&mut self, piece: &str) {
        if !self.other {
            self.text.push_str(piece);
        }
    }

    pub(crate) fn other(&mut self) {
        self.other = true;
        self.text = String::new();
    }

    pub(crate) fn finish(&mut self, reason: Value) {
        self.finish = Some(reason);
    }

    /// The text and `finish_reason`, when the answer was plain text with
    /// a finish.
    pub fn whole(&self) -> Option<(&str, &Value)> {
        match (&self.finish, self.other) {
            (Some(finish), false) if !finish.is_null() => Some((&self.text, finish)),
            _ => None,
        }
    }
}

/// The client's own body for `candidate`'s model, with the output limit
/// reserved for it (when budgeted) under the dialect's name for it.
pub fn routed_body(
    native: &crate::wire::request::Native,
    candidate: &crate::router::Candidate,
    limit_field: &str,
    limit: Option<u32>,
) -> serde_json::Map<String, Value> {
    let mut body = native.body.clone();
    body.insert(
        "model".into(),
        Value::from(candidate.upstream_model.as_str()),
    );
    // A limit is set only for a budgeted request: its searches are capped
    // at what was reserved for them.
    if let Some(limit) = limit {
        body.insert(limit_field.into(), Value::from(limit));
        super::cap_web_searches(&mut body, native.dialect);
    }
    body
}

/// The events of a stream in the client's own dialect, as they came, each
/// parsed once so that its usage can be read; the stream ends with the
/// first event whose `type` `is_last` says ends it, and nothing after it is
/// read.
pub fn decode_stream<S, E>(bytes: S, is_last: fn(&str) -> bool) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use eventsource_stream::Eventsource;
    let events = checked_sse_bytes(bytes)
        .eventsource()
        .map(move |event| {
            let event = match event {
                Ok(event) => event,
                Err(e) => return vec![Err(StreamError::Read(e.to_string()))],
            };
            let data = event.data.trim();
            if data.is_empty() || data == "[DONE]" {
                return Vec::new();
            }
            let data: Value = match serde_json::from_str(data) {
                Ok(data) => data,
                Err(e) => return vec![Err(StreamError::InvalidJson(not_json(&e, data)))],
            };
            let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
            let last = is_last(kind);
            let name = if event.event.is_empty() {
                kind.to_string()
            } else {
                event.event
            };
            let mut out = vec![Ok(StreamEvent::Native { name, data })];
            if last {
                out.push(Ok(StreamEvent::Done));
            }
            out
        })
        .flat_map(stream::iter)
        .scan(false, |ended, item| {
            if *ended {
                return future::ready(None);
            }
            *ended = matches!(item, Ok(StreamEvent::Done));
            future::ready(Some(item))
        });
    Box::pin(events)
}
