//! Prices from the map the ecosystem maintains: LiteLLM's
//! `model_prices_and_context_window.json` (MIT), which every `litellm`
//! wheel on PyPI ships. `p402 catalog update` brings it from a pinned wheel
//! (or a file), keeps the entries of the providers p402 speaks, checks
//! every value, and stores the result under `<data_dir>/catalog/` with its
//! source and date. The catalog then takes prices, limits and capabilities
//! from it over the built-in ones; `[[models]]` in `p402.toml` still win,
//! and quality and speed scores, which the map does not have, stay the
//! built-in catalog's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Capability, Model};
use crate::ops::pypi::{self, FetchError};

/// The `litellm` release whose map p402 fetches by default.
pub const LITELLM_VERSION: &str = "1.108.0";
/// The map inside the wheel.
const MEMBER: &str = "litellm/model_prices_and_context_window_backup.json";
/// The map of [`LITELLM_VERSION`]; another `--version` is checked only
/// against PyPI's hash of its wheel.
const MEMBER_SHA256: &str = "66970be01c88f94618f9f69c1a1d29e400474f2d7b89973de7e373c110f455c2";
/// Where the stored map lives under the data directory.
const STORED: &str = "catalog/litellm.json";

/// The most a token may cost, in dollars: $1,000 per million. The dearest
/// model priced anywhere today is well under a fifth of it, so a price
/// above this is a unit mistake (per million written as per token), not a
/// price.
const MAX_PER_TOKEN: f64 = 1e-3;
/// A context or output limit past this many tokens is not a real one.
const MAX_TOKENS: u64 = 100_000_000;

/// LiteLLM's provider names for the providers p402 speaks, and the prefix
/// their keys carry (`gemini/gemini-2.5-flash`); OpenAI's and Anthropic's
/// keys have none.
const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "google"),
    ("deepseek", "deepseek"),
    ("groq", "groq"),
    ("mistral", "mistral"),
    ("together_ai", "together"),
    ("fireworks_ai", "fireworks"),
    ("xai", "xai"),
    ("cerebras", "cerebras"),
    ("perplexity", "perplexity"),
    ("openrouter", "openrouter"),
    ("ollama", "ollama"),
];

/// Why LiteLLM's price map could not be brought, read or stored; the
/// prices in use stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The download from PyPI failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A local copy (`--from`) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file named.
        path: String,
        /// What went wrong, for the message.
        reason: String,
    },
    /// The data is not JSON.
    #[error("the price map is not JSON: {0}")]
    NotJson(String),
    /// The JSON is not an object of models: not LiteLLM's format.
    #[error("the price map is not a JSON object of models")]
    NotAnObject,
    /// No entry prices a model of a provider p402 speaks, so the map would
    /// price nothing.
    #[error("the price map has no usable model for any provider p402 speaks")]
    Empty,
    /// The stored copy could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The stored copy's file.
        path: String,
        /// What went wrong, for the message.
        reason: String,
    },
}

/// One model as the map prices it, in p402's units (dollars per million
/// tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The p402 provider (`google`, not LiteLLM's `gemini`).
    pub provider: String,
    /// The model's id as the provider names it, without LiteLLM's prefix.
    pub id: String,
    pub(crate) input_per_mtok: f64,
    pub(crate) output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cached_input_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cache_write_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cache_write_1h_per_mtok: Option<f64>,
    /// USD per web search call (LiteLLM's `search_context_cost_per_query`,
    /// at its dearest context size: the sizes cost the same for every
    /// provider but Perplexity, and a cap must not under-count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_per_call: Option<f64>,
    /// The context window in tokens, when the map gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_output: Option<u32>,
    /// What the model can do, from the map's `supports_*` flags.
    pub capabilities: Vec<Capability>,
}

