//! The finish: the one exit every request takes, however it ends.
//!
//! Answered by a provider (whole or streamed), answered from the cache, cut
//! off before anything was generated, or refused: [`finish`] alone builds
//! the ledger entry, settles the charge, builds `p402_metadata` and writes
//! the request's log line, and the functions below it alone set p402's
//! response headers. So a figure the client reads is the figure the ledger
//! holds.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use tokio::sync::mpsc;

use crate::cache::Hit;
use crate::catalog::Price;
use crate::money::budget::{Book, Reservation};
use crate::money::cost::{Costs, Used};
use crate::money::metadata::{self, Metadata, SessionInfo, Timing};
use crate::money::Usd;
use crate::ops::request_log::{elapsed_ms, RequestLog};
use crate::ops::state::AppState;
use crate::router::Candidate;
use crate::server::body::{self, Body};
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::store::{Condition, LedgerEntry};

use super::charge::Charge;
use super::context::{Context, Plan, Served};

/// What a request's metadata says when its ledger entry could not be
/// written at once.
pub const LEDGER_WARNING: &str = "p402 cannot write its ledger now (see /health); this request's entry is kept in memory and written once it can";

/// How a request ended, as far as money is concerned.
pub enum Exit<'a> {
    /// A provider generated an answer, or part of one: charged for what it
    /// used, also when the client is gone or p402 had to stop it.
    Answered {
        plan: &'a Plan,
        served: &'a Served<'a>,
        used: Used,
        reservation: Option<Reservation>,
    },
    /// A provider's stream ended with its own error event before it
    /// generated anything: an error answered before generating, free.
    Unanswered {
        plan: &'a Plan,
        served: &'a Served<'a>,
    },
    /// Answered from the cache: free, recorded with the cost it avoided.
    Hit {
        hit: &'a Hit,
        baseline: Option<Price>,
    },
    /// No answer: p402's error, or a provider's refusal of the request.
    Failed,
}

/// How the request ended for the client.
pub struct Ending<'a> {
    /// The status the client got (for a stream, the 200 it started with).
    pub status: u16,
    /// p402's error, if the request ended with one.
    pub error: Option<&'a ApiError>,
    /// How many attempts failed before it ended.
    pub attempts: usize,
}

impl Ending<'_> {
    pub const OK: Ending<'static> = Ending {
        status: 200,
        error: None,
        attempts: 0,
    };
}

impl<'a> Ending<'a> {
    pub fn failed(error: &'a ApiError) -> Self {
        Ending {
            status: error.status().as_u16(),
            error: Some(error),
            attempts: 0,
        }
    }
}

/// Settles what `exit` used, builds the metadata, and writes the log line.
/// A charge is durable before this returns (unless the ledger is failing,
/// which the metadata then says), so a crash after it loses nothing.
pub async fn finish(cx: &Context, exit: Exit<'_>, ending: Ending<'_>) -> Option<Metadata> {
    let metadata = match exit {
        Exit::Answered {
            plan,
            served,
            used,
            reservation,
        } => {
            let costs = Costs::of(
                Some(&used.usage),
                served.candidate.price(),
                plan.route.baseline,
            );
            let entry = provider_entry(cx, &served.candidate, &used, &costs);
            let warning = settle(cx, reservation, &entry).await;
            let mut metadata = provider_metadata(cx, plan, served, Some(&used), true);
            metadata.ledger_warning = warning;
            Some(metadata)
        }
        Exit::Unanswered { plan, served } => Some(provider_metadata(cx, plan, served, None, false)),
        Exit::Hit { hit, baseline } => Some(cache_hit(cx, hit, baseline)),
        Exit::Failed => None,
    };
    let mut log = RequestLog::new(&cx.id, cx.chat.stream, cx.started);
    log.door(cx.door.name());
    if let Some(metadata) = &metadata {
        log.answered(metadata);
    }
    log.status(ending.status);
    if let Some(error) = ending.error {
        log.failed(error);
    }
    log.attempts(ending.attempts);
    log.emit(cx.state.metrics());
    metadata
}

/// How a side door's request (embeddings, a token count, a forwarded
/// call) ended: who served it, and what it cost when it reached a provider.
pub struct Side<'a> {
    /// The door's name in the log line and `/metrics`.
    pub door: &'static str,
    /// A forwarded call's method and path.
    pub endpoint: Option<&'a str>,
    /// The status the client got.
    pub status: u16,
    /// p402's error, if the request ended with one.
    pub error: Option<&'a ApiError>,
    /// The provider (or `cache`) and model that served it.
    pub served: Option<(&'a str, Option<&'a str>)>,
    /// Its ledger entry, still to be settled against its reservation; or
    /// the entry already written by the door itself (a background job's
    /// charge, written once per job), `settled`.
    pub entry: Option<SideEntry>,
}

