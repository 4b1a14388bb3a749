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
//! - `thinking` and `redacted_thinking` blocks are left out of the answer:
//!   p402 never asks for thinking, and a thinking block can only be sent back
//!   with its signature, which OpenAI's format has no place for.
//! - `temperature` is clamped to Anthropic's 0..=1 (OpenAI allows 0..=2), and
//!   `top_p` is dropped when `temperature` is set, since current Claude models
//!   refuse both together. A dropped knob beats a 400 for a request the
//!   client wrote for another provider.
//! - OpenAI-only fields (`logprobs`, `seed`, penalties, `stream_options`,
//!   `reasoning_effort`, ...) are dropped; `n` above 1 and the deprecated
//!   `functions` are refused, since no translation keeps their meaning.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{future, stream, StreamExt};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{EventStream, StreamError, StreamEvent};
use crate::catalog::{Model, Provider};
use crate::error::{ApiError, ErrorKind};
use crate::request::ChatRequest;
use crate::router::Candidate;

const USER_AGENT: &str = concat!("p402/", env!("CARGO_PKG_VERSION"));

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
) -> Result<Request<Full<Bytes>>, ApiError> {
    let default = default_max_tokens(candidate.model.as_ref(), request.stream);
    let body = translate_request(
        &request.body,
        &candidate.upstream_model,
        default,
        request.stream,
    )?;
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ApiError::internal(format!("cannot serialize the upstream request: {e}")))?;

    let url = format!("{}/messages", provider.base_url);
    let accept = if request.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept)
        .header(header::USER_AGENT, USER_AGENT)
        .header("anthropic-version", API_VERSION);
    if let Some(key) = &provider.api_key {
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            ApiError::internal(format!(
                "the key of provider `{}` contains characters not allowed in a header",
                provider.name
            ))
        })?;
        value.set_sensitive(true);
        builder = builder.header("x-api-key", value);
    }
    builder
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| ApiError::internal(format!("cannot build the request to `{url}`: {e}")))
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

// ---- request ----------------------------------------------------------------

