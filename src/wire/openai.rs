//! OpenAI-compatible Chat Completions, spoken by twelve of the thirteen
//! built-in providers.

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::{EventStream, StreamError, StreamEvent};
use crate::catalog::{Capability, Model, Provider, Usage};
use crate::router::Candidate;
use crate::wire::request::ChatRequest;
use crate::wire::TranslateError;

/// The upstream request: the client's body with the chosen model, the
/// `p402` object already gone, usage always requested for streams, and the
/// provider's own key (never the client's).
pub fn build_request(
    provider: &Provider,
    candidate: &Candidate,
    request: &ChatRequest,
) -> Result<Request<Full<Bytes>>, TranslateError> {
    // Nothing to change: the client's own bytes go, neither rebuilt nor
    // written out again.
    if let Some(raw) = &request.raw {
        let same_model = request.body.get("model").and_then(Value::as_str)
            == Some(candidate.upstream_model.as_str());
        let usage_asked = !request.stream || request.client_wants_usage;
        if same_model
            && usage_asked
            && adapts_nothing(&request.body, provider, candidate.model.as_ref())
        {
            return super::post_bytes(
                provider,
                "/chat/completions",
                raw.clone(),
                request.stream,
                &[],
            );
        }
    }
    let mut body: Map<String, Value> = request.body.clone();
    body.insert(
        "model".to_string(),
        Value::from(candidate.upstream_model.as_str()),
    );
    // Chat Completions has no web search tool of its own to map it to.
    body.remove(super::WEB_SEARCH);
    adapt_parameters(&mut body, provider, candidate.model.as_ref());
    if request.stream {
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if let Value::Object(options) = options {
            options.insert("include_usage".to_string(), Value::Bool(true));
        }
    }
    super::post_json(provider, "/chat/completions", &body, request.stream, &[])
}

/// Fields only OpenAI's own API accepts; other OpenAI-compatible endpoints
/// answer 400 to some of them, so they are dropped rather than forwarded.
const OPENAI_ONLY: &[&str] = &[
    "store",
    "metadata",
    "service_tier",
    "prediction",
    "modalities",
    "audio",
    "web_search_options",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "verbosity",
];

/// Sampling parameters OpenAI's reasoning models refuse.
const NOT_FOR_REASONING: &[&str] = &[
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
];

/// Rewrites the parameters a routed-to target would refuse: the output
/// limit's name, OpenAI-only fields, and sampling parameters a reasoning
/// model does not take. Silently dropping a parameter beats a 400 for a
/// request the client wrote for another model.
fn adapt_parameters(body: &mut Map<String, Value>, provider: &Provider, model: Option<&Model>) {
    let reasoning = model.is_some_and(|m| m.capabilities.contains(&Capability::Reasoning));
    let to = if provider.name == "openai" {
        // OpenAI deprecated `max_tokens`, and its reasoning models refuse it.
        "max_completion_tokens"
    } else {
        // Most compatible endpoints know only the older name.
        "max_tokens"
    };
    // One limit goes out, under the target's name: the newer name's when a
    // client sent both (as budgets and routing read it), never the other.
    let newer = body.remove("max_completion_tokens");
    let older = body.remove("max_tokens");
    if let Some(limit) = newer.or(older) {
        body.insert(to.to_string(), limit);
    }
    if provider.name == "openai" {
        if reasoning {
            for key in NOT_FOR_REASONING {
                body.remove(*key);
            }
        }
    } else {
        for key in OPENAI_ONLY {
            body.remove(*key);
        }
    }
    if model.is_some() && !reasoning {
        body.remove("reasoning_effort");
    }
}

/// Whether [`adapt_parameters`] would leave `body` as it is (its rules,
/// read without changing anything).
fn adapts_nothing(body: &Map<String, Value>, provider: &Provider, model: Option<&Model>) -> bool {
    let reasoning = model.is_some_and(|m| m.capabilities.contains(&Capability::Reasoning));
    let other_limit_name = if provider.name == "openai" {
        "max_tokens"
    } else {
        "max_completion_tokens"
    };
    if body.contains_key(other_limit_name) || body.contains_key(super::WEB_SEARCH) {
        return false;
    }
    let dropped: &[&str] = match (provider.name == "openai", reasoning) {
        (true, true) => NOT_FOR_REASONING,
        (true, false) => &[],
        (false, _) => OPENAI_ONLY,
    };
    if dropped.iter().any(|key| body.contains_key(*key)) {
        return false;
    }
    !(model.is_some() && !reasoning && body.contains_key("reasoning_effort"))
}

