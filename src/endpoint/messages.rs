//! The Anthropic Messages door (`/v1/messages`): what Claude Code and the
//! anthropic SDKs send when `ANTHROPIC_BASE_URL` points at p402.
//!
//! A request keeps its own body, forwarded as it is to providers that speak
//! Messages. It is also read into the internal (Chat Completions) request,
//! which the stages route, count and charge by; when everything it says
//! has a Chat Completions equivalent it may be served by any provider, and
//! the answer is translated back. Whatever only Messages can say (extended
//! thinking and its signatures, server tools, documents, `top_k`, fields
//! p402 does not know) pins it to Anthropic-speaking providers: nothing is
//! dropped on the way.
//!
//! The figures go in `x-p402-*` headers only, since Anthropic's clients
//! validate bodies; a stream ends with them in an SSE comment line.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::RenderError;
use crate::money::metadata::Metadata;
use crate::server::body::Body;
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::wire::request::{ChatRequest, Dialect, ParseError};
use crate::wire::Answer;

/// The request headers that belong to the Messages API and go upstream
/// with the body.
const API_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The top-level fields whose Chat Completions equivalent says all they do.
const EXACT_FIELDS: [&str; 11] = [
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
];

/// The top-level fields that are said as hints or left out without
/// changing what the answer looks like: thinking and `output_config.effort`
/// become a reasoning effort; context editing, `top_k`, the service tier
/// and prompt-cache marks have no equivalent and need none. Any other
/// field keeps the request on providers that speak Messages.
const APPROXIMATE_FIELDS: [&str; 6] = [
    "thinking",
    "output_config",
    "context_management",
    "top_k",
    "service_tier",
    "cache_control",
];

pub fn parse(bytes: &[u8], headers: &HeaderMap) -> Result<ChatRequest, ParseError> {
    let (body, options) = super::native_body(bytes)?;
    match body.get("max_tokens") {
        Some(n) if n.as_u64().is_some_and(|n| n > 0) => {}
        _ => {
            return Err(ParseError::Field(
                "`max_tokens` is required: a positive integer".into(),
            ))
        }
    }
    match body.get("messages") {
        None => return Err(ParseError::NoMessages),
        Some(Value::Array(messages)) if !messages.is_empty() => {}
        Some(_) => {
            return Err(ParseError::Messages(
                "`messages` must be a non-empty array".into(),
            ))
        }
    }
    let mut translation = Translation::default();
    let chat = translation.request(&body);
    super::native_request(
        body,
        chat,
        options,
        headers,
        Dialect::Messages,
        &API_HEADERS,
        translation.loss,
    )
}

/// A Messages body as a Chat Completions one, for counting its tokens:
/// `count_tokens` bodies carry no `max_tokens`.
pub fn as_chat_body(body: &Map<String, Value>) -> Map<String, Value> {
    Translation::default().request(body)
}

/// A Messages body read into a Chat Completions one. It never fails: what
/// it cannot say is noted in `loss`, and the body itself still goes as it
/// came to providers that speak Messages.
#[derive(Default)]
struct Translation {
    loss: super::Loss,
}

