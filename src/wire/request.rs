//! Parsing a chat completion request: the OpenAI body plus p402's options.
//!
//! The body is kept as a JSON map so that every field p402 does not know is
//! forwarded untouched; only what p402 acts on is read out of it. The `p402`
//! object is removed here, so nothing downstream can forward it by mistake.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::catalog::{Api, Capability, Provider};
use crate::router::mode::{ModeChoice, AUTO};
use crate::server::error::{Classify, ErrorKind};

/// p402's per-request options, from the `p402` body object or `X-P402-*`
/// headers. Unknown fields are refused: a misspelt `max_cost` must not
/// silently leave a request uncapped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P402Options {
    /// How to order candidates; the configured default when absent.
    pub mode: Option<ModeChoice>,
    pub(crate) session_id: Option<String>,
    pub(crate) cache: Option<bool>,
    pub(crate) cache_ttl: Option<u64>,
    /// Pins the provider: the request goes there and is not rewritten.
    pub provider: Option<String>,
    /// Pins the model, over the body's own `model`; not rewritten.
    pub model: Option<String>,
    pub(crate) prefer_providers: Option<Vec<String>>,
    pub(crate) exclude_providers: Option<Vec<String>>,
    pub(crate) require_capabilities: Option<Vec<Capability>>,
    /// The most this one request may cost, in US dollars (a float at the
    /// JSON edge; routing converts it to nano-dollars).
    #[serde(alias = "max_cost_usd")]
    pub max_cost: Option<f64>,
    pub(crate) failover: Option<bool>,
}

/// Why a body is not a chat completion request p402 can serve; each
/// variant is one of the SPEC's error codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    /// The body does not parse as JSON.
    #[error("the request body is not valid JSON: {0}")]
    Json(String),
    /// The body has no `messages` (or its dialect's equivalent).
    #[error("`messages` is required")]
    NoMessages,
    /// `messages` is not a list of message objects.
    #[error("{0}")]
    Messages(String),
    /// `model` is empty or not a string (absent means `auto`).
    #[error("`model` must be a non-empty string")]
    Model,
    /// A standard field of the wrong type or shape.
    #[error("{0}")]
    Field(String),
    /// The `p402` object or its values.
    #[error("{0}")]
    Options(String),
    /// An `X-P402-*` header that is not valid text or not of its type.
    #[error("{0}")]
    Header(String),
    /// An `X-P402-Mode` that names no mode.
    #[error("X-P402-Mode: {0}")]
    Mode(String),
}

impl Classify for ParseError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidRequest
    }

    fn code(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "invalid_json",
            ParseError::NoMessages => "missing_messages",
            ParseError::Messages(_) => "invalid_messages",
            ParseError::Model => "invalid_model",
            ParseError::Field(_) => "invalid_request",
            ParseError::Options(_) => "invalid_p402",
            ParseError::Header(_) => "invalid_header",
            ParseError::Mode(_) => "invalid_mode",
        }
    }
}

/// A parsed chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The OpenAI body without the `p402` object.
    pub body: Map<String, Value>,
    /// The model the client asked for (`auto` when it named none).
    pub model: String,
    pub(crate) stream: bool,
    /// Whether the client itself asked for the usage chunk of a stream.
    pub client_wants_usage: bool,
    /// p402's options, from the `p402` object and the headers.
    pub options: P402Options,
    /// The request as the client wrote it in a provider API's own dialect
    /// (Anthropic Messages), to be forwarded as it is to providers that
    /// speak it; `None` for Chat Completions, which is the body itself.
    pub native: Option<Native>,
    /// The client's Chat Completions body as it came, when `body` says
    /// exactly what it says (no `p402` object, no key written twice): an
    /// upstream request that changes nothing in it is these bytes.
    pub raw: Option<bytes::Bytes>,
}

/// A provider API's own dialect, other than Chat Completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic Messages.
    Messages,
    /// OpenAI's Responses API.
    Responses,
}

