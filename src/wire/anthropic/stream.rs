//! A streamed answer, translated event by event as it arrives so the client
//! sees each token when Anthropic sends it.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{future, stream, StreamExt};
use serde_json::{json, Value};

use super::block_type;
use super::error::Fault;
use super::response::{finish_reason, Tokens};
use crate::cache;
use crate::wire::{checked_sse_bytes, not_json, EventStream, StreamError, StreamEvent};

/// Translates Anthropic's SSE events one by one as they arrive; only the
/// little needed across events (ids, tool-call indices, token counts) is
/// kept.
pub fn translate_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use eventsource_stream::Eventsource;
    let events = checked_sse_bytes(bytes)
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
    /// A thinking block being streamed (its index and the block so far):
    /// passed on whole, with its signature, when it stops.
    thinking: Option<(u64, Value)>,
}

impl StreamState {
    fn new() -> Self {
        StreamState {
            id: Value::Null,
            model: Value::Null,
            created: cache::now(),
            tokens: Tokens::default(),
            tool_calls: HashMap::new(),
            thinking: None,
        }
    }

    fn translate(&mut self, data: &str) -> Translated {
        let data = data.trim();
        if data.is_empty() {
            return Vec::new();
        }
        let event: Value = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(e) => return vec![Err(StreamError::InvalidJson(not_json(&e, data)))],
        };
        let chunk = match block_type(&event) {
            "message_start" => self.message_start(&event),
            "content_block_start" => self.block_start(&event),
            "content_block_delta" => self.block_delta(&event),
            "message_delta" => self.message_delta(&event),
            "content_block_stop" => self.block_stop(&event),
            "message_stop" => {
                return vec![
                    Ok(StreamEvent::Chunk(self.usage_chunk())),
                    Ok(StreamEvent::Done),
                ]
            }
            "error" => Some(stream_error(&event)),
            // ping, and event types added later.
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
        self.tokens.block_started(Some(block));
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
            "thinking" | "redacted_thinking" => {
                self.thinking = Some((index, block.clone()));
                None
            }
            _ => None,
        }
    }

    /// A thinking block, whole, when it stops: the carrier that brings a
    /// Claude answer's signed thinking back to a client that can keep it.
    fn block_stop(&mut self, event: &Value) -> Option<Value> {
        let index = event.get("index").and_then(Value::as_u64)?;
        match self.thinking.take() {
            Some((at, block)) if at == index => {
                Some(self.chunk(json!({ super::THINKING: [block] }), Value::Null))
            }
            other => {
                self.thinking = other;
                None
            }
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
            "thinking_delta" | "signature_delta" => {
                let index = event.get("index").and_then(Value::as_u64)?;
                let (at, block) = self.thinking.as_mut()?;
                if *at != index {
                    return None;
                }
                let (key, part) = match block_type(delta) {
                    "thinking_delta" => ("thinking", delta.get("thinking")),
                    _ => ("signature", delta.get("signature")),
                };
                let part = part.and_then(Value::as_str).unwrap_or_default();
                let so_far = block.get(key).and_then(Value::as_str).unwrap_or_default();
                block[key] = Value::from(format!("{so_far}{part}"));
                None
            }
            // citations_delta.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Usage;
    use futures_util::FutureExt;

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
                StreamEvent::Native { name, .. } => {
                    panic!("a translated stream yields no native event ({name})")
                }
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
                // The thinking block, whole with its signature, when it stops.
                (
                    json!({"p402_thinking": [{"type": "thinking", "thinking": "Two cities.",
                        "signature": "EqQB"}]}),
                    null.clone()
                ),
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
            crate::wire::openai::usage(usage),
            Some(Usage {
                input_tokens: 550,
                cached_input_tokens: 400,
                cache_write_tokens: 30,
                cache_write_1h_tokens: 0,
                output_tokens: 89,
                reasoning_tokens: 0,
                web_searches: 0,
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
        assert_eq!(whole.0.len(), 12);
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
}
