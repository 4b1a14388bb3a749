//! Budget alerts: know before the cap (SPEC §14).
//!
//! Each budget (and each session) has thresholds, fractions of what it may
//! spend in its period (`[budgets.NAME] alert_at`, `[alerts]
//! session_alert_at`; `[0.8, 1.0]` by default). When a settlement takes
//! its spend to a threshold or past it, one alert is raised for that
//! threshold in that period: a WARN log line, a banner on the dashboard,
//! `p402_budget_alerts_total{budget,threshold}`, a desktop notification if
//! asked for, and a JSON POST to `[alerts] webhook_url`. A budget that
//! refuses a request for lack of money has reached its cap: that raises
//! the 1.0 threshold even if the last cents were never spent.
//!
//! On the request path an alert is only decided (a few integer compares
//! under a mutex) and handed to a background task ([`deliver`]), which
//! records it durably, announces it, and POSTs it, retrying with backoff.
//! The store remembers every alert raised, so a restart neither forgets
//! one that was due (it is delivered then) nor raises or sends one twice.
//! The decision is made from the spend itself, not from the moment it
//! crossed: an alert lost to a crash before it was recorded is raised
//! again by the next settlement of its account.

pub mod deliver;
mod desktop;

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{BudgetConfig, Period};
use crate::money::budget::{self, Account, Book};
use crate::money::Usd;
use crate::store::{Store, StoreError, Table};

/// An account watched for its thresholds: a file budget in its current
/// period, or a session.
#[derive(Debug, Clone)]
pub struct Watched {
    pub account: Account,
    /// The name alerts give it: the budget's, or `session:<id>`.
    pub name: String,
    /// `day`, `week`, `month`, `total`, or `session`.
    pub period: &'static str,
    /// The first day of the period (none for `total` and sessions).
    pub period_start: Option<NaiveDate>,
    pub thresholds: Vec<f64>,
}

impl Watched {
    /// A budget that is not shared (a shared one's spend is in Redis).
    pub fn budget(name: &str, config: &BudgetConfig, account: Account, now: DateTime<Utc>) -> Self {
        let today = now.with_timezone(&chrono::Local).date_naive();
        Watched {
            account,
            name: name.to_string(),
            period: match config.period {
                Period::Day => "day",
                Period::Week => "week",
                Period::Month => "month",
                Period::Total => "total",
            },
            period_start: budget::period_start(config.period, today),
            thresholds: config.thresholds(),
        }
    }

    pub fn session(id: &str, account: Account, thresholds: &[f64]) -> Self {
        Watched {
            account,
            name: format!("session:{id}"),
            period: "session",
            period_start: None,
            thresholds: thresholds.to_vec(),
        }
    }

    /// The key of its alert for `threshold`: one per account (which names
    /// the period) and threshold.
    fn key(&self, threshold: f64) -> Option<String> {
        let account = self.account.key.as_ref()?;
        Some(format!("{account}@{threshold}"))
    }
}

/// One alert, as the webhook receives it and the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable for this budget, period and threshold: a receiver that sees
    /// it twice (p402 died between a POST and its record) can tell.
    pub id: String,
    pub budget: String,
    pub period: String,
    pub period_start: Option<String>,
    pub threshold: f64,
    pub used_usd: f64,
    pub budget_usd: f64,
    /// When it was raised (RFC 3339).
    pub at: String,
    /// Why: the spend reached the threshold, or the budget refused a
    /// request it could not pay for.
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Spent,
    Refused,
}

/// Where an alert's webhook POST stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Webhook {
    /// No `webhook_url` when it was raised.
    Off,
    Pending,
    Delivered,
}

/// An alert as the store keeps it, with its delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub alert: Alert,
    pub webhook: Webhook,
    /// POSTs tried so far.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// Decides alerts and hands them to the delivery task. One per p402.
pub struct Alerts {
    /// Keys of the alerts raised so far, in this process or before it.
    raised: Mutex<HashSet<String>>,
    outbox: mpsc::UnboundedSender<Alert>,
    /// Taken once by the delivery task.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Alert>>>,
}

