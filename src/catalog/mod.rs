//! The priced catalog of providers and models.
//!
//! The built-in part is a TOML file compiled into the binary, so a fresh
//! install knows every provider's endpoint and every model's price with no
//! network access. `p402.toml` extends or overrides it; the merged result,
//! with provider keys read from the environment, is rebuilt on every config
//! reload and swapped in whole.

pub mod arena;
pub mod map;
mod provider;
pub mod update;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ModelConfig, StatedSource};
use crate::money::{PerMTok, Usd};
pub use crate::money::{Price, Usage};
pub use provider::{ApiKey, Provider};

/// What a model can do beyond plain chat; a request that uses one of these
/// is only sent to models that have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Calls tools (a request's `tools` or `functions`).
    Tools,
    /// Reads images in the messages.
    Vision,
    /// Keeps to a JSON schema (`response_format` of type `json_schema`).
    JsonSchema,
    /// Thinks before it answers. Never inferred from a request; a client
    /// asks for it with `require_capabilities`.
    Reasoning,
    /// Streams its answer. Never inferred from a request; a client asks for
    /// it with `require_capabilities`.
    Streaming,
    /// An embedding model: it answers `/v1/embeddings`, never a chat.
    Embeddings,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI Chat Completions at `base_url/chat/completions`.
    Openai,
    /// Anthropic's native Messages API.
    Anthropic,
}

impl Api {
    /// Whether the API bills writes to its prompt cache at a premium over
    /// input (Anthropic: 1.25 times for five minutes, 2 times for an
    /// hour), which a price entry that gives none must assume.
    pub(crate) fn charges_cache_writes(self) -> bool {
        self == Api::Anthropic
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinProvider {
    name: String,
    base_url: String,
    #[serde(default)]
    api_key_env: Option<String>,
    api: Api,
}

/// The compiled-in catalog's shape; tests build catalogs of their own from
/// the same format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinCatalog {
    as_of: String,
    providers: Vec<BuiltinProvider>,
    models: Vec<ModelConfig>,
}

const BUILTIN_TOML: &str = include_str!("builtin.toml");

/// The compiled-in catalog. It is data shipped inside the binary, not input:
/// the unit tests below load it, so a broken file never reaches a release.
static BUILTIN: LazyLock<BuiltinCatalog> = LazyLock::new(|| {
    toml::from_str(BUILTIN_TOML).unwrap_or_else(|e| panic!("built-in catalog is invalid: {e}"))
});

pub(crate) fn builtin_provider(name: &str) -> Option<Api> {
    BUILTIN
        .providers
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.api)
}

/// The built-in providers' names, for messages that list the choices.
pub fn builtin_provider_names() -> Vec<&'static str> {
    BUILTIN.providers.iter().map(|p| p.name.as_str()).collect()
}

/// The day the built-in catalog's prices were read (`YYYY-MM-DD`).
pub fn as_of() -> &'static str {
    &BUILTIN.as_of
}

/// Where a model's quality comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QualitySource {
    /// Measured: the Arena leaderboard's ratings per category.
    Arena,
    /// The user's `[[models]]` table says it.
    Config,
    /// A guess. It never stands in for a measured model.
    Estimated,
}

impl QualitySource {
    /// The source's name in metadata and `p402 models`.
    pub fn as_str(self) -> &'static str {
        match self {
            QualitySource::Arena => "arena",
            QualitySource::Config => "config",
            QualitySource::Estimated => "estimated",
        }
    }
}

/// One routable model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The name clients ask for and p402 reports.
    pub id: String,
    /// The provider that serves it, by its name in the config.
    pub provider: String,
    /// What the provider calls it (usually the same as `id`).
    pub upstream_id: String,
    pub(crate) aliases: Vec<String>,
    /// `None` when nobody has priced it: such a model is never charged as $0.
    pub price: Option<Price>,
    /// The context window in tokens; `None` when unknown, and then any
    /// request fits.
    pub context: Option<u32>,
    pub(crate) max_output: Option<u32>,
    /// What the model can do beyond plain chat; a request needing one it
    /// lacks is not sent to it.
    pub capabilities: Vec<Capability>,
    /// A 0-100 score: Artificial Analysis's index where the catalog says
    /// so, a hand estimate elsewhere, or the config's. Compared only with
    /// another model's 0-100 score, when the requested model has no
    /// measured ratings.
    pub quality: Option<u8>,
    /// Where the model's quality comes from (SPEC section 13).
    pub quality_source: QualitySource,
    /// The model's name on the Arena leaderboard, when it is mapped.
    pub arena: Option<String>,
    /// Its measured ratings: set exactly when `quality_source` is `Arena`.
    pub ratings: Option<Arc<arena::Ratings>>,
    pub(crate) speed_tps: Option<f64>,
    /// Shown as `cost_source` in the metadata.
    pub cost_source: String,
}

