//! The cache's polarity list (`src/cache/lexicon/polarity.tsv`) is derived
//! from the VADER sentiment lexicon (C.J. Hutto, MIT), as the PyPI wheel
//! `vaderSentiment==3.3.2` ships it: this test derives it again from that
//! file and fails if the committed list differs. `P402_WRITE_LEXICON=1`
//! writes it instead. `.ci/run` fetches the wheel once and unpacks its
//! lexicon into `target/vader/`.
//!
//! What is kept, and why: a word whose mean rating is at least 1.0 away
//! from neutral (VADER rates from -4 to +4; "help" 1.7, "worse" -2.1,
//! "stop" -1.2, "prevent" 0.1), made only of lowercase letters (the
//! lexicon also rates emoticons and slang spellings), three letters or
//! more. The guard compares the words two questions do not share: "What
//! helps heel pain?" and "What makes heel pain worse?" ask for opposite
//! answers, which no antonym list holds.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

const LEXICON: &str = "target/vader/vaderSentiment/vader_lexicon.txt";
const LEXICON_SHA256: &str = "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5";
const DERIVED: &str = "src/cache/lexicon/polarity.tsv";
const HEADER: &str =
    "# Word polarity from the VADER sentiment lexicon 3.3.2 (PyPI vaderSentiment, MIT,\n\
# (c) 2016 C.J. Hutto; VADER-LICENSE beside this file), derived by\n\
# tests/clients/polarity.rs: words rated at least 1.0 from neutral.\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The derived list: one `word TAB +` or `word TAB -` a line, sorted.
fn derive(lexicon: &str) -> String {
    let mut out = String::from(HEADER);
    for line in lexicon.lines() {
        let mut fields = line.split('\t');
        let (Some(word), Some(mean)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(mean) = mean.trim().parse::<f32>() else {
            continue;
        };
        if word.len() >= 3 && word.bytes().all(|b| b.is_ascii_lowercase()) && mean.abs() >= 1.0 {
            out.push_str(word);
            out.push_str(if mean > 0.0 { "\t+\n" } else { "\t-\n" });
        }
    }
    out
}

#[test]
fn the_polarity_list_is_vaders() {
    let path = root().join(LEXICON);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run `bash .ci/run` once",
            path.display()
        )
    });
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        LEXICON_SHA256,
        "{} is not VADER 3.3.2's",
        path.display()
    );
    let derived = derive(&String::from_utf8(bytes).expect("UTF-8"));
    let target = root().join(DERIVED);
    if std::env::var_os("P402_WRITE_LEXICON").is_some() {
        std::fs::write(&target, &derived).expect("write the polarity list");
    }
    let committed = std::fs::read_to_string(&target).expect("the committed polarity list");
    assert!(
        committed == derived,
        "{DERIVED} differs from what VADER 3.3.2 gives (P402_WRITE_LEXICON=1 rewrites it)"
    );
    // The words the guard was built for, each on its side.
    for (word, sign) in [
        ("help", '+'),
        ("worse", '-'),
        ("improve", '+'),
        ("damage", '-'),
    ] {
        assert!(
            committed.lines().any(|l| l == format!("{word}\t{sign}")),
            "{word} {sign}"
        );
    }
}
