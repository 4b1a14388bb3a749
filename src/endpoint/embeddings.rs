//! `POST /v1/embeddings`: forwarded to the provider of the model, priced
//! from the catalog, charged and ledgered like a chat, and cached exactly
//! (the same input, model and options get the same vectors, free; a
//! paraphrase never does: a vector is not an answer that can be "close").
//!
//! RAG apps call this with `OPENAI_BASE_URL` set to p402; a model p402
//! does not know is refused under a budget (it cannot be priced), and
//! forwarded as it is otherwise.

use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::api::json_response;
use crate::cache::scope::Scope;
use crate::cache::Probe;
use crate::catalog::{Model, Provider, Usage};
use crate::money::cost::Costs;
use crate::ops::state::{AppState, Runtime};
use crate::pipeline::charge::{Charge, Reserved};
use crate::pipeline::{finish_side, Side, SideEntry};
use crate::router::Candidate;
use crate::server::body::Body;
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::wire::request::{from_headers, P402Options};

/// What an embeddings request came to, for its finish.
struct Embedded {
    response: Response<Body>,
    charge: Charge,
    /// Who served it: the provider, or `cache`, and the model.
    provider: String,
    model: String,
    /// Its ledger entry, when a provider answered.
    entry: Option<SideEntry>,
}

/// Serves `POST /v1/embeddings`; the request ends in the pipeline's side
/// finish, which settles its entry and writes its line, like a chat's.
pub async fn handle(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: &RequestId,
    local_key: Option<&str>,
) -> Response<Body> {
    let started = Instant::now();
    let side = |status, error, served| Side {
        door: "embeddings",
        endpoint: None,
        status,
        error,
        served,
        entry: None,
    };
    match embed(state, runtime, request, request_id, local_key, started).await {
        Ok(done) => {
            let status = done.response.status().as_u16();
            let ending = Side {
                entry: done.entry,
                ..side(status, None, Some((&done.provider, Some(&done.model))))
            };
            finish_side(state, request_id, started, Some(&done.charge), ending).await;
            done.response
        }
        Err(error) => {
            let ending = side(error.status().as_u16(), Some(&error), None);
            finish_side(state, request_id, started, None, ending).await;
            error.into_response(request_id)
        }
    }
}

