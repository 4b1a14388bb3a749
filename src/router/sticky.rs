//! Prompt-cache stickiness: the turns of one conversation go to the model
//! that served the previous turn, because providers discount input they
//! have cached, and that cache lives on one provider only.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use serde_json::Value;

/// Conversations remembered; the least recently continued are forgotten.
const CAPACITY: usize = 10_000;

/// A hash of a conversation's opening (see [`Sticky::key`]); a hash, not
/// the text, so that remembering 10,000 conversations costs little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationKey(u64);

/// Where each recent conversation was last served.
pub struct Sticky {
    served: Mutex<LruCache<ConversationKey, (String, String)>>,
}

impl Default for Sticky {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Sticky {
            served: Mutex::new(LruCache::new(capacity)),
        }
    }
}

impl Sticky {
    /// A conversation is known by its opening: the system and developer
    /// messages and the first user message, which every later turn repeats
    /// and which form the prefix a provider caches.
    pub fn key(messages: &[Value]) -> Option<ConversationKey> {
        Self::opening(messages)
    }

    /// The key of a request that continues a conversation (it carries an
    /// earlier assistant turn); a fresh question that happens to open the
    /// same way is routed on its own merits.
    pub fn continuing(messages: &[Value]) -> Option<ConversationKey> {
        let continues = messages
            .iter()
            .any(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
        if continues {
            Self::opening(messages)
        } else {
            None
        }
    }

    /// The messages are hashed as values, not written out as text first
    /// (a third of the routing stage's instructions when they were), so
    /// the same members in another order make the same key.
    fn opening(messages: &[Value]) -> Option<ConversationKey> {
        let mut hasher = DefaultHasher::new();
        let mut first_user = false;
        for message in messages {
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            match role {
                "system" | "developer" => message.hash(&mut hasher),
                "user" => {
                    message.hash(&mut hasher);
                    first_user = true;
                    break;
                }
                _ => {}
            }
        }
        first_user.then(|| ConversationKey(hasher.finish()))
    }

    /// The `(provider, model)` that served this conversation last.
    pub fn get(&self, key: ConversationKey) -> Option<(String, String)> {
        let mut served = match self.served.lock() {
            Ok(served) => served,
            Err(poisoned) => poisoned.into_inner(),
        };
        served.get(&key).cloned()
    }

    /// Remembers that `provider` and `model` served this conversation's
    /// latest turn.
    pub fn record(&self, key: ConversationKey, provider: &str, model: &str) {
        let mut served = match self.served.lock() {
            Ok(served) => served,
            Err(poisoned) => poisoned.into_inner(),
        };
        served.put(key, (provider.to_string(), model.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_turns_share_the_key_of_the_opening() {
        let turn1 = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": "hi"}),
        ];
        let mut turn2 = turn1.clone();
        turn2.push(json!({"role": "assistant", "content": "hello"}));
        turn2.push(json!({"role": "user", "content": "more"}));
        assert_eq!(Sticky::key(&turn1), Sticky::key(&turn2));
        assert_eq!(Sticky::continuing(&turn1), None);
        assert_eq!(Sticky::continuing(&turn2), Sticky::key(&turn1));
        let other = vec![
            json!({"role": "system", "content": "be verbose"}),
            json!({"role": "user", "content": "hi"}),
        ];
        assert_ne!(Sticky::key(&turn1), Sticky::key(&other));
        let sticky = Sticky::default();
        let key = Sticky::key(&turn1).expect("key");
        sticky.record(key, "groq", "llama");
        assert_eq!(
            sticky.get(key),
            Some(("groq".to_string(), "llama".to_string()))
        );
    }
}