impl Dialect {
    /// The API's name, for messages.
    pub fn api_name(self) -> &'static str {
        match self {
            Dialect::Messages => "Anthropic Messages",
            Dialect::Responses => "OpenAI Responses",
        }
    }

    /// Whether `provider` speaks the dialect, so a request in it can be
    /// forwarded as it came. The Responses API is OpenAI's own; other
    /// OpenAI-compatible servers speak Chat Completions only.
    pub fn spoken_by(self, provider: &Provider) -> bool {
        match self {
            Dialect::Messages => provider.api == Api::Anthropic,
            Dialect::Responses => provider.api == Api::Openai && provider.name == "openai",
        }
    }
}

/// A request in a provider API's own dialect.
#[derive(Debug, Clone)]
pub struct Native {
    /// The dialect the body is written in.
    pub dialect: Dialect,
    /// The body as the client sent it, less the `p402` object.
    pub body: Map<String, Value>,
    /// The client's headers that belong to the API (`anthropic-beta`,
    /// `anthropic-version`), passed on with the body.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How much of the body its translation ([`ChatRequest::body`]) says.
    pub fidelity: Fidelity,
    /// Features the translation leaves out (`web_search`): a provider that
    /// serves the translation answers without them, and the answer's
    /// `x-p402-dropped` header says so.
    pub dropped: Vec<&'static str>,
}

/// How much of a native body its Chat Completions translation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fidelity {
    /// All of it: any provider may serve it, and its answer may be shared
    /// with the same question asked on another door.
    Exact,
    /// All that shapes the answer's form, but not every hint (thinking
    /// asked for as a reasoning effort, context editing, prompt-cache
    /// marks, a web search tool left out): any provider may serve it, but
    /// only an exact repeat of the body may be answered from the cache.
    Approximate,
    /// Something with no Chat Completions equivalent at all (stored state,
    /// documents, built-in tools other providers cannot run): only
    /// providers that speak the dialect can serve it. The field, named for
    /// the error a client gets when the model it pinned speaks another API.
    Untranslatable(String),
}

impl Native {
    /// Whether the translation says all the body says.
    pub fn exact(&self) -> bool {
        self.fidelity == Fidelity::Exact
    }

    /// The field no translation can carry, if any.
    pub fn untranslatable(&self) -> Option<&str> {
        match &self.fidelity {
            Fidelity::Untranslatable(field) => Some(field),
            _ => None,
        }
    }
}

impl ChatRequest {
    /// The dialect the request must be served in, when only its own can
    /// carry it.
    pub fn pinned_dialect(&self) -> Option<Dialect> {
        self.native
            .as_ref()
            .filter(|native| native.untranslatable().is_some())
            .map(|native| native.dialect)
    }

    /// Whether `provider` takes the request as the client wrote it.
    pub fn native_for(&self, provider: &Provider) -> Option<&Native> {
        self.native
            .as_ref()
            .filter(|native| native.dialect.spoken_by(provider))
    }

