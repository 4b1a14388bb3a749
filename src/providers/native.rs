//! What p402 reads from a stream in the client's own dialect, passed on as
//! it came: the usage to charge, and the text to count when the stream is
//! cut off before its usage arrives.

use bytes::Bytes;
use futures_util::{future, stream, StreamExt};
use serde_json::Value;

use super::{checked_sse_bytes, not_json, EventStream, StreamError, StreamEvent};
use crate::catalog::Usage;

use super::anthropic::native::Tally as MessagesTally;
use super::responses::Tally as ResponsesTally;

/// The usage so far of a native stream, whichever dialect it is in (their
/// event types do not overlap: Responses' all start with `response.`).
#[derive(Debug, Default)]
pub struct Tally {
    messages: MessagesTally,
    responses: ResponsesTally,
}

impl Tally {
    /// Reads one event; appends the text it generated to `text`, and says
    /// whether it generated anything.
    pub fn read(&mut self, data: &Value, text: &mut String) -> bool {
        let responses = data
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("response."));
        if responses {
            self.responses.read(data, text)
        } else {
            self.messages.read(data, text)
        }
    }

    /// The usage the stream reported, once final.
    pub fn usage(&self) -> Option<Usage> {
        self.responses.usage().or_else(|| self.messages.usage())
    }

    /// The input counts of a stream cut off before its final usage.
    pub fn partial(&self) -> Option<Usage> {
        self.messages.partial()
    }

    /// Web searches seen starting in a Responses stream, billed even when
    /// the stream is cut off before its final usage counts them.
    pub fn searches_started(&self) -> u64 {
        self.responses.searches_started()
    }

    /// What the stream said, when it was plain text with a finish: the
    /// content and `finish_reason` of the `chat.completion` it adds up to.
    pub fn plain(&self) -> Option<(&str, &Value)> {
        let messages = self.messages.plain();
        let responses = self.responses.plain();
        // At most one of the two read anything.
        let plain = if responses.finish.is_some() || !responses.text.is_empty() {
            responses
        } else {
            messages
        };
        match (&plain.finish, plain.other) {
            (Some(finish), false) if !finish.is_null() => Some((&plain.text, finish)),
            _ => None,
        }
    }
}

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
    pub fn text(&mut self, piece: &str) {
        if !self.other {
            self.text.push_str(piece);
        }
    }

    pub fn other(&mut self) {
        self.other = true;
        self.text = String::new();
    }

    pub fn finish(&mut self, reason: Value) {
        self.finish = Some(reason);
    }
}

/// The client's own body for `candidate`'s model, with the output limit
/// reserved for it (when budgeted) under the dialect's name for it.
pub fn routed_body(
    native: &crate::request::Native,
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

/// A whole answer in `dialect` as the `chat.completion` it would have been,
/// when that form can say all of it (see each dialect's `as_chat`).
pub fn as_chat(dialect: crate::request::Dialect, bytes: &[u8], tool_calls: bool) -> Option<Value> {
    match dialect {
        crate::request::Dialect::Messages => super::anthropic::native::as_chat(bytes, tool_calls),
        crate::request::Dialect::Responses => super::responses::as_chat(bytes, tool_calls),
    }
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
