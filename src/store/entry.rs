//! What the store keeps of each request (a [`LedgerEntry`]) and of each
//! account ([`Totals`]): the records, apart from how they are stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// One settled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// When the entry was made (settlement time, UTC); rollups bucket by it.
    pub time: DateTime<Utc>,
    /// p402's id for the request (UUIDv7, so ledger keys sort by time).
    pub request_id: String,
    /// The p402 session charged, if the request named one.
    pub session: Option<String>,
    /// Names of the file-declared budgets charged.
    pub budgets: Vec<String>,
    /// The provider that answered, or `cache` for a cache hit.
    pub provider: String,
    /// The model that answered; none for a cache hit or a forwarded request.
    pub model: Option<String>,
    /// Prompt tokens, as the provider reported them (or as counted).
    pub input_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `input_tokens` the provider served from its prompt
    /// cache, priced lower; zero in entries written before it was kept.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// What was charged, in nano-dollars: zero for a cache hit.
    pub cost_nanos: i64,
    /// What the same usage would have cost on the model asked for (or the
    /// reference model), in nano-dollars; savings are this less the cost.
    pub direct_nanos: i64,
    /// Answered from p402's cache.
    pub cached: bool,
    /// Cost computed from counted tokens because the provider sent no usage.
    pub estimated: bool,
    /// The client's own session (an agent run: Claude Code's
    /// `X-Claude-Code-Session-Id`), for reports to group by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
    /// The API the client called (`chat`, `messages`, `responses`,
    /// `embeddings`); absent for entries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door: Option<String>,
    /// For a request forwarded as it is (files, audio, ...): its method and
    /// path, the status it got and the bytes each way. Unpriced: p402 does
    /// not read such requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<Forwarded>,
}

/// What is known of a request forwarded as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub(crate) endpoint: String,
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl LedgerEntry {
    /// The one place an entry is built: request `request_id`, served by
    /// `provider` (or `cache`) now, nothing counted or charged yet. Each
    /// outcome fills in what it knows (see `Charge::entry` for the payers).
    pub fn new(request_id: String, provider: String) -> Self {
        LedgerEntry {
            time: Utc::now(),
            request_id,
            session: None,
            budgets: Vec::new(),
            provider,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cost_nanos: 0,
            direct_nanos: 0,
            cached: false,
            estimated: false,
            client_session: None,
            door: None,
            forwarded: None,
        }
    }

    /// What was charged, as money.
    pub fn cost(&self) -> Usd {
        Usd::from_nanos(self.cost_nanos)
    }
}

/// What an account has been charged, as kept in the `spend` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Everything charged to the account, in nano-dollars.
    pub cost_nanos: i64,
    /// What the same requests would have cost direct, in nano-dollars.
    pub direct_nanos: i64,
    /// Requests charged to the account.
    pub requests: u64,
}

impl Totals {
    /// Everything charged, as money.
    pub fn cost(&self) -> Usd {
        Usd::from_nanos(self.cost_nanos)
    }

    pub(crate) fn direct(&self) -> Usd {
        Usd::from_nanos(self.direct_nanos)
    }
}
