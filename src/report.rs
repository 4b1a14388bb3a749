//! Spend reports from the ledger: what was spent, what the requested models
//! would have cost, and what routing and the cache saved, grouped by
//! provider, model, day, session or the client's own session.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Local, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::budget::{Account, Book};
use crate::config::Config;
use crate::money::Usd;
use crate::store::{LedgerEntry, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Provider,
    Model,
    Day,
    Session,
    /// The client's own session (an agent run: Claude Code's session id).
    #[value(name = "client_session")]
    #[serde(rename = "client_session")]
    ClientSession,
    /// The p402 that served the request (in the team ledger; `local` in
    /// this machine's own).
    Instance,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "provider" => Some(GroupBy::Provider),
            "model" => Some(GroupBy::Model),
            "day" => Some(GroupBy::Day),
            "session" => Some(GroupBy::Session),
            "client_session" => Some(GroupBy::ClientSession),
            "instance" => Some(GroupBy::Instance),
            _ => None,
        }
    }

    fn key(self, entry: &LedgerEntry, instance: &str) -> String {
        match self {
            GroupBy::Instance => instance.to_string(),
            GroupBy::Provider => entry.provider.clone(),
            GroupBy::Model => format!(
                "{}/{}",
                entry.provider,
                entry.model.as_deref().unwrap_or("-")
            ),
            GroupBy::Day => entry.time.with_timezone(&Local).date_naive().to_string(),
            GroupBy::Session => entry
                .session
                .clone()
                .unwrap_or_else(|| "(no session)".to_string()),
            GroupBy::ClientSession => entry
                .client_session
                .clone()
                .unwrap_or_else(|| "(no client session)".to_string()),
        }
    }
}

/// `7d`, `24h`, `30m`, `2w`, or a date (`2026-11-01`) or RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    // The unit is the last character, whatever its width: `7é` is no span,
    // and must not be split inside the `é`.
    let mut chars = text.chars();
    if let Some(unit) = chars.next_back() {
        if let Ok(n) = chars.as_str().parse::<i64>() {
            let span = match unit {
                'm' => Duration::try_minutes(n),
                'h' => Duration::try_hours(n),
                'd' => Duration::try_days(n),
                'w' => Duration::try_weeks(n),
                _ => None,
            }?;
            return now.checked_sub_signed(span);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0)?;
        return Local
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc));
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub key: String,
    pub requests: u64,
    pub cost_usd: f64,
    pub direct_cost_usd: f64,
    pub savings_usd: f64,
    /// The part of the savings that came from answers served by the cache.
    pub cache_savings_usd: f64,
    pub cached_requests: u64,
    pub estimated_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Default)]
