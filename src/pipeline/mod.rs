//! The request path of every call that reaches a provider, as a pipeline
//! of small stages with one finish, driven by [`run`].
//!
//! ```text
//!  request ─► read ─► admit ─► parse ─► charge ─► reach
//!             body    permit   (endpoint) payers    │
//!       ┌───────────────────────────────────────────┴──────────────┐
//!       │ a model call's door: the model stages     a side door: its own
//!       ▼                                            (embeddings, count_tokens,
//!  cache ─► route ─► failover ─► attempt              a forwarded call)
//!  hit?     plan     candidates   one try                  │
//!   │                              │ whole answer / stream  │ whole / relayed
//!   ▼                              ▼ (answer)   (relay)     ▼
//!  finish: ledger entry ─► settle ─► metadata ─► log line ─► headers
//!                                  │       (finish::side for a side door)
//!                                  ▼
//!                    the endpoint renders the body
//! ```
//!
//! | stage | file | what it does |
//! |---|---|---|
//! | read | [`read`] | the body, within a deadline and a size limit (or left streaming) |
//! | admit | `limits` | a place among the concurrent requests, after the body |
//! | parse | [`call::Endpoint`] | the client's API into the endpoint's request |
//! | charge | [`charge`] | who pays; refuses while the ledger cannot be written |
//! | reach | [`call::Endpoint`] | a side door reaches its provider; a model call's door hands its `Context` to the model stages (`model`) |
//! | cache | [`cache`] | a stored answer ends the request here |
//! | route | [`route`] | counts the prompt, orders the candidates |
//! | failover | [`failover`] | reserves for and tries each candidate in turn |
//! | attempt | [`attempt`] | one candidate: request out, answer or stream back |
//! | answer / relay | [`answer`], [`relay`] | a whole answer, or a stream as it arrives |
//! | finish | [`finish`] | the one exit: settle, metadata, log, headers |
//!
//! An endpoint supplies only how to read its request, how to reach the
//! provider and how to render the answer; the stages read the [`Context`]
//! (or the [`call::Call`]) the earlier ones built and add what they learn;
//! none knows which door the request came by, or which API the provider
//! speaks (that is `wire::Adapter`'s).

mod answer;
mod attempt;
mod billed;
mod cache;
pub(crate) mod call;
pub mod charge;
mod context;
mod failover;
mod finish;
mod model;
mod outcome;
pub mod read;
mod relay;
pub mod route;
mod unseen;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::ops::state::{AppState, Runtime};
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::server::limits::Permit;

use cache::Looked;
use call::{Call, Endpoint, Reached, Received, Served};
use charge::Charge;
pub use context::Context;
use context::Plan;
pub(crate) use finish::SideEntry;
use finish::{Ending, Exit, Side};
use outcome::Outcome;

/// Serves a call by `endpoint` (a model call's door, or a side door)
/// through the stages below, on a task of its own ([`own_task`]).
pub(crate) async fn handle<E: Endpoint>(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    request_id: RequestId,
    local_key: Option<String>,
    endpoint: E,
) -> Response<Body> {
    let task_state = state.clone();
    let task_id = request_id.clone();
    let lost = endpoint.clone();
    let call = run(task_state, runtime, request, task_id, local_key, endpoint);
    own_task(state, request_id, move |e, id| lost.error(e, id), call).await
}

/// Serves a call that reaches a provider (a model call, or a side door's:
/// embeddings, a token count, a forwarded call) on a task of its own,
/// which the client's connection does not own: hyper drops the handler
/// when the client hangs up, but a request already sent upstream is read
/// to its end and settled all the same (the provider bills it either way),
/// so that walking away can never make a budget stop counting. Shutdown
/// waits for these tasks. `lost` says, in the caller's dialect, that the
/// task ended without an answer.
///
/// The task is spawned now, not when the answer is awaited, and the call
/// is boxed once before it is: a request's future is kilobytes, and the
/// task tracker and the runtime would otherwise copy it by value several
/// times on its way into the task (a third of a passthrough request's
/// instructions, measured with callgrind).
fn own_task<F>(
    state: &AppState,
    request_id: RequestId,
    lost: impl FnOnce(&ApiError, &RequestId) -> Response<Body>,
    call: F,
) -> impl std::future::Future<Output = Response<Body>>
where
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let call = Box::pin(call);
    state.spawn(async move {
        let response = call.await;
        // The client may be gone: the work was done for the ledger.
        let _ = answer.send(response);
    });
    async move {
        match answered.await {
            Ok(response) => response,
            Err(_) => lost(
                &ApiError::internal("the request's task ended without an answer"),
                &request_id,
            ),
        }
    }
}

