//! What quality the routed requests got: per requested and served model,
//! how many rated requests and the sum of the served model's rating minus
//! the requested one's in each request's category (Elo points). Shown on
//! the dashboard (`GET /api/v2/quality`) and in `/metrics`
//! (`p402_quality_delta_points`, `p402_quality_rated_requests`). Held in
//! memory since the start: the ledger keeps money, not ratings.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairLabels {
    pub requested_model: String,
    pub model: String,
}

/// One requested model and the model that served it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pair {
    pub requested_model: String,
    pub model: String,
    pub requests: u64,
    /// The mean of served minus requested rating, in Elo points: negative
    /// means a lower-rated model served (only with `max_quality_drop`).
    pub mean_delta: f64,
    #[serde(skip)]
    delta_sum: i64,
}

pub struct QualityTally {
    pairs: Mutex<BTreeMap<(String, String), Pair>>,
    /// A gauge, not a counter: a sum that falls when a lower-rated model
    /// serves (which only a `max_quality_drop` allows).
    delta: Family<PairLabels, Gauge<f64, AtomicU64>>,
    rated: Family<PairLabels, Counter>,
}

impl QualityTally {
    pub fn new(registry: &mut Registry) -> Self {
        let delta = Family::<PairLabels, Gauge<f64, AtomicU64>>::default();
        let rated = Family::<PairLabels, Counter>::default();
        registry.register(
            "quality_delta_points",
            "Sum of the served model's Arena rating minus the requested model's, in each request's category (Elo points), by requested and served model; divide by quality_rated_requests for the mean",
            delta.clone(),
        );
        registry.register(
            "quality_rated_requests",
            "Requests whose requested and served models both have a rating in the request's category, by requested and served model",
            rated.clone(),
        );
        QualityTally {
            pairs: Mutex::new(BTreeMap::new()),
            delta,
            rated,
        }
    }

    /// One answered request whose two ratings are known.
    pub fn record(&self, requested_model: &str, model: &str, requested: i64, served: i64) {
        let labels = PairLabels {
            requested_model: requested_model.to_string(),
            model: model.to_string(),
        };
        self.delta
            .get_or_create(&labels)
            .inc_by((served - requested) as f64);
        self.rated.get_or_create(&labels).inc();
        let Ok(mut pairs) = self.pairs.lock() else {
            return;
        };
        let pair = pairs
            .entry((labels.requested_model.clone(), labels.model.clone()))
            .or_insert_with(|| Pair {
                requested_model: labels.requested_model,
                model: labels.model,
                ..Pair::default()
            });
        pair.requests += 1;
        pair.delta_sum += served - requested;
        pair.mean_delta = pair.delta_sum as f64 / pair.requests as f64;
    }

    /// Every pair, most requests first.
    pub fn pairs(&self) -> Vec<Pair> {
        let mut pairs: Vec<Pair> = self
            .pairs
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        pairs.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.requested_model.cmp(&b.requested_model))
                .then_with(|| a.model.cmp(&b.model))
        });
        pairs
    }
}
