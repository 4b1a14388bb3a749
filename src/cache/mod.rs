//! The semantic cache: repeated and paraphrased questions answered locally,
//! in milliseconds, at no cost, and never with an answer that is wrong for
//! the request.
//!
//! Entries live in the store with their vectors ([`record`]); an in-memory index
//! (built from compact records at start) finds an exact match of the question within its scope at
//! once, else the most similar earlier question by cosine, which must also
//! pass the guards in [`guard`]. Without the embedding model the cache works
//! on exact matches only.

pub mod guard;
pub mod index;
mod int8;
pub mod ivf;
pub mod record;
pub mod scope;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::Usage;
use crate::config::CacheConfig;
use crate::embed::Embedder;
use crate::money::Usd;
use crate::request::ChatRequest;
use crate::store::{Op, Store, StoreError, Table, Write};
use index::{Index, Slot};
use record::IndexRecord;
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
    /// Kept as raw bytes after the JSON ([`record`]); read from the JSON
    /// only in entries written before that.
    #[serde(default, skip_serializing)]
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
        }
    }
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
    /// The `cache` and `cache_index` tables live here; writes go through
    /// the store's writer thread.
    store: Store,
    /// Every record is in the index (see [`Cache::open`]).
    loaded: AtomicBool,
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
    /// Opens the cache trees and builds the index from the compact
    /// records; scopes large enough get their IVF layout built in the
    /// background (until then their lookups scan the whole scope).
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Self::open_with(store, Index::default(), SYNC_LOAD)
    }

    /// [`Self::open`] with a given (empty) index and time to load before
    /// returning, for tests of the IVF layout and of background loading.
    pub fn open_with(
        store: &Store,
        index: Index,
        sync_load: std::time::Duration,
    ) -> Result<Self, StoreError> {
        if store.get(Table::CacheIndex, MIGRATED)?.is_none() {
            migrate(store)?;
        }
        // Entry keys are big-endian ids: the last one is the highest.
        let next_id = match store.last_key(Table::Cache)? {
            Some(key) => <[u8; 8]>::try_from(key.as_slice())
                .map(u64::from_be_bytes)
                .map_or(1, |id| id + 1),
            None => 1,
        };
        let cache = Cache {
            inner: Arc::new(Inner {
                store: store.clone(),
                index: RwLock::new(index),
                loaded: AtomicBool::new(false),
                embedder: ArcSwapOption::empty(),
                next_id: AtomicU64::new(next_id),
                exact_hits: AtomicU64::new(0),
                semantic_hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                refused_by_guard: AtomicU64::new(0),
                saved_nanos: AtomicI64::new(0),
            }),
        };
        // A small cache is loaded before p402 listens; a large one goes on
        // loading in the background, so start-up never waits on it. Until
        // it is done a lookup may miss an entry not yet loaded.
        let deadline = std::time::Instant::now() + sync_load;
        match load(&cache.inner, None, Some(deadline))? {
            None => cache.loaded(),
            Some(resume) => {
                tracing::info!("the cache is large: loading the rest in the background");
                let weak = Arc::downgrade(&cache.inner);
                let spawned = std::thread::Builder::new()
                    .name("p402-cache-load".into())
                    .spawn(move || {
                        let started = std::time::Instant::now();
                        let mut from = resume;
                        loop {
                            let Some(inner) = weak.upgrade() else {
                                return;
                            };
                            let chunk_end = std::time::Instant::now() + LOAD_SLICE;
                            match load(&inner, Some(from), Some(chunk_end)) {
                                Ok(Some(next)) => from = next,
                                Ok(None) => {
                                    let cache = Cache { inner };
                                    tracing::info!(
                                        entries = cache.read().len(),
                                        ms = started.elapsed().as_millis() as u64,
                                        "cache loaded"
                                    );
                                    cache.loaded();
                                    return;
                                }
                                Err(e) => {
                                    tracing::warn!("cache loading stopped: {e}");
                                    Cache { inner }.loaded();
                                    return;
                                }
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot load the cache in the background: {e}");
                    cache.loaded();
                }
            }
        }
        Ok(cache)
    }

    /// Marks loading done and starts the IVF builds it made due.
    fn loaded(&self) {
        self.inner.loaded.store(true, Ordering::Release);
        let due = self.read().scopes_due_ivf();
        for scope in due {
            if self.write().claim_ivf_build(&scope) {
                self.spawn_ivf_build(scope);
            }
        }
    }

    /// Whether every stored entry is in the index.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// Lays out `scope` as IVF on a thread of its own, holding the index
    /// lock only to copy rows and to install the result, and only a weak
    /// reference in between so a shut-down cache is not kept open.
    fn spawn_ivf_build(&self, scope: Scope) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("p402-cache-ivf".into())
            .spawn(move || {
                if build_ivf(&weak, scope).is_none() {
                    if let Some(inner) = weak.upgrade() {
                        Cache { inner }.write().abandon(&scope);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the cache index builder: {e}");
            self.write().abandon(&scope);
        }
    }

    /// Whether `scope` has its IVF layout (for tests and benches that wait
    /// for the background build).
    pub fn ivf_ready(&self, scope: &Scope) -> bool {
        self.read().has_ivf(scope)
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
    /// With local API keys, each key has scopes of its own unless
    /// `share_across_keys` is set.
    pub fn probe(
        chat: &ChatRequest,
        mode: &Value,
        config: &CacheConfig,
        local_key: Option<&str>,
    ) -> Option<Probe> {
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
        let scope = match local_key {
            Some(key) if !config.share_across_keys => scope.for_key(key),
            _ => scope,
        };
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
        match self.inner.store.get(Table::Cache, &id.to_be_bytes())? {
            Some(bytes) => Ok(Some(record::decode_entry(&bytes)?)),
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
        // Hit counts are bookkeeping: queued for the writer thread, not
        // awaited, and applied only while the entry is still stored, since
        // a clear or an eviction meanwhile must not bring it back.
        if let Some(scope) = Scope::from_hex(&entry.scope) {
            let mut write = put(&entry, scope, question_hash(&entry.question))?;
            write.only_if_present = Some((Table::CacheIndex, entry.id.to_be_bytes().to_vec()));
            if let Err(e) = self.inner.store.write_later(write) {
                tracing::debug!("could not record a cache hit's count: {e}");
            }
        }
        Ok(Hit { entry, similarity })
    }

    /// Counts the direct cost a hit avoided, for the stats.
    pub fn record_saving(&self, saved: Usd) {
        self.inner
            .saved_nanos
            .fetch_add(saved.nanos(), Ordering::Relaxed);
    }

    /// Stores a complete answer, evicting past `max_entries`, and returns
    /// once it is committed (not awaiting an fsync of its own: see
    /// `store::writer`).
    pub async fn store(
        &self,
        probe: Probe,
        response: &Value,
        usage: &Usage,
        provider: &str,
        model: &str,
        config: &CacheConfig,
    ) -> Result<(), StoreError> {
        let write = self.prepare(probe, response, usage, provider, model, config)?;
        self.inner.store.write(write).await
    }

    /// [`Cache::store`] for synchronous callers (benches, tools, tests).
    pub fn store_blocking(
        &self,
        probe: Probe,
        response: &Value,
        usage: &Usage,
        provider: &str,
        model: &str,
        config: &CacheConfig,
    ) -> Result<(), StoreError> {
        let write = self.prepare(probe, response, usage, provider, model, config)?;
        self.inner.store.write_blocking(write, false)
    }

    /// Files a new entry in the index (evicting past `max_entries`) and
    /// returns the write that stores it and removes the evicted ones.
    fn prepare(
        &self,
        probe: Probe,
        response: &Value,
        usage: &Usage,
        provider: &str,
        model: &str,
        config: &CacheConfig,
    ) -> Result<Write, StoreError> {
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
        let mut write = put(&entry, probe.scope, probe.question_hash)?;
        let (victims, build) = {
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
            let victims = if index.len() > max {
                // Evict a little below the limit, so that eviction (a scan)
                // does not run on every store once the cache is full.
                let victims = index.victims(max - max / 100, now);
                for id in &victims {
                    index.remove(*id);
                }
                victims
            } else {
                Vec::new()
            };
            (victims, index.claim_ivf_build(&probe.scope))
        };
        if build {
            self.spawn_ivf_build(probe.scope);
        }
        for id in &victims {
            write
                .ops
                .push(Op::Remove(Table::CacheIndex, id.to_be_bytes().to_vec()));
            write
                .ops
                .push(Op::Remove(Table::Cache, id.to_be_bytes().to_vec()));
        }
        Ok(write)
    }

    /// Drops every entry (never the ledger); returns how many there were.
    pub fn clear(&self) -> Result<usize, StoreError> {
        let removed = {
            let mut index = self.write();
            let n = index.len();
            index.clear();
            n
        };
        let write = Write {
            ops: vec![
                Op::Clear(Table::CacheIndex),
                Op::Clear(Table::Cache),
                Op::Put(Table::CacheIndex, MIGRATED.to_vec(), Vec::new()),
            ],
            only_if_present: None,
        };
        self.inner.store.write_blocking(write, true)?;
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
            "loading": !self.is_loaded(),
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

/// Marks the `cache_index` tree as complete: every entry has its record.
const MIGRATED: &[u8] = b"records-v1";

/// How long opening may spend loading before the rest goes to the
/// background.
const SYNC_LOAD: std::time::Duration = std::time::Duration::from_millis(500);
/// How long the background loader holds the index lock at a time.
const LOAD_SLICE: std::time::Duration = std::time::Duration::from_millis(20);

/// Index records read per step of loading (and per hold of the index lock).
const LOAD_CHUNK: usize = 256;

/// Reads index records after `from` into the index, a chunk at a time,
/// until `until`; returns the key to resume after, or `None` when all are
/// in.
fn load(
    inner: &Inner,
    mut from: Option<Vec<u8>>,
    until: Option<std::time::Instant>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut unreadable = 0usize;
    let done = loop {
        let chunk = inner
            .store
            .scan(Table::CacheIndex, from.as_deref(), LOAD_CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break None;
        };
        let last = last.clone();
        let mut index = match inner.index.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (key, value) in &chunk {
            // The MIGRATED marker shares the table; its key is no id.
            let Ok(id) = <[u8; 8]>::try_from(key.as_slice()).map(u64::from_be_bytes) else {
                continue;
            };
            match IndexRecord::decode(value) {
                Ok(record) => index.insert_quantized(
                    record.scope,
                    record.question_hash,
                    (!record.vector.is_empty()).then_some(record.vector.as_slice()),
                    Slot {
                        id,
                        expires: record.expires,
                        last_used: record.last_used,
                    },
                ),
                Err(_) => unreadable += 1,
            }
        }
        drop(index);
        from = Some(last);
        if chunk.len() < LOAD_CHUNK {
            break None;
        }
        if until.is_some_and(|t| std::time::Instant::now() >= t) {
            break from;
        }
    };
    if unreadable > 0 {
        tracing::warn!(unreadable, "cache index records skipped as unreadable");
    }
    Ok(done)
}

/// Rows copied per read-lock while filing a scope into its IVF lists.
const FILE_CHUNK: usize = 4096;

/// The write that stores an entry and its index record together.
fn put(entry: &Entry, scope: Scope, question_hash: u64) -> Result<Write, StoreError> {
    let key = entry.id.to_be_bytes().to_vec();
    Ok(Write {
        ops: vec![
            Op::Put(Table::Cache, key.clone(), record::encode_entry(entry)?),
            Op::Put(
                Table::CacheIndex,
                key,
                IndexRecord::of(entry, scope, question_hash).encode(),
            ),
        ],
        only_if_present: None,
    })
}

/// Gives every entry written before the index records existed its record
/// (and the binary vector layout). Idempotent: a crash half-way repeats it.
fn migrate(store: &Store) -> Result<(), StoreError> {
    let mut migrated = 0usize;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = store.scan(Table::Cache, after.as_deref(), LOAD_CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = Some(last.clone());
        let mut write = Write::default();
        for (key, value) in &chunk {
            if value.first() != Some(&b'{') && store.get(Table::CacheIndex, key)?.is_some() {
                continue;
            }
            let Ok(entry) = record::decode_entry(value) else {
                continue;
            };
            let Some(scope) = Scope::from_hex(&entry.scope) else {
                continue;
            };
            write
                .ops
                .extend(put(&entry, scope, question_hash(&entry.question))?.ops);
            migrated += 1;
        }
        if !write.ops.is_empty() {
            store.write_blocking(write, false)?;
        }
    }
    if migrated > 0 {
        tracing::info!(migrated, "cache entries moved to the indexed layout");
    }
    let done = Write {
        ops: vec![Op::Put(Table::CacheIndex, MIGRATED.to_vec(), Vec::new())],
        only_if_present: None,
    };
    store.write_blocking(done, true)
}

/// Trains and files the IVF layout of `scope`; `None` if the cache went
/// away or the scope emptied meanwhile.
fn build_ivf(weak: &Weak<Inner>, scope: Scope) -> Option<()> {
    let cache = || weak.upgrade().map(|inner| Cache { inner });
    let started = std::time::Instant::now();
    let n = cache()?.read().scope_len(&scope);
    let lists = ivf::lists_for(n);
    let sample = cache()?
        .read()
        .training_sample(&scope, ivf::sample_size(lists))?;
    let centroids = ivf::train(&sample, lists);
    let mut filed = HashMap::with_capacity(n);
    let mut start = 0;
    loop {
        let rows = cache()?.read().rows(&scope, start, FILE_CHUNK);
        if rows.is_empty() {
            break;
        }
        for (id, row) in &rows {
            filed.insert(*id, centroids.nearest(row));
        }
        start += rows.len();
    }
    cache()?.write().install(&scope, centroids, &filed);
    tracing::info!(
        entries = n,
        lists,
        ms = started.elapsed().as_millis() as u64,
        "cache scope indexed for fast lookup"
    );
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: u64) -> Vec<f32> {
        int8::test_vector(seed)
    }

    fn probe(scope: Scope, question: &str, vector: Option<Vec<f32>>) -> Probe {
        Probe {
            scope,
            question: question.to_string(),
            question_hash: question_hash(question),
            vector,
            ttl: 3600,
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn entries_from_before_the_index_records_are_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope([5; 32]);
        {
            let store = Store::open(dir.path()).unwrap();
            for id in 1..=3u64 {
                let old = json!({
                    "id": id, "scope": scope.hex(), "question": format!("question {id}"),
                    "vector": random(id), "response": {"object": "chat.completion"},
                    "input_tokens": 1, "output_tokens": 1, "provider": "openai",
                    "model": "gpt-4o-mini", "created": now(), "expires": now() + 3600,
                    "hits": 0, "last_hit": now(),
                });
                let write = Write {
                    ops: vec![Op::Put(
                        Table::Cache,
                        id.to_be_bytes().to_vec(),
                        serde_json::to_vec(&old).unwrap(),
                    )],
                    only_if_present: None,
                };
                store.write_blocking(write, false).unwrap();
            }
        }
        for _ in 0..2 {
            let store = Store::open(dir.path()).unwrap();
            let cache = Cache::open(&store).unwrap();
            let index = cache.read();
            assert_eq!(index.len(), 3);
            assert_eq!(
                index.exact(&scope, question_hash("question 2"), now()),
                Some(2)
            );
            let found = index.nearest(&scope, &random(3), 1, 0.9, now());
            assert_eq!(found.first().map(|f| f.id), Some(3));
            drop(index);
            let entry = cache.entry(3).unwrap().unwrap();
            assert_eq!(entry.vector, Some(random(3)), "the f32 vector survives");
            let raw = store
                .get(Table::Cache, &3u64.to_be_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(raw[0], 1, "rewritten in the binary layout");
        }
    }

    #[test]
    fn a_growing_scope_gets_its_ivf_layout_in_the_background_and_again_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope([6; 32]);
        let config = CacheConfig::default();
        {
            let store = Store::open(dir.path()).unwrap();
            let cache = Cache::open_with(&store, Index::with_ivf_min(64), SYNC_LOAD).unwrap();
            for i in 0..100u64 {
                cache
                    .store_blocking(
                        probe(scope, &format!("q{i}"), Some(random(i))),
                        &json!({"object": "chat.completion"}),
                        &Usage::default(),
                        "openai",
                        "gpt-4o-mini",
                        &config,
                    )
                    .unwrap();
            }
            wait_for("the IVF build", || cache.ivf_ready(&scope));
            let found = cache.read().nearest(&scope, &random(42), 1, 0.9, now());
            assert_eq!(found.first().map(|f| f.id), Some(43), "ids start at 1");
        }
        let store = Store::open(dir.path()).unwrap();
        let cache = Cache::open_with(&store, Index::with_ivf_min(64), SYNC_LOAD).unwrap();
        assert_eq!(cache.read().len(), 100);
        wait_for("the IVF build at start", || cache.ivf_ready(&scope));
        let found = cache.read().nearest(&scope, &random(7), 1, 0.9, now());
        assert_eq!(found.first().map(|f| f.id), Some(8));
    }

    #[test]
    fn a_large_cache_loads_in_the_background_while_stores_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope([7; 32]);
        let config = CacheConfig::default();
        let store_one = |cache: &Cache, i: u64| {
            cache
                .store_blocking(
                    probe(scope, &format!("q{i}"), Some(random(i))),
                    &json!({"object": "chat.completion"}),
                    &Usage::default(),
                    "openai",
                    "gpt-4o-mini",
                    &config,
                )
                .unwrap();
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let cache = Cache::open(&store).unwrap();
            for i in 0..3000 {
                store_one(&cache, i);
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let cache = Cache::open_with(&store, Index::default(), std::time::Duration::ZERO).unwrap();
        assert!(!cache.is_loaded(), "no time to load before returning");
        // Stores while the loader runs: new ids, nothing counted twice.
        for i in 3000..3100 {
            store_one(&cache, i);
        }
        wait_for("background loading", || cache.is_loaded());
        assert_eq!(cache.read().len(), 3100);
        assert_eq!(
            cache.read().exact(&scope, question_hash("q2999"), now()),
            Some(3000)
        );
        assert_eq!(
            cache.read().exact(&scope, question_hash("q3050"), now()),
            Some(3051)
        );
        assert_eq!(cache.stats(&config)["loading"], false);
    }
}