async fn embed(
    state: &AppState,
    runtime: &Runtime,
    request: Request<Incoming>,
    request_id: &RequestId,
    local_key: Option<&str>,
    started: Instant,
) -> Result<Embedded, ApiError> {
    let config = runtime.config();
    let (parts, body) = request.into_parts();
    let bytes = crate::pipeline::read::body(body, &parts.headers, &config.server).await?;
    let _permit = state.limiter().admit(&config.limits)?;
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(ApiError::invalid(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    };
    let options = match body.remove("p402") {
        Some(value) => serde_json::from_value::<P402Options>(value).map_err(|e| {
            ApiError::invalid("invalid_p402", format!("invalid `p402` object: {e}"))
        })?,
        None => from_headers(&parts.headers)?,
    };
    let name = match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model.to_string(),
        _ => {
            return Err(ApiError::invalid(
                "invalid_model",
                "`model` must be a non-empty string",
            ))
        }
    };
    let texts = inputs(&body)?;
    let (provider, model) = resolve(runtime, &name)?;
    let charge = Charge::for_options(runtime, state.sessions(), state.book(), &options, local_key)?;
    charge.ensure_ledger(state.book())?;

    // The same input, model and options: the same vectors, free.
    let probe = cache_probe(runtime, &body, &name, local_key, &options);
    if let Some(probe) = &probe {
        if let Ok(Some(hit)) = state.cache().lookup_exact(probe) {
            let response = answer(
                hit.entry.response.clone(),
                request_id,
                &provider.name,
                &name,
                true,
                Costs {
                    cost: Some(crate::money::Usd::ZERO),
                    direct: None,
                },
                started,
            );
            return Ok(Embedded {
                response,
                charge,
                provider: "cache".into(),
                model: name,
                entry: None,
            });
        }
    }

    let input_tokens: u64 = texts
        .iter()
        .map(|t| crate::wire::tokens::count_text(t))
        .sum();
    let candidate = Candidate {
        provider: provider.clone(),
        upstream_model: model
            .as_ref()
            .map_or(name.clone(), |m| m.upstream_id.clone()),
        model: model.clone(),
        expected_cost: None,
    };
    let reservation = match charge
        .reserve(
            state.book(),
            &candidate,
            input_tokens,
            crate::money::budget::Output::single(Some(0)),
        )
        .await?
    {
        Reserved::Held(reservation, _) => Some(reservation),
        Reserved::Unbudgeted => None,
        Reserved::Unpriced => return Err(crate::pipeline::charge::ChargeError::Unpriced.into()),
        Reserved::Short(shortfall) => {
            let shortfalls = [(shortfall, candidate.model_name().to_string())];
            return Err(charge.refuse(state, &shortfalls).into());
        }
    };

    let mut upstream_body = body.clone();
    upstream_body.insert(
        "model".into(),
        Value::from(candidate.upstream_model.as_str()),
    );
    let upstream = crate::wire::post_json(&provider, "/embeddings", &upstream_body, false, &[])?;
    let answer_from = runtime.upstream.send(upstream).await.map_err(|e| {
        ApiError::new(
            ErrorKind::UpstreamFailed,
            "upstream_failed",
            format!("provider `{}` did not answer: {e}", provider.name),
        )
    })?;
    let status = answer_from.status();
    let limit = usize::try_from(runtime.upstream.config().max_response_bytes).unwrap_or(usize::MAX);
    let bytes = Limited::new(answer_from.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::UpstreamFailed,
                "upstream_failed",
                format!("reading the embeddings failed: {e}"),
            )
        })?
        .to_bytes();
    if !status.is_success() {
        // The provider refused: nothing generated, nothing charged.
        drop(reservation);
        let bytes = match &provider.api_key {
            Some(key) => crate::wire::redact_key(bytes, key.expose()),
            None => bytes,
        };
        let mut response = Response::new(crate::server::body::full(bytes));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(Embedded {
            response,
            charge,
            provider: provider.name.clone(),
            model: candidate.model_name().to_string(),
            entry: None,
        });
    }
    let vectors: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::UpstreamFailed,
            "invalid_response",
            format!("the embeddings are not JSON: {e}"),
        )
    })?;
    let reported = vectors
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64);
    let usage = Usage {
        input_tokens: reported.unwrap_or(input_tokens),
        ..Usage::default()
    };
    let price = candidate.price();
    let costs = Costs::of(Some(&usage), price, price);
    let mut entry = charge.entry(request_id, &provider.name);
    entry.door = Some("embeddings".to_string());
    entry.model = Some(candidate.model_name().to_string());
    entry.input_tokens = usage.input_tokens;
    entry.cost_nanos = costs.cost.map_or(0, |c| c.nanos());
    entry.direct_nanos = costs.direct.or(costs.cost).map_or(0, |c| c.nanos());
    entry.estimated = reported.is_none();
    if let Some(probe) = probe {
        let stored = state
            .cache()
            .store(
                probe,
                &vectors,
                &usage,
                &provider.name,
                candidate.model_name(),
                &config.cache,
            )
            .await;
        if let Err(e) = stored {
            tracing::warn!(request_id = %request_id, "could not cache the embeddings: {e}");
        }
    }
    let response = answer(
        vectors,
        request_id,
        &provider.name,
        candidate.model_name(),
        false,
        costs,
        started,
    );
    Ok(Embedded {
        response,
        charge,
        provider: provider.name.clone(),
        model: candidate.model_name().to_string(),
        entry: Some(SideEntry {
            entry,
            reservation,
            settled: false,
        }),
    })
}

