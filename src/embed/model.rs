//! all-MiniLM-L6-v2 (int8 ONNX rewritten to integer arithmetic, mean
//! pooling) through fastembed, with ONNX Runtime loaded from the library
//! file `fetch` put beside the model; and p402's pair verifier, a
//! cross-encoder fine-tuned from the same model (`benches/verifier/README.md`
//! says how it was trained, on what, and how well it does), which ships
//! inside the binary because no package registry carries it.
//!
//! Every session runs with one intra-op thread, on a thread of its own:
//! more intra-op threads only contend on a machine of two cores that also
//! serves requests. The embedder and the verifier have one session each.

use std::path::Path;
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, RerankInitOptionsUserDefined, TextEmbedding, TextRerank,
    TokenizerFiles, UserDefinedEmbeddingModel, UserDefinedRerankingModel,
};
use ort::environment::Environment;

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

/// Drops the pages of the verifier's bytes inside the binary from the
/// process's memory once the sessions hold their own copy. They were
/// read to build the sessions and would otherwise stay resident (23 MB)
/// though nothing reads them again; being a read-only mapping of the
/// executable, any later read would bring them back from the file.
fn release_embedded_model() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysconf` has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = VERIFIER.as_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let end = (start + VERIFIER.len()) / page * page;
        if end > first {
            // SAFETY: the range is whole pages inside `VERIFIER`, a
            // read-only static mapped from the executable: advising the
            // kernel to drop them changes no byte a later read sees.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The loaded embedding model; used from the embedding thread only.
pub struct Model(TextEmbedding);

impl Model {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let environment = load_runtime(&dir.join(fetch::runtime_file_name()))?;
        let model = UserDefinedEmbeddingModel::new(
            read(dir, fetch::INTEGER_MODEL_FILE)?,
            tokenizer_files(read(dir, fetch::TOKENIZER_FILE)?),
        )
        .with_pooling(Pooling::Mean);
        let options = InitOptionsUserDefined::new()
            .with_environment(environment)
            .with_max_length(MAX_TOKENS)
            .with_intra_threads(1);
        let loaded = TextEmbedding::try_new_from_user_defined(model, options)
            .map(Model)
            .map_err(|e| EmbedError::Model(e.to_string()));
        release_freed_memory();
        loaded
    }

    /// The raw (not yet unit-length) embedding of `text`.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.0
            .embed([text], Some(1))
            .map_err(|e| EmbedError::Failed(e.to_string()))?
            .pop()
            .ok_or_else(|| EmbedError::Failed("no vector".into()))
    }
}

/// One session of the pair verifier; used from one thread only.
pub struct Verifier(TextRerank);

impl Verifier {
    /// Loads the verifier, with the embedder's tokenizer from `dir` (the
    /// same vocabulary: it was fine-tuned from that model). Its session
    /// holds the weights (about 40 MiB).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let environment = load_runtime(&dir.join(fetch::runtime_file_name()))?;
        let model = UserDefinedRerankingModel::new(
            VERIFIER.to_vec(),
            tokenizer_files(read(dir, fetch::TOKENIZER_FILE)?),
        );
        let options = RerankInitOptionsUserDefined::new()
            .with_environment(environment)
            .with_max_length(PAIR_TOKENS)
            .with_intra_threads(1);
        let loaded = TextRerank::try_new_from_user_defined(model, options)
            .map(Verifier)
            .map_err(|e| EmbedError::Model(format!("the pair verifier: {e}")));
        release_freed_memory();
        release_embedded_model();
        loaded
    }

    /// The confidence (0 to 1) that one answer serves both questions, as
    /// read in this order.
    pub fn score(&mut self, first: &str, second: &str) -> Result<f32, EmbedError> {
        let logit = self
            .0
            .rerank(first, [second], false, Some(1))
            .map_err(|e| EmbedError::Failed(e.to_string()))?
            .pop()
            .ok_or_else(|| EmbedError::Failed("no score".into()))?
            .score;
        Ok(1.0 / (1.0 + (-logit).exp()))
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(dir.join(name)).map_err(|e| EmbedError::Model(format!("{name}: {e}")))
}
