//! Budget-capped sessions: `POST/GET/PATCH/DELETE /api/v2/sessions`.
//!
//! A session is a named budget a client creates for one job (an agent run,
//! a batch) and names in its requests. Its definition is stored in the database; its
//! spend is the `session:<id>` account in the ledger's totals.
//!
//! With local API keys, a session belongs to the key that created it: other
//! keys can neither charge, read, list, extend nor end it (they are told it
//! does not exist), and each key may hold only so many active sessions.

use std::sync::Mutex;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::money::budget::{Account, Book};
use crate::money::burn_rate::HourlyCap;
use crate::money::Usd;
use crate::server::error::{Classify, ErrorKind};
use crate::store::StoreError;

/// Why a session cannot be made, read, changed or charged. Another key's
/// session is `NotFound`, so that its existence is not revealed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session `{0}` does not exist")]
    NotFound(String),
    /// Ended or expired: it charges nothing more.
    #[error("session `{id}` has {status}; create a new one or extend it with PATCH")]
    NotActive { id: String, status: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("this key has {0} active sessions, the most [limits] max_active_sessions_per_key allows; end one (DELETE /api/v2/sessions/ID) or let one expire")]
    TooMany(usize),
    #[error("sessions cannot be read or written now: {0}")]
    Store(#[from] StoreError),
}

impl Classify for SessionError {
    fn kind(&self) -> ErrorKind {
        match self {
            SessionError::NotFound(_) | SessionError::NotActive { .. } => ErrorKind::NotFound,
            SessionError::Invalid(_) => ErrorKind::InvalidRequest,
            SessionError::TooMany(_) => ErrorKind::RateLimited,
            // A stuck or failing database is a 503 the client may retry;
            // anything else is p402's own fault.
            SessionError::Store(StoreError::Stalled(_) | StoreError::Commit(_)) => {
                ErrorKind::Unavailable
            }
            SessionError::Store(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SessionError::NotFound(_) => "session_not_found",
            SessionError::NotActive { .. } => "session_not_active",
            SessionError::Invalid(_) => "invalid_session",
            SessionError::TooMany(_) => "too_many_sessions",
            SessionError::Store(StoreError::Stalled(_) | StoreError::Commit(_)) => {
                "ledger_unavailable"
            }
            SessionError::Store(_) => "internal_error",
        }
    }
}

/// Hours a session lives when the client does not say.
pub const DEFAULT_HOURS: f64 = 24.0;
const MAX_BUDGET_USD: f64 = 1_000_000.0;
const MAX_HOURS: f64 = 24.0 * 366.0 * 10.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub budget_nanos: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// A salted digest of the local key that created it (see [`digest`]);
    /// `None` when p402 had no keys then. The key itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The routing mode of its requests that name none (`p402 run --mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::router::mode::ModeChoice>,
    /// Its burn-rate cap, in nano-dollars over any rolling hour
    /// (`p402 run --max-usd-per-hour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nanos_per_hour: Option<i64>,
}

/// What a session records of the key that created it:
/// `salted$<salt>$<SHA-256 of salt and key>`, with a random salt of its
/// own. A copy of the database then holds no digest that one table of
/// guesses (or a digest seen elsewhere) could look a key up by: each
/// session's would have to be attacked alone. Sessions written before
/// the salt hold the bare SHA-256 of the key, still recognised.
fn digest(key: &str) -> String {
    let salt = uuid::Uuid::new_v4().simple().to_string();
    format!("{SALTED}{salt}${}", salted(&salt, key))
}

const SALTED: &str = "salted$";

fn salted(salt: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"p402 session owner\0");
    hasher.update(salt.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `owner` (a recorded digest) is `key`'s, in constant time.
fn owned_by(owner: &str, key: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = match owner
        .strip_prefix(SALTED)
        .and_then(|rest| rest.split_once('$'))
    {
        Some((salt, _)) => format!("{SALTED}{salt}${}", salted(salt, key)),
        None => {
            use sha2::{Digest, Sha256};
            hex(&Sha256::digest(key.as_bytes()))
        }
    };
    expected.as_bytes().ct_eq(owner.as_bytes()).into()
}

impl Session {
    /// Whether `caller` (the request's local key) may use this session.
    pub fn belongs_to(&self, caller: Option<&str>) -> bool {
        match (&self.owner, caller) {
            (None, _) => true,
            (Some(owner), Some(key)) => owned_by(owner, key),
            (Some(_), None) => false,
        }
    }

    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.ended_at.is_some() {
            "ended"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "active"
        }
    }

    pub fn account(&self) -> Account {
        let hourly = self
            .max_nanos_per_hour
            .map(|nanos| HourlyCap::session(&self.id, Usd::from_nanos(nanos)));
        Account::session(&self.id, Usd::from_nanos(self.budget_nanos)).with_hourly(hourly)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    budget_usd: f64,
    name: Option<String>,
    expires_in_hours: Option<f64>,
    mode: Option<crate::router::mode::ModeChoice>,
    max_usd_per_hour: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    add_budget_usd: Option<f64>,
    extend_hours: Option<f64>,
}

fn dollars(field: &str, value: f64) -> Result<Usd, SessionError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_BUDGET_USD) {
        return Err(SessionError::Invalid(format!(
            "{field} must be a positive amount of USD up to {MAX_BUDGET_USD}, found {value}"
        )));
    }
    Usd::from_dollars(value)
        .ok_or_else(|| SessionError::Invalid(format!("{field} is out of range")))
}

