//! The Responses door (`/v1/responses`): what Codex CLI (Responses only
//! since February 2026) and the OpenAI Agents SDK send.
//!
//! A request keeps its own body, forwarded as it is to OpenAI, which speaks
//! the Responses API. It is also read into the internal (Chat Completions)
//! request the stages route, count and charge by; a stateless request that
//! uses only what translates (text and images, `instructions`, function
//! tools, `max_output_tokens`, `text.format`, reasoning effort) may be
//! served by any provider, and the answer is translated back. Anything
//! else (stored state such as `previous_response_id`, reasoning items with
//! their encrypted content, built-in tools, fields p402 does not know) pins
//! the request to OpenAI: nothing is dropped on the way.
//!
//! `p402_metadata` goes in the response object: the answer's, or for a
//! stream the one in its final `response.completed` event.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::RenderError;
use crate::money::metadata::Metadata;
use crate::wire::request::{ChatRequest, Dialect, ParseError};
use crate::wire::{openai, Answer, THINKING, WEB_SEARCH};

/// The request headers that belong to the API and go upstream with it.
const API_HEADERS: [&str; 1] = ["openai-beta"];

/// The top-level fields whose Chat Completions equivalent says all they do
/// (`store: false` and `client_metadata` ask nothing of the answer).
const EXACT_FIELDS: [&str; 15] = [
    "model",
    "input",
    "instructions",
    "stream",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "metadata",
    "user",
    "safety_identifier",
    "client_metadata",
];

/// The top-level fields that are hints, or said only in part, elsewhere:
/// `include` (what extra the answer carries), `store: true` (kept at
/// OpenAI: another provider's answer is not), the reasoning summary,
/// context editing, truncation, the service tier, the prompt cache's key
/// and retention, `top_logprobs` and `max_tool_calls`. Any other field
/// (`previous_response_id`, `conversation`, stored `prompt`s,
/// `background`) keeps the request at OpenAI.
const APPROXIMATE_FIELDS: [&str; 11] = [
    "include",
    "store",
    "reasoning",
    "context_management",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
];

/// Between a namespace's name and a tool's in the flat function name
/// another provider sees; [`tool_names`] turns it back.
const NAMESPACE_SEPARATOR: &str = "__";

