//! What an endpoint supplies to the driver, and what the driver tells it.
//!
//! Every call that reaches a provider, a model call or not, comes in by an
//! [`Endpoint`]: the driver (`pipeline::run`) reads its body, admits it,
//! has the endpoint parse it, charges its payers, has the endpoint reach
//! the provider, finishes it once and has the endpoint render the answer.
//! A model call's doors reach "through the model stages" (cache, route,
//! failover: [`Reached::Model`]); a side door (embeddings, a token count, a
//! forwarded call) reaches its provider itself, since none of those
//! stages applies to it, and so cannot forget the ledger, the log line or
//! the count by door.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use hyper::body::Incoming;

use super::charge::{Charge, ChargeError, Reserved};
use super::finish::SideEntry;
use super::Context;
use crate::money::budget::{Output, Reservation};
use crate::ops::state::{AppState, Runtime};
use crate::router::Candidate;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::request::P402Options;

/// An endpoint: what one door supplies to the driver, which runs
/// everything else.
pub(crate) trait Endpoint: Clone + Send + Sync + 'static {
    /// The body goes to the provider as it arrives (a forwarded upload can
    /// be larger than any limit p402 would read whole), instead of being
    /// read whole, within `[server]`'s limits, before anything else.
    const STREAMS_BODY: bool = false;

    /// The request as the door understood it.
    type Request: Send;
    /// What the provider (or p402 itself) answered, to be rendered.
    type Answer: Send;

    /// Its name in the log line and `/metrics`.
    fn name(&self) -> &'static str;

    /// The method and path of a call forwarded as it is, for the log line.
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Reads the request.
    fn parse(
        &self,
        call: &Call<'_>,
        parts: Parts,
        body: Received,
    ) -> Result<Self::Request, ApiError>;

    /// The request's `p402` options (from the body or the headers), which
    /// say who pays; a door whose calls cost nothing (a token count) has
    /// none and is not charged.
    fn options<'r>(&self, request: &'r Self::Request) -> Option<&'r P402Options>;

    /// Reaches the provider (or answers from p402's own cache or count),
    /// or hands a model call to the model stages.
    fn reach(
        &self,
        call: &mut Call<'_>,
        request: Self::Request,
    ) -> impl Future<Output = Result<Reached<Self::Answer>, ApiError>> + Send;

    /// The client's response.
    fn render(&self, call: &Call<'_>, answer: Self::Answer) -> Response<Body>;

    /// An error in the door's dialect.
    fn error(&self, error: &ApiError, id: &RequestId) -> Response<Body> {
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

impl Received {
    /// The body read whole; an endpoint that streams its body never asks.
    pub fn whole(self) -> Result<Bytes, ApiError> {
        match self {
            Received::Whole(bytes) => Ok(bytes),
            Received::Streamed(_) => Err(ApiError::internal("a streamed body asked for whole")),
        }
    }

    /// The body as a JSON object, the shape every side door's body has.
    pub fn json_object(self) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        match serde_json::from_slice(&self.whole()?) {
            Ok(serde_json::Value::Object(body)) => Ok(body),
            _ => Err(ApiError::invalid(
                "invalid_json",
                "the request body must be a JSON object",
            )),
        }
    }
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
    /// A model call, parsed and paid for: the model stages (cache, route,
    /// failover) reach its provider, and the driver concludes it.
    Model(Arc<Context>),
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

/// What the driver knows of a request, for the endpoint's stages.
pub(crate) struct Call<'a> {
    pub state: &'a AppState,
    pub runtime: &'a Arc<Runtime>,
    pub id: &'a RequestId,
    pub local_key: Option<&'a str>,
    pub started: Instant,
    /// Who pays: set by the charge stage, for a door that is charged (a
    /// model call's door takes it into its `Context`).
    pub charge: Option<Charge>,
}

impl Call<'_> {
    /// The payers of a charged door's request.
    pub fn charge(&self) -> Result<&Charge, ApiError> {
        self.charge
            .as_ref()
            .ok_or_else(|| ApiError::internal("a charged request without its charge"))
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
