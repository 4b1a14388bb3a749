//! The pair verifier's session, and its two readings of a pair run at
//! once on two threads.
//!
//! The verifier reads a pair in order, so the cache asks it both ways
//! round (`super`). The two readings are independent, and on a machine of
//! two cores they take little more than one when run side by side: 3.1 to
//! 3.4 ms a pair against 4.1 to 6.0 ms one after the other, timed in one
//! process on a busy machine (`BENCHMARKS.md`, issue 35). Every other way
//! of running them side by side was measured and costs more:
//!
//! - a second session holds its own copy of the weights as ONNX Runtime
//!   prepares them, +22 to +29 MiB even with the initializers or the
//!   prepacked-weights container shared;
//! - a batch of two quantizes the activations over the whole batch, so
//!   each order's score moves with the other's;
//! - the two orders as two branches of one graph under ONNX Runtime's
//!   parallel executor ran no faster than one after the other;
//! - more intra-op threads split each small matrix product, and lose.
//!
//! So both readings run in the one session, from two threads. ONNX Runtime
//! documents `Run` as safe to call from several threads at once on one
//! session (its maintainers' own example does it, and its TensorRT
//! provider was fixed in 1.17 to honour that), and the CPU provider is
//! the only one p402 uses. The `ort` crate takes `&mut self` to run: its
//! authors do not trust that guarantee, having seen GPU providers crash
//! under it. So `Shared::read` calls the C API's `Run` itself, with the
//! session shared (`ort::Session` is `Sync`), and a unit test reads many
//! pairs from two threads at once and checks every score, bit for bit,
//! against the one read alone.

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use ort::session::Session;
use ort::value::Tensor;
use ort::AsPointer;
use tokenizers::Encoding;

use super::EmbedError;

/// The graph's input and output names.
const INPUT_IDS: &CStr = c"input_ids";
const ATTENTION_MASK: &CStr = c"attention_mask";
const TOKEN_TYPE_IDS: &CStr = c"token_type_ids";
const LOGITS: &CStr = c"logits";

/// One reading's inputs, made on the model thread (which owns the
/// tokenizer) and read on either thread.
pub struct Pair {
    ids: Tensor<i64>,
    mask: Tensor<i64>,
    types: Tensor<i64>,
}

impl Pair {
    /// The tensors of one encoded pair, a batch of one.
    pub fn new(pair: &Encoding) -> Result<Self, EmbedError> {
        let shape = [1, pair.len()];
        let tensor = |values: &[u32]| {
            let values: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
            Tensor::from_array((shape, values)).map_err(failed)
        };
        Ok(Pair {
            ids: tensor(pair.get_ids())?,
            mask: tensor(pair.get_attention_mask())?,
            types: tensor(pair.get_type_ids())?,
        })
    }
}

/// A reading sent to the second thread, and where its score goes.
type Job = (Pair, SyncSender<Result<f32, EmbedError>>);

/// The verifier's session, shared by the model thread and a second
/// reader thread (`p402-verifier`) that reads the other order of a pair.
pub struct Verifier {
    session: Arc<Shared>,
    /// The second reader's queue; `None` if its thread could not start,
    /// and then both readings run on the caller's thread.
    second: Option<SyncSender<Job>>,
}

/// What both threads read: the session and how its graph takes input.
struct Shared {
    session: Session,
    /// Whether the graph takes `token_type_ids` (BERT's does).
    takes_types: bool,
}

impl Verifier {
    /// Shares `session` with a new reader thread.
    pub fn new(session: Session) -> Self {
        let takes_types = session
            .inputs()
            .iter()
            .any(|input| input.name() == "token_type_ids");
        let session = Arc::new(Shared {
            session,
            takes_types,
        });
        let reader = Arc::clone(&session);
        let second = super::spawn("p402-verifier", move |(pair, reply): Job| {
            let _ = reply.send(reader.read(&pair));
        });
        Verifier {
            session,
            second: second.ok(),
        }
    }

    /// The confidence (0 to 1) of one reading.
    #[cfg(test)]
    pub fn read(&self, pair: &Pair) -> Result<f32, EmbedError> {
        self.session.read(pair)
    }

    /// The confidences of two readings, `second` on the reader thread
    /// while `first` runs on this one.
    pub fn read_both(&self, first: &Pair, second: Pair) -> Result<(f32, f32), EmbedError> {
        let (reply, answer) = sync_channel(1);
        let queued = match &self.second {
            Some(queue) => queue.send((second, reply)).map_err(|e| e.0 .0),
            None => Err(second),
        };
        match queued {
            Ok(()) => {
                let one = self.session.read(first);
                let other = answer.recv().map_err(|_| EmbedError::Stopped)?;
                Ok((one?, other?))
            }
            // The reader thread is gone: read both here.
            Err(second) => Ok((self.session.read(first)?, self.session.read(&second)?)),
        }
    }
}

impl Shared {
    /// Runs the session on `pair` through ONNX Runtime's C API, which
    /// allows runs from several threads at once (see the module's
    /// comment), and returns the sigmoid of the one logit.
    fn read(&self, pair: &Pair) -> Result<f32, EmbedError> {
        let mut names: Vec<*const c_char> = vec![INPUT_IDS.as_ptr(), ATTENTION_MASK.as_ptr()];
        let mut values = vec![pair.ids.ptr(), pair.mask.ptr()];
        if self.takes_types {
            names.push(TOKEN_TYPE_IDS.as_ptr());
            values.push(pair.types.ptr());
        }
        let mut logits = Tensor::from_array(([1usize, 1], vec![0.0_f32])).map_err(failed)?;
        let mut outputs = [logits.ptr_mut()];
        let output_names = [LOGITS.as_ptr()];
        // SAFETY: the session, the input values and the output value are
        // live for the whole call and owned by no other call; the names
        // are NUL-terminated constants; the counts are the arrays' own
        // lengths. ONNX Runtime allows `Run` on one session from several
        // threads at once, and writes the logit into the pre-allocated
        // `logits` ([1, 1], the graph's output shape for a batch of one),
        // which this call alone owns.
        let status = unsafe {
            (ort::api().Run)(
                self.session.ptr().cast_mut(),
                ptr::null(),
                names.as_ptr(),
                values.as_ptr(),
                values.len(),
                output_names.as_ptr(),
                output_names.len(),
                outputs.as_mut_ptr(),
            )
        };
        // SAFETY: `status` was just returned by the C API and is released
        // here, once.
        unsafe { ort::Error::result_from_status(status) }.map_err(failed)?;
        let logit = logits
            .extract_tensor()
            .1
            .first()
            .copied()
            .ok_or_else(|| EmbedError::Failed("the verifier gave no logit".into()))?;
        Ok(1.0 / (1.0 + (-logit).exp()))
    }
}

fn failed(e: ort::Error) -> EmbedError {
    EmbedError::Failed(e.to_string())
}
