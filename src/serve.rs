//! Start-up and shutdown of the proxy: config, state, listener, reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::config::{self, watch, Discovered, LoadedConfig};
use crate::embed;
use crate::probe;
use crate::server::Server;
use crate::state::{AppState, Runtime};
use crate::store::Store;
use crate::tokens;

/// A running proxy. Dropping it does not stop the server; call
/// [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    state: AppState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    watch: Option<watch::ConfigWatch>,
    /// Background work holding the state (probes, the model loader): ended
    /// on shutdown so that everything the state owns, the database lock
    /// included, is released.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
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
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!("server task ended abnormally: {e}");
        }
        drop(self.watch);
        for task in self.background {
            task.abort();
            let _ = task.await;
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

pub async fn start_with(loaded: LoadedConfig) -> anyhow::Result<Running> {
    let data_dir = data_dir(&loaded.config);
    create_private_dir(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let listen = loaded.config.server.listen;
    let path = loaded.path.clone();
    let runtime = Runtime::build(loaded, None).context("TLS set-up failed")?;
    let store = Store::open(&data_dir).with_context(|| {
        format!(
            "cannot open the database in {} (is another p402 running on it?)",
            data_dir.display()
        )
    })?;
    let cache = Cache::open(&store).context("cannot open the cache")?;
    let embedder_dir = embed::model_dir(runtime.config().cache.model_dir.as_ref(), &data_dir);
    let cache_enabled = runtime.config().cache.enabled;
    let state = AppState::new(runtime, data_dir, store, cache);
    let mut background = Vec::new();
    if cache_enabled {
        background.push(tokio::spawn(load_embedder(state.clone(), embedder_dir)));
    }
    let usable = state.routable_providers(&state.runtime());

    let server = Server::bind(listen, state.clone())
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr().context("the listener has no address")?;

    let watch = match path {
        Some(path) => {
            let reload_state = state.clone();
            let watch = watch::spawn(&path, move |result| reload_state.apply_reload(result))
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
    tokio::task::spawn_blocking(tokens::warm_up);
    if usable == 0 {
        tracing::warn!("no provider has a key: set e.g. OPENAI_API_KEY, or configure a local server under [providers]");
    }
    Ok(Running {
        addr,
        state,
        stop,
        task,
        watch,
        background,
    })
}

/// Brings the embedding model in (fetching it on first start) and hands it
/// to the cache. Until then, and for good if it fails, the cache answers
/// exact matches only, and says so.
async fn load_embedder(state: AppState, dir: PathBuf) {
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
    let loaded = tokio::task::spawn_blocking(move || embed::Embedder::load(&dir)).await;
    match loaded {
        Ok(Ok(embedder)) => {
            state.cache().set_embedder(embedder);
            tracing::info!("semantic cache ready");
        }
        Ok(Err(e)) => tracing::warn!("semantic cache unavailable, exact-match cache only: {e}"),
        Err(e) => tracing::warn!("semantic cache unavailable, exact-match cache only: {e}"),
    }
}

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) wins, because a
/// hardened unit can write nowhere else; then `[server] data_dir`; then the
/// XDG default.
pub fn data_dir(config: &config::Config) -> PathBuf {
    let from_systemd = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty());
    match (from_systemd, &config.server.data_dir) {
        (Some(_), _) | (None, None) => config::default_data_dir(),
        (None, Some(dir)) => dir.clone(),
    }
}

/// The data directory holds spend records and cached answers: owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the config.
pub async fn run_until_signal(running: Running) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    running.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot handle Ctrl-C")?;
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
