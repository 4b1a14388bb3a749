//! Guards against the false hits of a semantic cache: two questions whose
//! embeddings are close but whose answers differ. A similarity threshold
//! alone cannot tell "turn the alarm on" from "turn the alarm off", 2021
//! from 2022, "cook rice" from "cook quinoa", or "suggest 5 names" from
//! "suggest 5 names, each a pun": on p402's hard dev set MiniLM's cosine
//! barely separates duplicates from such near misses (ROC-AUC about 0.5).
//! These checks do, with WordNet's antonyms and synonyms (`cache::lexicon`),
//! together with the pair verifier ([`crate::embed`]), a cross-encoder that
//! reads both questions at once: the index proposes every earlier question
//! at a low similarity; a guard that finds a fact differing (a number, a
//! negation, an opposite, a name, the question word) refuses outright; a
//! guard that only counts differing words defers to the verifier at a
//! higher confidence ([`verifier_bar`]); and nothing hits unless the
//! verifier vouches for it. The thresholds below were chosen on the `tune`
//! split of `benches/data/` and are reported on the `test` split in
//! BENCHMARKS.md.
//!

use std::collections::BTreeMap;

use super::lexicon::Lexicon;

/// Why a close match was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The questions carry different numbers, or the same kind of unit
    /// differs ("a 10-week-old puppy" / "a 10-month-old puppy").
    Numbers,
    /// The numbers differ, but one side writes a number in words ("£50" /
    /// "fifty pounds"): maybe the same number.
    SpelledNumbers,
    /// One is negated and the other is not.
    Negation,
    /// One is negated only by a verb that rewordings also use ("stop",
    /// "avoid": "How do I stop avocados browning?" / "How do I keep
    /// avocados from turning brown?"), and the other has no opposite of
    /// it ("start"): maybe the same question.
    VerbNegation,
    /// They differ by opposite words (on/off, public/private, raise/lower).
    Opposites,
    /// They name different things (a proper noun, an identifier).
    Entity,
    /// The same words in another order ("USD to EUR" / "EUR to USD").
    Direction,
    /// A different output form: format, length or language, asked for
    /// ("in French", "as a table") or named on both sides. A form word on
    /// one side only and not asked for is more often the subject ("Is
    /// tipping expected at Italian restaurants?" / "Are you expected to tip
    /// in restaurants in Italy?"), and is counted as any other word.
    Form,
    /// A different question about the same thing (who / when / why / how).
    QuestionWord,
    /// Another way of asking for an amount or a time ("how long" / "how
    /// many days", "when" / "how soon"): maybe the same question.
    QuestionSpan,
    /// One asks what the other asks and more: an added constraint
    /// ("..., each one a pun") or a narrower subject.
    Added,
    /// A word or two swapped for others that are not synonyms: another
    /// subject ("rice" / "quinoa"), another scope.
    Swapped,
    /// Worded so differently that only a very close embedding may vouch
    /// for it.
    Reworded,
}

/// Only candidates this close to the best one are considered: when the
/// closest earlier question is refused, a much less similar one that the
/// guards happen to let through is more often a wrong answer than a right
/// one (measured on the shared-store benchmarks: GPTCache's wrong hits
/// fell from 116 to 67 at a 0.50 floor).
pub const RUNNER_UP_MARGIN: f32 = 0.02;

/// How firmly a refusal stands against the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmness {
    /// A fact about the text (another number, a negation, an opposite, a
    /// name, another question word): the verifier may overrule it only at
    /// the bar chosen for that guard ([`Tuning::facts`]), since a guard
    /// that reads words misfires on rewordings ("Postgres" / "PostgreSQL",
    /// "keep basil fresh" / "so it doesn't wilt", "Is it safe to eat raw
    /// cookie dough?" / "Can eating it make me ill?").
    Fact,
    /// A fact guard in a form that rewordings also take (a number spelled
    /// out, "how long" for "how many days"): the verifier may overrule it
    /// at [`Tuning::overrule_fact`].
    DoubtfulFact,
    /// A word or two swapped for others that are not synonyms: only a
    /// count of the words that differ, but one that near misses share
    /// ("knit" / "crochet", "benefits" / "drawbacks"); the verifier,
    /// reading the words in context, may overrule it at
    /// [`Tuning::overrule`].
    WordCount,
    /// Words one side adds, or a wording far apart: what a rewording does
    /// ("Do you have parking?" / "Is there somewhere to park?") as well as
    /// an added constraint, so the verifier may overrule it at a bar of
    /// its own, [`Tuning::overrule_added`].
    Wording,
}

impl Refusal {
    /// How firmly this refusal stands against the verifier.
    pub fn firmness(self) -> Firmness {
        match self {
            Refusal::Swapped => Firmness::WordCount,
            Refusal::Added | Refusal::Reworded => Firmness::Wording,
            Refusal::SpelledNumbers | Refusal::QuestionSpan | Refusal::VerbNegation => {
                Firmness::DoubtfulFact
            }
            Refusal::Numbers
            | Refusal::Negation
            | Refusal::Opposites
            | Refusal::Entity
            | Refusal::Direction
            | Refusal::Form
            | Refusal::QuestionWord => Firmness::Fact,
        }
    }
}

/// The verifier's confidence needed to overrule each fact guard
/// ([`Firmness::Fact`]); above 1, never.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactBars {
    /// Other numbers ([`Refusal::Numbers`]).
    pub numbers: f32,
    /// One side negated ([`Refusal::Negation`]).
    pub negation: f32,
    /// Opposite words ([`Refusal::Opposites`]).
    pub opposites: f32,
    /// Other names ([`Refusal::Entity`]).
    pub entity: f32,
    /// The same words in another order ([`Refusal::Direction`]).
    pub direction: f32,
    /// Another form of answer ([`Refusal::Form`]).
    pub form: f32,
    /// Another question word ([`Refusal::QuestionWord`]).
    pub question_word: f32,
}

