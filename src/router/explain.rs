//! Why the router chose what it chose (`POST /api/v2/route/explain`,
//! `p402 route --explain`): every chat model in the order it would be
//! tried, with its expected cost, its rating where the request's ratings
//! are read, the rating's source, and, for each one passed over, why.
//! Nothing is sent to a provider.

use serde::Serialize;

use crate::catalog::arena::Category;
use crate::catalog::{Model, QualitySource};
use crate::money::Usd;
use crate::wire::request::ChatRequest;

use super::{
    attempts, category, failover_order, ModeChoice, Needs, Reject, RouteError, Router, Standard,
    AUTO,
};

/// The whole account of one routing decision.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub(crate) requested_model: String,
    /// The mode the candidates are ordered by.
    pub mode: ModeChoice,
    /// The request's category, as decided locally.
    pub category: Category,
    /// The category the ratings are compared in, when not the request's
    /// (the requested model has no rating in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rated_in: Option<Category>,
    /// The requested model's rating there, and its source.
    pub requested_rating: Option<i64>,
    pub(crate) requested_source: Option<QualitySource>,
    pub(crate) max_quality_drop: u32,
    /// The prompt's tokens, as counted.
    pub input_tokens: u64,
    /// Why the requested model is not rewritten, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_rewritten: Option<String>,
    /// The candidates to try first, then the other eligible models, then
    /// those passed over.
    pub candidates: Vec<Explained>,
}

/// One model in the explanation.
#[derive(Debug, Serialize)]
pub struct Explained {
    /// The provider's name.
    pub provider: String,
    /// The catalog id of the model.
    pub model: String,
    #[serde(rename = "expected_cost_usd")]
    pub(crate) expected_cost: Option<Usd>,
    pub(crate) rating: Option<i64>,
    /// The low and high ends of the rating's 95% confidence interval.
    pub rating_interval: Option<[i64; 2]>,
    pub(crate) source: QualitySource,
    /// The model's 0-100 score (compared only between unmeasured models).
    pub score: Option<u8>,
    /// Its place among the candidates tried (1 = first), when it is one.
    pub attempt: Option<usize>,
    /// Why it is not tried.
    pub passed_over: Option<String>,
}