pub fn parse(bytes: &[u8], headers: &HeaderMap) -> Result<ChatRequest, ParseError> {
    let (body, options) = super::native_body(bytes)?;
    match body.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        _ => {
            return Err(ParseError::Messages(
                "`input` is required: a string or a non-empty array of items".into(),
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
        Dialect::Responses,
        &API_HEADERS,
        translation.loss,
    )
}

/// A Responses body read into a Chat Completions one. It never fails: what
/// it cannot say is noted in `loss`, and the body itself still goes as it
/// came to OpenAI.
#[derive(Default)]
struct Translation {
    loss: super::Loss,
    /// Signed thinking from a reasoning item p402 wrote, for the assistant
    /// turn that follows it.
    thinking: Option<Value>,
    /// The client offered OpenAI's web search tool.
    web_search: bool,
}

/// What starts the `encrypted_content` of a reasoning item p402 wrote: the
/// JSON of a Claude answer's thinking blocks follows, signatures and all.
/// The client keeps it as an opaque string and sends it back with the
/// conversation (`store: false` clients included), and p402 restores the
/// blocks for Anthropic.
const THINKING_PREFIX: &str = "p402-claude-thinking:";

/// The thinking blocks a reasoning item carries, if p402 wrote it.
fn restored_thinking(item: &Value) -> Option<Value> {
    let json = item
        .get("encrypted_content")?
        .as_str()?
        .strip_prefix(THINKING_PREFIX)?;
    serde_json::from_str::<Value>(json)
        .ok()
        .filter(Value::is_array)
}

/// A reasoning item carrying `thinking` (the blocks' JSON) as its
/// encrypted content.
fn reasoning_item(id: &str, thinking: &Value) -> Value {
    json!({"type": "reasoning", "id": format!("rs_{id}"), "summary": [],
        "encrypted_content": format!("{THINKING_PREFIX}{thinking}")})
}

/// Whether the client asked for reasoning it can send back.
fn wants_encrypted_reasoning(chat: &ChatRequest) -> bool {
    chat.native
        .as_ref()
        .and_then(|native| native.body.get("include"))
        .and_then(Value::as_array)
        .is_some_and(|include| {
            include
                .iter()
                .any(|i| i.as_str() == Some("reasoning.encrypted_content"))
        })
}

impl Translation {
    fn request(&mut self, body: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in body {
            // Not storing, and asking for nothing extra, ask nothing of
            // the answer.
            let asks_nothing = match key.as_str() {
                "store" => value == &Value::Bool(false),
                "include" => value.as_array().is_some_and(Vec::is_empty),
                _ => false,
            };
            if asks_nothing {
                continue;
            }
            if APPROXIMATE_FIELDS.contains(&key.as_str()) {
                self.loss.approximate();
            } else if !EXACT_FIELDS.contains(&key.as_str()) && !value.is_null() {
                self.loss.untranslatable(format!("`{key}`"));
            }
        }
        for key in [
            "model",
            "stream",
            "temperature",
            "top_p",
            "parallel_tool_calls",
            "user",
            "safety_identifier",
            "prompt_cache_key",
            "metadata",
        ] {
            if let Some(value) = body.get(key).filter(|v| !v.is_null()) {
                out.insert(key.into(), value.clone());
            }
        }
        if let Some(limit) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
            out.insert("max_tokens".into(), limit.clone());
        }
        if let Some(effort) = body.pointer_get(&["reasoning", "effort"]) {
            out.insert("reasoning_effort".into(), effort.clone());
        }
        if let Some(text) = body.get("text") {
            self.text_format(text, &mut out);
        }
        let mut messages = Vec::new();
        if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
            messages.push(json!({"role": "system", "content": instructions}));
        }
        match body.get("input") {
            Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.item(item, i, &mut messages);
                }
            }
            _ => {}
        }
        out.insert("messages".into(), Value::Array(messages));
        if let Some(tools) = body.get("tools").and_then(Value::as_array) {
            let mut flat = Vec::new();
            for (i, tool) in tools.iter().enumerate() {
                self.tool(tool, &format!("tools[{i}]"), None, &mut flat);
            }
            if !flat.is_empty() {
                out.insert("tools".into(), Value::Array(flat));
            }
        }
        if self.web_search {
            // The client's limit on its built-in tool calls bounds the
            // searches wherever they run.
            let limit = body
                .get("max_tool_calls")
                .filter(|n| n.as_u64().is_some())
                .cloned();
            out.insert(WEB_SEARCH.into(), limit.unwrap_or(Value::Bool(true)));
        }
        if let Some(choice) = body.get("tool_choice") {
            let mapped = match choice {
                Value::String(_) => choice.clone(),
                _ if choice.get("type").and_then(Value::as_str) == Some("function") => {
                    json!({"type": "function", "function": {"name": choice["name"]}})
                }
                _ => {
                    self.loss.untranslatable("`tool_choice` (a built-in tool)");
                    Value::Null
                }
            };
            if !mapped.is_null() {
                out.insert("tool_choice".into(), mapped);
            }
        }
        out
    }

    fn text_format(&mut self, text: &Value, out: &mut Map<String, Value>) {
        if text.get("verbosity").is_some() {
            self.loss.approximate();
        }
        let Some(format) = text.get("format") else {
            return;
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = Map::new();
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(value) = format.get(key) {
                        schema.insert(key.into(), value.clone());
                    }
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some(other) => self
                .loss
                .untranslatable(format!("text.format (type `{other}`)")),
        }
    }

    fn item(&mut self, item: &Value, i: usize, out: &mut Vec<Value>) {
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            Some("message") | None if item.get("role").is_some() => {
                let role = match item["role"].as_str() {
                    Some("developer" | "system") => "system",
                    Some("assistant") => "assistant",
                    Some("user") => "user",
                    other => {
                        self.loss.untranslatable(format!(
                            "input[{i}].role (`{}`)",
                            other.unwrap_or("missing")
                        ));
                        return;
                    }
                };
                let content = match &item["content"] {
                    Value::String(text) => Value::from(text.as_str()),
                    Value::Array(parts) => {
                        let parts: Vec<Value> = parts
                            .iter()
                            .enumerate()
                            .filter_map(|(j, p)| self.part(p, i, j))
                            .collect();
                        if role == "assistant" || role == "system" {
                            let text: Vec<&str> =
                                parts.iter().filter_map(|p| p["text"].as_str()).collect();
                            Value::from(text.join(""))
                        } else {
                            Value::Array(parts)
                        }
                    }
                    _ => {
                        self.loss
                            .untranslatable(format!("input[{i}].content (neither text nor parts)"));
                        return;
                    }
                };
                let mut message = json!({"role": role, "content": content});
                if role == "assistant" {
                    if let Some(thinking) = self.thinking.take() {
                        message[THINKING] = thinking;
                    }
                }
                out.push(message);
            }
            Some("function_call") => {
                let name = match item.get("namespace").and_then(Value::as_str) {
                    Some(namespace) => Value::from(format!(
                        "{namespace}{NAMESPACE_SEPARATOR}{}",
                        item["name"].as_str().unwrap_or_default()
                    )),
                    None => item["name"].clone(),
                };
                let call = json!({"id": item["call_id"], "type": "function",
                    "function": {"name": name, "arguments": item["arguments"]}});
                // Consecutive calls belong to one assistant turn.
                if let Some(last) = out
                    .last_mut()
                    .filter(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())
                {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                        return;
                    }
                }
                let mut message =
                    json!({"role": "assistant", "content": null, "tool_calls": [call]});
                if let Some(thinking) = self.thinking.take() {
                    message[THINKING] = thinking;
                }
                out.push(message);
            }
            Some("function_call_output") => {
                let output = match &item["output"] {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    other => other.to_string(),
                };
                out.push(
                    json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}),
                );
            }
            // A reasoning item's encrypted content is the model's own;
            // another model starts its thinking afresh, as on a first turn.
            // A web search's call: its findings are in the answer's text.
            Some("reasoning") => match restored_thinking(item) {
                Some(thinking) => self.thinking = Some(thinking),
                None => self.loss.approximate(),
            },
            Some("web_search_call") => self.loss.approximate(),
            // Item references, other built-in tools' calls and outputs:
            // state and runners that are OpenAI's alone.
            other => self.loss.untranslatable(format!(
                "input[{i}] (a `{}` item)",
                other.unwrap_or("untyped")
            )),
        }
    }

    fn part(&mut self, part: &Value, i: usize, j: usize) -> Option<Value> {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                Some(json!({"type": "text", "text": part["text"]}))
            }
            Some("input_image") if part.get("image_url").is_some_and(Value::is_string) => {
                Some(json!({"type": "image_url", "image_url": {"url": part["image_url"]}}))
            }
            // A refusal said earlier: its text is what the model said.
            Some("refusal") => {
                self.loss.approximate();
                Some(json!({"type": "text", "text": part["refusal"]}))
            }
            other => {
                self.loss.untranslatable(format!(
                    "input[{i}].content[{j}] (a `{}` part)",
                    other.unwrap_or("untyped")
                ));
                None
            }
        }
    }

    /// A tool as Chat Completions functions: a function as it is, a
    /// namespace's functions under flat names, OpenAI's web search left
    /// out (the answer's `x-p402-dropped` header says so).
    fn tool(&mut self, tool: &Value, at: &str, namespace: Option<&str>, out: &mut Vec<Value>) {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = match namespace {
                    Some(namespace) => Value::from(format!(
                        "{namespace}{NAMESPACE_SEPARATOR}{}",
                        tool["name"].as_str().unwrap_or_default()
                    )),
                    None => tool["name"].clone(),
                };
                let mut function = json!({"name": name, "parameters": tool["parameters"]});
                for key in ["description", "strict"] {
                    if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                        function[key] = value.clone();
                    }
                }
                out.push(json!({"type": "function", "function": function}));
            }
            Some("namespace") if namespace.is_none() => {
                let name = tool["name"].as_str().unwrap_or_default();
                for (j, inner) in tool
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    self.tool(inner, &format!("{at}.tools[{j}]"), Some(name), out);
                }
            }
            // Said to a provider with a web search of its own (Anthropic);
            // left out elsewhere, and the answer says so.
            Some(kind) if kind.starts_with("web_search") => {
                self.loss.dropped("web_search");
                self.web_search = true;
            }
            // File search, code interpreter, custom grammar tools, MCP,
            // shell and computer use: not functions another provider
            // could call.
            other => self
                .loss
                .untranslatable(format!("{at} (type `{}`)", other.unwrap_or("untyped"))),
        }
    }
}

