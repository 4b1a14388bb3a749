//! Which provider and model answer a request.
//!
//! The router turns a parsed request into an ordered list of candidates; the
//! chat pipeline tries them in order. Today the list holds the provider that
//! serves the requested (or pinned) model; the routing modes widen it to the
//! cheapest, best or fastest eligible models without the pipeline changing.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Catalog, Model, Price, Provider};
use crate::config::RoutingConfig;
use crate::error::{ApiError, ErrorKind};
use crate::request::ChatRequest;

/// A routing mode, as named in the config, the `p402` object or `X-P402-Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Cost,
    Quality,
    Speed,
    Balanced,
    Passthrough,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cost" => Ok(Mode::Cost),
            "quality" => Ok(Mode::Quality),
            "speed" => Ok(Mode::Speed),
            "balanced" => Ok(Mode::Balanced),
            "passthrough" => Ok(Mode::Passthrough),
            other => Err(format!(
                "unknown mode `{other}`; expected cost, quality, speed, balanced or passthrough"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Mode::Cost => "cost",
            Mode::Quality => "quality",
            Mode::Speed => "speed",
            Mode::Balanced => "balanced",
            Mode::Passthrough => "passthrough",
        };
        f.write_str(name)
    }
}

/// Custom weights of the three routing goals.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub quality: f64,
    #[serde(default)]
    pub speed: f64,
}

/// A named mode or custom weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModeChoice {
    Named(Mode),
    Weights(Weights),
}

impl TryFrom<Value> for ModeChoice {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(name) => name.parse().map(ModeChoice::Named),
            Value::Object(_) => {
                let weights: Weights = serde_json::from_value(value)
                    .map_err(|e| format!("invalid mode weights: {e}"))?;
                let all = [weights.cost, weights.quality, weights.speed];
                if all.iter().any(|w| !w.is_finite() || *w < 0.0) || all.iter().sum::<f64>() <= 0.0
                {
                    return Err(
                        "mode weights must be non-negative numbers with a positive sum".to_string(),
                    );
                }
                Ok(ModeChoice::Weights(weights))
            }
            other => Err(format!(
                "mode must be a name or an object of weights, found {other}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for ModeChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ModeChoice::try_from(value).map_err(serde::de::Error::custom)
    }
}

/// One provider and model to try.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub provider: Arc<Provider>,
    /// The model id sent upstream.
    pub upstream_model: String,
    /// The catalog entry, when the catalog knows the model (it has the price).
    pub model: Option<Model>,
}

impl Candidate {
    /// The name reported to the client: the catalog id, or what was sent.
    pub fn model_name(&self) -> &str {
        self.model.as_ref().map_or(&self.upstream_model, |m| &m.id)
    }

    pub fn price(&self) -> Option<Price> {
        self.model.as_ref().and_then(|m| m.price)
    }
}

/// The router's decision.
#[derive(Debug, Clone)]
pub struct Route {
    pub mode: ModeChoice,
    /// The model the client asked for, as it asked.
    pub requested_model: String,
    /// Prices `direct_cost` is computed at: the requested model's, or the
    /// reference model's when the requested one is unknown or `auto`.
    pub baseline: Option<Price>,
    /// In the order to try them.
    pub candidates: Vec<Candidate>,
}

/// The model name that means "choose for me".
pub const AUTO: &str = "auto";

pub fn route(
    catalog: &Catalog,
    routing: &RoutingConfig,
    request: &ChatRequest,
) -> Result<Route, ApiError> {
    let options = &request.options;
    let mode = options
        .mode
        .unwrap_or(ModeChoice::Named(routing.default_mode));
    let requested_model = request.model.clone();
    let reference = routing.reference_model.get_ref();
    let baseline = match catalog.find(&requested_model).and_then(|m| m.price) {
        Some(price) => Some(price),
        None => catalog.find(reference).and_then(|m| m.price),
    };

    // A `p402.model` pin wins over the body; `auto` falls back to the
    // reference model until mode-based choice is in place.
    let wanted = options.model.as_deref().unwrap_or(&requested_model);
    let wanted = if wanted == AUTO {
        reference.as_str()
    } else {
        wanted
    };

    let candidate = match options.provider.as_deref() {
        Some(provider_name) => pinned_provider(catalog, provider_name, wanted)?,
        None => by_model(catalog, wanted)?,
    };
    if let Some(reason) = candidate.provider.unusable_reason() {
        return Err(ApiError::new(
            ErrorKind::NoProvider,
            "provider_unavailable",
            reason,
        ));
    }
    Ok(Route {
        mode,
        requested_model,
        baseline,
        candidates: vec![candidate],
    })
}

fn pinned_provider(
    catalog: &Catalog,
    provider_name: &str,
    wanted: &str,
) -> Result<Candidate, ApiError> {
    let provider = catalog.provider(provider_name).ok_or_else(|| {
        ApiError::invalid(
            "unknown_provider",
            format!("p402.provider `{provider_name}` is not a known provider"),
        )
    })?;
    // `provider/model` written in full is accepted under a provider pin too.
    let bare = wanted
        .strip_prefix(provider_name)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(wanted);
    let model = catalog.find_on(provider_name, bare).cloned();
    Ok(Candidate {
        provider: provider.clone(),
        upstream_model: model
            .as_ref()
            .map_or_else(|| bare.to_string(), |m| m.upstream_id.clone()),
        model,
    })
}