/// Translates an OpenAI Chat Completions body into an Anthropic Messages
/// body. Anything that cannot be expressed is a 400 naming the field, so the
/// client learns what to change.
pub fn translate_request(
    body: &Map<String, Value>,
    upstream_model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Value, ApiError> {
    refuse_untranslatable(body)?;
    let messages = field(body, "messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("invalid_messages", "`messages` must be an array"))?;
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

/// A body field, with `null` read as absent (as OpenAI does).
fn field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// Fields whose meaning would be lost by dropping them.
fn refuse_untranslatable(body: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(n) = field(body, "n") {
        if n.as_u64() != Some(1) {
            return Err(ApiError::invalid(
                "unsupported_parameter",
                "`n` must be 1 or absent: Anthropic returns a single choice per request",
            ));
        }
    }
    if field(body, "functions").is_some() || field(body, "function_call").is_some() {
        return Err(ApiError::invalid(
            "unsupported_parameter",
            "the deprecated `functions` and `function_call` cannot be sent to Anthropic; use `tools` and `tool_choice`",
        ));
    }
    Ok(())
}

fn max_tokens(body: &Map<String, Value>, default: u32) -> Result<u32, ApiError> {
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
            ApiError::invalid(
                "invalid_max_tokens",
                "`max_completion_tokens` / `max_tokens` must be a positive integer",
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
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match stop {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err(ApiError::invalid(
            "invalid_stop",
            "`stop` must be a string or an array of strings",
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
    fn of(messages: &[Value]) -> Result<Self, ApiError> {
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
                    return Err(ApiError::invalid(
                        "invalid_messages",
                        format!(
                            "messages[{i}] has role `{other}`; Anthropic takes system, developer, user, assistant and tool messages"
                        ),
                    ))
                }
            };
            mark_cache_point(message, &mut blocks);
            match turn_role {
                None => conversation.system.append(&mut blocks),
                Some(role) => conversation.push(role, blocks),
            }
        }
        if conversation.turns.is_empty() {
            return Err(ApiError::invalid(
                "invalid_messages",
                "Anthropic needs at least one non-empty user or assistant message besides the system prompt",
            ));
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

fn block_type(block: &Value) -> &str {
    block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
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

fn system_blocks(message: &Value, i: usize) -> Result<Vec<Value>, ApiError> {
    let blocks = content_blocks(message.get("content"), i)?;
    if blocks.iter().any(|b| block_type(b) != "text") {
        return Err(ApiError::invalid(
            "unsupported_content",
            format!("messages[{i}] is a system message with non-text content; Anthropic's system prompt holds text only"),
        ));
    }
    Ok(blocks)
}

/// The blocks of a string or an array of content parts.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                blocks.extend(part_block(part, i, j)?);
            }
            Ok(blocks)
        }
        Some(_) => Err(ApiError::invalid(
            "invalid_messages",
            format!("messages[{i}].content must be a string or an array of content parts"),
        )),
    }
}

fn part_block(part: &Value, i: usize, j: usize) -> Result<Option<Value>, ApiError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    let text_of = |key: &str| {
        part.get(key).and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid(
                "invalid_messages",
                format!("messages[{i}].content[{j}] has no string `{key}`"),
            )
        })
    };
    let block = match kind {
        "text" => text_block(text_of("text")?),
        // An assistant's earlier refusal is still what it said.
        "refusal" => text_block(text_of("refusal")?),
        "image_url" => Some(image_block(part, i, j)?),
        other => {
            return Err(ApiError::invalid(
                "unsupported_content",
                format!(
                    "messages[{i}].content[{j}] is a `{other}` part, which the Anthropic adapter cannot send; use text and image_url parts"
                ),
            ))
        }
    };
    Ok(block.map(|b| with_cache_control(b, part.get("cache_control"))))
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic refuses empty text blocks, and they carry nothing.
    (!text.is_empty()).then(|| json!({ "type": "text", "text": text }))
}

/// Copies a client's prompt-caching breakpoint onto the translated block, so
/// Anthropic caches the same prefix the client marked.
fn with_cache_control(mut block: Value, cache_control: Option<&Value>) -> Value {
    if let (Some(cc), Value::Object(map)) = (cache_control.filter(|c| !c.is_null()), &mut block) {
        map.insert("cache_control".into(), cc.clone());
    }
    block
}

/// Some clients put `cache_control` on the message rather than on a part;
/// it then marks the end of that message, i.e. its last block.
fn mark_cache_point(message: &Value, blocks: &mut [Value]) {
    let Some(cc) = message.get("cache_control").filter(|c| !c.is_null()) else {
        return;
    };
    if let Some(Value::Object(last)) = blocks.last_mut() {
        last.entry("cache_control").or_insert_with(|| cc.clone());
    }
}

/// OpenAI sends images as URLs: a `data:` URL becomes a base64 source, an
/// http(s) URL a `url` source that Anthropic fetches itself.
fn image_block(part: &Value, i: usize, j: usize) -> Result<Value, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(
            "invalid_image",
            format!("messages[{i}].content[{j}]: {why}"),
        )
    };
    let url = match part.get("image_url") {
        Some(Value::String(url)) => Some(url.as_str()),
        Some(object) => object.get("url").and_then(Value::as_str),
        None => None,
    }
    .ok_or_else(|| bad("an image_url part needs `image_url.url`"))?;
    let source = if let Some(data_url) = url.strip_prefix("data:") {
        let (meta, data) = data_url
            .split_once(',')
            .ok_or_else(|| bad("the data URL has no `,` before its data"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .and_then(|m| m.split(';').next())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                bad("only base64 data URLs with a media type (data:image/png;base64,...) can be sent to Anthropic")
            })?;
        json!({ "type": "base64", "media_type": media_type, "data": data })
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({ "type": "url", "url": url })
    } else {
        return Err(bad(
            "the image URL must be an http(s) URL or a base64 data URL",
        ));
    };
    Ok(json!({ "type": "image", "source": source }))
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = content_blocks(message.get("content"), i)?;
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use_block(call, i, j)?);
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_messages",
                format!("messages[{i}].tool_calls must be an array"),
            ))
        }
    }
    Ok(blocks)
}

fn tool_use_block(call: &Value, i: usize, j: usize) -> Result<Value, ApiError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let string = |pointer: &str| {
        call.pointer(pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_messages",
                    format!("{at} has no string `{}`", &pointer[1..].replace('/', ".")),
                )
            })
    };
    let id = string("/id")?;
    let name = string("/function/name")?;
    let input = tool_input(call.pointer("/function/arguments"), &at)?;
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

/// OpenAI carries a call's arguments as a JSON string, Anthropic as the
/// object itself; arguments that are not a JSON object cannot be sent.
fn tool_input(arguments: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let parsed = match arguments {
        None | Some(Value::Null) => return Ok(json!({})),
        // Some clients send "" for a call without arguments.
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|e| {
            ApiError::invalid(
                "invalid_tool_arguments",
                format!("{at}.function.arguments is not valid JSON ({e}); Anthropic needs the arguments as a JSON object"),
            )
        })?,
        Some(other) => other.clone(),
    };
    if parsed.is_object() {
        Ok(parsed)
    } else {
        Err(ApiError::invalid(
            "invalid_tool_arguments",
            format!("{at}.function.arguments must encode a JSON object"),
        ))
    }
}

fn tool_result(message: &Value, i: usize) -> Result<Value, ApiError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_messages",
                format!("messages[{i}] is a tool message without a string `tool_call_id`"),
            )
        })?;
    let mut block = Map::new();
    block.insert("type".into(), Value::from("tool_result"));
    block.insert("tool_use_id".into(), Value::from(id));
    let content = match message.get("content") {
        Some(Value::String(text)) => (!text.is_empty()).then(|| Value::from(text.as_str())),
        other => {
            let blocks = content_blocks(other, i)?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
    };
    if let Some(content) = content {
        block.insert("content".into(), content);
    }
    Ok(Value::Object(block))
}

