//! The endpoints clients come in by. The doors of a model call (Chat
//! Completions, Messages, Responses: [`Door`]) and the side doors that
//! reach a provider without being a model call (`embeddings`,
//! `count_tokens`, `forward` for the rest of `/v1/*`, and the background
//! jobs fetched through it).
//!
//! A door turns the client's body into the internal request (a
//! [`ChatRequest`]: OpenAI Chat Completions in shape) and renders what the
//! pipeline produced (a `chat.completion`, its stream of chunks, an error)
//! back in the client's own format. The stages in between never ask which
//! door a request came by, so a new API is a new variant here and nothing
//! else.

pub mod background;
mod chat;
pub mod count_tokens;
pub mod embeddings;
pub mod forward;
pub mod messages;
mod responses;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::money::metadata::Metadata;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::request::{ChatRequest, ParseError};
use crate::wire::Answer;

/// The internal request for a body in a provider API's own dialect: `chat`
/// (its translation) read as Chat Completions, with the `p402` options the
/// body carried, and the body itself kept, with the client's headers named
/// in `api_headers`, to be forwarded as it is.
fn native_request(
    body: serde_json::Map<String, Value>,
    mut chat: serde_json::Map<String, Value>,
    options: Option<Value>,
    headers: &HeaderMap,
    dialect: crate::wire::request::Dialect,
    api_headers: &[&'static str],
    loss: Loss,
) -> Result<ChatRequest, ParseError> {
    if let Some(options) = options {
        chat.insert("p402".into(), options);
    }
    let mut request = crate::wire::request::from_body(chat, headers)?;
    let headers = api_headers
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            Some((http::HeaderName::from_static(name), value.clone()))
        })
        .collect();
    let (fidelity, dropped) = loss.fidelity();
    request.native = Some(crate::wire::request::Native {
        dialect,
        body,
        headers,
        fidelity,
        dropped,
    });
    Ok(request)
}

/// An answer's id with the client dialect's prefix once (`chatcmpl-`,
/// `msg_`, `resp_`): whatever prefix the serving API gave it is replaced,
/// so a translated id reads `resp_abc`, never `resp_chatcmpl-abc`.
fn dialect_id(prefix: &str, id: &str) -> String {
    let bare = ["chatcmpl-", "msg_", "resp_"]
        .iter()
        .find_map(|known| id.strip_prefix(known))
        .unwrap_or(id);
    format!("{prefix}{bare}")
}

/// What a door's translation of a native body could not say, found as it
/// reads the body. Reading never fails on what it does not model: the
/// body still goes as it came to providers that speak its dialect.
#[derive(Debug, Default)]
struct Loss {
    approximate: bool,
    /// The first field with no equivalent at all.
    untranslatable: Option<String>,
    dropped: Vec<&'static str>,
}

impl Loss {
    /// Something said only as a hint, or left out without changing what
    /// the answer looks like.
    fn approximate(&mut self) {
        self.approximate = true;
    }

    /// Something no other API can say.
    fn untranslatable(&mut self, field: impl Into<String>) {
        if self.untranslatable.is_none() {
            self.untranslatable = Some(field.into());
        }
    }

    /// A tool or feature the translation leaves out, which the answer's
    /// `x-p402-dropped` header names.
    fn dropped(&mut self, feature: &'static str) {
        self.approximate = true;
        if !self.dropped.contains(&feature) {
            self.dropped.push(feature);
        }
    }

    fn fidelity(self) -> (crate::wire::request::Fidelity, Vec<&'static str>) {
        use crate::wire::request::Fidelity;
        let fidelity = match (self.untranslatable, self.approximate) {
            (Some(field), _) => Fidelity::Untranslatable(field),
            (None, true) => Fidelity::Approximate,
            (None, false) => Fidelity::Exact,
        };
        (fidelity, self.dropped)
    }
}

/// A body in a provider API's own dialect, read as a JSON object that
/// names a model, with its `p402` options taken out.
fn native_body(
    bytes: &[u8],
) -> Result<(serde_json::Map<String, Value>, Option<Value>), ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(mut body) = value else {
        return Err(ParseError::Field(
            "the request body must be a JSON object".into(),
        ));
    };
    let options = body.remove("p402");
    match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => Ok((body, options)),
        _ => Err(ParseError::Model),
    }
}

/// An API a client can call p402 by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// OpenAI Chat Completions (`/v1/chat/completions`), p402's own
    /// dialect inside: answers pass through it untranslated.
    Chat,
    /// Anthropic Messages (`/v1/messages`): Claude Code, the anthropic SDKs.
    Messages,
    /// OpenAI's Responses API (`/v1/responses`): Codex CLI, the Agents SDK.
    Responses,
}

/// Why an answer could not be rendered for the client.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the answer could not be written as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the answer is not a JSON object")]
    NotAnObject,
}

impl Door {
    /// Whether a failure every provider reported as overload (529) or a
    /// rate limit (429) is passed on with that status: Anthropic's clients
    /// back off by it. Other doors' clients get p402's 502.
    pub fn passes_on_overload(self) -> bool {
        matches!(self, Door::Messages)
    }

