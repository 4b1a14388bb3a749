//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX,
//! 384 dimensions, mean pooling) through fastembed, with ONNX Runtime loaded
//! from a library file at run time.
//!
//! Embedding is CPU work of several milliseconds, so it runs on one
//! dedicated thread, never on the async workers. The queue to that thread is
//! bounded: when a burst fills it, further requests skip the semantic lookup
//! (an exact-match cache still answers) instead of piling up work.

pub mod fetch;
#[cfg_attr(feature = "embeddings", path = "model.rs")]
#[cfg_attr(not(feature = "embeddings"), path = "no_model.rs")]
mod model;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use model::Model;
use tokio::sync::oneshot;

/// Whether this build can embed at all (the `embeddings` feature); without
/// it there is nothing to fetch.
pub const BUILT: bool = cfg!(feature = "embeddings");

/// The model's output size.
pub const DIMENSIONS: usize = 384;
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
    #[error("this p402 was built without the `embeddings` feature")]
    NotBuilt,
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

impl Embedder {
    /// Loads the runtime and the model from `dir` and starts the thread.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !fetch::is_complete(dir) {
            return Err(EmbedError::Missing(dir.display().to_string()));
        }
        let mut model = Model::load(dir)?;

        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("p402-embed".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let _ = job.reply.send(model.embed(&job.text).map(normalize));
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