impl FactBars {
    /// No fact guard overruled.
    pub const NEVER: FactBars = FactBars {
        numbers: NEVER,
        negation: NEVER,
        opposites: NEVER,
        entity: NEVER,
        direction: NEVER,
        form: NEVER,
        question_word: NEVER,
    };
}

/// A bar no confidence reaches.
const NEVER: f32 = 1.01;

/// The guards' and the verifier's thresholds, chosen on the `tune` split
/// of `benches/data/` (`cargo bench --bench cache_quality` searches them
/// and prints the best; [`Tuning::CHOSEN`] is what it found).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// From this similarity on, a question that adds or swaps a word or
    /// two is taken as a rewording ("How do I build an emergency fund?" /
    /// "What's the best way to build up an emergency fund?").
    pub close_enough: f32,
    /// Pairs differing in more content words than `max_swapped` need at
    /// least this similarity.
    pub reworded: f32,
    /// The most content words two questions may differ in (added, removed
    /// or swapped) before they must be `reworded`-similar.
    pub max_swapped: usize,
    /// The verifier's confidence a candidate needs when no guard objects.
    pub verified: f32,
    /// The confidence it needs when no guard objects and the two questions
    /// have the same content words ([`same_words`]: in the same order or
    /// with a phrase moved to the front, "When is the next open day at the
    /// college?" / "At the college, when is the next open day?"; framed
    /// otherwise, "How do I" / "How can I"). Such a pair is safer than a
    /// rewording, and the verifier, which reads word order, is less sure
    /// of it than of one.
    pub same_words: f32,
    /// The confidence it needs to overrule a guard that counted words
    /// swapped ([`Firmness::WordCount`]); above 1, never.
    pub overrule: f32,
    /// The confidence it needs to overrule a guard that counted words
    /// added or a wording far apart ([`Firmness::Wording`]); above 1,
    /// never.
    pub overrule_added: f32,
    /// The confidence it needs to overrule a fact guard in a form that
    /// rewordings also take ([`Firmness::DoubtfulFact`]); above 1, never.
    pub overrule_fact: f32,
    /// The confidence it needs to overrule each fact guard.
    pub facts: FactBars,
}

impl Tuning {
    /// Chosen again on 2026-12-06 for the embedder with integer arithmetic
    /// (`src/embed/integer.rs`): at 0.90 its slightly moved cosines cost two
    /// of the tune split's paraphrases, and the search picked 0.86. The bar
    /// for words added (`overrule_added`) was split from `overrule` the
    /// same day: on the tune split the verifier gave the near misses that
    /// guard refused at most 0.15 and the paraphrases 0.80 to 0.97, while
    /// near misses with a word swapped ("knit" / "crochet") reach 0.95. The
    /// search's 0.70 was measured once on the test split and let false
    /// hits past the targets (2.6%, negation 6.7%; BENCHMARKS.md, issue 35
    /// fifth part): the tune split's 13 such near misses could not place
    /// the bar.
    ///
    /// The seventh part labelled them: 89 tune rows written for it, near
    /// misses worded apart ("Which medicines can I take with alcohol?" /
    /// "Which tablets are dangerous to mix with a drink?") and rewordings
    /// with words added. On them the verifier of that day let 2.8% of near
    /// misses through at these bars' old values. It was replaced by its
    /// second stage (`benches/verifier/distill.py`), and the search on the
    /// enlarged split chose the bars below: 0.70 when no guard objects,
    /// 0.95 and 0.90 to overrule a guard that counted words (the new
    /// verifier gives the near misses refused for words added up to 0.82,
    /// those for words swapped up to 0.93).
    ///
    /// At 0.70 the bar lost near repeats whose words had only moved ("At
    /// the college, when is the next open day?", 0.586), so those got a bar
    /// of their own, `same_words`: the search chose 0.50 (one more tune
    /// paraphrase, no near miss; on the test split 0.580 recall against
    /// 0.565, false hits unchanged at 1.6%). A review then narrowed what
    /// counts as the same words (the same order, or a phrase moved to the
    /// front, and the same persons): one test paraphrase fewer, and no way
    /// for "milk chocolate" / "chocolate milk" to pass at this bar.
    ///
    /// The ninth part (2026-12-07) retrained the verifier with 601 written
    /// pairs of long-tail questions, after a fresh test split showed it
    /// weak on questions unlike its training (recall 0.35 there), and
    /// added the polarity guard (`Refusal::Opposites` for "helps" /
    /// "makes worse"). The search ran on a tune split grown to 681
    /// paraphrases and 619 near misses (the older tune rows, the written
    /// pairs' tune third, and the first fresh split, demoted to tune once
    /// read twice), and chose the bars below: 0.80 when no guard objects
    /// (the new verifier is surer of everything, near misses included);
    /// 0.95 to overrule a count of swapped words, 0.98 one of added
    /// words; and a fact guard in a form rewordings take ("how long" /
    /// "how many days", "£50" / "fifty pounds") may now be overruled at
    /// 0.95, which the issue asked for once a test split showed it safe.
    ///
    /// The tenth part retrained the verifier again with 1,019 more written
    /// pairs, and let it overrule every fact guard at a bar of its own
    /// ([`FactBars`]): on the tune split the fact guards had refused 155
    /// of the 283 paraphrases missed, most of them with the verifier sure
    /// ("Postgres" / "PostgreSQL", "keep basil fresh" / "so it doesn't
    /// wilt"), while the near misses they refused scored at most 0.39 for
    /// a negation and 0.68 for a number. The search, now taking turns
    /// with the search of those bars from none overruled, chose on a tune
    /// split of 1,217 paraphrases and 1,067 near misses: 0.50 when no
    /// guard objects, any confidence for the same words, 0.95 to overrule
    /// swapped words, never words added, 0.98 a doubtful fact, and for the
    /// facts 0.95 (numbers, opposites) to 0.99 (direction, question word).
    ///
    /// The eleventh part retrained the verifier with 736 written pairs,
    /// 210 of them a whole beside one of its parts ("how does coffee
    /// roasting work" / "what happens at first crack") and 412 rewordings
    /// of either side, after the third fresh split's false hits were
    /// mostly of that kind; and, because every fresh split had read more
    /// false hits than tune, the search now keeps to half the issue's
    /// targets on tune (1% overall, 2.5% per kind). On a tune split of 1,910 paraphrases and
    /// 1,616 near misses it chose: 0.50 when no guard objects, any
    /// confidence for the same words, 0.98 to overrule swapped words and
    /// a doubtful fact, 0.99 added words, and for the facts 0.95
    /// (negation, question word) to 0.99 (names, form). A formula with
    /// another sign now counts as another number ("x^2 - 5x + 6" / "x^2 -
    /// 5x - 6", a false hit on tune through the same words).
    pub const CHOSEN: Tuning = Tuning {
        close_enough: 0.90,
        reworded: 0.90,
        max_swapped: 3,
        verified: 0.50,
        same_words: 0.0,
        overrule: 0.98,
        overrule_fact: 0.98,
        overrule_added: 0.99,
        facts: FactBars {
            numbers: 0.97,
            negation: 0.95,
            opposites: 0.97,
            entity: 0.99,
            direction: 0.97,
            form: 0.99,
            question_word: 0.95,
        },
    };

