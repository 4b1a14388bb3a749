//! Anthropic's Messages SSE stream translated into OpenAI chunks
//! (`anthropic::translate_stream`, the code the relay runs on the upstream
//! body), then read as the relay reads it.
//!
//! Checks that the events do not depend on where the network split the
//! bytes, and that every translated chunk is an OpenAI chunk or an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p402::wire::anthropic;
use p402_fuzz::{chunked, drain, settle, split_size, Seen};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let whole = drain(anthropic::translate_stream(chunked(data, data.len())));
    let split = drain(anthropic::translate_stream(chunked(data, split_size(data))));
    assert_eq!(
        whole, split,
        "the events depend on how the bytes were chunked"
    );
    for event in &whole {
        let Seen::Chunk(chunk) = event else { continue };
        if chunk.get("error").is_some() {
            continue;
        }
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        let choices = chunk["choices"].as_array().expect("choices array");
        assert!(choices.len() <= 1, "{chunk}");
        if choices.is_empty() {
            assert!(chunk["usage"].is_object(), "{chunk}");
        }
        for choice in choices {
            assert!(choice["delta"].is_object(), "{chunk}");
            assert!(
                matches!(choice["finish_reason"], Value::Null | Value::String(_)),
                "{chunk}"
            );
        }
    }
    settle(&whole);
});
