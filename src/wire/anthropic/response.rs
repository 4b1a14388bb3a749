//! A whole answer as a `chat.completion`. The stop reasons and token counts
//! read here are shared with the stream, so both report them alike.

use serde_json::{json, Map, Value};

use super::super::TranslateError;
use super::block_type;
use crate::cache;

/// Translates a whole Anthropic `message` into an OpenAI `chat.completion`.
pub fn translate_response(message: &Value) -> Result<Value, TranslateError> {
    let content = message
        .get("content")
        .and_then(Value::as_array)
        .filter(|_| message.get("type").and_then(Value::as_str) == Some("message"))
        .ok_or_else(|| {
            TranslateError::Response(
                "the Anthropic answer is not a message with a `content` array".into(),
            )
        })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for block in content {
        match block_type(block) {
            "text" => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            "tool_use" => tool_calls.push(tool_call(block)),
            "thinking" | "redacted_thinking" => thinking.push(block.clone()),
            // Server-side tool blocks have no OpenAI form.
            _ => {}
        }
    }
    let mut reply = Map::new();
    reply.insert("role".into(), Value::from("assistant"));
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    };
    reply.insert("content".into(), content);
    if !tool_calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !thinking.is_empty() {
        reply.insert(super::THINKING.into(), Value::Array(thinking));
    }
    let mut tokens = Tokens::default();
    tokens.update(message.get("usage"));
    Ok(json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": cache::now(),
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message.get("stop_reason")),
            "logprobs": null,
        }],
        "usage": tokens.to_openai(),
    }))
}