    /// The verifier's confidence needed to overrule `refusal`; above 1,
    /// never.
    pub fn bar(self, refusal: Refusal) -> f32 {
        match refusal {
            Refusal::Swapped => self.overrule,
            Refusal::Added | Refusal::Reworded => self.overrule_added,
            Refusal::SpelledNumbers | Refusal::QuestionSpan | Refusal::VerbNegation => {
                self.overrule_fact
            }
            Refusal::Opposites => self.facts.opposites,
            Refusal::Numbers => self.facts.numbers,
            Refusal::Negation => self.facts.negation,
            Refusal::Entity => self.facts.entity,
            Refusal::Direction => self.facts.direction,
            Refusal::Form => self.facts.form,
            Refusal::QuestionWord => self.facts.question_word,
        }
    }
}

/// The negations that are verbs: a question asked with one of them is
/// often asked, just as well, with its positive ("stop" / "keep from",
/// "avoid" / "prevent").
const VERB_NEGATIONS: &[&str] = &["stop", "quit", "cease", "avoid"];

const NEGATIONS: &[&str] = &[
    "stop",
    "quit",
    "cease",
    "avoid",
    "prohibited",
    "forbidden",
    "banned",
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "without",
    "cannot",
    "cant",
    "dont",
    "doesnt",
    "didnt",
    "isnt",
    "arent",
    "wasnt",
    "werent",
    "wont",
    "wouldnt",
    "shouldnt",
    "couldnt",
    "hasnt",
    "havent",
    "hadnt",
    "mustnt",
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
    ("over", "under"),
    ("above", "below"),
    ("within", "after"),
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

/// Other names of a form in [`FORMS`]: a "shell script" is written in
/// Bash, "JS" is JavaScript.
const FORM_ALIASES: &[(&str, &str)] = &[
    ("shell", "bash"),
    ("sh", "bash"),
    ("js", "javascript"),
    ("ts", "typescript"),
    ("py", "python"),
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

/// The signs that join numbers and variables into a formula.
const OPERATORS: &[char] = &['+', '-', '*', '/', '=', '<', '>', '^', '×', '÷', '−'];

/// The formulas in a text, lowercased and spaces taken out: "Solve x^2 -
/// 5x + 6 = 0" holds `x^2-5x+6=0`. Words split numbers apart and drop
/// the signs between them, so without this "x^2 - 5x + 6" and "x^2 - 5x -
/// 6" have the same numbers and words. A formula is a run of pieces,
/// between spaces, joined where a piece ends or starts with a sign,
/// holding a digit and a sign. One piece whose only signs are hyphens or
/// slashes is a word or a date ("10-week-old", "2023/24"), not a formula.
fn formulas(text: &str) -> Vec<String> {
    let mut runs: Vec<(String, bool)> = Vec::new();
    let mut joined = false;
    for piece in text.split_whitespace() {
        let piece = piece
            .trim_end_matches(['.', ',', '?', '!', ':', ';'])
            .to_lowercase();
        let starts = piece.starts_with(OPERATORS);
        let ends = piece.ends_with(OPERATORS);
        match runs.last_mut() {
            Some((run, several)) if joined || starts => {
                run.push_str(&piece);
                *several = true;
            }
            _ => runs.push((piece, false)),
        }
        joined = ends;
    }
    let mut found: Vec<String> = runs
        .into_iter()
        .filter(|(run, several)| {
            run.chars().any(|c| c.is_ascii_digit())
                && (*several || run.contains(|c| OPERATORS.contains(&c) && c != '-' && c != '/'))
        })
        .map(|(run, _)| run)
        .collect();
    found.sort();
    found
}

/// Whether both texts hold formulas and they are not the same ones: a
/// sign changed, a term moved to the other side.
fn formulas_differ(asked: &str, cached: &str) -> bool {
    let (a, b) = (formulas(asked), formulas(cached));
    !a.is_empty() && !b.is_empty() && a != b
}

fn is_negated(lower: &[String]) -> bool {
    lower.iter().any(|w| {
        let bare = w.replace('\'', "");
        NEGATIONS.contains(&bare.as_str())
            || bare.ends_with("nt") && NEGATIONS.contains(&bare.as_str())
    })
}

/// Whether every negation in `negated` is a verb ([`VERB_NEGATIONS`]) and
/// `other` says none of those verbs' opposites ("stop" / "start").
fn negated_by_verb_alone(negated: &[String], other: &[String]) -> bool {
    let negations: Vec<String> = negated
        .iter()
        .map(|w| w.replace('\'', ""))
        .filter(|w| NEGATIONS.contains(&w.as_str()))
        .collect();
    negations.iter().all(|n| {
        VERB_NEGATIONS.contains(&n.as_str())
            && !OPPOSITES.iter().any(|(x, y)| {
                (n == x && other.iter().any(|w| w == y)) || (n == y && other.iter().any(|w| w == x))
            })
    })
}

fn counts(words: &[String]) -> BTreeMap<&str, i32> {
    let mut map = BTreeMap::new();
    for w in words {
        *map.entry(w.as_str()).or_insert(0) += 1;
    }
    map
}

/// Proper nouns and identifiers: capitalized words not opening a sentence,
/// all-caps words, and words mixing letters with digits or dots.
fn entities(text: &str) -> Vec<String> {
    let mut found: Vec<String> = sentences(text)
        .enumerate()
        .flat_map(|(n, sentence)| {
            words(sentence)
                .into_iter()
                .enumerate()
                .map(move |(i, w)| (n, i, w))
        })
        .filter(|(n, i, w)| {
            let mut chars = w.chars();
            // The text's first word is capitalized for that; a later
            // sentence's first word is too, unless it is no common word
            // ("Quick question: France or Spain?").
            let opens = *i == 0 && (*n == 0 || is_common(&w.to_lowercase()));
            let capitalized = chars.next().is_some_and(char::is_uppercase) && !opens;
            let all_caps = w.len() > 1 && w.chars().all(|c| c.is_uppercase() || c.is_ascii_digit());
            capitalized || all_caps
        })
        .map(|(_, _, w)| {
            // "Australia's capital" names Australia.
            let w = w.to_lowercase().replace('\u{2019}', "'");
            w.strip_suffix("'s").map_or(w.clone(), str::to_string)
        })
        .filter(|w| !NOT_NAMES.contains(&w.as_str()))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Capitalized words that are not names: the first person ("Can I cook
/// ..."), and "OK".
const NOT_NAMES: &[&str] = &["i", "i'm", "i've", "i'd", "i'll", "ok"];

/// Words that open a sentence without naming anything ("Hi! How do I
/// ...", "Thanks. Is there ...").
const OPENERS: &[&str] = &[
    "hi", "hey", "hello", "thanks", "thank", "cheers", "sorry", "also", "now", "then", "yes", "no",
    "okay", "but", "ok",
];

/// A word a sentence may open with that names nothing.
fn is_common(word: &str) -> bool {
    among(
        word,
        &[
            STOPWORDS,
            FUNCTION_WORDS,
            FRAMING,
            SPECIFIC_QUESTIONS,
            OPENERS,
        ],
    )
}

/// Abbreviations whose full stop does not end a sentence ("Python vs.
/// Java", "Dr. Smith").
const ABBREVIATIONS: &[&str] = &[
    "vs", "e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "st", "no", "cf", "approx",
];

/// A text's sentences: split after ".", "!", "?", ":" or ";" where a space
/// follows, so that the word starting each is not taken for a name ("Hi!
/// How do I ..."), while "Node.js", "3.5" and "vs. Java" stay whole.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let abbreviation = |end: usize| {
        let before = text[..end].rsplit(char::is_whitespace).next().unwrap_or("");
        ABBREVIATIONS.contains(&before.to_lowercase().as_str())
    };
    let mut ends: Vec<usize> = text
        .char_indices()
        .zip(text.chars().skip(1))
        .filter(|((i, c), next)| {
            ".!?:;".contains(*c) && next.is_whitespace() && !(*c == '.' && abbreviation(*i))
        })
        .map(|((i, c), _)| i + c.len_utf8())
        .collect();
    ends.push(text.len());
    ends.into_iter().map(move |end| {
        let sentence = &text[start..end];
        start = end;
        sentence
    })
}

/// Endings that make a place's adjective or people ("Canada" /
/// "Canadian", "Japan" / "Japanese", "Israel" / "Israeli", "German" /
/// "Germany").
const DEMONYM_ENDINGS: &[&str] = &["n", "an", "ian", "ese", "i", "y"];

/// Whether two entities (lowercased) name the same thing: the same word,
/// or a name and its adjective ("Canada" / "Canadian"). The shorter must
/// have five letters or more, so that short names that differ by an
/// ending ("Iran" / "Iraq") stay apart.
fn same_name(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.chars().count() < 5 {
        return false;
    }
    let base = short.strip_suffix(['a', 'e', 'o', 'y']).unwrap_or(short);
    long.strip_prefix(base)
        .is_some_and(|ending| DEMONYM_ENDINGS.contains(&ending))
}

/// Words that frame a question rather than say what it asks ("explain",
/// "what's the best way to"): a paraphrase adds and drops them freely.
const FRAMING: &[&str] = &[
    "explain",
    "describe",
    "tell",
    "way",
    "ways",
    "usual",
    "usually",
    "best",
    "good",
    "mean",
    "means",
    "meaning",
    "purpose",
    "definition",
    "define",
    "steps",
    "step",
    "tips",
    "tip",
    "using",
    "use",
    "help",
    "show",
    "give",
    "know",
    "need",
    "want",
    "exactly",
    "actually",
    "really",
    "basically",
    "thing",
    "things",
    "something",
    "idea",
    "ideas",
    "happen",
    "happens",
    "simple",
    "simply",
    "easy",
    "easiest",
    "quick",
    "quickly",
    "common",
    "typical",
    "typically",
    "possible",
    "correct",
    "right",
    "proper",
    "properly",
    "recommend",
    "recommended",
    "suggest",
    "terms",
    "explanation",
];

/// Function words, besides [`STOPWORDS`], that carry no subject.
const FUNCTION_WORDS: &[&str] = &[
    "have", "has", "had", "shall", "may", "might", "must", "being", "but", "not",
];

/// Prefixes that make an opposite ("mount" / "unmount").
const NEGATING_PREFIXES: &[&str] = &["un", "dis", "de", "non", "in", "im", "ir", "il"];

/// Question words that ask for a different kind of answer. "What",
/// "which" and a bare "how" are left out: paraphrases trade them freely
/// ("How do I...?" / "What's the way to...?").
const SPECIFIC_QUESTIONS: &[&str] = &["who", "whom", "whose", "when", "where", "why"];
/// "How" followed by one of these asks for a quantity ("how long").
const HOW_MUCH: &[&str] = &[
    "long", "much", "many", "often", "far", "old", "big", "fast", "tall", "large", "heavy", "deep",
    "high", "soon",
];

/// The forms of one group of [`FORMS`] that a question names.
struct Named<'a> {
    /// Each form named, once, in order.
    named: Vec<&'a str>,
    /// Whether one of them is asked for as the form of the answer.
    asked: bool,
}

/// The forms of `group` that `words` name, and whether one is asked for:
/// after "in", "into", "as", "to" or "using", with at most an article or
/// a number between ("as a table", "in 3 bullets", "into JSON").
fn named_forms<'a>(group: &[&'a str], words: &[String]) -> Named<'a> {
    let form_of = |w: &str| -> Option<&'a str> {
        group.iter().copied().find(|f| {
            *f == w
                || FORM_ALIASES
                    .iter()
                    .any(|(alias, form)| form == f && *alias == w)
        })
    };
    let mut named: Vec<&str> = Vec::new();
    let mut asked = false;
    for (i, w) in words.iter().enumerate() {
        let Some(f) = form_of(w) else { continue };
        if !named.contains(&f) {
            named.push(f);
        }
        let before = &words[i.saturating_sub(3)..i];
        let marker = before
            .iter()
            .rposition(|w| matches!(w.as_str(), "in" | "into" | "as" | "to" | "using"));
        if let Some(m) = marker {
            let between = &before[m + 1..];
            asked |= between.iter().all(|w| {
                matches!(w.as_str(), "a" | "an" | "the" | "plain" | "simple")
                    || w.chars().all(|c| c.is_ascii_digit())
            });
        }
    }
    named.sort_unstable();
    Named { named, asked }
}

