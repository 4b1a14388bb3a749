//! The Anthropic translation layer on arbitrary JSON: an OpenAI Chat
//! Completions body into a Messages request, a Messages answer into a
//! `chat.completion`, and an error answer into OpenAI's error shape.
//!
//! The first byte picks the `stream` flag and the error status; the rest
//! is the JSON.

#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use p402::wire::{anthropic, openai};
use serde_json::Value;

/// Statuses Anthropic answers with, and ones it does not.
const STATUSES: [u16; 8] = [400, 401, 402, 403, 429, 500, 529, 418];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(selector) % STATUSES.len()])
        .expect("a valid status");
    let (returned, error, _) = anthropic::translate_error(status, json);
    assert!(returned.is_client_error() || returned.is_server_error());
    assert!(error["error"]["message"].is_string(), "{error}");

    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    if let Value::Object(body) = &value {
        let stream = selector & 0x80 != 0;
        if let Ok(request) = anthropic::translate_request(body, "claude-fuzz", 1024, stream) {
            assert_eq!(request["model"], "claude-fuzz");
            assert!(request["max_tokens"].as_u64().is_some(), "{request}");
            let messages = request["messages"].as_array().expect("messages array");
            for message in messages {
                let role = message["role"].as_str().expect("a role");
                assert!(role == "user" || role == "assistant", "{request}");
            }
            serde_json::to_vec(&request).expect("serializes");
        }
    }
    if let Ok(answer) = anthropic::translate_response(&value) {
        assert_eq!(answer["object"], "chat.completion");
        assert!(answer["choices"][0]["message"].is_object(), "{answer}");
        let usage = openai::usage(&answer).expect("a translated answer has usage");
        assert!(usage.cached_input_tokens <= usage.input_tokens, "{answer}");
    }
});
