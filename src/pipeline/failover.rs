//! Failover: the candidates in the router's order, each reserved for and
//! tried in turn, until one answers, one refuses the request itself, or
//! none is left.

use std::borrow::Cow;

use crate::money::metadata::{AttemptStatus, FailedAttempt};
use crate::ops::metrics::ErrorLabels;
use crate::router::Candidate;
use crate::server::error::{ApiError, Classify, ErrorKind};

use super::attempt::{self, AttemptError, Upstream};
use super::billed;
use super::charge::{ChargeError, Reserved};
use super::context::{Context, Plan, Served};
use super::outcome::Outcome;

/// Tries the candidates of `plan` in order. The outcome is the first
/// answer, the first refusal of the request itself, or the error that says
/// why no candidate could answer, for the driver to finish. A failed
/// attempt the provider received (a timeout, a broken-off answer) is
/// charged as an estimate before the next is tried (`billed`).
pub async fn run<'p>(cx: &Context, plan: &'p Plan) -> Outcome<'p> {
    match attempts(cx, plan).await {
        Ok(outcome) => outcome,
        Err((error, attempts)) => Outcome::Failed { error, attempts },
    }
}

/// The loop over the candidates; an `Err` is why none answered, with the
/// attempts that failed.
async fn attempts<'p>(
    cx: &Context,
    plan: &'p Plan,
) -> Result<Outcome<'p>, (ApiError, Vec<FailedAttempt>)> {
    let state = &cx.state;
    let mut failed: Vec<FailedAttempt> = Vec::new();
    let mut all_timeouts = true;
    // The request could not be put in any tried provider's API: the
    // client's to change (a 400), not a provider failure (a 502).
    let mut untranslatable: Option<ApiError> = None;
    let mut all_untranslatable = true;
    let mut shortfalls = Vec::new();
    let mut unpriced = 0;
    for candidate in &plan.route.candidates {
        let provider = &candidate.provider.name;
        // A provider whose breaker is half-open takes one trial request at a
        // time; the others skip it.
        if !state.health().admits(provider) {
            continue;
        }
        let reserved = cx
            .charge
            .reserve(
                state.book(),
                candidate,
                reserved_input(plan, candidate),
                crate::money::budget::Output {
                    limit: plan.output_limit,
                    choices: plan.choices,
                    searches: plan.searches,
                },
            )
            .await
            .map_err(|e| (ApiError::from(e), failed.clone()))?;
        let (reservation, limit) = match reserved {
            Reserved::Held(reservation, limit) => (Some(reservation), Some(limit)),
            Reserved::Unbudgeted => (None, None),
            Reserved::Unpriced => {
                unpriced += 1;
                state.health().release_trial(provider);
                continue;
            }
            Reserved::Short(shortfall) => {
                shortfalls.push((shortfall, candidate.model_name().to_string()));
                state.health().release_trial(provider);
                continue;
            }
        };
        let (upstream_started, outcome) = attempt::send(cx, plan, candidate, limit).await;
        let served = Served {
            candidate: Cow::Borrowed(candidate),
            failover: failed.clone(),
            upstream_started,
        };
        let error = match outcome {
            Ok(Upstream::Whole(answer)) => {
                return Ok(Outcome::Whole {
                    served,
                    answer,
                    reservation,
                })
            }
            Ok(Upstream::Stream(events, watch)) => {
                return Ok(Outcome::Stream {
                    served: Served {
                        candidate: Cow::Owned(candidate.clone()),
                        ..served
                    },
                    events,
                    watch,
                    reservation,
                })
            }
            Ok(Upstream::Stopped { sent }) => {
                return Ok(Outcome::Stopped {
                    served,
                    sent,
                    reservation,
                    limit,
                })
            }
            Err(error) if error.retryable() => error,
            // The request's own fault: another provider would refuse it too.
            Err(error) => return refused(candidate, error).map_err(|e| (e, failed)),
        };
        // The provider had the request and bills it: charged as an
        // estimate; otherwise the reservation goes back.
        let cost_usd = if error.billed() {
            billed::settle(cx, plan, candidate, limit, reservation, failed.len() + 1).await
        } else {
            drop(reservation);
            None
        };
        all_timeouts &= error.timed_out();
        match &error {
            AttemptError::Translate(e) if e.kind() == ErrorKind::InvalidRequest => {
                untranslatable.get_or_insert_with(|| {
                    let message = format!("{e} (model `{}`)", candidate.model_name());
                    ApiError::new(e.kind(), e.code(), message)
                });
            }
            _ => all_untranslatable = false,
        }
        if error.counts_against_provider() {
            state.health().record_failure(
                provider,
                &error.to_string(),
                cx.runtime.breaker_policy(),
            );
        }
        let status = error.status().to_string();
        state
            .metrics()
            .upstream_errors
            .get_or_create(&ErrorLabels {
                provider: provider.clone(),
                status,
            })
            .inc();
        tracing::warn!(
            request_id = %cx.id,
            provider = %provider,
            model = %candidate.upstream_model,
            "upstream attempt failed: {error}",
        );
        failed.push(FailedAttempt {
            provider: provider.clone(),
            model: candidate.model_name().to_string(),
            status: error.status(),
            cost_usd,
        });
    }
    if failed.is_empty() && !shortfalls.is_empty() {
        let error = cx.charge.refuse(state, &shortfalls);
        return Err((error.into(), failed));
    }
    if failed.is_empty() && unpriced > 0 {
        return Err((ChargeError::Unpriced.into(), failed));
    }
    if failed.is_empty() {
        let error = ApiError::new(
            ErrorKind::NoProvider,
            "no_provider_available",
            "every candidate provider is failing (circuit open); try again shortly",
        );
        return Err((error, failed));
    }
    if let (true, Some(error)) = (all_untranslatable, untranslatable) {
        return Err((error, failed));
    }
    let error = every_attempt_failed(&failed, all_timeouts, cx.door.passes_on_overload());
    Err((error, failed))
}