impl Entry {
    /// The entry as a `[[models]]` table would say it.
    pub fn as_config(&self) -> crate::config::ModelConfig {
        let price = |v: f64| Some(toml::Spanned::new(0..0, v));
        crate::config::ModelConfig {
            id: self.id.clone(),
            provider: toml::Spanned::new(0..0, self.provider.clone()),
            upstream_id: None,
            aliases: Vec::new(),
            input_per_mtok: price(self.input_per_mtok),
            cached_input_per_mtok: self.cached_input_per_mtok.and_then(price),
            output_per_mtok: price(self.output_per_mtok),
            cache_write_per_mtok: self.cache_write_per_mtok.and_then(price),
            cache_write_1h_per_mtok: self.cache_write_1h_per_mtok.and_then(price),
            web_search_per_call: self.web_search_per_call.and_then(price),
            context: self.context,
            max_output: self.max_output,
            capabilities: Some(self.capabilities.clone()),
            quality: None,
            quality_estimated: None,
            arena: None,
            quality_source: None,
            speed_tps: None,
            source: None,
        }
    }
}

/// The stored map: where it came from, when, and its entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceMap {
    /// `litellm 1.108.0 (PyPI)` or the file it was read from.
    pub source: String,
    /// The day it was brought in (UTC, `YYYY-MM-DD`).
    pub fetched: String,
    /// Every model the map prices for a provider p402 speaks.
    pub models: Vec<Entry>,
}

impl PriceMap {
    /// What a model priced from this map shows as its `cost_source`.
    pub fn cost_source(&self) -> String {
        format!("{} as of {}", self.source, self.fetched)
    }
}

/// An entry of the map that was left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub(crate) key: String,
    pub(crate) reason: String,
}

/// The map's entries for the providers p402 speaks, each checked; the
/// entries that fail a check are left out and listed. Fails as a whole
/// (changing nothing) when the text is not a JSON object, or nothing in it
/// is usable.
pub fn parse(
    json: &[u8],
    source: String,
    fetched: String,
) -> Result<(PriceMap, Vec<Skipped>), MapError> {
    let map: Value = serde_json::from_slice(json).map_err(|e| MapError::NotJson(e.to_string()))?;
    let Value::Object(map) = map else {
        return Err(MapError::NotAnObject);
    };
    let mut models = BTreeMap::new();
    let mut skipped = Vec::new();
    for (key, spec) in &map {
        match entry(key, spec) {
            Ok(Some(entry)) => {
                models.insert((entry.provider.clone(), entry.id.clone()), entry);
            }
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped {
                key: key.clone(),
                reason,
            }),
        }
    }
    if models.is_empty() {
        return Err(MapError::Empty);
    }
    let map = PriceMap {
        source,
        fetched,
        models: models.into_values().collect(),
    };
    Ok((map, skipped))
}

