//! `p402.toml`: its schema, its validation, and where it is found.
//!
//! Every key is checked when the file is read, and every problem is reported
//! as `file:line:col: message`, because a config that half-loads is worse
//! than one that is refused: a refused file leaves the last good one in force.

mod discovery;
mod guards;
mod schema;
mod validate;
pub mod watch;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use discovery::{default_data_dir, discover, Discovered};
pub use schema::*;

/// The commented starter config that `p402 init` writes; the same file the
/// repository ships as `p402.toml`, so the two can never drift apart.
pub const STARTER: &str = include_str!("../../p402.toml");

/// A config that failed to load, pointing at the offending place.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl ConfigError {
    fn at(
        file: &str,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_string(),
            position: span.map(|span| line_col(source, span.start)),
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// A validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The settings, checked by [`Config::validate`] when loaded.
    pub config: Config,
    /// The file it was read from; `None` when running on built-in defaults.
    pub path: Option<PathBuf>,
}

impl LoadedConfig {
    /// The built-in defaults, used when no config file exists anywhere.
    pub fn defaults() -> Self {
        LoadedConfig {
            config: Config::default(),
            path: None,
        }
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            position: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        let config = parse(&name, &source)?;
        Ok(LoadedConfig {
            config,
            path: Some(path.to_path_buf()),
        })
    }
}

/// Parses and validates config text; `file` names it in error messages.
pub fn parse(file: &str, source: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(source)
        .map_err(|e| ConfigError::at(file, source, e.span(), e.message().trim_end()))?;
    config
        .validate()
        .map_err(|(span, message)| ConfigError::at(file, source, span, message))?;
    Ok(config)
}

/// Where the database and other state live: `[server] data_dir`, unless
/// systemd's `StateDirectory=` says otherwise (it wins, so that the unit's
/// sandbox holds), else the platform's data directory.
pub fn data_dir(config: &Config) -> std::path::PathBuf {
    let under_systemd = std::env::var_os("STATE_DIRECTORY").is_some_and(|v| !v.is_empty());
    match &config.server.data_dir {
        Some(dir) if !under_systemd => dir.clone(),
        _ => default_data_dir(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(source: &str) -> String {
        match parse("p402.toml", source) {
            Ok(_) => panic!("expected an error for {source:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn starter_config_is_valid() {
        let config = parse("p402.toml", STARTER).expect("the shipped p402.toml must load");
        assert_eq!(config.server.listen.get_ref().to_string(), "127.0.0.1:8402");
    }

    #[test]
    fn the_ledger_keeps_90_days_unless_told_and_0_keeps_all() {
        let default = parse("p402.toml", "").expect("valid");
        assert_eq!(default.ledger.keep(), Some(chrono::Duration::days(90)));
        let all = parse("p402.toml", "[ledger]\nkeep_entries_days = 0\n").expect("valid");
        assert_eq!(all.ledger.keep(), None);
        assert!(error_of("[ledger]\nkeep_entries_days = -1\n").contains("p402.toml:2"));
        assert!(error_of("[ledger]\nkeep_days = 3\n").contains("unknown field"));
    }

    #[test]
    fn a_cache_model_p402_cannot_load_is_refused() {
        let e = error_of("[cache]\nmodel = \"bge-small-en\"\n");
        assert!(e.contains("one embedding model built in"), "{e}");
        for name in ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"] {
            let source = format!("[cache]\nmodel = \"{name}\"\n");
            assert!(parse("p402.toml", &source).is_ok(), "{name}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("p402.toml", "").expect("empty config is valid");
        assert_eq!(config.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.routing.default_mode, crate::router::mode::Mode::Cost);
    }

    #[test]
    fn unknown_key_points_at_line_and_column() {
        let e = error_of("[server]\nlisten = \"127.0.0.1:1\"\n  lisen = 3\n");
        assert!(e.starts_with("p402.toml:3:3: unknown field `lisen`"), "{e}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = error_of("[routing]\ndefault_mode = \"cheap\"\n");
        assert!(e.starts_with("p402.toml:2:16:"), "{e}");
        assert!(e.contains("cheap"), "{e}");

        let e = error_of("[server]\nlisten = \"localhost\"\n");
        assert!(e.starts_with("p402.toml:2:10:"), "{e}");

        let e = error_of("[cache]\nsimilarity = 1.5\n");
        assert!(e.starts_with("p402.toml:2:14:"), "{e}");

        let e = error_of("[upstream]\nconnect_timeout_seconds = 0\n");
        assert!(e.starts_with("p402.toml:2:27:"), "{e}");
    }

    #[test]
    fn per_token_prices_are_refused() {
        let e = error_of(
            "[[models]]\nid = \"m\"\nprovider = \"openai\"\ninput_per_mtok = 0.0000025\noutput_per_mtok = 10\n",
        );
        assert!(e.starts_with("p402.toml:4:18:"), "{e}");
        assert!(e.contains("per million"), "{e}");
    }

    #[test]
    fn cross_references_are_checked() {
        let e = error_of("[[models]]\nid = \"m\"\nprovider = \"nobody\"\n");
        assert!(e.starts_with("p402.toml:3:12:"), "{e}");
        assert!(e.contains("nobody"), "{e}");

        let e = error_of("[budgets.team]\nbudget_usd = 5\nkeys = [\"k1\"]\n");
        assert!(e.starts_with("p402.toml:3:9:"), "{e}");

        let e = error_of("[providers.mine]\napi_key_env = \"X\"\n");
        assert!(e.contains("base_url"), "{e}");

        let e = error_of("[providers.openai]\nbase_url = \"ftp://x\"\n");
        assert!(e.starts_with("p402.toml:2:12:"), "{e}");

        let e = error_of("[routing]\npin = [\"o3[\"]\n");
        assert!(e.starts_with("p402.toml:2:8:"), "{e}");
    }

    #[test]
    fn custom_provider_with_base_url_is_accepted() {
        let config = parse(
            "p402.toml",
            "[providers.vllm]\nbase_url = \"http://127.0.0.1:8000/v1\"\n[[models]]\nid = \"qwen\"\nprovider = \"vllm\"\ninput_per_mtok = 0\noutput_per_mtok = 0\n",
        )
        .expect("valid");
        assert_eq!(config.models.len(), 1);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
