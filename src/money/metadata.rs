//! `p402_metadata`: what a request cost, what it would have cost, and who
//! answered, in the response body, the last stream chunk and the headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::money::cost::{Costs, Used};
use crate::money::Usd;
use crate::router::mode::ModeChoice;
use crate::router::{Candidate, QualityNote, Route};
use crate::server::ids::RequestId;

/// What became of a failed attempt: the provider's HTTP status, or what
/// went wrong when there was none. Shown as the number or the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Http(u16),
    /// The request could not be built or sent.
    RequestError,
    Timeout,
    ConnectError,
    InvalidResponse,
    ResponseTooLarge,
}

impl AttemptStatus {
    fn word(self) -> Option<&'static str> {
        match self {
            AttemptStatus::Http(_) => None,
            AttemptStatus::RequestError => Some("request_error"),
            AttemptStatus::Timeout => Some("timeout"),
            AttemptStatus::ConnectError => Some("connect_error"),
            AttemptStatus::InvalidResponse => Some("invalid_response"),
            AttemptStatus::ResponseTooLarge => Some("response_too_large"),
        }
    }
}

impl std::fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self, self.word()) {
            (AttemptStatus::Http(status), _) => write!(f, "{status}"),
            (_, Some(word)) => f.write_str(word),
            (_, None) => Ok(()),
        }
    }
}

impl Serialize for AttemptStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self, self.word()) {
            (AttemptStatus::Http(status), _) => serializer.serialize_u16(*status),
            (_, Some(word)) => serializer.serialize_str(word),
            (_, None) => serializer.serialize_none(),
        }
    }
}

/// One failed attempt before the one that answered.
#[derive(Debug, Clone, Serialize)]
pub struct FailedAttempt {
    pub provider: String,
    pub model: String,
    pub status: AttemptStatus,
    /// What the attempt was charged: an estimate, when the provider had
    /// the request and then timed out or broke off (it bills it); absent
    /// when it cost nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<Usd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub request_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub mode: ModeChoice,
    pub requested_model: String,
    pub cost_usd: Option<Usd>,
    pub direct_cost: Option<Usd>,
    pub savings: Option<Usd>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    pub cached: bool,
    pub latency_ms: u64,
    pub provider_latency_ms: u64,
    pub failover: Vec<FailedAttempt>,
    pub cost_source: String,
    /// The provider reported no usage; p402 counted the tokens itself.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cost_estimated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_remaining_usd: Option<Usd>,
    /// For a cache hit: the cosine similarity of the matched question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    /// Set when the ledger could not be written at once (a failing or stuck
    /// disk): the request went through unbudgeted, and its entry waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_warning: Option<String>,
    /// What the request asked for that the serving provider could not do,
    /// left out in translation (`web_search`); also `x-p402-dropped`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<&'static str>,
    /// The request's category, and the requested and served models'
    /// ratings in it (SPEC section 13); absent for a cache hit and for a
    /// model the catalog does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityNote>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where the figures come from, said plainly when they are missing.
pub fn cost_source(candidate: &Candidate, used: Option<&Used>) -> String {
    match (&candidate.model, used) {
        (_, None) => "unknown: the provider reported no usage".to_string(),
        (Some(model), Some(used)) if model.price.is_some() => {
            if used.estimated {
                format!(
                    "{}, tokens counted by p402 (no usage reported)",
                    model.cost_source
                )
            } else {
                model.cost_source.clone()
            }
        }
        _ => "unpriced: the model has no price in the catalog".to_string(),
    }
}

/// The session a request was charged to, for the metadata.
pub struct SessionInfo {
    pub id: String,
    pub remaining: Option<Usd>,
}

pub struct Timing {
    pub latency_ms: u64,
    pub provider_latency_ms: u64,
}

pub fn build(
    request_id: &RequestId,
    route: &Route,
    candidate: &Candidate,
    used: Option<&Used>,
    failover: Vec<FailedAttempt>,
    timing: Timing,
    session: Option<SessionInfo>,
) -> Metadata {
    let usage = used.map(|u| &u.usage);
    let costs = Costs::of(usage, candidate.price(), route.baseline);
    let source = cost_source(candidate, used);
    let estimated = used.is_some_and(|u| u.estimated);
    let usage = usage.copied().unwrap_or_default();
    Metadata {
        request_id: request_id.to_string(),
        provider: candidate.provider.name.clone(),
        model: Some(candidate.model_name().to_string()),
        mode: route.mode,
        requested_model: route.requested_model.clone(),
        cost_usd: costs.cost,
        direct_cost: costs.direct,
        savings: costs.savings(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        cached: false,
        latency_ms: timing.latency_ms,
        provider_latency_ms: timing.provider_latency_ms,
        failover,
        cost_source: source,
        cost_estimated: estimated,
        session_id: session.as_ref().map(|s| s.id.clone()),
        session_remaining_usd: session.and_then(|s| s.remaining),
        similarity: None,
        ledger_warning: None,
        dropped: Vec::new(),
        quality: candidate
            .model
            .as_ref()
            .map(|model| QualityNote::of(&route.quality, model)),
    }
}

/// The figures' header names, made once: a name given as a string is
/// checked character by character on every insert.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-p402-request-id");
const PROVIDER: HeaderName = HeaderName::from_static("x-p402-provider");
const MODEL: HeaderName = HeaderName::from_static("x-p402-model");
const CACHED: HeaderName = HeaderName::from_static("x-p402-cached");
const COST_USD: HeaderName = HeaderName::from_static("x-p402-cost-usd");
const SAVINGS: HeaderName = HeaderName::from_static("x-p402-savings");
const DROPPED: HeaderName = HeaderName::from_static("x-p402-dropped");
const FAILOVER_COUNT: HeaderName = HeaderName::from_static("x-p402-failover-count");

/// Headers known before the first byte: for streams these are all there
/// is. `dropped` is what the provider cannot do of what was asked.
pub fn early_headers(
    headers: &mut HeaderMap,
    request_id: &RequestId,
    candidate: &Candidate,
    dropped: &[&'static str],
) {
    insert(headers, REQUEST_ID, request_id.as_str());
    insert(headers, PROVIDER, &candidate.provider.name);
    insert(headers, MODEL, candidate.model_name());
    insert(headers, CACHED, "false");
    if !dropped.is_empty() {
        insert(headers, DROPPED, &dropped.join(", "));
    }
}

/// Every key figure as a header, for a buffered response.
pub fn headers(headers: &mut HeaderMap, metadata: &Metadata) {
    insert(headers, REQUEST_ID, &metadata.request_id);
    insert(headers, PROVIDER, &metadata.provider);
    if let Some(model) = &metadata.model {
        insert(headers, MODEL, model);
    }
    insert(
        headers,
        CACHED,
        if metadata.cached { "true" } else { "false" },
    );
    if let Some(cost) = metadata.cost_usd {
        insert(headers, COST_USD, &format!("{:.9}", cost.to_dollars()));
    }
    if let Some(savings) = metadata.savings {
        insert(headers, SAVINGS, &format!("{:.9}", savings.to_dollars()));
    }
    if !metadata.dropped.is_empty() {
        insert(headers, DROPPED, &metadata.dropped.join(", "));
    }
    // For clients whose answers carry no `p402_metadata` (Anthropic's):
    // that another provider answered is worth knowing.
    if !metadata.failover.is_empty() {
        insert(
            headers,
            FAILOVER_COUNT,
            &metadata.failover.len().to_string(),
        );
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
