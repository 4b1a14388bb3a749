//! The charge stage: who pays for a request, and what is held for it
//! while it runs (settling is the finish's).
//!
//! Spend is charged to the request's session if it names one; else to the
//! budget bound to its local API key; else to `[budgets.default]`; and
//! always also to `[budgets.global]`. A `max_cost` (from the request or
//! `[limits]`) is one more account, with no history. Every request, budgeted
//! or not, is written to the ledger when it settles.

use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::money::budget::{self, Account, Book, Reservation, Shortfall};
use crate::money::sessions::{Session, Sessions};
use crate::money::team::{TeamError, TeamHold};
use crate::money::Usd;
use crate::ops::alerts::Watched;
use crate::ops::state::Runtime;
use crate::router::Candidate;
use crate::server::error::{Classify, ErrorKind};
use crate::store::{Condition, StoreError};
use crate::wire::request::P402Options;

/// Why a request cannot be charged as it asks.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// The session it names is not the caller's, or not usable.
    #[error(transparent)]
    Session(#[from] crate::money::sessions::SessionError),
    /// The ledger cannot be written, so a charge could not be made durable.
    #[error("p402 cannot record charges now: {0}; budgeted requests are refused until the ledger can be written (see /health)")]
    LedgerUnavailable(String),
    #[error("budget store: {0}")]
    Store(#[from] StoreError),
    /// A shared budget's store (Redis) cannot be reached: the request is
    /// refused rather than let through uncounted.
    #[error("{0}; requests charged to a shared budget are refused until it answers again (other requests are not affected)")]
    Team(#[from] TeamError),
    /// Every candidate is unpriced, and a budget must never pay $0.
    #[error("this request is charged to a budget, and its model has no price in the catalog: add input_per_mtok and output_per_mtok under [[models]] in p402.toml (0 for a free local model)")]
    Unpriced,
    /// No candidate could be reserved for: the account in the way, what it
    /// has left and what the cheapest try needed.
    #[error("{label} has ${remaining:.6} left; this request needs at least ${needed:.6} on {model} (the cheapest eligible model, with a {min}-token answer)", remaining = .remaining.to_dollars(), needed = .needed.to_dollars(), min = budget::MIN_USEFUL_OUTPUT)]
    Exhausted {
        label: String,
        /// The account's key in the store, if it has one.
        account: Option<String>,
        code: &'static str,
        remaining: Usd,
        needed: Usd,
        model: String,
        session_remaining: Option<Usd>,
    },
    /// The account's burn-rate cap (`max_usd_per_hour`) has no room for the
    /// cheapest try until some of the last hour's spend ages out.
    #[error("{label} has spent or holds ${spent:.6} of its ${per_hour:.6} per hour in the last hour; this request needs at least ${needed:.6} on {model}; retry in {wait} s (a burn-rate cap stops a runaway loop)", spent = .spent.to_dollars(), per_hour = .per_hour.to_dollars(), needed = .needed.to_dollars(), wait = .wait.as_secs())]
    SpendRate {
        label: String,
        per_hour: Usd,
        spent: Usd,
        needed: Usd,
        model: String,
        wait: std::time::Duration,
    },
}

impl Classify for ChargeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ChargeError::Session(e) => e.kind(),
            ChargeError::LedgerUnavailable(_) => ErrorKind::Unavailable,
            ChargeError::Store(_) => ErrorKind::Internal,
            ChargeError::Team(_) => ErrorKind::Unavailable,
            ChargeError::Unpriced => ErrorKind::InvalidRequest,
            ChargeError::Exhausted { .. } => ErrorKind::BudgetExceeded,
            ChargeError::SpendRate { .. } => ErrorKind::RateLimited,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ChargeError::Session(e) => e.code(),
            ChargeError::LedgerUnavailable(_) => "ledger_unavailable",
            ChargeError::Store(_) => "internal_error",
            ChargeError::Team(_) => "team_store_unavailable",
            ChargeError::Unpriced => "unpriced_model",
            ChargeError::Exhausted { code, .. } => code,
            ChargeError::SpendRate { .. } => "spend_rate_exceeded",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ChargeError::SpendRate { wait, .. } => Some(wait.as_secs().max(1)),
            _ => None,
        }
    }

    fn extra(&self) -> Option<Map<String, Value>> {
        match self {
            ChargeError::Exhausted {
                remaining,
                needed,
                session_remaining,
                ..
            } => {
                let mut extra = Map::new();
                extra.insert("remaining_usd".into(), json!(remaining.to_dollars()));
                extra.insert("needed_usd".into(), json!(needed.to_dollars()));
                if let Some(left) = session_remaining {
                    extra.insert("session_remaining_usd".into(), json!(left.to_dollars()));
                }
                Some(extra)
            }
            ChargeError::SpendRate {
                per_hour, spent, ..
            } => {
                let mut extra = Map::new();
                extra.insert("max_usd_per_hour".into(), json!(per_hour.to_dollars()));
                extra.insert("last_hour_usd".into(), json!(spent.to_dollars()));
                Some(extra)
            }
            _ => None,
        }
    }
}

