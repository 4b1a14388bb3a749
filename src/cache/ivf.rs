//! An inverted-file (IVF) layout over one large scope: its vectors grouped
//! into lists around k-means centroids, so that a lookup scans only the
//! lists nearest the question instead of every entry.
//!
//! A flat int8 scan reads 384 bytes an entry, about 70 ms at a million
//! entries on a 2-core machine; with about √n lists of about √n entries and
//! [`PROBES`] of them scanned, a lookup reads under 2% of that. The layout
//! can only lose a hit (a near question filed in a list not probed), never
//! make one: every candidate is still scored against the question, then
//! re-scored exactly and passed through the guards by the caller.
//!
//! HNSW (usearch) was measured first and set aside: 115 s to insert 100k
//! vectors on this machine and 57% recall@1 on near duplicates of synthetic
//! vectors (BENCHMARKS.md). k-means here trains on a sample in about a
//! second and files a million entries in seconds, off the request path.

use super::int8::{approx_cosine, SCALE};
use crate::embed::DIMENSIONS;

/// Lists scanned per lookup.
pub const PROBES: usize = 16;
/// k-means rounds over the training sample.
const ROUNDS: usize = 6;
/// Training sample per list.
const SAMPLE_PER_LIST: usize = 24;

/// The number of lists for a scope of `n` entries: about √n, so that the
/// centroids scored and the entries scanned both grow as √n.
pub fn lists_for(n: usize) -> usize {
    (n as f64).sqrt().round().clamp(16.0, 4096.0) as usize
}

/// How many vectors [`train`] wants for `lists` lists.
pub fn sample_size(lists: usize) -> usize {
    lists * SAMPLE_PER_LIST
}

/// The int8 centroids of the lists.
#[derive(Debug, Clone)]
pub struct Centroids {
    rows: Vec<i8>,
}

impl Centroids {
    /// The number of lists.
    pub(crate) fn len(&self) -> usize {
        self.rows.len() / DIMENSIONS
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The list whose centroid is closest to `vector`.
    pub fn nearest(&self, vector: &[i8]) -> u32 {
        let mut best = (f32::MIN, 0u32);
        for (i, row) in self.rows.chunks_exact(DIMENSIONS).enumerate() {
            let score = approx_cosine(vector, row);
            if score > best.0 {
                best = (score, i as u32);
            }
        }
        best.1
    }

    /// The `probes` lists closest to `vector`, best first.
    fn closest(&self, vector: &[i8], probes: usize) -> Vec<u32> {
        let mut scored: Vec<(f32, u32)> = self
            .rows
            .chunks_exact(DIMENSIONS)
            .enumerate()
            .map(|(i, row)| (approx_cosine(vector, row), i as u32))
            .collect();
        let probes = probes.min(scored.len());
        if probes == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(probes - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(probes);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, list)| list).collect()
    }
}

