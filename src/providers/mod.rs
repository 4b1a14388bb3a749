//! Provider adapters: how a request is put on the wire for each API, and how
//! the answer is read back in OpenAI's terms.

pub mod anthropic;
pub mod openai;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::catalog::{Api, Provider};
use crate::error::ApiError;
use crate::request::ChatRequest;
use crate::router::Candidate;

/// One event of an upstream stream, in OpenAI's chunk format.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A `chat.completion.chunk` object (or an error object).
    Chunk(Value),
    /// The end marker (`data: [DONE]`).
    Done,
}

/// Why an upstream stream could not be read further.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("reading the upstream stream failed: {0}")]
    Read(String),
    #[error("the upstream sent an event that is not JSON: {0}")]
    InvalidJson(String),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, StreamError>> + Send>>;

/// Statuses worth trying another candidate for: rate limits, server
/// errors, and the provider refusing p402's own key (401, 403), which says
/// nothing about the request. Any other 4xx is the request's own fault.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status.is_server_error()
}

/// The upstream request in the provider's own API.
pub fn build_request(
    provider: &Provider,
    candidate: &Candidate,
    request: &ChatRequest,
) -> Result<Request<Full<Bytes>>, ApiError> {
    match provider.api {
        Api::Openai => openai::build_request(provider, candidate, request),
        Api::Anthropic => anthropic::build_request(provider, candidate, request),
    }
}

/// A successful non-streamed body as an OpenAI `chat.completion` object.
pub fn completion(api: Api, bytes: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match api {
        Api::Openai => Ok(value),
        Api::Anthropic => anthropic::translate_response(&value).map_err(|e| e.message),
    }
}

/// An upstream stream as OpenAI chunk events.
pub fn events(api: Api, body: Incoming) -> EventStream {
    match api {
        Api::Openai => openai::events(body),
        Api::Anthropic => anthropic::events(body),
    }
}

/// What to do with an upstream error response.
pub struct ErrorVerdict {
    /// Worth trying another candidate.
    pub retryable: bool,
    /// What the client gets if it is not.
    pub status: StatusCode,
    pub body: Bytes,
}

/// An OpenAI-compatible error goes back as it came; an Anthropic one is
/// translated into OpenAI's shape and status.
pub fn error(api: Api, status: StatusCode, body: Bytes) -> ErrorVerdict {
    match api {
        Api::Openai => ErrorVerdict {
            retryable: is_retryable(status),
            status,
            body,
        },
        Api::Anthropic => {
            let (status, value, retryable) = anthropic::translate_error(status, &body);
            ErrorVerdict {
                retryable: retryable || is_retryable(status),
                status,
                body: Bytes::from(value.to_string()),
            }
        }
    }
}
