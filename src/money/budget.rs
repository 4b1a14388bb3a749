//! Budgets as a hard cap.
//!
//! Before a request is sent, its worst case (every input token at the full
//! input price, plus its output limit at the output price) is reserved
//! against every account it is charged to, under one lock: concurrent
//! requests can never together pass a limit. When the worst case does not
//! fit, the output limit is lowered to what does, as long as a useful answer
//! still fits. After the answer, the request settles at its actual cost and
//! the rest of the reservation is released. Reservations live in memory
//! only, so a crash releases them all; settled spend lives in the store.
//! An account with a burn-rate cap (`burn_rate`) is held to its rolling
//! hour in the same step, under the same lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Local, TimeZone, Utc};

pub use crate::money::account::{period_start, Account};
use crate::money::burn_rate::BurnRates;
use crate::money::team::{TeamHold, TeamStore};
use crate::money::{Price, Usd};
use crate::store::{LedgerEntry, Store, StoreError};

use arc_swap::ArcSwapOption;

/// Below this many output tokens an answer is not worth sending: the
/// request is refused (402) rather than cut to a useless length.
pub const MIN_USEFUL_OUTPUT: u32 = 256;
/// The output limit assumed for a model whose maximum is unknown.
pub const DEFAULT_MAX_OUTPUT: u32 = 8192;

/// How a request fits its accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// What to reserve.
    pub reserve: Usd,
    /// The output limit the reservation pays for, which the request must go
    /// out with: the client's own, the model's maximum, a default for an
    /// unknown model, or lower when the budget cannot pay for that.
    pub output_limit: u32,
    /// Whether `output_limit` is below what the client (or the model)
    /// would have allowed.
    pub lowered: bool,
}

/// The request cannot fit even with the smallest useful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    pub(crate) account: Account,
    /// What the account has left (of its budget, or of its hourly cap
    /// when `wait` is set) less what is reserved; never negative.
    pub remaining: Usd,
    pub(crate) needed: Usd,
    /// Set when the account's burn-rate cap stands in the way, not its
    /// budget: how long until the request would fit.
    pub wait: Option<std::time::Duration>,
}

/// What a request asks the model to write: its output limit, which holds
/// for each choice, and how many choices the provider generates and bills
/// (`n`, or `best_of` where it exists: `n: 16` is sixteen answers, each up
/// to the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// The client's `max_completion_tokens` / `max_tokens`, if any.
    pub limit: Option<u32>,
    /// At least 1.
    pub choices: u32,
    /// The most web searches the provider may run and bill per call (the
    /// client's limit, or the one p402 sends with a budgeted request).
    pub searches: u32,
}

impl Output {
    /// One choice with `limit`, no searches.
    pub fn single(limit: Option<u32>) -> Self {
        Output {
            limit,
            choices: 1,
            searches: 0,
        }
    }

    /// What the request costs whatever the output: its input and its
    /// searches' fees, which a lowered output limit does not reduce.
    fn fixed(self, price: &Price, input_tokens: u64) -> Usd {
        price.input.cost(input_tokens) + price.web_search.times(u64::from(self.searches))
    }

    /// The output cost of `tokens` per choice, for every choice.
    fn cost(self, price: &Price, tokens: u32) -> Usd {
        price
            .output
            .cost(u64::from(tokens) * u64::from(self.choices.max(1)))
    }
}

/// The most and the least a request can be reserved for: its worst case
/// (every output token its limit allows, in every choice) and the smallest
/// useful answer (in every choice).
pub fn bounds(
    price: &Price,
    input_tokens: u64,
    output: Output,
    model_max: Option<u32>,
) -> (Usd, Usd) {
    let input = output.fixed(price, input_tokens);
    let limit = output.limit.or(model_max).unwrap_or(DEFAULT_MAX_OUTPUT);
    let worst = input + output.cost(price, limit);
    let minimum = input + output.cost(price, MIN_USEFUL_OUTPUT.min(limit));
    (worst, minimum)
}

