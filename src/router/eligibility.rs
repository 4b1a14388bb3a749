//! Whether a model can serve a request: capabilities, context, provider,
//! quality floor, price and the request's own cost cap.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::catalog::{Capability, Model, Usage};
use crate::money::Usd;
use crate::wire::request::ChatRequest;

/// When a request sets no output limit, this many output tokens are assumed
/// when comparing costs: a typical chat answer. (A hard cap on spend, which
/// needs the worst case instead, is the budget's business.)
pub const EXPECTED_OUTPUT_TOKENS: u32 = 500;
/// Room kept for the answer when checking a context window, without a limit.
pub const CONTEXT_RESERVE_TOKENS: u32 = 1024;

/// What a request demands of the model that answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Needs {
    /// What the request uses (tools, images, a JSON schema, ...); a model
    /// must have all of them.
    pub capabilities: BTreeSet<Capability>,
    /// The prompt's tokens, as counted, for the context check and cost.
    pub input_tokens: u64,
    /// `max_completion_tokens` or `max_tokens`, when the client set one.
    /// It holds for each choice.
    pub output_limit: Option<u32>,
    /// How many answers the provider writes and bills: `n` (or `best_of`,
    /// where it exists), at least 1.
    pub choices: u32,
    /// The most web searches the provider may run, each billed per call.
    pub searches: u32,
}

impl Needs {
    /// Reads the needs from the request body; `input_tokens` is the
    /// prompt as counted by the caller.
    pub fn of(request: &ChatRequest, input_tokens: u64) -> Self {
        let body = &request.body;
        let mut capabilities = BTreeSet::new();
        let non_empty = |key: &str| {
            body.get(key)
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        };
        if non_empty("tools") || non_empty("functions") {
            capabilities.insert(Capability::Tools);
        }
        if has_image(body.get("messages")) {
            capabilities.insert(Capability::Vision);
        }
        let format = body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str);
        if format == Some("json_schema") {
            capabilities.insert(Capability::JsonSchema);
        }
        if let Some(required) = &request.options.require_capabilities {
            capabilities.extend(required.iter().copied());
        }
        let limit = |key: &str| {
            body.get(key)
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Needs {
            capabilities,
            input_tokens,
            output_limit: limit("max_completion_tokens").or_else(|| limit("max_tokens")),
            choices: choices(body),
            searches: crate::wire::search_limit(request),
        }
    }

    /// What the request asks the model to write, for a budget's plan.
    pub fn output(&self) -> crate::money::budget::Output {
        crate::money::budget::Output {
            limit: self.output_limit,
            choices: self.choices,
            searches: self.searches,
        }
    }

    /// Output tokens assumed when pricing the request on `model`.
    pub fn expected_output(&self, model: &Model) -> u32 {
        let limit = self.output_limit.unwrap_or(EXPECTED_OUTPUT_TOKENS);
        model.max_output.map_or(limit, |max| limit.min(max))
    }

    /// The least a request can cost on `model` and still get a useful
    /// answer (what a budget or `max_cost` must at least hold).
    pub fn minimum_cost(&self, model: &Model) -> Option<Usd> {
        let output = self
            .output_limit
            .map_or(crate::money::budget::MIN_USEFUL_OUTPUT, |l| {
                l.min(crate::money::budget::MIN_USEFUL_OUTPUT)
            });
        let usage = Usage {
            input_tokens: self.input_tokens,
            output_tokens: u64::from(output) * u64::from(self.choices),
            web_searches: u64::from(self.searches),
            ..Usage::default()
        };
        model.price.map(|price| price.cost(&usage))
    }

    /// The expected cost on `model`, `None` when it has no price.
    pub fn expected_cost(&self, model: &Model) -> Option<Usd> {
        let usage = Usage {
            input_tokens: self.input_tokens,
            output_tokens: u64::from(self.expected_output(model)) * u64::from(self.choices),
            web_searches: u64::from(self.searches),
            ..Usage::default()
        };
        model.price.map(|price| price.cost(&usage))
    }
}

