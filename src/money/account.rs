//! Something a request is charged to: a session, a file-declared budget
//! (local or shared by a team), or a per-request cap, with the key its
//! settled spend is kept under. Apart from `budget`, which holds the money,
//! so that the team store can name accounts without depending on the book.

use chrono::{DateTime, Datelike, Duration, Local, NaiveDate, Utc};

use crate::config::{BudgetConfig, Period};
use crate::money::burn_rate::HourlyCap;
use crate::money::Usd;

/// Something a request is charged to.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The key of its settled spend in the store; `None` for a per-request
    /// cap (`max_cost`), which has no history.
    pub key: Option<String>,
    /// For messages: "session ses_…", "budget laptop", "max_cost".
    pub label: String,
    pub(crate) limit: Usd,
    /// The 402 code when this account is what stands in the way.
    pub code: &'static str,
    /// Held in the team store (Redis), not in this p402's book.
    pub shared: bool,
    /// How long the account's record must outlive its period (for a shared
    /// budget's keys in Redis); `None` keeps it.
    pub lifetime: Option<std::time::Duration>,
    /// Its burn-rate cap (`max_usd_per_hour`), held in this p402's book.
    pub hourly: Option<HourlyCap>,
}

impl Account {
    /// The account of session `id`, whose budget is `limit`.
    pub fn session(id: &str, limit: Usd) -> Self {
        Account {
            key: Some(format!("session:{id}")),
            label: format!("session {id}"),
            limit,
            code: "SESSION_BUDGET_EXCEEDED",
            shared: false,
            lifetime: None,
            hourly: None,
        }
    }

    /// A file-declared budget, keyed by the period it is in at `now`, so a
    /// new day (week, month) starts from zero without any reset job.
    pub fn budget(name: &str, limit: Usd, period: Period, now: DateTime<Local>) -> Self {
        Account {
            key: Some(format!(
                "budget:{name}:{}",
                bucket(period, now.date_naive())
            )),
            label: format!("budget {name}"),
            limit,
            code: "BUDGET_EXCEEDED",
            shared: false,
            lifetime: None,
            hourly: None,
        }
    }

    /// A budget shared by a team: its periods follow UTC, so that every
    /// p402 of the team, in whatever time zone, counts into the same one.
    pub fn shared_budget(name: &str, limit: Usd, period: Period, now: DateTime<Utc>) -> Self {
        let days = match period {
            Period::Day => Some(3),
            Period::Week => Some(10),
            Period::Month => Some(40),
            Period::Total => None,
        };
        Account {
            key: Some(format!(
                "budget:{name}:{}",
                bucket(period, now.date_naive())
            )),
            label: format!("shared budget {name}"),
            limit,
            code: "BUDGET_EXCEEDED",
            shared: true,
            lifetime: days.map(|d| std::time::Duration::from_secs(d * 86_400)),
            hourly: None,
        }
    }

    /// The account of the file-declared budget `name` at `now`.
    pub fn for_budget(name: &str, budget: &BudgetConfig, now: DateTime<Utc>) -> Self {
        let limit = Usd::from_dollars(*budget.budget_usd.get_ref()).unwrap_or(Usd::ZERO);
        let account = if budget.shared {
            Account::shared_budget(name, limit, budget.period, now)
        } else {
            Account::budget(name, limit, budget.period, now.with_timezone(&Local))
        };
        let per_hour = budget.max_usd_per_hour.as_ref();
        account.with_hourly(
            per_hour
                .and_then(|usd| Usd::from_dollars(*usd.get_ref()))
                .map(|usd| HourlyCap::budget(name, usd)),
        )
    }

    /// The account with a burn-rate cap.
    pub fn with_hourly(self, hourly: Option<HourlyCap>) -> Self {
        Account { hourly, ..self }
    }

    /// A one-request cap (`max_cost`) of `limit`: no key, since nothing
    /// of it outlives the request.
    pub fn cap(limit: Usd, label: &str) -> Self {
        Account {
            key: None,
            label: label.to_string(),
            limit,
            code: "MAX_COST_EXCEEDED",
            shared: false,
            lifetime: None,
            hourly: None,
        }
    }
}

/// The name of the period containing `today`, part of an account's key.
fn bucket(period: Period, today: NaiveDate) -> String {
    match period_start(period, today) {
        Some(start) => format!("{period:?}:{start}").to_lowercase(),
        None => "total".to_string(),
    }
}

/// The first day of the period containing `today`: the day itself,
/// Monday, the 1st. `None` for `total`, which never resets.
pub fn period_start(period: Period, today: NaiveDate) -> Option<NaiveDate> {
    match period {
        Period::Day => Some(today),
        Period::Week => {
            Some(today - Duration::days(i64::from(today.weekday().num_days_from_monday())))
        }
        Period::Month => today.with_day(1),
        Period::Total => None,
    }
}