/// The input tokens a budget holds for on `candidate`: those counted, or
/// when the provider reads input p402 cannot count, as many as the model's
/// context window takes (the most it can bill).
fn reserved_input(plan: &Plan, candidate: &Candidate) -> u64 {
    if !plan.hidden_input {
        return plan.input_tokens;
    }
    let context = candidate
        .model
        .as_ref()
        .and_then(|m| m.context)
        .map_or(super::unseen::HIDDEN_INPUT_WITHOUT_CONTEXT, u64::from);
    plan.input_tokens.max(context)
}

/// A provider's refusal of the request itself, to go back to the client
/// without p402's provider key if the provider echoed it.
fn refused(candidate: &Candidate, error: AttemptError) -> Result<Outcome<'_>, ApiError> {
    let AttemptError::Refused {
        status,
        body,
        content_type,
    } = error
    else {
        return Err(ApiError::internal(format!(
            "an attempt error taken for a refusal: {error}"
        )));
    };
    let body = match &candidate.provider.api_key {
        Some(key) => crate::wire::redact_key(body, key.expose()),
        None => body,
    };
    Ok(Outcome::Refused {
        candidate,
        status,
        body,
        content_type,
    })
}

/// What the client hears when p402 stops mid-request (shutdown past its
/// grace).
pub fn stopping() -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        "shutting_down",
        "p402 is shutting down; a request the provider had received is charged as an estimate",
    )
}

fn every_attempt_failed(
    failed: &[FailedAttempt],
    all_timeouts: bool,
    pass_on_overload: bool,
) -> ApiError {
    let attempts: Vec<String> = failed
        .iter()
        .map(|a| format!("{}/{}: {}", a.provider, a.model, a.status))
        .collect();
    let every = |status: u16| {
        pass_on_overload
            && !failed.is_empty()
            && failed
                .iter()
                .all(|a| a.status == AttemptStatus::Http(status))
    };
    let (kind, code, summary) = if all_timeouts && !failed.is_empty() {
        (
            ErrorKind::UpstreamTimeout,
            "upstream_timeout",
            "no provider answered in time",
        )
    } else if every(529) {
        // Passed on as the providers said it, so clients back off.
        (
            ErrorKind::Overloaded,
            "upstream_overloaded",
            "every provider tried is overloaded",
        )
    } else if every(429) {
        (
            ErrorKind::RateLimited,
            "upstream_rate_limited",
            "every provider tried is rate-limiting p402",
        )
    } else if !failed.is_empty() && failed.iter().all(|a| a.status == AttemptStatus::Http(404)) {
        (
            ErrorKind::NotFound,
            "model_not_found",
            "no provider tried has this model",
        )
    } else {
        (
            ErrorKind::UpstreamFailed,
            "upstream_failed",
            "every eligible provider failed",
        )
    };
    ApiError::new(kind, code, format!("{summary} ({})", attempts.join("; ")))
}
