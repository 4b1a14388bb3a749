//! Which provider and model answer a request.
//!
//! The router turns a parsed request into an ordered list of candidates
//! (at most three, other providers first after the top choice); the chat
//! pipeline tries them in order. Every ordering is a deterministic total
//! order: ties on the mode's goal are broken by expected cost, then by
//! `provider/model` name, so the same request always routes the same way.

pub mod category;
mod eligibility;
mod explain;
pub mod mode;
mod quality;
mod sticky;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::router::mode::{Mode, ModeChoice, Weights, AUTO};
pub use eligibility::{Needs, Reject, CONTEXT_RESERVE_TOKENS, EXPECTED_OUTPUT_TOKENS};
pub use explain::{Explained, Explanation};
pub use quality::{QualityNote, Standard};
pub use sticky::{ConversationKey, Sticky};

use crate::catalog::{Capability, Catalog, Model, Price, Provider};
use crate::config::RoutingConfig;
use crate::money::Usd;
use crate::ops::provider_health::ProviderHealth;
use crate::server::error::{Classify, ErrorKind};
use crate::wire::request::ChatRequest;

/// At most this many candidates are tried for one request.
pub const MAX_ATTEMPTS: usize = 3;

/// One provider and model to try.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The provider to call.
    pub provider: Arc<Provider>,
    /// The model id sent upstream.
    pub upstream_model: String,
    /// The catalog entry, when the catalog knows the model (it has the price).
    pub model: Option<Model>,
    /// The expected cost of the request on this model, when it is priced.
    pub expected_cost: Option<Usd>,
}

impl Candidate {
    /// The name reported to the client: the catalog id, or what was sent.
    pub fn model_name(&self) -> &str {
        self.model.as_ref().map_or(&self.upstream_model, |m| &m.id)
    }

    /// The model's catalog price; `None` for a model the catalog does
    /// not know or does not price, which is then charged nothing.
    pub fn price(&self) -> Option<Price> {
        self.model.as_ref().and_then(|m| m.price)
    }

    fn from_model(provider: Arc<Provider>, model: &Model, needs: &Needs) -> Self {
        Candidate {
            provider,
            upstream_model: model.upstream_id.clone(),
            expected_cost: needs.expected_cost(model),
            model: Some(model.clone()),
        }
    }
}

/// What a request would cost on one model (`/api/v2/providers/compare`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quote {
    /// The provider's name.
    pub provider: String,
    /// The catalog id of the model.
    pub model: String,
    #[serde(rename = "expected_cost_usd")]
    pub(crate) expected_cost: Usd,
    /// The request's prompt tokens, as counted, that the cost is for.
    pub input_tokens: u64,
    pub(crate) expected_output_tokens: u32,
    pub(crate) quality: Option<u8>,
    /// Whether the model's quality is measured, configured or estimated.
    pub quality_source: crate::catalog::QualitySource,
    /// The model's rating in the request's category (or the one compared).
    pub rating: Option<f64>,
    pub(crate) speed_tps: Option<f64>,
    /// Whether it may stand in for the requested model (the quality rule).
    pub meets_quality_floor: bool,
}

/// The router's decision.
#[derive(Debug, Clone)]
pub struct Route {
    /// The mode the candidates were ordered by: the request's, or the
    /// configured default.
    pub mode: ModeChoice,
    /// The model the client asked for, as it asked.
    pub requested_model: String,
    /// Prices `direct_cost` is computed at: the requested model's, or the
    /// reference model's when the requested one is unknown or `auto`.
    pub baseline: Option<Price>,
    /// In the order to try them.
    pub candidates: Vec<Candidate>,
    /// The conversation this request continues, for stickiness.
    pub conversation: Option<ConversationKey>,
    /// The request's category and the requested model's rating in it.
    pub quality: Standard,
}

