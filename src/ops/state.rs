//! The shared state every request handler sees.
//!
//! `AppState` is a cheap clone around one `Arc`. The configuration and
//! everything derived from it (catalog, provider keys, upstream client) form
//! a `Runtime` that is rebuilt whole on reload and swapped in atomically: a
//! request holds the `Runtime` it started with to its end, so a reload never
//! changes the rules under a request in flight.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::catalog::Catalog;
use crate::config::{Config, ConfigError, LoadedConfig};
use crate::money::budget::Book;
use crate::money::sessions::Sessions;
use crate::ops::alerts::Alerts;
use crate::ops::metrics::{Metrics, ResultLabels};
use crate::ops::provider_health::{BreakerPolicy, ProviderHealth};
use crate::router::{Router, Sticky};
use crate::server::limits::Limiter;
use crate::store::Store;
use crate::wire::upstream::Upstream;

/// One consistent view of the configuration.
pub struct Runtime {
    pub loaded: LoadedConfig,
    pub catalog: Catalog,
    pub upstream: Upstream,
}

impl Runtime {
    /// Builds from a config, reusing `previous`'s connection pool when the
    /// upstream settings did not change.
    pub fn build(loaded: LoadedConfig, previous: Option<&Runtime>) -> Result<Self, rustls::Error> {
        for warning in loaded.config.warnings() {
            tracing::warn!("config: {warning}");
        }
        let catalog = Catalog::build_stored(
            &crate::config::data_dir(&loaded.config),
            &loaded.config,
            |name| std::env::var(name).ok(),
        );
        let upstream = match previous {
            Some(old) if old.config().upstream == loaded.config.upstream => old.upstream.clone(),
            _ => Upstream::new(&loaded.config.upstream)?,
        };
        Ok(Runtime {
            loaded,
            catalog,
            upstream,
        })
    }

    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    pub fn breaker_policy(&self) -> BreakerPolicy {
        let routing = &self.config().routing;
        BreakerPolicy {
            failures: routing.circuit_breaker_failures,
            cooldown: routing.circuit_breaker_cooldown_seconds.duration(),
        }
    }

    /// Providers that can be routed to now.
    pub fn usable_providers(&self) -> usize {
        self.catalog
            .providers()
            .iter()
            .filter(|p| p.is_usable())
            .count()
    }
}

/// How the last config load went, for `/health`.
#[derive(Debug, Clone)]
pub struct ConfigStatus {
    pub path: Option<PathBuf>,
    pub loaded_at: DateTime<Utc>,
    /// The error of the last attempt, while the file on disk is invalid.
    /// It may quote the file (a key put where a value was expected), so
    /// only the log and a keyed endpoint show it.
    pub error: Option<String>,
    /// Where that error is (`p402.toml:12:3`, or the setting), which
    /// `/health` shows to anyone: never a value from the file.
    pub error_at: Option<String>,
    pub reloads: u64,
}

#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    runtime: ArcSwap<Runtime>,
    /// Settled spend and reservations of every account.
    book: Arc<Book>,
    /// Budget alerts: decided on the request path, delivered off it.
    alerts: Alerts,
    cache: Cache,
    metrics: Metrics,
    sessions: Sessions,
    limiter: Limiter,
    /// Outlives config reloads: a failing provider stays known as failing.
    health: ProviderHealth,
    sticky: Sticky,
    /// A std mutex: it is held only to copy or replace a small struct.
    status: Mutex<ConfigStatus>,
    data_dir: PathBuf,
    /// The address actually listened on, which a reload cannot change:
    /// reloads are checked against it, not against the file's `listen`.
    bound: std::sync::OnceLock<std::net::SocketAddr>,
    started: Instant,
    /// Stops the team store's watcher when the store is replaced.
    team_watch: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// Tasks that outlive the handler that started them (requests, stream
    /// relays): shutdown waits for them.
    tasks: TaskTracker,
    /// Cancelled when shutdown's grace is over: requests still talking to
    /// a provider stop, and settle what they cost as an estimate.
    aborting: tokio_util::sync::CancellationToken,
    /// Last field, so dropped last: its receivers learn that everything
    /// above, the database included, has been let go.
    closed: tokio::sync::watch::Sender<()>,
}

