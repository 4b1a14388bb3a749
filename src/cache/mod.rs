//! The semantic cache: repeated and paraphrased questions answered locally,
//! in milliseconds, at no cost, and never with an answer that is wrong for
//! the request. Without the embedding model it works on exact matches only.
//!
//! A request meets it twice. Before the upstream call, [`Cache::probe`]
//! decides whether the request may use the cache at all and under which
//! [`scope`] (`policy`), and [`Cache::lookup`] finds an exact match of the
//! question within its scope, else the most similar earlier question by
//! cosine that also passes the [`guard`]s (`lookup`). After a complete
//! answer, [`Cache::store`] stores it (`write`).
//!
//! Entries live in the store with their vectors ([`record`]). The in-memory
//! [`index`] is built from their compact records at start, in the
//! background for a large cache (`load`), and large scopes get an [`ivf`]
//! layout off the request path (`ivf_build`). `stats` counts hits and
//! misses for the stats endpoint. This file holds the handle the rest of
//! p402 uses and the types it passes around.
//!
//! Dependencies among these files point one way: `load` and `lookup` use
//! `write` (migrated entries and hit counts are written like stored ones),
//! `load` and `write` start IVF builds through `ivf_build`; all of them use
//! [`index`], which uses [`ivf`]; both of those use `int8`, the quantized
//! vector form, which uses nothing else of the cache.

pub mod guard;
pub mod index;
mod int8;
pub mod ivf;
mod ivf_build;
mod lexicon;
mod load;
mod lookup;
mod policy;
pub mod record;
pub(crate) mod replay;
pub mod scope;
mod stats;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::CacheConfig;
use crate::embed::Embedder;
use crate::store::{Store, StoreError};
use crate::wire::request::ChatRequest;
use index::Index;
use scope::Scope;

/// A stored answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its key in the cache tables, one past the highest stored, so that
    /// the tables are in storing order.
    pub id: u64,
    pub(crate) scope: String,
    pub(crate) question: String,
    /// Kept as raw bytes after the JSON ([`record`]); read from the JSON
    /// only in entries written before that.
    #[serde(default, skip_serializing)]
    pub vector: Option<Vec<f32>>,
    /// The `chat.completion` object as the provider answered (without
    /// p402's metadata).
    pub response: Value,
    /// The prompt tokens the original answer used; a hit reports them, to
    /// price the direct cost it avoided.
    pub input_tokens: u64,
    pub(crate) output_tokens: u64,
    /// The provider that answered originally.
    pub provider: String,
    /// The model that answered originally.
    pub model: String,
    pub(crate) created: u64,
    pub(crate) expires: u64,
    pub(crate) hits: u64,
    pub(crate) last_hit: u64,
}

/// A cacheable request, prepared for lookup and later store.
#[derive(Debug, Clone)]
pub struct Probe {
    pub(crate) scope: Scope,
    pub(crate) question: String,
    question_hash: u64,
    /// Filled by a semantic lookup, reused by the store.
    pub vector: Option<Vec<f32>>,
    pub(crate) ttl: u64,
    /// Whether a similar question may answer it, or only the same one
    /// (`[cache] semantic`).
    pub semantic: bool,
}

impl Probe {
    /// A probe for `question` in `scope`. Requests get theirs from
    /// [`Cache::probe`]; benches and tools build them directly.
    pub fn new(scope: Scope, question: String, vector: Option<Vec<f32>>, ttl: u64) -> Self {
        Probe {
            scope,
            question_hash: question_hash(&question),
            question,
            vector,
            ttl,
            semantic: true,
        }
    }

    /// This probe, answered only by an exact repeat.
    pub fn exact_only(self) -> Self {
        Probe {
            semantic: false,
            ..self
        }
    }
}

/// An answer from the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    pub(crate) entry: Entry,
    /// 1.0 for an exact match.
    pub similarity: f32,
}

/// Unix seconds: the clock of expiry and of least-recent use.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key of exact matches: questions that differ only in case and white
/// space ([`scope::normalize`]) hash alike. The first 8 bytes of the
/// SHA-256 of the normalised question, little-endian: defined by p402, so
/// that it is the same on every build (std's `DefaultHasher` may change
/// with any Rust release, which would silently empty a persisted cache).
/// Entries hashed otherwise before are rehashed once (`load`).
fn question_hash(question: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(scope::normalize(question).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A cheap-to-clone handle.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// The `cache` and `cache_index` tables live here; writes go through
    /// the store's writer thread.
    store: Store,
    /// Every record is in the index (see [`Cache::open`]).
    loaded: AtomicBool,
    /// A std lock: lookups scan under the read lock without awaiting.
    index: RwLock<Index>,
    embedder: ArcSwapOption<Embedder>,
    /// The id the next stored entry gets; ids only grow, so the highest
    /// key in the store is the latest entry.
    next_id: AtomicU64,
    counters: stats::Counters,
}

impl Cache {
    /// Opens the cache trees and builds the index from the compact
    /// records; scopes large enough get their IVF layout built in the
    /// background (until then their lookups scan the whole scope).
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Self::open_with(store, Index::default(), load::SYNC_LOAD)
    }

    /// [`Self::open`] with a given (empty) index and time to load before
    /// returning, for tests of the IVF layout and of background loading.
    pub fn open_with(
        store: &Store,
        index: Index,
        sync_load: std::time::Duration,
    ) -> Result<Self, StoreError> {
        load::migrate_once(store)?;
        let cache = Cache {
            inner: Arc::new(Inner {
                store: store.clone(),
                index: RwLock::new(index),
                loaded: AtomicBool::new(false),
                embedder: ArcSwapOption::empty(),
                next_id: AtomicU64::new(load::next_id(store)?),
                counters: stats::Counters::default(),
            }),
        };
        // A small cache is loaded before p402 listens; a large one goes on
        // loading in the background, so start-up never waits on it.
        cache.start_loading(sync_load)?;
        Ok(cache)
    }

    /// Whether every stored entry is in the index.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// Whether `scope` has its IVF layout (for tests and benches that wait
    /// for the background build).
    pub fn ivf_ready(&self, scope: &Scope) -> bool {
        self.index().has_ivf(scope)
    }

    pub(crate) fn set_embedder(&self, embedder: Embedder) {
        self.inner.embedder.store(Some(Arc::new(embedder)));
    }

    /// For `/health`: `connected`, `exact-only` or `disabled`.
    pub fn mode(&self, config: &CacheConfig) -> &'static str {
        match (config.enabled, self.inner.embedder.load().is_some()) {
            (false, _) => "disabled",
            (true, true) => "connected",
            (true, false) => "exact-only",
        }
    }

    /// Whether a request may be answered from (and stored in) the cache, and
    /// under which scope (the rules are in `policy`). Not for `cache:
    /// false`, `n > 1`, a temperature above `max_temperature`, or a
    /// conversation not ending in a question. With local API keys, each key
    /// has scopes of its own unless `share_across_keys` is set.
    pub fn probe(
        chat: &ChatRequest,
        mode: &Value,
        config: &CacheConfig,
        local_key: Option<&str>,
    ) -> Option<Probe> {
        policy::probe(chat, mode, config, local_key)
    }

    /// The index for reading, poisoned or not: a panic on another thread
    /// must not stop every later lookup and store.
    fn index(&self) -> RwLockReadGuard<'_, Index> {
        match self.inner.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The index for changing, poisoned or not (see [`Self::index`]).
    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        match self.inner.index.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