impl Translation {
    fn request(&mut self, body: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for key in body.keys() {
            if APPROXIMATE_FIELDS.contains(&key.as_str()) {
                self.loss.approximate();
            } else if !EXACT_FIELDS.contains(&key.as_str()) {
                self.loss.untranslatable(format!("`{key}`"));
            }
        }
        for key in ["model", "max_tokens", "stream", "temperature", "top_p"] {
            if let Some(value) = body.get(key) {
                out.insert(key.into(), value.clone());
            }
        }
        if let Some(stop) = body.get("stop_sequences") {
            out.insert("stop".into(), stop.clone());
        }
        if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")) {
            out.insert("user".into(), user.clone());
        }
        if let Some(effort) = reasoning_effort(body) {
            out.insert("reasoning_effort".into(), Value::from(effort));
        }
        let mut messages = Vec::new();
        if let Some(system) = body.get("system") {
            messages.push(json!({"role": "system", "content": self.text_of(system, "`system`")}));
        }
        for (i, message) in body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.message(message, i, &mut messages);
        }
        out.insert("messages".into(), Value::Array(messages));
        if let Some(tools) = body.get("tools").and_then(Value::as_array) {
            let tools: Vec<Value> = tools
                .iter()
                .enumerate()
                .filter_map(|(i, tool)| self.tool(tool, i))
                .collect();
            if !tools.is_empty() {
                out.insert("tools".into(), Value::Array(tools));
            }
        }
        if let Some(choice) = body.get("tool_choice") {
            self.tool_choice(choice, &mut out);
        }
        out
    }

    /// The text of a string or of text blocks (their `cache_control` marks
    /// are hints); any other block has no place in a text.
    fn text_of(&mut self, content: &Value, at: &str) -> String {
        match content {
            Value::String(text) => text.clone(),
            Value::Array(blocks) => {
                let mut text = String::new();
                for (j, block) in blocks.iter().enumerate() {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(block["text"].as_str().unwrap_or_default());
                        }
                        other => self.loss.untranslatable(format!(
                            "{at}[{j}] (a `{}` block)",
                            other.unwrap_or("untyped")
                        )),
                    }
                }
                text
            }
            _ => {
                self.loss
                    .untranslatable(format!("{at} (neither a string nor blocks)"));
                String::new()
            }
        }
    }

    fn message(&mut self, message: &Value, i: usize, out: &mut Vec<Value>) {
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            // Claude Code sends its environment and reminders as system
            // messages between the turns for current models: they stay
            // where they are, as Chat Completions system messages.
            Some("system" | "developer") => {
                let text = self.text_of(
                    message.get("content").unwrap_or(&Value::Null),
                    &format!("messages[{i}].content"),
                );
                out.push(json!({"role": "system", "content": text}));
                return;
            }
            other => {
                self.loss.untranslatable(format!(
                    "messages[{i}].role (`{}`)",
                    other.unwrap_or("missing")
                ));
                return;
            }
        };
        let content = match message.get("content") {
            Some(Value::String(text)) => {
                out.push(json!({"role": role, "content": text}));
                return;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => {
                self.loss.untranslatable(format!(
                    "messages[{i}].content (neither a string nor blocks)"
                ));
                return;
            }
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        for (j, block) in content.iter().enumerate() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => parts.push(json!({"type": "text", "text": block["text"]})),
                Some("image") => match image_url(&block["source"]) {
                    Some(url) => {
                        parts.push(json!({"type": "image_url", "image_url": {"url": url}}))
                    }
                    None => self
                        .loss
                        .untranslatable(format!("messages[{i}].content[{j}].source")),
                },
                Some("tool_use") if role == "assistant" => {
                    let arguments = serde_json::to_string(&block["input"]).unwrap_or_default();
                    calls.push(json!({"id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": arguments}}));
                }
                Some("tool_result") if role == "user" => {
                    let mut text = match block.get("content") {
                        None => String::new(),
                        Some(content) => {
                            self.text_of(content, &format!("messages[{i}].content[{j}].content"))
                        }
                    };
                    // Chat Completions has no error flag on a tool's
                    // result: the text says it instead.
                    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                        self.loss.approximate();
                        text.insert_str(0, "Error: ");
                    }
                    out.push(json!({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}));
                }
                // An earlier answer's thinking: another model cannot read
                // it back, as a new model's first turn never has.
                Some("thinking" | "redacted_thinking") if role == "assistant" => {
                    self.loss.approximate()
                }
                // Documents, server tools' blocks, search results: only
                // Messages can carry them.
                other => self.loss.untranslatable(format!(
                    "messages[{i}].content[{j}] (a `{}` block)",
                    other.unwrap_or("untyped")
                )),
            }
        }
        if role == "assistant" {
            let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            let mut message = json!({"role": "assistant", "content": text.join("")});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            out.push(message);
        } else if !parts.is_empty() {
            out.push(json!({"role": "user", "content": parts}));
        }
    }

    fn tool(&mut self, tool: &Value, i: usize) -> Option<Value> {
        match tool.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            // Anthropic's web search runs at Anthropic; another provider
            // answers without it, and the answer says so.
            Some(kind) if kind.starts_with("web_search") => {
                self.loss.dropped("web_search");
                return None;
            }
            // Code execution, bash, text editor, computer use, web fetch:
            // tools whose schema and runner are Anthropic's.
            Some(kind) => {
                self.loss
                    .untranslatable(format!("tools[{i}] (type `{kind}`)"));
                return None;
            }
        }
        let mut function = json!({"name": tool["name"], "parameters": tool["input_schema"]});
        if let Some(description) = tool.get("description") {
            function["description"] = description.clone();
        }
        Some(json!({"type": "function", "function": function}))
    }

    fn tool_choice(&mut self, choice: &Value, out: &mut Map<String, Value>) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            other => {
                self.loss.untranslatable(format!(
                    "tool_choice (type `{}`)",
                    other.unwrap_or("missing")
                ));
                return;
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
}

