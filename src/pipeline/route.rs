//! The route stage: the prompt is counted once, and the router orders the
//! candidates that can serve it (see `router` for how).

use serde_json::{Map, Value};

use crate::cache::Probe;
use crate::catalog::Capability;
use crate::router::mode::{Mode, ModeChoice};
use crate::router::{Needs, CONTEXT_RESERVE_TOKENS};
use crate::server::error::ApiError;
use crate::wire::request::ChatRequest;
use crate::wire::tokens;

use super::context::{Context, Plan};

pub async fn plan(cx: &Context, probe: Option<Probe>) -> Result<Plan, ApiError> {
    // Read once for the bound, the router and the plan.
    let mut needs = Needs::of(&cx.chat, 0);
    let (input_tokens, input_counted) = match bound_is_enough(cx, &needs) {
        Some(bound) => (bound, false),
        None => (count_input_tokens(&cx.chat).await?, true),
    };
    needs.input_tokens = input_tokens;
    let route = cx.state.router(&cx.runtime).route_for(&cx.chat, &needs)?;
    Ok(Plan {
        route,
        input_tokens,
        input_counted,
        output_limit: needs.output_limit,
        choices: needs.choices,
        searches: needs.searches,
        hidden_input: super::unseen::hidden_input(&cx.chat),
        probe,
    })
}

/// An upper bound of the prompt's tokens, when nothing needs more than
/// that: a passthrough request charged to no budget goes to the model it
/// names, so its count only has to show that the prompt fits that model's
/// context. A token of text is at least a byte, so twice the text's bytes
/// (JSON escapes count more than once) is a bound, and tokenizing is
/// skipped. Images are counted by tiles, not bytes, so they need the
/// count; so does a prompt too close to the context for the bound to show
/// it fits. The provider's usage is charged all the same; the count is
/// made after all if the answer reports none.
fn bound_is_enough(cx: &Context, needs: &Needs) -> Option<u64> {
    let passthrough = matches!(cx.mode, ModeChoice::Named(Mode::Passthrough));
    if !passthrough || cx.charge.is_budgeted() {
        return None;
    }
    if needs.capabilities.contains(&Capability::Vision) {
        return None;
    }
    let bound = 2 * tokens::text_bytes(&cx.chat.body) as u64 + 64;
    let context = cx
        .runtime
        .catalog
        .find(&cx.chat.model)
        .and_then(|model| model.context);
    let reserve = u64::from(needs.output_limit.unwrap_or(CONTEXT_RESERVE_TOKENS));
    match context {
        Some(context) if bound + reserve > u64::from(context) => None,
        _ => Some(bound),
    }
}

impl Plan {
    /// The prompt's tokens for a charge the provider reported no usage
    /// for: counted now if routing needed only a bound.
    pub async fn input_for_estimate(&self, chat: &ChatRequest) -> u64 {
        if self.input_counted {
            return self.input_tokens;
        }
        count_input_tokens(chat).await.unwrap_or(self.input_tokens)
    }
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
