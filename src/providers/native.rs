//! What p402 reads from a stream in the client's own dialect, passed on as
//! it came: the usage to charge, and the text to count when the stream is
//! cut off before its usage arrives.

use serde_json::Value;

use crate::catalog::Usage;

use super::anthropic::native::Tally as MessagesTally;
use super::responses::Tally as ResponsesTally;

/// The usage so far of a native stream, whichever dialect it is in (their
/// event types do not overlap: Responses' all start with `response.`).
#[derive(Debug, Default)]
pub struct Tally {
    messages: MessagesTally,
    responses: ResponsesTally,
}

impl Tally {
    /// Reads one event; appends the text it generated to `text`, and says
    /// whether it generated anything.
    pub fn read(&mut self, data: &Value, text: &mut String) -> bool {
        let responses = data
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("response."));
        if responses {
            self.responses.read(data, text)
        } else {
            self.messages.read(data, text)
        }
    }

    /// The usage the stream reported, once final.
    pub fn usage(&self) -> Option<Usage> {
        self.responses.usage().or_else(|| self.messages.usage())
    }

    /// The input counts of a stream cut off before its final usage.
    pub fn partial(&self) -> Option<Usage> {
        self.messages.partial()
    }
}
