//! Routing modes: what "best" means for a request. The vocabulary is
//! shared by the config (`default_mode`), a request's options and the
//! router, so it lives apart from all three.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The model name that means "choose for me".
pub const AUTO: &str = "auto";

/// A routing mode, as named in the config, the `p402` object or `X-P402-Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The lowest expected cost.
    Cost,
    /// The highest quality the request can afford.
    Quality,
    /// The fastest output.
    Speed,
    /// Equal weight on cost, quality and speed.
    Balanced,
    /// The requested model, unchanged.
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
    /// How much low expected cost counts; the three weights are divided
    /// by their sum, so only their ratio matters.
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub(crate) quality: f64,
    #[serde(default)]
    pub(crate) speed: f64,
}

impl Weights {
    pub(crate) const BALANCED: Weights = Weights {
        cost: 1.0 / 3.0,
        quality: 1.0 / 3.0,
        speed: 1.0 / 3.0,
    };
}

/// A named mode or custom weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModeChoice {
    /// One of the built-in modes.
    Named(Mode),
    /// Custom weights of cost, quality and speed.
    Weights(Weights),
}

impl ModeChoice {
    pub(crate) fn is_passthrough(&self) -> bool {
        *self == ModeChoice::Named(Mode::Passthrough)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_choice_parses_names_and_weights() {
        assert_eq!(
            ModeChoice::try_from(Value::from("speed")),
            Ok(ModeChoice::Named(Mode::Speed))
        );
        assert!(ModeChoice::try_from(Value::from("cheap")).is_err());
        assert!(ModeChoice::try_from(serde_json::json!({"cost": 1, "quality": 0.5})).is_ok());
        assert!(ModeChoice::try_from(serde_json::json!({"cost": -1})).is_err());
        assert!(ModeChoice::try_from(serde_json::json!({"cost": 0})).is_err());
        assert!(ModeChoice::try_from(serde_json::json!({"price": 1})).is_err());
    }
}
