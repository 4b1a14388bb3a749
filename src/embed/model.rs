//! all-MiniLM-L6-v2 (int8 ONNX, mean pooling) through fastembed, with ONNX
//! Runtime loaded from the library file `fetch` put beside the model.

use std::path::Path;
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use super::{fetch, EmbedError};

/// Texts past this many tokens are truncated (the model's own limit).
const MAX_TOKENS: usize = 256;

/// ONNX Runtime can be loaded once per process; later loads reuse the
/// first outcome.
static RUNTIME: OnceLock<Result<(), String>> = OnceLock::new();

fn load_runtime(library: &Path) -> Result<(), EmbedError> {
    RUNTIME
        .get_or_init(|| {
            // A missing or wrong-version library is an `Err` here, where
            // fastembed would panic later.
            ort::init_from(library).map(drop).map_err(|e| e.to_string())
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
/// Building the session reads the model file, parses it and folds its
/// int8 weights into float constants; the buffers of those steps (about
/// 65 MiB) are freed, but glibc keeps freed memory for reuse, so without
/// this the process stays that much larger for its whole life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns memory that is already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The loaded model; used from the embedding thread only.
pub struct Model(TextEmbedding);

impl Model {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        load_runtime(&dir.join(fetch::runtime_file_name()))?;
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| EmbedError::Model(format!("{name}: {e}")))
        };
        let model = UserDefinedEmbeddingModel::new(
            read(fetch::MODEL_FILE)?,
            tokenizer_files(read(fetch::TOKENIZER_FILE)?),
        )
        .with_pooling(Pooling::Mean);
        let options = InitOptionsUserDefined::new()
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
