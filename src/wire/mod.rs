//! The wire: the APIs p402 speaks to providers. The internal request
//! ([`request`], OpenAI Chat Completions in shape), how it is put on the
//! wire for each provider's API and how the answer is read back in
//! OpenAI's terms (the adapters: [`openai`], [`anthropic`], the native
//! dialects in [`responses`], [`native`] and [`verbatim`]), the tokens it
//! counts ([`tokens`]) and the pooled client that sends it (`upstream`).

pub mod anthropic;
pub mod native;
pub mod openai;
pub mod request;
pub mod responses;
pub(crate) mod strict_json;
pub mod tokens;
pub(crate) mod upstream;
pub mod verbatim;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{future, stream, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::catalog::{Api, Provider, Usage};
use crate::router::Candidate;
use crate::server::error::{Classify, ErrorKind};
use crate::wire::request::{ChatRequest, Dialect};

/// One event of an upstream stream, in OpenAI's chunk format.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A `chat.completion.chunk` object (or an error object).
    Chunk(Value),
    /// An event of the client's own dialect, passed on as it came (`name`
    /// is its SSE event name), parsed so that its usage can be read.
    Native {
        /// The SSE event name.
        name: String,
        /// The event's data.
        data: Value,
    },
    /// The end marker (`data: [DONE]`, or the dialect's own end).
    Done,
}

/// Why an upstream stream could not be read further.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The body's bytes could not be read (the connection failed, or they
    /// are not UTF-8).
    #[error("reading the upstream stream failed: {0}")]
    Read(String),
    /// An event's data is not JSON.
    #[error("the upstream sent an event that is not JSON: {0}")]
    InvalidJson(String),
}

/// An upstream stream as events, boxed so that every provider API's
/// stream has one type.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, StreamError>> + Send>>;

/// Statuses worth trying another candidate for: rate limits, server
/// errors, and the provider refusing p402's own key (401, 403), which says
/// nothing about the request. Any other 4xx is the request's own fault.
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status.is_server_error()
}

/// The user agent p402 sends upstream.
pub(crate) const USER_AGENT: &str = concat!("p402/", env!("CARGO_PKG_VERSION"));

