//! Background jobs of the Responses API, charged when their result is
//! fetched.
//!
//! `POST /v1/responses` with `background: true` is answered at once with
//! `status: "queued"` and no usage; the job runs afterwards at OpenAI and
//! is billed when it finishes. A budget cannot hold that (it refuses such
//! requests, see `pipeline::unseen`), but an unbudgeted one is still
//! ledgered: when the client fetches the finished job through p402
//! (`GET /v1/responses/{id}`, a forwarded path), the usage in it is priced
//! and charged to the fetching request's accounts, once per job. Whether a
//! job was charged is kept in the store under the account `job:{id}`, so
//! it holds across restarts; a process-wide set closes the window between
//! two fetches of one job before the first charge is on disk.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::catalog::{Catalog, Usage};
use crate::money::budget::{Account, Plan};
use crate::money::Usd;
use crate::store::{LedgerEntry, StoreError};

/// The most of a fetched job's body kept to read its usage; a larger one
/// is passed on but not charged (a logged warning says so).
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// Whether `GET path` fetches one response (`/v1/responses/{id}`, not its
/// input items).
pub fn is_fetch(path: &str) -> bool {
    path.strip_prefix("/v1/responses/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// A finished background job, as its fetched body says.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub id: String,
    pub model: String,
    pub usage: Usage,
}

/// The finished background job in a fetched body, if it is one: a
/// response that ran in the background, in a final state, with usage. The
/// body is the response object, or its stream (`?stream=true`), whose
/// final event carries the whole response.
pub fn finished(bytes: &[u8]) -> Option<Finished> {
    let value: Value = serde_json::from_slice(bytes)
        .ok()
        .or_else(|| streamed(bytes))?;
    if value.get("object").and_then(Value::as_str) != Some("response")
        || value.get("background").and_then(Value::as_bool) != Some(true)
    {
        return None;
    }
    let status = value.get("status").and_then(Value::as_str)?;
    if !matches!(status, "completed" | "incomplete" | "failed" | "cancelled") {
        return None;
    }
    let usage = crate::wire::responses::response_usage(&value)?;
    Some(Finished {
        id: value.get("id")?.as_str()?.to_string(),
        model: value.get("model")?.as_str()?.to_string(),
        usage,
    })
}

/// The response a fetched stream ends with: the `response` of its last
/// `response.completed`, `.incomplete` or `.failed` event.
fn streamed(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut last = None;
    // Events are separated by a blank line; an event's data may span
    // several `data:` lines, joined by newlines.
    for event in text.split("\n\n").flat_map(|e| e.split("\r\n\r\n")) {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let Ok(mut parsed) = serde_json::from_str::<Value>(&data.join("\n")) else {
            continue;
        };
        let kind = parsed.get("type").and_then(Value::as_str);
        if matches!(
            kind,
            Some("response.completed" | "response.incomplete" | "response.failed")
        ) {
            last = parsed.get_mut("response").map(Value::take);
        }
    }
    last
}

impl Finished {
    /// The account that records that this job was charged.
    fn marker(&self) -> Account {
        Account {
            key: Some(format!("job:{}", self.id)),
            label: format!("background job {}", self.id),
            limit: Usd::from_nanos(i64::MAX),
            code: "BUDGET_EXCEEDED",
            shared: false,
            lifetime: None,
            hourly: None,
        }
    }

    /// What the job cost on `provider`'s `model`, at catalog prices;
    /// `None` when the catalog has no price for it.
    pub fn cost(&self, catalog: &Catalog, provider: &str) -> Option<Usd> {
        let model = catalog.find_on(provider, &self.model)?;
        model.price.map(|price| price.cost(&self.usage))
    }
}

/// Job ids charged (or being charged) by this process.
fn charging() -> &'static Mutex<HashSet<String>> {
    static CHARGING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CHARGING.get_or_init(Mutex::default)
}

/// Charges `job`, as `entry` says (its cost and tokens filled in), to
/// `accounts`, unless it was charged before. Returns whether it charged.
pub async fn charge_once(
    book: &std::sync::Arc<crate::money::budget::Book>,
    job: &Finished,
    accounts: Vec<Account>,
    entry: &LedgerEntry,
) -> Result<bool, StoreError> {
    let marker = job.marker();
    {
        let mut charging = match charging().lock() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = marker.key.as_deref().unwrap_or_default();
        if charging.contains(&job.id) || book.store().totals(key)?.requests > 0 {
            return Ok(false);
        }
        charging.insert(job.id.clone());
    }
    let mut accounts: Vec<Account> = accounts.into_iter().filter(|a| !a.shared).collect();
    accounts.push(marker);
    // Nothing is held: the job has run and was billed; its cost is
    // settled as it is, even past what an account has left.
    let reserved = book.reserve(accounts, |_| {
        Ok(Plan {
            reserve: Usd::ZERO,
            output_limit: 0,
            lowered: false,
        })
    })?;
    match reserved {
        Ok((reservation, _)) => reservation.settle(entry).await.map(|()| true),
        Err(_) => Err(StoreError::Invariant(
            "a reservation of nothing was refused",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_finished_background_responses_with_usage_are_charged() {
        let done = json!({"id": "resp_9", "object": "response", "background": true,
            "status": "completed", "model": "gpt-4o",
            "usage": {"input_tokens": 10, "output_tokens": 4000,
                "output_tokens_details": {"reasoning_tokens": 100}}});
        let found = finished(done.to_string().as_bytes()).expect("finished");
        assert_eq!(found.id, "resp_9");
        assert_eq!(found.usage.output_tokens, 4000);
        for (key, value) in [
            ("status", json!("queued")),
            ("status", json!("in_progress")),
            ("background", json!(false)),
            ("usage", Value::Null),
            ("object", json!("list")),
        ] {
            let mut other = done.clone();
            other[key] = value;
            assert!(finished(other.to_string().as_bytes()).is_none(), "{other}");
        }
        assert!(finished(b"not json").is_none());
    }

    /// A fetch with `?stream=true` replays the job's events; the last one
    /// holds the whole response and its usage.
    #[test]
    fn a_streamed_fetch_is_read_from_its_final_event() {
        let done = json!({"id": "resp_7", "object": "response", "background": true,
            "status": "completed", "model": "gpt-4o",
            "usage": {"input_tokens": 12, "output_tokens": 30}});
        let created = json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_7", "object": "response", "background": true,
                "status": "in_progress", "model": "gpt-4o", "usage": null}});
        let completed =
            json!({"type": "response.completed", "sequence_number": 9, "response": done});
        let stream = format!(
            "event: response.created\ndata: {created}\n\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}}\n\nevent: response.completed\ndata: {completed}\n\n"
        );
        let job = finished(stream.as_bytes()).expect("finished");
        assert_eq!((job.id.as_str(), job.usage.output_tokens), ("resp_7", 30));
        // Cut off before its end: nothing to charge yet.
        let cut = stream
            .split("event: response.completed")
            .next()
            .unwrap_or_default();
        assert!(finished(cut.as_bytes()).is_none());
    }

    #[test]
    fn a_fetch_names_one_response() {
        assert!(is_fetch("/v1/responses/resp_1"));
        assert!(!is_fetch("/v1/responses/resp_1/input_items"));
        assert!(!is_fetch("/v1/responses/"));
        assert!(!is_fetch("/v1/responses"));
    }
}
