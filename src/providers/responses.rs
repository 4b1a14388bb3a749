//! OpenAI's Responses API spoken natively: what Codex CLI and the Agents
//! SDK send goes to OpenAI as it was written (stored state, reasoning items
//! and their encrypted content, built-in tools), and the answer comes back
//! as OpenAI sent it. p402 reads only the usage, and sets the model it
//! routed to and the output limit it reserved.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use super::{EventStream, TranslateError};
use crate::catalog::{Provider, Usage};
use crate::request::Native;
use crate::router::Candidate;

/// The events that end a Responses stream.
const FINAL_EVENTS: [&str; 3] = [
    "response.completed",
    "response.failed",
    "response.incomplete",
];

/// The client's own body, for the routed model, with the reserved output
/// limit (when budgeted), the client's API headers and the provider's key.
pub fn build_request(
    provider: &Provider,
    candidate: &Candidate,
    native: &Native,
    stream: bool,
    limit: Option<u32>,
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let mut body = native.body.clone();
    body.insert(
        "model".into(),
        Value::from(candidate.upstream_model.as_str()),
    );
    if let Some(limit) = limit {
        body.insert("max_output_tokens".into(), Value::from(limit));
    }
    super::post_json(provider, "/responses", &body, stream, &native.headers)
}

/// p402's usage from a Responses `usage` object.
pub fn usage(usage: &Value) -> Usage {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: count(usage.get("input_tokens")),
        cached_input_tokens: count(usage.pointer("/input_tokens_details/cached_tokens")),
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
        output_tokens: count(usage.get("output_tokens")),
        reasoning_tokens: count(usage.pointer("/output_tokens_details/reasoning_tokens")),
    }
}

/// The usage of a whole answer, or why it is not a response.
pub fn answer_usage(bytes: &[u8]) -> Result<Usage, String> {
    let answer: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if answer.get("object").and_then(Value::as_str) != Some("response") {
        return Err("a 200 answer that is not a response (an error body)".into());
    }
    answer
        .get("usage")
        .filter(|u| u.is_object())
        .map(usage)
        .ok_or_else(|| "a response without usage".into())
}

/// The events of a Responses stream as they came, each parsed once; the
/// stream ends with its final event (`response.completed`, `.failed` or
/// `.incomplete`).
pub fn decode_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    super::native::decode_stream(bytes, |kind| FINAL_EVENTS.contains(&kind))
}

/// What a Responses stream has said that the charge needs.
#[derive(Debug, Default)]
pub struct Tally {
    usage: Option<Usage>,
}

impl Tally {
    pub fn read(&mut self, data: &Value, text: &mut String) -> bool {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        if FINAL_EVENTS.contains(&kind) {
            if let Some(reported) = data.pointer("/response/usage").filter(|u| u.is_object()) {
                self.usage = Some(usage(reported));
            }
            return false;
        }
        match data.get("delta").and_then(Value::as_str) {
            Some(delta) if kind.ends_with(".delta") => {
                text.push_str(delta);
                true
            }
            _ => kind == "response.output_item.added",
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
