//! The Chat Completions door: p402's internal dialect is this one, so a
//! request is only validated and an answer only gains `p402_metadata`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::RenderError;
use crate::metadata::Metadata;
use crate::providers::{openai, Answer};

/// The answer's body with `p402_metadata` added.
pub fn answer(answer: Answer, metadata: &Metadata) -> Result<Bytes, RenderError> {
    match answer {
        // An answer passed on as it came: its bytes plus one member,
        // without building and re-serializing its tree (a tenth of p402's
        // CPU per request when it did).
        Answer::AsItCame { bytes, .. } | Answer::Native { bytes, .. } => {
            let metadata = serde_json::to_vec(metadata)?;
            openai::with_member(&bytes, "p402_metadata", &metadata)
                .map(Bytes::from)
                .ok_or(RenderError::NotAnObject)
        }
        Answer::Tree(mut answer) => {
            let object = answer.as_object_mut().ok_or(RenderError::NotAnObject)?;
            object.insert("p402_metadata".into(), serde_json::to_value(metadata)?);
            Ok(Bytes::from(serde_json::to_vec(&answer)?))
        }
    }
}

/// A stream of `chat.completion.chunk` events.
pub struct Stream {
    /// p402 always asks upstream for usage; a client that did not ask gets
    /// neither the usage-only chunk nor `usage` fields on other chunks.
    client_wants_usage: bool,
    /// id, created and model of the first chunk, echoed in the last one.
    envelope: Option<(Value, Value, Value)>,
}

impl Stream {
    pub fn new(client_wants_usage: bool) -> Self {
        Stream {
            client_wants_usage,
            envelope: None,
        }
    }

    pub fn chunk(&mut self, mut chunk: Value) -> Option<Bytes> {
        if self.envelope.is_none() {
            self.envelope = Some((
                chunk.get("id").cloned().unwrap_or(Value::Null),
                chunk.get("created").cloned().unwrap_or(Value::Null),
                chunk.get("model").cloned().unwrap_or(Value::Null),
            ));
        }
        if self.client_wants_usage {
            return Some(event(&chunk));
        }
        let object = chunk.as_object_mut()?;
        let has_choices = object
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if !has_choices && object.contains_key("usage") {
            return None;
        }
        object.remove("usage");
        Some(event(&chunk))
    }

    /// A last chunk with no choices and the metadata, then `[DONE]`.
    pub fn end(&mut self, metadata: &Metadata) -> Vec<Bytes> {
        let (id, created, model) =
            self.envelope
                .take()
                .unwrap_or((Value::Null, Value::Null, Value::Null));
        let last = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "p402_metadata": metadata,
        });
        vec![event(&last), Bytes::from_static(b"data: [DONE]\n\n")]
    }
}

/// One SSE `data:` event.
pub fn event(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