    /// The door's name in logs and the request log.
    pub fn name(self) -> &'static str {
        match self {
            Door::Chat => "chat",
            Door::Messages => "messages",
            Door::Responses => "responses",
        }
    }

    /// The client's request, read into the internal one.
    pub fn parse(self, bytes: &Bytes, headers: &HeaderMap) -> Result<ChatRequest, ParseError> {
        match self {
            Door::Chat => crate::wire::request::parse_keeping(bytes, headers),
            Door::Messages => messages::parse(bytes, headers),
            Door::Responses => responses::parse(bytes, headers),
        }
    }

    /// A whole answer's body, with the metadata, in the client's format;
    /// a translated one names the model that served it as the catalog
    /// does (`metadata.model`).
    pub fn answer(
        self,
        answer: Answer,
        metadata: &Metadata,
        chat: &ChatRequest,
    ) -> Result<Bytes, RenderError> {
        match self {
            Door::Chat => chat::answer(answer, metadata),
            Door::Messages => messages::answer(answer, metadata),
            Door::Responses => responses::answer(answer, metadata, chat),
        }
    }

    /// The writer of a streamed answer's events, for the client's format;
    /// `model` is the catalog id of the model serving it (none for a
    /// replay from the cache).
    pub fn stream(self, chat: &ChatRequest, model: Option<&str>) -> StreamWriter {
        match self {
            Door::Chat => StreamWriter::Chat(chat::Stream::new(chat.client_wants_usage, model)),
            Door::Messages => StreamWriter::Messages(messages::Stream::new(model)),
            Door::Responses => {
                StreamWriter::Responses(Box::new(responses::Stream::new(chat, model)))
            }
        }
    }

    /// An error of p402's, in the client's format.
    pub fn error(self, error: &ApiError, request_id: &RequestId) -> Response<Body> {
        match self {
            // The Responses API reports errors as Chat Completions does.
            Door::Chat | Door::Responses => error.clone().into_response(request_id),
            Door::Messages => messages::error(error, request_id),
        }
    }

    /// A provider's refusal of the request itself (a 4xx), already in
    /// OpenAI's error shape, as the client's format says it.
    pub fn refusal(
        self,
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    ) -> (StatusCode, Bytes, Option<HeaderValue>) {
        match self {
            Door::Chat | Door::Responses => (status, body, content_type),
            Door::Messages => (
                status,
                messages::refusal(status, &body),
                Some(HeaderValue::from_static("application/json")),
            ),
        }
    }
}

/// Writes a streamed answer's events in the client's format: each upstream
/// chunk as it comes, then the metadata and the end, or an error.
pub enum StreamWriter {
    Chat(chat::Stream),
    Messages(messages::Stream),
    /// Boxed: it keeps a translated stream's items, far larger than the
    /// other writers.
    Responses(Box<responses::Stream>),
}

impl StreamWriter {
    /// The event (if any) the client gets for one internal chunk.
    pub fn chunk(&mut self, chunk: Value) -> Option<Bytes> {
        match self {
            StreamWriter::Chat(stream) => stream.chunk(chunk),
            StreamWriter::Messages(stream) => stream.chunk(chunk),
            StreamWriter::Responses(stream) => stream.chunk(chunk),
        }
    }

    /// The events that end a complete stream, the metadata among them.
    pub fn end(&mut self, metadata: &Metadata) -> Vec<Bytes> {
        match self {
            StreamWriter::Chat(stream) => stream.end(metadata),
            StreamWriter::Messages(stream) => stream.end(metadata),
            StreamWriter::Responses(stream) => stream.end(metadata),
        }
    }

    /// The event that reports p402's error in the middle of a stream.
    pub fn error(&mut self, error: &ApiError, request_id: &RequestId) -> Bytes {
        match self {
            StreamWriter::Chat(stream) => {
                let event = chat::event(&error.to_json(request_id));
                match stream.flush() {
                    Some(held) => Bytes::from([held, event].concat()),
                    None => event,
                }
            }
            StreamWriter::Responses(_) => chat::event(&error.to_json(request_id)),
            StreamWriter::Messages(_) => {
                messages::event("error", &messages::error_body(error, request_id))
            }
        }
    }

    /// The event that passes on the provider's own error event (an OpenAI
    /// error object).
    pub fn provider_error(&mut self, error: &Value) -> Bytes {
        match self {
            StreamWriter::Chat(stream) => match stream.flush() {
                Some(held) => Bytes::from([held, chat::event(error)].concat()),
                None => chat::event(error),
            },
            StreamWriter::Responses(_) => chat::event(error),
            StreamWriter::Messages(_) => messages::event("error", error),
        }
    }

    /// An event of the client's own dialect, passed on as it came (or
    /// held, to carry the figures at the end).
    pub fn native(&mut self, name: &str, data: &Value) -> Option<Bytes> {
        match self {
            StreamWriter::Chat(_) => Some(chat::event(data)),
            StreamWriter::Messages(_) => Some(messages::event(name, data)),
            StreamWriter::Responses(stream) => stream.native(name, data),
        }
    }
}
