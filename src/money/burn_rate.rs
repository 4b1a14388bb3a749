//! Burn-rate caps: at most so many dollars over any rolling hour
//! (`[budgets.NAME] max_usd_per_hour`, a session's `max_usd_per_hour`).
//!
//! A budget's period cap stops an agent stuck in a loop only once the
//! whole month is spent. A burn-rate cap stops it within the hour: over it,
//! a request gets 429 `spend_rate_exceeded` with `Retry-After`, the time
//! until enough of the last hour's spend has aged out.
//!
//! It holds under concurrency like the budget itself: a request reserves
//! its worst case against the hour (under the book's lock, with its other
//! accounts), and settles at its actual cost, which then counts for an
//! hour. A window is seeded from the ledger's last hour the first time its
//! cap is seen, so a restart does not hand a runaway loop a fresh hour.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::money::Usd;
use crate::store::{LedgerEntry, Store};

/// The rolling window a cap covers.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// A burn-rate cap on one account.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyCap {
    /// Its window's key: `budget:<name>` or `session:<id>`, with no period,
    /// so that the hour runs on across a new day or month.
    pub key: String,
    pub per_hour: Usd,
}

impl HourlyCap {
    pub fn budget(name: &str, per_hour: Usd) -> Self {
        HourlyCap {
            key: format!("budget:{name}"),
            per_hour,
        }
    }

    pub fn session(id: &str, per_hour: Usd) -> Self {
        HourlyCap {
            key: format!("session:{id}"),
            per_hour,
        }
    }

    /// Whether a ledger entry was charged to this cap's account.
    fn charges(&self, entry: &LedgerEntry) -> bool {
        match self.key.split_once(':') {
            Some(("budget", name)) => entry.budgets.iter().any(|b| b == name),
            Some(("session", id)) => entry.session.as_deref() == Some(id),
            _ => false,
        }
    }
}

/// One cap's last hour: settled spend by time, and what requests in flight
/// hold against it.
#[derive(Debug, Default)]
struct Window {
    /// Settled charges (milliseconds since the epoch, amount), oldest first.
    spent: VecDeque<(i64, Usd)>,
    /// Their sum, kept so a check does not walk the queue.
    sum: Usd,
    reserved: Usd,
}

impl Window {
    fn prune(&mut self, now: i64) {
        let start = now - window_ms();
        while let Some(&(at, amount)) = self.spent.front() {
            if at > start {
                break;
            }
            self.sum = self.sum - amount;
            self.spent.pop_front();
        }
    }

    fn push(&mut self, at: i64, amount: Usd) {
        if amount <= Usd::ZERO {
            return;
        }
        // Seeded entries and settlements arrive nearly in order; keep the
        // queue sorted so that pruning from the front stays right.
        let at_or_after = self.spent.iter().rposition(|&(t, _)| t <= at);
        let index = at_or_after.map_or(0, |i| i + 1);
        self.spent.insert(index, (at, amount));
        self.sum += amount;
    }
}

fn window_ms() -> i64 {
    i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX)
}

/// The cap stands in the way of a request: how long until it would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait(pub Duration);

/// Every cap's window. Kept by the budget book and used under its lock, so
/// that a reservation against a budget and against its hour is one step.
#[derive(Debug, Default)]
pub struct BurnRates {
    windows: HashMap<String, Window>,
}

impl BurnRates {
    fn window(&mut self, cap: &HourlyCap, store: &Store, now: i64) -> &mut Window {
        let window = self.windows.entry(cap.key.clone()).or_insert_with(|| {
            let mut window = Window::default();
            for (at, amount) in seed(cap, store, now) {
                window.push(at, amount);
            }
            window
        });
        window.prune(now);
        window
    }

    /// What `cap` lets a request reserve now.
    pub fn headroom(&mut self, cap: &HourlyCap, store: &Store, now: DateTime<Utc>) -> Usd {
        let window = self.window(cap, store, now.timestamp_millis());
        cap.per_hour - window.sum - window.reserved
    }

    pub fn reserve(&mut self, cap: &HourlyCap, amount: Usd) {
        if let Some(window) = self.windows.get_mut(&cap.key) {
            window.reserved += amount;
        }
    }

