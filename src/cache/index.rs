//! The in-memory index of cached questions: per scope, the exact questions
//! and the int8-quantized embeddings, scanned for the best cosine.
//!
//! A unit vector's components are in [-1, 1]; scaled by 127 and rounded they
//! fit an `i8` with an error far below what separates a paraphrase from
//! another question (cosines differ by 0.3 there, rounding moves them by
//! under 0.01). The best few by the int8 score are then re-scored exactly by
//! the caller. 384 bytes a vector instead of 1,536.

use std::collections::HashMap;

use super::scope::Scope;
use crate::embed::DIMENSIONS;

const SCALE: f32 = 127.0;

pub fn quantize(vector: &[f32]) -> Vec<i8> {
    vector
        .iter()
        .map(|x| (x * SCALE).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// The int8 dot product as an approximate cosine. Written as a plain loop
/// over fixed-size chunks so the compiler vectorizes it.
pub fn approx_cosine(a: &[i8], b: &[i8]) -> f32 {
    let mut sum = 0i32;
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        let mut part = 0i32;
        for i in 0..16 {
            part += i32::from(x[i]) * i32::from(y[i]);
        }
        sum += part;
    }
    sum as f32 / (SCALE * SCALE)
}

/// One entry as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
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
    /// `slots.len() * DIMENSIONS` quantized components; empty rows (all
    /// zeros) for entries stored without a vector.
    vectors: Vec<i8>,
    question_hash: Vec<u64>,
}

/// All partitions; the caller holds it behind a lock.
#[derive(Default)]
pub struct Index {
    partitions: HashMap<Scope, Partition>,
    /// id -> (scope, position) for removal.
    positions: HashMap<u64, (Scope, usize)>,
}

/// A candidate match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub id: u64,
    pub score: f32,
}

impl Index {
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn insert(&mut self, scope: Scope, question_hash: u64, vector: Option<&[f32]>, slot: Slot) {
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
        match vector {
            Some(v) if v.len() == DIMENSIONS => partition.vectors.extend(quantize(v)),
            _ => partition
                .vectors
                .extend(std::iter::repeat_n(0i8, DIMENSIONS)),
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
        partition.exact.remove(&partition.question_hash[position]);
        partition.slots.swap_remove(position);
        partition.question_hash.swap_remove(position);
        if position != last {
            let (head, tail) = partition.vectors.split_at_mut(last * DIMENSIONS);
            head[position * DIMENSIONS..(position + 1) * DIMENSIONS]
                .copy_from_slice(&tail[..DIMENSIONS]);
            let moved = partition.slots[position].id;
            self.positions.insert(moved, (scope, position));
        }
        partition.vectors.truncate(last * DIMENSIONS);
        if partition.slots.is_empty() {
            self.partitions.remove(&scope);
        }
        true
    }

    pub fn exact(&self, scope: &Scope, question_hash: u64, now: u64) -> Option<u64> {
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
        for (i, row) in partition.vectors.chunks_exact(DIMENSIONS).enumerate() {
            let score = approx_cosine(&query, row);
            if score < floor || partition.slots[i].expires <= now {
                continue;
            }
            if best.len() < k || best.last().is_some_and(|w| score > w.score) {
                best.push(Found {
                    id: partition.slots[i].id,
                    score,
                });
                best.sort_by(|a, b| b.score.total_cmp(&a.score));
                best.truncate(k);
            }
        }
        best
    }

    pub fn touch(&mut self, id: u64, now: u64) {
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

    pub fn clear(&mut self) {
        self.partitions.clear();
        self.positions.clear();
    }

    /// Bytes the index holds per entry, for the stats.
    pub fn bytes(&self) -> usize {
        self.len() * (DIMENSIONS + std::mem::size_of::<Slot>() + 8 + 16 + 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn int8_cosine_tracks_the_exact_one() {
        let (a, b) = (unit(1), unit(2));
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((approx_cosine(&quantize(&a), &quantize(&b)) - exact).abs() < 0.01);
        assert!((approx_cosine(&quantize(&a), &quantize(&a)) - 1.0).abs() < 0.01);
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
}
