//! What the guards know about English words, from a maintained source
//! rather than a hand list: Princeton WordNet 3.0's antonyms, synonym
//! groups and irregular forms (derived by `tests/clients/wordnet.rs`, which checks
//! the committed files against WordNet itself), the polarity of words that
//! VADER's sentiment lexicon rates well away from neutral (derived and
//! checked the same way by `tests/clients/polarity.rs`), and the Snowball English
//! stemmer, so that "raised" meets "lower" and "kilograms" meets
//! "kilogram".
//!
//! Words are compared by stem. The files are compiled in and read once, on
//! the first guarded lookup.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

const ANTONYMS: &str = include_str!("antonyms.tsv");
const SYNONYMS: &str = include_str!("synonyms.txt");
const INFLECTIONS: &str = include_str!("inflections.tsv");
const POLARITY: &str = include_str!("polarity.tsv");

/// The tables are held in a few flat arrays rather than a map entry (and
/// its own allocations) per stem: as maps of `String`s they took about 10
/// MiB of the process for 32,000 stems, a third of a model's session
/// (`BENCHMARKS.md`, issue 35); this way about 1.3 MB. A lookup is a
/// binary search.
pub struct Lexicon {
    stemmer: Stemmer,
    /// Every stem the lexicon knows, one after another, sorted.
    text: String,
    /// Per stem, in that order: where it is in `text` and where its
    /// synonym groups are in `groups`.
    stems: Vec<Entry>,
    /// The synonym groups of every stem, stem by stem.
    groups: Vec<u32>,
    /// Opposed stems (as indexes into `stems`), both ways, sorted.
    antonyms: Vec<(u32, u32)>,
    /// Irregular form → its base forms ("bought" → "buy").
    irregular: HashMap<&'static str, Vec<&'static str>>,
    /// Stems with a clear polarity, sorted: `true` for a good word
    /// ("help", "improve"), `false` for a bad one ("worse", "damage"). A
    /// stem whose words VADER rates both ways is left out.
    polarity: Vec<(String, bool)>,
}

/// One stem of [`Lexicon::stems`].
struct Entry {
    text: Range<u32>,
    groups: Range<u32>,
}

static LEXICON: LazyLock<Lexicon> = LazyLock::new(Lexicon::load);

fn lines(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
}

/// An index that fits in `u32`: the tables are a few hundred kilobytes.
fn index(i: usize) -> u32 {
    u32::try_from(i).expect("the lexicon's tables are far smaller than 4 GiB")
}