    /// Swaps a reservation for what the request cost, which counts for the
    /// next hour.
    pub fn settle(&mut self, cap: &HourlyCap, reserved: Usd, cost: Usd, now: DateTime<Utc>) {
        if let Some(window) = self.windows.get_mut(&cap.key) {
            window.reserved = window.reserved - reserved;
            window.push(now.timestamp_millis(), cost);
        }
    }

    pub fn release(&mut self, cap: &HourlyCap, reserved: Usd) {
        if let Some(window) = self.windows.get_mut(&cap.key) {
            window.reserved = window.reserved - reserved;
        }
    }

    /// How long until a request needing `needed` fits under `cap`: until
    /// enough of the hour's oldest spend has aged out. At least a second;
    /// a whole hour when it can never fit, or only once requests in flight
    /// settle.
    pub fn wait(&self, cap: &HourlyCap, needed: Usd, now: DateTime<Utc>) -> Wait {
        let Some(window) = self.windows.get(&cap.key) else {
            return Wait(Duration::from_secs(1));
        };
        let now = now.timestamp_millis();
        let mut left = window.sum + window.reserved + needed;
        for &(at, amount) in &window.spent {
            if left <= cap.per_hour {
                break;
            }
            left = left - amount;
            if left <= cap.per_hour {
                let ms = (at + window_ms() - now).max(0);
                let secs = u64::try_from(ms).unwrap_or(0).div_ceil(1000);
                return Wait(Duration::from_secs(secs.max(1)));
            }
        }
        if window.sum + window.reserved + needed <= cap.per_hour {
            // It fits now (a race with a settlement): try again at once.
            return Wait(Duration::from_secs(1));
        }
        // Held by requests in flight, or more than the cap allows at all.
        if needed <= cap.per_hour && window.reserved > Usd::ZERO {
            return Wait(Duration::from_secs(1));
        }
        Wait(WINDOW)
    }
}

/// The last hour's charges to `cap`'s account, from the ledger.
fn seed(cap: &HourlyCap, store: &Store, now: i64) -> Vec<(i64, Usd)> {
    let since = DateTime::<Utc>::from_timestamp_millis(now - window_ms()).unwrap_or_default();
    let mut out = Vec::new();
    for entry in store.entries_since(since) {
        match entry {
            Ok(entry) if cap.charges(&entry) && entry.cost_nanos > 0 => {
                out.push((entry.time.timestamp_millis(), entry.cost()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    "the last hour of the ledger could not be read for the burn-rate cap of {}: {e}",
                    cap.key
                );
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(nanos: i64) -> Usd {
        Usd::from_nanos(nanos)
    }

    #[test]
    fn the_hour_rolls_and_the_wait_is_until_enough_ages_out() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let cap = HourlyCap::budget("b", usd(1000));
        let mut rates = BurnRates::default();
        let t0 = Utc::now();
        assert_eq!(rates.headroom(&cap, &store, t0), usd(1000));
        rates.reserve(&cap, usd(600));
        assert_eq!(rates.headroom(&cap, &store, t0), usd(400));
        rates.settle(&cap, usd(600), usd(500), t0);
        let t1 = t0 + chrono::Duration::minutes(20);
        rates.reserve(&cap, usd(400));
        rates.settle(&cap, usd(400), usd(400), t1);
        let t2 = t0 + chrono::Duration::minutes(30);
        assert_eq!(rates.headroom(&cap, &store, t2), usd(100));
        // 300 more fits once the first 500 leaves: 30 minutes from t2.
        assert_eq!(
            rates.wait(&cap, usd(300), t2),
            Wait(Duration::from_secs(30 * 60))
        );
        // 700 needs both gone: 50 minutes.
        assert_eq!(
            rates.wait(&cap, usd(700), t2),
            Wait(Duration::from_secs(50 * 60))
        );
        // More than the cap never fits.
        assert_eq!(rates.wait(&cap, usd(2000), t2), Wait(WINDOW));
        let t3 = t0 + chrono::Duration::minutes(61);
        assert_eq!(rates.headroom(&cap, &store, t3), usd(600));
        let t4 = t1 + chrono::Duration::minutes(61);
        assert_eq!(rates.headroom(&cap, &store, t4), usd(1000));
    }
}
