//! Billed failures: an attempt the provider received that then timed out
//! or broke off (SPEC §14).
//!
//! The provider has the prompt, and may have generated part or all of an
//! answer p402 never saw: it bills that whether or not anything came back.
//! So such an attempt is settled as an estimate marked `estimated`, never
//! at $0: the prompt, plus the output limit reserved for it when the answer
//! was to come whole (a stream's failure is the relay's, which counts what
//! arrived). The request then fails over like any failed attempt, and the
//! next candidate is charged for its own answer: both attempts are paid.

use crate::catalog::Usage;
use crate::money::budget::{Reservation, DEFAULT_MAX_OUTPUT};
use crate::money::cost::{Costs, Used};
use crate::money::Usd;
use crate::router::Candidate;

use super::context::{Context, Plan};
use super::finish;

/// What the provider may have used for an attempt that gave no answer.
pub async fn estimate(
    cx: &Context,
    plan: &Plan,
    candidate: &Candidate,
    limit: Option<u32>,
) -> Used {
    let input_tokens = plan.input_for_estimate(&cx.chat).await;
    // A whole answer may have been generated in full; a stream that never
    // started sent nothing (its failures mid-way are settled by the relay).
    let output_tokens = if cx.chat.stream {
        0
    } else {
        let model_max = candidate.model.as_ref().and_then(|m| m.max_output);
        u64::from(
            limit
                .or(plan.output_limit)
                .or(model_max)
                .unwrap_or(DEFAULT_MAX_OUTPUT),
        )
    };
    Used {
        usage: Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        },
        estimated: true,
    }
}

/// Settles the estimate of failed attempt number `attempt` (from 1) as a
/// ledger entry of its own (`<request id>.<attempt>`, so that the answer's
/// entry keeps the request's id), against the reservation made for it.
/// Returns what it cost, for `p402_metadata.failover`.
pub async fn settle(
    cx: &Context,
    plan: &Plan,
    candidate: &Candidate,
    limit: Option<u32>,
    reservation: Option<Reservation>,
    attempt: usize,
) -> Option<Usd> {
    let used = estimate(cx, plan, candidate, limit).await;
    let costs = Costs::of(Some(&used.usage), candidate.price(), plan.route.baseline);
    let mut entry = finish::provider_entry(cx, candidate, &used, &costs);
    entry.request_id = format!("{}.{attempt}", cx.id);
    if let Some(warning) = finish::settle(cx, reservation, &entry).await {
        tracing::warn!(request_id = %cx.id, "{warning}");
    }
    tracing::warn!(
        request_id = %cx.id,
        provider = %candidate.provider.name,
        model = %candidate.model_name(),
        cost_usd = costs.cost.unwrap_or(Usd::ZERO).to_dollars(),
        "a failed attempt the provider received is charged as an estimate"
    );
    costs.cost
}