/// The answers a request has the provider write: `n`, or `best_of` when
/// it asks for more (the provider writes that many and returns the best
/// `n`, billing all of them). Anything else (absent, 0, not a number)
/// counts as one; the provider refuses what it does not accept.
pub fn choices(body: &serde_json::Map<String, Value>) -> u32 {
    ["n", "best_of"]
        .iter()
        .filter_map(|key| body.get(*key).and_then(Value::as_u64))
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .max()
        .unwrap_or(1)
        .max(1)
}

fn has_image(messages: Option<&Value>) -> bool {
    let Some(messages) = messages.and_then(Value::as_array) else {
        return false;
    };
    messages.iter().any(|message| {
        message
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts.iter().any(|part| {
                    matches!(
                        part.get("type").and_then(Value::as_str),
                        Some("image_url") | Some("input_image") | Some("image")
                    )
                })
            })
    })
}

/// Why a model was passed over; counted to explain an empty choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// The provider has no API key or cannot be reached.
    ProviderUnusable,
    /// The request's `exclude_providers` names the provider.
    ProviderExcluded,
    /// The request uses features only its own API can carry, and the
    /// provider speaks another.
    Dialect,
    /// The provider failed recently and its circuit is open.
    CircuitOpen,
    /// A local server does not list it, or a provider said it does not
    /// have it.
    ModelMissing,
    /// The model lacks a capability the request uses.
    Capability,
    /// The prompt and room for the answer exceed the context window.
    Context,
    /// The request's output limit is above the model's maximum output.
    OutputLimit,
    /// Its 0-100 quality score is below the floor the requested model's
    /// score sets.
    QualityBelowFloor,
    /// The requested model is measured and this one is not.
    Unmeasured,
    /// Measured, but not in the category the ratings are compared in.
    UnratedInCategory,
    /// Rated below the requested model (minus the allowed drop) in the
    /// request's category, at the low end of its confidence interval.
    RatedLower,
    /// The catalog has no price for it, so its cost cannot be known.
    Unpriced,
    /// Its least cost for the request is over the request's `max_cost`.
    MaxCost,
}

impl Reject {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Reject::ProviderUnusable => "provider without a key or unreachable",
            Reject::ProviderExcluded => "provider excluded",
            Reject::Dialect => {
                "speaking another API than the request's untranslatable features need"
            }
            Reject::CircuitOpen => "provider failing (circuit open)",
            Reject::ModelMissing => "model not installed on the local server, or reported missing",
            Reject::Capability => "missing a capability the request uses",
            Reject::Context => "context window too small",
            Reject::OutputLimit => "output limit above the model's maximum",
            Reject::QualityBelowFloor => "quality below the floor",
            Reject::Unmeasured => "quality only estimated, while the requested model's is measured",
            Reject::UnratedInCategory => "not rated in the request's category",
            Reject::RatedLower => "rated lower in the request's category",
            Reject::Unpriced => "no price in the catalog",
            Reject::MaxCost => "over max_cost",
        }
    }
}

/// Whether `model` has what the request needs of the model itself (not of
/// its provider): capabilities, context and output limit.
pub fn fits(model: &Model, needs: &Needs) -> Result<(), Reject> {
    if !needs
        .capabilities
        .iter()
        .all(|c| model.capabilities.contains(c))
    {
        return Err(Reject::Capability);
    }
    if let Some(context) = model.context {
        let reserve = needs
            .output_limit
            .unwrap_or(CONTEXT_RESERVE_TOKENS)
            .min(model.max_output.unwrap_or(u32::MAX));
        if needs.input_tokens + u64::from(reserve) > u64::from(context) {
            return Err(Reject::Context);
        }
    }
    if let (Some(limit), Some(max)) = (needs.output_limit, model.max_output) {
        if limit > max {
            return Err(Reject::OutputLimit);
        }
    }
    Ok(())
}