/// A JSON `POST` of `body` to `path` under the provider's base URL, with
/// the provider's own key where its API wants it (never the client's) and
/// `headers` of the client's that belong to the API.
pub fn post_json(
    provider: &Provider,
    path: &str,
    body: &serde_json::Map<String, Value>,
    stream: bool,
    headers: &[(http::HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let bytes = serde_json::to_vec(body).map_err(|e| {
        TranslateError::Build(format!("cannot serialize the upstream request: {e}"))
    })?;
    post_bytes(provider, path, Bytes::from(bytes), stream, headers)
}

/// [`post_json`] of a body already written: the client's own bytes, when
/// p402 changes nothing in them.
pub fn post_bytes(
    provider: &Provider,
    path: &str,
    bytes: Bytes,
    stream: bool,
    headers: &[(http::HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, TranslateError> {
    let url = format!("{}{path}", provider.base_url);
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut builder = Request::builder()
        .method(http::Method::POST)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, accept)
        .header(http::header::USER_AGENT, USER_AGENT);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    if let Some((name, value)) = key_header(provider)? {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(bytes))
        .map_err(|e| TranslateError::Build(format!("cannot build the request to `{url}`: {e}")))
}

/// The header that carries p402's key for `provider` in its API (none for
/// a keyless local server), marked sensitive so that it is never logged.
pub(crate) fn key_header(
    provider: &Provider,
) -> Result<Option<(http::HeaderName, HeaderValue)>, TranslateError> {
    let Some(key) = &provider.api_key else {
        return Ok(None);
    };
    let (name, value) = match provider.api {
        Api::Openai => (
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.expose()),
        ),
        Api::Anthropic => (
            http::HeaderName::from_static("x-api-key"),
            key.expose().to_string(),
        ),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        TranslateError::Build(format!(
            "the key of provider `{}` contains characters not allowed in a header",
            provider.name
        ))
    })?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

/// The most web searches the provider may run for the request, each billed
/// per call: the client's limit where it set one (`max_tool_calls`,
/// `max_uses`), else [`DEFAULT_WEB_SEARCHES`], the limit a budgeted request
/// is sent with ([`cap_web_searches`]). OpenAI's search models
/// (`web_search_options`) search once per request.
pub(crate) fn search_limit(chat: &ChatRequest) -> u32 {
    use serde_json::Map;
    let limit = |v: Option<&Value>| {
        v.and_then(Value::as_u64).map_or(DEFAULT_WEB_SEARCHES, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        })
    };
    let tools = |body: &Map<String, Value>| -> Vec<Value> {
        body.get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter(|t| is_web_search_tool(t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(native) = &chat.native {
        let searching = tools(&native.body);
        if !searching.is_empty() {
            return match native.dialect {
                Dialect::Responses => limit(native.body.get("max_tool_calls")),
                Dialect::Messages => searching
                    .iter()
                    .map(|tool| limit(tool.get("max_uses")))
                    .fold(0u32, u32::saturating_add),
            };
        }
    }
    match chat.body.get(WEB_SEARCH) {
        Some(Value::Bool(true)) => DEFAULT_WEB_SEARCHES,
        Some(n) if n.is_u64() => limit(Some(n)),
        _ if chat.body.contains_key("web_search_options") => 1,
        _ => 0,
    }
}

/// Whether `provider` serves OpenAI's `/v1/embeddings` (Anthropic's API
/// has no embeddings).
pub(crate) fn embeds(provider: &Provider) -> bool {
    provider.api == Api::Openai
}

/// Whether `provider` counts tokens itself (`/v1/messages/count_tokens`,
/// Anthropic's API): then its count is the one that bills.
pub(crate) fn counts_tokens(provider: &Provider) -> bool {
    provider.api == Api::Anthropic
}

/// Why a request cannot be put in a provider's API, or its answer read
/// back; each variant is one of the SPEC's error codes.
/// The member of an internal (Chat Completions) assistant message, or of a
/// stream chunk's delta, that carries a Claude answer's thinking blocks
/// whole, with their signatures, between the Anthropic adapter and the
/// doors. It is p402's own: no door hands it to a client as it is.
pub const THINKING: &str = "p402_thinking";

/// The member of an internal (Chat Completions) request that asks for the
/// client's web search tool (OpenAI's `web_search`), for an adapter whose
/// API has one of its own (Anthropic's `web_search` server tool). Adapters
/// without one remove it; the answer's `x-p402-dropped` says so. Its value
/// is `true`, or the client's `max_tool_calls` (the most searches to run).
pub const WEB_SEARCH: &str = "p402_web_search";

/// Web searches a budget reserves for a search tool the client set no
/// limit on, and the limit p402 then sends with a budgeted request
/// (Anthropic's `max_uses`, OpenAI's `max_tool_calls`): each search is
/// billed per call, so a hard cap must bound how many run.
pub const DEFAULT_WEB_SEARCHES: u32 = 5;

/// Whether a tool is a provider's own web search (OpenAI's `web_search`,
/// `web_search_preview`; Anthropic's `web_search_20250305` and later).
pub fn is_web_search_tool(tool: &serde_json::Value) -> bool {
    tool.get("type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|kind| kind.starts_with("web_search"))
}

/// Puts the default search limit on every web search tool of a budgeted
/// native body that has none, so that no more searches run than were
/// reserved: Messages tools carry `max_uses` each; a Responses body has
/// one `max_tool_calls` for all its built-in tools.
pub fn cap_web_searches(
    body: &mut serde_json::Map<String, serde_json::Value>,
    dialect: crate::wire::request::Dialect,
) {
    use serde_json::Value;
    let Some(tools) = body.get_mut("tools").and_then(Value::as_array_mut) else {
        return;
    };
    match dialect {
        crate::wire::request::Dialect::Messages => {
            for tool in tools.iter_mut().filter(|t| is_web_search_tool(t)) {
                if let Some(tool) = tool.as_object_mut() {
                    tool.entry("max_uses")
                        .or_insert(Value::from(DEFAULT_WEB_SEARCHES));
                }
            }
        }
        crate::wire::request::Dialect::Responses => {
            if tools.iter().any(is_web_search_tool) {
                body.entry("max_tool_calls")
                    .or_insert(Value::from(DEFAULT_WEB_SEARCHES));
            }
        }
    }
}

/// Why a request could not be put in a provider's API (a 400 for the
/// client to fix), or its answer read back from it. Each message names the
/// field and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TranslateError {
    /// A message or content part the target API cannot take as it is.
    #[error("{0}")]
    Messages(String),
    /// `max_tokens` / `max_completion_tokens` out of the target's range.
    #[error("{0}")]
    MaxTokens(String),
    /// `stop` neither a string nor a list of strings.
    #[error("{0}")]
    Stop(String),
    /// A tool definition without what the target needs (a name, a schema).
    #[error("{0}")]
    Tools(String),
    /// A `tool_choice` the target has no equivalent for.
    #[error("{0}")]
    ToolChoice(String),
    /// A tool call whose arguments are not the JSON object the target needs.
    #[error("{0}")]
    ToolArguments(String),
    /// An image part the target cannot take (its URL or data).
    #[error("{0}")]
    Image(String),
    /// A `response_format` the target cannot express.
    #[error("{0}")]
    ResponseFormat(String),
    /// Content the target API has no way to say.
    #[error("{0}")]
    UnsupportedContent(String),
    /// A parameter the target API has no equivalent for.
    #[error("{0}")]
    UnsupportedParameter(String),
    /// The provider's answer is not what its API promises.
    #[error("{0}")]
    Response(String),
    /// The HTTP request itself could not be built (a key with characters a
    /// header cannot hold, say).
    #[error("{0}")]
    Build(String),
}

impl Classify for TranslateError {
    fn kind(&self) -> ErrorKind {
        match self {
            TranslateError::Response(_) => ErrorKind::UpstreamFailed,
            TranslateError::Build(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidRequest,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            TranslateError::Messages(_) => "invalid_messages",
            TranslateError::MaxTokens(_) => "invalid_max_tokens",
            TranslateError::Stop(_) => "invalid_stop",
            TranslateError::Tools(_) => "invalid_tools",
            TranslateError::ToolChoice(_) => "invalid_tool_choice",
            TranslateError::ToolArguments(_) => "invalid_tool_arguments",
            TranslateError::Image(_) => "invalid_image",
            TranslateError::ResponseFormat(_) => "invalid_response_format",
            TranslateError::UnsupportedContent(_) => "unsupported_content",
            TranslateError::UnsupportedParameter(_) => "unsupported_parameter",
            TranslateError::Response(_) => "invalid_response",
            TranslateError::Build(_) => "internal_error",
        }
    }
}

/// One provider API as p402 speaks it: building its requests, and reading
/// its answers, streams and errors in OpenAI's terms. The pipeline calls
/// these and nothing else, so that only this module tells the APIs apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapter(Api);

/// A successful upstream answer, in OpenAI's terms.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An OpenAI answer that reports its usage, kept as it came: a door
    /// that speaks OpenAI adds its metadata to the bytes without building
    /// the tree.
    AsItCame {
        /// The body as the provider sent it.
        bytes: Bytes,
        /// Its usage, read from it.
        usage: Usage,
    },
    /// An answer in the client's own dialect (not OpenAI's), from a
    /// provider that speaks it, passed on as it came.
    Native {
        /// The body as the provider sent it.
        bytes: Bytes,
        /// Its usage, read from it.
        usage: Usage,
    },
    /// A `chat.completion` object: translated, or wanted whole (to be
    /// cached, or counted when it reports no usage).
    Tree(Value),
}

impl Adapter {
    /// The adapter for the API `provider` speaks.
    pub fn of(provider: &Provider) -> Self {
        Adapter(provider.api)
    }

    /// Whether the provider speaks the client's own dialect: then the
    /// request goes out as the client wrote it, and the answer comes back
    /// as the provider sent it.
    pub fn native_dialect(self, candidate: &Candidate, request: &ChatRequest) -> Option<Dialect> {
        request
            .native_for(&candidate.provider)
            .map(|native| native.dialect)
    }

    /// The upstream request to `candidate` in its provider's own API, with
    /// `limit` (the output limit reserved for it) as its only output limit.
    pub fn build_request(
        self,
        candidate: &Candidate,
        request: &ChatRequest,
        limit: Option<u32>,
    ) -> Result<Request<Full<Bytes>>, TranslateError> {
        let provider = &candidate.provider;
        if let Some(native) = request.native_for(provider) {
            return match native.dialect {
                Dialect::Messages => anthropic::native::build_request(
                    provider,
                    candidate,
                    native,
                    request.stream,
                    limit,
                ),
                Dialect::Responses => {
                    responses::build_request(provider, candidate, native, request.stream, limit)
                }
            };
        }
        let lowered;
        let request = match limit {
            // The adapters rename the one limit for their target.
            Some(limit) => {
                let mut copy = request.clone();
                copy.raw = None;
                copy.body.remove("max_completion_tokens");
                copy.body
                    .insert("max_tokens".to_string(), Value::from(limit));
                // Budgeted: the searches are capped at what was reserved.
                if copy.body.get(WEB_SEARCH) == Some(&Value::Bool(true)) {
                    copy.body
                        .insert(WEB_SEARCH.into(), Value::from(DEFAULT_WEB_SEARCHES));
                }
                lowered = copy;
                &lowered
            }
            None => request,
        };
        match self.0 {
            Api::Openai => openai::build_request(provider, candidate, request),
            Api::Anthropic => anthropic::build_request(provider, candidate, request),
        }
    }

    /// A successful non-streamed body: as it came in the client's own
    /// dialect (`native`), as it came when it is OpenAI's and `as_it_came`
    /// allows, else as a `chat.completion` tree; or why it is not a usable
    /// answer.
    pub fn read_answer(
        self,
        bytes: Bytes,
        native: Option<Dialect>,
        as_it_came: bool,
    ) -> Result<Answer, String> {
        match native {
            Some(Dialect::Messages) => {
                let usage = anthropic::native::answer_usage(&bytes)?;
                return Ok(Answer::Native { bytes, usage });
            }
            Some(Dialect::Responses) => {
                let usage = responses::answer_usage(&bytes)?;
                return Ok(Answer::Native { bytes, usage });
            }
            None => {}
        }
        if as_it_came && self.0 == Api::Openai {
            if let Some(usage) = openai::passable_usage(&bytes) {
                return Ok(Answer::AsItCame { bytes, usage });
            }
        }
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let answer = match self.0 {
            Api::Openai => value,
            Api::Anthropic => anthropic::translate_response(&value).map_err(|e| e.to_string())?,
        };
        let Some(object) = answer.as_object() else {
            return Err("the answer is not a JSON object".into());
        };
        if object.contains_key("error") || !object.contains_key("choices") {
            return Err("a 200 answer without choices (an error body)".into());
        }
        Ok(Answer::Tree(answer))
    }

    /// An upstream SSE body as OpenAI chunk events, or as the client's
    /// own events when the provider speaks its dialect (`native`).
    pub fn decode_stream<S, E>(self, bytes: S, native: Option<Dialect>) -> EventStream
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        match (native, self.0) {
            (Some(Dialect::Messages), _) => anthropic::native::decode_stream(bytes),
            (Some(Dialect::Responses), _) => responses::decode_stream(bytes),
            (None, Api::Openai) => openai::decode_stream(bytes),
            (None, Api::Anthropic) => anthropic::translate_stream(bytes),
        }
    }

    /// What to do with an upstream error response. An OpenAI-compatible
    /// error goes back as it came; an Anthropic one is translated into
    /// OpenAI's shape and status.
    pub fn error(self, status: StatusCode, body: Bytes) -> ErrorVerdict {
        let model_missing = says_model_missing(status, &body);
        match self.0 {
            Api::Openai => ErrorVerdict {
                retryable: model_missing || is_retryable(status),
                model_missing,
                status,
                body,
            },
            Api::Anthropic => {
                let (status, value, retryable) = anthropic::translate_error(status, &body);
                ErrorVerdict {
                    retryable: model_missing || retryable || is_retryable(status),
                    model_missing,
                    status,
                    body: Bytes::from(value.to_string()),
                }
            }
        }
    }

    /// The content type of an error body from [`Adapter::error`]: the
    /// provider's own for a body passed on, JSON for a translated one.
    pub fn error_content_type(self, upstream: &HeaderMap) -> Option<HeaderValue> {
        match self.0 {
            Api::Openai => upstream.get(http::header::CONTENT_TYPE).cloned(),
            Api::Anthropic => Some(HeaderValue::from_static("application/json")),
        }
    }
}

impl Answer {
    /// The usage the provider reported, if it did.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Answer::AsItCame { usage, .. } | Answer::Native { usage, .. } => Some(*usage),
            Answer::Tree(answer) => openai::usage(answer),
        }
    }
}

/// The UTF-8 byte order mark, which the SSE format allows once at the start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why upstream SSE bytes could not be decoded.
#[derive(Debug)]
pub enum SseBytesError<E> {
    /// Reading the body failed.
    Upstream(E),
    /// SSE is UTF-8; these bytes are not.
    NotUtf8 {
        /// Where in the body the bad bytes start, in bytes from its start.
        offset: u64,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for SseBytesError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseBytesError::Upstream(e) => e.fmt(f),
            SseBytesError::NotUtf8 { offset } => {
                write!(
                    f,
                    "the stream is not UTF-8 (invalid byte at offset {offset})"
                )
            }
        }
    }
}

/// Upstream SSE bytes made safe for `eventsource-stream` 0.2.3.
///
/// - It panics on a stream that starts with a BOM: it skips one *byte* of
///   the three-byte mark and slices inside a character (upstream PR
///   jpopesculian/eventsource-stream#10, unreleased). The one BOM the format
///   allows is dropped here, even split across chunks, and a leading empty
///   line, which SSE ignores, keeps the crate's check from ever seeing
///   another one.
/// - After a byte that is not UTF-8 it emits nothing more, re-checks its
///   whole growing buffer on every chunk, and reports the error only when
///   the stream ends. Here the bytes are checked as they come (a character
///   split across chunks included) and the first invalid one ends the
///   stream with an error at once.
fn checked_sse_bytes<S, E>(
    bytes: S,
) -> impl Stream<Item = Result<Bytes, SseBytesError<E>>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    // The first bytes, held until they are known not to be a partial BOM.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut utf8 = Utf8Check::default();
    let checked = bytes
        .map(move |item| {
            let chunk = item.map_err(SseBytesError::Upstream)?;
            let chunk = match head.as_mut() {
                None => chunk,
                Some(pending) => {
                    pending.extend_from_slice(&chunk);
                    if pending.len() < BOM.len() && BOM.starts_with(pending) {
                        return Ok(Bytes::new());
                    }
                    let pending = head.take().unwrap_or_default();
                    let start = if pending.starts_with(BOM) {
                        BOM.len()
                    } else {
                        0
                    };
                    Bytes::from(pending).slice(start..)
                }
            };
            Ok(chunk)
        })
        // What comes before a bad byte still goes on, then the error.
        .flat_map(move |item| {
            let items = match item {
                Ok(chunk) => match utf8.check(&chunk) {
                    Ok(()) => [Some(Ok(chunk)), None],
                    Err((valid, error)) => [Some(Ok(chunk.slice(..valid))), Some(Err(error))],
                },
                Err(error) => [Some(Err(error)), None],
            };
            stream::iter(items.into_iter().flatten())
        })
        // Nothing after the first error: it ends the stream.
        .scan(false, |failed, item| {
            if *failed {
                return future::ready(None);
            }
            *failed = item.is_err();
            future::ready(Some(item))
        });
    stream::once(future::ready(Ok(Bytes::from_static(b"\n")))).chain(checked)
}