impl Lexicon {
    pub fn get() -> &'static Lexicon {
        &LEXICON
    }

    fn load() -> Lexicon {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut opposed = Vec::new();
        for line in lines(ANTONYMS) {
            if let Some((a, b)) = line.split_once('\t') {
                let (a, b) = (stemmer.stem(a).into_owned(), stemmer.stem(b).into_owned());
                if a != b {
                    opposed.push((a, b));
                }
            }
        }
        let mut grouped: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (id, line) in (0u32..).zip(lines(SYNONYMS)) {
            for word in line.split_whitespace() {
                let ids = grouped.entry(stemmer.stem(word).into_owned()).or_default();
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
            }
        }
        for (a, b) in &opposed {
            grouped.entry(a.clone()).or_default();
            grouped.entry(b.clone()).or_default();
        }
        let mut text = String::new();
        let mut stems = Vec::with_capacity(grouped.len());
        let mut groups = Vec::new();
        for (stem, ids) in &grouped {
            let (start, first) = (index(text.len()), index(groups.len()));
            text.push_str(stem);
            groups.extend(ids);
            stems.push(Entry {
                text: start..index(text.len()),
                groups: first..index(groups.len()),
            });
        }
        text.shrink_to_fit();
        groups.shrink_to_fit();
        let mut irregular = HashMap::new();
        for line in lines(INFLECTIONS) {
            if let Some((form, bases)) = line.split_once('\t') {
                irregular.insert(form, bases.split(' ').collect());
            }
        }
        let mut polarity: Vec<(String, bool)> = lines(POLARITY)
            .filter_map(|line| {
                let (word, sign) = line.split_once('\t')?;
                Some((stemmer.stem(word).into_owned(), sign == "+"))
            })
            .collect();
        polarity.sort_unstable();
        polarity.dedup();
        let mixed: Vec<String> = polarity
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| w[0].0.clone())
            .collect();
        polarity.retain(|(stem, _)| mixed.binary_search(stem).is_err());
        polarity.shrink_to_fit();
        let mut lexicon = Lexicon {
            stemmer,
            text,
            stems,
            groups,
            antonyms: Vec::new(),
            irregular,
            polarity,
        };
        let mut antonyms: Vec<(u32, u32)> = opposed
            .iter()
            .filter_map(|(a, b)| Some((lexicon.find(a)?, lexicon.find(b)?)))
            .flat_map(|(a, b)| [(a, b), (b, a)])
            .collect();
        antonyms.sort_unstable();
        antonyms.dedup();
        lexicon.antonyms = antonyms;
        lexicon
    }

    /// The index of `stem` in [`Lexicon::stems`], when the lexicon knows it.
    fn find(&self, stem: &str) -> Option<u32> {
        self.stems
            .binary_search_by(|e| self.text[e.text.start as usize..e.text.end as usize].cmp(stem))
            .ok()
            .map(index)
    }

    /// The synonym groups `stem` is in (none when the lexicon knows it only
    /// as an antonym, or not at all).
    fn groups(&self, stem: &str) -> &[u32] {
        self.find(stem).map_or(&[], |i| {
            let range = &self.stems[i as usize].groups;
            &self.groups[range.start as usize..range.end as usize]
        })
    }

    pub fn stem(&self, word: &str) -> String {
        self.stemmer.stem(word).into_owned()
    }

    /// The stems a (lowercase) word stands for: its own, its base forms'
    /// when it is irregular, and a comparative's or superlative's base
    /// ("cheaper", "biggest", "easier"), which the stemmer leaves alone.
    pub fn stems(&self, word: &str) -> Vec<String> {
        let mut stems = vec![self.stem(word)];
        let mut add = |stem: String| {
            if !stems.contains(&stem) {
                stems.push(stem);
            }
        };
        for base in self.irregular.get(word).into_iter().flatten() {
            add(self.stem(base));
        }
        for (suffix, replacement) in [
            ("iest", "y"),
            ("ier", "y"),
            ("est", ""),
            ("er", ""),
            ("est", "e"),
            ("er", "e"),
        ] {
            let Some(root) = word.strip_suffix(suffix).filter(|r| r.len() >= 2) else {
                continue;
            };
            let base = format!("{root}{replacement}");
            let mut bases = vec![base.clone()];
            // "bigger" → "big": a doubled final consonant.
            let bytes = base.as_bytes();
            if replacement.is_empty()
                && bytes.len() >= 3
                && bytes[bytes.len() - 1] == bytes[bytes.len() - 2]
            {
                bases.push(base[..base.len() - 1].to_string());
            }
            for base in bases {
                let stem = self.stem(&base);
                if self.find(&stem).is_some() {
                    add(stem);
                }
            }
        }
        stems
    }

    /// A stem's polarity: `Some(true)` for a good word, `Some(false)` for
    /// a bad one, `None` for a neutral or unknown one.
    pub fn polarity(&self, stem: &str) -> Option<bool> {
        self.polarity
            .binary_search_by(|(s, _)| s.as_str().cmp(stem))
            .ok()
            .map(|i| self.polarity[i].1)
    }

    /// Whether two stems are antonyms in WordNet.
    pub fn opposed(&self, a: &str, b: &str) -> bool {
        match (self.find(a), self.find(b)) {
            (Some(a), Some(b)) => self.antonyms.binary_search(&(a, b)).is_ok(),
            _ => false,
        }
    }

    /// Whether two stems share a WordNet synonym group.
    pub fn synonymous(&self, a: &str, b: &str) -> bool {
        let (x, y) = (self.groups(a), self.groups(b));
        x.iter().any(|id| y.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordnet_knows_the_pairs_a_cache_must_tell_apart() {
        let lexicon = Lexicon::get();
        let opposed = |a: &str, b: &str| {
            lexicon
                .stems(a)
                .iter()
                .any(|x| lexicon.stems(b).iter().any(|y| lexicon.opposed(x, y)))
        };
        for (a, b) in [
            ("public", "private"),
            ("include", "exclude"),
            ("raised", "lowered"),
            ("ascending", "descending"),
            ("cheaper", "expensive"),
            ("hottest", "coldest"),
            ("bought", "sold"),
        ] {
            assert!(opposed(a, b), "{a} / {b}");
        }
        assert!(!opposed("reset", "restore"));
        let synonymous = |a: &str, b: &str| lexicon.synonymous(&lexicon.stem(a), &lexicon.stem(b));
        assert!(synonymous("luggage", "baggage"));
        assert!(synonymous("car", "automobile"));
        assert!(!synonymous("rice", "quinoa"));
        // Both ways round; a word WordNet lacks is nobody's synonym or
        // opposite, not even its own.
        let (public, private) = (lexicon.stem("public"), lexicon.stem("private"));
        assert!(lexicon.opposed(&public, &private) && lexicon.opposed(&private, &public));
        assert!(!lexicon.synonymous("qwzx", "qwzx"));
        assert!(!lexicon.opposed("qwzx", "public"));
    }
}