/// Units of one kind: two questions with the same numbers but different
/// units of a kind ("a 10-week-old puppy" / "a 10-month-old puppy", "a
/// 50-acre farm" / "a 50-hectare farm") ask different things. Each word
/// maps to its unit's name; plurals are folded before the lookup.
const UNITS: &[&[(&str, &str)]] = &[
    &[
        ("second", "second"),
        ("sec", "second"),
        ("minute", "minute"),
        ("hour", "hour"),
        ("hr", "hour"),
        ("day", "day"),
        ("week", "week"),
        ("fortnight", "fortnight"),
        ("month", "month"),
        ("year", "year"),
        ("yr", "year"),
        ("decade", "decade"),
        ("century", "century"),
        ("centurie", "century"),
    ],
    &[
        ("mm", "mm"),
        ("millimetre", "mm"),
        ("millimeter", "mm"),
        ("cm", "cm"),
        ("centimetre", "cm"),
        ("centimeter", "cm"),
        ("metre", "m"),
        ("meter", "m"),
        ("km", "km"),
        ("kilometre", "km"),
        ("kilometer", "km"),
        ("inche", "inch"),
        ("inch", "inch"),
        ("foot", "foot"),
        ("feet", "foot"),
        ("ft", "foot"),
        ("yard", "yard"),
        ("mile", "mile"),
    ],
    &[("acre", "acre"), ("hectare", "hectare")],
    &[
        ("mg", "mg"),
        ("milligram", "mg"),
        ("mcg", "mcg"),
        ("microgram", "mcg"),
        ("gram", "g"),
        ("kg", "kg"),
        ("kilo", "kg"),
        ("kilogram", "kg"),
        ("lb", "lb"),
        ("ounce", "oz"),
        ("oz", "oz"),
        ("ton", "ton"),
        ("tonne", "tonne"),
    ],
    &[
        ("ml", "ml"),
        ("millilitre", "ml"),
        ("milliliter", "ml"),
        ("litre", "l"),
        ("liter", "l"),
        ("gallon", "gallon"),
        ("pint", "pint"),
        ("quart", "quart"),
        ("cup", "cup"),
        ("tablespoon", "tbsp"),
        ("tbsp", "tbsp"),
        ("teaspoon", "tsp"),
        ("tsp", "tsp"),
    ],
    &[
        ("kb", "kb"),
        ("mb", "mb"),
        ("gb", "gb"),
        ("tb", "tb"),
        ("kib", "kib"),
        ("mib", "mib"),
        ("gib", "gib"),
        ("tib", "tib"),
        ("kbps", "kbps"),
        ("mbps", "mbps"),
        ("gbps", "gbps"),
        ("mbit", "mbit"),
        ("gbit", "gbit"),
        ("byte", "byte"),
        ("bit", "bit"),
    ],
    &[
        ("celsius", "celsius"),
        ("fahrenheit", "fahrenheit"),
        ("kelvin", "kelvin"),
    ],
    &[("mph", "mph"), ("kph", "kph"), ("knot", "knot")],
];

