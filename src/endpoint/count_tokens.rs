//! `POST /v1/messages/count_tokens`: Anthropic's token counter, which
//! Claude Code asks to size its context. For a model an Anthropic provider
//! serves, the provider counts (its tokenizer is the one that bills); for
//! any other, p402 counts with its own. Counting is free and is not
//! ledgered.

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::api::json_response;
use crate::endpoint::messages;
use crate::endpoint::Door;
use crate::ops::state::{AppState, Runtime};
use crate::pipeline::{finish_side, Side};
use crate::server::body::{self, Body};
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::anthropic::native;

/// Serves `POST /v1/messages/count_tokens`; free, so its finish writes
/// only its line and its count by door.
pub async fn handle(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: &RequestId,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let (response, error) = match count(state, runtime, request).await {
        Ok(response) => (response, None),
        Err(error) => (Door::Messages.error(&error, request_id), Some(error)),
    };
    let ending = Side {
        door: "count_tokens",
        endpoint: None,
        status: response.status().as_u16(),
        error: error.as_ref(),
        served: None,
        entry: None,
    };
    finish_side(state, request_id, started, None, ending).await;
    response
}

async fn count(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let server = &runtime.config().server;
    let bytes = crate::pipeline::read::body(body, &parts.headers, server).await?;
    let _permit = state.limiter().admit(&runtime.config().limits)?;
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(ApiError::invalid(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    };
    body.remove("p402");
    let Some(model) = body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::invalid(
            "invalid_model",
            "`model` must be a non-empty string",
        ));
    };
    let anthropic = runtime.catalog.find(&model).and_then(|m| {
        let provider = runtime.catalog.provider(&m.provider)?;
        (crate::wire::counts_tokens(provider) && provider.is_usable())
            .then(|| (provider.clone(), m.upstream_id.clone()))
    });
    if let Some((provider, upstream_model)) = anthropic {
        return forward(runtime, &provider, &upstream_model, &body, &parts.headers).await;
    }
    let chat = messages::as_chat_body(&body);
    let tokens = crate::pipeline::route::count_tokens_of(chat).await?;
    // p402's tokenizer is not the model's: said in the body and a header.
    let mut response = json_response(
        StatusCode::OK,
        &json!({"input_tokens": tokens, "p402_estimated": true}),
    );
    response
        .headers_mut()
        .insert("x-p402-estimated", http::HeaderValue::from_static("true"));
    Ok(response)
}

/// The provider's own count, passed on as it came.
async fn forward(
    runtime: &Runtime,
    provider: &std::sync::Arc<crate::catalog::Provider>,
    model: &str,
    body: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let api_headers: Vec<_> = ["anthropic-version", "anthropic-beta"]
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            Some((http::HeaderName::from_static(name), value.clone()))
        })
        .collect();
    let upstream = native::count_request(provider, model, body, &api_headers)?;
    let answer = runtime.upstream.send(upstream).await.map_err(|e| {
        ApiError::new(
            crate::server::error::ErrorKind::UpstreamFailed,
            "upstream_failed",
            format!("provider `{}` could not count: {e}", provider.name),
        )
    })?;
    let status = answer.status();
    let content_type = answer.headers().get(http::header::CONTENT_TYPE).cloned();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                crate::server::error::ErrorKind::UpstreamFailed,
                "upstream_failed",
                format!("reading the count failed: {e}"),
            )
        })?
        .to_bytes();
    let bytes = match &provider.api_key {
        Some(key) => crate::wire::redact_key(bytes, key.expose()),
        None => bytes,
    };
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}
