//! The shape of `p402.toml`.
//!
//! Type errors, unknown keys and out-of-range values are caught by serde
//! while parsing, so toml attaches the exact span. Checks that relate one key
//! to another run in [`Config::validate`] on `Spanned` fields for the same
//! reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::catalog;
use crate::router::mode::Mode;

/// A problem found after parsing: where (if known) and what.
pub type Invalid = (Option<Range<usize>>, String);

/// Everything `p402.toml` can say. Every table and key is optional; each
/// table's `Default` holds the values p402 runs on without it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) upstream: UpstreamConfig,
    /// `[routing]`: which model answers a request.
    pub routing: RoutingConfig,
    /// `[cache]`: which answers are stored, and when one may answer again.
    pub cache: CacheConfig,
    pub(crate) providers: BTreeMap<Spanned<String>, ProviderConfig>,
    /// `[[models]]`: catalog entries added to the built-in catalog, or
    /// replacing one of the same provider and id.
    pub models: Vec<ModelConfig>,
    pub(crate) budgets: BTreeMap<Spanned<String>, BudgetConfig>,
    pub(crate) limits: LimitsConfig,
    /// `[catalog]`: where prices come from besides the built-in catalog.
    pub catalog: CatalogConfig,
    /// `[team]`: the Redis that shared budgets live in.
    pub team: TeamConfig,
    pub(crate) alerts: AlertsConfig,
    pub(crate) ledger: LedgerConfig,
}

/// How long this machine's ledger keeps each settled request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Entries older than this many days are dropped; 0 keeps them all.
    /// Reports over any period still work: they read the hourly sums,
    /// which are kept for good. Budgets and sessions never read entries.
    pub keep_entries_days: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            keep_entries_days: 90,
        }
    }
}

impl LedgerConfig {
    /// How long entries are kept, or `None` to keep them all.
    pub fn keep(&self) -> Option<chrono::Duration> {
        (self.keep_entries_days > 0)
            .then(|| chrono::Duration::days(i64::from(self.keep_entries_days)))
    }
}

/// The Redis that budgets marked `shared = true` live in (SPEC §11).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamConfig {
    /// `redis://` or `rediss://` (TLS); `$P402_REDIS_URL` when unset, so a
    /// password need not live in the file.
    pub redis_url: Option<Spanned<String>>,
    /// Put before every key, so that teams (or tests) can share one Redis.
    pub prefix: String,
    /// A PEM file of the CA that signs the server's certificate, for a
    /// `rediss://` Redis whose certificate no public CA signed.
    pub ca_file: Option<PathBuf>,
    /// How long a hold lives unless renewed: a p402 that crashes mid-request
    /// blocks its reservation at most this long.
    pub lease_seconds: u32,
    /// How long the team ledger (a Redis stream) keeps entries.
    pub ledger_days: u32,
    /// This instance's name in the team ledger (default: the host name).
    pub instance: Option<String>,
}

impl Default for TeamConfig {
    fn default() -> Self {
        TeamConfig {
            redis_url: None,
            prefix: "p402".to_string(),
            ca_file: None,
            lease_seconds: 60,
            ledger_days: 90,
            instance: None,
        }
    }
}

impl TeamConfig {
    /// The Redis URL from the file, else from `$P402_REDIS_URL`.
    pub fn url(&self) -> Option<String> {
        self.redis_url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .or_else(|| std::env::var("P402_REDIS_URL").ok())
            .filter(|u| !u.trim().is_empty())
    }
}

/// Where prices come from besides the built-in catalog.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Bring LiteLLM's price map in the background of a running p402, for
    /// machines with internet. Off by default; never at request time.
    pub auto_update: AutoUpdate,
}

