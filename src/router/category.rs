//! The kind of task a request is, decided locally by cheap rules, so that
//! a substitute is judged by its rating where it matters (a model good at
//! code may be weak at proofs).
//!
//! Rules, not the embedder: they run on every routed request, cached or
//! not, with or without the embedding model, in a few microseconds (the
//! text looked at is bounded). Their accuracy on a labelled set is
//! measured by `benches/routing_report.rs` and stated in BENCHMARKS.md.
//!
//! Only the last user message is read: it is what the model is asked now.
//! An image anywhere makes it `vision` (only vision ratings speak of
//! images); a long message is a `longer_query` (Arena's: over about 500
//! tokens), whatever it holds; then code, math and
//! creative writing are scored by their signs (words that name the task
//! count twice), the strongest winning at a score of at least
//! `THRESHOLD`; then a demanding one (several constraints, analysis) is
//! a `hard_prompts`; everything else is `overall`.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use serde_json::Value;

use crate::catalog::arena::Category;
use crate::catalog::Capability;
use crate::wire::request::ChatRequest;

use super::Needs;

/// A message longer than this many bytes (about 500 tokens) is a long one,
/// and decided by its length alone: no more than this is ever read.
const LONG_BYTES: usize = 2000;
/// The score a kind needs to win.
const THRESHOLD: u32 = 2;

/// The request's category.
pub fn of(request: &ChatRequest, needs: &Needs) -> Category {
    if needs.capabilities.contains(&Capability::Vision) {
        return Category::Vision;
    }
    let messages = request.body.get("messages").and_then(Value::as_array);
    let last_user = messages.and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    });
    let Some(content) = last_user.and_then(|m| m.get("content")) else {
        return Category::Overall;
    };
    // Measured before it is copied: a long message is decided by its
    // length alone, so a megabyte pasted costs no copy.
    if text_len(content) > LONG_BYTES {
        return Category::LongerQuery;
    }
    let mut text = String::new();
    collect_text(content, &mut text);
    of_text(&text)
}

/// The bytes of a message's text parts.
fn text_len(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(|t| t.len() + 1)
            .sum(),
        _ => 0,
    }
}

/// The category of a user message's text.
pub fn of_text(text: &str) -> Category {
    // A long message is Arena's `longer_query`, whatever its topic: a
    // pasted text holds words (and code blocks) of every kind.
    if text.len() > LONG_BYTES {
        return Category::LongerQuery;
    }
    let sample = text.to_lowercase();
    let scores = Scores::of(&sample, text);
    let best = [
        (scores.coding, Category::Coding),
        (scores.math, Category::Math),
        (scores.creative, Category::CreativeWriting),
    ]
    .into_iter()
    // The first of equal scores wins: code, then math, then writing.
    .fold((0, Category::Overall), |best, (score, category)| {
        if score > best.0 {
            (score, category)
        } else {
            best
        }
    });
    if best.0 >= THRESHOLD {
        best.1
    } else if scores.hard >= THRESHOLD {
        Category::HardPrompts
    } else {
        Category::Overall
    }
}

/// The text parts of a message's content (a string, or parts of type
/// `text` / `input_text`).
fn collect_text(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(text);
                }
            }
        }
        _ => {}
    }
}

#[derive(Debug, Default)]
struct Scores {
    coding: u32,
    math: u32,
    creative: u32,
    hard: u32,
}

/// What a sign found in the text adds to.
#[derive(Debug, Clone, Copy)]
enum Adds {
    Coding(u32),
    Math(u32),
    Creative(u32),
    Hard(u32),
    /// `write a ` or `write the `: one point of creative writing for
    /// either or both.
    Write,
}

