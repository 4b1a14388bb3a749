//! Guards against the classic false hits of a semantic cache: two questions
//! whose embeddings are close but whose answers differ. A similarity
//! threshold alone cannot tell "turn the alarm on" from "turn the alarm
//! off", or 2021 from 2022; these checks can.

use std::collections::BTreeMap;

/// Why a close match was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The questions carry different numbers.
    Numbers,
    /// One is negated and the other is not.
    Negation,
    /// They differ by opposite words (on/off, before/after, ...).
    Opposites,
    /// They name different things (a proper noun, an identifier).
    Entity,
    /// The same words in another order ("USD to EUR" / "EUR to USD").
    Direction,
    /// A different output form: format, length or language.
    Form,
}

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot",
    "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt",
    "shouldnt", "couldnt", "hasnt", "havent", "hadnt", "mustnt",
];

const OPPOSITES: &[(&str, &str)] = &[
    ("on", "off"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("start", "stop"),
    ("open", "close"),
    ("increase", "decrease"),
    ("add", "remove"),
    ("before", "after"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("true", "false"),
    ("yes", "no"),
    ("up", "down"),
    ("buy", "sell"),
    ("import", "export"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("upload", "download"),
    ("lock", "unlock"),
    ("allow", "deny"),
    ("accept", "reject"),
    ("positive", "negative"),
    ("more", "less"),
    ("short", "long"),
    ("larger", "smaller"),
    ("highest", "lowest"),
    ("best", "worst"),
    ("first", "last"),
    ("in", "out"),
    ("input", "output"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
    ("send", "receive"),
    ("sent", "received"),
    ("credit", "debit"),
    ("deposit", "withdraw"),
];

/// Words that name the form of the answer: two questions asking for
/// different ones (JSON or a table, a haiku or a limerick, Python or Rust,
/// French or Spanish, short or detailed) want different answers.
const FORMS: &[&[&str]] = &[
    &[
        "json", "yaml", "xml", "csv", "table", "markdown", "html", "bullet", "bullets", "haiku",
        "limerick", "sonnet", "poem", "essay", "tweet", "email", "story", "song", "joke",
    ],
    &[
        "brief",
        "briefly",
        "concise",
        "detailed",
        "detail",
        "sentence",
        "paragraph",
        "paragraphs",
        "summary",
        "eli5",
    ],
    &[
        "english",
        "french",
        "spanish",
        "german",
        "italian",
        "portuguese",
        "dutch",
        "chinese",
        "japanese",
        "korean",
        "russian",
        "arabic",
        "hindi",
    ],
    &[
        "python",
        "rust",
        "golang",
        "java",
        "javascript",
        "typescript",
        "c++",
        "c#",
        "ruby",
        "php",
        "swift",
        "kotlin",
        "sql",
        "bash",
        "haskell",
        "scala",
    ],
];

/// Words too common to tell two questions apart.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i",
    "you", "we", "it", "my", "your", "me", "to", "of", "for", "and", "or", "on", "in", "at", "by",
    "with", "what", "how", "why", "when", "where", "which", "who", "can", "could", "would",
    "should", "will", "please", "this", "that", "there", "from", "as", "so", "if", "about", "into",
    "any", "some", "get", "i'm", "its", "it's",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == ','))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == ',' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn numbers(text: &str) -> Vec<String> {
    let mut found: Vec<String> = words(text)
        .into_iter()
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .map(|w| w.replace(',', ""))
        .collect();
    found.sort();
    found
}

fn is_negated(lower: &[String]) -> bool {
    lower.iter().any(|w| {
        let bare = w.replace('\'', "");
        NEGATIONS.contains(&bare.as_str())
            || bare.ends_with("nt") && NEGATIONS.contains(&bare.as_str())
    })
}

fn counts(words: &[String]) -> BTreeMap<&str, i32> {
    let mut map = BTreeMap::new();
    for w in words {
        *map.entry(w.as_str()).or_insert(0) += 1;
    }
    map
}

/// Proper nouns and identifiers: capitalized words not opening the text,
/// all-caps words, and words mixing letters with digits or dots.
fn entities(text: &str) -> Vec<String> {
    let mut found: Vec<String> = words(text)
        .into_iter()
        .enumerate()
        .filter(|(i, w)| {
            let mut chars = w.chars();
            let capitalized = chars.next().is_some_and(char::is_uppercase) && *i > 0;
            let all_caps = w.len() > 1 && w.chars().all(|c| c.is_uppercase() || c.is_ascii_digit());
            capitalized || all_caps
        })
        .map(|(_, w)| w.to_lowercase())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Whether `cached` may answer `asked`; `None` when no guard objects.
pub fn check(asked: &str, cached: &str) -> Option<Refusal> {
    if numbers(asked) != numbers(cached) {
        return Some(Refusal::Numbers);
    }
    let a: Vec<String> = words(asked).iter().map(|w| w.to_lowercase()).collect();
    let b: Vec<String> = words(cached).iter().map(|w| w.to_lowercase()).collect();
    if is_negated(&a) != is_negated(&b) {
        return Some(Refusal::Negation);
    }
    let (ca, cb) = (counts(&a), counts(&b));
    let only_a: Vec<&str> = ca
        .keys()
        .filter(|w| !cb.contains_key(*w))
        .copied()
        .collect();
    let only_b: Vec<&str> = cb
        .keys()
        .filter(|w| !ca.contains_key(*w))
        .copied()
        .collect();
    for (x, y) in OPPOSITES {
        if (only_a.contains(x) && only_b.contains(y)) || (only_a.contains(y) && only_b.contains(x))
        {
            return Some(Refusal::Opposites);
        }
    }
    for forms in FORMS {
        let named = |words: &BTreeMap<&str, i32>| -> Vec<&str> {
            forms
                .iter()
                .copied()
                .filter(|f| words.contains_key(f))
                .collect()
        };
        if named(&ca) != named(&cb) {
            return Some(Refusal::Form);
        }
    }
    // A name swapped for another (France for Spain); a name present on one
    // side only is usually rewording, and is let through.
    let (ea, eb) = (entities(asked), entities(cached));
    if ea.iter().any(|e| !eb.contains(e)) && eb.iter().any(|e| !ea.contains(e)) {
        return Some(Refusal::Entity);
    }
    // Same content words, different order: a direction or a role swapped.
    let content = |words: &[String]| -> Vec<String> {
        words
            .iter()
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .cloned()
            .collect()
    };
    let (sa, sb) = (content(&a), content(&b));
    if sa != sb && counts(&sa) == counts(&sb) {
        return Some(Refusal::Direction);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            (
                "What is the x402 protocol?",
                "Can you explain the x402 protocol?",
            ),
            ("How do I reset my password?", "how can i reset my password"),
            (
                "What's the capital of France?",
                "Tell me the capital of France",
            ),
        ] {
            assert_eq!(check(a, b), None, "{a} / {b}");
        }
    }

    #[test]
    fn classic_false_hits_are_refused() {
        assert_eq!(
            check("Turn the alarm on", "Turn the alarm off"),
            Some(Refusal::Opposites)
        );
        assert_eq!(
            check("Sales figures for 2021", "Sales figures for 2022"),
            Some(Refusal::Numbers)
        );
        assert_eq!(
            check("Is Python slow?", "Is Python not slow?"),
            Some(Refusal::Negation)
        );
        assert_eq!(
            check("Why can't I log in?", "Why can I log in?"),
            Some(Refusal::Negation)
        );
        assert_eq!(
            check(
                "What is the capital of France?",
                "What is the capital of Spain?"
            ),
            Some(Refusal::Entity)
        );
        assert_eq!(
            check("Convert 5 USD to EUR", "Convert 5 EUR to USD"),
            Some(Refusal::Direction)
        );
        assert_eq!(
            check("How do I enable 2FA?", "How do I disable 2FA?"),
            Some(Refusal::Opposites)
        );
        assert_eq!(
            check("List the planets as JSON", "List the planets as a table"),
            Some(Refusal::Form)
        );
        assert_eq!(
            check("Explain recursion briefly", "Explain recursion in detail"),
            Some(Refusal::Form)
        );
        assert_eq!(
            check("Write the function in Python", "Write the function in Rust"),
            Some(Refusal::Form)
        );
    }

    #[test]
    fn rewording_is_not_refused() {
        assert_eq!(
            check(
                "It supports more than 50k models.",
                "It supports over 50k models."
            ),
            None
        );
        assert_eq!(
            check(
                "Amazon SageMaker trains Transformer models.",
                "Amazon SageMaker can train Transformer models with Hugging Face."
            ),
            None
        );
    }
}
