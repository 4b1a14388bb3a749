//! What the stages learn about one request, carried to its finish.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::Probe;
use crate::endpoint::Door;
use crate::money::metadata::FailedAttempt;
use crate::ops::state::{AppState, Runtime};
use crate::router::mode::ModeChoice;
use crate::router::{Candidate, Route};
use crate::server::ids::RequestId;
use crate::wire::request::ChatRequest;

use super::charge::Charge;

/// One request once it is parsed and its payers are known. Shared (in an
/// `Arc`) by the attempts and by a stream's relay, which outlives the
/// handler: everything here is fixed from then on.
pub struct Context {
    pub state: AppState,
    /// The config and catalog as they were when the request arrived: a
    /// reload in the middle does not change its rules.
    pub runtime: Arc<Runtime>,
    pub id: RequestId,
    pub started: Instant,
    pub door: Door,
    pub chat: ChatRequest,
    pub charge: Charge,
    pub mode: ModeChoice,
    /// The client's own session id, recorded with each ledger entry.
    pub client_session: Option<String>,
}

/// What routing decided, for the attempts and the finish.
pub struct Plan {
    pub route: Route,
    /// Counted once, before any attempt: reservations and estimates use
    /// it. Only a bound when `input_counted` is false (see `route`).
    pub input_tokens: u64,
    pub input_counted: bool,
    /// The output limit the request asks for, if any (per choice).
    pub output_limit: Option<u32>,
    /// How many answers the provider writes and bills (`n`), at least 1:
    /// every one is reserved for.
    pub choices: u32,
    /// The most web searches the provider may run, each billed per call
    /// (see `wire::search_limit`): every one is reserved for.
    pub searches: u32,
    /// The provider reads input p402 cannot count (stored state, files):
    /// a budget reserves the model's whole context for it.
    pub hidden_input: bool,
    /// Where to store the answer in the cache, if it may be.
    pub probe: Option<Probe>,
}

/// The candidate that is answering, and what was tried before it.
/// Borrowed while the handler answers; owned by a stream's relay, which
/// outlives it.
#[derive(Clone)]
pub struct Served<'a> {
    pub candidate: Cow<'a, Candidate>,
    pub failover: Vec<FailedAttempt>,
    /// When the request went upstream.
    pub upstream_started: Instant,
}
