//! Start-up and shutdown of the proxy: config, state, listener, reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::config::{self, watch, Discovered, LoadedConfig};
use crate::embed;
use crate::ops::probe;
use crate::ops::state::{AppState, Runtime};
use crate::ops::systemd;
use crate::server::Server;
use crate::store::Store;
use crate::wire::tokens;

/// How long shutdown waits for background tasks, and then for the last
/// holder of the state, after the connections are closed.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running proxy. Dropping it does not stop the server; call
/// [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    state: AppState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    watch: Option<watch::ConfigWatch>,
    /// Counts the times the config file was read again, applied or refused,
    /// so that a SIGHUP can tell systemd when its re-read is done.
    rereads: tokio::sync::watch::Receiver<u64>,
    /// Background work holding the state (probes, the model loader): ended
    /// on shutdown so that everything the state owns, the database lock
    /// included, is released.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// The address the proxy listens on; tests listen on port 0 and ask
    /// here which port they got.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Re-reads the config file now (SIGHUP).
    pub fn reload(&self) {
        if let Some(watch) = &self.watch {
            watch.reload();
        }
    }

    /// Stops accepting, lets requests in flight finish, and returns when
    /// the server is done.
    pub async fn shutdown(self) {
        let Running {
            state,
            stop,
            task,
            watch,
            background,
            ..
        } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::error!("server task ended abnormally: {e}");
        }
        if let Some(watch) = watch {
            watch.stop().await;
        }
        for task in background {
            task.abort();
            let _ = task.await;
        }
        // Relays whose connections are gone end at their next write.
        state.wait_for_tasks(TASKS_GRACE).await;
        let mut closed = state.closed();
        drop(state);
        // Anything still holding the state (a cache thread mid-slice) lets
        // go shortly; only then is the database closed and free to reopen.
        let released = async { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(TASKS_GRACE, released).await.is_err() {
            tracing::warn!("the state was still in use {TASKS_GRACE:?} after shutdown");
        }
    }
}

/// Loads the config found by discovery (or `explicit`) and starts serving.
pub async fn start(explicit: Option<&Path>) -> anyhow::Result<Running> {
    let loaded = match config::discover(explicit) {
        Discovered::File { path, found_by } => {
            let loaded = LoadedConfig::from_file(&path)?;
            tracing::info!("config: {} (found by {found_by})", path.display());
            loaded
        }
        Discovered::Defaults => {
            tracing::info!(
                "no p402.toml found (--config, $P402_CONFIG, ./p402.toml, ~/.config/p402, /etc/p402): running on built-in defaults; `p402 init` writes a starter config"
            );
            LoadedConfig::defaults()
        }
    };
    start_with(loaded).await
}

