//! Spend reports from the ledger: what was spent, what the requested models
//! would have cost, and what routing and the cache saved, grouped by
//! provider, model, day, session, the client's own session, door or budget.
//!
//! A report adds up the ledger's hourly sums (`store::rollup`), not its
//! entries, so it costs the same whatever the ledger's size; a period that
//! reaches past the entries kept (`[ledger] keep_entries_days`) is still
//! answered, and says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Local, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::money::budget::{Account, Book};
use crate::money::Usd;
use crate::store::rollup::{Dims, Part, Sums};
use crate::store::{LedgerEntry, Store, StoreError};

/// What a report's rows are (`--by`, `by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The provider that answered (`cache` for cached answers).
    Provider,
    /// The provider and model that answered, as `provider/model`.
    Model,
    /// The local day the request was recorded.
    Day,
    /// The p402 session the request was charged to.
    Session,
    /// The client's own session (an agent run: Claude Code's session id).
    #[value(name = "client_session")]
    #[serde(rename = "client_session")]
    ClientSession,
    /// The p402 that served the request (in the team ledger; `local` in
    /// this machine's own).
    Instance,
    /// The API the client called (`chat`, `messages`, `responses`, ...).
    Door,
    /// The file-declared budget charged; a request charged to two budgets
    /// is in both rows.
    Budget,
}

impl GroupBy {
    /// The grouping a query's `by=` names; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "provider" => Some(GroupBy::Provider),
            "model" => Some(GroupBy::Model),
            "day" => Some(GroupBy::Day),
            "session" => Some(GroupBy::Session),
            "client_session" => Some(GroupBy::ClientSession),
            "instance" => Some(GroupBy::Instance),
            "door" => Some(GroupBy::Door),
            "budget" => Some(GroupBy::Budget),
            _ => None,
        }
    }

    /// The rows a part counts in: one, except for a request charged to
    /// several budgets grouped by budget.
    fn keys(self, part: &Part, instance: &str) -> Vec<String> {
        let dims = &part.dims;
        let one = match self {
            GroupBy::Instance => instance.to_string(),
            GroupBy::Provider => dims.provider.clone(),
            GroupBy::Model => format!("{}/{}", dims.provider, dims.model.as_deref().unwrap_or("-")),
            GroupBy::Day => part.time.with_timezone(&Local).date_naive().to_string(),
            GroupBy::Session => dims
                .session
                .clone()
                .unwrap_or_else(|| "(no session)".to_string()),
            GroupBy::ClientSession => dims
                .client_session
                .clone()
                .unwrap_or_else(|| "(no client session)".to_string()),
            GroupBy::Door => dims.door.clone().unwrap_or_else(|| "(no door)".to_string()),
            GroupBy::Budget if dims.budgets.is_empty() => "(no budget)".to_string(),
            GroupBy::Budget => return dims.budgets.clone(),
        };
        vec![one]
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

/// One row of a report: the sums over the requests with one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub(crate) key: String,
    /// How many requests.
    pub requests: u64,
    pub(crate) cost_usd: f64,
    pub(crate) direct_cost_usd: f64,
    pub(crate) savings_usd: f64,
    /// The part of the savings that came from answers served by the cache.
    pub cache_savings_usd: f64,
    pub(crate) cached_requests: u64,
    pub(crate) estimated_requests: u64,
    /// Input (prompt) tokens, summed.
    pub input_tokens: u64,
    pub(crate) output_tokens: u64,
}

/// A row's sums as the report shows them; money turns into dollars here,
/// at the JSON edge, and nowhere before.
fn row(key: String, sums: &Sums) -> Row {
    let cost = Usd::from_nanos(sums.cost_nanos);
    let direct = Usd::from_nanos(sums.direct_nanos);
    Row {
        key,
        requests: sums.requests,
        cost_usd: cost.to_dollars(),
        direct_cost_usd: direct.to_dollars(),
        savings_usd: (direct - cost).to_dollars(),
        cache_savings_usd: Usd::from_nanos(sums.cache_savings_nanos).to_dollars(),
        cached_requests: sums.cached,
        estimated_requests: sums.estimated,
        input_tokens: sums.input_tokens,
        output_tokens: sums.output_tokens,
    }
}

/// A spend report over a period, one row per group, with a total.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub(crate) since: String,
    /// What the rows are grouped by.
    pub by: GroupBy,
    pub(crate) rows: Vec<Row>,
    /// The sums over every request of the period.
    pub total: Row,
    /// Set when the period reaches past the entries kept: the time before
    /// which they were dropped. The report is still whole, from the hourly
    /// sums, but starts at the hour of `since` rather than to the second
    /// when that hour's entries are gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_dropped_before: Option<String>,
}