/// Sizes the reservation for a request of `input_tokens` with the client's
/// output limit (or the model's maximum) for each of its choices against
/// `available` dollars. A lowered limit is per choice, as the provider
/// applies it.
pub fn plan(
    price: &Price,
    input_tokens: u64,
    output: Output,
    model_max: Option<u32>,
    available: Usd,
) -> Result<Plan, Usd> {
    let input = output.fixed(price, input_tokens);
    let limit = output.limit.or(model_max).unwrap_or(DEFAULT_MAX_OUTPUT);
    let (worst, minimum) = bounds(price, input_tokens, output, model_max);
    if worst <= available {
        return Ok(Plan {
            reserve: worst,
            output_limit: limit,
            lowered: false,
        });
    }
    if minimum > available {
        return Err(minimum);
    }
    // The most output tokens the rest pays for, found by bisection on the
    // exact integer cost function (so rounding can never overshoot).
    let (mut low, mut high) = (MIN_USEFUL_OUTPUT, limit);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if input + output.cost(price, mid) <= available {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok(Plan {
        reserve: input + output.cost(price, low),
        output_limit: low,
        lowered: true,
    })
}

#[derive(Debug, Default, Clone, Copy)]
struct Balance {
    settled: Usd,
    reserved: Usd,
}

/// Settled and reserved amounts per account. A std mutex: it guards a few
/// integer updates and is never held across an `.await`.
pub struct Book {
    store: Store,
    balances: Mutex<HashMap<String, Balance>>,
    /// The burn-rate caps' last hours; locked only while `balances` is.
    rates: Mutex<BurnRates>,
    /// Where shared budgets live (`[team]`); replaced when a reload
    /// changes the team settings.
    team: ArcSwapOption<TeamStore>,
}

impl Book {
    /// An empty book over `store`; balances are read from the store the
    /// first time an account is seen.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Book {
            store,
            balances: Mutex::new(HashMap::new()),
            rates: Mutex::new(BurnRates::default()),
            team: ArcSwapOption::empty(),
        })
    }

    /// The team store, if `[team]` configures one.
    pub fn team(&self) -> Option<Arc<TeamStore>> {
        self.team.load_full()
    }

    /// Swaps in the team store (or none) after `[team]` is configured or
    /// reloaded; reservations already made keep their own.
    pub(crate) fn set_team(&self, team: Option<Arc<TeamStore>>) {
        self.team.store(team);
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Balance>> {
        match self.balances.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The burn-rate windows; taken after `lock()` wherever both are held.
    fn rates(&self) -> std::sync::MutexGuard<'_, BurnRates> {
        match self.rates.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Settled spend is read from the store the first time an account is
    /// seen, then kept current in memory.
    fn balance<'a>(
        &self,
        balances: &'a mut HashMap<String, Balance>,
        key: &str,
    ) -> Result<&'a mut Balance, StoreError> {
        if !balances.contains_key(key) {
            let settled = self.store.totals(key)?.cost();
            balances.insert(
                key.to_string(),
                Balance {
                    settled,
                    reserved: Usd::ZERO,
                },
            );
        }
        balances
            .get_mut(key)
            .ok_or_else(|| StoreError::Invariant("balance vanished"))
    }

    /// What `account` has left right now (limit minus settled and reserved).
    /// Shared accounts are the team store's, not the book's.
    pub fn remaining(&self, account: &Account) -> Result<Usd, StoreError> {
        let Some(key) = &account.key else {
            return Ok(account.limit);
        };
        let mut balances = self.lock();
        let balance = self.balance(&mut balances, key)?;
        Ok(account.limit - balance.settled - balance.reserved)
    }

    pub(crate) fn settled(&self, account: &Account) -> Result<Usd, StoreError> {
        let Some(key) = &account.key else {
            return Ok(Usd::ZERO);
        };
        let mut balances = self.lock();
        Ok(self.balance(&mut balances, key)?.settled)
    }

    /// Reserves what `size` asks for against every account at once, or
    /// reports the account that stands in the way. `size` gets the smallest
    /// remaining amount and returns the reservation (or what it would need).
    pub fn reserve<F>(
        self: &Arc<Self>,
        accounts: Vec<Account>,
        size: F,
    ) -> Result<Result<(Reservation, Plan), Shortfall>, StoreError>
    where
        F: FnOnce(Usd) -> Result<Plan, Usd>,
    {
        let mut balances = self.lock();
        let mut rates = self.rates();
        let now = Utc::now();
        // The account and the amount that limit the request most, and
        // whether it is the account's hour rather than its budget.
        let mut tightest: Option<(usize, Usd, bool)> = None;
        for (i, account) in accounts.iter().enumerate() {
            let remaining = match &account.key {
                Some(key) => {
                    let balance = self.balance(&mut balances, key)?;
                    account.limit - balance.settled - balance.reserved
                }
                None => account.limit,
            };
            let hour = account
                .hourly
                .as_ref()
                .map(|cap| rates.headroom(cap, &self.store, now));
            for (left, hourly) in [(Some(remaining), false), (hour, true)] {
                let Some(left) = left else { continue };
                if tightest.is_none_or(|(_, least, _)| left < least) {
                    tightest = Some((i, left, hourly));
                }
            }
        }
        let available = tightest.map_or(Usd::from_nanos(i64::MAX), |(_, r, _)| r.max(Usd::ZERO));
        let plan = match size(available) {
            Ok(plan) => plan,
            Err(needed) => {
                let (i, remaining, hourly) = tightest.unwrap_or((0, Usd::ZERO, false));
                return match accounts.into_iter().nth(i) {
                    Some(account) => {
                        let wait = account
                            .hourly
                            .as_ref()
                            .filter(|_| hourly)
                            .map(|cap| rates.wait(cap, needed, now).0);
                        Ok(Err(Shortfall {
                            account,
                            remaining: remaining.max(Usd::ZERO),
                            needed,
                            wait,
                        }))
                    }
                    None => Err(StoreError::Invariant("no account")),
                };
            }
        };
        for key in accounts.iter().filter_map(|a| a.key.as_ref()) {
            self.balance(&mut balances, key)?.reserved += plan.reserve;
        }
        for cap in accounts.iter().filter_map(|a| a.hourly.as_ref()) {
            rates.reserve(cap, plan.reserve);
        }
        drop(rates);
        drop(balances);
        Ok(Ok((
            Reservation {
                book: self.clone(),
                accounts,
                amount: plan.reserve,
                open: true,
                team: None,
            },
            plan,
        )))
    }
}

