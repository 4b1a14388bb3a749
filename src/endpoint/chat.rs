//! The Chat Completions door: p402's internal dialect is this one, so a
//! request is only validated and an answer only gains `p402_metadata`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::RenderError;
use crate::money::metadata::Metadata;
use crate::wire::{openai, Answer, THINKING};

/// The answer's body with `p402_metadata` added, naming the model that
/// served it as the catalog does.
pub fn answer(answer: Answer, metadata: &Metadata) -> Result<Bytes, RenderError> {
    match answer {
        // An answer passed on as it came: its bytes plus one member,
        // without building and re-serializing its tree (a tenth of p402's
        // CPU per request when it did). The pipeline makes a tree of one
        // whose model the provider calls by another name.
        Answer::AsItCame { bytes, .. } | Answer::Native { bytes, .. } => {
            let metadata = serde_json::to_vec(metadata)?;
            openai::with_member(&bytes, "p402_metadata", &metadata)
                .map(Bytes::from)
                .ok_or(RenderError::NotAnObject)
        }
        Answer::Tree(mut answer) => {
            if let Some(message) = answer
                .pointer_mut("/choices/0/message")
                .and_then(Value::as_object_mut)
            {
                message.remove(THINKING);
            }
            let object = answer.as_object_mut().ok_or(RenderError::NotAnObject)?;
            if let Some(model) = &metadata.model {
                object.insert("model".into(), Value::from(model.as_str()));
            }
            if let Some(id) = object.get("id").and_then(Value::as_str) {
                let id = super::dialect_id("chatcmpl-", id);
                object.insert("id".into(), Value::from(id));
            }
            object.insert("p402_metadata".into(), serde_json::to_value(metadata)?);
            Ok(Bytes::from(serde_json::to_vec(&answer)?))
        }
    }
}

/// A stream of `chat.completion.chunk` events, as OpenAI sends them: no
/// chunk without a choice unless the client asked for usage (the loop in
/// OpenAI's own docs reads `chunk.choices[0]` of every chunk). The figures
/// ride on the last chunk that has a choice, held back until the usage is
/// known, and on the usage chunk when the client asked for it.
pub struct Stream {
    /// p402 always asks upstream for usage; a client that did not ask gets
    /// neither the usage-only chunk nor `usage` fields on other chunks.
    client_wants_usage: bool,
    /// The catalog id of the model serving the stream, written over the
    /// provider's own name for it in every chunk.
    model: Option<Value>,
    /// id, created and model of the first chunk, for a chunk p402 writes.
    envelope: Option<(Value, Value, Value)>,
    /// The latest chunk that finished a choice: sent on when another
    /// chunk with a choice follows it, else at the end with the figures.
    finishing: Option<Value>,
    /// The usage-only chunk, held for the figures (when the client asked
    /// for it).
    usage: Option<Value>,
}

impl Stream {
    pub fn new(client_wants_usage: bool, model: Option<&str>) -> Self {
        Stream {
            client_wants_usage,
            model: model.map(Value::from),
            envelope: None,
            finishing: None,
            usage: None,
        }
    }

    pub fn chunk(&mut self, mut chunk: Value) -> Option<Bytes> {
        let object = chunk.as_object_mut()?;
        if let Some(model) = &self.model {
            object.insert("model".into(), model.clone());
        }
        if let Some(id) = object
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.starts_with("chatcmpl-"))
        {
            let id = super::dialect_id("chatcmpl-", id);
            object.insert("id".into(), Value::from(id));
        }
        if self.envelope.is_none() {
            self.envelope = Some((
                object.get("id").cloned().unwrap_or(Value::Null),
                object.get("created").cloned().unwrap_or(Value::Null),
                object.get("model").cloned().unwrap_or(Value::Null),
            ));
        }
        // Thinking blocks are p402's to carry, not a Chat Completions
        // field: a chunk that said nothing else is not sent.
        if let Some(delta) = object
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(|c| c.get_mut("delta"))
            .and_then(Value::as_object_mut)
        {
            if delta.remove(THINKING).is_some() && delta.is_empty() {
                return None;
            }
        }
        let choices = object
            .get("choices")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty());
        let Some(choices) = choices else {
            // Usage-only (or empty) chunks: held for the figures, or not
            // the client's to see.
            if self.client_wants_usage && object.contains_key("usage") {
                self.usage = Some(chunk);
            }
            return None;
        };
        let finishes = choices
            .iter()
            .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
        if !self.client_wants_usage {
            object.remove("usage");
        }
        let earlier = self.finishing.take().map(|held| event(&held));
        if finishes {
            self.finishing = Some(chunk);
            return earlier;
        }
        let this = event(&chunk);
        Some(match earlier {
            Some(earlier) => Bytes::from([earlier, this].concat()),
            None => this,
        })
    }

    /// The held chunks with the metadata, then `[DONE]`.
    pub fn end(&mut self, metadata: &Metadata) -> Vec<Bytes> {
        let figures = serde_json::to_value(metadata).unwrap_or(Value::Null);
        let (id, created, model) =
            self.envelope
                .clone()
                .unwrap_or((Value::Null, Value::Null, Value::Null));
        // A stream that never finished a choice (a replay cut short, a
        // provider that names no reason) still ends on a chunk with one.
        let mut last = self.finishing.take().unwrap_or_else(|| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": null}]})
        });
        last["p402_metadata"] = figures.clone();
        let mut out = vec![event(&last)];
        if self.client_wants_usage {
            let mut usage = self.usage.take().unwrap_or_else(|| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [], "usage": null})
            });
            usage["p402_metadata"] = figures;
            out.push(event(&usage));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    /// What was held back, sent before an error event ends the stream.
    pub fn flush(&mut self) -> Option<Bytes> {
        self.finishing.take().map(|held| event(&held))
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