/// The reasoning effort a body asks of Claude, as OpenAI names efforts:
/// `output_config.effort` where it is set (Anthropic's `max` is OpenAI's
/// `xhigh`), else one read from the thinking budget; none when thinking is
/// off and no effort is named.
fn reasoning_effort(body: &Map<String, Value>) -> Option<&'static str> {
    let named = body
        .get("output_config")
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str);
    if let Some(effort) = named {
        return Some(match effort {
            "low" => "low",
            "medium" => "medium",
            "high" => "high",
            "max" | "xhigh" => "xhigh",
            _ => "medium",
        });
    }
    let thinking = body.get("thinking")?;
    match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => Some(
            match thinking.get("budget_tokens").and_then(Value::as_u64) {
                Some(0..=1024) => "low",
                Some(1025..=4096) | None => "medium",
                Some(_) => "high",
            },
        ),
        Some("adaptive") => Some("medium"),
        _ => None,
    }
}

/// An image source as the URL Chat Completions takes.
fn image_url(source: &Value) -> Option<String> {
    match source.get("type").and_then(Value::as_str)? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source.get("media_type")?.as_str()?,
            source.get("data")?.as_str()?
        )),
        "url" => Some(source.get("url")?.as_str()?.to_string()),
        _ => None,
    }
}

/// A whole answer as a Messages `message`: as the provider sent it when it
/// speaks Messages, else translated from the `chat.completion`.
pub fn answer(answer: Answer, metadata: &Metadata) -> Result<Bytes, RenderError> {
    let mut completion = match answer {
        Answer::Native { bytes, .. } => return Ok(bytes),
        Answer::Tree(tree) => tree,
        Answer::AsItCame { bytes, .. } => serde_json::from_slice(&bytes)?,
    };
    if let Some(model) = &metadata.model {
        completion["model"] = Value::from(model.as_str());
    }
    Ok(Bytes::from(serde_json::to_vec(&message(&completion))?))
}

fn message(completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let said = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = said.get("content").and_then(Value::as_str) {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for call in said
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str);
        let input: Value = arguments
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"],
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": input}));
    }
    let usage = &completion["usage"];
    json!({
        "id": message_id(&completion["id"]),
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage["prompt_tokens"].as_u64().unwrap_or(0),
            "output_tokens": usage["completion_tokens"].as_u64().unwrap_or(0),
        },
    })
}

fn message_id(id: &Value) -> String {
    match id.as_str() {
        Some(id) => super::dialect_id("msg_", id),
        None => format!("msg_{}", RequestId::new().as_str()),
    }
}

fn stop_reason(finish: Option<&Value>) -> Value {
    match finish.and_then(Value::as_str) {
        Some("length") => json!("max_tokens"),
        Some("tool_calls" | "function_call") => json!("tool_use"),
        Some("content_filter") => json!("refusal"),
        Some(_) => json!("end_turn"),
        None => Value::Null,
    }
}

/// A Messages stream: the provider's own events as they came, or events
/// built from Chat Completions chunks.
pub struct Stream {
    /// The catalog id of the model serving the stream.
    model: Option<Value>,
    started: bool,
    /// The block open now: its index, and the tool call it is for.
    open: Option<(usize, Option<u64>)>,
    blocks: usize,
    /// Chat tool-call index to its block.
    calls: HashMap<u64, usize>,
    stop_reason: Value,
    input_tokens: u64,
    output_tokens: u64,
}