/// Reads the usage object of a response or of a stream's usage chunk.
/// Groq reports streamed usage under `x_groq.usage`; both are accepted.
pub fn usage(object: &Value) -> Option<Usage> {
    let usage = object.get("usage").filter(|u| u.is_object()).or_else(|| {
        object
            .get("x_groq")
            .and_then(|x| x.get("usage"))
            .filter(|u| u.is_object())
    })?;
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    // Two plain lookups, not `pointer`, which allocates for each step of
    // its path: a quarter of what reading a passed-on answer's usage cost.
    let inner = |outer: &str, name: &str| usage.get(outer).and_then(|v| v.get(name));
    Some(Usage {
        input_tokens: count(usage.get("prompt_tokens")),
        cached_input_tokens: count(inner("prompt_tokens_details", "cached_tokens")),
        // Not OpenAI's: the Anthropic adapter (and LiteLLM-style gateways)
        // report prompt-cache writes here, billed at their own rate.
        cache_write_tokens: count(usage.get("cache_creation_input_tokens")),
        cache_write_1h_tokens: count(usage.get("cache_creation_1h_input_tokens")),
        output_tokens: count(usage.get("completion_tokens")),
        reasoning_tokens: count(inner("completion_tokens_details", "reasoning_tokens")),
        // Not OpenAI's either: the Anthropic adapter's count of web
        // searches, billed per call.
        web_searches: count(inner("server_tool_use", "web_search_requests")),
    })
}

/// What p402 reads of an OpenAI answer it passes on as it came: the rest
/// is checked to be JSON but never built into a tree.
#[derive(serde::Deserialize)]
struct Outline {
    choices: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
    usage: Option<Value>,
    x_groq: Option<Value>,
    p402_metadata: Option<serde::de::IgnoredAny>,
}

/// The usage of a successful answer with choices, no error and no
/// `p402_metadata` of its own, read without building the answer; `None`
/// for anything else, which then takes the full path (and its errors).
pub fn passable_usage(bytes: &[u8]) -> Option<Usage> {
    // serde would also read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    // `IgnoredAny` skips strings without checking their UTF-8, and the
    // bytes go to the client as they are: checked once here (a few µs for
    // an ordinary answer, BENCHMARKS.md), so that a provider's bad bytes
    // take the full path, which refuses them.
    let text = std::str::from_utf8(bytes).ok()?;
    let outline: Outline = serde_json::from_str(text).ok()?;
    if outline.choices.is_none() || outline.error.is_some() || outline.p402_metadata.is_some() {
        return None;
    }
    let mut reported = Map::new();
    if let Some(value) = outline.usage {
        reported.insert("usage".to_string(), value);
    }
    if let Some(value) = outline.x_groq {
        reported.insert("x_groq".to_string(), value);
    }
    usage(&Value::Object(reported))
}