/// A `tool_use` block as an OpenAI tool call, its input re-encoded as the
/// JSON string OpenAI clients parse.
fn tool_call(block: &Value) -> Value {
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": block.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": block.get("name").cloned().unwrap_or(Value::Null),
            "arguments": input.to_string(),
        },
    })
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`. `pause_turn` (a
/// server-tool loop paused) ends the answer as far as the client can tell;
/// a reason added after this was written also reads as a plain stop.
pub(super) fn finish_reason(stop_reason: Option<&Value>) -> Value {
    let Some(reason) = stop_reason.and_then(Value::as_str) else {
        return Value::Null;
    };
    let finish = match reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    };
    Value::from(finish)
}

/// Token counts as Anthropic reports them: `input` excludes the prompt-cache
/// reads and writes, which are counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tokens {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    /// The part of `cache_write` for the one-hour cache.
    cache_write_1h: u64,
    output: u64,
    /// `usage.server_tool_use.web_search_requests`: searches billed apart.
    web_searches: u64,
    /// Web searches seen starting in a stream, for a stream cut off before
    /// its final usage says how many ran.
    searches_started: u64,
}

impl Tokens {
    /// Takes the counts a usage object carries. Anthropic's counts are
    /// running totals, so a later value replaces an earlier one.
    pub(super) fn update(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else {
            return;
        };
        let read = |key: &str, into: &mut u64| {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *into = n;
            }
        };
        read("input_tokens", &mut self.input);
        read("cache_read_input_tokens", &mut self.cache_read);
        read("cache_creation_input_tokens", &mut self.cache_write);
        read("output_tokens", &mut self.output);
        if let Some(n) = usage
            .pointer("/server_tool_use/web_search_requests")
            .and_then(Value::as_u64)
        {
            self.web_searches = n;
        }
        if let Some(n) = usage
            .pointer("/cache_creation/ephemeral_1h_input_tokens")
            .and_then(Value::as_u64)
        {
            self.cache_write_1h = n;
        }
    }

    /// Counts a web search as its block starts (`content_block_start` with
    /// a `server_tool_use` block named `web_search`).
    pub(super) fn block_started(&mut self, block: Option<&Value>) {
        let Some(block) = block else {
            return;
        };
        if block.get("type").and_then(Value::as_str) == Some("server_tool_use")
            && block.get("name").and_then(Value::as_str) == Some("web_search")
        {
            self.searches_started += 1;
        }
    }

    /// p402's usage, where the input counts cached tokens too.
    pub(super) fn usage(self) -> crate::catalog::Usage {
        crate::catalog::Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            cached_input_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            cache_write_1h_tokens: self.cache_write_1h.min(self.cache_write),
            output_tokens: self.output,
            reasoning_tokens: 0,
            web_searches: self.web_searches.max(self.searches_started),
        }
    }

    /// OpenAI's usage object, where `prompt_tokens` includes cached tokens.
    /// The top-level cache fields are what `openai::usage` prices cache
    /// writes from.
    pub(super) fn to_openai(self) -> Value {
        let prompt = self
            .input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write);
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": { "cached_tokens": self.cache_read },
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
        });
        // p402's own field, only when there is something to say: the
        // one-hour writes, billed at their own rate.
        let hour = self.cache_write_1h.min(self.cache_write);
        if hour > 0 {
            usage["cache_creation_1h_input_tokens"] = json!(hour);
        }
        // Anthropic's own field, which `openai::usage` reads: the searches
        // are billed per call.
        let searches = self.web_searches.max(self.searches_started);
        if searches > 0 {
            usage["server_tool_use"] = json!({ "web_search_requests": searches });
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Usage;
    use crate::wire::anthropic::test_support::text;
    use http::StatusCode;

    fn message(content: Value, stop_reason: &str, usage: Value) -> Value {
        json!({
            "id": "msg_01XYZ", "type": "message", "role": "assistant",
            "model": "claude-sonnet-5-5", "content": content,
            "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        })
    }

    /// Anthropic counts its web searches in `usage.server_tool_use`; the
    /// count goes through the OpenAI form the adapter answers in, and a
    /// stream cut off before it still bills the searches that started.
    #[test]
    fn web_searches_are_read_and_carried() {
        let mut tokens = Tokens::default();
        tokens.update(Some(&json!({"input_tokens": 10, "output_tokens": 5,
            "server_tool_use": {"web_search_requests": 2}})));
        assert_eq!(tokens.usage().web_searches, 2);
        let openai = crate::wire::openai::usage(&json!({"usage": tokens.to_openai()}));
        assert_eq!(openai.map(|u| u.web_searches), Some(2));

        let mut cut = Tokens::default();
        let search = json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"});
        cut.block_started(Some(&search));
        cut.block_started(Some(&json!({"type": "text", "text": ""})));
        assert_eq!(cut.usage().web_searches, 1);
    }

    #[test]
    fn text_response() {
        let answer = translate_response(&message(
            json!([text("Hello"), text(", world.")]),
            "end_turn",
            json!({"input_tokens": 12, "output_tokens": 5}),
        ))
        .expect("translated");
        assert_eq!(answer["id"], "msg_01XYZ");
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["model"], "claude-sonnet-5-5");
        assert!(answer["created"].as_u64().expect("created") > 1_700_000_000);
        assert_eq!(
            answer["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello, world."},
                    "finish_reason": "stop", "logprobs": null}])
        );
        assert_eq!(
            answer["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                   "prompt_tokens_details": {"cached_tokens": 0},
                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
        );
    }

    #[test]
    fn tool_use_response() {
        let answer = translate_response(&message(
            json!([
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {"city": "Oslo"}},
            ]),
            "tool_use",
            json!({"input_tokens": 100, "output_tokens": 40}),
        ))
        .expect("translated");
        let reply = &answer["choices"][0]["message"];
        assert_eq!(reply["content"], Value::Null);
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        let calls = reply["tool_calls"].as_array().expect("tool calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "toolu_A");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[1]["function"]["name"], "get_weather");
        let arguments: Value = serde_json::from_str(
            calls[1]["function"]["arguments"]
                .as_str()
                .expect("arguments string"),
        )
        .expect("arguments JSON");
        assert_eq!(arguments, json!({"city": "Oslo"}));
    }

    #[test]
    fn every_stop_reason_maps() {
        let cases = [
            ("end_turn", json!("stop")),
            ("stop_sequence", json!("stop")),
            ("pause_turn", json!("stop")),
            ("max_tokens", json!("length")),
            ("model_context_window_exceeded", json!("length")),
            ("tool_use", json!("tool_calls")),
            ("refusal", json!("content_filter")),
        ];
        for (reason, expected) in cases {
            let answer = translate_response(&message(json!([text("x")]), reason, json!({})))
                .expect("translated");
            assert_eq!(answer["choices"][0]["finish_reason"], expected, "{reason}");
        }
        let mut unfinished = message(json!([]), "end_turn", json!({}));
        unfinished["stop_reason"] = Value::Null;
        let answer = translate_response(&unfinished).expect("translated");
        assert_eq!(answer["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(answer["choices"][0]["message"]["content"], "");
    }

    #[test]
    fn cache_usage_is_priced_through_openai_usage() {
        let answer = translate_response(&message(
            json!([text("ok")]),
            "end_turn",
            json!({"input_tokens": 50, "cache_creation_input_tokens": 2000,
                   "cache_read_input_tokens": 8000, "output_tokens": 30}),
        ))
        .expect("translated");
        assert_eq!(answer["usage"]["prompt_tokens"], 10_050);
        assert_eq!(answer["usage"]["total_tokens"], 10_080);
        assert_eq!(
            crate::wire::openai::usage(&answer),
            Some(Usage {
                input_tokens: 10_050,
                cached_input_tokens: 8000,
                cache_write_tokens: 2000,
                cache_write_1h_tokens: 0,
                output_tokens: 30,
                reasoning_tokens: 0,
                web_searches: 0,
            })
        );
    }

    /// One-hour cache writes are counted apart, so they are priced at
    /// their own rate.
    #[test]
    fn one_hour_cache_writes_are_counted_apart() {
        let mut tokens = Tokens::default();
        tokens.update(Some(&json!({"input_tokens": 10, "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 0, "output_tokens": 5,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}})));
        let usage = tokens.usage();
        assert_eq!(usage.input_tokens, 310);
        assert_eq!(usage.cache_write_tokens, 300);
        assert_eq!(usage.cache_write_1h_tokens, 200);
        let openai = crate::wire::openai::usage(&json!({"usage": tokens.to_openai()}));
        assert_eq!(openai, Some(usage));
    }

    #[test]
    fn a_non_message_answer_is_an_upstream_failure() {
        for body in [
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
            json!({"type": "message", "content": "not an array"}),
        ] {
            let error = crate::server::error::ApiError::from(
                translate_response(&body).expect_err("not a message"),
            );
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(error.code, "invalid_response");
        }
    }
}