/// The driver: read, admit, parse, charge and reach, then the one finish
/// and the render. A model call's door hands its request to the model
/// stages ([`model_stages`]); a side door reaches its provider itself.
async fn run<E: Endpoint>(
    state: AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    id: RequestId,
    local_key: Option<String>,
    endpoint: E,
) -> Response<Body> {
    let mut call = Call {
        state: &state,
        runtime: &runtime,
        id: &id,
        local_key: local_key.as_deref(),
        started: Instant::now(),
        charge: None,
    };
    let (reached, permit) = match stages(&mut call, request, &endpoint).await {
        Ok(reached) => reached,
        Err(error) => {
            let ending = Side {
                door: endpoint.name(),
                endpoint: endpoint.endpoint(),
                status: error.status().as_u16(),
                error: Some(&error),
                served: None,
                entry: None,
            };
            finish::side(&state, &id, call.started, call.charge.as_ref(), ending).await;
            return endpoint.error(&error, &id);
        }
    };
    match reached {
        Reached::Model(cx) => model_stages(cx, call.local_key, permit).await,
        Reached::Whole { answer, served } => {
            drop(permit);
            let response = endpoint.render(&call, answer);
            let (who, entry) = match served.map(|s| *s) {
                Some(Served {
                    provider,
                    model,
                    entry,
                }) => (Some((provider, model)), entry),
                None => (None, None),
            };
            let ending = Side {
                door: endpoint.name(),
                endpoint: endpoint.endpoint(),
                status: response.status().as_u16(),
                error: None,
                served: who.as_ref().map(|(p, m)| (p.as_str(), m.as_deref())),
                entry,
            };
            finish::side(&state, &id, call.started, call.charge.as_ref(), ending).await;
            response
        }
        Reached::Relayed {
            answer,
            status,
            relay,
        } => {
            // The relayed body goes on without a place among the requests.
            drop(permit);
            let response = endpoint.render(&call, answer);
            let (task_state, task_id) = (state.clone(), id.clone());
            let (door, path) = (endpoint.name(), endpoint.endpoint().map(str::to_string));
            let (started, charge) = (call.started, call.charge.take());
            state.spawn(async move {
                let served = relay.await;
                let ending = Side {
                    door,
                    endpoint: path.as_deref(),
                    status,
                    error: None,
                    served: Some((served.provider.as_str(), served.model.as_deref())),
                    entry: served.entry,
                };
                finish::side(&task_state, &task_id, started, charge.as_ref(), ending).await;
            });
            response
        }
    }
}

/// read → admit → parse → charge → reach: the request, understood, paid
/// for, and at its provider (or handed to the model stages).
async fn stages<E: Endpoint>(
    call: &mut Call<'_>,
    request: Request<Incoming>,
    endpoint: &E,
) -> Result<(Reached<E::Answer>, Permit), ApiError> {
    let config = call.runtime.config();
    let (parts, body) = request.into_parts();
    let body = if E::STREAMS_BODY {
        Received::Streamed(body)
    } else {
        Received::Whole(read::body(body, &parts.headers, &config.server).await?)
    };
    // Taken once the body is in: a slow sender must not hold a place that
    // a ready request could use.
    let permit = call.state.limiter().admit(&config.limits)?;
    let request = endpoint.parse(call, parts, body)?;
    if let Some(options) = endpoint.options(&request) {
        let charge = Charge::for_options(
            call.runtime,
            call.state.sessions(),
            call.state.book(),
            options,
            call.local_key,
        )?;
        charge.ensure_ledger(call.state.book())?;
        call.charge = Some(charge);
    }
    let reached = endpoint.reach(call, request).await?;
    Ok((reached, permit))
}

/// A model call's own stages: a stored answer, else a plan and its
/// candidates tried in turn; each ends in an [`Outcome`] that [`conclude`]
/// finishes and renders.
async fn model_stages(cx: Arc<Context>, local_key: Option<&str>, permit: Permit) -> Response<Body> {
    let probe = match cache::lookup(&cx, local_key).await {
        Looked::Hit(hit) => return conclude(&cx, None, Outcome::Hit(hit), permit).await,
        Looked::Miss(probe) => probe,
    };
    let plan = match route::plan(&cx, probe).await {
        Ok(plan) => Arc::new(plan),
        Err(error) => return conclude(&cx, None, Outcome::failed(error), permit).await,
    };
    let outcome = failover::run(&cx, &plan).await;
    conclude(&cx, Some(&plan), outcome, permit).await
}

