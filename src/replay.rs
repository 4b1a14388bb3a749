//! Answers served from the cache: the stored completion with fresh
//! metadata, as JSON or replayed as the SSE stream the client asked for.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::cache::{self, Hit};
use crate::catalog::{Price, Usage};
use crate::ids::RequestId;
use crate::metadata::{self, Metadata, SessionInfo};
use crate::money::Usd;
use crate::router::ModeChoice;

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

pub struct Replay<'a> {
    pub hit: &'a Hit,
    pub request_id: &'a RequestId,
    pub mode: ModeChoice,
    pub requested_model: &'a str,
    pub direct: Usd,
    pub latency_ms: u64,
    pub session: Option<SessionInfo>,
}

impl Replay<'_> {
    pub fn metadata(&self) -> Metadata {
        Metadata {
            request_id: self.request_id.to_string(),
            provider: "cache".to_string(),
            model: None,
            mode: self.mode,
            requested_model: self.requested_model.to_string(),
            cost_usd: Some(Usd::ZERO),
            direct_cost: Some(self.direct),
            savings: Some(self.direct),
            input_tokens: self.hit.entry.input_tokens,
            output_tokens: self.hit.entry.output_tokens,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            cached: true,
            latency_ms: self.latency_ms,
            provider_latency_ms: 0,
            failover: Vec::new(),
            cost_source: format!(
                "cache (first answered by {}/{})",
                self.hit.entry.provider, self.hit.entry.model
            ),
            cost_estimated: false,
            session_id: self.session.as_ref().map(|s| s.id.clone()),
            session_remaining_usd: self.session.as_ref().and_then(|s| s.remaining),
            similarity: Some((f64::from(self.hit.similarity) * 10_000.0).round() / 10_000.0),
            ledger_warning: None,
        }
    }

    pub fn json(&self, metadata: &Metadata) -> Response<Body> {
        let mut answer = self.hit.entry.response.clone();
        if let Some(object) = answer.as_object_mut() {
            object.insert("created".into(), json!(cache::now()));
            object.insert(
                "p402_metadata".into(),
                serde_json::to_value(metadata).unwrap_or(Value::Null),
            );
        }
        let mut response = Response::new(body::full(answer.to_string()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        metadata::headers(response.headers_mut(), metadata);
        response
    }

    /// The stored answer as an OpenAI stream: role, content, finish, the
    /// usage chunk if the client asked for it, the metadata chunk, `[DONE]`.
    pub fn sse(&self, metadata: &Metadata, client_wants_usage: bool) -> Response<Body> {
        let stored = &self.hit.entry.response;
        let id = stored.get("id").cloned().unwrap_or(Value::Null);
        let model = stored.get("model").cloned().unwrap_or(Value::Null);
        let created = json!(cache::now());
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
        if client_wants_usage {
            let mut usage = chunk(json!([]));
            usage["usage"] = stored.get("usage").cloned().unwrap_or(Value::Null);
            events.push(usage);
        }
        let mut last = chunk(json!([]));
        last["p402_metadata"] = serde_json::to_value(metadata).unwrap_or(Value::Null);
        events.push(last);
        let mut text = String::new();
        for event in events {
            text.push_str("data: ");
            text.push_str(&event.to_string());
            text.push_str("\n\n");
        }
        text.push_str("data: [DONE]\n\n");
        let mut response = Response::new(body::full(Bytes::from(text)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        metadata::headers(headers, metadata);
        response
    }
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