/// Whether both questions name units of one kind and not the same ones.
fn units_differ(a: &[String], b: &[String]) -> bool {
    let of = |words: &[String], group: &[(&str, &'static str)]| -> Vec<&'static str> {
        let mut found: Vec<&str> = words
            .iter()
            .filter_map(|w| {
                let single = w.strip_suffix('s').filter(|s| s.len() >= 2);
                group
                    .iter()
                    .find(|(word, _)| *word == w.as_str() || Some(*word) == single)
                    .map(|(_, unit)| *unit)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    };
    UNITS.iter().any(|group| {
        let (ua, ub) = (of(a, group), of(b, group));
        !ua.is_empty() && !ub.is_empty() && ua != ub
    })
}

/// The words of a text, lowercased, with contractions taken apart
/// ("didn't" → "did", "not"; "what's" → "what").
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in words(text) {
        let word = word.to_lowercase().replace('\u{2019}', "'");
        if let Some(stem) = word.strip_suffix("n't") {
            if !stem.is_empty() {
                out.push(stem.to_string());
            }
            out.push("not".to_string());
            continue;
        }
        let bare = ["'s", "'re", "'ve", "'ll", "'d", "'m"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(&word);
        out.push(bare.to_string());
    }
    out
}

/// Units of time: "how many days" and "how much time" ask what "how long"
/// asks.
const TIME_UNITS: &[&str] = &[
    "seconds", "minutes", "mins", "hours", "hrs", "days", "nights", "weeks", "months", "years",
    "time",
];

/// The specific question words of a text, and whether it has a bare "how".
fn question_words(tokens: &[String]) -> (Vec<String>, bool) {
    let mut specific = Vec::new();
    let mut bare_how = false;
    for (i, w) in tokens.iter().enumerate() {
        if SPECIFIC_QUESTIONS.contains(&w.as_str()) {
            specific.push(w.clone());
        } else if w == "how" {
            match tokens.get(i + 1).filter(|n| HOW_MUCH.contains(&n.as_str())) {
                Some(next) => {
                    let unit = tokens.get(i + 2).map(String::as_str);
                    let of_time = matches!(next.as_str(), "many" | "much")
                        && unit.is_some_and(|u| TIME_UNITS.contains(&u));
                    specific.push(if of_time {
                        "how long".to_string()
                    } else {
                        format!("how {next}")
                    });
                }
                None => bare_how = true,
            }
        }
    }
    specific.sort();
    specific.dedup();
    (specific, bare_how)
}

/// Number words, which a rewording may write for digits ("fifty pounds"
/// for "£50"). "One" is left out: it is more often a pronoun.
const NUMBER_WORDS: &[&str] = &[
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "hundred", "thousand", "million",
    "dozen", "half", "couple", "single", "double", "twice",
];

/// Question words that ask for an amount or a time, which rewordings
/// trade for each other ("how long" / "how many days" / "when").
fn is_amount_or_time(question: &str) -> bool {
    question == "when" || question.starts_with("how ")
}

/// Whether the two questions' specific question words differ only among
/// those asking for an amount or a time, each side having at least one.
fn asks_amount_or_time(a: &[String], b: &[String]) -> bool {
    let ((qa, _), (qb, _)) = (question_words(a), question_words(b));
    !qa.is_empty()
        && !qb.is_empty()
        && qa != qb
        && qa
            .iter()
            .chain(&qb)
            .filter(|q| !(qa.contains(q) && qb.contains(q)))
            .all(|q| is_amount_or_time(q))
}

fn changes_question(a: &[String], b: &[String]) -> bool {
    let ((qa, how_a), (qb, how_b)) = (question_words(a), question_words(b));
    (!qa.is_empty() && !qb.is_empty() && qa != qb)
        || (!qa.is_empty() && qb.is_empty() && how_b)
        || (!qb.is_empty() && qa.is_empty() && how_a)
}

/// Words that say what a question is about (not its framing).
fn is_content(word: &str) -> bool {
    !among(word, &[STOPWORDS, FUNCTION_WORDS, FRAMING]) && !word.chars().all(|c| c.is_ascii_digit())
}

/// Whether `word` is in any of `lists`.
fn among(word: &str, lists: &[&[&str]]) -> bool {
    lists.iter().any(|list| list.contains(&word))
}

/// Two stems written alike: a typo ("statment"), not another word.
fn misspelled(a: &str, b: &str) -> bool {
    let shortest = a.chars().count().min(b.chars().count());
    shortest >= 4
        && a.chars().next() == b.chars().next()
        && strsim::levenshtein(a, b) <= if shortest < 7 { 1 } else { 2 }
}

/// Words that relate what comes before them to what comes after: "USD
/// to EUR", "from Hargreaves to Vanguard", "pounds in a kilogram".
const RELATIONS: &[&str] = &[
    "to", "into", "from", "than", "vs", "versus", "per", "in", "of",
];

/// The stems of the content words before and after each relation word.
fn around_relations(
    lexicon: &Lexicon,
    words: &[String],
) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut sides = BTreeMap::new();
    let stems = |range: &[String]| -> Vec<String> {
        range
            .iter()
            .filter(|w| !among(w, &[STOPWORDS, FUNCTION_WORDS, FRAMING, RELATIONS]))
            .map(|w| lexicon.stem(w))
            .collect()
    };
    let marks: Vec<usize> = (0..words.len())
        .filter(|i| RELATIONS.contains(&words[*i].as_str()))
        .collect();
    for (n, &i) in marks.iter().enumerate() {
        let start = if n == 0 { 0 } else { marks[n - 1] + 1 };
        let end = marks.get(n + 1).copied().unwrap_or(words.len());
        sides
            .entry(words[i].clone())
            .or_insert_with(|| (stems(&words[start..i]), stems(&words[i + 1..end])));
    }
    sides
}

/// Two questions relating the same things the other way round: "convert
/// USD to EUR" / "EUR to USD", "Outlook to Google Calendar" / "Google
/// Calendar to Outlook", "Is a square a rectangle?" / "... a rectangle a
/// square?". Moving a phrase to the front ("On train tickets, is there a
/// discount for students?") is not a swap, nor is it when the only two
/// content words trade places because a phrase moved (`moved`: "What's the
/// check-in time?" / "What time can I check in?", where "in" moves with
/// "check"; a true swap of two words around a relation is never a
/// rotation of the words).
fn swaps_roles(lexicon: &Lexicon, a: &[String], b: &[String], moved: bool) -> bool {
    let (ra, rb) = (around_relations(lexicon, a), around_relations(lexicon, b));
    for (relation, (before_a, after_a)) in &ra {
        let Some((before_b, after_b)) = rb.get(relation) else {
            continue;
        };
        let crossed = |x: &[String], y: &[String], z: &[String]| {
            x.iter().any(|w| y.contains(w) && !z.contains(w))
        };
        if crossed(before_a, after_b, before_b) && crossed(after_a, before_b, after_b) {
            return true;
        }
    }
    // Two content words, swapped.
    let content = |words: &[String]| -> Vec<String> {
        words
            .iter()
            .filter(|w| is_content(w))
            .map(|w| lexicon.stem(w))
            .collect()
    };
    let (ca, cb) = (content(a), content(b));
    !moved && ca.len() == 2 && cb.len() == 2 && ca[0] == cb[1] && ca[1] == cb[0] && ca[0] != ca[1]
}

/// Whether any stem of one word is opposed to any of the other's.
fn opposed(lexicon: &Lexicon, a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| {
            lexicon.opposed(x, y)
                || NEGATING_PREFIXES.iter().any(|p| {
                    x.strip_prefix(p) == Some(y.as_str()) || y.strip_prefix(p) == Some(x.as_str())
                })
        })
    })
}

