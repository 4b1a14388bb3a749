//! Whether a model may stand in for the requested one: by its measured
//! rating in the request's category (SPEC section 13).
//!
//! The rule, when the requested model is measured (Arena):
//! - only a measured model may stand in: an estimate never replaces a
//!   measurement;
//! - ratings are compared in the request's category, or overall when the
//!   requested model has no rating in it (a category is one scale; two
//!   categories never are);
//! - the substitute's rating must reach the requested model's minus
//!   `[routing] max_quality_drop` **at the low end of its confidence
//!   interval**. A substitute whose point rating is above the bar only
//!   within its own noise is not taken, so noise never turns into a
//!   downgrade: at drop 0 every substitute is rated at least as high as the
//!   requested model in that category, and with 95% confidence.
//!
//! When the requested model is not measured (its quality is estimated or
//! the config's), ratings have nothing to compare with: the 0-100 scores
//! are compared as before (`[routing] quality_floor`), and an estimate
//! replaces only a model rated at or below it unless the config trusts
//! estimates. Scores of two scales are never compared.

use serde::Serialize;

use crate::catalog::arena::{Category, Rating};
use crate::catalog::{Model, Provider, QualitySource};
use crate::config::RoutingConfig;

use super::Reject;

/// What a request's substitutes are judged against.
#[derive(Debug, Clone)]
pub struct Standard {
    /// The request's category.
    pub category: Category,
    /// The category whose ratings are compared: the request's, or overall
    /// when the requested model is not rated in it; `None` when the
    /// requested model is not measured (or there is none: `auto`).
    pub compared: Option<Category>,
    /// The requested model's rating in `compared`.
    pub requested: Option<Rating>,
    /// The requested model's 0-100 score, for an unmeasured one.
    pub requested_score: Option<u8>,
    pub(crate) requested_source: Option<QualitySource>,
}

impl Standard {
    /// The standard for a request in `category` that asked for `requested`
    /// (`None` for `auto` or a model the catalog does not know).
    pub(crate) fn new(category: Category, requested: Option<&Model>) -> Self {
        let compared = requested.and_then(|model| {
            [category, Category::Overall]
                .into_iter()
                .find(|c| model.rating(*c).is_some())
        });
        Standard {
            category,
            compared,
            requested: compared.and_then(|c| requested.and_then(|m| m.rating(c).copied())),
            requested_score: requested.and_then(|m| m.quality),
            requested_source: requested.map(|m| m.quality_source),
        }
    }

    /// The category a model's rating is read in: the compared one, or the
    /// request's own when there is no requested model to compare with.
    pub fn rated_in(&self) -> Category {
        self.compared.unwrap_or(self.category)
    }

    /// A model's rating where this request reads it.
    pub fn rating_of<'m>(&self, model: &'m Model) -> Option<&'m Rating> {
        model.rating(self.rated_in())
    }

    /// Whether `model` may stand in for the requested model. A local model
    /// under `prefer_local` may, whatever its quality: the config asks for
    /// local first.
    pub fn admits(
        &self,
        model: &Model,
        provider: &Provider,
        config: &RoutingConfig,
    ) -> Result<(), Reject> {
        if config.prefer_local && provider.is_local() {
            return Ok(());
        }
        if let (Some(compared), Some(requested)) = (self.compared, self.requested) {
            let rating = match (model.ratings.is_some(), model.rating(compared)) {
                (false, _) => return Err(Reject::Unmeasured),
                (true, None) => return Err(Reject::UnratedInCategory),
                (true, Some(rating)) => rating,
            };
            let bar = requested.rating - f64::from(config.max_quality_drop);
            return if rating.low >= bar {
                Ok(())
            } else {
                Err(Reject::RatedLower)
            };
        }
        let Some(requested) = self.requested_score else {
            return Ok(());
        };
        let floor = if model.quality_estimated() && !config.trust_estimated_quality {
            requested
        } else {
            config.quality_floor.below(requested)
        };
        if model.quality.is_some_and(|q| q >= floor) {
            Ok(())
        } else {
            Err(Reject::QualityBelowFloor)
        }
    }
}

/// The quality part of `p402_metadata`: the request's category, the
/// ratings of the requested and the served model there, and where the
/// served model's quality comes from.
#[derive(Debug, Clone, Serialize)]
pub struct QualityNote {
    pub(crate) category: Category,
    /// Present when the ratings are overall ones because the requested
    /// model has none in the request's category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rated_in: Option<Category>,
    pub(crate) requested: Option<i64>,
    pub(crate) served: Option<i64>,
    pub(crate) source: QualitySource,
}

impl QualityNote {
    /// The note for a request judged by `standard` and answered by `served`.
    pub(crate) fn of(standard: &Standard, served: &Model) -> Self {
        let rated_in = standard.rated_in();
        QualityNote {
            category: standard.category,
            rated_in: (rated_in != standard.category).then_some(rated_in),
            requested: standard.requested.map(|r| r.rating.round() as i64),
            served: standard.rating_of(served).map(|r| r.rating.round() as i64),
            source: served.quality_source,
        }
    }
}
