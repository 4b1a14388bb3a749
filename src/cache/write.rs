//! Every change to the cache's two tables (`cache` and `cache_index`, see
//! [`super::record`]).
//!
//! An entry is always written with its index record, in one atomic
//! [`Write`] built by [`put_entry`] alone (for a store, a hit's count and a
//! migrated entry alike), so that the index rebuilt at the next start finds
//! exactly the entries stored. Every write goes through the store's writer
//! thread: on the request path [`Cache::store`] awaits the commit without
//! blocking a tokio worker, and a hit's count is queued without waiting;
//! [`Cache::store_blocking`] and [`Cache::clear`] block their caller and
//! are for synchronous code.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::index::Slot;
use super::scope::Scope;
use super::{now, question_hash, record, Cache, Entry, Probe};
use crate::catalog::Usage;
use crate::config::CacheConfig;
use crate::store::{Op, StoreError, Table, Write};

/// Adds to `write` the ops that store `entry` and its index record
/// together, under its id.
pub(super) fn put_entry(
    write: &mut Write,
    entry: &Entry,
    scope: Scope,
    question_hash: u64,
) -> Result<(), StoreError> {
    let key = entry.id.to_be_bytes().to_vec();
    let index_record = record::IndexRecord::of(entry, scope, question_hash).encode();
    write.ops.extend([
        Op::Put(Table::Cache, key.clone(), record::encode_entry(entry)?),
        Op::Put(Table::CacheIndex, key, index_record),
    ]);
    Ok(())
}

/// The op that marks every entry as having its index record (see
/// [`record::MIGRATED`]).
pub(super) fn migrated_marker() -> Op {
    Op::Put(Table::CacheIndex, record::MIGRATED.to_vec(), Vec::new())
}

/// The op that marks every record's question hash as p402's own (see
/// [`record::REHASHED`]).
pub(super) fn rehashed_marker() -> Op {
    Op::Put(Table::CacheIndex, record::REHASHED.to_vec(), Vec::new())
}

impl Cache {
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
        let write = self.prepared(probe, response, usage, provider, model, config)?;
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
        let write = self.prepared(probe, response, usage, provider, model, config)?;
        self.inner.store.write_blocking(write, false)
    }

    /// The body of [`Cache::store`] and [`Cache::store_blocking`], which
    /// differ only in how they wait for the write: files a new entry in
    /// the index (evicting past `max_entries`) and returns the write that
    /// stores it and removes the evicted ones.
    fn prepared(
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
        let entry = Entry {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
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
        let mut write = Write::default();
        put_entry(&mut write, &entry, probe.scope, probe.question_hash)?;
        for id in self.file(&probe, &entry, config, now) {
            let key = id.to_be_bytes().to_vec();
            write.ops.push(Op::Remove(Table::CacheIndex, key.clone()));
            write.ops.push(Op::Remove(Table::Cache, key));
        }
        Ok(write)
    }

    /// Puts a new entry in the index, evicts past `max_entries` and starts
    /// the scope's IVF build if it is now due; returns the evicted ids.
    fn file(&self, probe: &Probe, entry: &Entry, config: &CacheConfig, now: u64) -> Vec<u64> {
        let (victims, build) = {
            let mut index = self.index_mut();
            index.insert(
                probe.scope,
                probe.question_hash,
                probe.vector.as_deref(),
                Slot {
                    id: entry.id,
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
        victims
    }

    /// Writes a hit's new count and time back to its entry. Bookkeeping:
    /// queued for the writer thread, not awaited, and applied only while
    /// the entry is still stored, since a clear or an eviction meanwhile
    /// must not bring it back.
    pub(super) fn count_hit_later(&self, entry: &Entry) -> Result<(), StoreError> {
        let Some(scope) = Scope::from_hex(&entry.scope) else {
            return Ok(());
        };
        let mut write = Write {
            ops: Vec::new(),
            only_if_present: Some((Table::CacheIndex, entry.id.to_be_bytes().to_vec())),
        };
        put_entry(&mut write, entry, scope, question_hash(&entry.question))?;
        if let Err(e) = self.inner.store.write_later(write) {
            tracing::debug!("could not record a cache hit's count: {e}");
        }
        Ok(())
    }

    /// Drops every entry (never the ledger); returns how many there were.
    pub fn clear(&self) -> Result<usize, StoreError> {
        let removed = {
            let mut index = self.index_mut();
            let n = index.len();
            index.clear();
            n
        };
        let write = Write {
            ops: vec![
                Op::Clear(Table::CacheIndex),
                Op::Clear(Table::Cache),
                // Nothing left to migrate or rehash.
                migrated_marker(),
                rehashed_marker(),
            ],
            only_if_present: None,
        };
        self.inner.store.write_blocking(write, true)?;
        Ok(removed)
    }
}