/// One map entry as p402's: `None` for providers p402 does not speak and
/// for what is not a chat or embedding model; `Err` for a value that fails
/// its check.
fn entry(key: &str, spec: &Value) -> Result<Option<Entry>, String> {
    let Some(spec) = spec.as_object() else {
        return Ok(None);
    };
    let Some(litellm) = spec.get("litellm_provider").and_then(Value::as_str) else {
        return Ok(None);
    };
    let Some(&(prefix, provider)) = PROVIDERS.iter().find(|(name, _)| *name == litellm) else {
        return Ok(None);
    };
    let mode = spec.get("mode").and_then(Value::as_str).unwrap_or("chat");
    if mode != "chat" && mode != "embedding" {
        return Ok(None);
    }
    let id = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(key);
    if id.is_empty() || id.len() > 200 {
        return Err("an empty or overlong model id".into());
    }
    let price = |field: &str| -> Result<Option<f64>, String> {
        match spec.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                let per_token = value
                    .as_f64()
                    .ok_or_else(|| format!("`{field}` is not a number"))?;
                if !per_token.is_finite() || per_token < 0.0 {
                    return Err(format!("`{field}` is {per_token}"));
                }
                if per_token > MAX_PER_TOKEN {
                    return Err(format!(
                        "`{field}` is ${per_token} per token (${} per million): not a per-token price",
                        per_token * 1e6
                    ));
                }
                // Per token to per million, rounded to the nano-dollar the
                // catalog keeps.
                Ok(Some((per_token * 1e6 * 1e9).round() / 1e9))
            }
        }
    };
    let (Some(input), output) = (
        price("input_cost_per_token")?,
        price("output_cost_per_token")?,
    ) else {
        return Ok(None);
    };
    let tokens = |field: &str| -> Result<Option<u32>, String> {
        match spec.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_u64() {
                Some(n) if n > 0 && n <= MAX_TOKENS => Ok(u32::try_from(n).ok()),
                // Some entries carry a description here instead of a number.
                _ if value.is_string() => Ok(None),
                _ => Err(format!("`{field}` is {value}")),
            },
        }
    };
    let flag = |field: &str| spec.get(field).and_then(Value::as_bool) == Some(true);
    let mut capabilities = Vec::new();
    if mode == "embedding" {
        capabilities.push(Capability::Embeddings);
    } else {
        for (field, capability) in [
            ("supports_function_calling", Capability::Tools),
            ("supports_vision", Capability::Vision),
            ("supports_response_schema", Capability::JsonSchema),
            ("supports_reasoning", Capability::Reasoning),
        ] {
            if flag(field) {
                capabilities.push(capability);
            }
        }
        capabilities.push(Capability::Streaming);
    }
    Ok(Some(Entry {
        provider: provider.to_string(),
        id: id.to_string(),
        input_per_mtok: input,
        // An embedding model has no output to price.
        output_per_mtok: output.unwrap_or(0.0),
        cached_input_per_mtok: price("cache_read_input_token_cost")?,
        cache_write_per_mtok: price("cache_creation_input_token_cost")?,
        cache_write_1h_per_mtok: price("cache_creation_input_token_cost_above_1hr")?,
        web_search_per_call: search_fee(spec)?,
        context: tokens("max_input_tokens")?.or(tokens("max_tokens")?),
        max_output: tokens("max_output_tokens")?,
        capabilities,
    }))
}

/// The dearest of `search_context_cost_per_query`'s sizes, in USD per
/// call; `None` when the entry lists no fee.
fn search_fee(spec: &serde_json::Map<String, Value>) -> Result<Option<f64>, String> {
    let Some(sizes) = spec
        .get("search_context_cost_per_query")
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let mut dearest: Option<f64> = None;
    for (size, fee) in sizes {
        let fee = fee
            .as_f64()
            .filter(|f| f.is_finite() && (0.0..=1.0).contains(f))
            .ok_or_else(|| format!("`search_context_cost_per_query.{size}` is {fee}"))?;
        dearest = Some(dearest.map_or(fee, |d: f64| d.max(fee)));
    }
    Ok(dearest)
}

/// The map in a `litellm` wheel from PyPI: the pinned release by default,
/// checked against the hash pinned here; another release against PyPI's
/// hash of its wheel only.
pub async fn fetch(version: Option<&str>) -> Result<(Vec<u8>, String), MapError> {
    let pinned = pypi::PinnedMember {
        package: "litellm",
        version: LITELLM_VERSION,
        member: MEMBER,
        sha256: MEMBER_SHA256,
    };
    let (json, version) = pinned.fetch(version).await?;
    Ok((json, format!("litellm {version} (PyPI)")))
}

/// The map in a file: the JSON itself, or a `litellm` wheel holding it.
pub fn read(path: &Path) -> Result<(Vec<u8>, String), MapError> {
    let bytes = std::fs::read(path).map_err(|e| MapError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let json = if name.ends_with(".whl") {
        pypi::extract(&name, &bytes, MEMBER)?
    } else {
        bytes
    };
    Ok((json, format!("file {name}")))
}

/// Where the stored map lives.
pub fn stored_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORED)
}

