//! The request half of the adapter: an OpenAI body becomes a Messages body,
//! or a 400 naming the field that cannot be sent, before any upstream call.

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::content::{content_blocks, mark_cache_point};
use super::tools::{tool_result, tool_use_block, tools};
use super::{block_type, field};
use crate::catalog::{Capability, Model, Provider};
use crate::router::Candidate;
use crate::wire::request::ChatRequest;
use crate::wire::TranslateError;

/// The API version p402 was written against; Anthropic keeps a version's
/// behaviour stable, so pinning it keeps the translation valid.
const API_VERSION: &str = "2023-06-01";

/// The output limit when neither the client nor the catalog gives one.
const FALLBACK_MAX_TOKENS: u32 = 4096;

/// The largest default output limit for an answer that is not streamed:
/// Anthropic's SDKs refuse non-streamed requests above roughly 21k output
/// tokens because the connection may sit idle past ten minutes.
const NON_STREAMED_MAX_TOKENS: u32 = 16_384;

/// What `json_object` asks of the model, since Anthropic's structured outputs
/// need a schema.
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single valid JSON object and nothing else: no prose, no code fences.";

/// The upstream request: the client's body in Anthropic's shape, for the
/// chosen model, with the provider's own key (never the client's).
pub fn build_request(
    provider: &Provider,
    candidate: &Candidate,
    request: &ChatRequest,
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let default = default_max_tokens(candidate.model.as_ref(), request.stream);
    let body = translate_request(
        &request.body,
        &candidate.upstream_model,
        default,
        request.stream,
    )?;
    let version = [(
        http::HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    )];
    let mut body = match body {
        Value::Object(body) => body,
        _ => {
            return Err(TranslateError::Build(
                "the translated body is not an object".into(),
            ))
        }
    };
    let reasons = candidate
        .model
        .as_ref()
        .is_some_and(|m| m.capabilities.contains(&Capability::Reasoning));
    if reasons {
        think(&request.body, &mut body);
    }
    crate::wire::post_json(provider, "/messages", &body, request.stream, &version)
}

/// Anthropic requires `max_tokens`; OpenAI's default is "as much as the model
/// can", so the model's own maximum stands in, capped for answers that are
/// not streamed.
fn default_max_tokens(model: Option<&Model>, stream: bool) -> u32 {
    let max = model
        .and_then(|m| m.max_output)
        .unwrap_or(FALLBACK_MAX_TOKENS);
    if stream {
        max
    } else {
        max.min(NON_STREAMED_MAX_TOKENS)
    }
}

