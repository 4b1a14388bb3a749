//! A whole (not streamed) answer: what it used, its finish, its copy in
//! the cache, and its body in the client's format.

use http::Response;

use crate::body::Body;
use crate::budget::Reservation;
use crate::cache::replay;
use crate::cost::{self, Used};
use crate::error::ApiError;
use crate::providers::{native, Answer};

use super::context::{Context, Plan, Served};
use super::finish::{self, Ending, Exit};

pub async fn respond(
    cx: &Context,
    plan: &Plan,
    served: &Served<'_>,
    answer: Answer,
    reservation: Option<Reservation>,
) -> Response<Body> {
    let used = match (&answer, answer.usage()) {
        (_, reported @ Some(_)) => Used::of(reported, plan.input_tokens, ""),
        (Answer::Tree(tree), None) => {
            let mut text = String::new();
            cost::generated_text(tree, "message", &mut text);
            Used::of(None, plan.input_for_estimate(&cx.chat).await, &text)
        }
        (Answer::AsItCame { .. } | Answer::Native { .. }, None) => {
            Used::of(None, plan.input_for_estimate(&cx.chat).await, "")
        }
    };
    let exit = Exit::Answered {
        plan,
        served,
        used,
        reservation,
    };
    // Durable before the answer leaves: a crash after this point cannot
    // lose the charge.
    let metadata = finish::finish(cx, exit, Ending::OK).await;
    let config = &cx.runtime.config().cache;
    // An answer in the client's own dialect is stored as the
    // `chat.completion` it adds up to, when it is nothing more.
    let native = match (&answer, &cx.chat.native, &plan.probe) {
        (Answer::Native { bytes, .. }, Some(native), Some(_)) => {
            native::as_chat(native.dialect, bytes, config.store_tool_calls)
        }
        _ => None,
    };
    let tree = match &answer {
        Answer::Tree(tree) => Some(tree),
        _ => native.as_ref(),
    };
    if let (Some(probe), Some(tree)) = (plan.probe.clone(), tree) {
        if replay::storable(tree, config.store_tool_calls) {
            let candidate = &served.candidate;
            let stored = cx
                .state
                .cache()
                .store(
                    probe,
                    tree,
                    &used.usage,
                    &candidate.provider.name,
                    candidate.model_name(),
                    config,
                )
                .await;
            if let Err(e) = stored {
                tracing::warn!(request_id = %cx.id, "could not store the answer in the cache: {e}");
            }
        }
    }
    let Some(metadata) = metadata else {
        return cx
            .door
            .error(&ApiError::internal("an answer without metadata"), &cx.id);
    };
    // The provider's own name for a model (`accounts/fireworks/models/...`)
    // is not the catalog's: an answer that carries it is rewritten.
    let answer = match answer {
        Answer::AsItCame { bytes, .. }
            if served.candidate.upstream_model != served.candidate.model_name() =>
        {
            match serde_json::from_slice(&bytes) {
                Ok(tree) => Answer::Tree(tree),
                Err(e) => return cx.door.error(&ApiError::internal(e.to_string()), &cx.id),
            }
        }
        answer => answer,
    };
    match cx.door.answer(answer, &metadata, &cx.chat) {
        Ok(body) => finish::respond(body, &metadata),
        Err(e) => cx.door.error(&ApiError::internal(e.to_string()), &cx.id),
    }
}
