//! The fake provider every system under test forwards to: a hyper server on
//! loopback that answers a chat completion at once with a realistic OpenAI
//! `chat.completion`, and a streamed one with a realistic SSE stream whose
//! content chunks leave on a fixed schedule (one every `CHUNK_GAP`), so that
//! what a proxy adds between chunks can be measured at the client.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Time between two content chunks of a stream: 100 tokens a second, the
/// speed of a fast hosted model.
pub const CHUNK_GAP: Duration = Duration::from_millis(10);

/// The streamed answer, one piece per chunk.
pub const PIECES: [&str; 10] = [
    "HTTP 402",
    " means Payment",
    " Required: the",
    " request is valid",
    " but the account",
    " cannot pay for it.",
    " Return 403 when",
    " paying would not",
    " help, as with missing",
    " permissions.",
];

/// Runs the upstream in this process until stdin closes (the bench that
/// started it has gone), on one thread: a fast provider, not a contender for
/// the cores the systems under test need.
pub fn run() {
    crate::procs::exit_when_stdin_closes();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("upstream runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        eprintln!("upstream listening on http://{addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
    // The other doors' APIs, whole answers only (`--doors`).
    let other = match path.as_str() {
        "/v1/messages" => Some(message(&model)),
        "/v1/responses" => Some(response(&model)),
        _ => None,
    };
    if let Some(answer) = other {
        return Ok(with_type(
            Full::new(Bytes::from(answer.to_string())).boxed(),
            "application/json",
        ));
    }
    if body["stream"] == json!(true) {
        let usage = body["stream_options"]["include_usage"] == json!(true);
        Ok(stream(&model, usage))
    } else {
        Ok(with_type(
            Full::new(Bytes::from(completion(&model).to_string())).boxed(),
            "application/json",
        ))
    }
}

fn with_type(body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", content_type.parse().expect("header"));
    response
}

/// A chat completion as OpenAI returns it (about 1 KB).
fn completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-BLoadBench7Qx2Jm4kT9wZ",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": PIECES.concat(),
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 58,
            "completion_tokens": 31,
            "total_tokens": 89,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_b376dfbbd5"
    })
}

/// The same answer as Anthropic's Messages API returns it.
fn message(model: &str) -> Value {
    json!({
        "id": "msg_01LoadBench7Qx2Jm4kT9wZ",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": PIECES.concat()}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 58, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 31, "service_tier": "standard"}
    })
}

/// The same answer as OpenAI's Responses API returns it.
fn response(model: &str) -> Value {
    json!({
        "id": "resp_LoadBench7Qx2Jm4kT9wZ",
        "object": "response",
        "created_at": 1_764_000_000,
        "status": "completed",
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": [{"type": "message", "id": "msg_LoadBench7Qx2", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": PIECES.concat(),
            "annotations": []}]}],
        "parallel_tool_calls": true,
        "store": false,
        "usage": {"input_tokens": 58, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 31, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 89}
    })
}

/// The SSE events of a stream: the role chunk at once, then one content
/// chunk every `CHUNK_GAP`, the finish chunk, the usage chunk when asked
/// for (with `usage: null` on the others, as OpenAI sends it), `[DONE]`.
fn stream(model: &str, include_usage: bool) -> Response<Body> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": "chatcmpl-BLoadStream3Hf8Kq1Vn",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_b376dfbbd5",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    // (delay after the previous event, payload)
    let mut events = vec![(
        Duration::ZERO,
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
    )];
    for piece in PIECES {
        events.push((CHUNK_GAP, chunk(json!({"content": piece}), Value::Null)));
    }
    events.push((Duration::ZERO, chunk(json!({}), json!("stop"))));
    if include_usage {
        let usage = json!({
            "id": "chatcmpl-BLoadStream3Hf8Kq1Vn",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_b376dfbbd5",
            "choices": [],
            "usage": {"prompt_tokens": 58, "completion_tokens": 31, "total_tokens": 89,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        });
        events.push((Duration::ZERO, usage.to_string()));
    }
    events.push((Duration::ZERO, "[DONE]".to_string()));

    // Each event leaves at a fixed offset from the first, not after the
    // previous one, so a late timer does not push the rest of the stream.
    let start = tokio::time::Instant::now();
    let mut due = start;
    let schedule: Vec<(tokio::time::Instant, Bytes)> = events
        .into_iter()
        .map(|(delay, data)| {
            due += delay;
            (due, Bytes::from(format!("data: {data}\n\n")))
        })
        .collect();
    let frames = futures_util::stream::unfold(schedule.into_iter(), |mut rest| async move {
        let (due, bytes) = rest.next()?;
        tokio::time::sleep_until(due).await;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rest))
    });
    with_type(StreamBody::new(frames).boxed(), "text/event-stream")
}