/// Whether a running p402 brings LiteLLM's price map by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoUpdate {
    /// Never; `p402 catalog update` brings it by hand (the default).
    #[default]
    Off,
    /// In the background, when the stored map is a week old.
    Weekly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Spanned so a refused non-loopback address is reported at its line.
    pub listen: Spanned<SocketAddr>,
    /// Local keys; when non-empty every request must present one.
    pub api_keys: Vec<Spanned<String>>,
    pub(crate) max_body_bytes: u64,
    /// Where the database (ledger, sessions, cache) is kept.
    pub data_dir: Option<PathBuf>,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace_seconds: Seconds,
    /// A client must send its request headers within this time.
    pub header_read_timeout_seconds: Seconds,
    /// ...and its body within this time (408 past it).
    pub body_read_timeout_seconds: Seconds,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Web origins (`http://localhost:3000`) whose pages may call p402;
    /// any other `Origin` is refused (src/server/boundary.rs).
    pub allowed_origins: Vec<String>,
    /// Host names besides IP addresses and `localhost` that p402 answers
    /// to (a name for it on the LAN, say).
    pub allowed_hosts: Vec<String>,
    /// How long the ledger entries of unbudgeted requests (and other writes
    /// nobody waits for) are held so that they share one durable commit;
    /// at most this much of them is lost in a crash. Budgeted requests are
    /// always on disk before their answer.
    pub ledger_group_commit_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 8402))),
            api_keys: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            data_dir: None,
            shutdown_grace_seconds: Seconds(30.0),
            header_read_timeout_seconds: Seconds(30.0),
            body_read_timeout_seconds: Seconds(30.0),
            max_connections: 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ledger_group_commit_ms: 100,
        }
    }
}

/// How p402 talks to providers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub(crate) connect_timeout_seconds: Seconds,
    /// Until the response headers arrive. Non-streamed answers arrive whole,
    /// so this bounds the generation time of those.
    pub first_byte_timeout_seconds: Seconds,
    /// The longest a stream may stay silent on the wire: any byte, an SSE
    /// keep-alive comment included, restarts it.
    pub idle_timeout_seconds: Seconds,
    /// The largest upstream answer p402 will hold in memory: a whole
    /// non-streamed body, one event of a stream, or the text a stream has
    /// sent so far.
    pub max_response_bytes: u64,
    /// The longest a stream may run in all, however busy: a provider that
    /// streams for ever is cut off, and charged for what it sent.
    pub max_stream_seconds: Seconds,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_seconds: Seconds(10.0),
            first_byte_timeout_seconds: Seconds(300.0),
            idle_timeout_seconds: Seconds(120.0),
            max_response_bytes: 64 * 1024 * 1024,
            max_stream_seconds: Seconds(3600.0),
        }
    }
}

/// `[routing]`: how the model that answers a request is chosen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub(crate) default_mode: Mode,
    /// Baseline for `direct_cost` when the requested model is unknown.
    pub reference_model: Spanned<String>,
    /// Requested models matching these globs are never rewritten.
    pub pin: Vec<Spanned<String>>,
    /// For a requested model whose quality is not measured: a substitute
    /// must score at least this share of its 0-100 score (in every mode but
    /// passthrough). Measured models are judged by `max_quality_drop`.
    pub quality_floor: QualityFloor,
    /// Elo points a substitute may be rated below the requested model in
    /// the request's category (Arena ratings); 0: never lower.
    pub max_quality_drop: u32,
    /// Consecutive failures after which a provider is skipped...
    pub circuit_breaker_failures: u32,
    /// ...for this long, before one trial request is let through.
    pub circuit_breaker_cooldown_seconds: Seconds,
    /// Let models whose quality is only estimated stand in for better ones
    /// within `quality_floor`, like measured ones. Off: an estimated model
    /// replaces only a model rated at or below its estimate.
    pub trust_estimated_quality: bool,
    /// Send every request a local model can serve (tools, context) to an
    /// installed local model first, whatever its quality, and pay a
    /// provider only when it fails or cannot serve the request.
    pub prefer_local: bool,
    /// Where the paths of OpenAI's API that p402 does not serve itself
    /// (files, audio, images, moderations, ...) are forwarded, as they are.
    pub passthrough_provider: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_mode: Mode::Cost,
            reference_model: Spanned::new(0..0, "gpt-4o".to_string()),
            pin: Vec::new(),
            quality_floor: QualityFloor(0.85),
            max_quality_drop: 0,
            circuit_breaker_failures: 3,
            circuit_breaker_cooldown_seconds: Seconds(30.0),
            trust_estimated_quality: false,
            prefer_local: false,
            passthrough_provider: "openai".to_string(),
        }
    }
}