/// `tools` and `tool_choice`. Without tools there is nothing to choose
/// from, so a lone `tool_choice` (often a client default) is dropped.
fn tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let definitions = match field(body, "tools") {
        None => return Ok(()),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, tool)| tool_definition(tool, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_tools",
                "`tools` must be an array",
            ))
        }
    };
    if definitions.is_empty() {
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(definitions));

    let serial = field(body, "parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match field(body, "tool_choice") {
        Some(choice) => Some(tool_choice(choice)?),
        // Anthropic puts the parallel switch on `tool_choice`, so one is
        // needed to carry it; `auto` is the default it stands for.
        None if serial => Some(json!({ "type": "auto" })),
        None => None,
    };
    if let Some(mut choice) = choice {
        // `none` takes no parallel switch: it allows no tool use at all.
        if serial && block_type(&choice) != "none" {
            if let Value::Object(map) = &mut choice {
                map.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

fn tool_definition(tool: &Value, i: usize) -> Result<Value, ApiError> {
    let kind = tool
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    let function = tool
        .get("function")
        .filter(|_| kind == "function")
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_tools",
                format!("tools[{i}] must be a `function` tool with a `function` object"),
            )
        })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_tools",
                format!("tools[{i}].function has no string `name`"),
            )
        })?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out.insert("description".into(), Value::from(description));
    }
    // Anthropic requires a schema; a function without parameters takes none.
    let schema = function
        .get("parameters")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
    out.insert("input_schema".into(), schema);
    // Anthropic's strict tool use is OpenAI's strict function calling.
    if function.get("strict") == Some(&Value::Bool(true)) {
        out.insert("strict".into(), Value::Bool(true));
    }
    if let Some(cc) = tool.get("cache_control").filter(|c| !c.is_null()) {
        out.insert("cache_control".into(), cc.clone());
    }
    Ok(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    let named = choice
        .pointer("/function/name")
        .and_then(Value::as_str)
        .filter(|_| choice.get("type").and_then(Value::as_str) == Some("function"));
    match (choice.as_str(), named) {
        (Some("auto"), _) => Ok(json!({ "type": "auto" })),
        (Some("none"), _) => Ok(json!({ "type": "none" })),
        (Some("required"), _) => Ok(json!({ "type": "any" })),
        (None, Some(name)) => Ok(json!({ "type": "tool", "name": name })),
        _ => Err(ApiError::invalid(
            "invalid_tool_choice",
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )),
    }
}

