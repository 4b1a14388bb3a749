//! The in-memory index of cached questions: per scope, the exact questions
//! and the int8-quantized embeddings (`int8`), scanned for the best
//! cosine. The best few by the int8 score are then re-scored exactly by the
//! caller.
//!
//! A scope past [`IVF_MIN`] entries also gets an [`Ivf`] layout, built off
//! the request path by the cache; until it is installed, lookups scan the
//! whole scope, slower but complete. The index depends on [`super::ivf`],
//! never the other way round.

use std::collections::HashMap;

use super::ivf::{self, Centroids, Ivf};
use super::scope::Scope;
use crate::embed::DIMENSIONS;

/// Re-exported where they were before `int8` was a module of its own, for
/// callers outside the cache.
pub use super::int8::{approx_cosine, quantize, SCALE};

/// Entries from which a scope is worth an IVF layout: a flat scan of this
/// many takes about a millisecond here.
pub const IVF_MIN: usize = 16_384;

/// One entry as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The entry's id in the cache tables.
    pub id: u64,
    /// Unix seconds after which the entry is dead.
    pub expires: u64,
    /// Unix seconds of the last hit (or the store), for LRU eviction.
    pub last_used: u64,
}

#[derive(Default)]
struct Partition {
    /// Normalized question text hash -> id.
    exact: HashMap<u64, u64>,
    slots: Vec<Slot>,
    /// `slots.len() * DIMENSIONS` quantized components, zeros for entries
    /// stored without a vector; empty once `ivf` holds them in its lists.
    vectors: Vec<i8>,
    question_hash: Vec<u64>,
    ivf: Option<Ivf>,
    /// Entries when the IVF layout was last trained.
    trained_at: usize,
    /// A build is running for this scope.
    building: bool,
}

impl Partition {
    fn row(&self, position: usize) -> &[i8] {
        match &self.ivf {
            Some(ivf) => ivf.row(position),
            None => &self.vectors[position * DIMENSIONS..(position + 1) * DIMENSIONS],
        }
    }
}

/// All partitions; the caller holds it behind a lock.
pub struct Index {
    partitions: HashMap<Scope, Partition>,
    /// id -> (scope, position) for removal.
    positions: HashMap<u64, (Scope, usize)>,
    ivf_min: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_ivf_min(IVF_MIN)
    }
}

/// A candidate match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    /// The entry's id, to read it from the store.
    pub id: u64,
    pub(crate) score: f32,
}

impl Index {
    /// An index that lays out scopes of `ivf_min` entries or more as IVF
    /// (tests and benches use small values).
    pub fn with_ivf_min(ivf_min: usize) -> Self {
        Index {
            partitions: HashMap::new(),
            positions: HashMap::new(),
            ivf_min: ivf_min.max(1),
        }
    }

    /// The entries it holds, across every scope.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Adds an entry under `scope`, replacing one of the same question
    /// (`question_hash`); without a vector of the model's width it can only
    /// be found by its exact question.
    pub fn insert(&mut self, scope: Scope, question_hash: u64, vector: Option<&[f32]>, slot: Slot) {
        let quantized = vector.filter(|v| v.len() == DIMENSIONS).map(quantize);
        self.insert_quantized(scope, question_hash, quantized.as_deref(), slot);
    }

    /// [`Self::insert`] with the vector already quantized (from disk).
    pub fn insert_quantized(
        &mut self,
        scope: Scope,
        question_hash: u64,
        vector: Option<&[i8]>,
        slot: Slot,
    ) {
        // Already in (a store that raced the loader reading it from disk).
        if self.positions.contains_key(&slot.id) {
            return;
        }
        if let Some(old) = self
            .partitions
            .get(&scope)
            .and_then(|p| p.exact.get(&question_hash))
            .copied()
        {
            self.remove(old);
        }
        let partition = self.partitions.entry(scope).or_default();
        let position = partition.slots.len();
        partition.slots.push(slot);
        partition.question_hash.push(question_hash);
        let zeros = [0i8; DIMENSIONS];
        let row = vector.filter(|v| v.len() == DIMENSIONS).unwrap_or(&zeros);
        match &mut partition.ivf {
            Some(ivf) => ivf.push(row),
            None => partition.vectors.extend_from_slice(row),
        }
        partition.exact.insert(question_hash, slot.id);
        self.positions.insert(slot.id, (scope, position));
    }