struct Sum {
    requests: u64,
    cost: Usd,
    direct: Usd,
    cache_savings: Usd,
    cached: u64,
    estimated: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Sum {
    fn add(&mut self, entry: &LedgerEntry) {
        self.requests += 1;
        self.cost += entry.cost();
        self.direct += entry.direct();
        if entry.cached {
            self.cached += 1;
            self.cache_savings += entry.direct() - entry.cost();
        }
        self.estimated += u64::from(entry.estimated);
        self.input_tokens += entry.input_tokens;
        self.output_tokens += entry.output_tokens;
    }

    fn row(&self, key: String) -> Row {
        Row {
            key,
            requests: self.requests,
            cost_usd: self.cost.to_dollars(),
            direct_cost_usd: self.direct.to_dollars(),
            savings_usd: (self.direct - self.cost).to_dollars(),
            cache_savings_usd: self.cache_savings.to_dollars(),
            cached_requests: self.cached,
            estimated_requests: self.estimated,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since: String,
    pub by: GroupBy,
    pub rows: Vec<Row>,
    pub total: Row,
}

pub fn build(store: &Store, since: DateTime<Utc>, by: GroupBy) -> Result<Report, StoreError> {
    let mut entries = Vec::new();
    for entry in store.entries_since(since) {
        entries.push(("local".to_string(), entry?));
    }
    Ok(summarize(&entries, since, by))
}

/// The report of the team ledger's entries: (instance, entry).
pub fn build_team(entries: &[(String, LedgerEntry)], since: DateTime<Utc>, by: GroupBy) -> Report {
    summarize(entries, since, by)
}

fn summarize(entries: &[(String, LedgerEntry)], since: DateTime<Utc>, by: GroupBy) -> Report {
    let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
    let mut total = Sum::default();
    for (instance, entry) in entries {
        if entry.time < since {
            continue;
        }
        groups
            .entry(by.key(entry, instance))
            .or_default()
            .add(entry);
        total.add(entry);
    }
    let mut rows: Vec<Row> = groups.into_iter().map(|(key, sum)| sum.row(key)).collect();
    if by != GroupBy::Day {
        rows.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd).then(a.key.cmp(&b.key)));
    }
    Report {
        since: since.to_rfc3339(),
        by,
        rows,
        total: total.row("total".to_string()),
    }
}

/// Sessions and file-declared budgets with their spend in the current
/// period (for `p402 sessions` and `GET /api/v2/budgets`).
pub fn budgets(book: &Book, config: &Config, shared: &SharedBalances) -> Result<Value, StoreError> {
    let now = Utc::now();
    let mut data = Vec::new();
    for (name, budget) in &config.budgets {
        let account = Account::for_budget(name.get_ref(), budget, now);
        let limit = account.limit;
        let mut view = json!({
            "object": "budget",
            "name": name.get_ref(),
            "period": format!("{:?}", budget.period).to_lowercase(),
            "keys": budget.keys.len(),
            "shared": budget.shared,
        });
        let spend = if budget.shared {
            match shared.get(name.get_ref()) {
                Some(Ok((settled, held))) => Some((*settled, limit - *settled - *held)),
                Some(Err(reason)) => {
                    view["team_error"] = json!(reason);
                    None
                }
                None => None,
            }
        } else {
            Some((book.settled(&account)?, book.remaining(&account)?))
        };
        view["budget"] = match spend {
            Some((used, remaining)) => json!({
                "total_usd": limit.to_dollars(),
                "used_usd": used.to_dollars(),
                "remaining_usd": remaining.max(Usd::ZERO).to_dollars(),
            }),
            // Unknown while the team store cannot be read: never a guess.
            None => {
                json!({"total_usd": limit.to_dollars(), "used_usd": null, "remaining_usd": null})
            }
        };
        data.push(view);
    }
    Ok(json!({"object": "list", "data": data}))
}

/// Shared budgets' settled and held amounts as the team store has them,
/// by budget name; the reason instead while it cannot be read.
pub type SharedBalances = BTreeMap<String, Result<(Usd, Usd), String>>;

pub async fn shared_balances(book: &Book, config: &Config) -> SharedBalances {
    let now = Utc::now();
    let shared: Vec<(String, Account)> = config
        .budgets
        .iter()
        .filter(|(_, b)| b.shared)
        .map(|(name, b)| {
            (
                name.get_ref().clone(),
                Account::for_budget(name.get_ref(), b, now),
            )
        })
        .collect();
    if shared.is_empty() {
        return SharedBalances::new();
    }
    let read = match book.team() {
        Some(team) => {
            let accounts: Vec<Account> = shared.iter().map(|(_, a)| a.clone()).collect();
            team.balances(&accounts).await.map_err(|e| e.to_string())
        }
        None => Err("no team store: [team] redis_url is not set or not usable".to_string()),
    };
    match read {
        Ok(balances) => shared
            .into_iter()
            .zip(balances)
            .map(|((name, _), balance)| (name, Ok(balance)))
            .collect(),
        Err(reason) => shared
            .into_iter()
            .map(|(name, _)| (name, Err(reason.clone())))
            .collect(),
    }
}

/// Sessions (`GET /api/v2/sessions`) and budgets (`GET /api/v2/budgets`)
/// as tables, from their JSON, so the output is the same whether it came
/// from a running server or from the database directly.
pub fn sessions_table(sessions: &Value, budgets: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<16} {:>10} {:>10} {:>10} {:>8}  {:<8} EXPIRES",
        "SESSION", "NAME", "BUDGET $", "SPENT $", "LEFT $", "REQUESTS", "STATUS"
    );
    let list = sessions["data"].as_array().cloned().unwrap_or_default();
    for view in &list {
        let _ = writeln!(
            out,
            "{:<36} {:<16} {:>10.4} {:>10.6} {:>10.6} {:>8}  {:<8} {}",
            view["session_id"].as_str().unwrap_or("-"),
            view["name"].as_str().unwrap_or("-"),
            view["budget"]["total_usd"].as_f64().unwrap_or(0.0),
            view["budget"]["used_usd"].as_f64().unwrap_or(0.0),
            view["budget"]["remaining_usd"].as_f64().unwrap_or(0.0),
            view["requests"].as_u64().unwrap_or(0),
            view["status"].as_str().unwrap_or("-"),
            view["expires_at"].as_str().unwrap_or("-"),
        );
    }
    if list.is_empty() {
        let _ = writeln!(out, "(no sessions)");
    }
    if let Some(rows) = budgets["data"].as_array().filter(|rows| !rows.is_empty()) {
        let _ = writeln!(
            out,
            "\n{:<16} {:<7} {:>10} {:>10} {:>10}",
            "BUDGET", "PERIOD", "LIMIT $", "SPENT $", "LEFT $"
        );
        // A shared budget the team store could not tell about shows `?`.
        let amount = |v: &Value| v.as_f64().map_or("?".to_string(), |a| format!("{a:.6}"));
        for row in rows {
            let shared = if row["shared"].as_bool() == Some(true) {
                "  (shared)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<16} {:<7} {:>10.4} {:>10} {:>10}{shared}",
                row["name"].as_str().unwrap_or("-"),
                row["period"].as_str().unwrap_or("-"),
                row["budget"]["total_usd"].as_f64().unwrap_or(0.0),
                amount(&row["budget"]["used_usd"]),
                amount(&row["budget"]["remaining_usd"]),
            );
            if let Some(reason) = row["team_error"].as_str() {
                let _ = writeln!(out, "  {reason}");
            }
        }
    }
    out
}

