//! How the attempts at a request ended: what the driver finishes and
//! renders. Failover and the cache stage return one of these instead of a
//! finished response, so the driver (`pipeline::run`) shows the whole path
//! and is the only caller of the finish.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::cache::Hit;
use crate::money::budget::Reservation;
use crate::money::metadata::FailedAttempt;
use crate::router::Candidate;
use crate::server::error::ApiError;
use crate::wire::{Answer, EventStream};

use super::context::Served;
use super::watch::Watch;

/// How a request ended before its finish. `'p` is the plan's lifetime:
/// an outcome names the candidate that answered, borrowed from it.
pub enum Outcome<'p> {
    /// Answered from the cache: free.
    Hit(Hit),
    /// A provider's whole answer.
    Whole {
        served: Served<'p>,
        answer: Answer,
        reservation: Option<Reservation>,
    },
    /// A provider's stream, relayed as it arrives and finished when it
    /// ends; it outlives the handler, so its candidate is owned.
    Stream {
        served: Served<'static>,
        events: EventStream,
        watch: Watch,
        reservation: Option<Reservation>,
    },
    /// A provider refused the request itself (a 4xx the client caused):
    /// passed on in the client's terms, without p402's key if the
    /// provider echoed it.
    Refused {
        candidate: &'p Candidate,
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
    /// p402 had to stop (shutdown past its grace). `sent` says whether the
    /// provider had the request, and so bills it: then it is settled as an
    /// estimate, against the output `limit` reserved.
    Stopped {
        served: Served<'p>,
        sent: bool,
        reservation: Option<Reservation>,
        limit: Option<u32>,
    },
    /// No answer: why, and the attempts that failed on the way.
    Failed {
        error: ApiError,
        attempts: Vec<FailedAttempt>,
    },
}

impl Outcome<'_> {
    /// A request that ended with p402's error before any attempt.
    pub fn failed(error: ApiError) -> Self {
        Outcome::Failed {
            error,
            attempts: Vec::new(),
        }
    }
}