/// The signs looked for anywhere in the (lower-cased) text, each counted
/// once however often it occurs.
const SIGNS: &[(&str, Adds)] = &[
    // Signs that are not words.
    ("```", Adds::Coding(3)),
    ("();", Adds::Coding(1)),
    ("){", Adds::Coding(1)),
    (") {", Adds::Coding(1)),
    ("=>", Adds::Coding(1)),
    ("->", Adds::Coding(1)),
    ("::", Adds::Coding(1)),
    ("!=", Adds::Coding(1)),
    ("==", Adds::Coding(1)),
    ("</", Adds::Coding(1)),
    ("/>", Adds::Coding(1)),
    ("#include", Adds::Coding(1)),
    ("\\frac", Adds::Math(2)),
    ("\\int", Adds::Math(2)),
    ("\\sum", Adds::Math(2)),
    ("\\sqrt", Adds::Math(2)),
    ("^2", Adds::Math(2)),
    ("^n", Adds::Math(2)),
    ("x^", Adds::Math(2)),
    ("\\(", Adds::Math(2)),
    // Phrases.
    ("stack trace", Adds::Coding(2)),
    ("unit test", Adds::Coding(2)),
    ("pull request", Adds::Coding(2)),
    ("null pointer", Adds::Coding(2)),
    ("linked list", Adds::Coding(2)),
    ("big-o", Adds::Coding(2)),
    ("time complexity", Adds::Coding(2)),
    ("solve for", Adds::Math(2)),
    ("how many ways", Adds::Math(2)),
    ("what is the probability", Adds::Math(2)),
    ("prove that", Adds::Math(2)),
    ("show that", Adds::Math(2)),
    ("expected value", Adds::Math(2)),
    ("greatest common", Adds::Math(2)),
    ("least common multiple", Adds::Math(2)),
    ("write a poem", Adds::Creative(2)),
    ("write a story", Adds::Creative(2)),
    ("short story", Adds::Creative(2)),
    ("write a song", Adds::Creative(2)),
    ("once upon", Adds::Creative(2)),
    ("in the style of", Adds::Creative(2)),
    ("from the perspective of", Adds::Creative(2)),
    ("step by step", Adds::Hard(1)),
    ("pros and cons", Adds::Hard(1)),
    ("trade-off", Adds::Hard(1)),
    ("tradeoff", Adds::Hard(1)),
    ("compare and contrast", Adds::Hard(1)),
    ("take into account", Adds::Hard(1)),
    ("edge cases", Adds::Hard(1)),
    ("explain why", Adds::Hard(1)),
    ("what would happen", Adds::Hard(1)),
    ("write a ", Adds::Write),
    ("write the ", Adds::Write),
];

/// Every sign of [`SIGNS`] found in one pass over the text, rather than
/// one search per sign (most of what deciding a category cost).
static FINDER: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| AhoCorasick::new(SIGNS.iter().map(|(sign, _)| sign)).ok());

/// Which of [`SIGNS`] occur in `sample`.
fn signs_in(sample: &str) -> [bool; SIGNS.len()] {
    let mut found = [false; SIGNS.len()];
    match &*FINDER {
        Some(finder) => {
            for hit in finder.find_overlapping_iter(sample) {
                found[hit.pattern().as_usize()] = true;
            }
        }
        // Not expected (the automaton is small and fixed): one search
        // per sign, as slow as that is.
        None => {
            for (found, (sign, _)) in found.iter_mut().zip(SIGNS) {
                *found = sample.contains(sign);
            }
        }
    }
    found
}