impl Alerts {
    /// Knows every alert the store has, so that none is raised twice. A
    /// store that cannot be read is logged: its alerts may then be raised
    /// again, which is better than none.
    pub fn open(store: &Store) -> Self {
        let mut raised = HashSet::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = match store.scan(Table::Alerts, after.as_deref(), 1024) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!("the alerts already raised cannot be read: {e}");
                    break;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            raised.extend(
                page.iter()
                    .map(|(key, _)| String::from_utf8_lossy(key).into_owned()),
            );
        }
        let (outbox, inbox) = mpsc::unbounded_channel();
        Alerts {
            raised: Mutex::new(raised),
            outbox,
            inbox: Mutex::new(Some(inbox)),
        }
    }

    /// The alerts raised from now on, for the delivery task.
    pub fn take_inbox(&self) -> Option<mpsc::UnboundedReceiver<Alert>> {
        lock(&self.inbox).take()
    }

    /// After a settlement: raises the thresholds each account's spend has
    /// reached that have not been raised yet.
    pub fn observe(&self, book: &Book, watched: &[Watched]) {
        for w in watched {
            let Ok(spent) = book.settled(&w.account) else {
                continue;
            };
            for &threshold in &w.thresholds {
                if reached(spent, w.account.limit, threshold) {
                    self.raise(w, threshold, spent, Reason::Spent);
                }
            }
        }
    }

    /// A request refused because the account keyed `key` cannot pay for
    /// it: its budget is at its cap, which raises its 1.0 threshold.
    pub fn refused(&self, book: &Book, watched: &[Watched], key: &str) {
        let Some(w) = watched
            .iter()
            .find(|w| w.account.key.as_deref() == Some(key))
        else {
            return;
        };
        let spent = book.settled(&w.account).unwrap_or(Usd::ZERO);
        for &threshold in w.thresholds.iter().filter(|t| **t >= 1.0) {
            self.raise(w, threshold, spent, Reason::Refused);
        }
    }

    fn raise(&self, w: &Watched, threshold: f64, spent: Usd, reason: Reason) {
        let Some(key) = w.key(threshold) else { return };
        if !lock(&self.raised).insert(key.clone()) {
            return;
        }
        let alert = Alert {
            id: key,
            budget: w.name.clone(),
            period: w.period.to_string(),
            period_start: w.period_start.map(|d| d.to_string()),
            threshold,
            used_usd: spent.to_dollars(),
            budget_usd: w.account.limit.to_dollars(),
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            reason,
        };
        if self.outbox.send(alert).is_err() {
            tracing::warn!(budget = %w.name, threshold, "a budget alert was raised with no delivery task running");
        }
    }
}

/// Whether `spent` is at least `threshold` of `limit`, in exact integers
/// (parts per million of the limit).
fn reached(spent: Usd, limit: Usd, threshold: f64) -> bool {
    if limit <= Usd::ZERO {
        return false;
    }
    let ppm = (threshold * 1e6).round() as i128;
    i128::from(spent.nanos()) * 1_000_000 >= ppm * i128::from(limit.nanos())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The alerts the store has, newest first: for `GET /api/v2/alerts` and
/// the dashboard's banner.
pub fn list(store: &Store, limit: usize) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(Table::Alerts, after.as_deref(), 1024)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, value) in page {
            match serde_json::from_slice::<Record>(&value) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!("a malformed alert record is skipped: {e}"),
            }
        }
    }
    records.sort_by(|a, b| b.alert.at.cmp(&a.alert.at));
    records.truncate(limit);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn thresholds_are_reached_exactly() {
        let limit = Usd::from_nanos(1_000_000);
        assert!(!reached(Usd::from_nanos(499_999), limit, 0.5));
        assert!(reached(Usd::from_nanos(500_000), limit, 0.5));
        assert!(!reached(Usd::from_nanos(999_999), limit, 1.0));
        assert!(reached(Usd::from_nanos(1_000_000), limit, 1.0));
        assert!(!reached(Usd::from_nanos(5), Usd::ZERO, 0.5));
    }

    #[tokio::test]
    async fn an_alert_is_raised_once_per_threshold_and_period_also_after_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let book = Book::new(store.clone());
        let account = Account::session("s", Usd::from_nanos(1000));
        let watched = vec![Watched::session("s", account.clone(), &[0.5, 0.8, 1.0])];
        let alerts = Alerts::open(&store);
        let mut inbox = alerts.take_inbox().expect("inbox");
        let spend = |nanos: i64, id: &str| {
            let book = Arc::clone(&book);
            let account = account.clone();
            let id = id.to_string();
            async move {
                let (held, _) = book
                    .reserve(vec![account], |_| {
                        Ok(budget::Plan {
                            reserve: Usd::from_nanos(nanos),
                            output_limit: 1,
                            lowered: false,
                        })
                    })
                    .expect("store")
                    .expect("fits");
                let mut entry = crate::store::tests_support::entry(&id);
                entry.cost_nanos = nanos;
                held.settle(&entry).await.expect("settled");
            }
        };
        spend(400, "req_1").await;
        alerts.observe(&book, &watched);
        assert!(inbox.try_recv().is_err(), "40% raises nothing");
        spend(450, "req_2").await;
        alerts.observe(&book, &watched);
        let raised: Vec<f64> = std::iter::from_fn(|| inbox.try_recv().ok())
            .map(|a| a.threshold)
            .collect();
        assert_eq!(raised, vec![0.5, 0.8], "85% crosses two thresholds at once");
        alerts.observe(&book, &watched);
        assert!(inbox.try_recv().is_err(), "each threshold once");
        alerts.refused(&book, &watched, "session:s");
        let refused = inbox.try_recv().expect("the cap");
        assert_eq!((refused.threshold, refused.reason), (1.0, Reason::Refused));

        // What the store remembers is not raised again by a new process.
        let record = |alert: Alert| Record {
            alert,
            webhook: Webhook::Off,
            attempts: 0,
            last_error: None,
        };
        deliver::save(&store, &record(refused))
            .await
            .expect("saved");
        let again = Alerts::open(&store);
        let mut inbox = again.take_inbox().expect("inbox");
        again.refused(&book, &watched, "session:s");
        assert!(inbox.try_recv().is_err(), "remembered across a restart");
        assert_eq!(list(&store, 10).expect("list").len(), 1);
    }
}