/// Money held for one request until it settles. Dropping it unsettled (an
/// upstream failure, a client gone, a panic) releases the money.
pub struct Reservation {
    book: Arc<Book>,
    /// The accounts held in this book (never shared ones).
    accounts: Vec<Account>,
    amount: Usd,
    open: bool,
    /// The hold on the request's shared accounts, in the team store.
    team: Option<TeamHold>,
}

impl Reservation {
    /// Adds the hold on the request's shared accounts: settled with the
    /// local ones, or given back with them.
    pub fn with_team(mut self, hold: TeamHold) -> Self {
        self.team = Some(hold);
        self
    }

    /// Swaps the reservation for the settled amount, then records the
    /// request at its actual cost, durably. Memory is updated first and
    /// unconditionally: the provider was paid whether or not the write
    /// succeeds (its error is returned for logging), and a caller that stops
    /// waiting for the write (its client hung up) cannot leave the money
    /// counted as reserved rather than spent.
    pub async fn settle(mut self, entry: &LedgerEntry) -> Result<(), StoreError> {
        let keys: Vec<String> = self.accounts.iter().filter_map(|a| a.key.clone()).collect();
        {
            let mut balances = self.book.lock();
            for key in &keys {
                if let Ok(balance) = self.book.balance(&mut balances, key) {
                    balance.reserved = balance.reserved - self.amount;
                    balance.settled += entry.cost();
                }
            }
            let mut rates = self.book.rates();
            for cap in self.accounts.iter().filter_map(|a| a.hourly.as_ref()) {
                rates.settle(cap, self.amount, entry.cost(), Utc::now());
            }
            self.open = false;
        }
        let written = self.book.store.record(entry, &keys).await;
        if let Some(team) = self.team.take() {
            team.settle(entry).await;
        }
        written
    }

    /// What each account has left after this reservation (for metadata).
    pub fn remaining(&self, account: &Account) -> Option<Usd> {
        self.book.remaining(account).ok()
    }