/// The same report as a table, from its JSON.
pub fn table_from(value: &Value) -> String {
    match serde_json::from_value::<ReportView>(value.clone()) {
        Ok(report) => {
            let mut out = String::new();
            let _ = writeln!(out, "since {} by {}", report.since, report.by);
            let _ = writeln!(
                out,
                "{:<40} {:>8} {:>12} {:>12} {:>12} {:>12}",
                "", "REQUESTS", "SPENT $", "DIRECT $", "SAVED $", "BY CACHE $"
            );
            for row in report.rows.iter().chain(std::iter::once(&report.total)) {
                let _ = writeln!(
                    out,
                    "{:<40} {:>8} {:>12.6} {:>12.6} {:>12.6} {:>12.6}",
                    row.key,
                    row.requests,
                    row.cost_usd,
                    row.direct_cost_usd,
                    row.savings_usd,
                    row.cache_savings_usd
                );
            }
            out
        }
        Err(e) => format!("unreadable report: {e}\n"),
    }
}

#[derive(serde::Deserialize)]
struct ReportView {
    since: String,
    by: String,
    rows: Vec<RowView>,
    total: RowView,
}

#[derive(serde::Deserialize)]
struct RowView {
    key: String,
    requests: u64,
    cost_usd: f64,
    direct_cost_usd: f64,
    savings_usd: f64,
    cache_savings_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_spans_dates_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(parse_since("7d", now), Some(now - Duration::days(7)));
        assert_eq!(parse_since("24h", now), Some(now - Duration::hours(24)));
        assert_eq!(parse_since("2w", now), Some(now - Duration::weeks(2)));
        assert!(parse_since("2026-11-01", now).is_some());
        assert!(parse_since("2026-11-01T00:00:00Z", now).is_some());
        assert_eq!(parse_since("soon", now), None);
        assert_eq!(parse_since("7y", now), None);
        for odd in ["é", "7é", "é7d", "1\u{1F600}", "\u{1F600}"] {
            assert_eq!(parse_since(odd, now), None, "{odd}");
        }
    }

    #[tokio::test]
    async fn groups_and_totals() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let entry = |provider: &str, cost: i64, direct: i64, cached: bool| LedgerEntry {
            door: None,
            provider: provider.to_string(),
            cost_nanos: cost,
            direct_nanos: direct,
            cached,
            ..crate::store::tests_support::entry(&crate::ids::RequestId::new().to_string())
        };
        store
            .record(&entry("groq", 100, 1000, false), &[])
            .await
            .expect("record");
        store
            .record(&entry("groq", 50, 500, false), &[])
            .await
            .expect("record");
        store
            .record(&entry("cache", 0, 800, true), &[])
            .await
            .expect("record");
        let report =
            build(&store, Utc::now() - Duration::hours(1), GroupBy::Provider).expect("report");
        assert_eq!(report.rows[0].key, "groq");
        assert_eq!(report.rows[0].requests, 2);
        assert!((report.total.savings_usd - 2150e-9).abs() < 1e-15);
        assert!((report.total.cache_savings_usd - 800e-9).abs() < 1e-15);
        let json = serde_json::to_value(&report).expect("json");
        assert!(table_from(&json).contains("groq"));
    }
}