fn hours(field: &str, value: f64) -> Result<Duration, SessionError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_HOURS) {
        return Err(SessionError::Invalid(format!(
            "{field} must be a positive number of hours, found {value}"
        )));
    }
    Ok(Duration::milliseconds((value * 3_600_000.0).round() as i64))
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SessionError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SessionError::Invalid(format!("invalid session request: {e}")))
}

/// The sessions API over the shared budget book. Writes (create, patch,
/// end) go through one mutex so that two PATCHes cannot lose an update.
pub struct Sessions {
    write: Mutex<()>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            write: Mutex::new(()),
        }
    }
}

impl Sessions {
    /// The session a request names, if it can still be charged by `caller`.
    pub fn usable(
        &self,
        book: &Book,
        id: &str,
        caller: Option<&str>,
    ) -> Result<Session, SessionError> {
        let session = self.load(book, id, caller)?;
        match session.status(Utc::now()) {
            "active" => Ok(session),
            status => Err(SessionError::NotActive {
                id: id.to_string(),
                status,
            }),
        }
    }

    pub async fn create(
        &self,
        book: &Book,
        bytes: &[u8],
        caller: Option<&str>,
        max_active: u32,
    ) -> Result<Value, SessionError> {
        let body: CreateBody = parse(bytes)?;
        let budget = dollars("budget_usd", body.budget_usd)?;
        let per_hour = body
            .max_usd_per_hour
            .map(|usd| dollars("max_usd_per_hour", usd))
            .transpose()?;
        let lifetime = hours(
            "expires_in_hours",
            body.expires_in_hours.unwrap_or(DEFAULT_HOURS),
        )?;
        if body.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(SessionError::Invalid(
                "name must be at most 200 characters".into(),
            ));
        }
        let now = Utc::now();
        let session = Session {
            id: format!("ses_{}", uuid::Uuid::now_v7().simple()),
            name: body.name,
            budget_nanos: budget.nanos(),
            created_at: now,
            expires_at: now + lifetime,
            ended_at: None,
            owner: caller.map(digest),
            mode: body.mode,
            max_nanos_per_hour: per_hour.map(Usd::nanos),
        };
        {
            let _guard = self.lock();
            if let Some(key) = caller {
                let active = book
                    .store()
                    .sessions::<Session>()?
                    .iter()
                    .filter(|s| s.belongs_to(Some(key)) && s.status(now) == "active")
                    .count();
                if active >= max_active as usize {
                    return Err(SessionError::TooMany(active));
                }
            }
            book.store().put_session(&session.id, &session)?;
        }
        // Durable before the client learns the id.
        book.store().flush().await?;
        view(book, &session)
    }

    pub fn get(&self, book: &Book, id: &str, caller: Option<&str>) -> Result<Value, SessionError> {
        let session = self.load(book, id, caller)?;
        view(book, &session)
    }

    /// The sessions `caller` may see, newest first.
    pub fn list(&self, book: &Book, caller: Option<&str>) -> Result<Value, SessionError> {
        self.list_where(book, |s| s.belongs_to(caller))
    }

    /// Every session, whoever created it: for the operator's CLI, which
    /// reads the database itself.
    pub fn list_all(&self, book: &Book) -> Result<Value, SessionError> {
        self.list_where(book, |_| true)
    }

    fn list_where(
        &self,
        book: &Book,
        keep: impl Fn(&Session) -> bool,
    ) -> Result<Value, SessionError> {
        let mut sessions: Vec<Session> = book.store().sessions()?;
        sessions.retain(|s| keep(s));
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let data = sessions
            .iter()
            .map(|s| view(book, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({"object": "list", "data": data}))
    }

    pub async fn patch(
        &self,
        book: &Book,
        id: &str,
        bytes: &[u8],
        caller: Option<&str>,
    ) -> Result<Value, SessionError> {
        let body: PatchBody = parse(bytes)?;
        if body.add_budget_usd.is_none() && body.extend_hours.is_none() {
            return Err(SessionError::Invalid(
                "nothing to change: send add_budget_usd and/or extend_hours".into(),
            ));
        }
        let add = body
            .add_budget_usd
            .map(|v| dollars("add_budget_usd", v))
            .transpose()?;
        let extend = body
            .extend_hours
            .map(|v| hours("extend_hours", v))
            .transpose()?;
        let session = self.update(book, id, caller, |session| {
            if let Some(add) = add {
                session.budget_nanos = (Usd::from_nanos(session.budget_nanos) + add).nanos();
            }
            if let Some(extend) = extend {
                // Extending an expired session counts from now, not from its past end.
                session.expires_at = session.expires_at.max(Utc::now()) + extend;
            }
        })?;
        book.store().flush().await?;
        view(book, &session)
    }

    /// Reads, changes and writes an unended session under the write lock.
    fn update(
        &self,
        book: &Book,
        id: &str,
        caller: Option<&str>,
        change: impl FnOnce(&mut Session),
    ) -> Result<Session, SessionError> {
        let _guard = self.lock();
        let mut session = self.load(book, id, caller)?;
        if session.ended_at.is_some() {
            return Err(SessionError::NotActive {
                id: id.to_string(),
                status: "ended",
            });
        }
        change(&mut session);
        book.store().put_session(&session.id, &session)?;
        Ok(session)
    }

    pub async fn end(
        &self,
        book: &Book,
        id: &str,
        caller: Option<&str>,
    ) -> Result<Value, SessionError> {
        let ending = self.update(book, id, caller, |session| {
            session.ended_at = Some(Utc::now())
        });
        let session = match ending {
            Ok(session) => session,
            // Ending an ended session again changes nothing.
            Err(SessionError::NotActive { .. }) => self.load(book, id, caller)?,
            Err(e) => return Err(e),
        };
        book.store().flush().await?;
        view(book, &session)
    }

    /// A session `caller` may see; another key's is "not found", so that
    /// its existence is not revealed either.
    fn load(&self, book: &Book, id: &str, caller: Option<&str>) -> Result<Session, SessionError> {
        book.store()
            .session::<Session>(id)?
            .filter(|session| session.belongs_to(caller))
            .ok_or_else(|| SessionError::NotFound(id.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.write.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The SPEC's session object, with spend from the ledger's totals.
pub fn view(book: &Book, session: &Session) -> Result<Value, SessionError> {
    let account = session.account();
    let key = account.key.clone().unwrap_or_default();
    let totals = book.store().totals(&key)?;
    let remaining = book.remaining(&account)?;
    let used = book.settled(&account)?;
    let total = Usd::from_nanos(session.budget_nanos);
    let reserved = total - used - remaining;
    Ok(json!({
        "object": "session",
        "session_id": session.id,
        "name": session.name,
        "mode": session.mode,
        "max_usd_per_hour": session.max_nanos_per_hour.map(|n| Usd::from_nanos(n).to_dollars()),
        "budget": {
            "total_usd": total.to_dollars(),
            "used_usd": used.to_dollars(),
            "remaining_usd": remaining.max(Usd::ZERO).to_dollars(),
            "reserved_usd": reserved.max(Usd::ZERO).to_dollars(),
        },
        "requests": totals.requests,
        "direct_cost_usd": totals.direct().to_dollars(),
        "savings_usd": (totals.direct() - totals.cost()).to_dollars(),
        "status": session.status(Utc::now()),
        "created_at": time(session.created_at),
        "expires_at": time(session.expires_at),
        "ended_at": session.ended_at.map(time),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_salted_digests_each_its_own() {
        let key = "k1-SECRETVALUE";
        let (a, b) = (digest(key), digest(key));
        assert_ne!(a, b, "a salt of each session's own");
        let bare = hex(&{
            use sha2::{Digest, Sha256};
            Sha256::digest(key.as_bytes())
        });
        assert!(!a.contains(&bare));
        assert!(owned_by(&a, key) && owned_by(&b, key));
        assert!(!owned_by(&a, "k2"));
        // A session recorded before the salt still belongs to its key.
        assert!(owned_by(&bare, key));
        assert!(!owned_by(&bare, "k2"));
        assert!(!owned_by("salted$", key));
    }
}