/// The accounts one request is charged to.
#[derive(Debug, Clone, Default)]
pub struct Charge {
    pub accounts: Vec<Account>,
    pub session: Option<Session>,
    /// Names of the file-declared budgets among the accounts.
    pub budgets: Vec<String>,
    /// The accounts whose thresholds raise alerts (`alerts`): the
    /// session's and the budgets'.
    pub watched: Vec<Watched>,
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
    /// The ledger entry of request `id` served by `provider`, charged to
    /// these payers (its session and named budgets); the outcome fills in
    /// the rest.
    pub fn entry(
        &self,
        id: &crate::server::ids::RequestId,
        provider: &str,
    ) -> crate::store::LedgerEntry {
        let mut entry = crate::store::LedgerEntry::new(id.to_string(), provider.to_string());
        entry.session = self.session.as_ref().map(|s| s.id.clone());
        entry.budgets = self.budgets.clone();
        entry
    }

    /// A budgeted request is refused while the ledger cannot be written
    /// (a stuck or failing disk): its charge could not be made durable,
    /// and waiting on the disk would hold the request for nothing.
    /// Unbudgeted requests go on; their entries are written once the disk
    /// recovers, or logged as lost.
    pub fn ensure_ledger(&self, book: &Book) -> Result<(), ChargeError> {
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
        Err(ChargeError::LedgerUnavailable(why))
    }