/// The namespaced tools of a request: each flat name another provider saw,
/// with its namespace and the tool's own name.
pub fn tool_names(body: &Map<String, Value>) -> HashMap<String, (String, String)> {
    let mut names = HashMap::new();
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if tool.get("type").and_then(Value::as_str) != Some("namespace") {
            continue;
        }
        let namespace = tool["name"].as_str().unwrap_or_default();
        for inner in tool
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = inner.get("name").and_then(Value::as_str) {
                names.insert(
                    format!("{namespace}{NAMESPACE_SEPARATOR}{name}"),
                    (namespace.to_string(), name.to_string()),
                );
            }
        }
    }
    names
}

trait PointerGet {
    fn pointer_get(&self, path: &[&str]) -> Option<&Value>;
}

impl PointerGet for Map<String, Value> {
    fn pointer_get(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(self.get(*first)?, |value, key| value.get(*key))
    }
}

/// A whole answer as a `response` object with `p402_metadata`: as OpenAI
/// sent it, or built from the `chat.completion`.
pub fn answer(
    answer: Answer,
    metadata: &Metadata,
    chat: &ChatRequest,
) -> Result<Bytes, RenderError> {
    let mut completion = match answer {
        Answer::Native { bytes, .. } => {
            let figures = serde_json::to_vec(metadata)?;
            return openai::with_member(&bytes, "p402_metadata", &figures)
                .map(Bytes::from)
                .ok_or(RenderError::NotAnObject);
        }
        Answer::Tree(tree) => tree,
        Answer::AsItCame { bytes, .. } => serde_json::from_slice(&bytes)?,
    };
    if let Some(model) = &metadata.model {
        completion["model"] = Value::from(model.as_str());
    }
    let names = chat
        .native
        .as_ref()
        .map(|native| tool_names(&native.body))
        .unwrap_or_default();
    let mut response = response(&completion, "completed", &names);
    if !wants_encrypted_reasoning(chat) {
        if let Some(output) = response["output"].as_array_mut() {
            output.retain(|item| item["type"] != "reasoning");
        }
    }
    response["p402_metadata"] = serde_json::to_value(metadata)?;
    Ok(Bytes::from(serde_json::to_vec(&response)?))
}

