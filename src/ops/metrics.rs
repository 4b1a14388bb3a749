//! `GET /metrics`: Prometheus text format, through the prometheus-client
//! crate. Counters and histograms are updated as requests end; gauges that
//! mirror other state (cache entries, budgets left, circuit breakers) are
//! set when scraped, so they are never stale.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of `p402_requests`: one series per door, provider, model
/// and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The API the client called: `chat`, `messages`, `responses`,
    /// `embeddings`, or `forward` for a call passed on as it is.
    pub door: &'static str,
    /// The provider that answered (`cache` for a cached answer); `-` when
    /// the request reached none.
    pub provider: String,
    /// The model that answered; `-` when none is known.
    pub model: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub provider: String,
    pub(crate) direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub provider: String,
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NameLabels {
    pub(crate) name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AlertLabels {
    /// The budget's name, or `session:<id>`.
    pub budget: String,
    /// The fraction crossed, as written in `alert_at` (`0.5`, `1`).
    pub threshold: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TeamLabels {
    /// The team store's step: reserve, settle, release, renew, balances,
    /// ledger, ping.
    pub op: &'static str,
}

/// The team store's (Redis's) latency and errors.
#[derive(Clone)]
pub struct TeamMetrics {
    pub(crate) latency: Family<TeamLabels, Histogram>,
    pub(crate) errors: Family<TeamLabels, Counter>,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric p402 exports at `/metrics`, in one registry shared by the
/// whole process, so that one scrape sees them all.
pub struct Metrics {
    registry: Registry,
    /// `p402_requests`: requests answered, counted once each as it ends.
    pub requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) upstream_latency: Family<ProviderLabels, Histogram>,
    pub(crate) tokens: Family<TokenLabels, Counter>,
    pub(crate) cost_usd: Family<ProviderLabels, FloatCounter>,
    pub(crate) savings_usd: FloatCounter,
    pub(crate) upstream_errors: Family<ErrorLabels, Counter>,
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    pub(crate) cache_entries: Gauge,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) budget_remaining_usd: Family<NameLabels, FloatGauge>,
    pub(crate) circuit_open: Family<ProviderLabels, Gauge>,
    pub(crate) budget_alerts: Family<AlertLabels, Counter>,
    /// The team store's latency and errors (`p402_team_store_*`).
    pub team: TeamMetrics,
    /// The quality the routed requests got against what they asked for.
    pub quality: crate::ops::quality_tally::QualityTally,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to ~4 min: cache hits to long generations.
    Histogram::new(exponential_buckets(0.0005, 2.5, 15))
}

fn team_histogram() -> Histogram {
    // 50 µs to ~2 s: a Redis round trip to its timeout.
    Histogram::new(exponential_buckets(0.00005, 2.5, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("p402");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = seconds_histogram();
        let upstream_latency = Family::<ProviderLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost_usd = Family::<ProviderLabels, FloatCounter>::default();
        let savings_usd = FloatCounter::default();
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let cache_entries = Gauge::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let budget_remaining_usd = Family::<NameLabels, FloatGauge>::default();
        let circuit_open = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "requests",
            "Requests answered, by door (chat, messages, responses, embeddings, count_tokens, forward), provider, model and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the answer, as the client sees it",
            latency.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time spent waiting on the provider",
            upstream_latency.clone(),
        );
        registry.register(
            "tokens",
            "Tokens billed, by provider and direction (input, output)",
            tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Spend in USD at catalog prices, by provider",
            cost_usd.clone(),
        );
        registry.register(
            "savings_usd",
            "What the requested models would have cost, minus what was spent",
            savings_usd.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream attempts, by provider and status",
            upstream_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Config file reloads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "cache_entries",
            "Answers in the semantic cache",
            cache_entries.clone(),
        );
        registry.register(
            "cache_hits",
            "Requests answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Cacheable requests the cache could not answer",
            cache_misses.clone(),
        );
        registry.register(
            "budget_remaining_usd",
            "What each session and file budget has left",
            budget_remaining_usd.clone(),
        );
        registry.register(
            "circuit_open",
            "1 while a provider's circuit breaker is open",
            circuit_open.clone(),
        );
        let budget_alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "budget_alerts",
            "Budget alerts raised (a threshold of alert_at crossed), by budget and threshold",
            budget_alerts.clone(),
        );
        let team = TeamMetrics {
            latency: Family::<TeamLabels, Histogram>::new_with_constructor(
                team_histogram as fn() -> Histogram,
            ),
            errors: Family::<TeamLabels, Counter>::default(),
        };
        registry.register(
            "team_store_duration_seconds",
            "Time of each step on the team store (Redis), by step",
            team.latency.clone(),
        );
        registry.register(
            "team_store_errors",
            "Team store (Redis) steps that failed, by step",
            team.errors.clone(),
        );
        let quality = crate::ops::quality_tally::QualityTally::new(&mut registry);
        Metrics {
            registry,
            team,
            quality,
            requests,
            latency,
            upstream_latency,
            tokens,
            cost_usd,
            savings_usd,
            upstream_errors,
            config_reloads,
            cache_entries,
            cache_hits,
            cache_misses,
            budget_remaining_usd,
            circuit_open,
            budget_alerts,
        }
    }
}

impl Metrics {
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