impl Router<'_> {
    /// The explanation of routing `request`; an error only where routing
    /// itself would fail before judging any model (a pin to an unknown
    /// provider, say). When no model is eligible, every one is listed with
    /// its reason.
    pub fn explain(
        &self,
        request: &ChatRequest,
        input_tokens: u64,
    ) -> Result<Explanation, RouteError> {
        let mode = request
            .options
            .mode
            .unwrap_or(ModeChoice::Named(self.config.default_mode));
        let needs = Needs::of(request, input_tokens);
        let requested = (request.model != AUTO)
            .then(|| self.catalog.find(&request.model))
            .flatten();
        let standard = &Standard::new(category::of(request, &needs), requested);
        let mut explanation = Explanation {
            requested_model: request.model.clone(),
            mode,
            category: standard.category,
            rated_in: standard.compared.filter(|c| *c != standard.category),
            requested_rating: standard.requested.map(|r| r.rating.round() as i64),
            requested_source: standard.requested_source,
            max_quality_drop: self.config.max_quality_drop,
            input_tokens,
            not_rewritten: self.not_rewritten(request, requested),
            candidates: Vec::new(),
        };
        if explanation.not_rewritten.is_some() {
            let route = self.route(request, input_tokens)?;
            explanation.candidates = route
                .candidates
                .iter()
                .enumerate()
                .map(|(i, c)| Explained {
                    provider: c.provider.name.clone(),
                    model: c.model_name().to_string(),
                    expected_cost: c.expected_cost,
                    attempt: Some(i + 1),
                    passed_over: None,
                    ..rated(standard, c.model.as_ref())
                })
                .collect();
            return Ok(explanation);
        }
        let survey = self.survey(request, mode, requested, standard, &needs);
        let (tried, others) = failover_order(survey.eligible, attempts(request));
        let tried_count = tried.len();
        for (i, e) in tried.into_iter().enumerate() {
            explanation.candidates.push(Explained {
                provider: e.provider.name.clone(),
                model: e.model.id.clone(),
                expected_cost: e.cost,
                attempt: Some(i + 1),
                passed_over: None,
                ..rated(standard, Some(e.model))
            });
        }
        for e in others {
            explanation.candidates.push(Explained {
                provider: e.provider.name.clone(),
                model: e.model.id.clone(),
                expected_cost: e.cost,
                attempt: None,
                passed_over: Some(format!(
                    "eligible, but ranked after the {tried_count} candidates tried"
                )),
                ..rated(standard, Some(e.model))
            });
        }
        let mut passed = survey.passed;
        passed.sort_by_key(|(m, _)| (needs.expected_cost(m), m.provider.clone(), m.id.clone()));
        for (model, reason) in passed {
            explanation.candidates.push(Explained {
                provider: model.provider.clone(),
                model: model.id.clone(),
                expected_cost: needs.expected_cost(model),
                attempt: None,
                passed_over: Some(self.why(reason, model, requested, standard)),
                ..rated(standard, Some(model))
            });
        }
        Ok(explanation)
    }

    /// Why a request goes to the model it names, unchanged.
    fn not_rewritten(&self, request: &ChatRequest, requested: Option<&Model>) -> Option<String> {
        let options = &request.options;
        let mode = options
            .mode
            .unwrap_or(ModeChoice::Named(self.config.default_mode));
        if mode.is_passthrough() {
            Some("the mode is passthrough".into())
        } else if options.model.is_some() {
            Some("p402.model pins the model".into())
        } else if options.provider.is_some() {
            Some("p402.provider pins the provider".into())
        } else if self.config.is_pinned(&request.model) {
            Some("[routing] pin lists the model".into())
        } else if requested.is_none() && request.model != AUTO {
            Some("the catalog does not know the model, so no substitute can be judged".into())
        } else {
            None
        }
    }

    /// A passed-over model's reason, with the figures of the quality rule.
    fn why(
        &self,
        reason: Reject,
        model: &Model,
        requested: Option<&Model>,
        standard: &Standard,
    ) -> String {
        let requested_name = requested.map_or("the requested model", |m| m.id.as_str());
        match (reason, standard.compared, standard.requested) {
            (Reject::RatedLower, Some(category), Some(bar)) => {
                let rating = model.rating(category);
                format!(
                    "rated {} (low {}) in {category}, below {requested_name}'s {}{}",
                    rating.map_or(0, |r| r.rating.round() as i64),
                    rating.map_or(0, |r| r.low.round() as i64),
                    bar.rating.round() as i64,
                    match self.config.max_quality_drop {
                        0 => String::new(),
                        drop => format!(" minus the allowed drop of {drop}"),
                    }
                )
            }
            (Reject::UnratedInCategory, Some(category), _) => {
                format!("not rated in {category}, where {requested_name} is")
            }
            (Reject::Unmeasured, _, _) => format!(
                "its quality is {}, and {requested_name}'s is measured: an estimate never stands in for a measurement",
                model.quality_source.as_str()
            ),
            (Reject::QualityBelowFloor, _, _) => format!(
                "score {} below the floor for {requested_name} (score {})",
                model.quality.map_or_else(|| "none".to_string(), |q| q.to_string()),
                standard
                    .requested_score
                    .map_or_else(|| "none".to_string(), |q| q.to_string()),
            ),
            _ => reason.describe().to_string(),
        }
    }
}

/// The quality columns of a model (cost and place are the caller's).
fn rated(standard: &Standard, model: Option<&Model>) -> Explained {
    let rating = model.and_then(|m| standard.rating_of(m));
    Explained {
        provider: String::new(),
        model: String::new(),
        expected_cost: None,
        rating: rating.map(|r| r.rating.round() as i64),
        rating_interval: rating.map(|r| [r.low.round() as i64, r.high.round() as i64]),
        source: model.map_or(QualitySource::Estimated, |m| m.quality_source),
        score: model.and_then(|m| m.quality),
        attempt: None,
        passed_over: None,
    }
}