impl Model {
    /// `api` is the model's provider's: Anthropic bills cache writes at
    /// 1.25 (five minutes) and 2 (one hour) times the input price, which
    /// stand where the entry gives none.
    fn from_config(entry: &ModelConfig, cost_source: String, api: Option<Api>) -> Self {
        let per_mtok = |v: &Option<toml::Spanned<f64>>| {
            v.as_ref().and_then(|p| PerMTok::from_dollars(*p.get_ref()))
        };
        let price = match (
            per_mtok(&entry.input_per_mtok),
            per_mtok(&entry.output_per_mtok),
        ) {
            (Some(input), Some(output)) => {
                let times = |factor: f64| {
                    api.filter(|api| api.charges_cache_writes())
                        .and_then(|_| PerMTok::from_dollars(input.to_dollars() * factor))
                };
                let cache_write = per_mtok(&entry.cache_write_per_mtok)
                    .or_else(|| times(1.25))
                    .unwrap_or(input);
                Some(Price {
                    input,
                    cached_input: per_mtok(&entry.cached_input_per_mtok).unwrap_or(input),
                    output,
                    cache_write,
                    cache_write_1h: per_mtok(&entry.cache_write_1h_per_mtok)
                        .or_else(|| times(2.0))
                        .unwrap_or(cache_write),
                    web_search: entry
                        .web_search_per_call
                        .as_ref()
                        .and_then(|fee| Usd::from_dollars(*fee.get_ref()))
                        .unwrap_or_default(),
                })
            }
            _ => None,
        };
        Model {
            id: entry.id.clone(),
            provider: entry.provider.get_ref().clone(),
            upstream_id: entry
                .upstream_id
                .clone()
                .unwrap_or_else(|| entry.id.clone()),
            aliases: entry.aliases.clone(),
            price,
            context: entry.context,
            max_output: entry.max_output,
            capabilities: entry.capabilities.clone().unwrap_or_default(),
            quality: entry.quality.map(|q| q.0),
            quality_source: match entry.quality_source {
                Some(StatedSource::Config) => QualitySource::Config,
                Some(StatedSource::Estimated) => QualitySource::Estimated,
                None if entry.quality_estimated == Some(true) => QualitySource::Estimated,
                None => QualitySource::Config,
            },
            arena: entry.arena.clone(),
            ratings: None,
            speed_tps: entry.speed_tps,
            cost_source,
        }
    }
}

impl Model {
    /// What the map does not know, kept from the built-in entry this one
    /// replaces: the name the provider uses, aliases, and the quality and
    /// speed scores, and a web search fee the map does not list (a fee left
    /// out is not a free search).
    fn keep_from(&mut self, builtin: &Model) {
        self.upstream_id = builtin.upstream_id.clone();
        self.aliases = builtin.aliases.clone();
        self.keep_quality_of(builtin);
        self.speed_tps = builtin.speed_tps;
        if let (Some(price), Some(known)) = (self.price.as_mut(), builtin.price) {
            if price.web_search == Usd::ZERO {
                price.web_search = known.web_search;
            }
        }
    }

    fn keep_quality_of(&mut self, other: &Model) {
        self.quality = other.quality;
        self.quality_source = other.quality_source;
        self.arena = other.arena.clone();
        self.ratings = other.ratings.clone();
    }

    /// The quality is a guess: the model never stands in for a measured
    /// one, nor for a better guess unless the config trusts estimates.
    pub fn quality_estimated(&self) -> bool {
        self.quality_source == QualitySource::Estimated
    }

    /// The model's measured rating in `category`.
    pub fn rating(&self, category: arena::Category) -> Option<&arena::Rating> {
        self.ratings.as_ref().and_then(|r| r.get(category))
    }

    /// Takes the measured ratings of the model's Arena name, when the
    /// leaderboard has it; a name it lacks leaves the quality as stated.
    fn rate(&mut self, board: &arena::Leaderboard) {
        let Some(name) = self.arena.as_deref() else {
            return;
        };
        match board.ratings(name) {
            Some(ratings) => {
                self.quality_source = QualitySource::Arena;
                self.ratings = Some(Arc::new(ratings.clone()));
            }
            None => tracing::warn!(
                "{}/{}: the Arena data ({}) has no model `{name}`; its quality stays {}",
                self.provider,
                self.id,
                board.describe(),
                self.quality_source.as_str()
            ),
        }
    }
}

/// Providers and models as they stand under the current config.
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    models: Vec<Model>,
    /// id, alias and `provider/id` to model index.
    index: HashMap<String, Vec<usize>>,
    /// Where the measured ratings come from.
    arena: Arc<arena::Leaderboard>,
}