/// Which way `words` lean: `Some(true)` when every one with a polarity is
/// a good word (and there is one), `Some(false)` when every one is a bad
/// word, `None` when none has a polarity or they are mixed.
fn leaning(lexicon: &Lexicon, words: &[Vec<String>]) -> Option<bool> {
    let mut signs = words
        .iter()
        .filter_map(|w| w.iter().find_map(|s| lexicon.polarity(s)));
    let first = signs.next()?;
    signs.all(|good| good == first).then_some(first)
}

/// How two questions differ in what they are about: each side's content
/// words the other has no stem, synonym or spelling of, and how many
/// the first has that the second matches.
fn difference(lexicon: &Lexicon, a: &[Vec<String>], b: &[Vec<String>]) -> (usize, usize, usize) {
    let matches = |stems: &Vec<String>, other: &[Vec<String>]| {
        other.iter().flatten().any(|o| {
            stems
                .iter()
                .any(|s| s == o || lexicon.synonymous(s, o) || misspelled(s, o))
        })
    };
    let only_a = a.iter().filter(|s| !matches(s, b)).count();
    let only_b = b.iter().filter(|s| !matches(s, a)).count();
    (only_a, only_b, a.len() - only_a)
}

/// The stems of the words that carry a question's content, relations
/// ("to", "from", "than") included, in their order.
fn in_order(lexicon: &Lexicon, words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter(|w| {
            among(w, &[RELATIONS]) || !among(w, &[STOPWORDS, FUNCTION_WORDS, FRAMING, NEGATIONS])
        })
        .map(|w| lexicon.stem(w))
        .collect()
}