/// Why no candidate could be chosen for a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// Some model could serve the request but for its cost: a budget
    /// answer (402), not a routing failure.
    #[error("max_cost ${:.6} is below ${:.6}, the least this request can cost on {on} (its prompt plus a 256-token answer)", .cap.to_dollars(), .least.to_dollars())]
    OverMaxCost {
        /// The request's `max_cost`.
        cap: Usd,
        /// The least the request can cost on the cheapest model for it.
        least: Usd,
        /// That model, as the message names it.
        on: String,
    },
    /// Every model was passed over; the message counts the reasons.
    #[error("{0}")]
    NothingEligible(String),
    /// The one model the request must go to has a provider that cannot be
    /// called now (no key, not answering); the message says which.
    #[error("{0}")]
    ProviderUnavailable(String),
    /// `p402.provider` names a provider that is not configured.
    #[error("p402.provider `{0}` is not a known provider")]
    UnknownProvider(String),
    /// A catalog model whose provider is not in the catalog: a bug in
    /// building the catalog, not the request's fault.
    #[error("model `{0}` names a missing provider")]
    MissingProvider(String),
    /// The requested model is in no catalog and names no provider.
    #[error("model `{0}` is not in p402's catalog; write it as provider/model, pin a provider with p402.provider, or add it under [[models]] in p402.toml")]
    ModelNotFound(String),
    /// The request says something only its own API can carry, and no
    /// model that may serve it speaks that API: a request to change, not a
    /// failure to retry.
    #[error("{field} has no equivalent outside the {api} API, and {model} is served through another API; send the request without it, or ask for a model of a provider that speaks the {api} API")]
    Untranslatable {
        /// The request field that cannot be carried over.
        field: String,
        /// The API that can carry it (`OpenAI Responses`, `Anthropic Messages`).
        api: &'static str,
        /// The model it would have gone to, quoted for the message.
        model: String,
    },
}

impl Classify for RouteError {
    fn kind(&self) -> ErrorKind {
        match self {
            RouteError::OverMaxCost { .. } => ErrorKind::BudgetExceeded,
            RouteError::NothingEligible(_) | RouteError::ProviderUnavailable(_) => {
                ErrorKind::NoProvider
            }
            RouteError::UnknownProvider(_) | RouteError::Untranslatable { .. } => {
                ErrorKind::InvalidRequest
            }
            RouteError::MissingProvider(_) => ErrorKind::Internal,
            RouteError::ModelNotFound(_) => ErrorKind::NotFound,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RouteError::OverMaxCost { .. } => "MAX_COST_EXCEEDED",
            RouteError::NothingEligible(_) => "no_eligible_model",
            RouteError::ProviderUnavailable(_) => "provider_unavailable",
            RouteError::UnknownProvider(_) => "unknown_provider",
            RouteError::MissingProvider(_) => "internal_error",
            RouteError::ModelNotFound(_) => "model_not_found",
            RouteError::Untranslatable { .. } => "untranslatable_request",
        }
    }
}

/// The error for a request whose untranslatable field keeps it from
/// `model`.
fn untranslatable(request: &ChatRequest, model: &str) -> Option<RouteError> {
    let native = request.native.as_ref()?;
    let field = native.untranslatable()?;
    Some(RouteError::Untranslatable {
        field: field.to_string(),
        api: native.dialect.api_name(),
        model: format!("`{model}`"),
    })
}

/// A model that passed every check, with what its ordering needs.
struct Eligible<'a> {
    model: &'a Model,
    provider: Arc<Provider>,
    cost: Option<Usd>,
    /// The provider speaks another API than the client's: among otherwise
    /// equal candidates, the client's own dialect wins (nothing to
    /// translate, nothing approximated).
    foreign: bool,
    name: String,
}

/// Every chat model judged for one request.
struct Survey<'a> {
    /// In the order they would be tried.
    eligible: Vec<Eligible<'a>>,
    passed: Vec<(&'a Model, Reject)>,
    cheapest_over_cap: Option<Usd>,
    max_cost: Option<Usd>,
}

impl Survey<'_> {
    fn counts(&self) -> BTreeMap<Reject, usize> {
        let mut counts = BTreeMap::new();
        for (_, reason) in &self.passed {
            *counts.entry(*reason).or_default() += 1;
        }
        counts
    }
}

/// How many candidates a request may try.
fn attempts(request: &ChatRequest) -> usize {
    if request.options.failover == Some(false) {
        1
    } else {
        MAX_ATTEMPTS
    }
}

