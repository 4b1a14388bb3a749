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
pub mod read;
mod relay;
pub mod route;
mod unseen;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::door::Door;
use crate::error::ApiError;
use crate::ids::RequestId;
use crate::limits::Permit;
use crate::mode::ModeChoice;
use crate::state::{AppState, Runtime};

use cache::Looked;
use charge::Charge;
pub use context::Context;
use finish::{Ending, Exit};

/// Serves a model call on a task of its own, which the client's connection
/// does not own: hyper drops the handler when the client hangs up, but a
/// request already sent upstream is read to its end and settled all the
/// same (the provider bills it either way), so that walking away can never
/// make a budget stop counting. Shutdown waits for these tasks.
pub async fn handle(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    request_id: RequestId,
    local_key: Option<String>,
    door: Door,
) -> Response<Body> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task_state = state.clone();
    let task_id = request_id.clone();
    state.spawn(async move {
        let response = run(task_state, runtime, request, task_id, local_key, door).await;
        // The client may be gone: the work was done for the ledger.
        let _ = answer.send(response);
    });
    match answered.await {
        Ok(response) => response,
        Err(_) => door.error(
            &ApiError::internal("the request's task ended without an answer"),
            &request_id,
        ),
    }
}

/// The stages in order. Every exit goes through the finish.
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
            finish::unparsed(&state, &id, door, started, &error);
            return door.error(&error, &id);
        }
    };
    let probe = match cache::lookup(&cx, local_key).await {
        Looked::Hit(response) => return response,
        Looked::Miss(probe) => probe,
    };
    let outcome = match route::plan(&cx, probe).await {
        Ok(plan) => failover::run(&cx, Arc::new(plan), Some(permit)).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(response) => response,
        Err(error) => {
            // No answer: nothing was charged, only the log line is written.
            finish::finish(&cx, Exit::Failed, Ending::failed(&error)).await;
            cx.door.error(&error, &cx.id)
        }
    }
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