/// The `output_config` a `response_format` asks for, if any; `json_object`
/// instead adds an instruction to the system prompt (see the module docs).
fn response_format(
    format: Option<&Value>,
    system: &mut Vec<Value>,
) -> Result<Option<Value>, ApiError> {
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
                    ApiError::invalid(
                        "invalid_response_format",
                        "`response_format.json_schema.schema` must be a JSON Schema object",
                    )
                })?;
            Ok(Some(
                json!({ "format": { "type": "json_schema", "schema": schema } }),
            ))
        }
        _ => Err(ApiError::invalid(
            "invalid_response_format",
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

// ---- response ---------------------------------------------------------------

/// Translates a whole Anthropic `message` into an OpenAI `chat.completion`.
pub fn translate_response(message: &Value) -> Result<Value, ApiError> {
    let content = message
        .get("content")
        .and_then(Value::as_array)
        .filter(|_| message.get("type").and_then(Value::as_str) == Some("message"))
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::UpstreamFailed,
                "invalid_response",
                "the Anthropic answer is not a message with a `content` array",
            )
        })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block_type(block) {
            "text" => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            "tool_use" => tool_calls.push(tool_call(block)),
            // Thinking and server-side tool blocks have no OpenAI form.
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
    let mut tokens = Tokens::default();
    tokens.update(message.get("usage"));
    Ok(json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now(),
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
fn finish_reason(stop_reason: Option<&Value>) -> Value {
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Token counts as Anthropic reports them: `input` excludes the prompt-cache
/// reads and writes, which are counted apart.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
}

impl Tokens {
    /// Takes the counts a usage object carries. Anthropic's counts are
    /// running totals, so a later value replaces an earlier one.
    fn update(&mut self, usage: Option<&Value>) {
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
    }

    /// OpenAI's usage object, where `prompt_tokens` includes cached tokens.
    /// The top-level cache fields are what `openai::usage` prices cache
    /// writes from.
    fn to_openai(self) -> Value {
        let prompt = self
            .input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": { "cached_tokens": self.cache_read },
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

// ---- stream -----------------------------------------------------------------

/// Anthropic's SSE body as OpenAI chunk events.
pub fn events(body: Incoming) -> EventStream {
    translate_stream(BodyDataStream::new(body))
}

/// Translates Anthropic's SSE events one by one as they arrive; only the
/// little needed across events (ids, tool-call indices, token counts) is
/// kept.
pub fn translate_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use eventsource_stream::Eventsource;
    let events = super::checked_sse_bytes(bytes)
        .eventsource()
        .scan(StreamState::new(), |state, event| {
            let out = match event {
                Ok(event) => state.translate(&event.data),
                Err(e) => vec![Err(StreamError::Read(e.to_string()))],
            };
            future::ready(Some(out))
        })
        .flat_map(stream::iter);
    Box::pin(events)
}

type Translated = Vec<Result<StreamEvent, StreamError>>;

/// What one stream remembers between events.
struct StreamState {
    /// Message id and model from `message_start`, echoed in every chunk.
    id: Value,
    model: Value,
    created: u64,
    tokens: Tokens,
    /// Anthropic content-block index to OpenAI tool-call index: OpenAI
    /// numbers tool calls 0, 1, ... while Anthropic's blocks count text and
    /// thinking too.
    tool_calls: HashMap<u64, usize>,
}

impl StreamState {
    fn new() -> Self {
        StreamState {
            id: Value::Null,
            model: Value::Null,
            created: now(),
            tokens: Tokens::default(),
            tool_calls: HashMap::new(),
        }
    }

    fn translate(&mut self, data: &str) -> Translated {
        let data = data.trim();
        if data.is_empty() {
            return Vec::new();
        }
        let event: Value = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(e) => return vec![Err(StreamError::InvalidJson(super::not_json(&e, data)))],
        };
        let chunk = match block_type(&event) {
            "message_start" => self.message_start(&event),
            "content_block_start" => self.block_start(&event),
            "content_block_delta" => self.block_delta(&event),
            "message_delta" => self.message_delta(&event),
            "message_stop" => {
                return vec![
                    Ok(StreamEvent::Chunk(self.usage_chunk())),
                    Ok(StreamEvent::Done),
                ]
            }
            "error" => Some(stream_error(&event)),
            // ping, content_block_stop, and event types added later.
            _ => None,
        };
        chunk
            .map(|c| Ok(StreamEvent::Chunk(c)))
            .into_iter()
            .collect()
    }

    fn message_start(&mut self, event: &Value) -> Option<Value> {
        let message = event.get("message")?;
        self.id = message.get("id").cloned().unwrap_or(Value::Null);
        self.model = message.get("model").cloned().unwrap_or(Value::Null);
        self.tokens.update(message.get("usage"));
        Some(self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null))
    }

    fn block_start(&mut self, event: &Value) -> Option<Value> {
        let index = event.get("index").and_then(Value::as_u64)?;
        let block = event.get("content_block")?;
        match block_type(block) {
            "text" => self.text(block.get("text")),
            "tool_use" => {
                let call = self.tool_calls.len();
                self.tool_calls.insert(index, call);
                let delta = json!({ "tool_calls": [{
                    "index": call,
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": "",
                    },
                }]});
                Some(self.chunk(delta, Value::Null))
            }
            _ => None,
        }
    }

    fn block_delta(&mut self, event: &Value) -> Option<Value> {
        let delta = event.get("delta")?;
        match block_type(delta) {
            "text_delta" => self.text(delta.get("text")),
            "input_json_delta" => {
                let index = event.get("index").and_then(Value::as_u64)?;
                // Blocks that are not client tool calls (server tools) have
                // no entry and no OpenAI form.
                let call = *self.tool_calls.get(&index)?;
                let partial = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())?;
                let delta = json!({ "tool_calls": [{
                    "index": call,
                    "function": { "arguments": partial },
                }]});
                Some(self.chunk(delta, Value::Null))
            }
            // thinking_delta, signature_delta, citations_delta.
            _ => None,
        }
    }

    fn text(&self, text: Option<&Value>) -> Option<Value> {
        let text = text.and_then(Value::as_str).filter(|t| !t.is_empty())?;
        Some(self.chunk(json!({ "content": text }), Value::Null))
    }

    fn message_delta(&mut self, event: &Value) -> Option<Value> {
        self.tokens.update(event.get("usage"));
        let finish = finish_reason(event.pointer("/delta/stop_reason"));
        (!finish.is_null()).then(|| self.chunk(json!({}), finish))
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
    }

    /// The usage chunk OpenAI sends last when `include_usage` is on; the
    /// relay decides whether the client sees it.
    fn usage_chunk(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.tokens.to_openai(),
        })
    }
}

