//! The request path of a model call, as a pipeline of small stages with
//! one finish.
//!
//! ```text
//!  request ─► read ─► admit ─► parse ─► charge ─► cache ─► route ─► failover ─► attempt
//!             body    permit   (door)   payers    hit?     plan     candidates   one try
//!                                                  │                              │
//!                                                  │                 whole answer │ stream
//!                                                  │                   (answer)   │ (relay)
//!                                                  ▼                              ▼
//!             finish: ledger entry ─► settle ─► metadata ─► log line ─► headers
//!                                                  │
//!                                                  ▼
//!                                   the client's door renders the body
//! ```
//!
//! | stage | file | what it does |
//! |---|---|---|
//! | read | [`read`] | the body, within a deadline and a size limit |
//! | admit | `limits` | a place among the concurrent requests, after the body |
//! | parse | `door` | the client's API into the internal request |
//! | charge | [`charge`] | who pays; refuses while the ledger cannot be written |
//! | cache | [`cache`] | a stored answer ends the request here |
//! | route | [`route`] | counts the prompt, orders the candidates |
//! | failover | [`failover`] | reserves for and tries each candidate in turn |
//! | attempt | [`attempt`] | one candidate: request out, answer or stream back |
//! | answer / relay | [`answer`], [`relay`] | a whole answer, or a stream as it arrives |
//! | finish | [`finish`] | the one exit: settle, metadata, log, headers |
//!
//! A side door (embeddings, a token count, a forwarded call) runs through
//! the same read, admit, charge and finish by [`side`], supplying only how
//! to read, reach and render.
//!
//! Each stage reads the [`Context`] the earlier ones built and adds what it
//! learns; none knows which door the request came by, or which API the
//! provider speaks (that is `providers::Adapter`'s).

mod answer;
mod attempt;
mod billed;
mod cache;
pub mod charge;
mod context;
mod failover;
mod finish;
mod outcome;
pub mod read;
mod relay;
pub mod route;
pub(crate) mod side;
mod unseen;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::endpoint::Door;
use crate::ops::state::{AppState, Runtime};
use crate::router::mode::ModeChoice;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::server::limits::Permit;

use cache::Looked;
use charge::Charge;
pub use context::Context;
use context::Plan;
pub(crate) use finish::SideEntry;
use finish::{Ending, Exit};
use outcome::Outcome;

/// Serves a model call by `door` through the stages below, on a task of
/// its own ([`own_task`]).
pub async fn handle(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    request_id: RequestId,
    local_key: Option<String>,
    door: Door,
) -> Response<Body> {
    let task_state = state.clone();
    let task_id = request_id.clone();
    let call = run(task_state, runtime, request, task_id, local_key, door);
    own_task(state, request_id, move |e, id| door.error(e, id), call).await
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
pub fn own_task<F>(
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

/// The stages in order, each ending in an [`Outcome`] that [`conclude`]
/// finishes and renders.
async fn run(
    state: AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    id: RequestId,
    local_key: Option<String>,
    door: Door,
) -> Response<Body> {
    let started = Instant::now();
    let local_key = local_key.as_deref();
    let (cx, permit) = match prepare(&state, runtime, request, &id, local_key, door).await {
        Ok((cx, permit)) => (Arc::new(Context { started, ..cx }), permit),
        Err(error) => {
            // Not understood: nothing is known but the door and the error.
            finish::unparsed(&state, &id, door, started, &error);
            return door.error(&error, &id);
        }
    };
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

/// read → admit → parse → charge: the request, understood and paid for.
async fn prepare(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    id: &RequestId,
    local_key: Option<&str>,
    door: Door,
) -> Result<(Context, Permit), ApiError> {
    let config = runtime.config();
    let (parts, body) = request.into_parts();
    let bytes = read::body(body, &parts.headers, &config.server).await?;
    // Taken once the body is in: a slow sender must not hold a place that
    // a ready request could use.
    let permit = state.limiter().admit(&config.limits)?;
    let mut chat = door.parse(&bytes, &parts.headers)?;
    let client_session = parts
        .headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string);
    let charge = Charge::resolve(&runtime, state.sessions(), state.book(), &chat, local_key)?;
    charge.ensure_ledger(state.book())?;
    if charge.is_budgeted() {
        unseen::refuse_under_budget(&chat)?;
    } else if unseen::background(&chat) {
        // A queued job is billed once it runs, whatever p402 does next:
        // sent to one candidate only, it can never be started twice.
        chat.options.failover = Some(false);
    }
    // A session may carry the mode of its requests (`p402 run --mode`).
    if chat.options.mode.is_none() {
        chat.options.mode = charge.session.as_ref().and_then(|s| s.mode);
    }
    let mode = chat
        .options
        .mode
        .unwrap_or(ModeChoice::Named(config.routing.default_mode));
    Ok((
        Context {
            state: state.clone(),
            runtime: Arc::clone(&runtime),
            id: id.clone(),
            started: Instant::now(),
            door,
            chat,
            charge,
            mode,
            client_session,
        },
        permit,
    ))
}