/// Translates an OpenAI Chat Completions body into an Anthropic Messages
/// body. Anything that cannot be expressed is a 400 naming the field, so the
/// client learns what to change.
pub fn translate_request(
    body: &Map<String, Value>,
    upstream_model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Value, TranslateError> {
    refuse_untranslatable(body)?;
    let messages = field(body, "messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::Messages("`messages` must be an array".into()))?;
    let Conversation { mut system, turns } = Conversation::of(messages)?;
    let output_config = response_format(field(body, "response_format"), &mut system)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::from(upstream_model));
    out.insert(
        "max_tokens".into(),
        Value::from(max_tokens(body, default_max_tokens)?),
    );
    if let Some(system) = render_system(system) {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), turns_json(turns));
    sampling(body, &mut out);
    if let Some(stops) = stop_sequences(field(body, "stop"))? {
        out.insert("stop_sequences".into(), stops);
    }
    tools(body, &mut out)?;
    web_search(body, &mut out);
    if let Some(config) = output_config {
        out.insert("output_config".into(), config);
    }
    if let Some(user) = user_id(body) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

/// The client's web search tool (OpenAI's, from the Responses door) as
/// Anthropic's own web search server tool: Claude searches at Anthropic,
/// and the answer's text carries what it found.
/// A number is the most searches to run (`max_uses`).
fn web_search(body: &Map<String, Value>, out: &mut Map<String, Value>) {
    let mut tool = json!({"type": "web_search_20250305", "name": "web_search"});
    match field(body, crate::wire::WEB_SEARCH) {
        Some(Value::Bool(true)) => {}
        Some(limit) if limit.as_u64().is_some() => {
            tool["max_uses"] = limit.clone();
        }
        _ => return,
    }
    match out.get_mut("tools").and_then(Value::as_array_mut) {
        Some(tools) => tools.push(tool),
        None => {
            out.insert("tools".into(), json!([tool]));
        }
    }
}

/// The thinking budget for each of OpenAI's reasoning efforts. Anthropic's
/// smallest budget is 1,024 tokens, so OpenAI's `minimal` gets that too;
/// `none` asks for no thinking.
const THINKING_BUDGETS: [(&str, u32); 5] = [
    ("minimal", 1024),
    ("low", 1024),
    ("medium", 2048),
    ("high", 4096),
    ("xhigh", 8192),
];

/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u32 = 1024;

/// `reasoning_effort` as extended thinking, for a model that can think,
/// where Anthropic's rules for thinking allow it:
/// - the budget must be below `max_tokens` (it is part of the output), so
///   it is cut to fit the limit p402 reserved, and left out below 1,024;
/// - a forced tool choice cannot be combined with thinking;
/// - after an assistant turn that called tools, Anthropic wants that turn's
///   thinking blocks back with their signatures: a history that carries
///   them (`p402_thinking`, restored from a Responses client's reasoning
///   items) keeps thinking on, one that does not rules it out;
/// - sampling knobs are refused with thinking, so they are dropped (the
///   client asked for a reasoning model, which OpenAI's also ignore them).
///
/// Where thinking cannot be had, the effort is dropped, as before.
pub fn think(body: &Map<String, Value>, out: &mut Map<String, Value>) {
    let Some(target) = field(body, "reasoning_effort")
        .and_then(Value::as_str)
        .and_then(|effort| THINKING_BUDGETS.iter().find(|(name, _)| *name == effort))
        .map(|(_, budget)| *budget)
    else {
        return;
    };
    let Some(max_tokens) = out.get("max_tokens").and_then(Value::as_u64) else {
        return;
    };
    let budget = u64::from(target).min(max_tokens.saturating_sub(1));
    if budget < u64::from(MIN_THINKING_BUDGET) {
        return;
    }
    let forced = out
        .get("tool_choice")
        .and_then(|choice| choice.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|kind| kind == "any" || kind == "tool");
    // A tool-calling turn must bring its thinking back; one whose thinking
    // the client did not keep rules thinking out.
    let unsigned_tool_turn = out
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|turns| {
            turns.iter().any(|turn| {
                let blocks = turn.get("content").and_then(Value::as_array);
                turn.get("role").and_then(Value::as_str) == Some("assistant")
                    && blocks.is_some_and(|blocks| {
                        blocks.iter().any(|b| block_type(b) == "tool_use")
                            && !blocks
                                .iter()
                                .any(|b| matches!(block_type(b), "thinking" | "redacted_thinking"))
                    })
            })
        });
    if forced || unsigned_tool_turn {
        return;
    }
    for knob in ["temperature", "top_p", "top_k"] {
        out.remove(knob);
    }
    out.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": budget}),
    );
}

/// Fields whose meaning would be lost by dropping them.
fn refuse_untranslatable(body: &Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = field(body, "n") {
        if n.as_u64() != Some(1) {
            return Err(TranslateError::UnsupportedParameter(
                "`n` must be 1 or absent: Anthropic returns a single choice per request".into(),
            ));
        }
    }
    if field(body, "functions").is_some() || field(body, "function_call").is_some() {
        return Err(TranslateError::UnsupportedParameter("the deprecated `functions` and `function_call` cannot be sent to Anthropic; use `tools` and `tool_choice`".into()));
    }
    Ok(())
}

fn max_tokens(body: &Map<String, Value>, default: u32) -> Result<u32, TranslateError> {
    // `max_completion_tokens` is OpenAI's current name and wins over the old one.
    let Some(limit) = field(body, "max_completion_tokens").or_else(|| field(body, "max_tokens"))
    else {
        return Ok(default);
    };
    limit
        .as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            TranslateError::MaxTokens(
                "`max_completion_tokens` / `max_tokens` must be a positive integer".into(),
            )
        })
}

