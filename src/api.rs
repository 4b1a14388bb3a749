//! The small read-only endpoints: health and the model list.

use chrono::{SecondsFormat, Utc};
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::state::AppState;

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /health`: 200 while serving, with the config's state so that an
/// invalid file on disk is visible even though the old config still runs.
pub fn health(state: &AppState) -> Response<Body> {
    let runtime = state.runtime();
    let status = state.config_status();
    let config = json!({
        "status": if status.error.is_some() { "error" } else { "ok" },
        "path": status.path.as_ref().map(|p| p.display().to_string()),
        "source": if status.path.is_some() { "file" } else { "built-in defaults" },
        "loaded_at": status.loaded_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "reloads": status.reloads,
        "error": status.error,
    });
    json_response(
        StatusCode::OK,
        &json!({
            "status": "healthy",
            "version": env!("CARGO_PKG_VERSION"),
            "providers": state.routable_providers(&runtime),
            // No cache store exists in this build yet: say so rather than claim one.
            "cache": "disabled",
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "uptime_seconds": state.uptime().as_secs(),
            "config": config,
        }),
    )
}

/// `GET /v1/models`: the catalog models that can be routed to now, in
/// OpenAI's list shape so SDKs' `models.list()` works.
pub fn models(state: &AppState) -> Response<Body> {
    let runtime = state.runtime();
    let data: Vec<Value> = runtime
        .catalog
        .models()
        .iter()
        .filter(|m| {
            runtime
                .catalog
                .provider(&m.provider)
                .is_some_and(|p| p.is_usable())
        })
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.provider,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}
