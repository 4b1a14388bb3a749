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
use crate::router::Candidate;
use crate::wire::request::Native;

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
    let body = super::verbatim::routed_body(native, candidate, "max_output_tokens", limit);
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
        web_searches: 0,
    }
}

/// p402's usage of a whole `response` object, `None` without a usage
/// object. Web searches are not in `usage`: each one is a `web_search_call`
/// item of the output, billed per call.
pub fn response_usage(response: &Value) -> Option<Usage> {
    let mut used = usage(response.get("usage").filter(|u| u.is_object())?);
    used.web_searches = web_searches(response);
    Some(used)
}

/// The `web_search_call` items of a response's output.
fn web_searches(response: &Value) -> u64 {
    response
        .get("output")
        .and_then(Value::as_array)
        .map_or(0, |items| {
            items.iter().filter(|item| is_web_search(item)).count() as u64
        })
}

fn is_web_search(item: &Value) -> bool {
    item.get("type").and_then(Value::as_str) == Some("web_search_call")
}

/// The usage of a whole answer, or why it is not a response.
pub fn answer_usage(bytes: &[u8]) -> Result<Usage, String> {
    let answer: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if answer.get("object").and_then(Value::as_str) != Some("response") {
        return Err("a 200 answer that is not a response (an error body)".into());
    }
    // A background job is answered before it runs: no usage yet, and
    // nothing wrong. It is charged when its result is fetched (`forward`).
    let pending = matches!(
        answer.get("status").and_then(Value::as_str),
        Some("queued" | "in_progress")
    );
    if pending && answer.get("background").and_then(Value::as_bool) == Some(true) {
        return Ok(Usage::default());
    }
    response_usage(&answer).ok_or_else(|| "a response without usage".into())
}

/// The events of a Responses stream as they came, each parsed once; the
/// stream ends with its final event (`response.completed`, `.failed` or
/// `.incomplete`).
pub fn decode_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    super::verbatim::decode_stream(bytes, |kind| FINAL_EVENTS.contains(&kind))
}

/// What a Responses stream has said that the charge needs.
#[derive(Debug, Default)]
pub struct Tally {
    usage: Option<Usage>,
    /// Web search calls seen starting, for a stream cut off before its
    /// final event counts them.
    searches_started: u64,
    /// The answer as Chat Completions would have said it, while it says
    /// nothing else.
    plain: super::verbatim::Plain,
}

impl Tally {
    pub(crate) fn read(&mut self, data: &Value, text: &mut String) -> bool {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        if FINAL_EVENTS.contains(&kind) {
            if let Some(mut reported) = data.get("response").and_then(response_usage) {
                reported.web_searches = reported.web_searches.max(self.searches_started);
                self.usage = Some(reported);
            }
            let status = data.pointer("/response/status").and_then(Value::as_str);
            self.plain.finish(finish_reason(status));
            return false;
        }
        match data.get("delta").and_then(Value::as_str) {
            Some(delta) if kind.ends_with(".delta") => {
                text.push_str(delta);
                if kind == "response.output_text.delta" {
                    self.plain.text(delta);
                } else {
                    self.plain.other();
                }
                true
            }
            _ => {
                let added = kind == "response.output_item.added";
                if added && data.get("item").is_some_and(is_web_search) {
                    self.searches_started += 1;
                }
                if added && data.pointer("/item/type").and_then(Value::as_str) != Some("message") {
                    self.plain.other();
                }
                added
            }
        }
    }

    /// The usage the stream reported in its final event
    /// (`response.completed`, `.failed` or `.incomplete`); `None` before.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub(crate) fn searches_started(&self) -> u64 {
        self.searches_started
    }

    pub(crate) fn plain(&self) -> &super::verbatim::Plain {
        &self.plain
    }
}

/// A response's `status` as Chat Completions' `finish_reason`: only a
/// completed response is a whole answer.
fn finish_reason(status: Option<&str>) -> Value {
    match status {
        Some("completed") => Value::from("stop"),
        Some("incomplete") => Value::from("length"),
        _ => Value::Null,
    }
}

/// A whole response as the `chat.completion` it would have been, when its
/// output holds nothing that form cannot: messages of output text and,
/// when `tool_calls` allows, function calls. Reasoning items, refusals and
/// built-in tool calls make it `None`.
pub fn as_chat(bytes: &[u8], tool_calls: bool) -> Option<Value> {
    let answer: Value = serde_json::from_slice(bytes).ok()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in answer.get("output")?.as_array()? {
        match item.get("type").and_then(Value::as_str)? {
            "message" => {
                for part in item.get("content")?.as_array()? {
                    if part.get("type").and_then(Value::as_str)? != "output_text" {
                        return None;
                    }
                    text.push_str(part.get("text")?.as_str()?);
                }
            }
            "function_call" if tool_calls => calls.push(serde_json::json!({
                "id": item.get("call_id")?,
                "type": "function",
                "function": {"name": item.get("name")?, "arguments": item.get("arguments")?},
            })),
            _ => return None,
        }
    }
    let status = answer.get("status").and_then(Value::as_str);
    let finish = match finish_reason(status) {
        Value::String(reason) if reason == "stop" && !calls.is_empty() => Value::from("tool_calls"),
        other => other,
    };
    let mut message = serde_json::Map::new();
    message.insert("role".into(), Value::from("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let used = response_usage(&answer).unwrap_or_default();
    Some(serde_json::json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": crate::cache::now(),
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": {
            "prompt_tokens": used.input_tokens,
            "completion_tokens": used.output_tokens,
            "total_tokens": used.input_tokens + used.output_tokens,
        },
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Web searches are billed per call and are not in `usage`: each is a
    /// `web_search_call` item, counted whole and as a stream goes.
    #[test]
    fn web_search_calls_are_counted_from_the_output() {
        let call = json!({"type": "web_search_call", "id": "ws_1", "status": "completed"});
        let answer = json!({"object": "response", "status": "completed",
            "output": [call, call, {"type": "message", "content": []}],
            "usage": {"input_tokens": 10, "output_tokens": 5}});
        let used = response_usage(&answer).expect("usage");
        assert_eq!((used.input_tokens, used.web_searches), (10, 2));

        let mut tally = Tally::default();
        let mut text = String::new();
        for _ in 0..3 {
            tally.read(
                &json!({"type": "response.output_item.added", "item": call}),
                &mut text,
            );
        }
        assert_eq!(tally.searches_started(), 3);
        // The final event's count stands, never below what was seen.
        tally.read(
            &json!({"type": "response.completed", "response": answer}),
            &mut text,
        );
        assert_eq!(tally.usage().map(|u| u.web_searches), Some(3));
    }
}
