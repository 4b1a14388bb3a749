//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX,
//! 384 dimensions, mean pooling) through fastembed, with ONNX Runtime loaded
//! from a library file at run time.
//!
//! Embedding is CPU work of several milliseconds, so it runs on one
//! dedicated thread, never on the async workers. The queue to that thread is
//! bounded: when a burst fills it, further requests skip the semantic lookup
//! (an exact-match cache still answers) instead of piling up work.

pub mod fetch;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use tokio::sync::oneshot;

/// The model's output size.
pub const DIMENSIONS: usize = 384;
/// Texts past this many tokens are truncated (the model's own limit).
const MAX_TOKENS: usize = 256;
/// Requests waiting for the embedding thread, at most.
const QUEUE: usize = 64;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding files are missing from {0} (run `p402 setup`)")]
    Missing(String),
    #[error("ONNX Runtime could not be loaded: {0}")]
    Runtime(String),
    #[error("the embedding model could not be loaded: {0}")]
    Model(String),
    #[error("embedding failed: {0}")]
    Failed(String),
    #[error("the embedding queue is full")]
    Busy,
    #[error("the embedding thread has stopped")]
    Stopped,
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// A handle on the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    jobs: SyncSender<Job>,
}

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

impl Embedder {
    /// Loads the runtime and the model from `dir` and starts the thread.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !fetch::is_complete(dir) {
            return Err(EmbedError::Missing(dir.display().to_string()));
        }
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
        let mut model = TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Model(e.to_string()))?;

        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("p402-embed".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let result = model
                        .embed([job.text.as_str()], Some(1))
                        .map_err(|e| EmbedError::Failed(e.to_string()))
                        .and_then(|mut vectors| {
                            vectors
                                .pop()
                                .ok_or_else(|| EmbedError::Failed("no vector".into()))
                        })
                        .map(normalize);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| EmbedError::Model(format!("cannot start the embedding thread: {e}")))?;
        Ok(Embedder { jobs })
    }

    /// The unit-length embedding of `text`, or `Busy` when the queue is full.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job {
            text: text.to_string(),
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbedError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Stopped),
        }
        answer.await.map_err(|_| EmbedError::Stopped)?
    }
}

/// Scales a vector to unit length, so a dot product is the cosine.
fn normalize(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// `[cache] model_dir`, else `<data_dir>/embedder`.
pub fn model_dir(configured: Option<&PathBuf>, data_dir: &Path) -> PathBuf {
    configured
        .filter(|p| !p.as_os_str().is_empty())
        .cloned()
        .unwrap_or_else(|| data_dir.join("embedder"))
}
