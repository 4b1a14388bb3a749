//! Provider adapters: how a request is put on the wire for each API, and how
//! the answer is read back in OpenAI's terms.

pub mod openai;

use std::pin::Pin;

use futures_util::Stream;
use http::StatusCode;
use serde_json::Value;

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

/// Statuses worth trying another candidate for; any other 4xx is the
/// request's own fault and goes back to the client unchanged.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}