/// The texts to embed: a string, or an array of strings (an array of token
/// arrays is counted by its length).
fn inputs(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "invalid_input",
            "`input` must be a string, an array of strings, or token arrays",
        )
    };
    match body.get("input") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                // Tokens already: one word each is close enough to count.
                Value::Array(tokens) => Ok("x ".repeat(tokens.len())),
                Value::Number(_) => Ok("x ".to_string()),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

/// The model's provider: the catalog's, or `provider/model`.
fn resolve(
    runtime: &Runtime,
    name: &str,
) -> Result<(std::sync::Arc<Provider>, Option<Model>), ApiError> {
    let found = runtime.catalog.find(name).and_then(|model| {
        let provider = runtime.catalog.provider(&model.provider)?;
        Some((provider.clone(), Some(model.clone())))
    });
    let found = found.or_else(|| {
        let (provider, _) = name.split_once('/')?;
        Some((runtime.catalog.provider(provider)?.clone(), None))
    });
    let (provider, model) = found
        .or_else(|| {
            let provider = runtime
                .catalog
                .provider(&runtime.config().routing.passthrough_provider)?;
            Some((provider.clone(), None))
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                "model_not_found",
                format!("model `{name}` is not in p402's catalog and no provider serves it"),
            )
        })?;
    if !crate::wire::embeds(&provider) {
        return Err(ApiError::invalid(
            "unsupported_model",
            format!(
                "model `{name}` is served by `{}`, which has no OpenAI embeddings API",
                provider.name
            ),
        ));
    }
    if let Some(reason) = provider.unusable_reason() {
        return Err(ApiError::new(
            ErrorKind::NoProvider,
            "provider_unavailable",
            reason,
        ));
    }
    Ok((provider, model))
}

/// Where the vectors of this exact input are cached, unless the cache is
/// off (or the request says no).
fn cache_probe(
    runtime: &Runtime,
    body: &Map<String, Value>,
    model: &str,
    local_key: Option<&str>,
    options: &P402Options,
) -> Option<Probe> {
    let config = &runtime.config().cache;
    if !config.enabled || options.cache == Some(false) {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(b"p402 embeddings\0");
    hasher.update(model.as_bytes());
    for key in ["dimensions", "encoding_format"] {
        hasher.update(b"\0");
        hasher.update(body.get(key).map(Value::to_string).unwrap_or_default());
    }
    let scope = Scope(hasher.finalize().into());
    let scope = match local_key {
        Some(key) if !config.share_across_keys => scope.for_key(key),
        _ => scope,
    };
    let question = body.get("input").map(Value::to_string).unwrap_or_default();
    let ttl = options.cache_ttl.unwrap_or(config.ttl_seconds);
    Some(Probe::new(scope, question, None, ttl))
}

/// The vectors with `p402_metadata`, and the figures as headers.
fn answer(
    mut vectors: Value,
    request_id: &RequestId,
    provider: &str,
    model: &str,
    cached: bool,
    costs: Costs,
    started: Instant,
) -> Response<Body> {
    let dollars = |usd: Option<crate::money::Usd>| usd.map(|u| u.to_dollars());
    if let Some(object) = vectors.as_object_mut() {
        object.insert(
            "p402_metadata".into(),
            json!({
                "request_id": request_id.as_str(),
                "provider": if cached { "cache" } else { provider },
                "model": model,
                "cached": cached,
                "cost_usd": dollars(costs.cost),
                "latency_ms": crate::ops::request_log::elapsed_ms(started),
            }),
        );
    }
    let mut response = json_response(StatusCode::OK, &vectors);
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-p402-provider", if cached { "cache" } else { provider }),
        ("x-p402-model", model),
        ("x-p402-cached", if cached { "true" } else { "false" }),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    if let Some(cost) = costs.cost {
        if let Ok(value) = HeaderValue::from_str(&format!("{:.9}", cost.to_dollars())) {
            headers.insert("x-p402-cost-usd", value);
        }
    }
    response
}