/// A function call item's name, with its namespace where the request's
/// tools put it in one (another provider saw the flat name).
fn call_item(item: &mut Value, flat: &Value, names: &HashMap<String, (String, String)>) {
    match flat.as_str().and_then(|flat| names.get(flat)) {
        Some((namespace, name)) => {
            item["name"] = Value::from(name.as_str());
            item["namespace"] = Value::from(namespace.as_str());
        }
        None => item["name"] = flat.clone(),
    }
}

/// A `response` object saying what a `chat.completion` says.
fn response(completion: &Value, status: &str, names: &HashMap<String, (String, String)>) -> Value {
    let said = &completion["choices"][0]["message"];
    let id = response_id(completion["id"].as_str().unwrap_or("p402"));
    let mut output = Vec::new();
    if let Some(thinking) = said.get(THINKING).filter(|t| t.is_array()) {
        output.push(reasoning_item(&id, thinking));
    }
    if let Some(text) = said.get("content").and_then(Value::as_str) {
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}));
    }
    for call in said
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut item = json!({"type": "function_call", "id": function_item_id(&call["id"]),
            "call_id": call["id"],
            "arguments": call.pointer("/function/arguments").cloned().unwrap_or(json!("")), "status": "completed"});
        call_item(
            &mut item,
            call.pointer("/function/name").unwrap_or(&Value::Null),
            names,
        );
        output.push(item);
    }
    let usage = &completion["usage"];
    let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
    let output_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "id": id,
        "object": "response",
        "created_at": completion["created"],
        "status": status,
        "model": completion["model"],
        "output": output,
        "usage": {
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": usage.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0)},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.pointer("/completion_tokens_details/reasoning_tokens").and_then(Value::as_u64).unwrap_or(0)},
            "total_tokens": input + output_tokens,
        },
    })
}