/// Spherical k-means over int8 rows (`DIMENSIONS` each): `lists` centroids,
/// seeded from evenly spaced rows so the result is deterministic.
pub fn train(sample: &[i8], lists: usize) -> Centroids {
    let n = sample.len() / DIMENSIONS;
    let lists = lists.clamp(1, n.max(1));
    let row = |i: usize| &sample[i * DIMENSIONS..(i + 1) * DIMENSIONS];
    let mut rows: Vec<i8> = (0..lists)
        .flat_map(|c| row(c * n / lists).iter().copied())
        .collect();
    if n == 0 {
        return Centroids { rows };
    }
    let mut assigned = vec![0u32; n];
    for _ in 0..ROUNDS {
        let centroids = Centroids { rows };
        for (i, slot) in assigned.iter_mut().enumerate() {
            *slot = centroids.nearest(row(i));
        }
        rows = centroids.rows;
        let mut sums = vec![0f32; lists * DIMENSIONS];
        let mut counts = vec![0usize; lists];
        for (i, &list) in assigned.iter().enumerate() {
            let list = list as usize;
            counts[list] += 1;
            let sum = &mut sums[list * DIMENSIONS..(list + 1) * DIMENSIONS];
            for (s, &x) in sum.iter_mut().zip(row(i)) {
                *s += f32::from(x);
            }
        }
        for (list, sum) in sums.chunks_exact(DIMENSIONS).enumerate() {
            // An empty list keeps its centroid; it costs one score a lookup.
            if counts[list] == 0 {
                continue;
            }
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 {
                continue;
            }
            for (out, s) in rows[list * DIMENSIONS..(list + 1) * DIMENSIONS]
                .iter_mut()
                .zip(sum)
            {
                *out = (s / norm * SCALE).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    Centroids { rows }
}

/// One list: its entries' positions in the partition and their vectors,
/// stored together so a probe reads memory front to back.
#[derive(Debug, Clone, Default)]
struct List {
    positions: Vec<u32>,
    vectors: Vec<i8>,
}

impl List {
    fn push(&mut self, position: u32, vector: &[i8]) -> u32 {
        self.positions.push(position);
        self.vectors.extend_from_slice(vector);
        self.positions.len() as u32 - 1
    }

    /// Removes member `index`; the last member takes its place.
    fn swap_remove(&mut self, index: usize) -> Option<u32> {
        let last = self.positions.len() - 1;
        self.positions.swap_remove(index);
        if index != last {
            self.vectors.copy_within(
                last * DIMENSIONS..(last + 1) * DIMENSIONS,
                index * DIMENSIONS,
            );
        }
        self.vectors.truncate(last * DIMENSIONS);
        self.positions.get(index).copied()
    }
}

/// The vectors of a partition filed in lists, with where each position
/// is, kept in step with the partition's `swap_remove`.
#[derive(Debug, Clone)]
pub struct Ivf {
    centroids: Centroids,
    lists: Vec<List>,
    /// Per position: (list, index within the list).
    place: Vec<(u32, u32)>,
}

impl Ivf {
    /// Files `rows` (position `i` is row `i`) in the lists of `assignment`.
    pub fn new(centroids: Centroids, assignment: &[u32], rows: &[i8]) -> Self {
        let mut lists = vec![List::default(); centroids.len()];
        let mut place = Vec::with_capacity(assignment.len());
        for (position, (&list, row)) in assignment
            .iter()
            .zip(rows.chunks_exact(DIMENSIONS))
            .enumerate()
        {
            let index = lists[list as usize].push(position as u32, row);
            place.push((list, index));
        }
        Ivf {
            centroids,
            lists,
            place,
        }
    }

    /// The vector at `position`.
    pub fn row(&self, position: usize) -> &[i8] {
        let (list, index) = self.place[position];
        let index = index as usize;
        &self.lists[list as usize].vectors[index * DIMENSIONS..(index + 1) * DIMENSIONS]
    }

    /// Files a new last position.
    pub fn push(&mut self, vector: &[i8]) {
        let list = self.centroids.nearest(vector);
        let position = self.place.len() as u32;
        let index = self.lists[list as usize].push(position, vector);
        self.place.push((list, index));
    }

    /// Mirrors the partition's `swap_remove(position)`: the position leaves
    /// its list and the last position takes its number.
    pub fn swap_remove(&mut self, position: usize) {
        let (list, index) = self.place[position];
        if let Some(moved) = self.lists[list as usize].swap_remove(index as usize) {
            self.place[moved as usize].1 = index;
        }
        let last = self.place.len() - 1;
        if position != last {
            let (list, index) = self.place[last];
            self.lists[list as usize].positions[index as usize] = position as u32;
        }
        self.place.swap_remove(position);
    }

    /// Calls `f(position, vector)` for every entry in the lists nearest
    /// `query`.
    pub fn scan(&self, query: &[i8], mut f: impl FnMut(usize, &[i8])) {
        for list in self.centroids.closest(query, PROBES) {
            let list = &self.lists[list as usize];
            for (&position, row) in list
                .positions
                .iter()
                .zip(list.vectors.chunks_exact(DIMENSIONS))
            {
                f(position as usize, row);
            }
        }
    }

    /// The number of vectors filed.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
    }

    /// Bytes beyond the vectors themselves.
    pub fn overhead_bytes(&self) -> usize {
        self.centroids.rows.len()
            + self.place.len() * (std::mem::size_of::<(u32, u32)>() + 4)
            + self.lists.len() * std::mem::size_of::<List>()
    }

    #[cfg(test)]
    fn check(&self) {
        for (position, &(list, index)) in self.place.iter().enumerate() {
            let list = &self.lists[list as usize];
            assert_eq!(list.positions[index as usize] as usize, position);
            assert_eq!(list.vectors.len(), list.positions.len() * DIMENSIONS);
        }
        let filed: usize = self.lists.iter().map(|l| l.positions.len()).sum();
        assert_eq!(filed, self.place.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::int8::{quantize, test_vector as unit};

    #[test]
    fn swap_remove_keeps_lists_and_places_in_step() {
        let rows: Vec<i8> = (0..400).flat_map(|i| quantize(&unit(i))).collect();
        let centroids = train(&rows, 20);
        assert_eq!(centroids.len(), 20);
        let assignment: Vec<u32> = rows
            .chunks_exact(DIMENSIONS)
            .map(|r| centroids.nearest(r))
            .collect();
        let mut ivf = Ivf::new(centroids, &assignment, &rows);
        let mut expected: Vec<Vec<i8>> =
            rows.chunks_exact(DIMENSIONS).map(<[i8]>::to_vec).collect();
        ivf.check();
        for position in [0usize, 398, 17, 17, 200, 5] {
            ivf.swap_remove(position);
            expected.swap_remove(position);
            ivf.check();
        }
        ivf.push(&quantize(&unit(1000)));
        expected.push(quantize(&unit(1000)));
        ivf.check();
        assert_eq!(ivf.len(), 395);
        for (position, row) in expected.iter().enumerate() {
            assert_eq!(ivf.row(position), row.as_slice(), "position {position}");
        }
    }

    #[test]
    fn a_near_duplicate_is_in_a_probed_list() {
        let vectors: Vec<Vec<f32>> = (0..4000).map(unit).collect();
        let rows: Vec<i8> = vectors.iter().flat_map(|v| quantize(v)).collect();
        let centroids = train(&rows, lists_for(4000));
        let assignment: Vec<u32> = rows
            .chunks_exact(DIMENSIONS)
            .map(|r| centroids.nearest(r))
            .collect();
        let ivf = Ivf::new(centroids, &assignment, &rows);
        let mut found = 0;
        for target in (0..4000).step_by(40) {
            let noise = unit(1_000_000 + target as u64);
            let query: Vec<f32> = vectors[target]
                .iter()
                .zip(&noise)
                .map(|(a, b)| a * 0.95 + b * 0.31)
                .collect();
            let mut reached = false;
            ivf.scan(&quantize(&query), |p, _| reached |= p == target);
            if reached {
                found += 1;
            }
        }
        // Random vectors have no clusters, the hardest case for IVF.
        assert!(found >= 95, "{found} of 100 near duplicates reachable");
    }
}