/// Starts serving `loaded`, already read: opens the data directory and
/// its database, binds the listener and watches the config file it came
/// from. Returns once the listener is bound, so a client may connect at once.
pub async fn start_with(loaded: LoadedConfig) -> anyhow::Result<Running> {
    let data_dir = data_dir(&loaded.config);
    note_state_directory(&loaded.config, &data_dir);
    crate::ops::private::create_dir(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let listen = *loaded.config.server.listen.get_ref();
    let path = loaded.path.clone();
    let runtime = Runtime::build(loaded, None).context("TLS set-up failed")?;
    let store = Store::open(&data_dir)
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    // The database file is new, or was made by an older p402.
    crate::ops::private::tighten(&data_dir);
    let cache = Cache::open(&store).context("cannot open the cache")?;
    let embedder_dir = embed::model_dir(runtime.config().cache.model_dir.as_ref(), &data_dir);
    let cache_enabled = runtime.config().cache.enabled;
    let state = AppState::new(runtime, data_dir, store, cache);
    state.connect_team(state.runtime().config());
    let mut background = Vec::new();
    if cache_enabled {
        background.push(tokio::spawn(load_embedder(state.clone(), embedder_dir)));
    }
    let usable = state.routable_providers(&state.runtime());

    let server = Server::bind(listen, state.clone())
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr().context("the listener has no address")?;
    state.set_bound(addr);

    let (reread, rereads) = tokio::sync::watch::channel(0u64);
    let watch = match path {
        Some(path) => {
            let reload_state = state.clone();
            let watch = watch::spawn(&path, move |result| {
                reload_state.apply_reload(result);
                reread.send_modify(|n| *n += 1);
            })
            .with_context(|| format!("cannot watch {} for changes", path.display()))?;
            Some(watch)
        }
        None => None,
    };

    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    tracing::info!(
        "p402 {} listening on http://{addr} ({usable} providers usable); set OPENAI_BASE_URL=http://{addr}/v1",
        env!("CARGO_PKG_VERSION")
    );
    background.push(tokio::spawn(probe::watch_local_providers(state.clone())));
    if let Some(inbox) = state.alerts().take_inbox() {
        background.push(tokio::spawn(crate::ops::alerts::deliver::run(
            state.clone(),
            inbox,
        )));
    }
    background.push(tokio::spawn(update_prices(
        state.clone(),
        data_dir_of(&state),
    )));
    let kept = state.clone();
    background.push(tokio::spawn(crate::store::retention::run(
        state.book().store().clone(),
        move || kept.runtime().config().ledger.keep(),
    )));
    tokio::task::spawn_blocking(|| {
        tokens::warm_up();
        crate::ops::resident::release_read_only_data();
    });
    if usable == 0 {
        tracing::warn!("no provider has a key: set e.g. OPENAI_API_KEY, or configure a local server under [providers]");
    }
    Ok(Running {
        addr,
        state,
        stop,
        task,
        watch,
        rereads,
        background,
    })
}

/// Brings the embedding model in (fetching it on first start) and hands it
/// to the cache. Until then, and for good if it fails, the cache answers
/// exact matches only, and says so.
async fn load_embedder(state: AppState, dir: PathBuf) {
    if !embed::BUILT {
        tracing::warn!(
            "semantic cache unavailable, exact-match cache only: {}",
            embed::EmbedError::NotBuilt
        );
        return;
    }
    if !embed::fetch::is_complete(&dir) {
        tracing::info!(
            "semantic cache: fetching the embedding model into {} (exact-match cache until it is ready)",
            dir.display()
        );
        if let Err(e) = embed::fetch::ensure(&dir).await {
            tracing::warn!(
                "semantic cache unavailable, exact-match cache only: {e} (retry with `p402 setup`)"
            );
            return;
        }
    }
    let loaded = tokio::task::spawn_blocking(move || {
        crate::cache::guard::prepare();
        embed::Embedder::load(&dir)
    })
    .await;
    match loaded {
        Ok(Ok(embedder)) => {
            crate::ops::resident::release_read_only_data();
            crate::ops::resident::release_runtime_pages();
            state.cache().set_embedder(embedder);
            tracing::info!("semantic cache ready");
        }
        Ok(Err(e)) => tracing::warn!("semantic cache unavailable, exact-match cache only: {e}"),
        Err(e) => tracing::warn!("semantic cache unavailable, exact-match cache only: {e}"),
    }
}

/// Under systemd `$STATE_DIRECTORY` wins (SPEC §1): it is the one place a
/// hardened unit may write, so a `data_dir` left in a config copied from a
/// laptop cannot make the service fail. Elsewhere `[server] data_dir`, else
/// `$XDG_DATA_HOME/p402`.
pub fn data_dir(config: &config::Config) -> PathBuf {
    config::data_dir(config)
}

/// Says so when systemd's state directory overrides the config's
/// `data_dir`, so the user is not left looking for data in the wrong place.
fn note_state_directory(config: &config::Config, data_dir: &Path) {
    if let Some(named) = &config.server.data_dir {
        if named != data_dir {
            tracing::warn!(
                "[server] data_dir = {} is not used: under systemd $STATE_DIRECTORY ({}) wins",
                named.display(),
                data_dir.display()
            );
        }
    }
}

/// What an operator asks of a running p402 by signal.
enum Asked {
    Stop,
    Reload,
}

/// The signals p402 serves by: SIGTERM and SIGINT stop it, SIGHUP re-reads
/// the config. Installed before the listener is announced, because a
/// signal's default action ends the process: a SIGHUP or SIGTERM sent the
/// moment p402 says it listens (or systemd has its READY=1) must already
/// find p402's handlers.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called within the tokio runtime.
    #[cfg(unix)]
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    #[cfg(not(unix))]
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::Reload,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> Asked {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot handle Ctrl-C: {e}");
        }
        Asked::Stop
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP re-reads the config. Under
/// systemd (`Type=notify`) it reports readiness, reloads and stopping, and
/// pings the watchdog while the server answers.
pub async fn run_until_signal(running: Running, mut signals: Signals) -> anyhow::Result<()> {
    let addr = running.local_addr();
    systemd::ready(&format!(
        "listening on http://{addr} ({} providers usable)",
        running.state.routable_providers(&running.state.runtime())
    ));
    let watchdog = systemd::Watchdog::start(addr, running.state.book().store().clone());
    let mut rereads = running.rereads.clone();
    let mut reloading = false;
    loop {
        tokio::select! {
            asked = signals.next() => match asked {
                Asked::Stop => break,
                Asked::Reload if running.watch.is_none() => {
                    tracing::info!("SIGHUP: no config file to re-read (running on built-in defaults)");
                }
                Asked::Reload => {
                    tracing::info!("SIGHUP: reloading the config");
                    systemd::reloading();
                    rereads.mark_unchanged();
                    reloading = true;
                    running.reload();
                }
            },
            reread = rereads.changed(), if reloading => {
                reloading = false;
                if reread.is_ok() {
                    systemd::ready(&reload_status(&running.state));
                }
            }
        }
    }
    if let Some(watchdog) = watchdog {
        watchdog.stop().await;
    }
    systemd::stopping();
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// What `systemctl status` shows after a re-read.
fn reload_status(state: &AppState) -> String {
    match state.config_status().error {
        None => format!(
            "config reloaded; {} providers usable",
            state.routable_providers(&state.runtime())
        ),
        Some(error) => format!("config reload refused, the previous config stays: {error}"),
    }
}

fn data_dir_of(state: &AppState) -> PathBuf {
    config::data_dir(state.runtime().config())
}

/// `[catalog] auto_update = "weekly"`: brings LiteLLM's price map when the
/// stored one is a week old (or missing), in the background, never at
/// request time; then rebuilds the catalog with it. Looks again hourly, so
/// that turning it on in a reload takes effect without a restart.
async fn update_prices(state: AppState, data_dir: PathBuf) {
    use crate::catalog::update::{background, due, WEEK};
    loop {
        let wanted = state.runtime().config().catalog.auto_update == config::AutoUpdate::Weekly;
        if wanted && due(&data_dir, WEEK) {
            match background(&data_dir).await {
                Ok(()) => state.apply_reload(Ok(state.runtime().loaded.clone())),
                Err(e) => tracing::warn!("the weekly price update failed (prices unchanged): {e}"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}
