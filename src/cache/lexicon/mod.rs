//! What the guards know about English words, from a maintained source
//! rather than a hand list: Princeton WordNet 3.0's antonyms, synonym
//! groups and irregular forms (derived by `tests/clients/wordnet.rs`, which checks
//! the committed files against WordNet itself), and the Snowball English
//! stemmer, so that "raised" meets "lower" and "kilograms" meets
//! "kilogram".
//!
//! Words are compared by stem. The files are compiled in and read once, on
//! the first guarded lookup.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

const ANTONYMS: &str = include_str!("antonyms.tsv");
const SYNONYMS: &str = include_str!("synonyms.txt");
const INFLECTIONS: &str = include_str!("inflections.tsv");

pub struct Lexicon {
    stemmer: Stemmer,
    /// Opposed stems, both ways.
    antonyms: HashSet<(String, String)>,
    /// Stem → the synonym groups it is in.
    groups: HashMap<String, Vec<u32>>,
    /// Irregular form → its base forms ("bought" → "buy").
    irregular: HashMap<&'static str, Vec<&'static str>>,
    /// Every stem the lexicon knows.
    known: HashSet<String>,
}

static LEXICON: LazyLock<Lexicon> = LazyLock::new(Lexicon::load);

fn lines(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
}

impl Lexicon {
    pub fn get() -> &'static Lexicon {
        &LEXICON
    }

    fn load() -> Lexicon {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut antonyms = HashSet::new();
        for line in lines(ANTONYMS) {
            if let Some((a, b)) = line.split_once('\t') {
                let (a, b) = (stemmer.stem(a).into_owned(), stemmer.stem(b).into_owned());
                if a != b {
                    antonyms.insert((a.clone(), b.clone()));
                    antonyms.insert((b, a));
                }
            }
        }
        let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, line) in (0u32..).zip(lines(SYNONYMS)) {
            for word in line.split_whitespace() {
                let ids = groups.entry(stemmer.stem(word).into_owned()).or_default();
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
            }
        }
        let known = antonyms
            .iter()
            .map(|(a, _)| a.clone())
            .chain(groups.keys().cloned())
            .collect();
        let mut irregular = HashMap::new();
        for line in lines(INFLECTIONS) {
            if let Some((form, bases)) = line.split_once('\t') {
                irregular.insert(form, bases.split(' ').collect());
            }
        }
        Lexicon {
            stemmer,
            antonyms,
            groups,
            irregular,
            known,
        }
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
                if self.known.contains(&stem) {
                    add(stem);
                }
            }
        }
        stems
    }

    /// Whether two stems are antonyms in WordNet.
    pub fn opposed(&self, a: &str, b: &str) -> bool {
        self.antonyms.contains(&(a.to_string(), b.to_string()))
    }

    /// Whether two stems share a WordNet synonym group.
    pub fn synonymous(&self, a: &str, b: &str) -> bool {
        match (self.groups.get(a), self.groups.get(b)) {
            (Some(x), Some(y)) => x.iter().any(|id| y.contains(id)),
            _ => false,
        }
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
    }
}