impl AppState {
    pub fn new(runtime: Runtime, data_dir: PathBuf, store: Store, cache: Cache) -> Self {
        store.set_group_commit_window(group_commit_window(runtime.config()));
        let status = ConfigStatus {
            path: runtime.loaded.path.clone(),
            loaded_at: Utc::now(),
            error: None,
            error_at: None,
            reloads: 0,
        };
        AppState {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(runtime),
                alerts: Alerts::open(&store),
                book: Book::new(store),
                cache,
                metrics: Metrics::default(),
                sessions: Sessions::default(),
                limiter: Limiter::default(),
                health: ProviderHealth::default(),
                sticky: Sticky::default(),
                status: Mutex::new(status),
                data_dir,
                bound: std::sync::OnceLock::new(),
                started: Instant::now(),
                team_watch: Mutex::new(None),
                tasks: TaskTracker::new(),
                aborting: tokio_util::sync::CancellationToken::new(),
                closed: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// Runs `task` in the background, tracked so that shutdown can wait
    /// for it. Boxed first: the tracker and the runtime move a task by
    /// value several times on its way in, and a stream's relay is
    /// kilobytes.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.shared.tasks.spawn(Box::pin(task));
    }

    /// Waits up to `limit` for the running tasks; then tells those still
    /// talking to a provider to stop and settle an estimate, and waits for
    /// that as long again.
    pub async fn wait_for_tasks(&self, limit: std::time::Duration) {
        self.shared.tasks.close();
        if tokio::time::timeout(limit, self.shared.tasks.wait())
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            "{} requests still running at shutdown: stopping them, each charged as an estimate",
            self.shared.tasks.len()
        );
        self.shared.aborting.cancel();
        if tokio::time::timeout(limit, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} background tasks still running at shutdown",
                self.shared.tasks.len()
            );
        }
    }

    /// Cancelled once shutdown stops the requests still in flight.
    pub fn aborting(&self) -> &tokio_util::sync::CancellationToken {
        &self.shared.aborting
    }

    /// Ends (with an error) once the last handle to the state is dropped.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<()> {
        self.shared.closed.subscribe()
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.runtime.load_full()
    }

    pub fn book(&self) -> &Arc<Book> {
        &self.shared.book
    }

    pub fn alerts(&self) -> &Alerts {
        &self.shared.alerts
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    pub fn sessions(&self) -> &Sessions {
        &self.shared.sessions
    }

    pub fn limiter(&self) -> &Limiter {
        &self.shared.limiter
    }

    pub fn health(&self) -> &ProviderHealth {
        &self.shared.health
    }

    pub fn sticky(&self) -> &Sticky {
        &self.shared.sticky
    }

    /// A router over `runtime`'s catalog with the live provider health.
    pub fn router<'a>(&'a self, runtime: &'a Runtime) -> Router<'a> {
        Router {
            catalog: &runtime.catalog,
            config: &runtime.config().routing,
            health: &self.shared.health,
            sticky: &self.shared.sticky,
        }
    }

    /// Providers that can be routed to now: with a key, or keyless local
    /// servers that answered their last probe.
    pub fn routable_providers(&self, runtime: &Runtime) -> usize {
        let router = self.router(runtime);
        runtime
            .catalog
            .providers()
            .iter()
            .filter(|p| router.provider_usable(p))
            .count()
    }

    pub fn config_status(&self) -> ConfigStatus {
        match self.shared.status.lock() {
            Ok(status) => status.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.shared.data_dir
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.shared.started.elapsed()
    }

    /// Takes in a reloaded config file: a valid one replaces the runtime
    /// whole; an invalid one is refused and reported, the old one stays.
    /// Records the address the listener got (once, at start).
    /// Connects to the team store `config` names (or none), replacing the
    /// current one when its settings changed. Errors (a bad URL, an
    /// unreadable CA file) leave shared budgets without a store: their
    /// requests are refused with the reason, the rest keeps working.
    pub fn connect_team(&self, config: &Config) {
        let book = self.book();
        let current = book.team();
        let url = config.team.url();
        let same = match (&current, &url) {
            (Some(store), Some(url)) => store.config() == &config.team && store.url_source() == url,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let mut watch = match self.shared.team_watch.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(stop) = watch.take() {
            stop.cancel();
        }
        match crate::money::team::TeamStore::connect(&config.team, self.shared.metrics.team.clone())
        {
            Ok(Some(store)) => {
                tracing::info!("team budgets in Redis at {}", store.shown_url());
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(Arc::clone(&store).watch(stop.clone()));
                *watch = Some(stop);
                book.set_team(Some(store));
            }
            Ok(None) => book.set_team(None),
            Err(e) => {
                tracing::error!("team store: {e}; requests charged to shared budgets are refused");
                book.set_team(None);
            }
        }
    }

    pub fn set_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.shared.bound.set(addr);
    }

    pub fn apply_reload(&self, result: Result<LoadedConfig, ConfigError>) {
        let outcome = result
            .map_err(|e| {
                let at = match e.position {
                    Some((line, col)) => format!("{}:{line}:{col}", e.file),
                    None => e.file.clone(),
                };
                (at, e.to_string())
            })
            .and_then(|loaded| {
                let old = self.runtime();
                if let Some(bound) = self.shared.bound.get() {
                    if !bound.ip().is_loopback() && loaded.config.server.api_keys.is_empty() {
                        return Err(("[server] api_keys".to_string(), format!(
                            "p402 listens on {bound}, which is not loopback, so [server] api_keys must stay set (a changed listen takes effect only after a restart)"
                        )));
                    }
                }
                warn_restart_needed(old.config(), &loaded.config);
                Runtime::build(loaded, Some(&old))
                    .map_err(|e| ("TLS set-up".to_string(), format!("TLS set-up failed: {e}")))
            });
        let mut status = match self.shared.status.lock() {
            Ok(status) => status,
            Err(poisoned) => poisoned.into_inner(),
        };
        match outcome {
            Ok(runtime) => {
                status.path = runtime.loaded.path.clone();
                status.loaded_at = Utc::now();
                status.error = None;
                status.error_at = None;
                status.reloads += 1;
                self.book()
                    .store()
                    .set_group_commit_window(group_commit_window(runtime.config()));
                self.connect_team(runtime.config());
                self.shared.runtime.store(Arc::new(runtime));
                self.shared
                    .metrics
                    .config_reloads
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                tracing::info!(
                    providers = self.runtime().usable_providers(),
                    "config reloaded"
                );
            }
            Err((at, message)) => {
                tracing::error!(
                    "config reload refused, the previous config stays in force: {message}"
                );
                status.error = Some(message);
                status.error_at = Some(at);
                self.shared
                    .metrics
                    .config_reloads
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
            }
        }
    }
}

fn warn_restart_needed(old: &Config, new: &Config) {
    if old.server.listen.get_ref() != new.server.listen.get_ref() {
        tracing::warn!(
            "[server] listen changed to {}; it takes effect after a restart (still listening on {})",
            new.server.listen.get_ref(),
            old.server.listen.get_ref()
        );
    }
    if old.server.data_dir != new.server.data_dir {
        tracing::warn!("[server] data_dir changed; it takes effect after a restart");
    }
}

/// `[server] ledger_group_commit_ms` as the store's window.
fn group_commit_window(config: &crate::config::Config) -> std::time::Duration {
    std::time::Duration::from_millis(config.server.ledger_group_commit_ms)
}
