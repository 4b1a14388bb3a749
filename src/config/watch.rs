//! Hot reload: watch the config file and hand each new version over.
//!
//! The directory is watched, not the file, because editors save by writing a
//! temporary file and renaming it over the old one: a watch on the old file's
//! inode would go deaf after the first save. Events are debounced so that a
//! save made of several writes is read once, when it is complete.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ConfigError, LoadedConfig};

/// How long the file must be quiet before it is read.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    trigger: mpsc::UnboundedSender<Trigger>,
    /// The task applying new versions; it holds whatever `apply` holds.
    task: tokio::task::JoinHandle<()>,
}

/// Why the file is to be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The file system reported a change; an unchanged file is skipped.
    Changed,
    /// An operator asked (SIGHUP): read and apply even if unchanged.
    Asked,
}

impl ConfigWatch {
    /// Re-reads the file now, as if it had changed (SIGHUP, `ExecReload`).
    pub fn reload(&self) {
        let _ = self.trigger.send(Trigger::Asked);
    }

    /// Stops watching and waits until the applying task, and with it
    /// `apply`, is gone.
    pub async fn stop(self) {
        let ConfigWatch { _watcher, task, .. } = self;
        drop(_watcher);
        task.abort();
        let _ = task.await;
    }
}

/// Starts watching `path`; `apply` receives every new version of the file
/// that differs from the last one read, valid or not.
pub fn spawn<F>(path: &Path, apply: F) -> Result<ConfigWatch, notify::Error>
where
    F: Fn(Result<LoadedConfig, ConfigError>) + Send + 'static,
{
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(|n| n.to_os_string());

    let (tx, rx) = mpsc::unbounded_channel::<Trigger>();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
        if ours {
            let _ = events.send(Trigger::Changed);
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    let initial = std::fs::read(&path).ok();
    let task = tokio::spawn(debounce_and_apply(path, rx, initial, apply));
    Ok(ConfigWatch {
        _watcher: watcher,
        trigger: tx,
        task,
    })
}

async fn debounce_and_apply<F>(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    mut last: Option<Vec<u8>>,
    apply: F,
) where
    F: Fn(Result<LoadedConfig, ConfigError>),
{
    while let Some(first) = rx.recv().await {
        let mut asked = first == Trigger::Asked;
        // Wait until the events stop, so a multi-write save is read whole.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(trigger)) => asked |= trigger == Trigger::Asked,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let current = tokio::fs::read(&path).await.ok();
        if !asked && current.is_some() && current == last {
            continue;
        }
        last = current;
        let loaded = LoadedConfig::from_file(&path);
        apply(loaded);
    }
}