/// A side door's ledger entry.
pub struct SideEntry {
    /// The entry, stamped with its payers (`Charge::entry`).
    pub entry: LedgerEntry,
    /// The hold on the budget it settles, if it was budgeted.
    pub reservation: Option<Reservation>,
    /// Written already: only logged.
    pub settled: bool,
}

/// The finish of a side door: its entry settled exactly as a model
/// call's is ([`settle`]), then its log line and its count by door.
pub async fn side(
    state: &AppState,
    id: &RequestId,
    started: Instant,
    charge: Option<&Charge>,
    side: Side<'_>,
) {
    let mut log = RequestLog::new(id, false, started);
    log.door(side.door);
    if let Some(endpoint) = side.endpoint {
        log.endpoint(endpoint);
    }
    if let Some((provider, model)) = side.served {
        let (cost, input) = match &side.entry {
            Some(e) => (Some(e.entry.cost()), e.entry.input_tokens),
            // A stored answer is free.
            None if provider == "cache" => (Some(Usd::ZERO), 0),
            None => (None, 0),
        };
        log.served(provider, model, cost, input);
    }
    if let (
        Some(SideEntry {
            entry,
            reservation,
            settled: false,
        }),
        Some(charge),
    ) = (side.entry, charge)
    {
        if let Some(warning) = settle_for(state, charge, reservation, &entry).await {
            tracing::warn!(request_id = %id, "{warning}");
        }
    }
    log.status(side.status);
    if let Some(error) = side.error {
        log.failed(error);
    }
    log.emit(state.metrics());
}

pub(super) fn provider_entry(
    cx: &Context,
    candidate: &Candidate,
    used: &Used,
    costs: &Costs,
) -> LedgerEntry {
    let mut entry = cx.charge.entry(&cx.id, &candidate.provider.name);
    entry.door = Some(cx.door.name().to_string());
    entry.model = Some(candidate.model_name().to_string());
    entry.input_tokens = used.usage.input_tokens;
    entry.output_tokens = used.usage.output_tokens;
    entry.cached_input_tokens = used.usage.cached_input_tokens;
    entry.cost_nanos = costs.cost.unwrap_or(Usd::ZERO).nanos();
    entry.direct_nanos = costs.direct.or(costs.cost).unwrap_or(Usd::ZERO).nanos();
    entry.estimated = used.estimated;
    entry.client_session = cx.client_session.clone();
    entry
}

/// Settles a request: its reservation (if budgeted) and the ledger. A
/// failure to write is logged, not sent to the client as an error: the
/// answer exists and was paid for, and the writer keeps the entry and
/// writes it once the disk recovers.
///
/// Only a budget's charge waits for the disk, since only a budget needs
/// it there before the answer to survive `kill -9`. An unbudgeted
/// request's entry is queued and group-committed with the others of its
/// window (`[server] ledger_group_commit_ms`); a crash can lose at most
/// that window of entries no budget counts. Returns the warning for the
/// caller's metadata when the entry cannot be written now.
pub(super) async fn settle(
    cx: &Context,
    reservation: Option<Reservation>,
    entry: &LedgerEntry,
) -> Option<String> {
    settle_for(&cx.state, &cx.charge, reservation, entry).await
}

/// [`settle`] for any request charged to `charge`, a model call's or a
/// side door's.
async fn settle_for(
    state: &AppState,
    charge: &Charge,
    reservation: Option<Reservation>,
    entry: &LedgerEntry,
) -> Option<String> {
    let book = state.book();
    let written = match reservation {
        Some(reservation) => {
            let written = reservation.settle(entry).await;
            // The spend moved: a threshold may have been reached.
            state.alerts().observe(book, &charge.watched);
            written
        }
        None => book.store().record_queued(entry, &[]),
    };
    let failing = book.store().condition() != Condition::Ok;
    match written {
        Ok(()) if !failing => None,
        Ok(()) => {
            tracing::warn!(request_id = %entry.request_id, "the ledger cannot be written now; the entry is kept until it can");
            Some(LEDGER_WARNING.to_string())
        }
        Err(e) => {
            tracing::error!(request_id = %entry.request_id, "could not record the request in the ledger yet (kept until it can be written): {e}");
            Some(LEDGER_WARNING.to_string())
        }
    }
}