/// The one finish of every request that was understood, then its body in
/// the client's format. A stream is finished by the task that relays it,
/// when it ends: the client has its first bytes long before.
async fn conclude(
    cx: &Arc<Context>,
    plan: Option<&Arc<Plan>>,
    outcome: Outcome<'_>,
    permit: Permit,
) -> Response<Body> {
    let mut outcome = match (outcome, plan) {
        (
            Outcome::Stream {
                served,
                events,
                watch,
                reservation,
            },
            Some(plan),
        ) => {
            let (relaying, response) = relay::start(
                Arc::clone(cx),
                Arc::clone(plan),
                served,
                events,
                watch,
                reservation,
                permit,
            );
            let task_cx = Arc::clone(cx);
            cx.state.spawn(async move {
                let mut ended = relaying.run().await;
                let reservation = ended.reservation();
                let metadata =
                    finish::finish(&task_cx, ended.exit(reservation), ended.ending()).await;
                ended.close(metadata).await;
            });
            return response;
        }
        (outcome, _) => outcome,
    };
    // What a whole answer used, and what the cache's stored answer saved.
    let used = match (&outcome, plan) {
        (Outcome::Whole { answer, .. }, Some(plan)) => Some(answer::used(cx, plan, answer).await),
        (
            Outcome::Stopped {
                served,
                sent: true,
                limit,
                ..
            },
            Some(plan),
        ) => Some(billed::estimate(cx, plan, &served.candidate, *limit).await),
        _ => None,
    };
    let baseline = match &outcome {
        Outcome::Hit(_) => cx.state.router(&cx.runtime).baseline(&cx.chat.model),
        _ => None,
    };
    // Built only on the path that needs them, not for every answer.
    let stopping;
    let planless;
    let (exit, ending) = match (&mut outcome, plan, used) {
        (Outcome::Hit(hit), _, _) => (Exit::Hit { hit, baseline }, Ending::OK),
        (
            Outcome::Whole {
                served,
                reservation,
                ..
            },
            Some(plan),
            Some(used),
        ) => (
            Exit::Answered {
                plan,
                served,
                used,
                reservation: reservation.take(),
            },
            Ending {
                attempts: served.failover.len(),
                ..Ending::OK
            },
        ),
        // Stopped with the request upstream: billed, as an estimate.
        (
            Outcome::Stopped {
                served,
                reservation,
                ..
            },
            Some(plan),
            Some(used),
        ) => (
            Exit::Answered {
                plan,
                served,
                used,
                reservation: reservation.take(),
            },
            {
                stopping = failover::stopping();
                Ending::failed(&stopping)
            },
        ),
        (Outcome::Stopped { .. }, _, _) => {
            stopping = failover::stopping();
            (Exit::Failed, Ending::failed(&stopping))
        }
        (Outcome::Refused { status, .. }, _, _) => (
            Exit::Failed,
            Ending {
                status: status.as_u16(),
                ..Ending::OK
            },
        ),
        (Outcome::Failed { error, attempts }, _, _) => (
            Exit::Failed,
            Ending {
                attempts: attempts.len(),
                ..Ending::failed(error)
            },
        ),
        // A provider's answer always has its plan.
        _ => {
            planless = no_plan();
            (Exit::Failed, Ending::failed(&planless))
        }
    };
    let metadata = finish::finish(cx, exit, ending).await;
    match outcome {
        Outcome::Hit(hit) => cache::render(cx, &hit, metadata),
        Outcome::Whole { served, answer, .. } => {
            if let (Some(plan), Some(used)) = (plan, used) {
                answer::keep(cx, plan, &served, &answer, &used).await;
            }
            answer::render(cx, &served, answer, metadata)
        }
        Outcome::Refused {
            candidate,
            status,
            body,
            content_type,
        } => {
            let (status, body, content_type) = cx.door.refusal(status, body, content_type);
            finish::respond_refused(cx, candidate, status, body, content_type)
        }
        Outcome::Stopped { .. } => cx.door.error(&failover::stopping(), &cx.id),
        Outcome::Failed { error, .. } => cx.door.error(&error, &cx.id),
        Outcome::Stream { .. } => cx.door.error(&no_plan(), &cx.id),
    }
}

/// A provider's answer always has its plan; this says it had none.
fn no_plan() -> ApiError {
    ApiError::internal("a provider's answer without its plan")
}