/// `temperature` and `top_p`, adjusted to what Claude models accept.
fn sampling(body: &Map<String, Value>, out: &mut Map<String, Value>) {
    let temperature = field(body, "temperature");
    if let Some(t) = temperature {
        let t = match t.as_f64() {
            Some(t) => Value::from(t.clamp(0.0, 1.0)),
            // Not a number: Anthropic's own 400 says so better than a guess.
            None => t.clone(),
        };
        out.insert("temperature".into(), t);
    }
    if let (None, Some(top_p)) = (temperature, field(body, "top_p")) {
        out.insert("top_p".into(), top_p.clone());
    }
}

/// OpenAI's `stop` is a string or an array; Anthropic takes an array.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match stop {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err(TranslateError::Stop(
            "`stop` must be a string or an array of strings".into(),
        )),
    }
}

/// `metadata.user_id` is Anthropic's opaque end-user id, like OpenAI's
/// `user` (and its successor `safety_identifier`).
fn user_id(body: &Map<String, Value>) -> Option<&str> {
    ["user", "safety_identifier"]
        .iter()
        .filter_map(|key| field(body, key).and_then(Value::as_str))
        .find(|id| !id.is_empty())
}

/// The conversation in Anthropic's shape: the system prompt apart, and turns
/// that alternate between user and assistant.
struct Conversation {
    /// Text blocks of every system and developer message, in order.
    system: Vec<Value>,
    turns: Vec<Turn>,
}

/// One Anthropic message: consecutive OpenAI messages of the same role end
/// up here together, because Anthropic requires the roles to alternate.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

impl Conversation {
    fn of(messages: &[Value]) -> Result<Self, TranslateError> {
        let mut conversation = Conversation {
            system: Vec::new(),
            turns: Vec::new(),
        };
        for (i, message) in messages.iter().enumerate() {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (turn_role, mut blocks) = match role {
                "system" | "developer" => (None, system_blocks(message, i)?),
                "user" => (Some("user"), content_blocks(message.get("content"), i)?),
                "assistant" => (Some("assistant"), assistant_blocks(message, i)?),
                // Anthropic carries tool results inside the user's turn.
                "tool" => (Some("user"), vec![tool_result(message, i)?]),
                other => {
                    return Err(TranslateError::Messages(format!(
                            "messages[{i}] has role `{other}`; Anthropic takes system, developer, user, assistant and tool messages"
                        )))
                }
            };
            mark_cache_point(message, &mut blocks);
            match turn_role {
                None => conversation.system.append(&mut blocks),
                Some(role) => conversation.push(role, blocks),
            }
        }
        if conversation.turns.is_empty() {
            return Err(TranslateError::Messages("Anthropic needs at least one non-empty user or assistant message besides the system prompt".into()));
        }
        Ok(conversation)
    }

    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        // An empty message would be refused, and carries nothing.
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => self.turns.push(Turn { role, blocks }),
        }
    }
}

fn turns_json(turns: Vec<Turn>) -> Value {
    turns
        .into_iter()
        .map(|mut turn| {
            // Anthropic wants a turn's tool results ahead of any other block;
            // the sort is stable, so each group keeps its order.
            turn.blocks.sort_by_key(|b| block_type(b) != "tool_result");
            json!({ "role": turn.role, "content": turn.blocks })
        })
        .collect()
}

/// A plain string unless a block carries `cache_control`, which only the
/// array form can hold.
fn render_system(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(Value::Array(blocks));
    }
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Some(Value::from(texts.join("\n\n")))
}

fn system_blocks(message: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let blocks = content_blocks(message.get("content"), i)?;
    if blocks.iter().any(|b| block_type(b) != "text") {
        return Err(TranslateError::UnsupportedContent(format!("messages[{i}] is a system message with non-text content; Anthropic's system prompt holds text only")));
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = content_blocks(message.get("content"), i)?;
    // The turn's own signed thinking, brought back by the client (from a
    // reasoning item's encrypted content): first, as Anthropic wrote it.
    if let Some(thinking) = message.get(super::THINKING).and_then(Value::as_array) {
        let signed = thinking
            .iter()
            .filter(|b| matches!(block_type(b), "thinking" | "redacted_thinking"))
            .cloned();
        blocks.splice(0..0, signed);
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use_block(call, i, j)?);
            }
        }
        Some(_) => {
            return Err(TranslateError::Messages(format!(
                "messages[{i}].tool_calls must be an array"
            )))
        }
    }
    Ok(blocks)
}