/// The report of this machine's ledger, from its hourly sums.
pub fn build(store: &Store, since: DateTime<Utc>, by: GroupBy) -> Result<Report, StoreError> {
    let period = store.period(since)?;
    let mut report = summarize(
        period.parts.iter().map(|part| ("local", part)),
        period.start,
        by,
    );
    report.entries_dropped_before = period.entries_dropped_before.map(|t| t.to_rfc3339());
    Ok(report)
}

/// The report of the team ledger's entries: (instance, entry).
pub fn build_team(entries: &[(String, LedgerEntry)], since: DateTime<Utc>, by: GroupBy) -> Report {
    let parts: Vec<(&str, Part)> = entries
        .iter()
        .map(|(instance, entry)| {
            let part = Part {
                time: entry.time,
                dims: Dims::of(entry),
                sums: Sums::of(entry),
            };
            (instance.as_str(), part)
        })
        .collect();
    summarize(
        parts.iter().map(|(instance, part)| (*instance, part)),
        since,
        by,
    )
}

fn summarize<'a>(
    parts: impl Iterator<Item = (&'a str, &'a Part)>,
    since: DateTime<Utc>,
    by: GroupBy,
) -> Report {
    let mut groups: BTreeMap<String, Sums> = BTreeMap::new();
    let mut total = Sums::default();
    for (instance, part) in parts {
        if part.time < since {
            continue;
        }
        for key in by.keys(part, instance) {
            groups.entry(key).or_default().add(&part.sums);
        }
        total.add(&part.sums);
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(key, sums)| row(key, &sums))
        .collect();
    if by != GroupBy::Day {
        rows.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd).then(a.key.cmp(&b.key)));
    }
    Report {
        since: since.to_rfc3339(),
        by,
        rows,
        total: row("total".to_string(), &total),
        entries_dropped_before: None,
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

/// Reads the shared budgets' balances from the team store, for the
/// budget listings (`/api/v2/budgets`, `p402 sessions`) and the metrics.
/// Never fails as a whole: a budget whose balance cannot be read says why
/// instead.
pub(crate) async fn shared_balances(book: &Book, config: &Config) -> SharedBalances {
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
            if let Some(dropped) = &report.entries_dropped_before {
                let _ = writeln!(
                    out,
                    "(this period reaches past the ledger entries kept, which start at {dropped}; it is answered from the hourly sums)"
                );
            }
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
    #[serde(default)]
    entries_dropped_before: Option<String>,
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

    /// The report as p402 computed it before the hourly sums: every entry
    /// since `since`, read from the ledger and added up one by one. Kept
    /// here as the reference the sums must agree with.
    fn scanned(store: &Store, since: DateTime<Utc>, by: GroupBy) -> Vec<(String, Vec<i64>)> {
        let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut total = vec![0i64; 8];
        for entry in store.entries_since(since - Duration::minutes(15)) {
            let entry = entry.expect("entry");
            if entry.time < since {
                continue;
            }
            let part = Part {
                time: entry.time,
                dims: Dims::of(&entry),
                sums: Sums::default(),
            };
            let cached = i64::from(entry.cached);
            let add = |sum: &mut Vec<i64>| {
                sum[0] += 1;
                sum[1] += entry.cost_nanos;
                sum[2] += entry.direct_nanos;
                sum[3] += cached * (entry.direct_nanos - entry.cost_nanos);
                sum[4] += cached;
                sum[5] += i64::from(entry.estimated);
                sum[6] += i64::try_from(entry.input_tokens).expect("tokens");
                sum[7] += i64::try_from(entry.output_tokens).expect("tokens");
            };
            for key in by.keys(&part, "local") {
                add(groups.entry(key).or_insert_with(|| vec![0; 8]));
            }
            add(&mut total);
        }
        groups.insert("total".to_string(), total);
        groups.into_iter().collect()
    }

    /// The same figures from a report, in nano-dollars (exact: every
    /// amount is a whole number of nano-dollars).
    fn reported(report: &Report) -> Vec<(String, Vec<i64>)> {
        let nanos = |usd: f64| (usd * 1e9).round() as i64;
        let mut rows: Vec<(String, Vec<i64>)> = report
            .rows
            .iter()
            .chain(std::iter::once(&report.total))
            .map(|r| {
                (
                    r.key.clone(),
                    vec![
                        i64::try_from(r.requests).expect("n"),
                        nanos(r.cost_usd),
                        nanos(r.direct_cost_usd),
                        nanos(r.cache_savings_usd),
                        i64::try_from(r.cached_requests).expect("n"),
                        i64::try_from(r.estimated_requests).expect("n"),
                        i64::try_from(r.input_tokens).expect("n"),
                        i64::try_from(r.output_tokens).expect("n"),
                    ],
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// A ledger written before the hourly sums existed: entries only, and
    /// no mark that the sums were built.
    fn old_ledger(dir: &std::path::Path, entries: &[LedgerEntry]) {
        use crate::store::{Op, Table, Write};
        let store = Store::open(dir).expect("store");
        let mut ops: Vec<Op> = entries
            .iter()
            .map(|e| {
                Op::Put(
                    Table::Ledger,
                    e.request_id.clone().into_bytes(),
                    serde_json::to_vec(e).expect("json"),
                )
            })
            .collect();
        ops.push(Op::Clear(Table::Rollup));
        ops.push(Op::Clear(Table::Meta));
        store
            .write_blocking(
                Write {
                    ops,
                    only_if_present: None,
                },
                true,
            )
            .expect("write");
    }

    /// Three days of varied traffic, a request every 7 minutes.
    fn traffic(now: DateTime<Utc>) -> Vec<LedgerEntry> {
        let mut entries = Vec::new();
        for n in 0..(3 * 24 * 60 / 7) {
            let began = now - Duration::minutes(7 * n + 3);
            let mut entry = crate::store::tests_support::entry_at(began, Duration::seconds(n % 40));
            entry.provider = ["openai", "anthropic", "groq", "cache"][(n % 4) as usize].into();
            entry.model = (n % 5 != 0).then(|| format!("m{}", n % 3));
            entry.door = (n % 6 != 0).then(|| ["chat", "messages"][(n % 2) as usize].into());
            entry.session = (n % 3 == 0).then(|| format!("ses_{}", n % 2));
            entry.client_session = (n % 4 == 1).then(|| format!("run{}", n / 50));
            entry.budgets = match n % 5 {
                0 => vec![],
                1 => vec!["laptop".into()],
                _ => vec!["laptop".into(), "global".into()],
            };
            entry.cached = entry.provider == "cache";
            entry.estimated = n % 7 == 0;
            entry.input_tokens = (n * 13 % 900) as u64;
            entry.output_tokens = (n * 7 % 300) as u64;
            entry.cost_nanos = if entry.cached { 0 } else { n * 1_003 % 97_000 };
            entry.direct_nanos = entry.cost_nanos + n * 311 % 50_000;
            entries.push(entry);
        }
        entries
    }

    /// A ledger from before the hourly sums is summed once when opened, and
    /// every report from the sums then equals the old full scan of its
    /// entries: by every grouping, from a whole hour, from inside an hour
    /// and from before the first entry.
    #[test]
    fn a_migrated_ledger_reports_what_the_old_scan_did() {
        let dir = tempfile::tempdir().expect("dir");
        let now = Utc::now();
        old_ledger(dir.path(), &traffic(now));
        let store = Store::open(dir.path()).expect("migrated");
        let hour = crate::store::rollup::hour_start(crate::store::rollup::hour_of(now));
        let starts = [
            hour - Duration::hours(30),
            now - Duration::hours(30),
            now - Duration::minutes(25),
            now - Duration::days(7),
        ];
        let all = [
            GroupBy::Provider,
            GroupBy::Model,
            GroupBy::Day,
            GroupBy::Session,
            GroupBy::ClientSession,
            GroupBy::Instance,
            GroupBy::Door,
            GroupBy::Budget,
        ];
        for since in starts {
            for by in all {
                let report = build(&store, since, by).expect("report");
                assert!(report.total.requests > 0, "{since} {by:?}");
                assert_eq!(
                    reported(&report),
                    scanned(&store, since, by),
                    "{since} {by:?}"
                );
            }
        }
        // Built once: a second open finds the sums and leaves them.
        drop(store);
        let store = Store::open(dir.path()).expect("reopened");
        let again = build(&store, starts[3], GroupBy::Model).expect("report");
        assert_eq!(reported(&again), scanned(&store, starts[3], GroupBy::Model));
    }

    /// Settlements keep the sums as they go: entries recorded after the
    /// migration add to the rows the migration built, once each.
    #[tokio::test]
    async fn settlements_add_to_migrated_sums() {
        let dir = tempfile::tempdir().expect("dir");
        let now = Utc::now();
        let traffic = traffic(now);
        old_ledger(dir.path(), &traffic[..50]);
        let store = Store::open(dir.path()).expect("migrated");
        for entry in &traffic[50..120] {
            store.record(entry, &[]).await.expect("record");
        }
        // A settlement written again (after a failed commit) counts once.
        store.record(&traffic[60], &[]).await.expect("again");
        let since = now - Duration::days(4);
        for by in [GroupBy::Provider, GroupBy::Budget, GroupBy::Day] {
            let report = build(&store, since, by).expect("report");
            assert_eq!(report.total.requests, 120);
            assert_eq!(reported(&report), scanned(&store, since, by), "{by:?}");
        }
    }

    #[tokio::test]
    async fn groups_and_totals() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let entry = |provider: &str, cost: i64, direct: i64, cached: bool| {
            let mut entry = crate::store::tests_support::entry(
                &crate::server::ids::RequestId::new().to_string(),
            );
            entry.door = None;
            entry.provider = provider.to_string();
            entry.cost_nanos = cost;
            entry.direct_nanos = direct;
            entry.cached = cached;
            entry
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
