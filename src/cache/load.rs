//! Filling the in-memory index at start from the compact index records in
//! the store, after giving entries written before those records existed
//! theirs (once).
//!
//! Loading must not hold up p402: a small cache is loaded before p402
//! listens, a large one goes on loading on a thread of its own, a slice at
//! a time, so that lookups and stores meanwhile wait on the index lock for
//! milliseconds at most. That thread keeps only a weak reference to the
//! cache, so a cache shut down is not kept open by it. Once every record
//! is in, scopes large enough get their IVF layout (`ivf_build`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::Slot;
use super::record::{self, IndexRecord};
use super::scope::Scope;
use super::write::{migrated_marker, put_entry, rehashed_marker};
use super::{question_hash, Cache};
use crate::store::{Op, Store, StoreError, Table, Write};

/// How long opening may spend loading before the rest goes to the
/// background.
pub(super) const SYNC_LOAD: Duration = Duration::from_millis(500);
/// How long the background loader holds the index lock at a time.
const LOAD_SLICE: Duration = Duration::from_millis(20);

/// Index records read per step of loading (and per hold of the index lock).
const LOAD_CHUNK: usize = 256;

/// Migrates the entries of an older p402, unless that was done already:
/// their index records first, then their question hashes. The markers
/// that say so are written together, in one durable commit.
pub(super) fn migrate_once(store: &Store) -> Result<(), StoreError> {
    let mut done = Write::default();
    if store.get(Table::CacheIndex, record::MIGRATED)?.is_none() {
        migrate(store)?;
        done.ops.push(migrated_marker());
    }
    if store.get(Table::CacheIndex, record::REHASHED)?.is_none() {
        rehash(store)?;
        done.ops.push(rehashed_marker());
    }
    if done.ops.is_empty() {
        return Ok(());
    }
    store.write_blocking(done, true)
}

/// Gives every index record the question hash p402 defines, in place of
/// the one std's `DefaultHasher` gave it before (which a new Rust release
/// may change): without this, an upgrade would turn every exact repeat
/// into a miss. Idempotent: a crash half-way repeats it.
fn rehash(store: &Store) -> Result<(), StoreError> {
    let mut rehashed = 0usize;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = store.scan(Table::CacheIndex, after.as_deref(), LOAD_CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = Some(last.clone());
        let mut write = Write::default();
        for (key, value) in &chunk {
            // Markers share the table; their keys are no ids.
            if key.len() != 8 {
                continue;
            }
            let (Ok(mut index), Some(stored)) =
                (IndexRecord::decode(value), store.get(Table::Cache, key)?)
            else {
                continue;
            };
            let Ok(entry) = record::decode_entry(&stored) else {
                continue;
            };
            let stable = question_hash(&entry.question);
            if index.question_hash != stable {
                index.question_hash = stable;
                write
                    .ops
                    .push(Op::Put(Table::CacheIndex, key.clone(), index.encode()));
                rehashed += 1;
            }
        }
        if !write.ops.is_empty() {
            store.write_blocking(write, false)?;
        }
    }
    if rehashed > 0 {
        tracing::info!(rehashed, "cache entries given p402's stable question hash");
    }
    Ok(())
}

/// The id the next stored entry gets: one past the highest stored.
pub(super) fn next_id(store: &Store) -> Result<u64, StoreError> {
    // Entry keys are big-endian ids: the last one is the highest.
    Ok(match store.last_key(Table::Cache)? {
        Some(key) => <[u8; 8]>::try_from(key.as_slice())
            .map(u64::from_be_bytes)
            .map_or(1, |id| id + 1),
        None => 1,
    })
}