    /// The accounts of a request with these options (also one p402 does
    /// not read, forwarded as it is).
    pub fn for_options(
        runtime: &Runtime,
        sessions: &Sessions,
        book: &Book,
        options: &P402Options,
        local_key: Option<&str>,
    ) -> Result<Self, ChargeError> {
        let config = runtime.config();
        let now = Utc::now();
        let mut charge = Charge::default();
        let add_budget = |charge: &mut Charge, name: &str| {
            let found = config.budgets.iter().find(|(key, _)| key.get_ref() == name);
            if let Some((key, budget)) = found {
                if charge.budgets.iter().any(|b| b == name) {
                    return;
                }
                let account = Account::for_budget(key.get_ref(), budget, now);
                // A shared budget's spend is in Redis, not in this book.
                if !budget.shared {
                    charge
                        .watched
                        .push(Watched::budget(name, budget, account.clone(), now));
                }
                charge.accounts.push(account);
                charge.budgets.push(name.to_string());
            }
        };
        if let Some(id) = &options.session_id {
            let session = sessions
                .usable(book, id, local_key)
                .map_err(ChargeError::Session)?;
            let account = session.account();
            charge.watched.push(Watched::session(
                &session.id,
                account.clone(),
                &config.alerts.session_alert_at,
            ));
            charge.accounts.push(account);
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
            (options.max_cost, "max_cost"),
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
    /// Shared accounts are held in the team store first (one Redis round
    /// trip), and the local ones for no more than it granted.
    pub async fn reserve(
        &self,
        book: &std::sync::Arc<Book>,
        candidate: &Candidate,
        input_tokens: u64,
        output: budget::Output,
    ) -> Result<Reserved, ChargeError> {
        if !self.is_budgeted() {
            return Ok(Reserved::Unbudgeted);
        }
        let Some(price) = candidate.price() else {
            return Ok(Reserved::Unpriced);
        };
        let model_max = candidate.model.as_ref().and_then(|m| m.max_output);
        let (shared, local): (Vec<Account>, Vec<Account>) =
            self.accounts.iter().cloned().partition(|a| a.shared);
        let mut team_hold = None;
        if let Some(first) = shared.first() {
            let Some(team) = book.team() else {
                return Err(ChargeError::Team(TeamError::NotConfigured(
                    first.label.clone(),
                )));
            };
            let (wanted, minimum) = budget::bounds(&price, input_tokens, output, model_max);
            match team.reserve(&shared, wanted, minimum).await? {
                Ok(hold) => team_hold = Some(TeamHold::new(team, hold)),
                Err(short) => {
                    return Ok(Reserved::Short(Shortfall {
                        account: shared[short.index].clone(),
                        remaining: short.remaining.max(Usd::ZERO),
                        needed: minimum,
                        wait: None,
                    }))
                }
            }
        }
        let granted = team_hold.as_ref().map(TeamHold::amount);
        let reserved = book.reserve(local, |available| {
            let available = granted.map_or(available, |g| g.min(available));
            budget::plan(&price, input_tokens, output, model_max, available)
        })?;
        // Dropping an unused team hold gives it back.
        Ok(match reserved {
            Ok((reservation, plan)) => {
                let reservation = match team_hold {
                    Some(hold) => reservation.with_team(hold),
                    None => reservation,
                };
                Reserved::Held(reservation, plan.output_limit)
            }
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

    /// The 402 for a request no candidate could be reserved for
    /// ([`Charge::exhausted`]), with the budget's 1.0 alert raised: a
    /// budget that cannot pay is at its cap. Every door refuses this way.
    pub fn refuse(
        &self,
        state: &crate::ops::state::AppState,
        shortfalls: &[(Shortfall, String)],
    ) -> ChargeError {
        let error = self.exhausted(shortfalls, state.book());
        if let ChargeError::Exhausted {
            account: Some(key), ..
        } = &error
        {
            state.alerts().refused(state.book(), &self.watched, key);
        }
        error
    }

    /// The 402 for a request no candidate could be reserved for, from the
    /// shortfall of the cheapest try.
    pub fn exhausted(&self, shortfalls: &[(Shortfall, String)], book: &Book) -> ChargeError {
        match shortfalls.iter().min_by_key(|(s, _)| s.needed) {
            Some((cheapest, model)) if cheapest.wait.is_some() => {
                let per_hour = cheapest
                    .account
                    .hourly
                    .as_ref()
                    .map_or(Usd::ZERO, |cap| cap.per_hour);
                ChargeError::SpendRate {
                    label: cheapest.account.label.clone(),
                    per_hour,
                    spent: per_hour - cheapest.remaining,
                    needed: cheapest.needed,
                    model: model.clone(),
                    wait: cheapest.wait.unwrap_or_default(),
                }
            }
            Some((cheapest, model)) => ChargeError::Exhausted {
                label: cheapest.account.label.clone(),
                account: cheapest.account.key.clone(),
                code: cheapest.account.code,
                remaining: cheapest.remaining,
                needed: cheapest.needed,
                model: model.clone(),
                session_remaining: self.session_remaining(book),
            },
            None => ChargeError::Store(StoreError::Invariant("no shortfall to report")),
        }
    }
}