/// A Responses stream: OpenAI's own events as they came (the final one held
/// back until the figures are known), or the full event sequence built
/// from Chat Completions chunks: `response.created` and `.in_progress`;
/// per output item `output_item.added`, its content part or function-call
/// arguments as deltas, their `.done` events and `output_item.done`; and
/// `response.completed` with the usage and the figures.
pub struct Stream {
    /// The final event of a native stream, to carry the metadata.
    last: Option<(String, Value)>,
    /// The catalog id of the model serving the stream.
    model: Option<Value>,
    /// The request's namespaced tools, by the flat names others saw.
    names: HashMap<String, (String, String)>,
    /// The client asked for reasoning it can send back.
    wants_reasoning: bool,
    /// A translated stream: what it has said so far.
    built: Option<Built>,
    sequence: u64,
}

/// What a translated stream has said so far.
#[derive(Default)]
struct Built {
    id: String,
    model: Value,
    created: Value,
    /// The text message's output index, once it has begun.
    text_index: Option<usize>,
    text: String,
    /// Function calls in output order: output index, call id, name,
    /// arguments so far.
    calls: Vec<(usize, Value, Value, String)>,
    /// A chunk's tool-call index to its place in `calls`.
    call_of: std::collections::HashMap<u64, usize>,
    items: usize,
    usage: Value,
    /// Thinking blocks handed on as reasoning items.
    thinking: Vec<Value>,
}

impl Stream {
    pub fn new(chat: &ChatRequest, model: Option<&str>) -> Self {
        Stream {
            wants_reasoning: wants_encrypted_reasoning(chat),
            last: None,
            model: model.map(Value::from),
            names: chat
                .native
                .as_ref()
                .map(|native| tool_names(&native.body))
                .unwrap_or_default(),
            built: None,
            sequence: 0,
        }
    }

    fn event(&mut self, name: &str, mut data: Value) -> Bytes {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        super::messages::event(name, &data)
    }