impl RoutingConfig {
    /// Whether `model` matches a `pin` glob, and so is sent as asked, never
    /// rewritten. A glob that does not parse matches nothing (`validate`
    /// refuses it at load).
    pub(crate) fn is_pinned(&self, model: &str) -> bool {
        self.pin.iter().any(|glob| {
            glob::Pattern::new(glob.get_ref()).is_ok_and(|pattern| pattern.matches(model))
        })
    }
}

/// `[cache]`: which answers the cache stores, and which later requests
/// they may answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off: no request is answered from the cache or stored in it.
    pub enabled: bool,
    /// The lowest cosine similarity at which an earlier question is a
    /// candidate; the guards (`cache::guard`) decide whether it answers.
    /// 0.40 was chosen on the tune split of `benches/data/`.
    pub similarity: Similarity,
    /// How long a stored answer may answer again, in seconds (a week by
    /// default); a request's `cache_ttl` overrides it.
    pub ttl_seconds: u64,
    /// The most entries kept; past it the least recently used are dropped.
    /// Each costs about 500 bytes of memory.
    pub max_entries: u64,
    /// The embedding model's name. p402 has one built in, all-MiniLM-L6-v2;
    /// a file that names another is refused rather than silently ignored.
    pub model: String,
    /// Where the embedding model and ONNX Runtime are kept;
    /// `<data_dir>/embedder` when unset.
    pub model_dir: Option<PathBuf>,
    /// Requests sampled hotter than this (a request naming no temperature
    /// counts as 1.0, OpenAI's default) are neither answered from the cache
    /// nor stored: they ask for a different answer each time. Default 1.0.
    pub max_temperature: f64,
    /// Answers with tool calls are not stored unless this is set.
    pub store_tool_calls: bool,
    /// With `[server] api_keys`, let one key's requests be answered from
    /// another key's cached answers. Off: each key has its own entries.
    pub share_across_keys: bool,
    /// Which requests may be answered by a paraphrase, not only an exact
    /// repeat (SPEC §6).
    pub semantic: SemanticMatching,
}

/// Where similarity matching applies. An agent's turn (tools offered,
/// earlier assistant or tool turns) depends on far more than the wording of
/// its last message, so by default it hits only on an exact repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SemanticMatching {
    /// Single-turn requests without tools (the default).
    #[default]
    SingleTurn,
    /// Every cacheable request.
    Always,
    /// None: exact repeats only.
    Off,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            similarity: Similarity(0.40),
            ttl_seconds: 7 * 24 * 3600,
            max_entries: 100_000,
            model: "all-MiniLM-L6-v2".to_string(),
            model_dir: None,
            max_temperature: 1.0,
            store_tool_calls: false,
            share_across_keys: false,
            semantic: SemanticMatching::SingleTurn,
        }
    }
}

/// One provider's settings; every key is optional for the built-in ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// The environment variable holding the key; keys never live in the file.
    pub api_key_env: Option<String>,
    pub(crate) base_url: Option<Spanned<BaseUrl>>,
    /// `false` takes the provider out of routing without deleting its table.
    pub enabled: Option<bool>,
    /// Send the key over plain `http://` to a host that is not loopback.
    /// Off: such a provider is not used, since a `p402.toml` left in a
    /// working directory could otherwise send a key to anyone.
    pub allow_insecure: Option<bool>,
}

