//! Anthropic Messages spoken natively: a client that already speaks it
//! (Claude Code, the anthropic SDKs) is forwarded as it wrote the request,
//! and its answer comes back untouched: thinking blocks and their
//! signatures, `cache_control`, beta features and all. p402 only reads
//! what it needs to charge the request (the usage), and sets the model it
//! routed to and the output limit it reserved for.

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde_json::Value;

use super::block_type;
use super::response::Tokens;
use crate::catalog::{Provider, Usage};
use crate::router::Candidate;
use crate::wire::request::Native;
use crate::wire::EventStream;
use crate::wire::TranslateError;

/// Sent when the client named no version.
const API_VERSION: &str = "2023-06-01";

/// The client's own Messages body, for the routed model, with the output
/// limit reserved for it (when budgeted), the client's API headers, and the
/// provider's key (never the client's).
pub fn build_request(
    provider: &Provider,
    candidate: &Candidate,
    native: &Native,
    stream: bool,
    limit: Option<u32>,
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let body = crate::wire::verbatim::routed_body(native, candidate, "max_tokens", limit);
    let mut headers = native.headers.clone();
    if !headers.iter().any(|(name, _)| name == "anthropic-version") {
        headers.push((
            http::HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        ));
    }
    crate::wire::post_json(provider, "/messages", &body, stream, &headers)
}

/// A `count_tokens` request for `body` (the client's, the routed model
/// set), with the client's API headers and the provider's key.
pub fn count_request(
    provider: &std::sync::Arc<Provider>,
    model: &str,
    body: &serde_json::Map<String, Value>,
    headers: &[(http::HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let native = Native {
        dialect: crate::wire::request::Dialect::Messages,
        body: body.clone(),
        headers: headers.to_vec(),
        fidelity: crate::wire::request::Fidelity::Untranslatable("count_tokens".into()),
        dropped: Vec::new(),
    };
    let candidate = Candidate {
        provider: std::sync::Arc::clone(provider),
        upstream_model: model.to_string(),
        model: None,
        expected_cost: None,
    };
    let mut request = build_request(provider, &candidate, &native, false, None)?;
    let uri = format!("{}/messages/count_tokens", provider.base_url);
    *request.uri_mut() = uri
        .parse()
        .map_err(|e| TranslateError::Build(format!("cannot build the request to `{uri}`: {e}")))?;
    Ok(request)
}

/// The usage of a whole answer, or why it is not a message.
pub fn answer_usage(bytes: &[u8]) -> Result<Usage, String> {
    let answer: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if block_type(&answer) != "message" {
        return Err("a 200 answer that is not a message (an error body)".into());
    }
    let mut tokens = Tokens::default();
    tokens.update(answer.get("usage"));
    Ok(tokens.usage())
}

/// The events of a Messages stream as they came, each parsed once so that
/// the relay can read its usage; the stream ends after `message_stop`.
pub fn decode_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    crate::wire::verbatim::decode_stream(bytes, |kind| kind == "message_stop")
}

/// What a native stream has said so far that the charge needs.
#[derive(Debug, Default)]
pub struct Tally {
    tokens: Tokens,
    /// `message_start` came: the input counts are Anthropic's own.
    started: bool,
    /// `message_delta` came: the output count is final.
    finished: bool,
    /// The answer as Chat Completions would have said it, while it says
    /// nothing else.
    plain: crate::wire::verbatim::Plain,
}

impl Tally {
    /// Reads one event; returns the text it generated (for a count when no
    /// usage arrives) and whether it generated anything at all.
    pub fn read(&mut self, data: &Value, text: &mut String) -> bool {
        match block_type(data) {
            "message_start" => {
                self.started = true;
                self.tokens
                    .update(data.get("message").and_then(|m| m.get("usage")));
                false
            }
            "message_delta" => {
                self.finished = true;
                self.tokens.update(data.get("usage"));
                let stop = data.pointer("/delta/stop_reason");
                self.plain.finish(super::response::finish_reason(stop));
                false
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                for key in ["text", "partial_json", "thinking"] {
                    if let Some(piece) = delta.get(key).and_then(Value::as_str) {
                        text.push_str(piece);
                    }
                }
                match delta.get("text").and_then(Value::as_str) {
                    Some(piece) if block_type(delta) == "text_delta" => self.plain.text(piece),
                    _ => self.plain.other(),
                }
                true
            }
            "content_block_start" => {
                self.tokens.block_started(data.get("content_block"));
                if data.pointer("/content_block/type").and_then(Value::as_str) != Some("text") {
                    self.plain.other();
                }
                true
            }
            _ => false,
        }
    }

    /// The usage the stream reported, once its output count is final.
    pub fn usage(&self) -> Option<Usage> {
        self.finished.then(|| self.tokens.usage())
    }

    /// The usage of a stream cut off before its final count: Anthropic's
    /// input counts, and `output_tokens` for the caller to count.
    pub fn partial(&self) -> Option<Usage> {
        self.started.then(|| self.tokens.usage())
    }

    pub(crate) fn plain(&self) -> &crate::wire::verbatim::Plain {
        &self.plain
    }
}

/// A whole answer as the `chat.completion` it would have been, when it
/// holds nothing that form cannot: text and, when `tool_calls` allows,
/// tool calls. Thinking and server-tool blocks make it `None`.
pub fn as_chat(bytes: &[u8], tool_calls: bool) -> Option<Value> {
    let answer: Value = serde_json::from_slice(bytes).ok()?;
    let plain = answer
        .get("content")?
        .as_array()?
        .iter()
        .all(|block| match block_type(block) {
            "text" => true,
            "tool_use" => tool_calls,
            _ => false,
        });
    plain
        .then(|| super::translate_response(&answer).ok())
        .flatten()
}
