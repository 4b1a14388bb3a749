//! The path of a side door: a call that reaches a provider without being a
//! model call (embeddings, a token count, a forwarded `/v1/*` call).
//!
//! ```text
//!  request ─► read ─► admit ─► parse ─► charge ─► reach ─► finish ─► render
//!             body    permit   (door)   payers    (door)   settle,   (door)
//!             (or streamed)                        │        log line
//!                                                  └─ relayed: finished when
//!                                                     the body has gone through
//! ```
//!
//! The stages that are the same for every request (reading the body
//! within its limits, a place among the concurrent requests, who pays, the
//! one finish that settles the entry and writes the log line) are the
//! driver's, here, and are the model call's own functions. A side door
//! ([`SideDoor`]) supplies only what is its own: how to read its request,
//! how to reach the provider, and how to render the answer, so a new side
//! door cannot forget the ledger, the log line or the count by door.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;

use super::charge::{Charge, ChargeError, Reserved};
use super::finish::{self, Side, SideEntry};
use crate::money::budget::Output;
use crate::money::budget::Reservation;
use crate::ops::state::{AppState, Runtime};
use crate::router::Candidate;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::request::P402Options;

/// A side door: what one endpoint that is not a model call supplies to
/// the driver ([`handle`]), which runs everything else.
pub(crate) trait SideDoor: Send + Sync + 'static {
    /// Its name in the log line and `/metrics`.
    const NAME: &'static str;
    /// The body goes to the provider as it arrives (a forwarded upload can
    /// be larger than any limit p402 would read whole), instead of being
    /// read whole, within `[server]`'s limits, before anything else.
    const STREAMS_BODY: bool = false;

    /// The request as the door understood it.
    type Request: Send;
    /// What the provider (or p402 itself) answered, to be rendered.
    type Answer: Send;

    /// The method and path of a call forwarded as it is, for the log line.
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Reads the request; its `p402` options (from the body or the
    /// headers) say who pays, and a door whose calls cost nothing (a token
    /// count) gives none and is not charged.
    fn parse(
        &self,
        cx: &SideCx<'_>,
        parts: Parts,
        body: Received,
    ) -> Result<Parsed<Self::Request>, ApiError>;

    /// Reaches the provider (or answers from p402's own cache or count).
    fn reach(
        &self,
        cx: &SideCx<'_>,
        request: Self::Request,
    ) -> impl Future<Output = Result<Reached<Self::Answer>, ApiError>> + Send;

    /// The client's response.
    fn render(&self, cx: &SideCx<'_>, answer: Self::Answer) -> Response<Body>;

    /// An error in the door's dialect.
    fn error(error: &ApiError, id: &RequestId) -> Response<Body> {
        error.clone().into_response(id)
    }
}

/// The request's body, as the door asked for it.
pub(crate) enum Received {
    /// Read whole, within the body limits.
    Whole(Bytes),
    /// Not read: the door streams it to the provider.
    Streamed(Incoming),
}

/// A side door's request, and the options that say who pays for it.
pub(crate) struct Parsed<R> {
    pub request: R,
    /// `None`: the call is free and not charged to anyone.
    pub options: Option<P402Options>,
}

/// Who served a side door's request, and its ledger entry.
pub(crate) struct Served {
    /// The provider, or `cache`.
    pub provider: String,
    pub model: Option<String>,
    /// Its entry, still to be settled against its reservation; or the one
    /// the door already wrote (`SideEntry::settled`).
    pub entry: Option<SideEntry>,
}

/// A relay that ends when the answer's body has gone through, with who
/// served it.
pub(crate) type Relay = Pin<Box<dyn Future<Output = Served> + Send>>;

/// What reaching the provider came to.
pub(crate) enum Reached<A> {
    /// The whole answer is in: finished now, then rendered.
    Whole {
        answer: A,
        served: Option<Box<Served>>,
    },
    /// The answer's head is in and its body is being relayed by `relay`:
    /// rendered now, finished when the relay ends.
    Relayed {
        answer: A,
        status: u16,
        relay: Relay,
    },
}

/// What the driver knows of a side door's request, for the door's stages.
pub(crate) struct SideCx<'a> {
    pub state: &'a AppState,
    pub runtime: &'a Arc<Runtime>,
    pub id: &'a RequestId,
    pub local_key: Option<&'a str>,
    pub started: Instant,
    /// Who pays: set by the charge stage, for a door that is charged.
    pub charge: Option<Charge>,
}