impl Scores {
    fn of(sample: &str, whole: &str) -> Self {
        let mut s = Scores::default();
        let mut write = false;
        for (found, (_, adds)) in signs_in(sample).into_iter().zip(SIGNS) {
            if !found {
                continue;
            }
            match *adds {
                Adds::Coding(n) => s.coding += n,
                Adds::Math(n) => s.math += n,
                Adds::Creative(n) => s.creative += n,
                Adds::Hard(n) => s.hard += n,
                Adds::Write => write = true,
            }
        }
        if arithmetic(sample) {
            s.math += 2;
        }
        for word in sample.split(|c: char| !(c.is_alphanumeric() || c == '+' || c == '#')) {
            match word {
                // Words that name the kind of task on their own.
                "python" | "javascript" | "typescript" | "rust" | "golang" | "java" | "c++"
                | "c#" | "sql" | "regex" | "css" | "html" | "bash" | "dockerfile" | "docker"
                | "kubernetes" | "git" | "react" | "pandas" | "segfault" | "traceback"
                | "typeerror" | "compile" | "compiler" | "refactor" | "debug" | "unittest"
                | "pytest" | "npm" | "mutex" | "semaphore" | "println" | "printf" => s.coding += 2,
                "code" | "function" | "functions" | "bug" | "exception" | "implement"
                | "script" | "shell" | "api" | "json" | "yaml" | "algorithm" | "variable"
                | "array" | "struct" | "class" | "method" | "recursion" | "recursive" | "cargo"
                | "pip" | "endpoint" | "query" | "database" | "async" | "await" | "thread"
                | "def" | "fn" | "const" | "lambda" | "iterator" | "programming" | "snippet"
                | "syntax" | "library" | "framework" | "deploy" | "linux" | "component" | "div"
                | "undefined" | "null" | "pointer" | "dataframe" | "csv" | "lifetimes" | "pod"
                | "branch" | "commit" | "tests" | "std" => s.coding += 1,
                "prove" | "proof" | "theorem" | "lemma" | "integral" | "derivative"
                | "equation" | "equations" | "probability" | "eigenvalue" | "eigenvalues"
                | "polynomial" | "quadratic" | "factorial" | "calculus" | "logarithm" => {
                    s.math += 2
                }
                "matrix" | "prime" | "primes" | "calculate" | "compute" | "solve" | "sum"
                | "geometry" | "triangle" | "rectangle" | "modulo" | "limit" | "infinity"
                | "converge" | "converges" | "series" | "integer" | "integers" | "divisible"
                | "algebra" | "sqrt" | "percent" | "percentage" | "ratio" | "fraction"
                | "digits" | "arithmetic" | "inequality" | "vector" | "vectors" | "radius"
                | "area" | "perimeter" | "angle" | "variance" | "mean" | "median" | "average"
                | "interest" | "dice" | "odd" | "even" => s.math += 1,
                "poem" | "poetry" | "story" | "stories" | "haiku" | "limerick" | "lyrics"
                | "sonnet" | "screenplay" | "monologue" | "eulogy" | "ballad" | "fiction" => {
                    s.creative += 2
                }
                "song" | "novel" | "character" | "characters" | "fairy" | "tale" | "rap"
                | "verse" | "verses" | "rhyme" | "rhyming" | "creative" | "imagine" | "fantasy"
                | "plot" | "villain" | "hero" | "dialogue" | "narrative" | "chapter"
                | "protagonist" | "slogan" | "tagline" | "toast" | "catchy" | "scene"
                | "bedtime" | "funny" | "compose" => s.creative += 1,
                "analyze" | "analyse" | "evaluate" | "design" | "strategy" | "optimize"
                | "architecture" | "constraints" | "requirements" | "justify" | "critique"
                | "assess" | "implications" | "tradeoffs" | "rigorous" | "detailed"
                | "comprehensive" | "plan" | "propose" | "recommend" | "scenario" | "weigh"
                | "weighing" | "consider" | "investigate" | "experiment" | "alternatives"
                | "risks" | "milestones" | "measurable" => s.hard += 1,
                _ => {}
            }
        }
        if write {
            s.creative += 1;
        }
        if sample.contains('%') && sample.bytes().any(|b| b.is_ascii_digit()) {
            s.math += 1;
        }
        // A question asked at length, with several requirements, is a
        // demanding one even without the words above.
        if whole.len() > 400 {
            s.hard += 1;
        }
        s
    }
}

