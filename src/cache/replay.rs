//! Answers served from the cache: the stored completion, whole or as the
//! chunks of the stream the client asked for (its door renders either).

use serde_json::{json, Value};

use super::{now, Hit};
use crate::catalog::{Price, Usage};
use crate::money::Usd;

/// What the cached answer would have cost on the requested model: the
/// saving a hit makes.
pub fn direct_cost(hit: &Hit, baseline: Option<Price>) -> Usd {
    let usage = Usage {
        input_tokens: hit.entry.input_tokens,
        output_tokens: hit.entry.output_tokens,
        ..Usage::default()
    };
    baseline.map_or(Usd::ZERO, |price| price.cost(&usage))
}

/// The stored answer, as fresh: stamped with the time it is served.
pub fn answer(hit: &Hit) -> Value {
    let mut answer = hit.entry.response.clone();
    if let Some(object) = answer.as_object_mut() {
        object.insert("created".into(), json!(now()));
    }
    answer
}

/// The stored answer as the chunks of an OpenAI stream: role, content,
/// tool calls, finish, and the usage chunk (which a door passes on only
/// to a client that asked for usage).
pub fn chunks(hit: &Hit) -> Vec<Value> {
    let stored = &hit.entry.response;
    let id = stored.get("id").cloned().unwrap_or(Value::Null);
    let model = stored.get("model").cloned().unwrap_or(Value::Null);
    let created = json!(now());
    let message = &stored["choices"][0]["message"];
    let finish = stored["choices"][0]
        .get("finish_reason")
        .cloned()
        .unwrap_or(json!("stop"));
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
    let mut events = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    )];
    if let Some(content) = message.get("content").and_then(Value::as_str) {
        events.push(chunk(
            json!([{"index": 0, "delta": {"content": content}, "finish_reason": null}]),
        ));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let deltas: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut delta = call.clone();
                delta["index"] = json!(i);
                delta
            })
            .collect();
        events.push(chunk(
            json!([{"index": 0, "delta": {"tool_calls": deltas}, "finish_reason": null}]),
        ));
    }
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    let mut usage = chunk(json!([]));
    usage["usage"] = stored.get("usage").cloned().unwrap_or(Value::Null);
    events.push(usage);
    events
}

/// Whether an answer is complete and safe to serve again: it ended on its
/// own (not cut off by a limit) and, unless allowed, calls no tools.
pub fn storable(answer: &Value, store_tool_calls: bool) -> bool {
    let Some(choice) = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return false;
    };
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let message = &choice["message"];
    // Replayed without its thinking, it would not be the answer asked for.
    if message.get(crate::wire::THINKING).is_some() {
        return false;
    }
    let has_tools = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let has_text = message
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    match finish {
        Some("stop") => has_text && !has_tools,
        Some("tool_calls") => store_tool_calls && has_tools,
        _ => false,
    }
}
