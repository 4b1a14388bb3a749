//! What p402 reads from a stream in the client's own dialect, passed on as
//! it came: the usage to charge, and the text to count when the stream is
//! cut off before its usage arrives. The dialect is known from the request
//! (the provider speaks the client's API), never guessed from the events.

use serde_json::Value;

use crate::catalog::Usage;
use crate::wire::request::Dialect;

use super::anthropic::native::Tally as MessagesTally;
use super::responses::Tally as ResponsesTally;

/// The usage so far of a native stream, in its dialect.
#[derive(Debug)]
pub enum Tally {
    /// An Anthropic Messages stream's.
    Messages(MessagesTally),
    /// An OpenAI Responses stream's.
    Responses(ResponsesTally),
}

impl Tally {
    /// An empty tally for a stream in `dialect`.
    pub(crate) fn new(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Messages => Tally::Messages(MessagesTally::default()),
            Dialect::Responses => Tally::Responses(ResponsesTally::default()),
        }
    }

    /// Reads one event; appends the text it generated to `text`, and says
    /// whether it generated anything.
    pub fn read(&mut self, data: &Value, text: &mut String) -> bool {
        match self {
            Tally::Messages(tally) => tally.read(data, text),
            Tally::Responses(tally) => tally.read(data, text),
        }
    }

    /// The usage the stream reported, once final.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Tally::Messages(tally) => tally.usage(),
            Tally::Responses(tally) => tally.usage(),
        }
    }

    /// The input counts of a stream cut off before its final usage, where
    /// the dialect says them first (Anthropic's `message_start`).
    pub fn partial(&self) -> Option<Usage> {
        match self {
            Tally::Messages(tally) => tally.partial(),
            Tally::Responses(_) => None,
        }
    }

    /// Web searches seen starting in a Responses stream, billed even when
    /// the stream is cut off before its final usage counts them (a Messages
    /// stream's are in its partial usage).
    pub fn searches_started(&self) -> u64 {
        match self {
            Tally::Messages(_) => 0,
            Tally::Responses(tally) => tally.searches_started(),
        }
    }

    /// What the stream said, when it was plain text with a finish: the
    /// content and `finish_reason` of the `chat.completion` it adds up to.
    pub fn plain(&self) -> Option<(&str, &Value)> {
        match self {
            Tally::Messages(tally) => tally.plain().whole(),
            Tally::Responses(tally) => tally.plain().whole(),
        }
    }
}

/// A whole answer in `dialect` as the `chat.completion` it would have been,
/// when that form can say all of it (see each dialect's `as_chat`).
pub fn as_chat(dialect: Dialect, bytes: &[u8], tool_calls: bool) -> Option<Value> {
    match dialect {
        Dialect::Messages => super::anthropic::native::as_chat(bytes, tool_calls),
        Dialect::Responses => super::responses::as_chat(bytes, tool_calls),
    }
}