/// Digits joined by an operator (`12 * 7`, `3+4`): arithmetic to do.
fn arithmetic(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(3).any(|w| {
        w[0].is_ascii_digit() && matches!(w[1], b'+' | b'*' | b'/' | b'^') && w[2].is_ascii_digit()
    }) || bytes.windows(5).any(|w| {
        w[0].is_ascii_digit()
            && w[1] == b' '
            && matches!(w[2], b'+' | b'-' | b'*' | b'/' | b'^' | b'=')
            && w[3] == b' '
            && w[4].is_ascii_digit()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_task_is_told_apart() {
        assert_eq!(
            of_text("Write a Python function that reverses a linked list"),
            Category::Coding
        );
        assert_eq!(
            of_text("Why does this panic?\n```rust\nlet v: Vec<u8> = vec![];\nv[0];\n```"),
            Category::Coding
        );
        assert_eq!(
            of_text("Prove that there are infinitely many primes."),
            Category::Math
        );
        assert_eq!(of_text("What is 17 * 23 + 4?"), Category::Math);
        assert_eq!(
            of_text("Write a poem about the sea in the style of Neruda"),
            Category::CreativeWriting
        );
        assert_eq!(of_text("What is the capital of France?"), Category::Overall);
        assert_eq!(of_text("hi"), Category::Overall);
        assert_eq!(of_text(""), Category::Overall);
        let pasted = "The committee met on Tuesday and discussed the budget. ".repeat(60)
            + "Summarize the notes above.";
        assert_eq!(of_text(&pasted), Category::LongerQuery);
        assert_eq!(
            of_text("Analyze the trade-offs of a four-day work week for a hospital, take into account staffing constraints, and recommend a plan."),
            Category::HardPrompts
        );
    }

    /// One pass finds what a search per sign finds, overlapping signs
    /// (`write a poem` holds `write a `) and repeats included.
    #[test]
    fn the_one_pass_finds_every_sign_a_search_would() {
        let texts = [
            "write a poem and write the story, once upon a time: x^2 == 4 => ok",
            "fn main() { let v = a::b(); } </div> /> #include <stdio.h> != \\frac{1}{2}",
            "what is the probability that the trade-off, a tradeoff, shows that step by step",
            "```rust\n```  ) { ){ -> \\int \\sum \\sqrt \\( ^n big-o",
            "compare and contrast, take into account edge cases, explain why; what would happen",
            "solve for x, how many ways, prove that, expected value, greatest common, least common multiple",
            "stack trace unit test pull request null pointer linked list time complexity",
            "short story, write a song in the style of from the perspective of pros and cons",
            "",
            "nothing to see here",
        ];
        for text in texts {
            let found = signs_in(text);
            for (i, (sign, _)) in SIGNS.iter().enumerate() {
                assert_eq!(found[i], text.contains(sign), "{sign:?} in {text:?}");
            }
        }
        assert!(signs_in(texts[0]).iter().filter(|f| **f).count() >= 6);
    }

    #[test]
    fn an_image_makes_it_vision_and_only_the_last_user_message_counts() {
        let request = |body: serde_json::Value| {
            crate::wire::request::parse(body.to_string().as_bytes(), &http::HeaderMap::new())
                .expect("valid request")
        };
        let with_image = request(serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Write a Python function for this chart"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}]
        }));
        let needs = Needs::of(&with_image, 10);
        assert_eq!(of(&with_image, &needs), Category::Vision);
        let turns = request(serde_json::json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "Write a Rust function to parse JSON"},
                {"role": "assistant", "content": "fn parse() {}"},
                {"role": "user", "content": "Now prove that the sum of two even integers is even."}
            ]
        }));
        let needs = Needs::of(&turns, 10);
        assert_eq!(of(&turns, &needs), Category::Math);
    }

    #[test]
    fn a_long_message_is_a_longer_query_whatever_it_holds() {
        let text = "é".repeat(10_000) + " prove the theorem ```fn main() {}```";
        assert_eq!(of_text(&text), Category::LongerQuery);
        let request = crate::wire::request::parse(
            serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Prove this theorem:"},
                {"type": "text", "text": "x".repeat(LONG_BYTES)}
            ]}]})
            .to_string()
            .as_bytes(),
            &http::HeaderMap::new(),
        )
        .expect("valid request");
        assert_eq!(
            of(&request, &Needs::of(&request, 10)),
            Category::LongerQuery
        );
    }
}
