//! The route stage: the prompt is counted once, and the router orders the
//! candidates that can serve it (see `router` for how).

use serde_json::{Map, Value};

use crate::cache::Probe;
use crate::error::ApiError;
use crate::request::ChatRequest;
use crate::router::Needs;
use crate::tokens;

use super::context::{Context, Plan};

pub async fn plan(cx: &Context, probe: Option<Probe>) -> Result<Plan, ApiError> {
    let input_tokens = count_input_tokens(&cx.chat).await?;
    let route = cx.state.router(&cx.runtime).route(&cx.chat, input_tokens)?;
    Ok(Plan {
        route,
        input_tokens,
        output_limit: Needs::of(&cx.chat, input_tokens).output_limit,
        probe,
    })
}

/// Input tokens of the request; large prompts are counted on a blocking
/// thread so that tokenizing them never stalls the async workers.
pub async fn count_input_tokens(chat: &ChatRequest) -> Result<u64, ApiError> {
    if tokens::text_bytes(&chat.body) <= tokens::INLINE_LIMIT {
        return Ok(tokens::count_input(&chat.body));
    }
    count_tokens_of(chat.body.clone()).await
}

/// [`count_input_tokens`] of a body p402 owns.
pub async fn count_tokens_of(body: Map<String, Value>) -> Result<u64, ApiError> {
    if tokens::text_bytes(&body) <= tokens::INLINE_LIMIT {
        return Ok(tokens::count_input(&body));
    }
    tokio::task::spawn_blocking(move || tokens::count_input(&body))
        .await
        .map_err(|e| ApiError::internal(format!("token counting failed: {e}")))
}
