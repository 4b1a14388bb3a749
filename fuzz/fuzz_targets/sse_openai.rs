//! An OpenAI-compatible provider's SSE stream: event decoding
//! (`openai::decode_stream`, the code the relay runs on the upstream body)
//! and what the relay reads from each chunk (usage, generated text, cost).
//!
//! Checks that the events do not depend on where the network split the
//! bytes: the input decoded whole and in small chunks must agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p402::wire::openai;
use p402_fuzz::{chunked, drain, settle, split_size};

fuzz_target!(|data: &[u8]| {
    let whole = drain(openai::decode_stream(chunked(data, data.len())));
    let split = drain(openai::decode_stream(chunked(data, split_size(data))));
    assert_eq!(
        whole, split,
        "the events depend on how the bytes were chunked"
    );
    settle(&whole);
});