/// Everything routing reads besides the request.
pub struct Router<'a> {
    /// The models and providers to choose from, with prices and ratings.
    pub catalog: &'a Catalog,
    /// The `[routing]` settings: default mode, reference model, quality
    /// rules.
    pub config: &'a RoutingConfig,
    /// Which providers answer and whose circuit is open.
    pub health: &'a ProviderHealth,
    /// Where each recent conversation was served, to keep its prompt cache.
    pub sticky: &'a Sticky,
}

impl Router<'_> {
    /// Chooses the candidates for `request`, whose prompt counts
    /// `input_tokens`, in the order to try them.
    pub fn route(&self, request: &ChatRequest, input_tokens: u64) -> Result<Route, RouteError> {
        self.route_for(request, &Needs::of(request, input_tokens))
    }

    /// [`Router::route`] with the request's needs already read: the
    /// pipeline reads them once for the whole request.
    pub fn route_for(&self, request: &ChatRequest, needs: &Needs) -> Result<Route, RouteError> {
        let options = &request.options;
        let mode = options
            .mode
            .unwrap_or(ModeChoice::Named(self.config.default_mode));
        let requested_model = request.model.clone();
        let requested = (requested_model != AUTO)
            .then(|| self.catalog.find(&requested_model))
            .flatten();
        let reference = self.config.reference_model.get_ref();
        let baseline = requested
            .and_then(|m| m.price)
            .or_else(|| self.catalog.find(reference).and_then(|m| m.price));
        let standard = Standard::new(category::of(request, needs), requested);
        let conversation = request
            .body
            .get("messages")
            .and_then(|m| m.as_array())
            .and_then(|messages| Sticky::key(messages));

        // What must not be rewritten: passthrough, pins, and any model the
        // catalog does not know (p402 cannot judge a substitute for it).
        let fixed = mode.is_passthrough()
            || options.model.is_some()
            || options.provider.is_some()
            || self.config.is_pinned(&requested_model)
            || (requested.is_none() && requested_model != AUTO);
        let candidates = if fixed {
            vec![self.fixed(request, needs)?]
        } else {
            self.ranked(request, mode, requested, &standard, needs)?
        };
        Ok(Route {
            mode,
            requested_model,
            baseline,
            candidates,
            conversation,
            quality: standard,
        })
    }

    /// Every eligible model, ordered by the mode, cut to the failover list.
    fn ranked(
        &self,
        request: &ChatRequest,
        mode: ModeChoice,
        requested: Option<&Model>,
        standard: &Standard,
        needs: &Needs,
    ) -> Result<Vec<Candidate>, RouteError> {
        let survey = self.survey(request, mode, requested, standard, needs);
        if survey.eligible.is_empty() {
            return Err(self.nothing_eligible(
                request,
                survey.max_cost,
                survey.cheapest_over_cap,
                &survey.counts(),
            ));
        }
        let (tried, _) = failover_order(survey.eligible, attempts(request));
        Ok(tried
            .into_iter()
            .map(|e| Candidate::from_model(e.provider, e.model, needs))
            .collect())
    }

    /// Every chat model, judged: the eligible ones in the order they would
    /// be tried, and the others with the reason each was passed over.
    fn survey<'m>(
        &'m self,
        request: &ChatRequest,
        mode: ModeChoice,
        requested: Option<&Model>,
        standard: &Standard,
        needs: &Needs,
    ) -> Survey<'m> {
        let options = &request.options;
        let max_cost = options.max_cost.and_then(Usd::from_dollars);
        let mut passed: Vec<(&Model, Reject)> = Vec::new();
        let mut cheapest_over_cap: Option<Usd> = None;
        let mut eligible: Vec<Eligible> = Vec::new();
        // An embedding model answers no chat: not even a candidate.
        let chat_models = self
            .catalog
            .models()
            .iter()
            .filter(|m| !m.capabilities.contains(&Capability::Embeddings));
        for model in chat_models {
            let is_requested =
                requested.is_some_and(|r| r.id == model.id && r.provider == model.provider);
            match self.assess(model, needs, Some(standard), is_requested, request) {
                Err(reason) => passed.push((model, reason)),
                // A cap rules out what cannot fit even a useful minimum; the
                // budget lowers the output limit of what can.
                Ok(candidate) => match (max_cost, needs.minimum_cost(model)) {
                    (Some(cap), Some(cost)) if cost > cap => {
                        passed.push((model, Reject::MaxCost));
                        cheapest_over_cap =
                            Some(cheapest_over_cap.map_or(cost, |c: Usd| c.min(cost)));
                    }
                    (Some(_), None) => passed.push((model, Reject::Unpriced)),
                    _ => eligible.push(candidate),
                },
            }
        }

        order(&mut eligible, mode, standard);
        if self.config.prefer_local {
            // Stable: local models first, each group in the mode's order.
            eligible.sort_by_key(|e| !e.provider.is_local());
        }
        if let Some(preferred) = &options.prefer_providers {
            // Stable: within each group the mode's order stands.
            eligible.sort_by_key(|e| !preferred.iter().any(|p| *p == e.provider.name));
        }
        let continuing = request
            .body
            .get("messages")
            .and_then(|m| m.as_array())
            .and_then(|messages| Sticky::continuing(messages));
        if let Some((provider, model)) = continuing.and_then(|key| self.sticky.get(key)) {
            if let Some(i) = eligible
                .iter()
                .position(|e| e.provider.name == provider && e.model.id == model)
            {
                let previous = eligible.remove(i);
                eligible.insert(0, previous);
            }
        }
        Survey {
            eligible,
            passed,
            cheapest_over_cap,
            max_cost,
        }
    }

    /// Whether `model` may serve the request, as a substitute judged by
    /// `standard` unless it is the requested one itself (no standard: any
    /// quality will do).
    fn assess<'m>(
        &self,
        model: &'m Model,
        needs: &Needs,
        standard: Option<&Standard>,
        is_requested: bool,
        request: &ChatRequest,
    ) -> Result<Eligible<'m>, Reject> {
        let provider = self
            .catalog
            .provider(&model.provider)
            .ok_or(Reject::ProviderUnusable)?;
        if !self.provider_usable(provider) {
            return Err(Reject::ProviderUnusable);
        }
        if request
            .pinned_dialect()
            .is_some_and(|dialect| !dialect.spoken_by(provider))
        {
            return Err(Reject::Dialect);
        }
        if let Some(excluded) = &request.options.exclude_providers {
            if excluded.iter().any(|p| *p == provider.name) {
                return Err(Reject::ProviderExcluded);
            }
        }
        if self.health.is_open(&provider.name) {
            return Err(Reject::CircuitOpen);
        }
        if !self
            .health
            .has_model(&provider.name, &model.upstream_id, provider.is_local())
        {
            return Err(Reject::ModelMissing);
        }
        eligibility::fits(model, needs)?;
        if !is_requested {
            // A substitute must be priced and known to be good enough.
            if model.price.is_none() {
                return Err(Reject::Unpriced);
            }
            if let Some(standard) = standard {
                standard.admits(model, provider, self.config)?;
            }
        }
        Ok(Eligible {
            model,
            provider: provider.clone(),
            cost: needs.expected_cost(model),
            foreign: request
                .native
                .as_ref()
                .is_some_and(|native| !native.dialect.spoken_by(provider)),
            name: format!("{}/{}", model.provider, model.id),
        })
    }

    /// The prices `direct_cost` is computed at for `requested`: its own, or
    /// the reference model's when it is unknown or `auto`.
    pub fn baseline(&self, requested: &str) -> Option<Price> {
        (requested != AUTO)
            .then(|| self.catalog.find(requested))
            .flatten()
            .and_then(|m| m.price)
            .or_else(|| {
                self.catalog
                    .find(self.config.reference_model.get_ref())
                    .and_then(|m| m.price)
            })
    }

    /// The expected cost of a request on every model that could serve it
    /// (capabilities, context, usable provider, priced), cheapest first,
    /// whether or not it meets the quality floor.
    pub fn quotes(&self, request: &ChatRequest, input_tokens: u64) -> Vec<Quote> {
        let needs = Needs::of(request, input_tokens);
        let requested = (request.model != AUTO)
            .then(|| self.catalog.find(&request.model))
            .flatten();
        let standard = Standard::new(category::of(request, &needs), requested);
        let mut quotes: Vec<Quote> = self
            .catalog
            .models()
            .iter()
            .filter_map(|model| self.assess(model, &needs, None, false, request).ok())
            .map(|e| Quote {
                provider: e.provider.name.clone(),
                model: e.model.id.clone(),
                expected_cost: e.cost.unwrap_or_default(),
                input_tokens,
                expected_output_tokens: needs.expected_output(e.model),
                quality: e.model.quality,
                quality_source: e.model.quality_source,
                rating: standard.rating_of(e.model).map(|r| r.rating.round()),
                speed_tps: e.model.speed_tps,
                meets_quality_floor: requested
                    .is_some_and(|r| r.id == e.model.id && r.provider == e.model.provider)
                    || standard.admits(e.model, &e.provider, self.config).is_ok(),
            })
            .collect();
        quotes.sort_by(|a, b| {
            (a.expected_cost, &a.provider, &a.model).cmp(&(b.expected_cost, &b.provider, &b.model))
        });
        quotes
    }

    /// A provider with a key (or a keyless local server that answered its
    /// last probe), enabled, and speaking an API p402 has an adapter for.
    pub fn provider_usable(&self, provider: &Provider) -> bool {
        provider.is_usable()
            && (!provider.is_local() || self.health.reachable(&provider.name) == Some(true))
    }

    fn nothing_eligible(
        &self,
        request: &ChatRequest,
        max_cost: Option<Usd>,
        cheapest_over_cap: Option<Usd>,
        rejected: &BTreeMap<Reject, usize>,
    ) -> RouteError {
        // Some model could serve the request but for its cost: that is a
        // budget answer (402), not a routing failure.
        if let (Some(cap), Some(cheapest)) = (max_cost, cheapest_over_cap) {
            return RouteError::OverMaxCost {
                cap,
                least: cheapest,
                on: "the cheapest eligible model".into(),
            };
        }
        // Only models of other APIs were left: the request must change.
        if rejected.contains_key(&Reject::Dialect) {
            if let Some(error) = untranslatable(request, &request.model) {
                return error;
            }
        }
        let reasons: Vec<String> = rejected
            .iter()
            .map(|(reason, count)| format!("{count} {}", reason.describe()))
            .collect();
        let mut message = format!(
            "no model can serve this request (models passed over: {})",
            reasons.join(", ")
        );
        if let Some(reason) = self
            .catalog
            .find(&request.model)
            .and_then(|m| self.catalog.provider(&m.provider))
            .and_then(|p| p.unusable_reason())
        {
            message.push_str(&format!("; the requested model's {reason}"));
        }
        RouteError::NothingEligible(message)
    }

    /// The one candidate of a request that is not to be rewritten.
    fn fixed(&self, request: &ChatRequest, needs: &Needs) -> Result<Candidate, RouteError> {
        let options = &request.options;
        let reference = self.config.reference_model.get_ref();
        let wanted = options.model.as_deref().unwrap_or(&request.model);
        let wanted = if wanted == AUTO {
            reference.as_str()
        } else {
            wanted
        };
        let candidate = match options.provider.as_deref() {
            Some(provider_name) => self.on_provider(provider_name, wanted, needs)?,
            None => self.by_model(wanted, needs)?,
        };
        if let Some(reason) = candidate.provider.unusable_reason() {
            return Err(RouteError::ProviderUnavailable(reason.to_string()));
        }
        if request
            .pinned_dialect()
            .is_some_and(|dialect| !dialect.spoken_by(&candidate.provider))
        {
            if let Some(error) = untranslatable(request, candidate.model_name()) {
                return Err(error);
            }
        }
        if candidate.provider.api_key_env.is_none()
            && self.health.reachable(&candidate.provider.name) == Some(false)
        {
            return Err(RouteError::ProviderUnavailable(format!(
                "provider `{}` does not answer at {}",
                candidate.provider.name, candidate.provider.base_url
            )));
        }
        let minimum = candidate.model.as_ref().and_then(|m| needs.minimum_cost(m));
        if let (Some(cap), Some(cost)) = (options.max_cost.and_then(Usd::from_dollars), minimum) {
            if cost > cap {
                return Err(RouteError::OverMaxCost {
                    cap,
                    least: cost,
                    on: candidate.model_name().to_string(),
                });
            }
        }
        Ok(candidate)
    }

    fn on_provider(
        &self,
        provider_name: &str,
        wanted: &str,
        needs: &Needs,
    ) -> Result<Candidate, RouteError> {
        let provider = self
            .catalog
            .provider(provider_name)
            .ok_or_else(|| RouteError::UnknownProvider(provider_name.to_string()))?;
        // `provider/model` written in full is accepted under a provider pin too.
        let bare = wanted
            .strip_prefix(provider_name)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(wanted);
        Ok(match self.catalog.find_on(provider_name, bare) {
            Some(model) if model.id != bare && !model.aliases.iter().any(|a| a == bare) => {
                let mut candidate = Candidate::from_model(provider.clone(), model, needs);
                candidate.upstream_model = bare.to_string();
                self.price_as_snapshot(&mut candidate, needs);
                candidate
            }
            Some(model) => Candidate::from_model(provider.clone(), model, needs),
            None => Candidate {
                provider: provider.clone(),
                upstream_model: bare.to_string(),
                model: None,
                expected_cost: None,
            },
        })
    }

    /// A dated snapshot found by its family: the family's highest prices.
    fn price_as_snapshot(&self, candidate: &mut Candidate, needs: &Needs) {
        if let Some(model) = candidate.model.as_mut() {
            model.price = self.catalog.snapshot_price(model);
            candidate.expected_cost = needs.expected_cost(model);
        }
    }

    fn by_model(&self, wanted: &str, needs: &Needs) -> Result<Candidate, RouteError> {
        if let Some(model) = self.catalog.find(wanted) {
            let provider = self
                .catalog
                .provider(&model.provider)
                .ok_or_else(|| RouteError::MissingProvider(model.id.clone()))?;
            let mut candidate = Candidate::from_model(provider.clone(), model, needs);
            // A dated snapshot keeps its own id upstream, and is priced as
            // the dearest of its family (see `Catalog::snapshot_price`).
            let named_exactly = wanted == model.id
                || model.aliases.iter().any(|a| a == wanted)
                || wanted == format!("{}/{}", model.provider, model.id);
            if !named_exactly {
                candidate.upstream_model = wanted.to_string();
                self.price_as_snapshot(&mut candidate, needs);
            }
            return Ok(candidate);
        }
        let bare = |provider: &Arc<Provider>, id: &str| Candidate {
            provider: provider.clone(),
            upstream_model: id.to_string(),
            model: None,
            expected_cost: None,
        };
        // `provider/model` for a model the catalog does not list.
        if let Some((provider_name, rest)) = wanted.split_once('/') {
            if let Some(provider) = self.catalog.provider(provider_name) {
                return Ok(bare(provider, rest));
            }
        }
        // An unlisted model goes to the only provider with a key, if there
        // is exactly one: then there is nothing to guess.
        let mut keyed = self
            .catalog
            .providers()
            .iter()
            .filter(|p| p.is_usable() && p.api_key.is_some());
        if let (Some(only), None) = (keyed.next(), keyed.next()) {
            return Ok(bare(only, wanted));
        }
        Err(RouteError::ModelNotFound(wanted.to_string()))
    }
}

