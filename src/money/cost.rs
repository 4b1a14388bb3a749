//! What one request used and what that cost: the figures the ledger, the
//! budgets and `p402_metadata` all agree on.
//!
//! Apart from the charge (who pays) and the metadata (what the caller is
//! told), because both read them and neither owns them.

use serde_json::Value;

use crate::catalog::{Price, Usage};
use crate::money::Usd;

/// What a request actually used, and whether it had to be counted by p402.
#[derive(Debug, Clone, Copy)]
pub struct Used {
    /// The token counts: the provider's, or p402's own count.
    pub usage: Usage,
    pub(crate) estimated: bool,
}

impl Used {
    /// The provider's usage, or p402's own count of the prompt and of the
    /// answer text when the provider reported none.
    pub fn of(reported: Option<Usage>, input_tokens: u64, answer_text: &str) -> Self {
        match reported {
            Some(usage) => Used {
                usage,
                estimated: false,
            },
            None => Used {
                usage: Usage {
                    input_tokens,
                    output_tokens: crate::wire::tokens::count_text(answer_text),
                    ..Usage::default()
                },
                estimated: true,
            },
        }
    }
}

/// The costs of one answered request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    /// What the request cost on the model that served it; `None` when that
    /// model has no price.
    pub cost: Option<Usd>,
    pub(crate) direct: Option<Usd>,
}

impl Costs {
    /// `cost` at the serving model's prices, `direct` at the baseline's; an
    /// unknown price gives `None`, never a made-up figure.
    pub fn of(usage: Option<&Usage>, price: Option<Price>, baseline: Option<Price>) -> Self {
        Costs {
            cost: usage.zip(price).map(|(u, p)| p.cost(u)),
            direct: usage.zip(baseline).map(|(u, p)| p.cost(u)),
        }
    }

    /// `direct` less `cost`, when both are known.
    pub fn savings(&self) -> Option<Usd> {
        self.cost
            .zip(self.direct)
            .map(|(cost, direct)| direct - cost)
    }
}

/// Appends the text a response generated (content and tool-call
/// arguments) to `text`: from `choices[].message` of an answer, or from
/// `choices[].delta` of a stream chunk (`part` names which). Counted when
/// the provider reports no usage.
pub fn generated_text(object: &Value, part: &str, text: &mut String) {
    let choices = object
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for choice in choices {
        let message = &choice[part];
        // Reasoning streamed as text (`reasoning_content` from DeepSeek and
        // others, `reasoning` from OpenRouter and Groq) is billed as output
        // like the answer: a stream cut off during it is estimated with it.
        for key in ["reasoning_content", "reasoning", "content"] {
            if let Some(piece) = message.get(key).and_then(Value::as_str) {
                text.push_str(piece);
            }
        }
        let calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for call in calls {
            if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str) {
                text.push_str(arguments);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn streamed_reasoning_counts_as_generated_text() {
        let mut text = String::new();
        for delta in [
            json!({"reasoning_content": "Let me think. "}),
            json!({"reasoning": "Still thinking. "}),
            json!({"content": "Answer."}),
            json!({"tool_calls": [{"function": {"arguments": "{}"}}]}),
        ] {
            generated_text(&json!({"choices": [{"delta": delta}]}), "delta", &mut text);
        }
        assert_eq!(text, "Let me think. Still thinking. Answer.{}");
    }
}