/// Whether the two questions have the same content words in the same
/// order, or with a phrase moved to the front ("At the college, when is
/// ...?"), and the same persons in the same order: what is left between
/// them is framing ("How do I" / "How can I"). Two neighbours traded
/// ("milk chocolate" / "chocolate milk") or persons swapped ("Can you
/// teach me" / "Can I teach you") are not the same words.
pub fn same_words(asked: &str, cached: &str) -> bool {
    let lexicon = Lexicon::get();
    let (a, b) = (tokens(asked), tokens(cached));
    let (qa, qb) = (in_order(lexicon, &a), in_order(lexicon, &b));
    let persons = |words: &[String]| -> Vec<String> {
        words
            .iter()
            .filter(|w| PERSONS.contains(&w.as_str()))
            .cloned()
            .collect()
    };
    !qa.is_empty() && (qa == qb || moved(&qa, &qb)) && persons(&a) == persons(&b)
}

/// Personal pronouns: who does what to whom.
const PERSONS: &[&str] = &[
    "i", "me", "my", "mine", "you", "your", "yours", "we", "us", "our", "he", "him", "his", "she",
    "her", "they", "them", "their",
];

/// Whether `b` is `a` with a phrase moved from the end to the front (a
/// rotation of its content words).
fn moved(a: &[String], b: &[String]) -> bool {
    a.len() > 2
        && a.len() == b.len()
        && (1..a.len()).any(|i| a[i..].iter().chain(&a[..i]).eq(b.iter()))
}

/// The confidence the verifier must give before `cached` answers `asked`,
/// given what the guards said of the pair and whether its two questions
/// have the same content words ([`same_words`]); `None`: refused whatever
/// it says.
pub fn verifier_bar(refusal: Option<Refusal>, same_words: bool, tuning: Tuning) -> Option<f32> {
    let bar = match refusal {
        None if same_words => tuning.same_words,
        None => tuning.verified,
        Some(refusal) => tuning.bar(refusal),
    };
    (bar <= 1.0).then_some(bar)
}

/// Of the guards that object to a pair, the one the verifier would find
/// hardest to overrule under `tuning` (the first of equals): a pair that
/// differs in a number and in a negation must clear both bars.
pub fn strictest(refusals: &[Refusal], tuning: Tuning) -> Option<Refusal> {
    refusals.iter().copied().fold(None, |best, r| match best {
        Some(b) if tuning.bar(b) >= tuning.bar(r) => Some(b),
        _ => Some(r),
    })
}

/// Reads the lexicon the guards use (WordNet's tables), so that the first
/// semantic lookup does not pay for it; called where the models are loaded,
/// which hands the memory its reading freed back to the system.
pub fn prepare() {
    Lexicon::get();
}

/// Whether `cached` may answer `asked`, proposed by the index at `cosine`
/// similarity; `None` when no guard objects.
pub fn check(asked: &str, cached: &str, cosine: f32) -> Option<Refusal> {
    check_tuned(asked, cached, cosine, Tuning::CHOSEN)
}

/// [`check`] with other thresholds, for the benchmark that chooses them.
pub fn check_tuned(asked: &str, cached: &str, cosine: f32, tuning: Tuning) -> Option<Refusal> {
    strictest(&refusals(asked, cached, cosine, tuning), tuning)
}