    /// What a provider that does not speak the request's dialect leaves
    /// out of it (for the `x-p402-dropped` header): Anthropic has a web
    /// search of its own, which the client's is said as.
    pub fn dropped_by(&self, provider: &Provider) -> Vec<&'static str> {
        match &self.native {
            Some(native) if !native.dialect.spoken_by(provider) => native
                .dropped
                .iter()
                .copied()
                .filter(|feature| !(*feature == "web_search" && provider.api == Api::Anthropic))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses a Chat Completions body and the `X-P402-*` headers; the body's
/// `p402` object wins over a header.
pub fn parse(bytes: &[u8], headers: &HeaderMap) -> Result<ChatRequest, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(body) = value else {
        return Err(ParseError::Field(
            "the request body must be a JSON object".to_string(),
        ));
    };
    from_body(body, headers)
}

/// [`parse`], keeping the client's bytes in [`ChatRequest::raw`] when the
/// body can be forwarded as it came.
pub fn parse_keeping(bytes: &bytes::Bytes, headers: &HeaderMap) -> Result<ChatRequest, ParseError> {
    // A key written twice means one thing to p402 (serde keeps the last)
    // and perhaps another to a provider's parser: such a body is read the
    // usual way and never forwarded as it came.
    let (value, unique) = match serde_json::from_slice::<crate::wire::strict_json::Unique>(bytes) {
        Ok(unique) => (unique.0, true),
        Err(_) => (
            serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?,
            false,
        ),
    };
    let Value::Object(body) = value else {
        return Err(ParseError::Field(
            "the request body must be a JSON object".to_string(),
        ));
    };
    let as_it_came = unique && !body.contains_key("p402");
    let mut request = from_body(body, headers)?;
    if as_it_came {
        request.raw = Some(bytes.clone());
    }
    Ok(request)
}

/// A Chat Completions body (the client's, or one a door translated into),
/// checked and with p402's options read out of it.
pub fn from_body(
    mut body: Map<String, Value>,
    headers: &HeaderMap,
) -> Result<ChatRequest, ParseError> {
    match body.get("messages") {
        None => return Err(ParseError::NoMessages),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ParseError::Messages(
                "`messages` must not be empty".to_string(),
            ))
        }
        Some(Value::Array(messages)) => {
            for (i, message) in messages.iter().enumerate() {
                let role = message.get("role").and_then(Value::as_str);
                if role.is_none() {
                    return Err(ParseError::Messages(format!(
                        "messages[{i}] must be an object with a string `role`"
                    )));
                }
            }
        }
        Some(_) => {
            return Err(ParseError::Messages(
                "`messages` must be an array".to_string(),
            ))
        }
    }

    let model = match body.get("model") {
        None | Some(Value::Null) => AUTO.to_string(),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ParseError::Model),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ParseError::Field("`stream` must be a boolean".to_string())),
    };
    let client_wants_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ParseError::Field(
                    "`stream_options.include_usage` must be a boolean".to_string(),
                ))
            }
        },
        Some(_) => {
            return Err(ParseError::Field(
                "`stream_options` must be an object".to_string(),
            ))
        }
    };

    let from_body = match body.remove("p402") {
        None | Some(Value::Null) => P402Options::default(),
        Some(value @ Value::Object(_)) => serde_json::from_value(value)
            .map_err(|e| ParseError::Options(format!("invalid `p402` object: {e}")))?,
        Some(_) => return Err(ParseError::Options("`p402` must be an object".to_string())),
    };
    let options = merge(from_body, from_headers(headers)?);
    check(&options)?;

    Ok(ChatRequest {
        body,
        model,
        stream,
        client_wants_usage,
        options,
        native: None,
        raw: None,
    })
}

/// The subset of options a client can send as headers.
pub fn from_headers(headers: &HeaderMap) -> Result<P402Options, ParseError> {
    let text = |name: &str| -> Result<Option<String>, ParseError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| ParseError::Header(format!("header {name} is not valid text"))),
        }
    };
    let mode = text("x-p402-mode")?
        .map(|m| m.parse().map(ModeChoice::Named))
        .transpose()
        .map_err(|e: String| ParseError::Mode(e))?;
    let cache = text("x-p402-cache")?
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "false" | "0" | "no" | "off" => Ok(false),
            "true" | "1" | "yes" | "on" => Ok(true),
            _ => Err(ParseError::Header(format!(
                "X-P402-Cache must be true or false, found `{v}`"
            ))),
        })
        .transpose()?;
    let max_cost = text("x-p402-max-cost")?
        .map(|v| {
            v.parse::<f64>().map_err(|_| {
                ParseError::Header(format!(
                    "X-P402-Max-Cost must be a number of USD, found `{v}`"
                ))
            })
        })
        .transpose()?;
    Ok(P402Options {
        mode,
        session_id: text("x-p402-session")?,
        cache,
        provider: text("x-p402-provider")?,
        max_cost,
        ..P402Options::default()
    })
}