fn session_info(charge: &Charge, book: &Book) -> Option<SessionInfo> {
    let session = charge.session.as_ref()?;
    Some(SessionInfo {
        id: session.id.clone(),
        remaining: charge.session_remaining(book),
    })
}

fn provider_metadata(
    cx: &Context,
    plan: &Plan,
    served: &Served<'_>,
    used: Option<&Used>,
    with_session: bool,
) -> Metadata {
    let mut metadata = metadata::build(
        &cx.id,
        &plan.route,
        &served.candidate,
        used,
        served.failover.clone(),
        Timing {
            latency_ms: elapsed_ms(cx.started),
            provider_latency_ms: elapsed_ms(served.upstream_started),
        },
        with_session
            .then(|| session_info(&cx.charge, cx.state.book()))
            .flatten(),
    );
    metadata.dropped = cx.chat.dropped_by(&served.candidate.provider);
    metadata
}

/// A cache hit moves no money: its free entry carries the direct cost it
/// avoided (so reports show cache savings), and is queued rather than
/// awaited, so a hit waits for no disk.
fn cache_hit(cx: &Context, hit: &Hit, baseline: Option<Price>) -> Metadata {
    let direct = crate::cache::replay::direct_cost(hit, baseline);
    let mut entry = cx.charge.entry(&cx.id, "cache");
    entry.door = Some(cx.door.name().to_string());
    entry.input_tokens = hit.entry.input_tokens;
    entry.output_tokens = hit.entry.output_tokens;
    entry.direct_nanos = direct.nanos();
    entry.cached = true;
    entry.client_session = cx.client_session.clone();
    let accounts: Vec<String> = cx
        .charge
        .accounts
        .iter()
        .filter_map(|a| a.key.clone())
        .collect();
    if let Err(e) = cx.state.book().store().record_queued(&entry, &accounts) {
        tracing::error!(request_id = %cx.id, "could not record the cache hit in the ledger: {e}");
    }
    cx.state.cache().record_saving(direct);
    Metadata {
        request_id: cx.id.to_string(),
        provider: "cache".to_string(),
        model: None,
        mode: cx.mode,
        requested_model: cx.chat.model.clone(),
        cost_usd: Some(Usd::ZERO),
        direct_cost: Some(direct),
        savings: Some(direct),
        input_tokens: hit.entry.input_tokens,
        output_tokens: hit.entry.output_tokens,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        cached: true,
        latency_ms: elapsed_ms(cx.started),
        provider_latency_ms: 0,
        failover: Vec::new(),
        cost_source: format!(
            "cache (first answered by {}/{})",
            hit.entry.provider, hit.entry.model
        ),
        cost_estimated: false,
        session_id: cx.charge.session.as_ref().map(|s| s.id.clone()),
        session_remaining_usd: cx.charge.session_remaining(cx.state.book()),
        similarity: Some((f64::from(hit.similarity) * 10_000.0).round() / 10_000.0),
        ledger_warning: None,
        dropped: Vec::new(),
        quality: None,
    }
}

/// A whole answer: the door's body, and every key figure as a header.
pub fn respond(body: Bytes, metadata: &Metadata) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    metadata::headers(headers, metadata);
    response
}

/// A stream whose events are all known (a replay from the cache).
pub fn respond_events(events: Vec<Bytes>, metadata: &Metadata) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(events.concat())));
    let headers = response.headers_mut();
    event_stream_headers(headers);
    metadata::headers(headers, metadata);
    response
}

/// Events in flight between a relay and hyper; small, because each one is
/// written out as soon as the client's socket takes it.
const CHANNEL_CAPACITY: usize = 16;

/// A stream to be fed as its events arrive: the figures known before the
/// first byte are all the headers it gets; the rest come in its last event.
pub fn respond_streaming(
    cx: &Context,
    candidate: &Candidate,
) -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, body) = body::channel(CHANNEL_CAPACITY);
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    event_stream_headers(headers);
    let dropped = cx.chat.dropped_by(&candidate.provider);
    metadata::early_headers(headers, &cx.id, candidate, &dropped);
    (tx, response)
}

/// A provider's refusal of the request (a 4xx it caused), as the door puts
/// it, with the figures known so far.
pub fn respond_refused(
    cx: &Context,
    candidate: &Candidate,
    status: http::StatusCode,
    body: Bytes,
    content_type: Option<HeaderValue>,
) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    let dropped = cx.chat.dropped_by(&candidate.provider);
    metadata::early_headers(response.headers_mut(), &cx.id, candidate, &dropped);
    response
}

fn event_stream_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}
