//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX,
//! 384 dimensions, mean pooling) through fastembed, with ONNX Runtime loaded
//! from a library file at run time; and the pair verifier that has the last
//! word on a semantic hit (a cross-encoder: both questions in, one score).
//!
//! Embedding and verifying are CPU work of milliseconds, so they run on
//! dedicated threads, never on the async workers: one for the embedder and
//! one for the verifier, so that no thread runs both models and neither
//! model's weights push the other's out of the CPU's caches. The verifier
//! reads a pair in order, so it is asked both ways round and the lower
//! answer counts ("same meaning" is symmetric; one way round, a question
//! with an added clause can look like the other plus nothing). The two
//! readings run one after the other in one session: a second session
//! reading the other order at once cost 40 MiB of weights of its own, and
//! on a machine of two cores that also serves requests the two seldom ran
//! at once anyway. (One session reading both orders as a batch of two took
//! as long as two readings one after the other, and moved the scores: the
//! activations are quantized over the whole batch.) The queues to the
//! threads are bounded: when a burst fills them, further requests skip the
//! semantic lookup (an exact-match cache still answers) instead of piling
//! up work.

pub mod fetch;
mod integer;
#[cfg_attr(feature = "embeddings", path = "model.rs")]
#[cfg_attr(not(feature = "embeddings"), path = "no_model.rs")]
mod model;
mod onnx;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use model::{Model, Verifier};
use tokio::sync::oneshot;

/// Whether this build can embed at all (the `embeddings` feature); without
/// it there is nothing to fetch.
pub const BUILT: bool = cfg!(feature = "embeddings");

/// The model's output size.
pub const DIMENSIONS: usize = 384;
/// Requests waiting for the embedding thread, at most.
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
    /// The bounded queue to the embedding thread is full: better a cache
    /// miss than a request waiting behind others' embeddings.
    #[error("the embedding queue is full")]
    Busy,
    /// The embedding thread is gone (it panicked, or p402 is stopping).
    #[error("the embedding thread has stopped")]
    Stopped,
}

/// A text to embed, and where the vector goes.
struct EmbedJob {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// A pair to read both ways round, and where the confidence goes.
struct VerifyJob {
    asked: String,
    cached: String,
    reply: oneshot::Sender<Result<f32, EmbedError>>,
}

/// A handle on the embedding and verifying threads; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    /// The embedding thread.
    embeds: SyncSender<EmbedJob>,
    /// The verifying thread.
    verifies: SyncSender<VerifyJob>,
}

impl Embedder {
    /// Loads the runtime and the models from `dir` and starts the threads.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !fetch::is_complete(dir) {
            return Err(EmbedError::Missing(dir.display().to_string()));
        }
        let mut model = Model::load(dir)?;
        let mut verifier = Verifier::load(dir)?;
        let embeds = spawn("p402-embed", move |job: EmbedJob| {
            let _ = job.reply.send(model.embed(&job.text).map(normalize));
        })?;
        let verifies = spawn("p402-verify", move |job: VerifyJob| {
            let both = verifier
                .score(&job.asked, &job.cached)
                .and_then(|one| Ok(one.min(verifier.score(&job.cached, &job.asked)?)));
            let _ = job.reply.send(both);
        })?;
        Ok(Embedder { embeds, verifies })
    }

    /// The unit-length embedding of `text`, or `Busy` when the queue is full.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        send(
            &self.embeds,
            EmbedJob {
                text: text.to_string(),
                reply,
            },
        )?;
        answer.await.map_err(|_| EmbedError::Stopped)?
    }

    /// The verifier's confidence, 0 to 1, that an answer to `cached` also
    /// answers `asked`: the lower of its two readings. `Busy` when a queue
    /// is full.
    pub async fn verify(&self, asked: &str, cached: &str) -> Result<f32, EmbedError> {
        let (reply, answer) = oneshot::channel();
        send(
            &self.verifies,
            VerifyJob {
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
