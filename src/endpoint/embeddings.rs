//! `POST /v1/embeddings`: forwarded to the provider of the model, priced
//! from the catalog, charged and ledgered like a chat, and cached exactly
//! (the same input, model and options get the same vectors, free; a
//! paraphrase never does: a vector is not an answer that can be "close").
//!
//! RAG apps call this with `OPENAI_BASE_URL` set to p402; a model p402
//! does not know is refused under a budget (it cannot be priced), and
//! forwarded as it is otherwise.

use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::api::json_response;
use crate::cache::scope::Scope;
use crate::cache::Probe;
use crate::catalog::{Model, Provider, Usage};
use crate::money::cost::Costs;
use crate::ops::state::Runtime;
use crate::pipeline::call::{Call, Endpoint, Reached, Received, Served};
use crate::pipeline::SideEntry;
use crate::router::Candidate;
use crate::server::body::Body;
use crate::server::error::{ApiError, ErrorKind};
use crate::server::ids::RequestId;
use crate::wire::request::{from_headers, P402Options};

/// The embeddings door.
#[derive(Clone, Copy)]
pub(crate) struct Embeddings;

/// Its name in the log line, `/metrics` and the ledger.
const NAME: &str = "embeddings";

/// An embeddings request, understood: its body, the model asked for and
/// who serves it.
pub(crate) struct Asked {
    body: Map<String, Value>,
    name: String,
    texts: Vec<String>,
    provider: std::sync::Arc<Provider>,
    model: Option<Model>,
    options: P402Options,
}

/// What an embeddings request came to.
pub(crate) enum Embedded {
    /// The vectors, from the provider or the cache.
    Vectors {
        vectors: Value,
        provider: String,
        model: String,
        cached: bool,
        costs: Costs,
    },
    /// The provider's refusal, passed on as it came (its key redacted).
    Refused { status: StatusCode, bytes: Bytes },
}

impl Endpoint for Embeddings {
    type Request = Asked;
    type Answer = Embedded;

    fn name(&self) -> &'static str {
        NAME
    }

    fn parse(&self, cx: &Call<'_>, parts: Parts, body: Received) -> Result<Asked, ApiError> {
        let mut body = body.json_object()?;
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
        let (provider, model) = resolve(cx.runtime, &name)?;
        Ok(Asked {
            body,
            name,
            texts,
            provider,
            model,
            options,
        })
    }

    fn options<'r>(&self, asked: &'r Asked) -> Option<&'r P402Options> {
        Some(&asked.options)
    }

    async fn reach(&self, cx: &mut Call<'_>, asked: Asked) -> Result<Reached<Embedded>, ApiError> {
        embed(cx, asked).await
    }

    fn render(&self, cx: &Call<'_>, answer: Embedded) -> Response<Body> {
        match answer {
            Embedded::Vectors {
                vectors,
                provider,
                model,
                cached,
                costs,
            } => render(vectors, cx.id, &provider, &model, cached, costs, cx.started),
            Embedded::Refused { status, bytes } => {
                let mut response = Response::new(crate::server::body::full(bytes));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
        }
    }
}

/// The exact cache, else the provider: reserved for, sent, and its
/// vectors stored.
async fn embed(cx: &Call<'_>, asked: Asked) -> Result<Reached<Embedded>, ApiError> {
    let Asked {
        body,
        name,
        texts,
        provider,
        model,
        options,
    } = asked;
    let (state, runtime) = (cx.state, cx.runtime);
    let config = runtime.config();

    // The same input, model and options: the same vectors, free.
    let probe = cache_probe(runtime, &body, &name, cx.local_key, &options);
    if let Some(probe) = &probe {
        if let Ok(Some(hit)) = state.cache().lookup_exact(probe) {
            return Ok(Reached::Whole {
                answer: Embedded::Vectors {
                    vectors: hit.entry.response.clone(),
                    provider: provider.name.clone(),
                    model: name.clone(),
                    cached: true,
                    costs: Costs {
                        cost: Some(crate::money::Usd::ZERO),
                        direct: None,
                    },
                },
                served: Some(Box::new(Served {
                    provider: "cache".into(),
                    model: Some(name),
                    entry: None,
                })),
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
    let reservation = cx.reserve(&candidate, input_tokens).await?;

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
    let served = |entry| Served {
        provider: provider.name.clone(),
        model: Some(candidate.model_name().to_string()),
        entry,
    };
    if !status.is_success() {
        // The provider refused: nothing generated, nothing charged.
        drop(reservation);
        let bytes = match &provider.api_key {
            Some(key) => crate::wire::redact_key(bytes, key.expose()),
            None => bytes,
        };
        return Ok(Reached::Whole {
            answer: Embedded::Refused { status, bytes },
            served: Some(Box::new(served(None))),
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
    let mut entry = cx.charge()?.entry(cx.id, &provider.name);
    entry.door = Some(NAME.to_string());
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
            tracing::warn!(request_id = %cx.id, "could not cache the embeddings: {e}");
        }
    }
    Ok(Reached::Whole {
        answer: Embedded::Vectors {
            vectors,
            provider: provider.name.clone(),
            model: candidate.model_name().to_string(),
            cached: false,
            costs,
        },
        served: Some(Box::new(served(Some(SideEntry {
            entry,
            reservation,
            settled: false,
        })))),
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
fn render(
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
