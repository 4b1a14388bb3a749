//! The on-disk form of the cache, in two tables written together:
//!
//! - `cache`: id -> the entry (JSON, for the fields that evolve) followed by
//!   its f32 vector as raw little-endian bytes, read only on a candidate
//!   match to re-score it exactly;
//! - `cache_index`: id -> the few bytes the in-memory index needs (scope,
//!   question hash, expiry, last use, int8 vector), so that start-up reads
//!   441 bytes an entry and parses no JSON.
//!
//! Entries written before the split (plain JSON with the vector as a JSON
//! array) still decode; [`super::Cache::open`] builds their index records.

use super::int8::quantize;
use super::scope::Scope;
use super::Entry;
use crate::embed::DIMENSIONS;
use crate::store::StoreError;

/// The key, in `cache_index`, of the marker that every entry has its index
/// record: written once the entries of an older p402 are migrated, and by a
/// clear. No id is 10 bytes long, so it never collides with a record.
pub(super) const MIGRATED: &[u8] = b"records-v1";

/// The key, in `cache_index`, of the marker that every record's question
/// hash is p402's own (SHA-256, see [`super::question_hash`]): written once
/// the records of a p402 that used std's hasher are rehashed, and by a
/// clear. 15 bytes: never an id.
pub(super) const REHASHED: &[u8] = b"question-sha256";

const ENTRY_V1: u8 = 1;
const INDEX_V1: u8 = 1;
const INDEX_HEADER: usize = 1 + 32 + 8 + 8 + 8;

/// What the in-memory index is rebuilt from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    pub(crate) scope: Scope,
    pub(crate) question_hash: u64,
    pub(crate) expires: u64,
    pub(crate) last_used: u64,
    /// Empty for an entry stored without an embedding.
    pub vector: Vec<i8>,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Malformed(what.to_string())
}

pub(crate) fn encode_entry(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(entry)?;
    let vector = entry.vector.as_deref().unwrap_or(&[]);
    let mut out = Vec::with_capacity(5 + json.len() + vector.len() * 4);
    out.push(ENTRY_V1);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    Ok(out)
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    match bytes.first() {
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&ENTRY_V1) => {
            let len = bytes
                .get(1..5)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| corrupt("cache entry header cut short"))?
                as usize;
            let json = bytes
                .get(5..5 + len)
                .ok_or_else(|| corrupt("cache entry cut short"))?;
            let mut entry: Entry = serde_json::from_slice(json)?;
            let raw = &bytes[5 + len..];
            entry.vector = match raw.len() {
                0 => None,
                n if n == DIMENSIONS * 4 => Some(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                _ => return Err(corrupt("cache entry vector has the wrong size")),
            };
            Ok(entry)
        }
        _ => Err(corrupt("unknown cache entry format")),
    }
}

impl IndexRecord {
    /// The index record of `entry`, its vector quantized (none if it has no
    /// vector of the model's width).
    pub(crate) fn of(entry: &Entry, scope: Scope, question_hash: u64) -> Self {
        IndexRecord {
            scope,
            question_hash,
            expires: entry.expires,
            last_used: entry.last_hit.max(entry.created),
            vector: entry
                .vector
                .as_deref()
                .filter(|v| v.len() == DIMENSIONS)
                .map(quantize)
                .unwrap_or_default(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER + self.vector.len());
        out.push(INDEX_V1);
        out.extend_from_slice(&self.scope.0);
        out.extend_from_slice(&self.question_hash.to_le_bytes());
        out.extend_from_slice(&self.expires.to_le_bytes());
        out.extend_from_slice(&self.last_used.to_le_bytes());
        out.extend(self.vector.iter().map(|&x| x as u8));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() < INDEX_HEADER || bytes[0] != INDEX_V1 {
            return Err(corrupt("unknown cache index record"));
        }
        let vector = &bytes[INDEX_HEADER..];
        if !vector.is_empty() && vector.len() != DIMENSIONS {
            return Err(corrupt("cache index vector has the wrong size"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut scope = [0u8; 32];
        scope.copy_from_slice(&bytes[1..33]);
        Ok(IndexRecord {
            scope: Scope(scope),
            question_hash: u64_at(33),
            expires: u64_at(41),
            last_used: u64_at(49),
            vector: vector.iter().map(|&x| x as i8).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(vector: Option<Vec<f32>>) -> Entry {
        Entry {
            id: 7,
            scope: Scope([3; 32]).hex(),
            question: "What is sled?".into(),
            vector,
            response: json!({"object": "chat.completion"}),
            input_tokens: 10,
            output_tokens: 5,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            created: 100,
            expires: 200,
            hits: 1,
            last_hit: 150,
        }
    }

    #[test]
    fn entries_round_trip_with_and_without_a_vector() {
        let vector: Vec<f32> = (0..DIMENSIONS).map(|i| i as f32 / 1000.0).collect();
        for v in [Some(vector), None] {
            let e = entry(v.clone());
            let back = decode_entry(&encode_entry(&e).unwrap()).unwrap();
            assert_eq!(back.vector, v);
            assert_eq!(back.question, e.question);
            assert_eq!(back.last_hit, 150);
        }
    }

    #[test]
    fn old_json_entries_still_decode() {
        let mut old = serde_json::to_value(entry(None)).unwrap();
        old["vector"] = json!(vec![0.5f32; DIMENSIONS]);
        let back = decode_entry(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(back.vector.map(|v| v.len()), Some(DIMENSIONS));
    }

    #[test]
    fn index_records_round_trip_and_refuse_garbage() {
        let vector: Vec<f32> = (0..DIMENSIONS)
            .map(|i| (i as f32 - 192.0) / 400.0)
            .collect();
        let e = entry(Some(vector));
        let record = IndexRecord::of(&e, Scope([3; 32]), 42);
        let bytes = record.encode();
        assert_eq!(bytes.len(), INDEX_HEADER + DIMENSIONS);
        assert_eq!(IndexRecord::decode(&bytes).unwrap(), record);
        assert!(IndexRecord::decode(&bytes[..20]).is_err());
        assert!(IndexRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_entry(b"\x01\xff\xff\xff\xff").is_err());
        assert!(decode_entry(b"").is_err());
    }
}