/// The stored map, if there is one. One that cannot be read is reported
/// and left out: the built-in prices stand.
pub fn load(data_dir: &Path) -> Option<PriceMap> {
    pypi::load_stored(&stored_path(data_dir), "the price map")
}

/// Writes the map in place of the stored one, whole or not at all.
pub fn store(data_dir: &Path, map: &PriceMap) -> Result<PathBuf, MapError> {
    let path = stored_path(data_dir);
    let failed = |e: String| MapError::Write {
        path: path.display().to_string(),
        reason: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    let json = serde_json::to_vec_pretty(map).map_err(|e| failed(e.to_string()))?;
    pypi::write_atomically(&path, &json).map_err(|e| failed(e.to_string()))?;
    Ok(path)
}

/// A price that an update changes.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceChange {
    /// The model, as `provider/id`.
    pub model: String,
    pub(crate) what: &'static str,
    pub(crate) before: f64,
    pub(crate) after: f64,
}

impl PriceChange {
    /// More than ten times up or down: worth a loud word, since it is more
    /// often a mistake in the map than a real price.
    pub fn is_drastic(&self) -> bool {
        let (low, high) = if self.before < self.after {
            (self.before, self.after)
        } else {
            (self.after, self.before)
        };
        high > 10.0 * low && high > 0.0
    }
}

/// What an update changes against the catalog in use before it.
#[derive(Debug, Default)]
pub struct Changes {
    /// Models the map prices that the catalog did not have, as `provider/id`.
    pub new: Vec<String>,
    pub(crate) prices: Vec<PriceChange>,
}

