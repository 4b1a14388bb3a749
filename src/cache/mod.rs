//! The semantic cache: repeated and paraphrased questions answered locally,
//! in milliseconds, at no cost, and never with an answer that is wrong for
//! the request.
//!
//! Entries live in sled with their vectors; an in-memory index (built from
//! them at start) finds an exact match of the question within its scope at
//! once, else the most similar earlier question by cosine, which must also
//! pass the guards in [`guard`]. Without the embedding model the cache works
//! on exact matches only.

pub mod guard;
pub mod index;
pub mod scope;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::Usage;
use crate::config::CacheConfig;
use crate::embed::Embedder;
use crate::money::Usd;
use crate::request::ChatRequest;
use crate::store::{Store, StoreError};
use index::{Index, Slot};
use scope::Scope;

/// Candidates re-scored exactly after the int8 scan.
const RESCORE: usize = 4;
/// The int8 scan keeps candidates down to this far below the threshold, so
/// its rounding can never drop a true match.
const SCAN_MARGIN: f32 = 0.02;

/// A stored answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub scope: String,
    pub question: String,
    pub vector: Option<Vec<f32>>,
    /// The `chat.completion` object as the provider answered (without
    /// p402's metadata).
    pub response: Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub provider: String,
    pub model: String,
    pub created: u64,
    pub expires: u64,
    pub hits: u64,
    pub last_hit: u64,
}

/// A cacheable request, prepared for lookup and later store.
#[derive(Debug, Clone)]
pub struct Probe {
    pub scope: Scope,
    pub question: String,
    question_hash: u64,
    /// Filled by a semantic lookup, reused by the store.
    pub vector: Option<Vec<f32>>,
    pub ttl: u64,
}

/// An answer from the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Entry,
    /// 1.0 for an exact match.
    pub similarity: f32,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn question_hash(question: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    scope::normalize(question).hash(&mut hasher);
    hasher.finish()
}

/// A cheap-to-clone handle.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Tree,
    /// A std lock: lookups scan under the read lock without awaiting.
    index: RwLock<Index>,
    embedder: ArcSwapOption<Embedder>,
    next_id: AtomicU64,
    exact_hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    refused_by_guard: AtomicU64,
    saved_nanos: AtomicI64,
}

