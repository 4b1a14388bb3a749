//! Who pays for a request, and how it settles.
//!
//! Spend is charged to the request's session if it names one; else to the
//! budget bound to its local API key; else to `[budgets.default]`; and
//! always also to `[budgets.global]`. A `max_cost` (from the request or
//! `[limits]`) is one more account, with no history. Every request, budgeted
//! or not, is written to the ledger when it settles.

use chrono::{Local, Utc};
use serde_json::{json, Map, Value};

use crate::budget::{self, Account, Book, Reservation, Shortfall};
use crate::catalog::Usage;
use crate::error::{ApiError, ErrorKind};
use crate::ids::RequestId;
use crate::metadata::Costs;
use crate::money::Usd;
use crate::request::ChatRequest;
use crate::router::Candidate;
use crate::sessions::{Session, Sessions};
use crate::state::Runtime;
use crate::store::{Condition, LedgerEntry};

/// The accounts one request is charged to.
#[derive(Debug, Clone, Default)]
pub struct Charge {
    pub accounts: Vec<Account>,
    pub session: Option<Session>,
    /// Names of the file-declared budgets among the accounts.
    pub budgets: Vec<String>,
}

/// The outcome of reserving for one candidate.
pub enum Reserved {
    /// Nothing to reserve: the request is charged to no budget.
    Unbudgeted,
    /// Money held, and the output limit the request must go out with: the
    /// one the money was reserved for.
    Held(Reservation, u32),
    /// No price: a budgeted request never runs on a model charged as $0.
    Unpriced,
    /// The accounts cannot pay even for a useful minimum on this candidate.
    Short(Shortfall),
}

impl Charge {
    /// A budgeted request is refused while the ledger cannot be written
    /// (a stuck or failing disk): its charge could not be made durable,
    /// and waiting on the disk would hold the request for nothing.
    /// Unbudgeted requests go on; their entries are written once the disk
    /// recovers, or logged as lost.
    pub fn ensure_ledger(&self, book: &Book) -> Result<(), ApiError> {
        if self.accounts.is_empty() {
            return Ok(());
        }
        let why = match book.store().condition() {
            Condition::Ok => return Ok(()),
            Condition::Failing(reason) => format!("its last write failed ({reason})"),
            Condition::Stalled(for_) => {
                format!("a write has been stuck for {} s", for_.as_secs())
            }
        };
        Err(ApiError::new(
            ErrorKind::Unavailable,
            "ledger_unavailable",
            format!(
                "p402 cannot record charges now: {why}; budgeted requests are refused until the ledger can be written (see /health)"
            ),
        ))
    }

    pub fn resolve(
        runtime: &Runtime,
        sessions: &Sessions,
        book: &Book,
        chat: &ChatRequest,
        local_key: Option<&str>,
    ) -> Result<Self, ApiError> {
        let config = runtime.config();
        let now = Local::now();
        let mut charge = Charge::default();
        let add_budget = |charge: &mut Charge, name: &str| {
            let found = config.budgets.iter().find(|(key, _)| key.get_ref() == name);
            if let Some((key, budget)) = found {
                if charge.budgets.iter().any(|b| b == name) {
                    return;
                }
                let limit = Usd::from_dollars(*budget.budget_usd.get_ref()).unwrap_or(Usd::ZERO);
                charge
                    .accounts
                    .push(Account::budget(key.get_ref(), limit, budget.period, now));
                charge.budgets.push(name.to_string());
            }
        };
        if let Some(id) = &chat.options.session_id {
            let session = sessions.usable(book, id, local_key)?;
            charge.accounts.push(session.account());
            charge.session = Some(session);
        }
        // A session narrows a budget, never widens it: its requests are
        // charged to the key's budget (or the default) as well.
        let keyed = local_key.and_then(|key| {
            config
                .budgets
                .iter()
                .find(|(_, b)| b.keys.iter().any(|k| k.get_ref() == key))
                .map(|(name, _)| name.get_ref().clone())
        });
        match keyed {
            Some(name) => add_budget(&mut charge, &name),
            None => add_budget(&mut charge, "default"),
        }
        add_budget(&mut charge, "global");
        let caps = [
            (chat.options.max_cost, "max_cost"),
            (
                config
                    .limits
                    .max_cost_per_request_usd
                    .as_ref()
                    .map(|c| *c.get_ref()),
                "[limits] max_cost_per_request_usd",
            ),
        ];
        for (cap, label) in caps {
            if let Some(usd) = cap.and_then(Usd::from_dollars) {
                charge.accounts.push(Account::cap(usd, label));
            }
        }
        Ok(charge)
    }