fn by_model(catalog: &Catalog, wanted: &str) -> Result<Candidate, ApiError> {
    if let Some(model) = catalog.find(wanted) {
        let provider = catalog.provider(&model.provider).ok_or_else(|| {
            ApiError::internal(format!("model `{}` names a missing provider", model.id))
        })?;
        // A dated snapshot keeps its own id upstream; only its price is shared.
        let upstream_model = if wanted == model.id
            || model.aliases.iter().any(|a| a == wanted)
            || wanted == format!("{}/{}", model.provider, model.id)
        {
            model.upstream_id.clone()
        } else {
            wanted.to_string()
        };
        return Ok(Candidate {
            provider: provider.clone(),
            upstream_model,
            model: Some(model.clone()),
        });
    }
    // `provider/model` for a model the catalog does not list.
    if let Some((provider_name, rest)) = wanted.split_once('/') {
        if let Some(provider) = catalog.provider(provider_name) {
            return Ok(Candidate {
                provider: provider.clone(),
                upstream_model: rest.to_string(),
                model: None,
            });
        }
    }
    // An unlisted model goes to the only usable provider, if there is one:
    // with a single provider configured there is nothing to guess.
    let mut usable = catalog
        .providers()
        .iter()
        .filter(|p| p.is_usable() && p.api_key.is_some());
    if let (Some(only), None) = (usable.next(), usable.next()) {
        return Ok(Candidate {
            provider: only.clone(),
            upstream_model: wanted.to_string(),
            model: None,
        });
    }
    Err(ApiError::new(
        ErrorKind::NotFound,
        "model_not_found",
        format!(
            "model `{wanted}` is not in p402's catalog; write it as provider/model, pin a provider with p402.provider, or add it under [[models]] in p402.toml"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::request;

    fn setup(config: &str, keys: &[&str]) -> (Catalog, RoutingConfig) {
        let config = parse("t.toml", config).expect("valid");
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let catalog = Catalog::build(&config, |name| {
            keys.iter().any(|k| k == name).then(|| "key".to_string())
        });
        (catalog, config.routing)
    }

    fn chat(body: &str) -> ChatRequest {
        request::parse(body.as_bytes(), &http::HeaderMap::new()).expect("valid request")
    }

    #[test]
    fn known_model_goes_to_its_provider() {
        let (catalog, routing) = setup("", &["OPENAI_API_KEY"]);
        let r = route(
            &catalog,
            &routing,
            &chat(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .expect("routed");
        assert_eq!(r.candidates[0].provider.name, "openai");
        assert_eq!(r.candidates[0].upstream_model, "gpt-4o-mini");
        assert!(r.baseline.is_some());
    }

    #[test]
    fn provider_without_key_is_503() {
        let (catalog, routing) = setup("", &[]);
        let e = route(
            &catalog,
            &routing,
            &chat(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .expect_err("no key");
        assert_eq!(e.kind, ErrorKind::NoProvider);
        assert!(e.message.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn provider_prefix_and_pin() {
        let (catalog, routing) = setup("", &["GROQ_API_KEY", "OPENAI_API_KEY"]);
        let r = route(&catalog, &routing, &chat(r#"{"model":"groq/llama-3.1-8b-instant","messages":[{"role":"user","content":"hi"}]}"#))
            .expect("routed");
        assert_eq!(r.candidates[0].provider.name, "groq");
        assert_eq!(r.candidates[0].upstream_model, "llama-3.1-8b-instant");

        let r = route(&catalog, &routing, &chat(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"p402":{"provider":"groq","model":"llama-3.3-70b-versatile"}}"#))
            .expect("routed");
        assert_eq!(r.candidates[0].provider.name, "groq");
        assert_eq!(r.candidates[0].upstream_model, "llama-3.3-70b-versatile");
        assert_eq!(r.requested_model, "x");
    }

    #[test]
    fn unknown_model_with_several_providers_is_404() {
        let (catalog, routing) = setup("", &["GROQ_API_KEY", "OPENAI_API_KEY"]);
        let e = route(
            &catalog,
            &routing,
            &chat(r#"{"model":"mystery","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .expect_err("unknown");
        assert_eq!(e.code, "model_not_found");
        let (catalog, routing) = setup("", &["OPENAI_API_KEY"]);
        let r = route(
            &catalog,
            &routing,
            &chat(r#"{"model":"mystery","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .expect("the only provider");
        assert_eq!(r.candidates[0].provider.name, "openai");
        assert!(r.candidates[0].model.is_none());
    }

    #[test]
    fn dated_snapshot_keeps_its_id_and_family_price() {
        let (catalog, routing) = setup("", &["OPENAI_API_KEY"]);
        let r = route(
            &catalog,
            &routing,
            &chat(r#"{"model":"gpt-4o-2024-08-06","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .expect("routed");
        assert_eq!(r.candidates[0].upstream_model, "gpt-4o-2024-08-06");
        assert!(r.candidates[0].price().is_some());
    }

    #[test]
    fn mode_choice_parses_names_and_weights() {
        assert_eq!(
            ModeChoice::try_from(Value::from("speed")),
            Ok(ModeChoice::Named(Mode::Speed))
        );
        assert!(ModeChoice::try_from(Value::from("cheap")).is_err());
        assert!(ModeChoice::try_from(serde_json::json!({"cost": 1, "quality": 0.5})).is_ok());
        assert!(ModeChoice::try_from(serde_json::json!({"cost": -1})).is_err());
        assert!(ModeChoice::try_from(serde_json::json!({"price": 1})).is_err());
    }
}