/// Incremental UTF-8 validation across chunk boundaries.
#[derive(Default)]
struct Utf8Check {
    /// The start of a character the last chunk ended inside (at most 3 bytes).
    carry: Vec<u8>,
    /// Bytes checked so far, for the error message.
    offset: u64,
}

impl Utf8Check {
    /// On a bad byte: how many of `chunk`'s bytes are valid, and the error.
    fn check<E>(&mut self, chunk: &[u8]) -> Result<(), (usize, SseBytesError<E>)> {
        let joined;
        let bytes = if self.carry.is_empty() {
            chunk
        } else {
            joined = [self.carry.as_slice(), chunk].concat();
            &joined
        };
        let carried = self.carry.len();
        let start = self.offset - carried as u64;
        self.carry.clear();
        match std::str::from_utf8(bytes) {
            Ok(_) => {}
            // A character cut at the end of the chunk: checked with the next.
            Err(e) if e.error_len().is_none() => {
                self.carry.extend_from_slice(&bytes[e.valid_up_to()..]);
            }
            Err(e) => {
                return Err((
                    e.valid_up_to().saturating_sub(carried),
                    SseBytesError::NotUtf8 {
                        offset: start + e.valid_up_to() as u64,
                    },
                ))
            }
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }
}

/// What to do with an upstream error response.
pub struct ErrorVerdict {
    /// Worth trying another candidate.
    pub retryable: bool,
    /// The provider does not have the model: a fault of the route, not of
    /// the request, so it is retryable, and the model is left out for now.
    pub model_missing: bool,
    /// What the client gets if it is not.
    pub status: StatusCode,
    pub(crate) body: Bytes,
}

/// Whether a 404 says the model does not exist, as providers word it:
/// OpenAI's `model_not_found` code ("The model `x` does not exist"),
/// Ollama's "model \"x\" not found, try pulling it first", vLLM's "The model
/// `x` does not exist", Anthropic's `not_found_error` "model: x".
pub fn says_model_missing(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::NOT_FOUND {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = value.get("error").unwrap_or(&value);
    if error.get("code").and_then(|c| c.as_str()) == Some("model_not_found") {
        return true;
    }
    let message = error
        .get("message")
        .or(Some(error))
        .and_then(|m| m.as_str())
        .or_else(|| value.get("message").and_then(|m| m.as_str()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    message.starts_with("model:")
        || (message.contains("model")
            && (message.contains("not found") || message.contains("does not exist")))
}

/// What an upstream event that is not JSON is reported as: where it broke
/// and how long it was, never its text, which reaches clients and
/// `/api/v2/providers` and may hold anything (a key echoed back, say).
pub fn not_json(error: &serde_json::Error, data: &str) -> String {
    format!("{error} (an event of {} bytes)", data.len())
}

/// A provider error (a body, or a stream's error event) passed to the
/// client must not carry p402's provider key
/// (some echo the key they were given, or part of it, when refusing it).
pub fn redact_key(body: Bytes, key: &str) -> Bytes {
    let key = key.as_bytes();
    if key.len() < 8 || !body.windows(key.len()).any(|w| w == key) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest: &[u8] = &body;
    while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"[redacted]");
        rest = &rest[at + key.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use serde_json::json;

    /// The events of a stream that must decode without error.
    fn decoded(api: Api, pieces: &[&[u8]]) -> Vec<StreamEvent> {
        raw(api, pieces)
            .into_iter()
            .map(|event| event.expect("an event"))
            .collect()
    }

    #[test]
    fn provider_keys_are_cut_out_of_error_bodies() {
        let key = "sk-live-0123456789abcdef";
        let body = Bytes::from(format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {key}. Also {key}"}}}}"#
        ));
        let out = redact_key(body, key);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains(key), "{text}");
        assert_eq!(text.matches("[redacted]").count(), 2);
        let clean = Bytes::from_static(b"{\"error\":{\"message\":\"bad request\"}}");
        assert_eq!(redact_key(clean.clone(), key), clean);
    }

    #[test]
    fn model_not_found_is_recognised_in_each_providers_words() {
        let missing = [
            json!({"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
            json!({"error": {"message": "model \"llama3.2\" not found, try pulling it first", "type": "not_found_error", "param": null, "code": null}}),
            json!({"error": "model 'qwen3:8b' not found"}),
            json!({"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "model: claude-9"}}),
        ];
        for body in missing {
            let bytes = body.to_string();
            assert!(
                says_model_missing(StatusCode::NOT_FOUND, bytes.as_bytes()),
                "{body}"
            );
            assert!(
                !says_model_missing(StatusCode::BAD_REQUEST, bytes.as_bytes()),
                "{body}"
            );
            assert!(
                Adapter(Api::Openai)
                    .error(StatusCode::NOT_FOUND, Bytes::from(bytes))
                    .retryable
            );
        }
        for body in [
            json!({"error": {"message": "Unknown path /v1/chat", "type": "invalid_request_error"}}),
            json!({"error": {"message": "file not found", "code": "not_found"}}),
        ] {
            let bytes = body.to_string();
            assert!(
                !says_model_missing(StatusCode::NOT_FOUND, bytes.as_bytes()),
                "{body}"
            );
        }
        assert!(!says_model_missing(
            StatusCode::NOT_FOUND,
            b"<html>404</html>"
        ));
    }

    #[test]
    fn invalid_utf8_ends_the_stream_with_an_error_at_once() {
        let good = "data: {\"choices\":[{\"delta\":{\"content\":\"h\u{e9}\u{1F600}\"}}]}\n\n";
        // A character split across chunks at every point is fine.
        let body = format!("{good}data: [DONE]\n\n");
        let bytes = body.as_bytes();
        let whole = decoded(Api::Openai, &[bytes]);
        assert_eq!(whole.len(), 2);
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decoded(Api::Openai, &[a, b]), whole, "split at {split}");
        }
        // A bad byte after the first event: the event, then an error, then
        // nothing, although more (valid) events follow.
        let mut bad = good.as_bytes().to_vec();
        bad.extend_from_slice(b"data: {\"x\": \"\xff\"}\n\n");
        let after: Vec<&[u8]> = vec![&bad, good.as_bytes(), b"data: [DONE]\n\n"];
        let events = raw(Api::Openai, &after);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].is_ok());
        match &events[1] {
            Err(StreamError::Read(message)) => {
                assert!(message.contains("not UTF-8"), "{message}");
                assert!(
                    message.contains(&format!("offset {}", good.len() + 13)),
                    "{message}"
                );
            }
            other => panic!("expected a read error, got {other:?}"),
        }
        // The same in Anthropic's format, and a truncated character at the
        // very end of a chunk followed by a byte that cannot continue it.
        let cut: Vec<&[u8]> = vec![b"event: ping\ndata: {\"type\":\"ping\"}\n\n\xe2\x82", b"A"];
        let events = raw(Api::Anthropic, &cut);
        let first_error = events.iter().find_map(|e| e.as_ref().err());
        assert!(
            matches!(first_error, Some(StreamError::Read(m)) if m.contains("not UTF-8")),
            "{events:?}"
        );
    }

    /// Everything a stream of `pieces` decodes to, errors included.
    fn raw(api: Api, pieces: &[&[u8]]) -> Vec<Result<StreamEvent, StreamError>> {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> = pieces
            .iter()
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        let events = match api {
            Api::Openai => openai::decode_stream(stream::iter(chunks)),
            Api::Anthropic => anthropic::translate_stream(stream::iter(chunks)),
        };
        events
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("in-memory streams are ready")
    }

    /// Found by fuzz/fuzz_targets/sse_openai.rs: a stream starting with a
    /// BOM made eventsource-stream slice inside it and panic the relay.
    #[test]
    fn a_leading_bom_is_dropped_wherever_the_chunks_split() {
        let body = "\u{feff}data: {\"choices\":[]}\n\ndata: [DONE]\n\n".as_bytes();
        let whole = decoded(Api::Openai, &[body]);
        assert_eq!(
            whole,
            vec![
                StreamEvent::Chunk(json!({"choices": []})),
                StreamEvent::Done
            ]
        );
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(decoded(Api::Openai, &[a, b]), whole, "split at {split}");
        }
        assert_eq!(
            decoded(Api::Openai, &[&body[..1], &body[1..2], &body[2..]]),
            whole
        );

        // Only one BOM is the format's: a second one starts the first
        // field's name, so that line is ignored.
        let twice = "\u{feff}\u{feff}data: {}\n\ndata: [DONE]\n\n";
        assert_eq!(
            decoded(Api::Openai, &[twice.as_bytes()]),
            vec![StreamEvent::Done]
        );

        let anthropic = "\u{feff}event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let events = decoded(Api::Anthropic, &[anthropic.as_bytes()]);
        assert_eq!(events.last(), Some(&StreamEvent::Done));
    }
}