impl Catalog {
    /// Merges the built-in catalog with the config, reading keys through
    /// `env` (the process environment in production, a map in tests).
    pub fn build(config: &Config, env: impl Fn(&str) -> Option<String>) -> Self {
        Self::build_from(&BUILTIN, None, config, env)
    }

    /// The catalog with the prices of the stored map (`p402 catalog
    /// update`) over the built-in ones, and `config`'s over both.
    pub fn build_with_map(
        map: Option<&map::PriceMap>,
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        Self::build_from(&BUILTIN, map, config, env)
    }

    /// The catalog as a running p402 has it: the stored price map's prices
    /// and the stored Arena copy's ratings (the built-in ones without).
    pub fn build_stored(
        data_dir: &std::path::Path,
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let map = map::load(data_dir);
        Self::build_rated(
            &BUILTIN,
            map.as_ref(),
            arena::current(data_dir),
            config,
            env,
        )
    }

    /// Reads a catalog in the built-in format (for tests and benchmarks that
    /// need a fixed catalog).
    pub fn parse_base(text: &str) -> Result<BuiltinCatalog, toml::de::Error> {
        toml::from_str(text)
    }

    pub(crate) fn build_from(
        base: &BuiltinCatalog,
        price_map: Option<&map::PriceMap>,
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        Self::build_rated(base, price_map, arena::builtin(), config, env)
    }

    /// The catalog with its models' measured ratings taken from `board`.
    pub fn build_rated(
        base: &BuiltinCatalog,
        price_map: Option<&map::PriceMap>,
        board: Arc<arena::Leaderboard>,
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let mut providers: Vec<Provider> = base
            .providers
            .iter()
            .map(|p| Provider {
                name: p.name.clone(),
                base_url: p.base_url.clone(),
                api: p.api,
                api_key_env: p.api_key_env.clone(),
                api_key: None,
                enabled: true,
                allow_insecure: false,
                key_would_leak: false,
            })
            .collect();
        for (name, overrides) in &config.providers {
            let name = name.get_ref();
            let index = match providers.iter().position(|p| &p.name == name) {
                Some(i) => i,
                None => {
                    providers.push(Provider {
                        name: name.clone(),
                        base_url: String::new(),
                        api: Api::Openai,
                        api_key_env: None,
                        api_key: None,
                        enabled: true,
                        allow_insecure: false,
                        key_would_leak: false,
                    });
                    providers.len() - 1
                }
            };
            let provider = &mut providers[index];
            if let Some(url) = &overrides.base_url {
                provider.base_url = url.get_ref().as_str().to_string();
            }
            if let Some(env_name) = &overrides.api_key_env {
                provider.api_key_env = Some(env_name.clone());
            }
            if let Some(enabled) = overrides.enabled {
                provider.enabled = enabled;
            }
            if let Some(allow) = overrides.allow_insecure {
                provider.allow_insecure = allow;
            }
        }
        for provider in &mut providers {
            provider.api_key = provider
                .api_key_env
                .as_deref()
                .and_then(&env)
                .filter(|key| !key.trim().is_empty())
                .map(ApiKey);
            provider.key_would_leak = provider::key_would_leak(&provider.base_url);
        }

        let builtin_source = format!("catalog {}", base.as_of);
        let keyless = |entry: &ModelConfig| {
            providers
                .iter()
                .any(|p| &p.name == entry.provider.get_ref() && p.api_key_env.is_none())
        };
        let from = |entry: &ModelConfig, source: String| {
            let api = providers
                .iter()
                .find(|p| &p.name == entry.provider.get_ref())
                .map(|p| p.api);
            let mut model = Model::from_config(entry, source, api);
            if entry.quality_source.is_none() && entry.quality_estimated.is_none() && keyless(entry)
            {
                model.quality_source = QualitySource::Estimated;
            }
            model.rate(&board);
            model
        };
        // Every built-in chat model is measured (`arena`) or says it is
        // estimated: `every_chat_model_is_measured_or_says_it_is_estimated`.
        let mut models: Vec<Model> = base
            .models
            .iter()
            .map(|entry| from(entry, builtin_source.clone()))
            .collect();
        if let Some(price_map) = price_map {
            let source = price_map.cost_source();
            for entry in &price_map.models {
                let mut model = from(&entry.as_config(), source.clone());
                match models
                    .iter()
                    .position(|m| m.id == model.id && m.provider == model.provider)
                {
                    Some(i) => {
                        model.keep_from(&models[i]);
                        models[i] = model;
                    }
                    None => {
                        // A dated snapshot (`claude-haiku-4-5-20251001`) is
                        // its family's model: the same scores.
                        let family = undated(&model.id).and_then(|base| {
                            models
                                .iter()
                                .find(|m| m.id == base && m.provider == model.provider)
                        });
                        if let Some(family) = family {
                            model.keep_quality_of(family);
                            model.speed_tps = family.speed_tps;
                        } else {
                            model.quality_source = QualitySource::Estimated;
                        }
                        models.push(model);
                    }
                }
            }
        }
        for entry in &config.models {
            let mut model = from(entry, "config".to_string());
            // An entry that says nothing of quality (a price change, say)
            // keeps the quality of the model it replaces.
            let silent = entry.quality.is_none()
                && entry.arena.is_none()
                && entry.quality_source.is_none()
                && entry.quality_estimated.is_none();
            match models
                .iter()
                .position(|m| m.id == model.id && m.provider == model.provider)
            {
                Some(i) => {
                    if silent {
                        model.keep_quality_of(&models[i]);
                    }
                    models[i] = model;
                }
                None => models.push(model),
            }
        }

        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, model) in models.iter().enumerate() {
            let names = std::iter::once(model.id.clone())
                .chain(model.aliases.iter().cloned())
                .chain(std::iter::once(format!("{}/{}", model.provider, model.id)));
            for name in names {
                index.entry(name).or_default().push(i);
            }
        }
        Catalog {
            providers: providers.into_iter().map(Arc::new).collect(),
            models,
            index,
            arena: board,
        }
    }

    /// The leaderboard the models' ratings come from.
    pub fn arena(&self) -> &arena::Leaderboard {
        &self.arena
    }

    pub(crate) fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider called `name`, with its key and settings.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Every model: the built-in ones, then those only the price map or
    /// the config adds.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The model a client means by `name`: an id, an alias, `provider/id`,
    /// or a dated snapshot (`gpt-4o-2024-08-06`) of a known id. Among
    /// several matches, one whose provider is usable wins.
    pub fn find(&self, name: &str) -> Option<&Model> {
        let hits = self
            .index
            .get(name)
            .or_else(|| undated(name).and_then(|base| self.index.get(base)))?;
        let usable = hits
            .iter()
            .map(|&i| &self.models[i])
            .find(|m| self.provider(&m.provider).is_some_and(|p| p.is_usable()));
        usable.or_else(|| hits.first().map(|&i| &self.models[i]))
    }

    /// A model served by one given provider.
    pub fn find_on(&self, provider: &str, name: &str) -> Option<&Model> {
        let pick = |key: &str| {
            self.index.get(key).and_then(|hits| {
                hits.iter()
                    .map(|&i| &self.models[i])
                    .find(|m| m.provider == provider)
            })
        };
        pick(name).or_else(|| undated(name).and_then(pick))
    }
}

