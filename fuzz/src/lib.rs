//! What the fuzz targets share: feeding bytes to p402's SSE decoders the way
//! a network delivers them, and reading the events back the way the relay
//! (src/pipeline/relay.rs) does.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{stream, FutureExt, Stream, StreamExt};
use p402::catalog::{Price, Usage};
use p402::money::cost::{self, Costs, Used};
use p402::money::{PerMTok, Usd};
use p402::wire::{openai, EventStream, StreamEvent};
use serde_json::Value;

/// `data` in pieces of `size` bytes: an upstream's chunks split events,
/// lines and UTF-8 sequences anywhere.
pub fn chunked(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let pieces: Vec<Result<Bytes, Infallible>> = data
        .chunks(size.max(1))
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    stream::iter(pieces)
}

/// A chunk size picked by the input itself (1 to 16 bytes), so the fuzzer
/// explores where the splits fall.
pub fn split_size(data: &[u8]) -> usize {
    1 + data
        .iter()
        .fold(0usize, |sum, b| sum.wrapping_add(usize::from(*b)))
        % 16
}

/// One decoded event, comparable across runs: errors by their message.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Chunk(Value),
    Done,
    Error(String),
}

/// Reads events as the relay does: until `[DONE]` or the first error.
/// `created` is dropped from chunks, since the Anthropic translation stamps
/// it with the clock.
pub fn drain(mut events: EventStream) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        let next = events
            .next()
            .now_or_never()
            .expect("a stream over bytes in memory is always ready");
        match next {
            None => break,
            Some(Ok(StreamEvent::Done)) => {
                seen.push(Seen::Done);
                break;
            }
            Some(Err(e)) => {
                seen.push(Seen::Error(e.to_string()));
                break;
            }
            Some(Ok(StreamEvent::Native { name, .. })) => {
                seen.push(Seen::Error(format!("a native event from a translating decoder: {name}")));
                break;
            }
            Some(Ok(StreamEvent::Chunk(mut chunk))) => {
                if let Some(object) = chunk.as_object_mut() {
                    object.remove("created");
                }
                seen.push(Seen::Chunk(chunk));
            }
        }
    }
    seen
}

/// What the relay reads from every chunk: the usage, the generated text
/// when no usage came, and the cost and savings from those at a real price.
pub fn settle(events: &[Seen]) {
    let mut usage: Option<Usage> = None;
    let mut text = String::new();
    for event in events {
        let Seen::Chunk(chunk) = event else { continue };
        // Serializing back is what the relay does with every chunk.
        serde_json::to_vec(chunk).expect("a parsed chunk serializes");
        if let Some(reported) = openai::usage(chunk) {
            usage = Some(reported);
        }
        if usage.is_none() {
            cost::generated_text(chunk, "delta", &mut text);
        }
    }
    let used = Used::of(usage, 42, &text);
    let price = |input: f64, output: f64| Price {
        input: PerMTok::from_dollars(input).expect("price"),
        cached_input: PerMTok::from_dollars(input / 10.0).expect("price"),
        output: PerMTok::from_dollars(output).expect("price"),
        cache_write: PerMTok::from_dollars(input * 1.25).expect("price"),
        cache_write_1h: PerMTok::from_dollars(input * 2.0).expect("price"),
        web_search: Usd::from_dollars(0.01).expect("fee"),
    };
    let costs = Costs::of(
        Some(&used.usage),
        Some(price(0.15, 0.6)),
        Some(price(2.5, 10.0)),
    );
    let cost = costs.cost.expect("priced");
    assert!(
        cost.nanos() >= 0,
        "negative cost {cost:?} for {:?}",
        used.usage
    );
    let _ = costs.savings();
}
