//! What a cached answer may be reused for.
//!
//! Everything that shapes the answer except the last user message (system
//! prompt, earlier turns, tools, response format, sampling parameters, the
//! requested model and mode) is hashed into a scope. Only entries of the
//! same scope can match, so "the same question" under another system prompt
//! or at another temperature is never served the other's answer.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Fields that do not change the answer: how it is delivered or billed.
const NOT_SHAPING: &[&str] = &[
    "messages",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
];

/// A SHA-256 scope digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(pub [u8; 32]);

impl Scope {
    pub(crate) fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// This scope narrowed to one local API key: answers stored under one
    /// key are never served to another, so a key's users cannot probe what
    /// another key's users asked.
    pub fn for_key(self, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"p402 cache scope per key\0");
        hasher.update(self.0);
        hasher.update(key.as_bytes());
        Scope(hasher.finalize().into())
    }

    /// This scope narrowed to a body in a provider's own dialect that says
    /// more than its Chat Completions translation (extended thinking,
    /// server tools, stored state) and to the API headers sent with it:
    /// such a request can only ever match itself.
    pub fn for_native(self, body: &Map<String, Value>, headers: &[(&str, &[u8])]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"p402 cache scope for a native body\0");
        hasher.update(self.0);
        canonical(&Value::Object(body.clone()), &mut hasher);
        for (name, value) in headers {
            hasher.update(name.as_bytes());
            hasher.update(b":");
            hasher.update(value);
            hasher.update(b"\n");
        }
        Scope(hasher.finalize().into())
    }

    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Scope(bytes))
    }
}

/// Whether a request is one turn of a conversation with no tools: the only
/// kind whose answer depends on nothing but the wording of its question,
/// so that a paraphrase may share it.
pub fn single_turn(body: &Map<String, Value>) -> bool {
    let offers_tools = ["tools", "functions"].iter().any(|field| {
        body.get(*field)
            .and_then(Value::as_array)
            .is_some_and(|tools| !tools.is_empty())
    });
    let earlier_turns = body
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| {
            messages.iter().any(|message| {
                matches!(
                    message.get("role").and_then(Value::as_str),
                    Some("assistant" | "tool" | "function")
                )
            })
        });
    !offers_tools && !earlier_turns
}

/// The last user message's text and the scope of everything else, or
/// `None` when the request does not end with a plain user question.
pub fn split(
    body: &Map<String, Value>,
    requested_model: &str,
    mode: &Value,
) -> Option<(Scope, String)> {
    let messages = body.get("messages")?.as_array()?;
    let (last, earlier) = messages.split_last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let question = text_of(last.get("content")?)?;
    let mut shaping = Map::new();
    for (key, value) in body {
        if !NOT_SHAPING.contains(&key.as_str()) {
            shaping.insert(key.clone(), value.clone());
        }
    }
    shaping.insert("model".into(), Value::from(requested_model));
    shaping.insert("p402_mode".into(), mode.clone());
    shaping.insert("earlier_messages".into(), Value::Array(earlier.to_vec()));
    // The last message's other fields (a name, say) shape the answer too.
    let mut last_rest = last.as_object()?.clone();
    last_rest.remove("content");
    shaping.insert("last_message".into(), Value::Object(last_rest));
    let mut hasher = Sha256::new();
    canonical(&Value::Object(shaping), &mut hasher);
    Some((Scope(hasher.finalize().into()), question))
}

/// Plain text content, or the text parts of a content array (an image part
/// makes the question uncacheable: its meaning is not in the text).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(part.get("text")?.as_str()?),
                    _ => return None,
                }
            }
            Some(text)
        }
        _ => None,
    }
}

/// Feeds `value` to the hasher with object keys sorted, so that key order
/// (which clients do not promise) never changes the scope.
fn canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                hasher.update(b":");
                if let Some(inner) = map.get(key) {
                    canonical(inner, hasher);
                }
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

/// The form in which two questions are the same question: case and runs of
/// white space do not matter.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(body: Value) -> Option<Scope> {
        split(body.as_object().expect("object"), "gpt-4o", &json!("cost")).map(|(s, _)| s)
    }

    #[test]
    fn what_changes_the_scope_and_what_does_not() {
        let base = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "temperature": 0.2});
        let s = scope(base.clone()).expect("cacheable");
        // The last question itself and delivery options do not change it.
        assert_eq!(
            scope(
                json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Something else"}], "temperature": 0.2, "stream": true, "user": "u1"})
            ),
            Some(s)
        );
        // Key order does not either.
        assert_eq!(
            scope(
                json!({"temperature": 0.2, "messages": [{"content": "Be brief.", "role": "system"}, {"role": "user", "content": "What is 2+2?"}]})
            ),
            Some(s)
        );
        // Everything that shapes the answer does.
        for changed in [
            json!({"messages": [{"role": "system", "content": "Be verbose."}, {"role": "user", "content": "What is 2+2?"}], "temperature": 0.2}),
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "temperature": 0.3}),
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "temperature": 0.2, "response_format": {"type": "json_object"}}),
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        ] {
            assert_ne!(scope(changed), Some(s));
        }
        let other_model = split(
            base.as_object().expect("object"),
            "gpt-4o-mini",
            &json!("cost"),
        )
        .map(|(s, _)| s);
        assert_ne!(other_model, Some(s));
        let other_mode = split(
            base.as_object().expect("object"),
            "gpt-4o",
            &json!("quality"),
        )
        .map(|(s, _)| s);
        assert_ne!(other_mode, Some(s));
    }

    #[test]
    fn only_a_final_text_question_is_cacheable() {
        assert!(scope(json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})).is_none());
        assert!(scope(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})).is_none());
        assert!(scope(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        )
        .is_some());
        let some = scope(json!({"messages": [{"role": "user", "content": "x"}]})).expect("s");
        assert_eq!(Scope::from_hex(&some.hex()), Some(some));
    }

    #[test]
    fn single_turn_means_no_tools_and_no_earlier_answers() {
        let single = |body: Value| single_turn(body.as_object().expect("object"));
        assert!(single(
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
        ));
        assert!(single(
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": []})
        ));
        assert!(!single(
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]})
        ));
        assert!(!single(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})
        ));
        assert!(!single(
            json!({"messages": [{"role": "tool", "tool_call_id": "1", "content": "b"}, {"role": "user", "content": "c"}]})
        ));
    }

    #[test]
    fn a_native_body_narrows_the_scope_to_itself() {
        let base = scope(json!({"messages": [{"role": "user", "content": "x"}]})).expect("s");
        let body = json!({"thinking": {"type": "enabled", "budget_tokens": 1024}});
        let body = body.as_object().expect("object");
        let native = base.for_native(body, &[]);
        assert_ne!(native, base);
        assert_eq!(native, base.for_native(body, &[]));
        let other = json!({"thinking": {"type": "enabled", "budget_tokens": 2048}});
        assert_ne!(
            base.for_native(other.as_object().expect("object"), &[]),
            native
        );
        assert_ne!(base.for_native(body, &[("anthropic-beta", b"x")]), native);
    }
}