    /// Removes an entry in O(1): the last one takes its place.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some((scope, position)) = self.positions.remove(&id) else {
            return false;
        };
        let Some(partition) = self.partitions.get_mut(&scope) else {
            return false;
        };
        let last = partition.slots.len() - 1;
        match &mut partition.ivf {
            Some(ivf) => ivf.swap_remove(position),
            None => {
                partition.vectors.copy_within(
                    last * DIMENSIONS..(last + 1) * DIMENSIONS,
                    position * DIMENSIONS,
                );
                partition.vectors.truncate(last * DIMENSIONS);
            }
        }
        partition.exact.remove(&partition.question_hash[position]);
        partition.slots.swap_remove(position);
        partition.question_hash.swap_remove(position);
        if position != last {
            let moved = partition.slots[position].id;
            self.positions.insert(moved, (scope, position));
        }
        if partition.slots.is_empty() {
            self.partitions.remove(&scope);
        }
        true
    }

    pub(crate) fn exact(&self, scope: &Scope, question_hash: u64, now: u64) -> Option<u64> {
        let partition = self.partitions.get(scope)?;
        let id = *partition.exact.get(&question_hash)?;
        let (_, position) = self.positions.get(&id)?;
        (partition.slots[*position].expires > now).then_some(id)
    }

    /// The `k` best live entries of `scope` by approximate cosine, best first,
    /// at or above `floor`.
    pub fn nearest(
        &self,
        scope: &Scope,
        vector: &[f32],
        k: usize,
        floor: f32,
        now: u64,
    ) -> Vec<Found> {
        let Some(partition) = self.partitions.get(scope) else {
            return Vec::new();
        };
        let query = quantize(vector);
        let mut best: Vec<Found> = Vec::with_capacity(k + 1);
        let mut consider = |i: usize, row: &[i8]| {
            let score = approx_cosine(&query, row);
            if score < floor || partition.slots[i].expires <= now {
                return;
            }
            if best.len() < k || best.last().is_some_and(|w| score > w.score) {
                best.push(Found {
                    id: partition.slots[i].id,
                    score,
                });
                best.sort_by(|a, b| b.score.total_cmp(&a.score));
                best.truncate(k);
            }
        };
        match &partition.ivf {
            Some(ivf) => ivf.scan(&query, consider),
            None => {
                for (i, row) in partition.vectors.chunks_exact(DIMENSIONS).enumerate() {
                    consider(i, row);
                }
            }
        }
        best
    }

    /// Whether `scope` should get a (new) IVF layout now: it reached the
    /// minimum with none, or grew fourfold since the last training. Marks
    /// the build as started; the caller must end it with [`Self::install`]
    /// or [`Self::abandon`].
    pub fn claim_ivf_build(&mut self, scope: &Scope) -> bool {
        let ivf_min = self.ivf_min;
        let Some(partition) = self.partitions.get_mut(scope) else {
            return false;
        };
        let n = partition.slots.len();
        let due = match partition.ivf {
            None => n >= ivf_min,
            Some(_) => n >= partition.trained_at.saturating_mul(4),
        };
        if due && !partition.building {
            partition.building = true;
            return true;
        }
        false
    }

    /// Scopes that are due an IVF layout (at start, after loading).
    pub fn scopes_due_ivf(&self) -> Vec<Scope> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.ivf.is_none() && p.slots.len() >= self.ivf_min)
            .map(|(scope, _)| *scope)
            .collect()
    }

    /// Entries in `scope`.
    pub fn scope_len(&self, scope: &Scope) -> usize {
        self.partitions.get(scope).map_or(0, |p| p.slots.len())
    }

    /// Evenly spaced rows of `scope` to train on.
    pub fn training_sample(&self, scope: &Scope, rows: usize) -> Option<Vec<i8>> {
        let partition = self.partitions.get(scope)?;
        let n = partition.slots.len();
        let take = rows.min(n);
        Some(
            (0..take)
                .flat_map(|i| partition.row(i * n / take.max(1)).iter().copied())
                .collect(),
        )
    }

    /// Ids and rows of positions `start..start + len` of `scope`, to file
    /// outside the lock.
    pub fn rows(&self, scope: &Scope, start: usize, len: usize) -> Vec<(u64, Vec<i8>)> {
        let Some(partition) = self.partitions.get(scope) else {
            return Vec::new();
        };
        let end = start.saturating_add(len).min(partition.slots.len());
        (start.min(end)..end)
            .map(|i| (partition.slots[i].id, partition.row(i).to_vec()))
            .collect()
    }

    /// Installs a layout trained and filed outside the lock. Entries stored
    /// since (not in `filed`) are filed now.
    pub fn install(&mut self, scope: &Scope, centroids: Centroids, filed: &HashMap<u64, u32>) {
        let Some(partition) = self.partitions.get_mut(scope) else {
            return;
        };
        let assignment: Vec<u32> = (0..partition.slots.len())
            .map(|i| match filed.get(&partition.slots[i].id) {
                Some(&list) => list,
                None => centroids.nearest(partition.row(i)),
            })
            .collect();
        // A retraining files the rows out of the current lists.
        let rows: Vec<i8> = match partition.ivf.take() {
            Some(ivf) => (0..partition.slots.len())
                .flat_map(|i| ivf.row(i).iter().copied())
                .collect(),
            None => std::mem::take(&mut partition.vectors),
        };
        partition.ivf = Some(Ivf::new(centroids, &assignment, &rows));
        partition.trained_at = partition.slots.len();
        partition.building = false;
    }

    /// Ends a build that could not finish.
    pub fn abandon(&mut self, scope: &Scope) {
        if let Some(partition) = self.partitions.get_mut(scope) {
            partition.building = false;
        }
    }

    /// Builds the IVF layout of `scope` in place, under the caller's lock
    /// (benches and tests; the cache builds outside the lock).
    pub fn build_ivf(&mut self, scope: &Scope) {
        let lists = ivf::lists_for(self.scope_len(scope));
        let Some(sample) = self.training_sample(scope, ivf::sample_size(lists)) else {
            return;
        };
        let centroids = ivf::train(&sample, lists);
        self.install(scope, centroids, &HashMap::new());
    }

    /// Whether `scope` has an IVF layout.
    pub fn has_ivf(&self, scope: &Scope) -> bool {
        self.partitions.get(scope).is_some_and(|p| p.ivf.is_some())
    }

    /// Marks entry `id` used at `now` (Unix seconds), for LRU eviction.
    pub(crate) fn touch(&mut self, id: u64, now: u64) {
        if let Some((scope, position)) = self.positions.get(&id) {
            if let Some(slot) = self
                .partitions
                .get_mut(scope)
                .and_then(|p| p.slots.get_mut(*position))
            {
                slot.last_used = now;
            }
        }
    }

    /// Ids to drop: every expired entry, then the least recently used until
    /// at most `keep` remain.
    pub fn victims(&self, keep: usize, now: u64) -> Vec<u64> {
        let mut all: Vec<Slot> = self
            .partitions
            .values()
            .flat_map(|p| p.slots.iter().copied())
            .collect();
        let mut out: Vec<u64> = all
            .iter()
            .filter(|s| s.expires <= now)
            .map(|s| s.id)
            .collect();
        all.retain(|s| s.expires > now);
        if all.len() > keep {
            all.sort_by_key(|s| (s.last_used, s.id));
            out.extend(all[..all.len() - keep].iter().map(|s| s.id));
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        self.partitions.clear();
        self.positions.clear();
    }

    /// Bytes the index holds, for the stats: per entry the int8 vector, the
    /// slot, the question hash, the exact-match map and the id map (hash map
    /// entries counted at their payload plus a control byte and 1/8 spare);
    /// plus the IVF layouts.
    pub fn bytes(&self) -> usize {
        let exact_entry = 16 + 1;
        let position_entry = 8 + std::mem::size_of::<(Scope, usize)>() + 1;
        let per_entry =
            DIMENSIONS + std::mem::size_of::<Slot>() + 8 + (exact_entry + position_entry) * 9 / 8;
        let ivf: usize = self
            .partitions
            .values()
            .filter_map(|p| p.ivf.as_ref().map(Ivf::overhead_bytes))
            .sum();
        self.len() * per_entry + ivf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::int8::test_vector as random;

    fn unit(seed: u32) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMENSIONS)
            .map(|i| ((i as u32 * 7919 + seed * 104729) % 1000) as f32 - 500.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn slot(id: u64) -> Slot {
        Slot {
            id,
            expires: 1000,
            last_used: id,
        }
    }

    #[test]
    fn insert_find_remove_and_evict() {
        let mut index = Index::default();
        let scope = Scope([1; 32]);
        let other = Scope([2; 32]);
        for id in 1..=5 {
            index.insert(scope, id, Some(&unit(id as u32)), slot(id));
        }
        index.insert(other, 9, Some(&unit(3)), slot(9));
        assert_eq!(index.exact(&scope, 3, 10), Some(3));
        assert_eq!(index.exact(&other, 3, 10), None, "scopes never mix");
        let found = index.nearest(&scope, &unit(3), 2, 0.5, 10);
        assert_eq!(found[0].id, 3);
        assert!(index.remove(1));
        assert_eq!(
            index.nearest(&scope, &unit(3), 1, 0.5, 10)[0].id,
            3,
            "swap_remove kept positions right"
        );
        assert_eq!(index.exact(&scope, 5, 10), Some(5));
        assert_eq!(index.exact(&scope, 3, 2000), None, "expired");
        index.touch(2, 500);
        // Keep 3 of 5: the two least recently used go (3 and 4; 2 was touched).
        let victims = index.victims(3, 10);
        assert_eq!(victims, vec![3, 4]);
        assert_eq!(index.victims(10, 5000).len(), 5, "all expired");
    }

    #[test]
    fn an_ivf_scope_stays_consistent_through_inserts_and_removals() {
        let mut index = Index::with_ivf_min(100);
        let scope = Scope([1; 32]);
        for id in 0..600u64 {
            index.insert(scope, id, Some(&random(id)), slot(id));
        }
        assert!(index.claim_ivf_build(&scope));
        assert!(!index.claim_ivf_build(&scope), "one build at a time");
        index.build_ivf(&scope);
        assert!(index.has_ivf(&scope));
        for id in 600..700u64 {
            index.insert(scope, id, Some(&random(id)), slot(id));
        }
        for id in (0..700u64).step_by(3) {
            assert!(index.remove(id));
        }
        // Re-storing a question replaces its entry, in the lists too.
        index.insert(scope, 1, Some(&random(1)), slot(1000));
        for id in (0..700u64).filter(|id| id % 3 != 0) {
            let found = index.nearest(&scope, &random(id), 1, 0.9, 10);
            let want = if id == 1 { 1000 } else { id };
            assert_eq!(found.first().map(|f| f.id), Some(want), "entry {id}");
        }
        assert!(
            index.nearest(&scope, &random(3), 1, 0.9, 10).is_empty(),
            "removed"
        );
        assert!(!index.claim_ivf_build(&scope), "not grown fourfold");
    }
}
