//! What a provider bills for a request that p402 cannot count before it
//! sends it, and what a budget does about each.
//!
//! A hard cap reserves the worst case before dispatch (see `budget`), so it
//! holds only for what p402 can bound:
//!
//! - a background job (`background: true`) runs after its answer, which
//!   says `queued` and carries no usage: p402 could neither hold its cost
//!   nor stop it, so a budget refuses it (400, saying why);
//! - input the provider reads from its own storage (`previous_response_id`,
//!   a stored `prompt` or `conversation`, uploaded files named by
//!   `file_id`, documents it fetches or extracts) cannot be counted, but
//!   cannot exceed the model's context window: a budget reserves that
//!   whole window as input, and the provider's reported usage settles it.

use serde_json::{Map, Value};

use crate::server::error::{Classify, ErrorKind};
use crate::wire::request::ChatRequest;

/// Input tokens assumed for input p402 cannot count on a model whose
/// context window the catalog does not know: more than any model takes.
pub const HIDDEN_INPUT_WITHOUT_CONTEXT: u64 = 2_000_000;

/// Why a budgeted request is refused before it goes anywhere.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnseenError {
    #[error("`background: true` runs the response after p402 has answered, with no usage to charge it by, so a request charged to a budget may not ask for it: send it without `background`, or without a session, from a key with no budget")]
    Background,
}

impl Classify for UnseenError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidRequest
    }

    fn code(&self) -> &'static str {
        match self {
            UnseenError::Background => "background_under_budget",
        }
    }
}

/// The bodies that say what the provider gets: the client's own (a
/// Responses or Messages body forwarded as it is) and the internal one.
fn bodies(chat: &ChatRequest) -> impl Iterator<Item = &Map<String, Value>> {
    std::iter::once(&chat.body).chain(chat.native.as_ref().map(|n| &n.body))
}

/// Whether the request asks for a background job.
pub fn background(chat: &ChatRequest) -> bool {
    bodies(chat).any(|body| body.get("background").and_then(Value::as_bool) == Some(true))
}

/// Refuses, for a request charged to a budget, what the cap cannot hold.
pub fn refuse_under_budget(chat: &ChatRequest) -> Result<(), UnseenError> {
    if background(chat) {
        return Err(UnseenError::Background);
    }
    Ok(())
}

/// Whether the provider will read input p402 cannot count: stored state,
/// a stored prompt, or files and documents it opens itself.
pub fn hidden_input(chat: &ChatRequest) -> bool {
    bodies(chat).any(|body| {
        let set = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
        // A legacy completion's `prompt` is text p402 counts; a Responses
        // `prompt` is an object naming a stored one.
        let stored_prompt = body.get("prompt").is_some_and(Value::is_object);
        set("previous_response_id")
            || set("conversation")
            || stored_prompt
            || ["input", "messages", "system"]
                .iter()
                .filter_map(|key| body.get(*key))
                .any(names_a_file)
    })
}

/// A part that the provider fills in from a file: one named by id, a
/// file or document part (PDFs are read as text and page images, in
/// numbers only the provider knows), or a document it fetches.
fn names_a_file(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(names_a_file),
        Value::Object(object) => {
            let kind = object.get("type").and_then(Value::as_str);
            object.contains_key("file_id")
                || matches!(kind, Some("input_file" | "file" | "document"))
                || object.values().any(names_a_file)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        let bytes = serde_json::to_vec(&body).expect("json");
        crate::wire::request::parse(&bytes, &http::HeaderMap::new()).expect("parses")
    }

    fn ask(extra: Value) -> Value {
        let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn input_the_provider_fills_in_is_hidden() {
        assert!(!hidden_input(&chat(ask(json!({})))));
        let file = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "summarise"},
            {"type": "file", "file": {"file_id": "file-abc"}}]}]});
        assert!(hidden_input(&chat(ask(file))));
        let image = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "file_id": "file-1"}}]}]});
        assert!(hidden_input(&chat(ask(image))));
        assert!(hidden_input(&chat(ask(
            json!({"previous_response_id": "resp_1"})
        ))));
        assert!(hidden_input(&chat(ask(
            json!({"prompt": {"id": "pmpt_1", "version": "2"}})
        ))));
        assert!(hidden_input(&chat(ask(json!({"conversation": "conv_1"})))));
        // A null is the field unset.
        assert!(!hidden_input(&chat(ask(
            json!({"previous_response_id": null})
        ))));
    }

    #[test]
    fn budgets_refuse_background_jobs() {
        assert_eq!(refuse_under_budget(&chat(ask(json!({})))), Ok(()));
        assert_eq!(
            refuse_under_budget(&chat(ask(json!({"background": true})))),
            Err(UnseenError::Background)
        );
        assert_eq!(
            refuse_under_budget(&chat(ask(json!({"background": false})))),
            Ok(())
        );
    }
}