/// The body wins over a header, field by field.
fn merge(body: P402Options, headers: P402Options) -> P402Options {
    P402Options {
        mode: body.mode.or(headers.mode),
        session_id: body.session_id.or(headers.session_id),
        cache: body.cache.or(headers.cache),
        provider: body.provider.or(headers.provider),
        max_cost: body.max_cost.or(headers.max_cost),
        ..body
    }
}

fn check(options: &P402Options) -> Result<(), ParseError> {
    if let Some(cost) = options.max_cost {
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(ParseError::Options(format!(
                "max_cost must be a non-negative amount of USD, found {cost}"
            )));
        }
    }
    if options.cache_ttl == Some(0) {
        return Err(ParseError::Options(
            "cache_ttl must be a positive number of seconds".to_string(),
        ));
    }
    for (field, value) in [
        ("provider", &options.provider),
        ("model", &options.model),
        ("session_id", &options.session_id),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(ParseError::Options(format!(
                "p402.{field} must not be empty"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::mode::Mode;
    use crate::server::error::ApiError;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn p402_object_is_removed_and_read() {
        let r = parse(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"p402":{"mode":"quality","max_cost_usd":0.5,"cache":false},"temperature":0.2}"#,
            &HeaderMap::new(),
        )
        .expect("valid");
        assert!(!r.body.contains_key("p402"));
        assert_eq!(r.body.get("temperature"), Some(&Value::from(0.2)));
        assert_eq!(r.options.mode, Some(ModeChoice::Named(Mode::Quality)));
        assert_eq!(r.options.max_cost, Some(0.5));
        assert_eq!(r.options.cache, Some(false));
    }

    #[test]
    fn body_wins_over_headers() {
        let h = headers(&[
            ("x-p402-mode", "speed"),
            ("x-p402-session", "ses_h"),
            ("x-p402-cache", "false"),
        ]);
        let r = parse(
            br#"{"messages":[{"role":"user","content":"hi"}],"p402":{"mode":"cost"}}"#,
            &h,
        )
        .expect("valid");
        assert_eq!(r.options.mode, Some(ModeChoice::Named(Mode::Cost)));
        assert_eq!(r.options.session_id.as_deref(), Some("ses_h"));
        assert_eq!(r.options.cache, Some(false));
        assert_eq!(r.model, "auto");
    }

    #[test]
    fn errors_are_400_with_codes() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "invalid_json"),
            (b"[1,2]", "invalid_request"),
            (br#"{"model":"m"}"#, "missing_messages"),
            (br#"{"messages":"hi"}"#, "invalid_messages"),
            (br#"{"messages":[]}"#, "invalid_messages"),
            (br#"{"messages":[{"content":"x"}]}"#, "invalid_messages"),
            (
                br#"{"messages":[{"role":"user"}],"p402":{"mood":"x"}}"#,
                "invalid_p402",
            ),
            (
                br#"{"messages":[{"role":"user"}],"p402":{"mode":"cheap"}}"#,
                "invalid_p402",
            ),
            (
                br#"{"messages":[{"role":"user"}],"p402":{"max_cost":-1}}"#,
                "invalid_p402",
            ),
            (
                br#"{"messages":[{"role":"user"}],"stream":"yes"}"#,
                "invalid_request",
            ),
        ];
        for (body, code) in cases {
            let e = ApiError::from(parse(body, &HeaderMap::new()).expect_err("must fail"));
            assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        }
        let e = parse(
            br#"{"messages":[{"role":"user"}]}"#,
            &headers(&[("x-p402-mode", "cheap")]),
        )
        .expect_err("bad mode");
        assert_eq!(e.code(), "invalid_mode");
    }

    #[test]
    fn usage_request_is_detected() {
        let r = parse(
            br#"{"messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#,
            &HeaderMap::new(),
        )
        .expect("valid");
        assert!(r.stream && r.client_wants_usage);
    }
}
