//! Money as integers.
//!
//! Costs are summed over many requests and compared against hard budget
//! caps, so they are kept as whole nano-dollars (1e-9 USD) in an `i64`:
//! exact addition, no drift, ±9.2 billion USD of range. Conversion to `f64`
//! happens only at the JSON edge.
//!
//! A model's [`Price`] and what a request used ([`Usage`]) live here too,
//! beside the arithmetic that turns one into the other, so that budgets
//! need money and not the catalog.

pub(crate) mod account;
pub mod budget;
pub(crate) mod burn_rate;
pub mod cost;
pub(crate) mod metadata;
pub(crate) mod sessions;
pub mod team;

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde::Serialize;

const NANOS_PER_USD: f64 = 1e9;

/// An amount of US dollars in nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

impl Usd {
    pub(crate) const ZERO: Usd = Usd(0);

    /// An amount of `nanos` nano-dollars (what the ledger stores).
    pub const fn from_nanos(nanos: i64) -> Self {
        Usd(nanos)
    }

    /// The amount in nano-dollars, for storing and exact sums.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// From a dollar figure written by a person (config, request), rounded to
    /// the nearest nano-dollar. `None` for NaN, infinities and amounts beyond
    /// the range.
    pub fn from_dollars(dollars: f64) -> Option<Self> {
        let nanos = (dollars * NANOS_PER_USD).round();
        if nanos.is_finite() && nanos.abs() < i64::MAX as f64 {
            Some(Usd(nanos as i64))
        } else {
            None
        }
    }

    /// The amount in dollars, for JSON and messages only: never sum these.
    pub fn to_dollars(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD
    }

    /// `count` times this amount (a per-call fee times the calls),
    /// saturating like the sums.
    pub fn times(self, count: u64) -> Usd {
        Usd(self
            .0
            .saturating_mul(i64::try_from(count).unwrap_or(i64::MAX)))
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        *self = *self + rhs;
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.to_dollars())
    }
}

impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.to_dollars())
    }
}

/// A price in nano-dollars per million tokens, so that a cost is
/// `tokens * price / 1e6` in integers with a single rounding per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PerMTok(u64);

impl PerMTok {
    /// From dollars per million tokens as written in the catalog or config.
    pub fn from_dollars(dollars_per_mtok: f64) -> Option<Self> {
        if !dollars_per_mtok.is_finite() || dollars_per_mtok < 0.0 {
            return None;
        }
        let nanos = (dollars_per_mtok * NANOS_PER_USD).round();
        (nanos < u64::MAX as f64).then_some(PerMTok(nanos as u64))
    }

    /// Dollars per million tokens, as the catalog and config write them.
    pub fn to_dollars(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD
    }

    /// The cost of `tokens` tokens, rounded half up to the nano-dollar.
    pub fn cost(self, tokens: u64) -> Usd {
        let nanos = (u128::from(tokens) * u128::from(self.0) + 500_000) / 1_000_000;
        Usd(i64::try_from(nanos).unwrap_or(i64::MAX))
    }
}

/// Per-million-token prices of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Prompt tokens not read from or written to the prompt cache.
    pub input: PerMTok,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_input: PerMTok,
    /// Generated tokens, reasoning included.
    pub output: PerMTok,
    /// Prompt-cache writes (Anthropic's five-minute cache); the input price
    /// where the provider has none.
    pub cache_write: PerMTok,
    /// Writes to Anthropic's one-hour cache, billed at their own rate.
    pub cache_write_1h: PerMTok,
    /// The fee for each web search the model runs with a provider's own
    /// search tool (OpenAI's `web_search`, Anthropic's server tool), billed
    /// per call on top of the tokens; zero where nobody priced it.
    pub web_search: Usd,
}

/// Token counts as a provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included (OpenAI's convention).
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written to a one-hour cache.
    pub cache_write_1h_tokens: u64,
    /// All generated tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent reasoning; reported, not billed
    /// apart.
    pub reasoning_tokens: u64,
    /// Web searches the provider ran with its own search tool, each billed
    /// at [`Price::web_search`].
    pub web_searches: u64,
}

impl Price {
    /// What `usage` costs at these prices. Reasoning tokens are part of the
    /// output count and billed at the output rate, as every provider does.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage.cache_write_tokens.min(usage.input_tokens - cached);
        let written_1h = usage.cache_write_1h_tokens.min(written);
        self.input.cost(usage.input_tokens - cached - written)
            + self.cached_input.cost(cached)
            + self.cache_write.cost(written - written_1h)
            + self.cache_write_1h.cost(written_1h)
            + self.output.cost(usage.output_tokens)
            + self.web_search.times(usage.web_searches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_in_nanos() {
        let price = PerMTok::from_dollars(2.5).expect("valid price");
        assert_eq!(price.cost(1_000_000), Usd::from_nanos(2_500_000_000));
        assert_eq!(price.cost(24), Usd::from_nanos(60_000));
        let cheap = PerMTok::from_dollars(0.075).expect("valid price");
        assert_eq!(cheap.cost(1), Usd::from_nanos(75));
        // 0.0014 $/Mtok is 1.4 nano-dollars a token: one rounding per call.
        let tiny = PerMTok::from_dollars(0.0014).expect("valid price");
        assert_eq!(tiny.cost(1), Usd::from_nanos(1));
        assert_eq!(tiny.cost(10), Usd::from_nanos(14));
    }

    #[test]
    fn sums_do_not_drift() {
        let price = PerMTok::from_dollars(0.15).expect("valid price");
        let mut total = Usd::ZERO;
        for _ in 0..1_000_000 {
            total += price.cost(1000);
        }
        assert_eq!(total, Usd::from_nanos(150_000_000_000));
        assert!((total.to_dollars() - 150.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_nonsense_dollars() {
        assert!(Usd::from_dollars(f64::NAN).is_none());
        assert!(Usd::from_dollars(f64::INFINITY).is_none());
        assert!(PerMTok::from_dollars(-1.0).is_none());
    }
}