/// The `output_config` a `response_format` asks for, if any; `json_object`
/// instead adds an instruction to the system prompt (see the adapter's docs
/// in `mod.rs`).
fn response_format(
    format: Option<&Value>,
    system: &mut Vec<Value>,
) -> Result<Option<Value>, TranslateError> {
    let Some(format) = format else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => {
            system.push(json!({ "type": "text", "text": JSON_OBJECT_INSTRUCTION }));
            Ok(None)
        }
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    TranslateError::ResponseFormat(
                        "`response_format.json_schema.schema` must be a JSON Schema object".into(),
                    )
                })?;
            Ok(Some(
                json!({ "format": { "type": "json_schema", "schema": schema } }),
            ))
        }
        _ => Err(TranslateError::ResponseFormat(
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::anthropic::test_support::{refused, text, translated, user, DEFAULT};
    use crate::wire::USER_AGENT;
    use futures_util::FutureExt;
    use http::{header, Method};

    #[test]
    fn plain_text_request() {
        let body = translated(json!({"model": "auto", "messages": [user("hi")]}));
        assert_eq!(
            body,
            json!({
                "model": "claude-test",
                "max_tokens": DEFAULT,
                "messages": [{"role": "user", "content": [text("hi")]}],
            })
        );
    }

    #[test]
    fn system_and_developer_messages_become_the_system_string() {
        let body = translated(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        ]}));
        assert_eq!(body["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [text("hi")]}])
        );
    }

    #[test]
    fn cached_system_parts_keep_block_form_and_cache_control() {
        let ephemeral = json!({"type": "ephemeral"});
        let body = translated(json!({"messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Long manual.", "cache_control": ephemeral},
            ]},
            {"role": "system", "content": "Short rule."},
            user("hi"),
        ]}));
        assert_eq!(
            body["system"],
            json!([
                {"type": "text", "text": "Long manual.", "cache_control": {"type": "ephemeral"}},
                text("Short rule."),
            ])
        );
    }

    #[test]
    fn system_messages_refuse_images() {
        let error = refused(json!({"messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
            user("hi"),
        ]}));
        assert_eq!(error.code, "unsupported_content");
    }

    #[test]
    fn consecutive_same_role_messages_are_merged() {
        let body = translated(json!({"messages": [
            user("one"),
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": ""},
            user("five"),
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("one"), text("two")]},
                {"role": "assistant", "content": [text("three"), text("four")]},
                {"role": "user", "content": [text("five")]},
            ])
        );
    }

    #[test]
    fn images_from_data_and_http_urls() {
        let body = translated(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"},
             "cache_control": {"type": "ephemeral"}},
        ]}]}));
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                text("Compare these."),
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"},
                 "cache_control": {"type": "ephemeral"}},
            ])
        );
    }

    #[test]
    fn unusable_images_are_refused() {
        for url in [
            "data:image/png,rawbytes",
            "data:;base64,AAAA",
            "ftp://example.test/a.png",
            "data:image/png;base64",
        ] {
            let error = refused(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
            ]}]}));
            assert_eq!(error.code, "invalid_image", "{url}");
        }
    }

    #[test]
    fn other_content_parts_are_refused() {
        let error = refused(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ]}]}));
        assert_eq!(error.code, "unsupported_content");
        assert!(error.message.contains("input_audio"), "{}", error.message);
    }

    #[test]
    fn message_level_cache_control_marks_the_last_block() {
        let body = translated(json!({"messages": [
            {"role": "user", "content": "Long document.", "cache_control": {"type": "ephemeral"}},
        ]}));
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"type": "text", "text": "Long document.", "cache_control": {"type": "ephemeral"}}])
        );
    }

    #[test]
    fn stop_sequences_from_string_or_array() {
        let one = translated(json!({"messages": [user("hi")], "stop": "END"}));
        assert_eq!(one["stop_sequences"], json!(["END"]));
        let many = translated(json!({"messages": [user("hi")], "stop": ["a", "b"]}));
        assert_eq!(many["stop_sequences"], json!(["a", "b"]));
        let none = translated(json!({"messages": [user("hi")], "stop": null}));
        assert!(none.get("stop_sequences").is_none());
        refused(json!({"messages": [user("hi")], "stop": [1]}));
    }

    #[test]
    fn max_tokens_from_either_name_or_the_default() {
        let max = |body: Value| translated(body)["max_tokens"].clone();
        assert_eq!(max(json!({"messages": [user("hi")]})), DEFAULT);
        assert_eq!(max(json!({"messages": [user("hi")], "max_tokens": 50})), 50);
        assert_eq!(
            max(json!({"messages": [user("hi")], "max_tokens": 50, "max_completion_tokens": 70})),
            70
        );
        let error = refused(json!({"messages": [user("hi")], "max_tokens": 0}));
        assert_eq!(error.code, "invalid_max_tokens");
    }

    #[test]
    fn sampling_fits_claude_and_openai_only_fields_are_dropped() {
        let body = translated(json!({
            "model": "gpt-4o", "messages": [user("hi")], "n": 1,
            "temperature": 1.6, "top_p": 0.5, "seed": 7, "logprobs": true, "top_logprobs": 2,
            "frequency_penalty": 0.1, "presence_penalty": 0.1, "logit_bias": {"1": 2},
            "stream_options": {"include_usage": true}, "store": true, "reasoning_effort": "low",
        }));
        assert_eq!(
            body,
            json!({
                "model": "claude-test", "max_tokens": DEFAULT,
                "messages": [{"role": "user", "content": [text("hi")]}],
                "temperature": 1.0,
            })
        );
        let top_p = translated(json!({"messages": [user("hi")], "top_p": 0.5}));
        assert_eq!(top_p["top_p"], 0.5);
        let error = refused(json!({"messages": [user("hi")], "n": 2}));
        assert_eq!(error.code, "unsupported_parameter");
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget_where_anthropic_allows_it() {
        let thought = |body: Value| {
            let body = body.as_object().cloned().expect("object");
            let Value::Object(mut out) = translated(Value::Object(body.clone())) else {
                panic!("an object");
            };
            think(&body, &mut out);
            Value::Object(out)
        };
        let ask = |effort: &str, max_tokens: u32| {
            json!({"messages": [user("hi")], "reasoning_effort": effort,
                "max_tokens": max_tokens, "temperature": 0.3})
        };
        let budget = |body: Value| thought(body)["thinking"]["budget_tokens"].clone();
        assert_eq!(budget(ask("low", 8000)), 1024);
        assert_eq!(budget(ask("medium", 8000)), 2048);
        assert_eq!(budget(ask("high", 8000)), 4096);
        assert_eq!(budget(ask("xhigh", 16000)), 8192);
        // Cut to fit below max_tokens, and left out where it cannot fit.
        assert_eq!(budget(ask("high", 3000)), 2999);
        assert_eq!(budget(ask("low", 1024)), Value::Null);
        assert_eq!(budget(ask("none", 8000)), Value::Null);
        // Sampling knobs go with thinking, and stay without it.
        let body = thought(ask("high", 8000));
        assert_eq!(body["thinking"]["type"], "enabled");
        assert!(body.get("temperature").is_none(), "{body}");
        assert_eq!(thought(ask("none", 8000))["temperature"], 0.3);
        // Not with a forced tool, nor after a tool call it has no thinking for.
        let tool = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let mut forced = ask("high", 8000);
        forced["tools"] = tool.clone();
        forced["tool_choice"] = json!("required");
        assert_eq!(budget(forced.clone()), Value::Null);
        forced["tool_choice"] = json!("auto");
        assert_eq!(budget(forced), 4096);
        let after_a_call = json!({"reasoning_effort": "high", "max_tokens": 8000, "tools": tool,
            "messages": [user("hi"),
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}]});
        assert_eq!(budget(after_a_call), Value::Null);
    }

    #[test]
    fn json_schema_uses_structured_outputs() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"], "additionalProperties": false});
        let body = translated(json!({"messages": [user("hi")], "response_format": {
            "type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema},
        }}));
        assert_eq!(
            body["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        assert!(body.get("system").is_none());
        let error = refused(json!({"messages": [user("hi")], "response_format": {
            "type": "json_schema", "json_schema": {"name": "person"},
        }}));
        assert_eq!(error.code, "invalid_response_format");
    }

    #[test]
    fn json_object_is_a_system_instruction() {
        let body = translated(json!({"messages": [
            {"role": "system", "content": "Extract the name."}, user("I am Ada."),
        ], "response_format": {"type": "json_object"}}));
        assert_eq!(
            body["system"],
            format!("Extract the name.\n\n{JSON_OBJECT_INSTRUCTION}")
        );
        assert!(body.get("output_config").is_none());
        let plain =
            translated(json!({"messages": [user("hi")], "response_format": {"type": "text"}}));
        assert!(plain.get("system").is_none());
        refused(json!({"messages": [user("hi")], "response_format": {"type": "yaml"}}));
    }

    #[test]
    fn user_and_stream_are_carried() {
        let body = translate_request(
            json!({"messages": [user("hi")], "user": "user-42", "stream": true})
                .as_object()
                .expect("object"),
            "claude-test",
            DEFAULT,
            true,
        )
        .expect("translated");
        assert_eq!(body["metadata"], json!({"user_id": "user-42"}));
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn a_conversation_needs_more_than_a_system_prompt() {
        let error = refused(json!({"messages": [{"role": "system", "content": "Be brief."}]}));
        assert_eq!(error.code, "invalid_messages");
        let error =
            refused(json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert!(error.message.contains("function"), "{}", error.message);
    }

    #[test]
    fn request_carries_anthropic_headers_and_key() {
        let config = crate::config::parse("t", "").expect("config");
        let catalog =
            crate::catalog::Catalog::build(&config, |_| Some("sk-ant-provider".to_string()));
        let provider = catalog.provider("anthropic").expect("anthropic");
        let model = catalog.find("claude-sonnet-5-5").expect("model").clone();
        let chat = crate::wire::request::parse(
            br#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"p402":{"mode":"cost"}}"#,
            &http::HeaderMap::new(),
        )
        .expect("request");
        let candidate = Candidate {
            provider: provider.clone(),
            upstream_model: "claude-sonnet-5-5".to_string(),
            model: Some(model),
            expected_cost: None,
        };
        let req = build_request(provider, &candidate, &chat).expect("built");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "https://api.anthropic.com/v1/messages");
        let headers = req.headers();
        assert_eq!(headers["x-api-key"], "sk-ant-provider");
        assert!(headers["x-api-key"].is_sensitive());
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::ACCEPT], "application/json");
        assert_eq!(headers[header::USER_AGENT], USER_AGENT);
        assert!(headers.get(header::AUTHORIZATION).is_none());
        let body: Value = serde_json::from_slice(
            &http_body_util::BodyExt::collect(req.into_body())
                .now_or_never()
                .expect("ready")
                .expect("body")
                .to_bytes(),
        )
        .expect("json");
        assert_eq!(body["model"], "claude-sonnet-5-5");
        // The catalog's 128k maximum, capped for an answer that is not streamed.
        assert_eq!(body["max_tokens"], NON_STREAMED_MAX_TOKENS);
        assert!(body.get("p402").is_none());
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn default_output_limit_follows_the_model_and_streaming() {
        let config = crate::config::parse("t", "").expect("config");
        let catalog = crate::catalog::Catalog::build(&config, |_| None);
        let model = catalog.find("claude-haiku-4-5").expect("model");
        assert_eq!(default_max_tokens(Some(model), true), 64_000);
        assert_eq!(
            default_max_tokens(Some(model), false),
            NON_STREAMED_MAX_TOKENS
        );
        assert_eq!(default_max_tokens(None, true), FALLBACK_MAX_TOKENS);
    }
}