impl Cache {
    /// Loads the index for up to `sync_load`, then hands the rest to a
    /// thread of its own. Until it is done a lookup may miss an entry not
    /// yet loaded.
    pub(super) fn start_loading(&self, sync_load: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + sync_load;
        let Some(resume) = load(self, None, Some(deadline))? else {
            self.loaded();
            return Ok(());
        };
        tracing::info!("the cache is large: loading the rest in the background");
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("p402-cache-load".into())
            .spawn(move || {
                let started = Instant::now();
                let mut from = resume;
                loop {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let cache = Cache { inner };
                    let chunk_end = Instant::now() + LOAD_SLICE;
                    match load(&cache, Some(from), Some(chunk_end)) {
                        Ok(Some(next)) => from = next,
                        Ok(None) => {
                            tracing::info!(
                                entries = cache.index().len(),
                                ms = started.elapsed().as_millis() as u64,
                                "cache loaded"
                            );
                            cache.loaded();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("cache loading stopped: {e}");
                            cache.loaded();
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot load the cache in the background: {e}");
            self.loaded();
        }
        Ok(())
    }

    /// Marks loading done and starts the IVF builds it made due.
    fn loaded(&self) {
        self.inner.loaded.store(true, Ordering::Release);
        let due = self.index().scopes_due_ivf();
        for scope in due {
            if self.index_mut().claim_ivf_build(&scope) {
                self.spawn_ivf_build(scope);
            }
        }
    }
}

/// Reads index records after `from` into the index, a chunk at a time,
/// until `until`; returns the key to resume after, or `None` when all are
/// in.
fn load(
    cache: &Cache,
    mut from: Option<Vec<u8>>,
    until: Option<Instant>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut unreadable = 0usize;
    let done = loop {
        let chunk = cache
            .inner
            .store
            .scan(Table::CacheIndex, from.as_deref(), LOAD_CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break None;
        };
        let last = last.clone();
        let mut index = cache.index_mut();
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
        if until.is_some_and(|t| Instant::now() >= t) {
            break from;
        }
    };
    if unreadable > 0 {
        tracing::warn!(unreadable, "cache index records skipped as unreadable");
    }
    Ok(done)
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
            put_entry(&mut write, &entry, scope, question_hash(&entry.question))?;
            migrated += 1;
        }
        if !write.ops.is_empty() {
            store.write_blocking(write, false)?;
        }
    }
    if migrated > 0 {
        tracing::info!(migrated, "cache entries moved to the indexed layout");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cache::index::Index;
    use crate::cache::int8::test_vector as random;
    use crate::cache::{now, Probe};
    use crate::catalog::Usage;
    use crate::config::CacheConfig;

    fn probe(scope: Scope, question: &str, vector: Option<Vec<f32>>) -> Probe {
        Probe::new(scope, question.to_string(), vector, 3600)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
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
            let index = cache.index();
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
    fn the_question_hash_is_p402s_own_and_never_changes() {
        // The first 8 bytes of SHA-256("what is rust?"), little-endian,
        // written down: a build that hashed otherwise would empty every
        // persisted cache.
        assert_eq!(question_hash("  What is   RUST? "), 0x637f_d2f7_249b_45e8);
    }

    #[test]
    fn records_hashed_with_the_old_hasher_are_rehashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope([8; 32]);
        {
            let store = Store::open(dir.path()).unwrap();
            let cache = Cache::open(&store).unwrap();
            cache
                .store_blocking(
                    probe(scope, "what is rust?", Some(random(1))),
                    &json!({"object": "chat.completion"}),
                    &Usage::default(),
                    "openai",
                    "gpt-4o-mini",
                    &CacheConfig::default(),
                )
                .unwrap();
            // As a p402 that used std's hasher left it: another hash, and
            // no marker.
            let key = 1u64.to_be_bytes().to_vec();
            let mut old =
                IndexRecord::decode(&store.get(Table::CacheIndex, &key).unwrap().unwrap()).unwrap();
            old.question_hash = 0x0123_4567_89ab_cdef;
            let write = Write {
                ops: vec![
                    Op::Put(Table::CacheIndex, key, old.encode()),
                    Op::Remove(Table::CacheIndex, record::REHASHED.to_vec()),
                ],
                only_if_present: None,
            };
            store.write_blocking(write, true).unwrap();
        }
        for _ in 0..2 {
            let store = Store::open(dir.path()).unwrap();
            let cache = Cache::open(&store).unwrap();
            assert_eq!(
                cache
                    .index()
                    .exact(&scope, question_hash("What is Rust?"), now()),
                Some(1),
                "the exact repeat still hits after the upgrade"
            );
            assert!(store
                .get(Table::CacheIndex, record::REHASHED)
                .unwrap()
                .is_some());
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
            let found = cache.index().nearest(&scope, &random(42), 1, 0.9, now());
            assert_eq!(found.first().map(|f| f.id), Some(43), "ids start at 1");
        }
        let store = Store::open(dir.path()).unwrap();
        let cache = Cache::open_with(&store, Index::with_ivf_min(64), SYNC_LOAD).unwrap();
        assert_eq!(cache.index().len(), 100);
        wait_for("the IVF build at start", || cache.ivf_ready(&scope));
        let found = cache.index().nearest(&scope, &random(7), 1, 0.9, now());
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
        let cache = Cache::open_with(&store, Index::default(), Duration::ZERO).unwrap();
        assert!(!cache.is_loaded(), "no time to load before returning");
        // Stores while the loader runs: new ids, nothing counted twice.
        for i in 3000..3100 {
            store_one(&cache, i);
        }
        wait_for("background loading", || cache.is_loaded());
        assert_eq!(cache.index().len(), 3100);
        assert_eq!(
            cache.index().exact(&scope, question_hash("q2999"), now()),
            Some(3000)
        );
        assert_eq!(
            cache.index().exact(&scope, question_hash("q3050"), now()),
            Some(3051)
        );
        assert_eq!(cache.stats(&config)["loading"], false);
    }
}
