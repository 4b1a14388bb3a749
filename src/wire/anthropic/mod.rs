//! Anthropic's native Messages API, spoken in OpenAI's terms.
//!
//! Clients talk OpenAI Chat Completions to p402; this module turns such a
//! request into a `POST /v1/messages` body and turns the answer (whole, or
//! streamed as Anthropic's SSE events) back into `chat.completion` objects and
//! `chat.completion.chunk` events, so nothing past the adapter knows which
//! API answered. Field meanings follow Anthropic's published API reference
//! (platform.claude.com/docs: Messages API, streaming, tool use, errors,
//! prompt caching, structured outputs).
//!
//! Decisions where the two APIs do not line up:
//! - System and developer messages become the top-level `system` prompt
//!   wherever they stand in the conversation: Anthropic has no system turn.
//! - `response_format: json_schema` becomes `output_config.format`
//!   (`{"type": "json_schema", "schema": ...}`), Anthropic's generally
//!   available structured outputs (build-with-claude/structured-outputs),
//!   which constrains decoding to the schema like OpenAI's strict mode. That
//!   feature has no schema-less mode, so `json_object` becomes an instruction
//!   appended to the system prompt.
//! - `reasoning_effort` becomes extended thinking for a model the catalog
//!   says reasons, within Anthropic's rules (`request::think`). The
//!   `thinking` and `redacted_thinking` blocks that come back ride whole,
//!   with their signatures, in the assistant message's `p402_thinking`
//!   ([`THINKING`]): the Chat Completions door drops that member, the
//!   Responses door hands it to the client as a reasoning item's
//!   `encrypted_content`, and a conversation that brings it back has its
//!   thinking blocks sent to Anthropic again, in place.
//! - `temperature` is clamped to Anthropic's 0..=1 (OpenAI allows 0..=2), and
//!   `top_p` is dropped when `temperature` is set, since current Claude models
//!   refuse both together. A dropped knob beats a 400 for a request the
//!   client wrote for another provider.
//! - OpenAI-only fields (`logprobs`, `seed`, penalties, `stream_options`,
//!   `reasoning_effort` for a model that cannot think, ...) are dropped; `n` above 1 and the deprecated
//!   `functions` are refused, since no translation keeps their meaning.
//!
//! Each direction reads alone, one file per part: `request`, `content`
//! and `tools` build the Messages body, `response` and `stream` read the answer back,
//! `error` maps Anthropic's failures onto p402's statuses. What more than
//! one part needs lives here.

mod content;
mod error;
pub mod native;
mod request;
mod response;
mod stream;
mod tools;

use serde_json::{Map, Value};

pub use super::THINKING;
pub use error::translate_error;
pub use request::{build_request, translate_request};
pub use response::translate_response;
pub use stream::translate_stream;

/// A body field, with `null` read as absent (as OpenAI does).
fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// A block's or event's `type`, empty when absent, so that anything
/// unknown falls to a match's default arm instead of failing.
fn block_type(block: &Value) -> &str {
    block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Helpers the unit tests of more than one part share.
#[cfg(test)]
mod test_support {
    use http::StatusCode;
    use serde_json::{json, Value};

    use crate::server::error::ApiError;

    pub(super) const DEFAULT: u32 = 1000;

    pub(super) fn translate(body: Value) -> Result<Value, ApiError> {
        super::translate_request(
            body.as_object().expect("object body"),
            "claude-test",
            DEFAULT,
            false,
        )
        .map_err(ApiError::from)
    }

    pub(super) fn translated(body: Value) -> Value {
        translate(body).expect("translated")
    }

    pub(super) fn refused(body: Value) -> ApiError {
        let error = translate(body).expect_err("refused");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{error:?}");
        error
    }

    pub(super) fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    pub(super) fn text(text: &str) -> Value {
        json!({ "type": "text", "text": text })
    }
}