/// A catalog entry, from the built-in catalog or a `[[models]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients ask for and p402 reports.
    pub id: String,
    /// The provider that serves it: a built-in one or a `[providers.NAME]`
    /// table.
    pub provider: Spanned<String>,
    /// The id the provider expects, when it differs from `id`.
    #[serde(default)]
    pub upstream_id: Option<String>,
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    #[serde(default)]
    pub(crate) input_per_mtok: Option<Spanned<f64>>,
    #[serde(default)]
    pub(crate) cached_input_per_mtok: Option<Spanned<f64>>,
    #[serde(default)]
    pub(crate) output_per_mtok: Option<Spanned<f64>>,
    /// Writing to the provider's prompt cache (Anthropic bills it apart);
    /// for Anthropic models 1.25 times the input price when not given.
    #[serde(default)]
    pub cache_write_per_mtok: Option<Spanned<f64>>,
    /// Writing to Anthropic's one-hour prompt cache; twice the input price
    /// when not given.
    #[serde(default)]
    pub cache_write_1h_per_mtok: Option<Spanned<f64>>,
    /// USD for each web search the model runs with its provider's own
    /// search tool (`0.01` is $10 per 1,000 searches); per call, not per
    /// million tokens.
    #[serde(default)]
    pub web_search_per_call: Option<Spanned<f64>>,
    /// The context window in tokens: a request whose prompt and output
    /// limit do not fit is not sent to this model. Unknown when absent.
    #[serde(default)]
    pub context: Option<u32>,
    #[serde(default)]
    pub(crate) max_output: Option<u32>,
    /// What the model can do beyond plain chat (tools, vision, ...); a request
    /// that needs one it lacks is not sent to it. None when absent.
    #[serde(default)]
    pub capabilities: Option<Vec<catalog::Capability>>,
    /// 0–100, from the public leaderboard the catalog names.
    #[serde(default)]
    pub quality: Option<Quality>,
    /// The quality is a guess, not a measurement: such a model never stands
    /// in for a better one (see `[routing] trust_estimated_quality`).
    /// Defaults to true for models of keyless (local) providers, whose
    /// quality depends on the quantization and hardware at hand.
    #[serde(default)]
    pub quality_estimated: Option<bool>,
    /// The model's name on the Arena leaderboard: its measured ratings per
    /// category are taken from there (SPEC section 13).
    #[serde(default)]
    pub arena: Option<String>,
    /// Where `quality` comes from when no Arena name is given: `"config"`
    /// (the default in `[[models]]`) or `"estimated"` (a guess; the
    /// built-in catalog says so for every model Arena does not rate).
    #[serde(default)]
    pub quality_source: Option<StatedSource>,
    /// Typical output tokens per second.
    #[serde(default)]
    pub speed_tps: Option<f64>,
    /// Where the price came from (URL and date); shown as `cost_source`.
    #[serde(default)]
    pub source: Option<String>,
}

/// What a catalog entry may say its 0-100 `quality` is; measured ratings
/// are named with `arena` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatedSource {
    /// The entry's `quality` is the user's own figure.
    Config,
    /// The entry's `quality` is a guess: it never stands in for a measured
    /// model.
    Estimated,
}

/// One `[budgets.NAME]` table: a hard cap on what the requests charged to
/// it may spend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub(crate) budget_usd: Spanned<f64>,
    /// When the spend starts again from zero; `total` (the default) never.
    #[serde(default)]
    pub period: Period,
    #[serde(default)]
    pub(crate) keys: Vec<Spanned<String>>,
    /// Held in Redis (`[team]`) and shared by every p402 of the team.
    #[serde(default)]
    pub shared: bool,
    /// Fractions of the budget whose crossing raises an alert
    /// (`config::guards`); `[0.8, 1.0]` when absent.
    #[serde(default)]
    pub alert_at: Option<Spanned<Vec<f64>>>,
    /// A burn-rate cap: at most this much over any rolling hour.
    #[serde(default)]
    pub max_usd_per_hour: Option<Spanned<f64>>,
}

/// When a budget's spend starts again from zero: at local midnight,
/// Monday or the 1st (UTC for a shared budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Every day.
    Day,
    /// Every Monday.
    Week,
    /// On the 1st of every month.
    Month,
    /// Never: one amount for all time.
    #[default]
    Total,
}

