//! What the cache reports about itself (`/api/v2/cache/stats`, `p402 cache
//! stats`): the counters that lookups and the request path bump, and the
//! report built from them and the index. Relaxed atomics, since nothing
//! is decided from them; they are only read for the report.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde_json::{json, Value};

use super::Cache;
use crate::config::CacheConfig;
use crate::money::Usd;

/// Counts since start (not persisted).
#[derive(Default)]
pub(super) struct Counters {
    exact_hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    refused_by_guard: AtomicU64,
    refused_by_verifier: AtomicU64,
    saved_nanos: AtomicI64,
}

impl Counters {
    pub(super) fn hit(&self, exact: bool) {
        let counter = if exact {
            &self.exact_hits
        } else {
            &self.semantic_hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A candidate close enough by cosine that a guard refused.
    pub(super) fn refused_by_guard(&self) {
        self.refused_by_guard.fetch_add(1, Ordering::Relaxed);
    }

    /// A candidate the guards let through that the pair verifier did not
    /// vouch for.
    pub(super) fn refused_by_verifier(&self) {
        self.refused_by_verifier.fetch_add(1, Ordering::Relaxed);
    }
}

impl Cache {
    /// Counts the direct cost a hit avoided, for the stats.
    pub fn record_saving(&self, saved: Usd) {
        self.inner
            .counters
            .saved_nanos
            .fetch_add(saved.nanos(), Ordering::Relaxed);
    }

    /// The `/api/v2/cache/stats` object: mode, entries, hits, refusals
    /// and savings since start.
    pub fn stats(&self, config: &CacheConfig) -> Value {
        let counters = &self.inner.counters;
        let exact = counters.exact_hits.load(Ordering::Relaxed);
        let semantic = counters.semantic_hits.load(Ordering::Relaxed);
        let misses = counters.misses.load(Ordering::Relaxed);
        let lookups = exact + semantic + misses;
        let index = self.index();
        json!({
            "object": "cache.stats",
            "mode": self.mode(config),
            "loading": !self.is_loaded(),
            "entries": index.len(),
            "index_bytes": index.bytes(),
            "bytes_per_entry": if index.is_empty() { 0 } else { index.bytes() / index.len() },
            "hits": exact + semantic,
            "exact_hits": exact,
            "semantic_hits": semantic,
            "misses": misses,
            "refused_by_guard": counters.refused_by_guard.load(Ordering::Relaxed),
            "refused_by_verifier": counters.refused_by_verifier.load(Ordering::Relaxed),
            "hit_rate": if lookups == 0 { 0.0 } else { (exact + semantic) as f64 / lookups as f64 },
            "saved_usd": Usd::from_nanos(counters.saved_nanos.load(Ordering::Relaxed)).to_dollars(),
            "similarity_threshold": config.similarity.0,
            "max_entries": config.max_entries,
        })
    }
}
