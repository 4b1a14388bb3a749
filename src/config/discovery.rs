//! Where the config file and the data directory are, per SPEC §1.

use std::env;
use std::path::{Path, PathBuf};

/// The outcome of config discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// A file to load, and which rule found it (for the start-up message).
    File {
        /// The file; it may not exist when named explicitly.
        path: PathBuf,
        /// The rule that named it: `--config`, `$P402_CONFIG`, ...
        found_by: &'static str,
    },
    /// Nothing anywhere: run on built-in defaults.
    Defaults,
}

/// First found wins: `--config`, `$P402_CONFIG`, `./p402.toml`,
/// `$XDG_CONFIG_HOME/p402/p402.toml` (or `~/.config/...`),
/// `/etc/p402/p402.toml`. A file named explicitly (flag or variable) is used
/// even if it is missing, so the user gets an error rather than a silent
/// fallback to defaults.
pub fn discover(explicit: Option<&Path>) -> Discovered {
    if let Some(path) = explicit {
        return Discovered::File {
            path: path.to_path_buf(),
            found_by: "--config",
        };
    }
    if let Some(path) = env::var_os("P402_CONFIG").filter(|v| !v.is_empty()) {
        return Discovered::File {
            path: PathBuf::from(path),
            found_by: "$P402_CONFIG",
        };
    }
    let candidates = [
        (Some(PathBuf::from("p402.toml")), "./p402.toml"),
        (
            config_home().map(|home| home.join("p402").join("p402.toml")),
            "$XDG_CONFIG_HOME",
        ),
        (Some(PathBuf::from("/etc/p402/p402.toml")), "/etc/p402"),
    ];
    candidates
        .into_iter()
        .filter_map(|(path, found_by)| path.map(|p| (p, found_by)))
        .find(|(path, _)| path.is_file())
        .map_or(Discovered::Defaults, |(path, found_by)| Discovered::File {
            path,
            found_by,
        })
}

fn home() -> Option<PathBuf> {
    env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn config_home() -> Option<PathBuf> {
    env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
}

/// `$STATE_DIRECTORY` (systemd) wins, then `$XDG_DATA_HOME/p402`, then
/// `~/.local/share/p402`, then `./.p402` when there is no home at all.
pub fn default_data_dir() -> PathBuf {
    if let Some(state) = env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        // systemd may pass several colon-separated directories; the first is ours.
        let first = state
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("share")))
        .map_or_else(|| PathBuf::from(".p402"), |base| base.join("p402"))
}