/// Sorts by the mode's goal, then expected cost, then name. Quality is
/// the measured rating where the request's ratings are read (evidence
/// first), then the 0-100 score of unmeasured models.
fn order(eligible: &mut [Eligible], mode: ModeChoice, standard: &Standard) {
    let cost = |e: &Eligible| e.cost.unwrap_or(Usd::from_nanos(i64::MAX));
    let quality = |e: &Eligible| {
        (
            standard
                .rating_of(e.model)
                .map(|r| (r.rating * 1000.0).round() as i64),
            e.model.quality.unwrap_or(0),
        )
    };
    // Tokens per second in thousandths: an integer, so no float ties.
    let speed = |e: &Eligible| (e.model.speed_tps.unwrap_or(0.0) * 1000.0).round() as i64;
    match mode {
        ModeChoice::Named(Mode::Cost) | ModeChoice::Named(Mode::Passthrough) => eligible
            .sort_by(|a, b| (cost(a), a.foreign, &a.name).cmp(&(cost(b), b.foreign, &b.name))),
        ModeChoice::Named(Mode::Quality) => eligible.sort_by(|a, b| {
            (Reverse(quality(a)), cost(a), a.foreign, &a.name).cmp(&(
                Reverse(quality(b)),
                cost(b),
                b.foreign,
                &b.name,
            ))
        }),
        ModeChoice::Named(Mode::Speed) => eligible.sort_by(|a, b| {
            (Reverse(speed(a)), cost(a), a.foreign, &a.name).cmp(&(
                Reverse(speed(b)),
                cost(b),
                b.foreign,
                &b.name,
            ))
        }),
        ModeChoice::Named(Mode::Balanced) => order_weighted(eligible, Weights::BALANCED, standard),
        ModeChoice::Weights(weights) => order_weighted(eligible, weights, standard),
    }
}