/// An `error` event as the `{"error": ...}` chunk the relay forwards.
fn stream_error(event: &Value) -> Value {
    let kind = event.pointer("/error/type").and_then(Value::as_str);
    let message = event
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the stream failed");
    let fault = kind.and_then(Fault::of_type).unwrap_or(Fault::Api);
    json!({ "error": fault.body(kind, message) })
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

// ---- errors -----------------------------------------------------------------

/// Maps an Anthropic error answer to p402's status and an OpenAI-style error
/// body, and says whether another candidate is worth trying.
///
/// A rejected key, permission or billing problem is p402's own provider
/// configuration failing, not the client's request: it becomes a 502, and,
/// like every 5xx, a reason to fail over. An overloaded Anthropic (529)
/// becomes 503, a status clients know.
pub fn translate_error(status: StatusCode, body: &[u8]) -> (StatusCode, Value, bool) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let fault = kind
        .and_then(Fault::of_type)
        .unwrap_or_else(|| Fault::of_status(status));
    let detail = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => describe_body(status, body),
    };
    let returned = fault.status();
    let body = json!({ "error": fault.body(kind, &detail) });
    (returned, body, super::is_retryable(returned))
}

/// What went wrong upstream, by Anthropic's error `type` (or its status
/// when the body does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    InvalidRequest,
    Authentication,
    Permission,
    Billing,
    NotFound,
    TooLarge,
    RateLimited,
    Api,
    Overloaded,
    /// Another 4xx: the request's fault, status kept.
    OtherClient(StatusCode),
}

impl Fault {
    fn of_type(kind: &str) -> Option<Self> {
        Some(match kind {
            "invalid_request_error" => Fault::InvalidRequest,
            "authentication_error" => Fault::Authentication,
            "permission_error" => Fault::Permission,
            "billing_error" => Fault::Billing,
            "not_found_error" => Fault::NotFound,
            "request_too_large" => Fault::TooLarge,
            "rate_limit_error" => Fault::RateLimited,
            "api_error" | "timeout_error" => Fault::Api,
            "overloaded_error" => Fault::Overloaded,
            _ => return None,
        })
    }

    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Fault::InvalidRequest,
            401 => Fault::Authentication,
            // Anthropic's account, not the client's: p402's own 402 means a
            // budget, so this one is never passed on.
            402 => Fault::Billing,
            403 => Fault::Permission,
            404 => Fault::NotFound,
            413 => Fault::TooLarge,
            429 => Fault::RateLimited,
            529 => Fault::Overloaded,
            405..=499 => Fault::OtherClient(status),
            _ => Fault::Api,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Fault::InvalidRequest => StatusCode::BAD_REQUEST,
            Fault::NotFound => StatusCode::NOT_FOUND,
            Fault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Fault::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Fault::OtherClient(status) => status,
            Fault::Authentication | Fault::Permission | Fault::Billing | Fault::Api => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Anthropic's type name for the fault, for bodies that do not say.
    fn default_code(self) -> &'static str {
        match self {
            Fault::NotFound => "not_found_error",
            Fault::TooLarge => "request_too_large",
            Fault::Api => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI-style error object: the `type` names p402 uses elsewhere,
    /// Anthropic's own type as `code` so nothing is lost.
    fn body(self, kind: Option<&str>, detail: &str) -> Value {
        let (type_name, code, message) = match self {
            Fault::Authentication => (
                "upstream_error",
                "upstream_authentication_error",
                format!("Anthropic rejected the API key p402 is configured with ({detail}); this is p402's configuration, not the request: check the provider's key (ANTHROPIC_API_KEY for the built-in `anthropic` provider)"),
            ),
            Fault::Permission => (
                "upstream_error",
                "upstream_permission_error",
                format!("the API key p402 is configured with may not use this Anthropic resource ({detail}); this is p402's configuration, not the request: check the key's workspace and model access"),
            ),
            Fault::Billing => (
                "upstream_error",
                "upstream_billing_error",
                format!("Anthropic refused p402's account for billing reasons ({detail}); check the account's credit and billing settings"),
            ),
            Fault::InvalidRequest | Fault::NotFound | Fault::TooLarge | Fault::OtherClient(_) => (
                "invalid_request_error",
                kind.unwrap_or(self.default_code()),
                format!("Anthropic refused the request: {detail}"),
            ),
            Fault::RateLimited => (
                "rate_limit_error",
                "rate_limit_error",
                format!("Anthropic rate limit: {detail}"),
            ),
            Fault::Overloaded => (
                "upstream_error",
                "overloaded_error",
                format!("Anthropic is overloaded: {detail}"),
            ),
            Fault::Api => (
                "upstream_error",
                kind.unwrap_or(self.default_code()),
                format!("Anthropic failed: {detail}"),
            ),
        };
        json!({ "message": message, "type": type_name, "code": code })
    }
}

/// Error bodies that are not Anthropic's JSON (a proxy's HTML page, an
/// empty 529) still say what happened.
fn describe_body(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status}: {}", truncate(text, 200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Usage;
    use futures_util::FutureExt;

    const DEFAULT: u32 = 1000;

    fn translate(body: Value) -> Result<Value, ApiError> {
        translate_request(
            body.as_object().expect("object body"),
            "claude-test",
            DEFAULT,
            false,
        )
    }

    fn translated(body: Value) -> Value {
        translate(body).expect("translated")
    }