    /// A native event: passed on, except the final one, which waits for
    /// the figures.
    pub fn native(&mut self, name: &str, data: &Value) -> Option<Bytes> {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ) {
            self.last = Some((name.to_string(), data.clone()));
            return None;
        }
        Some(super::messages::event(name, data))
    }

    /// A Chat Completions chunk, as Responses events.
    pub fn chunk(&mut self, chunk: Value) -> Option<Bytes> {
        let mut out = Vec::new();
        let mut built = match self.built.take() {
            Some(built) => built,
            None => {
                let built = Built {
                    id: response_id(chunk["id"].as_str().unwrap_or("p402")),
                    model: self.model.clone().unwrap_or_else(|| chunk["model"].clone()),
                    created: chunk["created"].clone(),
                    ..Built::default()
                };
                let shell = json!({"id": built.id, "object": "response", "created_at": built.created,
                    "status": "in_progress", "model": built.model, "output": []});
                out.push(self.event("response.created", json!({"response": shell})));
                out.push(self.event("response.in_progress", json!({"response": shell})));
                built
            }
        };
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            built.usage = usage.clone();
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let delta = &choice["delta"];
            if let Some(blocks) = delta.get(THINKING).and_then(Value::as_array) {
                if self.wants_reasoning {
                    let index = built.items;
                    built.items += 1;
                    let item = reasoning_item(&built.id, &Value::Array(blocks.clone()));
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    out.push(self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ));
                    built.thinking.extend(blocks.iter().cloned());
                }
            }
            if let Some(text) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                let item_id = format!("msg_{}", built.id);
                let index = match built.text_index {
                    Some(index) => index,
                    None => {
                        let index = built.items;
                        built.items += 1;
                        built.text_index = Some(index);
                        out.push(self.event(
                            "response.output_item.added",
                            json!({
                            "output_index": index, "item": {"type": "message", "id": item_id,
                            "status": "in_progress", "role": "assistant", "content": []}}),
                        ));
                        out.push(self.event(
                            "response.content_part.added",
                            json!({
                            "item_id": item_id, "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": []}}),
                        ));
                        index
                    }
                };
                built.text.push_str(text);
                out.push(self.event(
                    "response.output_text.delta",
                    json!({
                    "item_id": item_id, "output_index": index, "content_index": 0, "delta": text}),
                ));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let at = match built.call_of.get(&n) {
                    Some(at) => *at,
                    None => {
                        let index = built.items;
                        built.items += 1;
                        let call_id = call.get("id").cloned().unwrap_or(Value::Null);
                        let name = call
                            .pointer("/function/name")
                            .cloned()
                            .unwrap_or(Value::Null);
                        built
                            .calls
                            .push((index, call_id.clone(), name.clone(), String::new()));
                        built.call_of.insert(n, built.calls.len() - 1);
                        let mut item = json!({"type": "function_call",
                            "id": function_item_id(&call_id), "call_id": call_id,
                            "arguments": "", "status": "in_progress"});
                        call_item(&mut item, &name, &self.names);
                        out.push(self.event(
                            "response.output_item.added",
                            json!({"output_index": index, "item": item}),
                        ));
                        built.calls.len() - 1
                    }
                };
                if let Some(part) = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    let (index, call_id, _, arguments) = &mut built.calls[at];
                    arguments.push_str(part);
                    let (index, item_id) = (*index, function_item_id(call_id));
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({
                        "item_id": item_id, "output_index": index, "delta": part}),
                    ));
                }
            }
        }
        self.built = Some(built);
        (!out.is_empty()).then(|| Bytes::from(out.concat()))
    }

    /// The end: the `.done` events of every item, then the final event
    /// with the complete response and its `p402_metadata`.
    pub fn end(&mut self, metadata: &Metadata) -> Vec<Bytes> {
        let figures = serde_json::to_value(metadata).unwrap_or(Value::Null);
        if let Some((name, mut data)) = self.last.take() {
            if let Some(response) = data.get_mut("response").and_then(Value::as_object_mut) {
                response.insert("p402_metadata".into(), figures);
            }
            return vec![super::messages::event(&name, &data)];
        }
        let Some(built) = self.built.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(index) = built.text_index {
            let item_id = format!("msg_{}", built.id);
            let part = json!({"type": "output_text", "text": built.text, "annotations": []});
            out.push(self.event(
                "response.output_text.done",
                json!({
                "item_id": item_id, "output_index": index, "content_index": 0, "text": built.text}),
            ));
            out.push(self.event(
                "response.content_part.done",
                json!({
                "item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
            ));
            out.push(self.event(
                "response.output_item.done",
                json!({
                "output_index": index, "item": {"type": "message", "id": item_id,
                "status": "completed", "role": "assistant", "content": [part]}}),
            ));
        }
        let mut calls = Vec::new();
        for (index, call_id, name, arguments) in &built.calls {
            let item_id = function_item_id(call_id);
            out.push(self.event(
                "response.function_call_arguments.done",
                json!({
                "item_id": item_id, "output_index": index, "arguments": arguments}),
            ));
            let mut item = json!({"type": "function_call", "id": item_id,
                "call_id": call_id, "arguments": arguments, "status": "completed"});
            call_item(&mut item, name, &self.names);
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            calls.push(json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}}));
        }
        let mut completion = json!({
            "id": built.id, "created": built.created, "model": built.model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": if built.text_index.is_some() { Value::from(built.text.clone()) } else { Value::Null },
                "tool_calls": if calls.is_empty() { Value::Null } else { Value::Array(calls) }}}],
            "usage": built.usage,
        });
        if !built.thinking.is_empty() {
            completion["choices"][0]["message"][THINKING] = Value::Array(built.thinking);
        }
        let mut complete = response(&completion, "completed", &self.names);
        complete["p402_metadata"] = figures;
        out.push(self.event("response.completed", json!({"response": complete})));
        out
    }
}

/// A response id for an answer's id: a Responses answer's own (as the
/// cache replays one) as it was, any other with its prefix replaced by
/// `resp_`.
fn response_id(id: &str) -> String {
    super::dialect_id("resp_", id)
}

/// The item id of a function call, from its call id.
fn function_item_id(call_id: &Value) -> String {
    format!("fc_{}", call_id.as_str().unwrap_or_default())
}
