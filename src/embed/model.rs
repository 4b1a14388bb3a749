//! all-MiniLM-L6-v2 (int8 ONNX rewritten to integer arithmetic, mean
//! pooling) through fastembed, with ONNX Runtime loaded from the library
//! file `fetch` put beside the model; and p402's pair verifier, a
//! cross-encoder fine-tuned from the same model (`benches/verifier/README.md`
//! says how it was trained, on what, and how well it does), which ships
//! inside the binary because no package registry carries it.
//!
//! Each model has one session, with one intra-op thread, on a thread of
//! its own: two sessions of one model would hold its weights twice, and
//! more intra-op threads only contend on a machine of two cores that also
//! serves requests.

use std::path::Path;
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

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

/// The pair verifier; used from one thread only.
pub struct Verifier {
    tokenizer: Tokenizer,
    session: Session,
}

impl Verifier {
    /// Loads the verifier with the embedder's tokenizer from `dir` (the
    /// same vocabulary: it was fine-tuned from that model).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let environment = load_runtime(&dir.join(fetch::runtime_file_name()))?;
        let failed =
            |e: &dyn std::fmt::Display| EmbedError::Model(format!("the pair verifier: {e}"));
        let mut tokenizer =
            Tokenizer::from_bytes(read(dir, fetch::TOKENIZER_FILE)?).map_err(|e| failed(&e))?;
        tokenizer
            .with_padding(Some(PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                pad_token: "[PAD]".into(),
                pad_id: 0,
                ..Default::default()
            }))
            .with_truncation(Some(TruncationParams {
                max_length: PAIR_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| failed(&e))?;
        let session = Session::builder(&environment)
            .map_err(|e| failed(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .and_then(|b| b.with_intra_threads(1))
            .map_err(|e| failed(&e))?
            .commit_from_memory(VERIFIER)
            .map_err(|e| failed(&e))?;
        release_freed_memory();
        Ok(Verifier { tokenizer, session })
    }

    /// The confidence (0 to 1) that one answer serves both questions, read
    /// as (`first`, `second`) and as (`second`, `first`), in one run of
    /// the model: a batch of two reads the weights once.
    pub fn score_both(&mut self, first: &str, second: &str) -> Result<[f32; 2], EmbedError> {
        let failed =
            |e: &dyn std::fmt::Display| EmbedError::Failed(format!("the pair verifier: {e}"));
        let encodings = self
            .tokenizer
            .encode_batch(vec![(first, second), (second, first)], true)
            .map_err(|e| failed(&e))?;
        let width = encodings.first().map_or(0, |e| e.len());
        let column =
            |take: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor<i64>, EmbedError> {
                let values: Vec<i64> = encodings
                    .iter()
                    .flat_map(|e| take(e).iter().map(|&v| i64::from(v)))
                    .collect();
                Tensor::from_array(([encodings.len(), width], values)).map_err(|e| failed(&e))
            };
        let inputs = ort::inputs![
            "input_ids" => column(|e| e.get_ids())?,
            "attention_mask" => column(|e| e.get_attention_mask())?,
            "token_type_ids" => column(|e| e.get_type_ids())?,
        ];
        let outputs = self.session.run(inputs).map_err(|e| failed(&e))?;
        let (_, logits) = outputs["logits"]
            .try_extract_tensor::<f32>()
            .map_err(|e| failed(&e))?;
        let confidence = |logit: f32| 1.0 / (1.0 + (-logit).exp());
        match logits {
            [one, other] => Ok([confidence(*one), confidence(*other)]),
            _ => Err(failed(&"not one logit per pair")),
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(dir.join(name)).map_err(|e| EmbedError::Model(format!("{name}: {e}")))
}
