//! Finding a stored answer for a probe: the exact question within its scope
//! first, then (with the embedding model) the most similar earlier question.
//!
//! The semantic search is in three steps, each narrower and more exact than
//! the one before: the int8 scan of the index (or of the lists its IVF
//! layout probes) keeps the best [`RESCORE`] candidates; those are re-scored
//! with their stored f32 vectors against the threshold; the guards
//! ([`super::guard`]) refuse any whose question differs in a way a cosine
//! cannot see (another number, a negation); and the pair verifier, which
//! reads both questions together, must vouch for what is left. The closest
//! that passes is the hit. A wrong answer costs more than a miss, so every step may only drop
//! candidates, never add one.

use super::{guard, now, record, scope, Cache, Entry, Hit, Probe};
use crate::store::{StoreError, Table};

/// Candidates re-scored exactly after the int8 scan.
const RESCORE: usize = 4;
/// The int8 scan keeps candidates down to this far below the threshold, so
/// its rounding can never drop a true match.
const SCAN_MARGIN: f32 = 0.02;

impl Cache {
    /// An exact match only, of the same question text: for answers that
    /// must be the very same (embedding vectors), where a paraphrase is
    /// never good enough.
    pub fn lookup_exact(&self, probe: &Probe) -> Result<Option<Hit>, StoreError> {
        let now = now();
        let found = self.index().exact(&probe.scope, probe.question_hash, now);
        let Some(entry) = found.map(|id| self.entry(id)).transpose()?.flatten() else {
            self.inner.counters.miss();
            return Ok(None);
        };
        if entry.question != probe.question {
            self.inner.counters.miss();
            return Ok(None);
        }
        Ok(Some(self.hit(entry, 1.0, now)?))
    }

    /// Exact match first; then, when the probe allows it and with the
    /// embedder, the most similar question at or above `threshold` that no
    /// guard objects to.
    pub async fn lookup(
        &self,
        probe: &mut Probe,
        threshold: f64,
    ) -> Result<Option<Hit>, StoreError> {
        let now = now();
        let exact = self.index().exact(&probe.scope, probe.question_hash, now);
        if let Some(id) = exact {
            // The index keys questions by a 64-bit hash: the text decides.
            let same =
                |e: &Entry| scope::normalize(&e.question) == scope::normalize(&probe.question);
            if let Some(entry) = self.entry(id)?.filter(same) {
                return Ok(Some(self.hit(entry, 1.0, now)?));
            }
        }
        if !probe.semantic {
            self.inner.counters.miss();
            return Ok(None);
        }
        let Some(embedder) = self.inner.embedder.load_full() else {
            self.inner.counters.miss();
            return Ok(None);
        };
        let vector = match embedder.embed(&probe.question).await {
            Ok(vector) => vector,
            Err(e) => {
                tracing::debug!("semantic lookup skipped: {e}");
                self.inner.counters.miss();
                return Ok(None);
            }
        };
        let threshold = threshold as f32;
        let found =
            self.index()
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
        let best = candidates.first().map_or(0.0, |c| c.0);
        for (cosine, entry) in candidates
            .into_iter()
            .take_while(|(cosine, _)| *cosine >= best - guard::RUNNER_UP_MARGIN)
        {
            let refusal = guard::check(&probe.question, &entry.question, cosine);
            let same_words =
                refusal.is_none() && guard::same_words(&probe.question, &entry.question);
            let Some(bar) = guard::verifier_bar(refusal, same_words, guard::Tuning::CHOSEN) else {
                tracing::debug!(
                    ?refusal,
                    cosine,
                    "a close cached question was refused by a guard"
                );
                self.inner.counters.refused_by_guard();
                continue;
            };
            match embedder.verify(&probe.question, &entry.question).await {
                Ok(confidence) if confidence >= bar => {
                    return Ok(Some(self.hit(entry, cosine, now)?));
                }
                Ok(confidence) => {
                    tracing::debug!(
                        ?refusal,
                        cosine,
                        confidence,
                        "a close cached question was refused by the verifier"
                    );
                    self.inner.counters.refused_by_verifier();
                }
                // Unverified is never a hit.
                Err(e) => {
                    tracing::debug!("semantic lookup stopped unverified: {e}");
                    break;
                }
            }
        }
        self.inner.counters.miss();
        Ok(None)
    }

    /// The stored entry `id`, with its f32 vector; `None` if it was removed
    /// since the index found it.
    pub(super) fn entry(&self, id: u64) -> Result<Option<Entry>, StoreError> {
        match self.inner.store.get(Table::Cache, &id.to_be_bytes())? {
            Some(bytes) => Ok(Some(record::decode_entry(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Counts a hit (in the stats, for LRU eviction, and on the entry).
    fn hit(&self, mut entry: Entry, similarity: f32, now: u64) -> Result<Hit, StoreError> {
        self.inner.counters.hit(similarity >= 1.0);
        entry.hits += 1;
        entry.last_hit = now;
        self.index_mut().touch(entry.id, now);
        self.count_hit_later(&entry)?;
        Ok(Hit { entry, similarity })
    }
}