/// Every guard that objects to `cached` answering `asked`, in the order
/// they look: every fact guard, or else the counts of words. Only
/// `tuning`'s word counts and similarities are read (`close_enough`,
/// `reworded`, `max_swapped`), not its bars.
pub fn refusals(asked: &str, cached: &str, cosine: f32, tuning: Tuning) -> Vec<Refusal> {
    let mut found = Vec::new();
    let a = tokens(asked);
    let b = tokens(cached);
    if numbers(asked) != numbers(cached) {
        let spelled = |words: &[String]| words.iter().any(|w| NUMBER_WORDS.contains(&w.as_str()));
        found.push(if spelled(&a) || spelled(&b) {
            Refusal::SpelledNumbers
        } else {
            Refusal::Numbers
        });
    } else if units_differ(&a, &b) || formulas_differ(asked, cached) {
        found.push(Refusal::Numbers);
    }
    if is_negated(&a) != is_negated(&b) {
        let (negated, other) = if is_negated(&a) { (&a, &b) } else { (&b, &a) };
        found.push(if negated_by_verb_alone(negated, other) {
            Refusal::VerbNegation
        } else {
            Refusal::Negation
        });
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
    if OPPOSITES.iter().any(|(x, y)| {
        (only_a.contains(x) && only_b.contains(y)) || (only_a.contains(y) && only_b.contains(x))
    }) {
        found.push(Refusal::Opposites);
    }
    // A form asked for ("in French", "as a table", "into JSON") or named
    // on both sides and different.
    let differ_in_form = FORMS.iter().any(|forms| {
        let (fa, fb) = (named_forms(forms, &a), named_forms(forms, &b));
        let both = !fa.named.is_empty() && !fb.named.is_empty();
        fa.named != fb.named && (both || fa.asked || fb.asked)
    });
    if differ_in_form {
        found.push(Refusal::Form);
    }
    // A name swapped for another (France for Spain); a name present on one
    // side only is usually rewording, and is let through.
    let (ea, eb) = (entities(asked), entities(cached));
    let unnamed = |e: &String, other: &[String]| !other.iter().any(|o| same_name(e, o));
    if ea.iter().any(|e| unnamed(e, &eb)) && eb.iter().any(|e| unnamed(e, &ea)) {
        found.push(Refusal::Entity);
    }
    if changes_question(&a, &b) {
        found.push(if asks_amount_or_time(&a, &b) {
            Refusal::QuestionSpan
        } else {
            Refusal::QuestionWord
        });
    }
    let lexicon = Lexicon::get();
    let stems = |words: &[String]| -> Vec<Vec<String>> {
        words
            .iter()
            .filter(|w| !among(w, &[STOPWORDS, FUNCTION_WORDS, NEGATIONS]))
            .map(|w| lexicon.stems(w))
            .collect()
    };
    let (sa, sb) = (stems(&a), stems(&b));
    let flat = |s: &[Vec<String>]| -> Vec<String> { s.iter().map(|v| v[0].clone()).collect() };
    let (fa, fb) = (flat(&sa), flat(&sb));
    let unmatched = |x: &[Vec<String>], y: &[String]| -> Vec<Vec<String>> {
        x.iter()
            .filter(|s| !s.iter().any(|w| y.contains(w)))
            .cloned()
            .collect()
    };
    let (oa, ob) = (unmatched(&sa, &fb), unmatched(&sb, &fa));
    if oa.iter().any(|x| ob.iter().any(|y| opposed(lexicon, x, y))) {
        found.push(Refusal::Opposites);
    }
    // Words of opposite polarity where the two differ: "What helps heel
    // pain?" / "What makes heel pain worse?", "strengthen" / "aggravate",
    // "improve my credit score" / "damage my credit rating". They ask for
    // opposite answers, the verifier reads them as one question (0.92 to
    // 0.98), and no antonym list joins such words. Only when one side's
    // own words lean one way and the other's the other way.
    if let (Some(a_good), Some(b_good)) = (leaning(lexicon, &oa), leaning(lexicon, &ob)) {
        if a_good != b_good {
            found.push(Refusal::Opposites);
        }
    }
    // Same words, another order: a direction or a role swapped ("Is the
    // Earth closer to the Sun than Mars?" / "Is Mars closer to the Sun
    // than the Earth?"), unless a phrase was only moved to the front ("At
    // the hotel, is there...") or two neighbours traded places ("HTTP
    // status 402" / "HTTP 402 status"; two numbers trading places do
    // count: "of 50 is 20" / "of 20 is 50").
    let (qa, qb) = (in_order(lexicon, &a), in_order(lexicon, &b));
    let moved = moved(&qa, &qb);
    if qa != qb && counts(&qa) == counts(&qb) {
        let numeric = |w: &str| w.chars().any(|c| c.is_ascii_digit());
        let neighbours = (0..qa.len().saturating_sub(1)).any(|i| {
            let mut swapped = qa.clone();
            swapped.swap(i, i + 1);
            swapped == qb && !(numeric(&qa[i]) && numeric(&qa[i + 1]))
        });
        if !moved && !neighbours {
            found.push(Refusal::Direction);
        }
    }
    if swaps_roles(lexicon, &a, &b, moved) {
        found.push(Refusal::Direction);
    }
    // The word counts only where no fact guard objects: a fact guard's own
    // words ("fifty", "how soon") would count again as words added.
    if !found.is_empty() {
        return found;
    }
    let content = |words: &[String]| -> Vec<Vec<String>> {
        words
            .iter()
            .filter(|w| is_content(w))
            .map(|w| lexicon.stems(w))
            .collect()
    };
    let (only_a, only_b, shared) = difference(lexicon, &content(&a), &content(&b));
    if cosine < tuning.close_enough {
        if (only_a == 0) != (only_b == 0) {
            found.push(Refusal::Added);
        } else if only_a > 0 && only_b > 0 && only_a + only_b <= tuning.max_swapped && shared > 0 {
            found.push(Refusal::Swapped);
        }
    }
    if only_a + only_b > tuning.max_swapped && cosine < tuning.reworded {
        found.push(Refusal::Reworded);
    }
    found
}

#[cfg(test)]
mod tests;
