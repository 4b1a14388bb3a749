//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX,
//! 384 dimensions, mean pooling) through fastembed, with ONNX Runtime loaded
//! from a library file at run time; and the pair verifier that has the last
//! word on a semantic hit (a cross-encoder: both questions in, one score).
//!
//! Embedding and verifying are CPU work of milliseconds, so they run on a
//! dedicated thread, never on the async workers. It is one thread for both
//! models because they share one tokenizer (`model::Models`), and a
//! lookup runs them one after the other anyway: it embeds the question,
//! finds a candidate, then verifies the pair. (They
//! were once on a thread each, so that neither model's weights would push
//! the other's out of the CPU's caches; that mattered for the float
//! models, whose weights were four times larger.) The verifier reads a
//! pair in order, so it is asked both ways round and the lower answer
//! counts ("same meaning" is symmetric; one way round, a question with an
//! added clause can look like the other plus nothing). The two readings
//! run at once, in one session, the other order on a second thread
//! (`verifier` says why that way and not another). The queue to the
//! model thread is bounded: when a burst fills it, further requests skip
//! the semantic lookup (an exact-match cache still answers) instead of
//! piling up work.

pub mod fetch;
mod integer;
#[cfg_attr(feature = "embeddings", path = "model.rs")]
#[cfg_attr(not(feature = "embeddings"), path = "no_model.rs")]
mod model;
mod onnx;
#[cfg(feature = "embeddings")]
mod verifier;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use model::Models;
use tokio::sync::oneshot;

/// Whether this build can embed at all (the `embeddings` feature); without
/// it there is nothing to fetch.
pub const BUILT: bool = cfg!(feature = "embeddings");

/// The model's output size.
pub const DIMENSIONS: usize = 384;
/// Jobs waiting for the model thread, at most.
const QUEUE: usize = 64;

/// Why a question could not be embedded or verified. The cache takes any
/// of them as a miss, so the request goes on without the semantic cache.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The model's files are not in this directory.
    #[error("the embedding files are missing from {0} (run `p402 setup`)")]
    Missing(String),
    /// The ONNX Runtime library could not be loaded.
    #[error("ONNX Runtime could not be loaded: {0}")]
    Runtime(String),
    /// The model, its tokenizer or its thread could not be set up.
    #[error("the embedding model could not be loaded: {0}")]
    Model(String),
    /// Running the model on one input failed.
    #[error("embedding failed: {0}")]
    Failed(String),
    /// Built without the `embeddings` feature: there is no model to load.
    #[error("this p402 was built without the `embeddings` feature")]
    NotBuilt,
    /// The bounded queue to the model thread is full: better a cache
    /// miss than a request waiting behind others' embeddings.
    #[error("the embedding queue is full")]
    Busy,
    /// The model thread is gone (it panicked, or p402 is stopping).
    #[error("the embedding model thread has stopped")]
    Stopped,
}

/// Work for the model thread, and where its answer goes.
enum Job {
    /// A text to embed.
    Embed {
        text: String,
        reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
    },
    /// A pair to read both ways round.
    Verify {
        asked: String,
        cached: String,
        reply: oneshot::Sender<Result<f32, EmbedError>>,
    },
}

/// A handle on the model thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    jobs: SyncSender<Job>,
}

impl Embedder {
    /// Loads the runtime and the models from `dir` and starts the thread.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !fetch::is_complete(dir) {
            return Err(EmbedError::Missing(dir.display().to_string()));
        }
        let mut models = Models::load(dir)?;
        let jobs = spawn("p402-models", move |job: Job| match job {
            Job::Embed { text, reply } => {
                let _ = reply.send(models.embed(&text).map(normalize));
            }
            Job::Verify {
                asked,
                cached,
                reply,
            } => {
                let _ = reply.send(models.score_both_ways(&asked, &cached));
            }
        })?;
        Ok(Embedder { jobs })
    }

    /// The unit-length embedding of `text`, or `Busy` when the queue is full.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        send(
            &self.jobs,
            Job::Embed {
                text: text.to_string(),
                reply,
            },
        )?;
        answer.await.map_err(|_| EmbedError::Stopped)?
    }

    /// The verifier's confidence, 0 to 1, that an answer to `cached` also
    /// answers `asked`: the lower of its two readings. `Busy` when the
    /// queue is full.
    pub async fn verify(&self, asked: &str, cached: &str) -> Result<f32, EmbedError> {
        let (reply, answer) = oneshot::channel();
        send(
            &self.jobs,
            Job::Verify {
                asked: asked.to_string(),
                cached: cached.to_string(),
                reply,
            },
        )?;
        answer.await.map_err(|_| EmbedError::Stopped)?
    }
}

/// Starts a thread named `name` that serves each job with `serve`, and
/// returns its bounded queue.
fn spawn<J: Send + 'static>(
    name: &str,
    mut serve: impl FnMut(J) + Send + 'static,
) -> Result<SyncSender<J>, EmbedError> {
    let (jobs, queue) = sync_channel::<J>(QUEUE);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Ok(job) = queue.recv() {
                serve(job);
            }
        })
        .map_err(|e| EmbedError::Model(format!("cannot start the {name} thread: {e}")))?;
    Ok(jobs)
}

fn send<J>(queue: &SyncSender<J>, job: J) -> Result<(), EmbedError> {
    queue.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => EmbedError::Busy,
        TrySendError::Disconnected(_) => EmbedError::Stopped,
    })
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