/// `[limits]`: guards for every request, whoever it is charged to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub(crate) requests_per_minute: Option<u32>,
    pub(crate) concurrent_requests: Option<u32>,
    pub(crate) max_cost_per_request_usd: Option<Spanned<f64>>,
    /// Active sessions one local key may hold (with `[server] api_keys`).
    pub max_active_sessions_per_key: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_minute: None,
            concurrent_requests: None,
            max_cost_per_request_usd: None,
            max_active_sessions_per_key: 100,
        }
    }
}

/// A strictly positive, finite number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Seconds(f64);

impl TryFrom<f64> for Seconds {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        if value.is_finite() && value > 0.0 && value <= 1e7 {
            Ok(Seconds(value))
        } else {
            Err(format!(
                "expected a positive number of seconds, found {value}"
            ))
        }
    }
}

impl Seconds {
    pub(crate) fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

/// A cosine similarity threshold in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Similarity(pub f64);

impl TryFrom<f64> for Similarity {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        if value > 0.0 && value <= 1.0 {
            Ok(Similarity(value))
        } else {
            Err(format!(
                "similarity is a cosine threshold between 0 and 1, found {value}"
            ))
        }
    }
}

/// A share of the requested model's quality, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct QualityFloor(pub f64);

impl TryFrom<f64> for QualityFloor {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(QualityFloor(value))
        } else {
            Err(format!(
                "quality_floor is a share of the requested model's quality between 0 and 1, found {value}"
            ))
        }
    }
}

impl QualityFloor {
    /// The lowest score a substitute for a model of `quality` may have.
    pub fn below(self, quality: u8) -> u8 {
        (f64::from(quality) * self.0).ceil().clamp(0.0, 100.0) as u8
    }
}

/// A quality score 0–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "i64")]
pub struct Quality(pub u8);

impl TryFrom<i64> for Quality {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        u8::try_from(value)
            .ok()
            .filter(|q| *q <= 100)
            .map(Quality)
            .ok_or_else(|| format!("quality is a score from 0 to 100, found {value}"))
    }
}

/// An `http://` or `https://` base URL, kept without a trailing slash so that
/// `base_url + "/chat/completions"` is always right.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BaseUrl(String);

impl TryFrom<String> for BaseUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let trimmed = value.trim_end_matches('/');
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|e| format!("base_url `{value}` is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") if uri.host().is_some() => {}
            _ => {
                return Err(format!(
                    "base_url `{value}` must start with http:// or https:// and name a host"
                ))
            }
        }
        if uri.query().is_some() {
            return Err(format!("base_url `{value}` must not have a query string"));
        }
        Ok(BaseUrl(trimmed.to_string()))
    }
}

impl BaseUrl {
    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Config {
    /// The `[providers.NAME]` table for `name`, if the file has one.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers
            .iter()
            .find(|(key, _)| key.get_ref() == name)
            .map(|(_, provider)| provider)
    }
}

/// The fractions of a budget whose crossing raises an alert, when its
/// `alert_at` does not say (and for sessions, unless `[alerts]` says).
pub const DEFAULT_ALERT_AT: [f64; 2] = [0.8, 1.0];

/// `[alerts]`: where a budget's alerts go besides the log, the dashboard
/// and the metrics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Each alert is POSTed here as JSON, retried with backoff until it is
    /// taken (any 2xx), also across restarts.
    pub webhook_url: Option<Spanned<String>>,
    /// Also show each alert as a desktop notification, through the
    /// freedesktop notification service (`notify-send`) where present.
    pub desktop: bool,
    /// The thresholds of every session's budget.
    pub session_alert_at: Vec<f64>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            desktop: false,
            session_alert_at: DEFAULT_ALERT_AT.to_vec(),
        }
    }
}

impl AlertsConfig {
    pub(crate) fn webhook(&self) -> Option<&str> {
        self.webhook_url
            .as_ref()
            .map(|url| url.get_ref().as_str())
            .filter(|url| !url.is_empty())
    }
}