pub(crate) fn changes(before: &[Model], map: &PriceMap) -> Changes {
    let mut changes = Changes::default();
    for entry in &map.models {
        let name = format!("{}/{}", entry.provider, entry.id);
        let Some(old) = before
            .iter()
            .find(|m| m.provider == entry.provider && m.id == entry.id)
        else {
            changes.new.push(name);
            continue;
        };
        let Some(price) = old.price else {
            continue;
        };
        for (what, before, after) in [
            ("input", price.input.to_dollars(), entry.input_per_mtok),
            ("output", price.output.to_dollars(), entry.output_per_mtok),
        ] {
            if (before - after).abs() > 1e-9 {
                changes.prices.push(PriceChange {
                    model: name.clone(),
                    what,
                    before,
                    after,
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(map: Value) -> (PriceMap, Vec<Skipped>) {
        parse(
            map.to_string().as_bytes(),
            "test".into(),
            "2026-12-02".into(),
        )
        .expect("parsed")
    }

    #[test]
    fn entries_are_mapped_onto_the_providers_p402_speaks() {
        let (map, skipped) = parsed(json!({
            "sample_spec": {"litellm_provider": "one of https://docs.litellm.ai/docs/providers", "input_cost_per_token": 0.0},
            "claude-haiku-4-5": {"litellm_provider": "anthropic", "mode": "chat",
                "input_cost_per_token": 1e-6, "output_cost_per_token": 5e-6,
                "cache_read_input_token_cost": 1e-7, "cache_creation_input_token_cost": 1.25e-6,
                "cache_creation_input_token_cost_above_1hr": 2e-6,
                "max_input_tokens": 200000, "max_output_tokens": 64000,
                "supports_function_calling": true, "supports_vision": true,
                "supports_response_schema": true, "supports_reasoning": true,
                "search_context_cost_per_query": {"search_context_size_low": 0.01,
                    "search_context_size_medium": 0.01, "search_context_size_high": 0.01}},
            "gemini/gemini-2.5-flash": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 3e-7, "output_cost_per_token": 2.5e-6, "max_tokens": 65536,
                "search_context_cost_per_query": {"search_context_size_low": 0.005,
                    "search_context_size_medium": 0.008, "search_context_size_high": 0.035}},
            "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding",
                "input_cost_per_token": 2e-8, "output_cost_per_token": 0.0, "max_input_tokens": 8191},
            "bedrock/anthropic.claude-x": {"litellm_provider": "bedrock", "mode": "chat",
                "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
            "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation",
                "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
        }));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(map.models.len(), 3);
        let haiku = map
            .models
            .iter()
            .find(|m| m.id == "claude-haiku-4-5")
            .expect("haiku");
        assert_eq!(haiku.provider, "anthropic");
        assert_eq!(haiku.input_per_mtok, 1.0);
        assert_eq!(haiku.output_per_mtok, 5.0);
        assert_eq!(haiku.cached_input_per_mtok, Some(0.1));
        assert_eq!(haiku.cache_write_per_mtok, Some(1.25));
        assert_eq!(haiku.cache_write_1h_per_mtok, Some(2.0));
        assert_eq!(haiku.web_search_per_call, Some(0.01));
        assert_eq!(
            (haiku.context, haiku.max_output),
            (Some(200_000), Some(64_000))
        );
        assert_eq!(
            haiku.capabilities,
            [
                Capability::Tools,
                Capability::Vision,
                Capability::JsonSchema,
                Capability::Reasoning,
                Capability::Streaming
            ]
        );
        let flash = map
            .models
            .iter()
            .find(|m| m.provider == "google")
            .expect("gemini");
        assert_eq!(flash.id, "gemini-2.5-flash");
        assert_eq!(flash.context, Some(65536));
        // The dearest size: a cap must not under-count.
        assert_eq!(flash.web_search_per_call, Some(0.035));
        assert_eq!(flash.capabilities, [Capability::Streaming]);
        let embedding = map
            .models
            .iter()
            .find(|m| m.id == "text-embedding-3-small")
            .expect("embedding");
        assert_eq!(embedding.capabilities, [Capability::Embeddings]);
        assert_eq!(embedding.input_per_mtok, 0.02);
    }

    #[test]
    fn every_value_is_checked_and_a_bad_entry_is_left_out() {
        let good = json!({"litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6});
        let with = |field: &str, value: Value| {
            let mut entry = good.clone();
            entry[field] = value;
            entry
        };
        let (map, skipped) = parsed(json!({
            "good": good,
            "negative": with("input_cost_per_token", json!(-1e-6)),
            "per-million-by-mistake": with("output_cost_per_token", json!(15.0)),
            "text-price": with("input_cost_per_token", json!("cheap")),
            "zero-context": with("max_input_tokens", json!(0)),
            "huge-context": with("max_input_tokens", json!(1e12)),
        }));
        assert_eq!(map.models.len(), 1);
        let mut keys: Vec<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "huge-context",
                "negative",
                "per-million-by-mistake",
                "text-price",
                "zero-context"
            ]
        );
    }

    #[test]
    fn a_map_that_is_not_one_changes_nothing() {
        let fail = |text: &str| parse(text.as_bytes(), "t".into(), "d".into()).map(|_| ());
        assert!(matches!(fail("{not json"), Err(MapError::NotJson(_))));
        assert!(matches!(fail("[1, 2]"), Err(MapError::NotAnObject)));
        assert!(matches!(fail("{}"), Err(MapError::Empty)));
        assert!(matches!(
            fail(r#"{"x": {"litellm_provider": "bedrock", "input_cost_per_token": 1e-6}}"#),
            Err(MapError::Empty)
        ));
    }

    #[test]
    fn a_tenfold_change_is_drastic() {
        let change = |before, after| PriceChange {
            model: "m".into(),
            what: "input",
            before,
            after,
        };
        assert!(!change(1.0, 9.9).is_drastic());
        assert!(change(1.0, 10.5).is_drastic());
        assert!(change(10.5, 1.0).is_drastic());
        assert!(change(0.0, 0.01).is_drastic());
        assert!(!change(0.0, 0.0).is_drastic());
    }
}
