//! The background task that records, announces and delivers alerts.
//!
//! Never on a request's path: a slow or dead webhook receiver delays
//! nothing but its own alerts. Each alert is recorded durably before it is
//! announced, and its record says whether its POST is still due, so an
//! alert due at a restart is delivered by the next p402, and one delivered
//! is not sent again. (A p402 killed between a POST and its record sends
//! that one again; the alert's `id` lets a receiver see it twice.)

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{desktop, Alert, Record, Webhook};
use crate::ops::metrics::AlertLabels;
use crate::ops::state::AppState;
use crate::store::{Op, Store, StoreError, Table, Write};

/// The wait after the first failed POST; doubled after each, up to
/// [`BACKOFF_AT_MOST`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_AT_MOST: Duration = Duration::from_secs(300);
/// How long a receiver may take to answer one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// An alert whose POST is due at `due`.
struct Due {
    record: Record,
    due: Instant,
}

/// Runs until p402 stops: delivers the alerts the store still owes, then
/// every alert raised.
pub async fn run(state: AppState, mut inbox: mpsc::UnboundedReceiver<Alert>) {
    let store = state.book().store().clone();
    let mut due: Vec<Due> = match super::list(&store, usize::MAX) {
        // Oldest first, in the order they were raised.
        Ok(records) => records
            .into_iter()
            .rev()
            .filter(|r| r.webhook == Webhook::Pending)
            .map(|record| Due {
                record,
                due: Instant::now(),
            })
            .collect(),
        Err(e) => {
            tracing::error!("the alerts still to deliver cannot be read: {e}");
            Vec::new()
        }
    };
    loop {
        let next = due.iter().map(|d| d.due).min();
        tokio::select! {
            raised = inbox.recv() => match raised {
                Some(alert) => {
                    if let Some(record) = take_in(&state, &store, alert).await {
                        due.push(Due { record, due: Instant::now() });
                    }
                }
                None => return,
            },
            () = sleep_until(next) => {}
        }
        let now = Instant::now();
        for item in due.iter_mut().filter(|d| d.due <= now) {
            try_post(&state, &store, item).await;
        }
        due.retain(|d| d.record.webhook == Webhook::Pending);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records a new alert and announces it; returns it if its POST is due.
async fn take_in(state: &AppState, store: &Store, alert: Alert) -> Option<Record> {
    let runtime = state.runtime();
    let config = &runtime.config().alerts;
    let record = Record {
        webhook: if config.webhook().is_some() {
            Webhook::Pending
        } else {
            Webhook::Off
        },
        alert,
        attempts: 0,
        last_error: None,
    };
    if let Err(e) = save(store, &record).await {
        // Still announced; a restart raises it again from the spend.
        tracing::error!(alert = %record.alert.id, "a budget alert could not be recorded: {e}");
    }
    let alert = &record.alert;
    tracing::warn!(
        budget = %alert.budget,
        period = %alert.period,
        threshold = alert.threshold,
        used_usd = alert.used_usd,
        budget_usd = alert.budget_usd,
        "{}",
        headline(alert)
    );
    state
        .metrics()
        .budget_alerts
        .get_or_create(&AlertLabels {
            budget: alert.budget.clone(),
            threshold: alert.threshold.to_string(),
        })
        .inc();
    if config.desktop {
        desktop::notify(headline(alert), detail(alert));
    }
    (record.webhook == Webhook::Pending).then_some(record)
}

/// What an alert says, in a line.
pub fn headline(alert: &Alert) -> String {
    let percent = (alert.threshold * 100.0).round();
    match alert.reason {
        super::Reason::Spent => format!(
            "budget {} has used {percent}% of its {} budget",
            alert.budget, alert.period
        ),
        super::Reason::Refused => format!(
            "budget {} is at its cap: it refused a request it cannot pay for",
            alert.budget
        ),
    }
}

fn detail(alert: &Alert) -> String {
    format!("${:.4} of ${:.2} used", alert.used_usd, alert.budget_usd)
}

/// POSTs one alert; on success it is done, else it is due again later.
async fn try_post(state: &AppState, store: &Store, item: &mut Due) {
    let runtime = state.runtime();
    let Some(url) = runtime.config().alerts.webhook().map(str::to_string) else {
        // The webhook was taken out of the config since: nothing to send to.
        item.record.webhook = Webhook::Off;
        persist(store, &item.record).await;
        return;
    };
    item.record.attempts += 1;
    match post(&runtime.upstream, &url, &item.record.alert).await {
        Ok(()) => {
            item.record.webhook = Webhook::Delivered;
            item.record.last_error = None;
            tracing::info!(alert = %item.record.alert.id, attempts = item.record.attempts, "budget alert delivered to the webhook");
        }
        Err(e) => {
            let wait = BACKOFF_FIRST
                .saturating_mul(1 << item.record.attempts.min(16).saturating_sub(1))
                .min(BACKOFF_AT_MOST);
            if item.record.attempts == 1 {
                tracing::warn!(alert = %item.record.alert.id, "the alert webhook did not take an alert ({e}); retrying with backoff");
            }
            item.record.last_error = Some(e);
            item.due = Instant::now() + wait;
        }
    }
    persist(store, &item.record).await;
}

async fn persist(store: &Store, record: &Record) {
    if let Err(e) = save(store, record).await {
        tracing::warn!(alert = %record.alert.id, "an alert's delivery could not be recorded: {e}");
    }
}

/// Writes a record, durably.
pub async fn save(store: &Store, record: &Record) -> Result<(), StoreError> {
    let write = Write {
        ops: vec![Op::Put(
            Table::Alerts,
            record.alert.id.as_bytes().to_vec(),
            serde_json::to_vec(record)?,
        )],
        only_if_present: None,
    };
    store.write(write).await?;
    store.flush().await
}

/// The POST itself: any 2xx takes the alert.
async fn post(
    upstream: &crate::wire::upstream::Upstream,
    url: &str,
    alert: &Alert,
) -> Result<(), String> {
    let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("p402/", env!("CARGO_PKG_VERSION"))),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("the webhook URL cannot be used: {e}"))?;
    match tokio::time::timeout(POST_TIMEOUT, upstream.send(request)).await {
        Err(_) => Err(format!("no answer within {POST_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("HTTP {}", response.status())),
    }
}
