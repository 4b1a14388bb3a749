//! `POST /v1/messages/count_tokens`: Anthropic's token counter, which
//! Claude Code asks to size its context. For a model an Anthropic provider
//! serves, the provider counts (its tokenizer is the one that bills); for
//! any other, p402 counts with its own. Counting is free and is not
//! ledgered.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use crate::api::json_response;
use crate::endpoint::messages;
use crate::endpoint::Door;
use crate::ops::state::Runtime;
use crate::pipeline::call::{Call, Endpoint, Reached, Received, Served};
use crate::server::body::{self, Body};
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::anthropic::native;
use crate::wire::request::P402Options;

/// The token-count door.
#[derive(Clone, Copy)]
pub(crate) struct CountTokens;

/// A count asked for: the Messages body and its model.
pub(crate) struct Asked {
    body: Map<String, Value>,
    model: String,
    headers: HeaderMap,
}

/// A count: the provider's, passed on as it came, or p402's own.
pub(crate) enum Counted {
    Provider {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        bytes: Bytes,
    },
    Estimated(u64),
}

impl Endpoint for CountTokens {
    type Request = Asked;
    type Answer = Counted;

    fn name(&self) -> &'static str {
        "count_tokens"
    }

    fn parse(&self, _cx: &Call<'_>, parts: Parts, body: Received) -> Result<Asked, ApiError> {
        let mut body = body.json_object()?;
        body.remove("p402");
        let Some(model) = body
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
        else {
            return Err(ApiError::invalid(
                "invalid_model",
                "`model` must be a non-empty string",
            ));
        };
        Ok(Asked {
            body,
            model,
            headers: parts.headers,
        })
    }

    /// Free, so no options and no charge: its finish writes only its line
    /// and its count by door.
    fn options<'r>(&self, _asked: &'r Asked) -> Option<&'r P402Options> {
        None
    }

    async fn reach(&self, cx: &mut Call<'_>, asked: Asked) -> Result<Reached<Counted>, ApiError> {
        let runtime = cx.runtime;
        let anthropic = runtime.catalog.find(&asked.model).and_then(|m| {
            let provider = runtime.catalog.provider(&m.provider)?;
            (crate::wire::counts_tokens(provider) && provider.is_usable())
                .then(|| (provider.clone(), m.upstream_id.clone()))
        });
        if let Some((provider, upstream_model)) = anthropic {
            let answer = forward(
                runtime,
                &provider,
                &upstream_model,
                &asked.body,
                &asked.headers,
            )
            .await?;
            return Ok(Reached::Whole {
                answer,
                served: Some(Box::new(Served {
                    provider: provider.name.clone(),
                    model: Some(asked.model),
                    entry: None,
                })),
            });
        }
        let chat = messages::as_chat_body(&asked.body);
        let tokens = crate::pipeline::route::count_tokens_of(chat).await?;
        Ok(Reached::Whole {
            answer: Counted::Estimated(tokens),
            served: None,
        })
    }

    fn render(&self, _cx: &Call<'_>, answer: Counted) -> Response<Body> {
        match answer {
            Counted::Provider {
                status,
                content_type,
                bytes,
            } => {
                let mut response = Response::new(body::full(bytes));
                *response.status_mut() = status;
                if let Some(content_type) = content_type {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, content_type);
                }
                response
            }
            Counted::Estimated(tokens) => {
                // p402's tokenizer is not the model's: said in the body and
                // a header.
                let mut response = json_response(
                    StatusCode::OK,
                    &json!({"input_tokens": tokens, "p402_estimated": true}),
                );
                response
                    .headers_mut()
                    .insert("x-p402-estimated", HeaderValue::from_static("true"));
                response
            }
        }
    }

    /// In Anthropic's shape: only Messages clients count tokens.
    fn error(&self, error: &ApiError, id: &RequestId) -> Response<Body> {
        Door::Messages.error(error, id)
    }
}

/// The provider's own count, passed on as it came.
async fn forward(
    runtime: &Runtime,
    provider: &std::sync::Arc<crate::catalog::Provider>,
    model: &str,
    body: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Counted, ApiError> {
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
    Ok(Counted::Provider {
        status,
        content_type,
        bytes,
    })
}