/// `object` (the bytes of a JSON object) with `"name": value` added as its
/// last member, without re-serializing the rest.
pub fn with_member(object: &[u8], name: &str, value: &[u8]) -> Option<Vec<u8>> {
    let end = object.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if object[end] != b'}' {
        return None;
    }
    let body = &object[..end];
    let last = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let name = serde_json::to_string(name).ok()?;
    let mut out = Vec::with_capacity(object.len() + name.len() + value.len() + 3);
    out.extend_from_slice(&body[..=last]);
    if body[last] != b'{' {
        out.push(b',');
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
    out.push(b'}');
    Some(out)
}

/// Decodes OpenAI-format SSE bytes, however they are split into chunks,
/// into events. Generic over the byte stream, so that the relay, the tests
/// and the fuzz targets all run this same code.
pub fn decode_stream<S, E>(bytes: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    use eventsource_stream::Eventsource;
    let stream = super::checked_sse_bytes(bytes).eventsource().map(|event| {
        let event = event.map_err(|e| StreamError::Read(e.to_string()))?;
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(StreamEvent::Done);
        }
        serde_json::from_str::<Value>(data)
            .map(StreamEvent::Chunk)
            .map_err(|e| StreamError::InvalidJson(super::not_json(&e, data)))
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn an_answer_with_bytes_that_are_not_utf8_does_not_pass_as_it_is() {
        let mut answer = br#"{"id":"x","choices":[{"message":{"content":"h"#.to_vec();
        answer.extend_from_slice(&[0xff, 0xfe]);
        answer.extend_from_slice(br#""}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#);
        assert!(passable_usage(&answer).is_none());
    }

    #[test]
    fn a_passable_answer_keeps_its_bytes_and_gains_the_metadata() {
        let answer = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}  "#;
        let usage = passable_usage(answer).expect("passable");
        assert_eq!((usage.input_tokens, usage.output_tokens), (3, 2));
        let out = with_member(answer, "p402_metadata", br#"{"cached":false}"#).expect("spliced");
        let value: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["p402_metadata"]["cached"], false);
        assert_eq!(value["choices"][0]["message"]["content"], "hi");
        assert_eq!(
            with_member(b"{ }", "a", b"1").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );

        let groq =
            br#"{"choices":[],"x_groq":{"usage":{"prompt_tokens":5,"completion_tokens":1}}}"#;
        assert_eq!(passable_usage(groq).map(|u| u.input_tokens), Some(5));
        // Everything else takes the full path.
        for other in [
            &br#"{"choices":[]}"#[..],
            br#"{"choices":[],"usage":{},"error":{"message":"x"}}"#,
            br#"{"choices":[],"usage":{"prompt_tokens":1},"p402_metadata":{}}"#,
            br#"{"usage":{"prompt_tokens":1}}"#,
            br#"[{"prompt_tokens":1}]"#,
            br#"{"choices":[],"usage":{"prompt_tokens":1}"#,
            b"not json",
        ] {
            assert!(
                passable_usage(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn usage_reads_details_and_groq() {
        let u = usage(
            &json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}}}),
        )
        .expect("usage");
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (10, 4, 5, 2)
        );
        let g = usage(&json!({"usage": null, "x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 1}}}))
            .expect("groq usage");
        assert_eq!(g.input_tokens, 3);
        assert!(usage(&json!({"usage": null})).is_none());
    }

    #[test]
    fn adapts_nothing_says_exactly_when_adapting_changes_nothing() {
        let config = crate::config::parse("t", "").expect("config");
        let catalog = crate::catalog::Catalog::build(&config, |_| Some("k".to_string()));
        let openai = catalog.provider("openai").expect("openai");
        let groq = catalog.provider("groq").expect("groq");
        let plain = catalog.find("gpt-4o-mini").expect("model");
        let thinking = catalog
            .models()
            .iter()
            .find(|m| m.provider == "openai" && m.capabilities.contains(&Capability::Reasoning))
            .expect("a reasoning model");
        let bodies = [
            json!({"messages": []}),
            json!({"messages": [], "max_tokens": 10}),
            json!({"messages": [], "max_completion_tokens": 10}),
            json!({"messages": [], "max_tokens": 10, "max_completion_tokens": 20}),
            json!({"messages": [], "temperature": 0.2}),
            json!({"messages": [], "store": true, "metadata": {"a": "b"}}),
            json!({"messages": [], "reasoning_effort": "low"}),
            json!({"messages": [], "logprobs": true, "top_p": 0.5}),
        ];
        for body in bodies {
            let Value::Object(body) = body else {
                panic!("an object");
            };
            for provider in [openai, groq] {
                for model in [None, Some(plain), Some(thinking)] {
                    let mut adapted = body.clone();
                    adapt_parameters(&mut adapted, provider, model);
                    assert_eq!(
                        adapts_nothing(&body, provider, model),
                        adapted == body,
                        "{body:?} for {} on {:?}",
                        provider.name,
                        model.map(|m| &m.id)
                    );
                }
            }
        }
    }

    #[test]
    fn request_carries_provider_key_and_forces_usage() {
        let config = crate::config::parse("t", "").expect("config");
        let catalog = crate::catalog::Catalog::build(&config, |_| Some("sk-provider".to_string()));
        let provider = catalog.provider("openai").expect("openai");
        let chat = crate::wire::request::parse(
            br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"p402":{"mode":"cost"}}"#,
            &http::HeaderMap::new(),
        )
        .expect("request");
        let candidate = Candidate {
            provider: provider.clone(),
            upstream_model: "gpt-4o-mini".to_string(),
            model: None,
            expected_cost: None,
        };
        let req = build_request(provider, &candidate, &chat).expect("built");
        assert_eq!(req.uri(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer sk-provider");
        let body: Value = serde_json::from_slice(
            &futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                req.into_body(),
            ))
            .expect("ready")
            .expect("body")
            .to_bytes(),
        )
        .expect("json");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("p402").is_none());
    }

    fn adapted(provider: &str, capabilities: &[Capability], body: Value) -> Value {
        let config = crate::config::parse("t", "").expect("config");
        let catalog = crate::catalog::Catalog::build(&config, |_| Some("k".to_string()));
        let provider = catalog.provider(provider).expect("provider");
        let mut model = catalog.find("gpt-4o").expect("model").clone();
        model.capabilities = capabilities.to_vec();
        let mut map = body.as_object().cloned().expect("object");
        adapt_parameters(&mut map, provider, Some(&model));
        Value::Object(map)
    }

    #[test]
    fn parameters_are_translated_for_the_target() {
        let body = json!({"max_tokens": 100, "temperature": 0.2, "store": true, "reasoning_effort": "low"});
        let openai = adapted("openai", &[Capability::Reasoning], body.clone());
        assert_eq!(
            openai,
            json!({"max_completion_tokens": 100, "store": true, "reasoning_effort": "low"})
        );
        let groq = adapted("groq", &[Capability::Tools], body);
        assert_eq!(groq, json!({"max_tokens": 100, "temperature": 0.2}));
        let back = adapted("deepseek", &[], json!({"max_completion_tokens": 50}));
        assert_eq!(back, json!({"max_tokens": 50}));
    }
}