impl Cache {
    /// Opens the cache tree and builds the index from it.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let tree = store.tree("cache")?;
        let mut index = Index::default();
        let mut next_id = 1;
        for item in tree.iter() {
            let (_, value) = item?;
            let Ok(entry) = serde_json::from_slice::<Entry>(&value) else {
                continue;
            };
            let Some(scope) = Scope::from_hex(&entry.scope) else {
                continue;
            };
            next_id = next_id.max(entry.id + 1);
            index.insert(
                scope,
                question_hash(&entry.question),
                entry.vector.as_deref(),
                Slot {
                    id: entry.id,
                    expires: entry.expires,
                    last_used: entry.last_hit.max(entry.created),
                },
            );
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                tree,
                index: RwLock::new(index),
                embedder: ArcSwapOption::empty(),
                next_id: AtomicU64::new(next_id),
                exact_hits: AtomicU64::new(0),
                semantic_hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                refused_by_guard: AtomicU64::new(0),
                saved_nanos: AtomicI64::new(0),
            }),
        })
    }

    pub fn set_embedder(&self, embedder: Embedder) {
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        match self.inner.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        match self.inner.index.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a request may be answered from (and stored in) the cache, and
    /// under which scope. Not for `cache: false`, `n > 1`, a temperature
    /// above `max_temperature`, or a conversation not ending in a question.
    pub fn probe(chat: &ChatRequest, mode: &Value, config: &CacheConfig) -> Option<Probe> {
        if !config.enabled || chat.options.cache == Some(false) {
            return None;
        }
        if chat
            .body
            .get("n")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 1)
        {
            return None;
        }
        let temperature = chat
            .body
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if temperature > config.max_temperature {
            return None;
        }
        let (scope, question) = scope::split(&chat.body, &chat.model, mode)?;
        Some(Probe {
            question_hash: question_hash(&question),
            scope,
            question,
            vector: None,
            ttl: chat.options.cache_ttl.unwrap_or(config.ttl_seconds),
        })
    }

    /// Exact match first; then, with the embedder, the most similar question
    /// at or above `threshold` that no guard objects to.
    pub async fn lookup(
        &self,
        probe: &mut Probe,
        threshold: f64,
    ) -> Result<Option<Hit>, StoreError> {
        let now = now();
        let exact = self.read().exact(&probe.scope, probe.question_hash, now);
        if let Some(id) = exact {
            if let Some(entry) = self.entry(id)? {
                return Ok(Some(self.hit(entry, 1.0, now)?));
            }
        }
        let Some(embedder) = self.inner.embedder.load_full() else {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let vector = match embedder.embed(&probe.question).await {
            Ok(vector) => vector,
            Err(e) => {
                tracing::debug!("semantic lookup skipped: {e}");
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        };
        let threshold = threshold as f32;
        let found =
            self.read()
                .nearest(&probe.scope, &vector, RESCORE, threshold - SCAN_MARGIN, now);
        probe.vector = Some(vector.clone());
        let mut candidates: Vec<(f32, Entry)> = Vec::new();
        for found in found {
            let Some(entry) = self.entry(found.id)? else {
                continue;
            };
            let Some(stored) = &entry.vector else {
                continue;
            };
            let cosine: f32 = stored.iter().zip(&vector).map(|(a, b)| a * b).sum();
            if cosine >= threshold {
                candidates.push((cosine, entry));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (cosine, entry) in candidates {
            match guard::check(&probe.question, &entry.question) {
                None => return Ok(Some(self.hit(entry, cosine, now)?)),
                Some(refusal) => {
                    tracing::debug!(
                        ?refusal,
                        cosine,
                        "a close cached question was refused by a guard"
                    );
                    self.inner.refused_by_guard.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    fn entry(&self, id: u64) -> Result<Option<Entry>, StoreError> {
        match self.inner.tree.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    fn hit(&self, mut entry: Entry, similarity: f32, now: u64) -> Result<Hit, StoreError> {
        if similarity >= 1.0 {
            self.inner.exact_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.semantic_hits.fetch_add(1, Ordering::Relaxed);
        }
        entry.hits += 1;
        entry.last_hit = now;
        self.write().touch(entry.id, now);
        // Hit counts are bookkeeping: written, not flushed.
        self.inner
            .tree
            .insert(entry.id.to_be_bytes(), serde_json::to_vec(&entry)?)?;
        Ok(Hit { entry, similarity })
    }

    /// Counts the direct cost a hit avoided, for the stats.
    pub fn record_saving(&self, saved: Usd) {
        self.inner
            .saved_nanos
            .fetch_add(saved.nanos(), Ordering::Relaxed);
    }

    /// Stores a complete answer; evicts past `max_entries`.
    pub fn store(
        &self,
        probe: Probe,
        response: &Value,
        usage: &Usage,
        provider: &str,
        model: &str,
        config: &CacheConfig,
    ) -> Result<(), StoreError> {
        let mut response = response.clone();
        if let Some(object) = response.as_object_mut() {
            object.remove("p402_metadata");
        }
        let now = now();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            scope: probe.scope.hex(),
            question: probe.question.clone(),
            vector: probe.vector.clone(),
            response,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            provider: provider.to_string(),
            model: model.to_string(),
            created: now,
            expires: now.saturating_add(probe.ttl),
            hits: 0,
            last_hit: now,
        };
        self.inner
            .tree
            .insert(id.to_be_bytes(), serde_json::to_vec(&entry)?)?;
        let victims = {
            let mut index = self.write();
            index.insert(
                probe.scope,
                probe.question_hash,
                probe.vector.as_deref(),
                Slot {
                    id,
                    expires: entry.expires,
                    last_used: now,
                },
            );
            let max = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
            if index.len() > max {
                // Evict a little below the limit, so that eviction (a scan)
                // does not run on every store once the cache is full.
                let victims = index.victims(max - max / 100, now);
                for id in &victims {
                    index.remove(*id);
                }
                victims
            } else {
                Vec::new()
            }
        };
        for id in victims {
            self.inner.tree.remove(id.to_be_bytes())?;
        }
        Ok(())
    }

    pub fn clear(&self) -> Result<usize, StoreError> {
        let removed = {
            let mut index = self.write();
            let n = index.len();
            index.clear();
            n
        };
        self.inner.tree.clear()?;
        Ok(removed)
    }

    pub fn stats(&self, config: &CacheConfig) -> Value {
        let exact = self.inner.exact_hits.load(Ordering::Relaxed);
        let semantic = self.inner.semantic_hits.load(Ordering::Relaxed);
        let misses = self.inner.misses.load(Ordering::Relaxed);
        let lookups = exact + semantic + misses;
        let index = self.read();
        json!({
            "object": "cache.stats",
            "mode": self.mode(config),
            "entries": index.len(),
            "index_bytes": index.bytes(),
            "bytes_per_entry": if index.is_empty() { 0 } else { index.bytes() / index.len() },
            "hits": exact + semantic,
            "exact_hits": exact,
            "semantic_hits": semantic,
            "misses": misses,
            "refused_by_guard": self.inner.refused_by_guard.load(Ordering::Relaxed),
            "hit_rate": if lookups == 0 { 0.0 } else { (exact + semantic) as f64 / lookups as f64 },
            "saved_usd": Usd::from_nanos(self.inner.saved_nanos.load(Ordering::Relaxed)).to_dollars(),
            "similarity_threshold": config.similarity.0,
            "max_entries": config.max_entries,
        })
    }
}
