//! A whole (not streamed) answer: what it used, its copy in the cache, and
//! its body in the client's format. The driver finishes it between the
//! first and the last of these.

use http::Response;

use crate::cache::replay;
use crate::money::cost::{self, Used};
use crate::money::metadata::Metadata;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::wire::{native, Answer};

use super::context::{Context, Plan, Served};
use super::finish;

/// What the answer used: the provider's usage, or an estimate from the
/// prompt and the text generated when it reported none.
pub async fn used(cx: &Context, plan: &Plan, answer: &Answer) -> Used {
    match (answer, answer.usage()) {
        (_, reported @ Some(_)) => Used::of(reported, plan.input_tokens, ""),
        (Answer::Tree(tree), None) => {
            let mut text = String::new();
            cost::generated_text(tree, "message", &mut text);
            Used::of(None, plan.input_for_estimate(&cx.chat).await, &text)
        }
        (Answer::AsItCame { .. } | Answer::Native { .. }, None) => {
            Used::of(None, plan.input_for_estimate(&cx.chat).await, "")
        }
    }
}

/// Stores the answer in the cache when it may be stored. An answer in the
/// client's own dialect is stored as the `chat.completion` it adds up to,
/// when it is nothing more.
pub async fn keep(cx: &Context, plan: &Plan, served: &Served<'_>, answer: &Answer, used: &Used) {
    let Some(probe) = plan.probe.clone() else {
        return;
    };
    let config = &cx.runtime.config().cache;
    let native = match (answer, &cx.chat.native) {
        (Answer::Native { bytes, .. }, Some(native)) => {
            native::as_chat(native.dialect, bytes, config.store_tool_calls)
        }
        _ => None,
    };
    let tree = match answer {
        Answer::Tree(tree) => Some(tree),
        _ => native.as_ref(),
    };
    let Some(tree) = tree.filter(|tree| replay::storable(tree, config.store_tool_calls)) else {
        return;
    };
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

/// The answer in the client's format, with its metadata.
pub fn render(
    cx: &Context,
    served: &Served<'_>,
    answer: Answer,
    metadata: Option<Metadata>,
) -> Response<Body> {
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