impl Stream {
    pub fn new(model: Option<&str>) -> Self {
        Stream {
            model: model.map(Value::from),
            started: false,
            open: None,
            blocks: 0,
            calls: HashMap::new(),
            stop_reason: Value::Null,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// The events for one Chat Completions chunk.
    pub fn chunk(&mut self, chunk: Value) -> Option<Bytes> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(event(
                "message_start",
                &json!({"type": "message_start", "message": {
                "id": message_id(&chunk["id"]), "type": "message", "role": "assistant",
                "model": self.model.as_ref().unwrap_or(&chunk["model"]), "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
            self.output_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let delta = &choice["delta"];
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                if !text.is_empty() {
                    if !matches!(self.open, Some((_, None))) {
                        self.close(&mut out);
                        self.start(&mut out, None, json!({"type": "text", "text": ""}));
                    }
                    let index = self.open.map_or(0, |(i, _)| i);
                    out.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta",
                        "index": index, "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !self.calls.contains_key(&n) {
                    self.close(&mut out);
                    let block = json!({"type": "tool_use", "id": call["id"],
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": {}});
                    self.start(&mut out, Some(n), block);
                }
                let index = self.calls.get(&n).copied().unwrap_or(0);
                if let Some(part) = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    out.push(event("content_block_delta", &json!({"type": "content_block_delta",
                        "index": index, "delta": {"type": "input_json_delta", "partial_json": part}})));
                }
            }
            if let Some(finish) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                self.stop_reason = stop_reason(Some(finish));
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out.concat()))
    }

    fn start(&mut self, out: &mut Vec<Bytes>, call: Option<u64>, block: Value) {
        let index = self.blocks;
        self.blocks += 1;
        if let Some(n) = call {
            self.calls.insert(n, index);
        }
        self.open = Some((index, call));
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// The end: for a translated stream its last events, then the figures
    /// in a comment line (which SSE clients ignore).
    pub fn end(&mut self, metadata: &Metadata) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.started {
            self.close(&mut out);
            out.push(event(
                "message_delta",
                &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
            ));
            out.push(event("message_stop", &json!({"type": "message_stop"})));
        }
        let figures = serde_json::to_string(metadata).unwrap_or_default();
        out.push(Bytes::from(format!(": p402_metadata {figures}\n\n")));
        out
    }
}

/// One SSE event with its name, as Messages streams write them.
pub fn event(name: &str, data: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The `error.type` Anthropic's clients expect for each kind of failure.
fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::MethodNotAllowed
        | ErrorKind::RequestTimeout
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::Misdirected => "invalid_request_error",
        ErrorKind::Unauthorized => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::BudgetExceeded => "billing_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::NoProvider | ErrorKind::Unavailable | ErrorKind::Overloaded => {
            "overloaded_error"
        }
        ErrorKind::UpstreamFailed | ErrorKind::UpstreamTimeout | ErrorKind::Internal => "api_error",
    }
}

/// p402's error in Anthropic's shape: `{"type": "error", "error": {...},
/// "request_id"}`, with p402's code and figures kept beside the type.
pub fn error_body(error: &ApiError, request_id: &RequestId) -> Value {
    let mut inner =
        json!({"type": error_type(error.kind), "message": error.message, "code": error.code});
    if let (Some(extra), Some(object)) = (&error.extra, inner.as_object_mut()) {
        for (key, value) in extra.iter() {
            object.insert(key.clone(), value.clone());
        }
    }
    json!({"type": "error", "error": inner, "request_id": request_id.as_str()})
}

pub fn error(error: &ApiError, request_id: &RequestId) -> Response<Body> {
    let body = Bytes::from(error_body(error, request_id).to_string());
    error.response(body, request_id)
}

/// A provider's refusal, in OpenAI's error shape, restated in Anthropic's.
pub fn refusal(status: StatusCode, body: &[u8]) -> Bytes {
    let said: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = said
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the provider refused the request");
    let kind = match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::InvalidRequest,
    };
    Bytes::from(
        json!({"type": "error", "error": {"type": error_type(kind), "message": message}})
            .to_string(),
    )
}