/// The weighted score of cost, quality and speed, each scaled to 0..1
/// within the eligible set: cost on a log scale (prices span four orders of
/// magnitude, and halving a cost is worth the same anywhere on it), speed
/// relative to the fastest, quality as the measured rating between the
/// lowest and highest of the set when any is measured (an unmeasured model
/// then counts as the lowest: no evidence is no credit), else the 0-100
/// score.
fn order_weighted(eligible: &mut [Eligible], weights: Weights, standard: &Standard) {
    let ln_cost = |e: &Eligible| ((e.cost.map_or(i64::MAX, Usd::nanos).max(0) as f64) + 1.0).ln();
    let (low, high) = eligible
        .iter()
        .map(ln_cost)
        .fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(c), hi.max(c)));
    let fastest = eligible
        .iter()
        .filter_map(|e| e.model.speed_tps)
        .fold(0.0_f64, f64::max);
    let (rating_low, rating_high) = eligible
        .iter()
        .filter_map(|e| standard.rating_of(e.model).map(|r| r.rating))
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let measured = rating_high >= rating_low;
    let quality = |e: &Eligible| -> f64 {
        if measured {
            match standard.rating_of(e.model) {
                Some(r) if rating_high > rating_low => {
                    (r.rating - rating_low) / (rating_high - rating_low)
                }
                Some(_) => 1.0,
                None => 0.0,
            }
        } else {
            f64::from(e.model.quality.unwrap_or(0)) / 100.0
        }
    };
    let total = weights.cost + weights.quality + weights.speed;
    let score = |e: &Eligible| -> i64 {
        let cost = if high > low {
            (high - ln_cost(e)) / (high - low)
        } else {
            1.0
        };
        let quality = quality(e);
        let speed = if fastest > 0.0 {
            e.model.speed_tps.unwrap_or(0.0) / fastest
        } else {
            0.0
        };
        let weighted =
            (weights.cost * cost + weights.quality * quality + weights.speed * speed) / total;
        (weighted * 1e9).round() as i64
    };
    let cost = |e: &Eligible| e.cost.unwrap_or(Usd::from_nanos(i64::MAX));
    eligible.sort_by_cached_key(|e| (Reverse(score(e)), cost(e), e.foreign, e.name.clone()));
}

/// The top choice, then the best of each other provider, then the rest: a
/// provider that just failed is likely to fail again for its other models.
/// Returns the `limit` to try, and the others in order.
fn failover_order(eligible: Vec<Eligible>, limit: usize) -> (Vec<Eligible>, Vec<Eligible>) {
    let mut chosen: Vec<Eligible> = Vec::with_capacity(limit);
    let mut rest: Vec<Eligible> = Vec::new();
    for candidate in eligible {
        if chosen.len() < limit
            && !chosen
                .iter()
                .any(|c| c.provider.name == candidate.provider.name)
        {
            chosen.push(candidate);
        } else {
            rest.push(candidate);
        }
    }
    let missing = limit.saturating_sub(chosen.len());
    let mut rest = rest.into_iter();
    chosen.extend(rest.by_ref().take(missing));
    (chosen, rest.collect())
}

#[cfg(test)]
mod tests;
