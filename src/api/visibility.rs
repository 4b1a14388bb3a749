//! What one local key may see of what others did, with `[server] api_keys`.
//!
//! A session belongs to the key that created it (`sessions`): other keys
//! can neither use it nor read it. The same holds wherever a session shows
//! up: a ledger entry charged to it, a row of the report by session, its
//! remaining budget among the metrics. Aggregates (totals, spend per
//! provider or model, the file-declared budgets) stay visible to every
//! key; what is one session's needs its owner's key.
//!
//! Clearing the cache removes every key's answers, so it is an admin
//! action: with keys, only the first key in `api_keys` (the operator's,
//! which p402's own commands present) may do it.

use std::collections::HashSet;

use crate::money::sessions::Session;
use crate::ops::state::{AppState, Runtime};
use crate::server::error::{ApiError, ErrorKind};
use crate::store::StoreError;

/// What the caller of one API request may see.
#[derive(Debug, Default)]
pub struct Viewer {
    /// Sessions created by other keys.
    foreign: HashSet<String>,
    admin: bool,
}

impl Viewer {
    /// The view of `caller` (the request's local key, checked already).
    /// Without `api_keys`, everyone sees everything.
    pub fn of(
        state: &AppState,
        runtime: &Runtime,
        caller: Option<&str>,
    ) -> Result<Viewer, StoreError> {
        let keys = &runtime.config().server.api_keys;
        let Some(first) = keys.first() else {
            return Ok(Viewer {
                foreign: HashSet::new(),
                admin: true,
            });
        };
        let foreign = state
            .book()
            .store()
            .sessions::<Session>()?
            .into_iter()
            .filter(|session| !session.belongs_to(caller))
            .map(|session| session.id)
            .collect();
        Ok(Viewer {
            foreign,
            admin: caller == Some(first.get_ref().as_str()),
        })
    }

    /// Whether what is charged to `session` (or to none) is the caller's
    /// to see.
    pub fn sees(&self, session: Option<&str>) -> bool {
        session.is_none_or(|id| !self.foreign.contains(id))
    }

    /// Refuses an admin action to a key that is not the admin's.
    pub fn admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::Forbidden,
            "admin_only",
            format!(
                "{what} affects every key, so only the first key in [server] api_keys (the operator's) may do it"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_sees_its_own_and_unowned_sessions() {
        let viewer = Viewer {
            foreign: HashSet::from(["ses_other".to_string()]),
            admin: false,
        };
        assert!(viewer.sees(None));
        assert!(viewer.sees(Some("ses_mine")));
        assert!(!viewer.sees(Some("ses_other")));
        assert_eq!(
            viewer.admin("clearing the cache").map_err(|e| e.code),
            Err("admin_only")
        );
    }
}