    fn refused(body: Value) -> ApiError {
        let error = translate(body).expect_err("refused");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{error:?}");
        error
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    fn text(text: &str) -> Value {
        json!({ "type": "text", "text": text })
    }

    // ---- request ----

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

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }})
    }

    #[test]
    fn tools_become_input_schemas() {
        let body = translated(json!({"messages": [user("hi")], "tools": [
            weather_tool(),
            {"type": "function", "function": {"name": "now", "strict": true}},
        ]}));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather in a city.",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": true},
            ])
        );
        assert!(body.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_variants() {
        let cases = [
            (json!("auto"), None, json!({"type": "auto"})),
            (json!("none"), None, json!({"type": "none"})),
            (json!("required"), None, json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                None,
                json!({"type": "tool", "name": "get_weather"}),
            ),
            (
                json!("required"),
                Some(false),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                Some(false),
                json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
            ),
            // `none` takes no parallel switch.
            (json!("none"), Some(false), json!({"type": "none"})),
            (json!("auto"), Some(true), json!({"type": "auto"})),
        ];
        for (choice, parallel, expected) in cases {
            let mut body =
                json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": choice});
            if let Some(parallel) = parallel {
                body["parallel_tool_calls"] = Value::Bool(parallel);
            }
            assert_eq!(
                translated(body)["tool_choice"],
                expected,
                "{choice} {parallel:?}"
            );
        }
    }

    #[test]
    fn serial_tool_calls_without_tool_choice_use_auto() {
        let body = translated(json!({"messages": [user("hi")], "tools": [weather_tool()],
            "parallel_tool_calls": false}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choice_without_tools_is_dropped() {
        let body =
            translated(json!({"messages": [user("hi")], "tool_choice": "none", "tools": []}));
        assert!(body.get("tool_choice").is_none());
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn bad_tools_and_choices_are_refused() {
        let error = refused(
            json!({"messages": [user("hi")], "tools": [weather_tool()], "tool_choice": "any"}),
        );
        assert_eq!(error.code, "invalid_tool_choice");
        let error = refused(
            json!({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
        );
        assert_eq!(error.code, "invalid_tools");
        let error = refused(json!({"messages": [user("hi")], "functions": [{"name": "f"}]}));
        assert_eq!(error.code, "unsupported_parameter");
    }

    #[test]
    fn tool_calls_and_results_round_trip() {
        let body = translated(json!({"messages": [
            user("Weather in Paris and Oslo?"),
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "4C, snow"}]},
            user("Which is warmer?"),
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("Weather in Paris and Oslo?")]},
                {"role": "assistant", "content": [
                    text("Checking both."),
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [text("4C, snow")]},
                    text("Which is warmer?"),
                ]},
            ])
        );
    }

    #[test]
    fn tool_results_go_first_in_their_turn() {
        let body = translated(json!({"messages": [
            user("go"),
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]},
            user("(still waiting)"),
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        ]}));
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}])
        );
        assert_eq!(
            body["messages"][2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "call_1", "content": "noon"},
                text("(still waiting)"),
            ])
        );
    }

    #[test]
    fn invalid_tool_arguments_are_refused() {
        for arguments in ["{\"city\": ", "[1, 2]"] {
            let error = refused(json!({"messages": [
                user("go"),
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}},
                ]},
            ]}));
            assert_eq!(error.code, "invalid_tool_arguments", "{arguments}");
            assert!(
                error.message.contains("messages[1].tool_calls[0]"),
                "{}",
                error.message
            );
        }
        let error = refused(json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(error.code, "invalid_messages");
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
        let chat = crate::request::parse(
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

    // ---- response ----

    fn message(content: Value, stop_reason: &str, usage: Value) -> Value {
        json!({
            "id": "msg_01XYZ", "type": "message", "role": "assistant",
            "model": "claude-sonnet-5-5", "content": content,
            "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        })
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
            crate::providers::openai::usage(&answer),
            Some(Usage {
                input_tokens: 10_050,
                cached_input_tokens: 8000,
                cache_write_tokens: 2000,
                output_tokens: 30,
                reasoning_tokens: 0,
            })
        );
    }

    #[test]
    fn a_non_message_answer_is_an_upstream_failure() {
        for body in [
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
            json!({"type": "message", "content": "not an array"}),
        ] {
            let error = translate_response(&body).expect_err("not a message");
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(error.code, "invalid_response");
        }
    }

    // ---- stream ----

    /// A recorded-format stream: thinking at block 0, text at block 1 (with
    /// a multi-byte character), two tool calls at blocks 2 and 3, a ping.
    const TOOL_STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_01ABC","type":"message","role":"assistant","content":[],"model":"claude-sonnet-5-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":120,"cache_creation_input_tokens":30,"cache_read_input_tokens":400,"output_tokens":1}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two cities."}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type": "ping"}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking → "}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"both cities."}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":2}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_weather","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type": "ping"}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":" \"Oslo\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":3}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    /// Feeds `sse` to the translator in pieces of `size` bytes, which cut
    /// through field names, JSON and the UTF-8 of `→`.
    fn run(sse: &str, size: usize) -> Vec<Result<StreamEvent, StreamError>> {
        let pieces: Vec<Result<Bytes, std::io::Error>> = sse
            .as_bytes()
            .chunks(size)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        translate_stream(stream::iter(pieces))
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("an in-memory stream is always ready")
    }

    fn chunks(events: Vec<Result<StreamEvent, StreamError>>) -> (Vec<Value>, bool) {
        let mut chunks = Vec::new();
        let mut done = false;
        for event in events {
            match event.expect("no stream error") {
                StreamEvent::Chunk(chunk) => {
                    assert!(!done, "a chunk after Done: {chunk}");
                    chunks.push(chunk);
                }
                StreamEvent::Done => done = true,
            }
        }
        (chunks, done)
    }

    fn deltas(chunks: &[Value]) -> Vec<(Value, Value)> {
        chunks
            .iter()
            .filter(|c| !c["choices"].as_array().expect("choices").is_empty())
            .map(|c| {
                (
                    c["choices"][0]["delta"].clone(),
                    c["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn stream_of_text_and_two_tool_calls() {
        let (chunks, done) = chunks(run(TOOL_STREAM, TOOL_STREAM.len()));
        assert!(done);
        let null = Value::Null;
        assert_eq!(
            deltas(&chunks),
            vec![
                (json!({"role": "assistant", "content": ""}), null.clone()),
                (json!({"content": "Checking → "}), null.clone()),
                (json!({"content": "both cities."}), null.clone()),
                (
                    json!({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    null.clone()
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Par"}}]}),
                    null.clone()
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
                    null.clone()
                ),
                (
                    json!({"tool_calls": [{"index": 1, "id": "toolu_B", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    null.clone()
                ),
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\":"}}]}),
                    null.clone()
                ),
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": " \"Oslo\"}"}}]}),
                    null.clone()
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        for chunk in &chunks {
            assert_eq!(chunk["id"], "msg_01ABC");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "claude-sonnet-5-5");
            assert_eq!(chunk["created"], chunks[0]["created"]);
        }
        let usage = chunks.last().expect("usage chunk");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 550, "completion_tokens": 89, "total_tokens": 639,
                   "prompt_tokens_details": {"cached_tokens": 400},
                   "cache_creation_input_tokens": 30, "cache_read_input_tokens": 400})
        );
        assert_eq!(
            crate::providers::openai::usage(usage),
            Some(Usage {
                input_tokens: 550,
                cached_input_tokens: 400,
                cache_write_tokens: 30,
                output_tokens: 89,
                reasoning_tokens: 0,
            })
        );
    }

    #[test]
    fn streamed_tool_arguments_reassemble_per_call() {
        let (chunks, _) = chunks(run(TOOL_STREAM, 5));
        let mut arguments = [String::new(), String::new()];
        for chunk in &chunks {
            let Some(calls) = chunk.pointer("/choices/0/delta/tool_calls") else {
                continue;
            };
            let call = &calls[0];
            let index = call["index"].as_u64().expect("index") as usize;
            arguments[index].push_str(call["function"]["arguments"].as_str().expect("string"));
        }
        let parsed: Vec<Value> = arguments
            .iter()
            .map(|a| serde_json::from_str(a).expect("complete JSON"))
            .collect();
        assert_eq!(
            parsed,
            vec![json!({"city": "Paris"}), json!({"city": "Oslo"})]
        );
    }

    #[test]
    fn stream_translation_ignores_byte_boundaries_and_line_endings() {
        let strip_created = |events: Vec<Result<StreamEvent, StreamError>>| {
            let (mut chunks, done) = chunks(events);
            for chunk in &mut chunks {
                chunk["created"] = Value::Null;
            }
            (chunks, done)
        };
        let whole = strip_created(run(TOOL_STREAM, TOOL_STREAM.len()));
        assert_eq!(whole.0.len(), 11);
        for size in [1, 2, 3, 7, 13, 64, 500] {
            assert_eq!(
                strip_created(run(TOOL_STREAM, size)),
                whole,
                "pieces of {size}"
            );
        }
        let crlf = TOOL_STREAM.replace('\n', "\r\n");
        assert_eq!(strip_created(run(&crlf, 9)), whole, "CRLF");
    }

    #[test]
    fn stream_stop_reasons_map() {
        for (reason, expected) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
        ] {
            let sse = format!(
                "event: message_start\ndata: {}\n\nevent: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n",
                r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"c","usage":{"input_tokens":3,"output_tokens":1}}}"#,
                json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 2}}),
                r#"{"type":"message_stop"}"#,
            );
            let (chunks, done) = chunks(run(&sse, 4));
            assert!(done);
            assert_eq!(
                chunks[1]["choices"][0]["finish_reason"], expected,
                "{reason}"
            );
            assert_eq!(chunks[2]["usage"]["completion_tokens"], 2);
            assert_eq!(chunks[2]["usage"]["prompt_tokens"], 3);
        }
    }

    #[test]
    fn stream_error_event_becomes_an_error_chunk() {
        let sse = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_E","type":"message","role":"assistant","content":[],"model":"claude-sonnet-5-5","usage":{"input_tokens":9,"output_tokens":1}}}"#,
            "\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "\n\n",
            "event: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            "\n\n",
            "event: error\n",
            r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "\n\n",
        );
        let (chunks, done) = chunks(run(sse, 6));
        assert!(!done, "an interrupted stream has no Done");
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "Hel"}));
        let error = &chunks[2]["error"];
        assert_eq!(error["type"], "upstream_error");
        assert_eq!(error["code"], "overloaded_error");
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("Overloaded"),
            "{error}"
        );
    }

    #[test]
    fn stream_failures_are_errors() {
        let events = run("event: message_start\ndata: {not json\n\n", 8);
        assert!(
            matches!(events.as_slice(), [Err(StreamError::InvalidJson(_))]),
            "{events:?}"
        );
        let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(
                b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
            )),
            Err(std::io::Error::other("connection reset")),
        ];
        let events = translate_stream(stream::iter(pieces))
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("ready");
        match events.as_slice() {
            [Err(StreamError::Read(message))] => {
                assert!(message.contains("connection reset"), "{message}")
            }
            other => panic!("expected one read error, got {other:?}"),
        }
    }

    // ---- errors ----

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn error_types_map_to_status_and_failover() {
        let cases = [
            (
                "invalid_request_error",
                400,
                400,
                "invalid_request_error",
                false,
            ),
            ("authentication_error", 401, 502, "upstream_error", true),
            ("permission_error", 403, 502, "upstream_error", true),
            ("billing_error", 402, 502, "upstream_error", true),
            ("not_found_error", 404, 404, "invalid_request_error", false),
            (
                "request_too_large",
                413,
                413,
                "invalid_request_error",
                false,
            ),
            ("rate_limit_error", 429, 429, "rate_limit_error", true),
            ("api_error", 500, 502, "upstream_error", true),
            ("overloaded_error", 529, 503, "upstream_error", true),
        ];
        for (kind, upstream, returned, type_name, retry) in cases {
            let status = StatusCode::from_u16(upstream).expect("status");
            let (out, body, retryable) = translate_error(status, &anthropic_error(kind, "detail"));
            assert_eq!(out.as_u16(), returned, "{kind}");
            assert_eq!(retryable, retry, "{kind}");
            assert_eq!(body["error"]["type"], type_name, "{kind}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains("detail"),
                "{kind}: {body}"
            );
        }
    }

    #[test]
    fn key_problems_are_p402s_not_the_clients() {
        let (status, body, retry) = translate_error(
            StatusCode::UNAUTHORIZED,
            &anthropic_error("authentication_error", "invalid x-api-key"),
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(retry);
        assert_eq!(body["error"]["code"], "upstream_authentication_error");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("invalid x-api-key"), "{message}");
        assert!(message.contains("p402's configuration"), "{message}");
        assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
    }

    #[test]
    fn client_errors_keep_anthropics_message_and_type() {
        let (status, body, retry) = translate_error(
            StatusCode::BAD_REQUEST,
            &anthropic_error(
                "invalid_request_error",
                "messages: text content blocks must be non-empty",
            ),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!retry);
        assert_eq!(
            body,
            json!({"error": {
                "message": "Anthropic refused the request: messages: text content blocks must be non-empty",
                "type": "invalid_request_error",
                "code": "invalid_request_error",
            }})
        );
    }

    #[test]
    fn non_json_error_bodies_fall_back_to_the_status() {
        let html = b"<html><body>413 Request Entity Too Large</body></html>";
        let (status, body, retry) = translate_error(StatusCode::PAYLOAD_TOO_LARGE, html);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!retry);
        assert_eq!(body["error"]["code"], "request_too_large");
        assert!(body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("Request Entity Too Large"));

        let overloaded = StatusCode::from_u16(529).expect("529");
        let (status, body, retry) = translate_error(overloaded, b"");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry);
        assert!(body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("empty body"));

        let (status, body, retry) =
            translate_error(StatusCode::BAD_GATEWAY, b"upstream connect error");
        assert_eq!((status, retry), (StatusCode::BAD_GATEWAY, true));
        assert_eq!(body["error"]["code"], "api_error");

        let (status, _, retry) = translate_error(StatusCode::CONFLICT, b"{\"unexpected\": true}");
        assert_eq!((status, retry), (StatusCode::CONFLICT, false));

        let (status, body, _) = translate_error(
            StatusCode::TOO_MANY_REQUESTS,
            &anthropic_error("some_future_error", "slow down"),
        );
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "rate_limit_error");
    }
}
