//! Whether a request may use the cache at all, decided from the request
//! and the config alone before any lookup: which requests are cacheable,
//! the scope their answers are shared within, and how long a stored answer
//! lives.
//!
//! An answer is reused only where the same request would have got an
//! equivalent one: not when the client asked for several choices or for
//! sampling hot enough that answers are meant to differ, not when the
//! conversation does not end in a plain question ([`super::scope::split`]),
//! and, with local API keys, not across keys unless the config says so.
//! Whether a finished answer is complete enough to store is decided where
//! it is assembled ([`crate::cache::replay::storable`]).

use serde_json::Value;

use super::{scope, Probe};
use crate::config::{CacheConfig, SemanticMatching};
use crate::wire::request::ChatRequest;

/// The probe for `chat`, or `None` when it may be neither answered from
/// nor stored in the cache. Not for `cache: false`, `n > 1`, a temperature
/// above `max_temperature`, or a conversation not ending in a question.
/// With local API keys, each key has scopes of its own unless
/// `share_across_keys` is set.
pub(super) fn probe(
    chat: &ChatRequest,
    mode: &Value,
    config: &CacheConfig,
    local_key: Option<&str>,
) -> Option<Probe> {
    if !config.enabled || chat.options.cache == Some(false) {
        return None;
    }
    if chat
        .body
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return None;
    }
    // The OpenAI default when the request names none.
    let temperature = chat
        .body
        .get("temperature")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    if temperature > config.max_temperature {
        return None;
    }
    let (mut scope, question) = scope::split(&chat.body, &chat.model, mode)?;
    let mut semantic = match config.semantic {
        SemanticMatching::Always => true,
        SemanticMatching::Off => false,
        SemanticMatching::SingleTurn => scope::single_turn(&chat.body),
    };
    // A body that says more than its translation (thinking, server tools,
    // stored state) is its own scope, and only an exact repeat of it hits.
    if let Some(native) = chat.native.as_ref().filter(|n| !n.exact()) {
        let headers: Vec<(&str, &[u8])> = native
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        scope = scope.for_native(&native.body, &headers);
        semantic = false;
    }
    let scope = match local_key {
        Some(key) if !config.share_across_keys => scope.for_key(key),
        _ => scope,
    };
    let ttl = chat.options.cache_ttl.unwrap_or(config.ttl_seconds);
    let probe = Probe::new(scope, question, None, ttl);
    Some(if semantic { probe } else { probe.exact_only() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::request::P402Options;

    fn chat(body: Value, options: P402Options) -> ChatRequest {
        let Value::Object(body) = body else {
            panic!("a test body is an object");
        };
        ChatRequest {
            body,
            model: "gpt-4o-mini".into(),
            stream: false,
            client_wants_usage: false,
            options,
            native: None,
            raw: None,
        }
    }

    fn question(extra: Value) -> ChatRequest {
        let mut body = json!({"messages": [{"role": "user", "content": "What is redb?"}]});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        chat(body, P402Options::default())
    }

    #[test]
    fn what_may_not_use_the_cache() {
        let config = CacheConfig::default();
        let mode = json!("cost");
        assert!(probe(&question(json!({})), &mode, &config, None).is_some());
        assert!(probe(&question(json!({"n": 1})), &mode, &config, None).is_some());
        assert!(probe(&question(json!({"n": 2})), &mode, &config, None).is_none());
        assert!(probe(&question(json!({"temperature": 1.0})), &mode, &config, None).is_some());
        assert!(probe(&question(json!({"temperature": 1.2})), &mode, &config, None).is_none());
        let hot = CacheConfig {
            max_temperature: 0.5,
            ..CacheConfig::default()
        };
        assert!(
            probe(&question(json!({})), &mode, &hot, None).is_none(),
            "an unset temperature counts as 1"
        );
        let disabled = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(probe(&question(json!({})), &mode, &disabled, None).is_none());
        let mut opted_out = question(json!({}));
        opted_out.options.cache = Some(false);
        assert!(probe(&opted_out, &mode, &config, None).is_none());
        let answer_last = chat(
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
            P402Options::default(),
        );
        assert!(probe(&answer_last, &mode, &config, None).is_none());
    }

    #[test]
    fn similarity_is_for_single_turns_without_tools_unless_configured() {
        let config = CacheConfig::default();
        let mode = json!("cost");
        let semantic = |body: Value, config: &CacheConfig| {
            let Value::Object(body) = body else {
                panic!("a test body is an object");
            };
            probe(
                &chat(Value::Object(body), P402Options::default()),
                &mode,
                config,
                None,
            )
            .map(|p| p.semantic)
        };
        let single = json!({"messages": [{"role": "user", "content": "What is redb?"}]});
        let tools = json!({"messages": [{"role": "user", "content": "What is redb?"}],
            "tools": [{"type": "function", "function": {"name": "read_file"}}]});
        let turns = json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "What is redb?"}]});
        assert_eq!(semantic(single.clone(), &config), Some(true));
        assert_eq!(semantic(tools.clone(), &config), Some(false));
        assert_eq!(semantic(turns.clone(), &config), Some(false));
        let always = CacheConfig {
            semantic: SemanticMatching::Always,
            ..CacheConfig::default()
        };
        assert_eq!(semantic(tools, &always), Some(true));
        assert_eq!(semantic(turns, &always), Some(true));
        let off = CacheConfig {
            semantic: SemanticMatching::Off,
            ..CacheConfig::default()
        };
        assert_eq!(semantic(single, &off), Some(false));
    }

    #[test]
    fn a_body_its_translation_cannot_carry_matches_only_itself() {
        let config = CacheConfig::default();
        let mode = json!("cost");
        let plain = question(json!({}));
        let native = |thinking: u64, exact: bool| {
            let mut request = question(json!({}));
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 4096,
                "thinking": {"type": "enabled", "budget_tokens": thinking},
                "messages": [{"role": "user", "content": "What is redb?"}]});
            request.native = Some(crate::wire::request::Native {
                dialect: crate::wire::request::Dialect::Messages,
                body: body.as_object().cloned().unwrap_or_default(),
                headers: Vec::new(),
                fidelity: if exact {
                    crate::wire::request::Fidelity::Exact
                } else {
                    crate::wire::request::Fidelity::Approximate
                },
                dropped: Vec::new(),
            });
            probe(&request, &mode, &config, None).expect("cacheable")
        };
        let plain = probe(&plain, &mode, &config, None).expect("cacheable");
        let thinking = native(1024, false);
        assert_ne!(thinking.scope, plain.scope);
        assert!(!thinking.semantic);
        assert_ne!(native(2048, false).scope, thinking.scope);
        assert_eq!(native(1024, false).scope, thinking.scope);
        // What translates is the same question as on the chat door.
        assert_eq!(native(1024, true).scope, plain.scope);
    }

    #[test]
    fn keys_get_scopes_of_their_own_unless_shared_and_ttl_follows_the_request() {
        let config = CacheConfig::default();
        let mode = json!("cost");
        let scope_for = |config: &CacheConfig, key: Option<&str>| {
            probe(&question(json!({})), &mode, config, key).map(|p| p.scope)
        };
        let plain = scope_for(&config, None);
        assert!(plain.is_some());
        assert_ne!(scope_for(&config, Some("a")), plain);
        assert_ne!(scope_for(&config, Some("a")), scope_for(&config, Some("b")));
        let shared = CacheConfig {
            share_across_keys: true,
            ..CacheConfig::default()
        };
        assert_eq!(scope_for(&shared, Some("a")), plain);

        let found = probe(&question(json!({})), &mode, &config, None);
        assert_eq!(found.map(|p| p.ttl), Some(config.ttl_seconds));
        let mut short = question(json!({}));
        short.options.cache_ttl = Some(60);
        assert_eq!(probe(&short, &mode, &config, None).map(|p| p.ttl), Some(60));
    }
}