impl Catalog {
    /// The price of a dated snapshot the catalog has no entry for, found
    /// by its family `model`: the highest of each price among the family's
    /// entries on its provider (the family and its listed snapshots). An
    /// older snapshot can cost more than the current entry (OpenAI bills
    /// `gpt-4o-2024-05-13` at $5/$15, `gpt-4o` at $2.50/$10), so an
    /// unlisted one is charged as the dearest it could be, never less
    /// than it costs.
    pub fn snapshot_price(&self, model: &Model) -> Option<Price> {
        let mut family = self.models.iter().filter(|m| {
            m.provider == model.provider
                && (m.id == model.id || undated(&m.id) == Some(model.id.as_str()))
        });
        let first = family.next()?.price?;
        family.try_fold(first, |highest, m| {
            let price = m.price?;
            Some(Price {
                input: highest.input.max(price.input),
                cached_input: highest.cached_input.max(price.cached_input),
                output: highest.output.max(price.output),
                cache_write: highest.cache_write.max(price.cache_write),
                cache_write_1h: highest.cache_write_1h.max(price.cache_write_1h),
                web_search: highest.web_search.max(price.web_search),
            })
        })
    }
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`, `claude-haiku-4-5-20251001` ->
/// `claude-haiku-4-5`: providers publish dated snapshots at the price of
/// the family's current entry.
fn undated(name: &str) -> Option<&str> {
    let dashed = |len: usize| -> Option<&str> {
        let (base, suffix) = name.split_at_checked(name.len().checked_sub(len + 1)?)?;
        let date = suffix.strip_prefix('-')?;
        let is_date = date.bytes().enumerate().all(|(i, b)| match (len, i) {
            (10, 4 | 7) => b == b'-',
            _ => b.is_ascii_digit(),
        });
        (is_date && !base.is_empty()).then_some(base)
    };
    dashed(10).or_else(|| dashed(8))
}

#[cfg(test)]
mod tests;