impl SideCx<'_> {
    /// The payers of a charged door's request.
    pub fn charge(&self) -> Result<&Charge, ApiError> {
        self.charge
            .as_ref()
            .ok_or_else(|| ApiError::internal("a charged side door's request without its charge"))
    }

    /// Holds what `input_tokens` on `candidate` can cost against the
    /// request's budgets, as a model call's failover does, and refuses
    /// with the same 402 (and the budget's alert) when they cannot pay.
    /// `None` when no budget counts the request.
    pub async fn reserve(
        &self,
        candidate: &Candidate,
        input_tokens: u64,
    ) -> Result<Option<Reservation>, ApiError> {
        let charge = self.charge()?;
        let book = self.state.book();
        match charge
            .reserve(book, candidate, input_tokens, Output::single(Some(0)))
            .await?
        {
            Reserved::Held(reservation, _) => Ok(Some(reservation)),
            Reserved::Unbudgeted => Ok(None),
            Reserved::Unpriced => Err(ChargeError::Unpriced.into()),
            Reserved::Short(shortfall) => {
                let shortfalls = [(shortfall, candidate.model_name().to_string())];
                Err(charge.refuse(self.state, &shortfalls).into())
            }
        }
    }
}

/// Serves a side door's request through the stages above, on a task of
/// its own ([`super::own_task`]): a call that reached a provider is
/// settled even if the client hangs up.
pub(crate) async fn handle<D: SideDoor>(
    state: &AppState,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    id: RequestId,
    local_key: Option<String>,
    door: D,
) -> Response<Body> {
    let task_state = state.clone();
    let task_id = id.clone();
    let call = async move {
        let local_key = local_key.as_deref();
        run(&task_state, &runtime, request, &task_id, local_key, &door).await
    };
    super::own_task(state, id, D::error, call).await
}

/// The stages in order, and the one finish.
async fn run<D: SideDoor>(
    state: &AppState,
    runtime: &Arc<Runtime>,
    request: Request<Incoming>,
    id: &RequestId,
    local_key: Option<&str>,
    door: &D,
) -> Response<Body> {
    let mut cx = SideCx {
        state,
        runtime,
        id,
        local_key,
        started: Instant::now(),
        charge: None,
    };
    let reached = match stages(&mut cx, request, door).await {
        Ok(reached) => reached,
        Err(error) => {
            let ending = Side {
                door: D::NAME,
                endpoint: door.endpoint(),
                status: error.status().as_u16(),
                error: Some(&error),
                served: None,
                entry: None,
            };
            finish::side(state, id, cx.started, cx.charge.as_ref(), ending).await;
            return D::error(&error, id);
        }
    };
    match reached {
        Reached::Whole { answer, served } => {
            let response = door.render(&cx, answer);
            let (who, entry) = match served.map(|s| *s) {
                Some(Served {
                    provider,
                    model,
                    entry,
                }) => (Some((provider, model)), entry),
                None => (None, None),
            };
            let ending = Side {
                door: D::NAME,
                endpoint: door.endpoint(),
                status: response.status().as_u16(),
                error: None,
                served: who.as_ref().map(|(p, m)| (p.as_str(), m.as_deref())),
                entry,
            };
            finish::side(state, id, cx.started, cx.charge.as_ref(), ending).await;
            response
        }
        Reached::Relayed {
            answer,
            status,
            relay,
        } => {
            let response = door.render(&cx, answer);
            let (task_state, task_id) = (state.clone(), id.clone());
            let endpoint = door.endpoint().map(str::to_string);
            let (started, charge) = (cx.started, cx.charge.take());
            state.spawn(async move {
                let served = relay.await;
                let ending = Side {
                    door: D::NAME,
                    endpoint: endpoint.as_deref(),
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

/// read → admit → parse → charge → reach.
async fn stages<D: SideDoor>(
    cx: &mut SideCx<'_>,
    request: Request<Incoming>,
    door: &D,
) -> Result<Reached<D::Answer>, ApiError> {
    let config = cx.runtime.config();
    let (parts, body) = request.into_parts();
    let body = if D::STREAMS_BODY {
        Received::Streamed(body)
    } else {
        Received::Whole(super::read::body(body, &parts.headers, &config.server).await?)
    };
    // Taken once the body is in, as a model call's is; held until the
    // provider has answered (a relayed body goes on without it).
    let _permit = cx.state.limiter().admit(&config.limits)?;
    let parsed = door.parse(cx, parts, body)?;
    if let Some(options) = &parsed.options {
        let charge = Charge::for_options(
            cx.runtime,
            cx.state.sessions(),
            cx.state.book(),
            options,
            cx.local_key,
        )?;
        charge.ensure_ledger(cx.state.book())?;
        cx.charge = Some(charge);
    }
    door.reach(cx, parsed.request).await
}