    fn release(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let mut balances = self.book.lock();
        for key in self.accounts.iter().filter_map(|a| a.key.as_ref()) {
            if let Some(balance) = balances.get_mut(key) {
                balance.reserved = balance.reserved - self.amount;
            }
        }
        let mut rates = self.book.rates();
        for cap in self.accounts.iter().filter_map(|a| a.hourly.as_ref()) {
            rates.release(cap, self.amount);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// A local time for tests and for `now`.
pub fn local(year: i32, month: u32, day: u32, hour: u32) -> Option<DateTime<Local>> {
    Local
        .with_ymd_and_hms(year, month, day, hour, 0, 0)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Period;
    use crate::money::PerMTok;
    use chrono::NaiveDate;

    fn price(input: f64, output: f64) -> Price {
        let p = |d| PerMTok::from_dollars(d).expect("price");
        Price {
            input: p(input),
            cached_input: p(input),
            output: p(output),
            cache_write: p(input),
            cache_write_1h: p(input),
            web_search: Usd::from_nanos(10_000_000),
        }
    }

    #[test]
    fn searches_are_reserved_per_call_and_never_lowered() {
        // $1/$2 per million, $0.01 per search.
        let p = price(1.0, 2.0);
        let five = |limit| Output {
            limit,
            choices: 1,
            searches: 5,
        };
        let ample = Usd::from_dollars(1.0).expect("usd");
        let planned = plan(&p, 1000, five(Some(1000)), None, ample).expect("fits");
        // $0.001 input + $0.002 output + 5 × $0.01 searches.
        assert_eq!(planned.reserve, Usd::from_dollars(0.053).expect("usd"));
        // Searches are not output: lowering the output limit cannot make
        // room for them, so a budget below their fees refuses.
        let short = Usd::from_dollars(0.04).expect("usd");
        let needed = plan(&p, 1000, five(Some(1000)), None, short).expect_err("short");
        assert!(needed > Usd::from_dollars(0.051).expect("usd"), "{needed}");
        // Between: the output is lowered, the searches kept whole.
        let tight = Usd::from_dollars(0.052).expect("usd");
        let lowered = plan(&p, 1000, five(Some(1000)), None, tight).expect("lowered");
        assert!(lowered.lowered && lowered.output_limit < 1000);
        assert!(lowered.reserve >= Usd::from_dollars(0.051).expect("usd"));
        assert!(lowered.reserve <= tight);
    }

    #[test]
    fn periods_start_at_local_calendar_boundaries() {
        // Wednesday 2026-11-25, 23:00 local.
        let now = local(2026, 11, 25, 23).expect("time");
        assert_eq!(
            period_start(Period::Day, now.date_naive()),
            NaiveDate::from_ymd_opt(2026, 11, 25)
        );
        assert_eq!(
            period_start(Period::Week, now.date_naive()),
            NaiveDate::from_ymd_opt(2026, 11, 23)
        );
        assert_eq!(
            period_start(Period::Month, now.date_naive()),
            NaiveDate::from_ymd_opt(2026, 11, 1)
        );
        assert_eq!(period_start(Period::Total, now.date_naive()), None);
        // One hour later is a new day (not "24 h after first use").
        let midnight = local(2026, 11, 26, 0).expect("time");
        let limit = Usd::from_dollars(1.0).expect("usd");
        assert_ne!(
            Account::budget("b", limit, Period::Day, now).key,
            Account::budget("b", limit, Period::Day, midnight).key
        );
        assert_eq!(
            Account::budget("b", limit, Period::Week, now).key,
            Account::budget("b", limit, Period::Week, midnight).key
        );
        let december = local(2026, 12, 1, 0).expect("time");
        assert_ne!(
            Account::budget("b", limit, Period::Month, now).key,
            Account::budget("b", limit, Period::Month, december).key
        );
    }

    #[test]
    fn plan_keeps_the_limit_when_it_fits_and_lowers_it_when_not() {
        let p = price(1.0, 10.0); // $10 per million output tokens = 10,000 nanos each
        let ample = Usd::from_dollars(1.0).expect("usd");
        assert_eq!(
            plan(&p, 1000, Output::single(Some(1000)), None, ample),
            Ok(Plan {
                reserve: Usd::from_nanos(11_000_000),
                output_limit: 1000,
                lowered: false,
            })
        );
        // 1000 input tokens cost $0.001; $0.006 leaves $0.005 = 500 output tokens.
        let tight = Usd::from_dollars(0.006).expect("usd");
        let lowered =
            plan(&p, 1000, Output::single(Some(100_000)), None, tight).expect("fits lowered");
        assert_eq!((lowered.output_limit, lowered.lowered), (500, true));
        assert!(lowered.reserve <= tight);
        // Less than 256 useful tokens: refused, saying what is needed.
        let broke = Usd::from_dollars(0.002).expect("usd");
        assert_eq!(
            plan(&p, 1000, Output::single(None), Some(4096), broke),
            Err(Usd::from_nanos(1_000_000 + 2_560_000))
        );
    }

    #[test]
    fn every_choice_is_reserved_for_and_the_lowered_limit_is_per_choice() {
        let p = price(1.0, 10.0);
        let sixteen = |limit| Output {
            limit,
            choices: 16,
            searches: 0,
        };
        // 16 answers of 1000 tokens: $0.16 of output, not $0.01.
        let ample = Usd::from_dollars(1.0).expect("usd");
        assert_eq!(
            plan(&p, 1000, sixteen(Some(1000)), None, ample).map(|p| p.reserve),
            Ok(Usd::from_nanos(1_000_000 + 160_000_000))
        );
        // $0.042 pays 1000 input tokens and 16 answers of 256 tokens.
        let tight = Usd::from_dollars(0.042).expect("usd");
        let lowered = plan(&p, 1000, sixteen(Some(1000)), None, tight).expect("fits");
        assert_eq!((lowered.output_limit, lowered.lowered), (256, true));
        assert!(lowered.reserve <= tight);
        // What pays one choice's useful minimum does not pay sixteen.
        let one = Usd::from_dollars(0.01).expect("usd");
        assert!(plan(&p, 1000, Output::single(Some(1000)), None, one).is_ok());
        assert_eq!(
            plan(&p, 1000, sixteen(Some(1000)), None, one),
            Err(Usd::from_nanos(1_000_000 + 16 * 2_560_000))
        );
    }

    #[test]
    fn randomized_plans_never_exceed_what_is_available() {
        // A small deterministic generator: no crate needed for a test loop.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let p = price(
                next(20_000) as f64 / 1000.0 + 0.001,
                next(80_000) as f64 / 1000.0 + 0.001,
            );
            let available = Usd::from_nanos(next(50_000_000) as i64);
            let input = next(200_000);
            let output = Output {
                limit: Some(next(100_000) as u32 + 1),
                choices: next(16) as u32 + 1,
                searches: next(4) as u32,
            };
            match plan(&p, input, output, Some(64_000), available) {
                Ok(plan) => {
                    assert!(plan.reserve <= available, "{plan:?} over {available:?}");
                    if plan.lowered {
                        let max = plan.output_limit;
                        assert!(max >= MIN_USEFUL_OUTPUT);
                        // One more token would not have fitted.
                        let choices = u64::from(output.choices);
                        let searches = p.web_search.times(u64::from(output.searches));
                        assert!(
                            p.input.cost(input)
                                + searches
                                + p.output.cost((u64::from(max) + 1) * choices)
                                > available
                        );
                    }
                }
                Err(needed) => assert!(needed > available),
            }
        }
    }

    #[tokio::test]
    async fn reservations_are_exact_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("dir");
        let book = Book::new(Store::open(dir.path()).expect("store"));
        let session = Account::session("s", Usd::from_nanos(1000));
        let fixed = |amount: i64| {
            move |available: Usd| {
                let amount = Usd::from_nanos(amount);
                if amount <= available {
                    Ok(Plan {
                        reserve: amount,
                        output_limit: 1,
                        lowered: false,
                    })
                } else {
                    Err(amount)
                }
            }
        };
        let (first, _) = book
            .reserve(vec![session.clone()], fixed(600))
            .expect("store")
            .expect("fits");
        let Err(refused) = book
            .reserve(vec![session.clone()], fixed(600))
            .expect("store")
        else {
            panic!("a second 600 must not fit in 1000");
        };
        assert_eq!(refused.remaining, Usd::from_nanos(400));
        assert_eq!(refused.account.code, "SESSION_BUDGET_EXCEEDED");
        drop(first);
        assert_eq!(
            book.remaining(&session).expect("remaining"),
            Usd::from_nanos(1000)
        );

        let (second, _) = book
            .reserve(vec![session.clone()], fixed(600))
            .expect("store")
            .expect("fits");
        let mut entry = crate::store::tests_support::entry("req_1");
        entry.cost_nanos = 250;
        second.settle(&entry).await.expect("settled");
        assert_eq!(
            book.settled(&session).expect("settled"),
            Usd::from_nanos(250)
        );
        assert_eq!(
            book.remaining(&session).expect("remaining"),
            Usd::from_nanos(750)
        );

        // A fresh book over the same store sees the settled spend.
        let again = Book::new(book.store().clone());
        assert_eq!(
            again.remaining(&session).expect("remaining"),
            Usd::from_nanos(750)
        );
    }
}