    pub fn is_budgeted(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// Reserves the worst case of `candidate` against every account, and
    /// says the output limit to put on the request if it had to be lowered.
    pub fn reserve(
        &self,
        book: &std::sync::Arc<Book>,
        candidate: &Candidate,
        input_tokens: u64,
        output_limit: Option<u32>,
    ) -> Result<Reserved, ApiError> {
        if !self.is_budgeted() {
            return Ok(Reserved::Unbudgeted);
        }
        let Some(price) = candidate.price() else {
            return Ok(Reserved::Unpriced);
        };
        let model_max = candidate.model.as_ref().and_then(|m| m.max_output);
        let reserved = book
            .reserve(self.accounts.clone(), |available| {
                budget::plan(&price, input_tokens, output_limit, model_max, available)
            })
            .map_err(|e| ApiError::internal(format!("budget store: {e}")))?;
        Ok(match reserved {
            Ok((reservation, plan)) => Reserved::Held(reservation, plan.output_limit),
            Err(shortfall) => Reserved::Short(shortfall),
        })
    }

    /// What the request's session has left, for the metadata.
    pub fn session_remaining(&self, book: &Book) -> Option<Usd> {
        let session = self.session.as_ref()?;
        book.remaining(&session.account())
            .ok()
            .map(|r| r.max(Usd::ZERO))
    }

    pub fn session_remaining_json(&self, book: &Book) -> Option<Value> {
        self.session_remaining(book).map(|r| json!(r.to_dollars()))
    }
}

/// The 402 for a request no candidate could be reserved for: which account
/// stands in the way, what it has left and what the cheapest try needed.
pub fn shortfall_error(
    shortfalls: &[(Shortfall, String)],
    charge: &Charge,
    book: &Book,
) -> ApiError {
    let Some((cheapest, model)) = shortfalls.iter().min_by_key(|(s, _)| s.needed) else {
        return ApiError::internal("no shortfall to report");
    };
    let mut error = ApiError::new(
        ErrorKind::BudgetExceeded,
        cheapest.account.code,
        format!(
            "{} has ${:.6} left; this request needs at least ${:.6} on {} (the cheapest eligible model, with a {}-token answer)",
            cheapest.account.label,
            cheapest.remaining.to_dollars(),
            cheapest.needed.to_dollars(),
            model,
            budget::MIN_USEFUL_OUTPUT
        ),
    );
    let mut extra = Map::new();
    extra.insert(
        "remaining_usd".into(),
        json!(cheapest.remaining.to_dollars()),
    );
    extra.insert("needed_usd".into(), json!(cheapest.needed.to_dollars()));
    if let Some(remaining) = charge.session_remaining_json(book) {
        extra.insert("session_remaining_usd".into(), remaining);
    }
    error.extra = Some(Box::new(extra));
    error
}

/// What a request actually used, and whether it had to be counted by p402.
#[derive(Debug, Clone, Copy)]
pub struct Used {
    pub usage: Usage,
    pub estimated: bool,
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
                    output_tokens: crate::tokens::count_text(answer_text),
                    ..Usage::default()
                },
                estimated: true,
            },
        }
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
        if let Some(content) = message.get("content").and_then(Value::as_str) {
            text.push_str(content);
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

pub fn ledger_entry(
    request_id: &RequestId,
    charge: &Charge,
    candidate: &Candidate,
    used: &Used,
    costs: &Costs,
) -> LedgerEntry {
    LedgerEntry {
        time: Utc::now(),
        request_id: request_id.to_string(),
        session: charge.session.as_ref().map(|s| s.id.clone()),
        budgets: charge.budgets.clone(),
        provider: candidate.provider.name.clone(),
        model: Some(candidate.model_name().to_string()),
        input_tokens: used.usage.input_tokens,
        output_tokens: used.usage.output_tokens,
        cached_input_tokens: used.usage.cached_input_tokens,
        cost_nanos: costs.cost.unwrap_or(Usd::ZERO).nanos(),
        direct_nanos: costs.direct.or(costs.cost).unwrap_or(Usd::ZERO).nanos(),
        cached: false,
        estimated: used.estimated,
    }
}

/// Settles a request: its reservation (if budgeted) and the ledger. A
/// failure to write is logged, not sent to the client as an error: the
/// answer exists and was paid for, and the writer keeps the entry and
/// writes it once the disk recovers. An unbudgeted request does not wait on
/// a stuck or failing store: its entry is queued. Returns the warning for
/// the caller's metadata when the entry is not on disk yet.
pub async fn settle(
    book: &Book,
    reservation: Option<Reservation>,
    entry: &LedgerEntry,
) -> Option<String> {
    // Whether the entry is on disk now.
    let written = match reservation {
        Some(reservation) => reservation.settle(entry).await.map(|()| true),
        None if book.store().condition() == Condition::Ok => {
            book.store().record(entry, &[]).await.map(|()| true)
        }
        None => book.store().record_queued(entry, &[]).map(|()| false),
    };
    match written {
        Ok(true) => None,
        Ok(false) => {
            tracing::warn!(request_id = %entry.request_id, "the ledger cannot be written now; the entry is kept until it can");
            Some(LEDGER_WARNING.to_string())
        }
        Err(e) => {
            tracing::error!(request_id = %entry.request_id, "could not record the request in the ledger yet (kept until it can be written): {e}");
            Some(LEDGER_WARNING.to_string())
        }
    }
}

/// What an answer's metadata says when its ledger entry could not be
/// written at once.
pub const LEDGER_WARNING: &str = "p402 cannot write its ledger now (see /health); this request's entry is kept in memory and written once it can";
