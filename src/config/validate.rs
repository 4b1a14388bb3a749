//! The checks a loaded file must pass beyond its types: prices and fees
//! that are plausible, keys that refer to each other or to the built-in
//! catalog, the team store's settings. Each failure names the key (its
//! span) so the error points at the line.

use toml::Spanned;

use super::schema::*;
use crate::catalog;

/// Prices below this many dollars per million tokens (but above zero) are
/// almost surely per-token or per-thousand figures typed into a per-million
/// field: the cheapest real models cost a few cents per million.
const LOWEST_PLAUSIBLE_PER_MTOK: f64 = 0.001;
/// No chat model costs more than this per million tokens.
const HIGHEST_PLAUSIBLE_PER_MTOK: f64 = 10_000.0;

/// No provider charges more than this per tool call.
const HIGHEST_PLAUSIBLE_CALL_FEE: f64 = 1.0;

/// A per-call fee in USD: zero or more, and at most a dollar (a per-1,000
/// figure written as per call is the likely mistake).
fn check_call_fee(fee: &Spanned<f64>) -> Result<(), Invalid> {
    let value = *fee.get_ref();
    if !value.is_finite() || value < 0.0 {
        return Err((
            Some(fee.span()),
            format!("a fee must be zero or positive, found {value}"),
        ));
    }
    if value > HIGHEST_PLAUSIBLE_CALL_FEE {
        return Err((
            Some(fee.span()),
            format!("{value} USD per call is beyond any provider's fee; fees are USD per call (write 0.01 for $10 per 1,000)"),
        ));
    }
    Ok(())
}

/// Refuses a price (USD per million tokens) that is negative, or too small
/// or too large to be one: most often a per-token figure in a per-million
/// field.
pub(crate) fn check_price(price: &Spanned<f64>) -> Result<(), Invalid> {
    let value = *price.get_ref();
    let complaint = if !value.is_finite() || value < 0.0 {
        Some(format!("a price must be zero or positive, found {value}"))
    } else if value > 0.0 && value < LOWEST_PLAUSIBLE_PER_MTOK {
        Some(format!(
            "{value} looks like a per-token price; prices are USD per million tokens (write 2.5 for $2.50 per million)"
        ))
    } else if value > HIGHEST_PLAUSIBLE_PER_MTOK {
        Some(format!(
            "{value} USD per million tokens is beyond any real model's price; prices are USD per million tokens"
        ))
    } else {
        None
    };
    complaint.map_or(Ok(()), |message| Err((Some(price.span()), message)))
}

impl ModelConfig {
    pub(crate) fn check_prices(&self) -> Result<(), Invalid> {
        [
            &self.input_per_mtok,
            &self.cached_input_per_mtok,
            &self.output_per_mtok,
            &self.cache_write_per_mtok,
            &self.cache_write_1h_per_mtok,
        ]
        .into_iter()
        .flatten()
        .try_for_each(check_price)?;
        self.web_search_per_call
            .as_ref()
            .map_or(Ok(()), check_call_fee)
    }
}

impl Config {
    /// Checks that relate keys to each other or to the built-in catalog.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (name, provider) in &self.providers {
            if catalog::builtin_provider(name.get_ref()).is_none() && provider.base_url.is_none() {
                return Err((
                    Some(name.span()),
                    format!(
                        "`{}` is not a built-in provider; a custom provider needs a base_url (an OpenAI-compatible endpoint)",
                        name.get_ref()
                    ),
                ));
            }
            if let Some(env) = &provider.api_key_env {
                if env.is_empty() || env.contains('=') || env.contains('\0') {
                    return Err((
                        Some(name.span()),
                        format!("api_key_env `{env}` is not an environment variable name"),
                    ));
                }
            }
        }
        for model in &self.models {
            let provider = model.provider.get_ref();
            let declared = self.providers.keys().any(|p| p.get_ref() == provider);
            if !declared && catalog::builtin_provider(provider).is_none() {
                return Err((
                    Some(model.provider.span()),
                    format!(
                        "unknown provider `{provider}`; use a built-in one ({}) or declare [providers.{provider}] with a base_url",
                        catalog::builtin_provider_names().join(", ")
                    ),
                ));
            }
            model.check_prices()?;
        }
        if self.server.ledger_group_commit_ms > 1000 {
            return Err((
                None,
                format!(
                    "[server] ledger_group_commit_ms is {}; at most 1000 (a crash may lose this much of the unbudgeted ledger)",
                    self.server.ledger_group_commit_ms
                ),
            ));
        }
        for key in &self.server.api_keys {
            if key.get_ref().trim().is_empty() {
                return Err((Some(key.span()), "an API key must not be empty".to_string()));
            }
        }
        let listen = self.server.listen.get_ref();
        if !listen.ip().is_loopback() && self.server.api_keys.is_empty() {
            return Err((
                Some(self.server.listen.span()),
                format!(
                    "listen = \"{listen}\" is reachable from other machines, and anyone who reaches it could spend your provider keys: set [server] api_keys, or listen on 127.0.0.1"
                ),
            ));
        }
        for pin in &self.routing.pin {
            if let Err(e) = glob::Pattern::new(pin.get_ref()) {
                return Err((
                    Some(pin.span()),
                    format!("`{}` is not a valid glob: {e}", pin.get_ref()),
                ));
            }
        }
        for (name, budget) in &self.budgets {
            let usd = *budget.budget_usd.get_ref();
            if !(usd.is_finite() && usd > 0.0 && usd < 1e9) {
                return Err((
                    Some(budget.budget_usd.span()),
                    format!("budget_usd must be a positive amount of dollars, found {usd}"),
                ));
            }
            for key in &budget.keys {
                if !self
                    .server
                    .api_keys
                    .iter()
                    .any(|k| k.get_ref() == key.get_ref())
                {
                    return Err((
                        Some(key.span()),
                        format!(
                            "budget `{}` names a key that is not in [server] api_keys",
                            name.get_ref()
                        ),
                    ));
                }
            }
        }
        self.validate_team()?;
        self.validate_guards()?;
        // One embedding model is built in, pinned and hash-checked: a file
        // that names another would otherwise be silently ignored.
        let model = self.cache.model.as_str();
        if !matches!(
            model,
            "all-MiniLM-L6-v2" | "sentence-transformers/all-MiniLM-L6-v2"
        ) {
            return Err((
                None,
                format!(
                    "[cache] model: p402 has one embedding model built in, all-MiniLM-L6-v2 (pinned and hash-checked); `{model}` cannot be loaded"
                ),
            ));
        }
        if let Some(cap) = &self.limits.max_cost_per_request_usd {
            let usd = *cap.get_ref();
            if !(usd.is_finite() && usd > 0.0) {
                return Err((
                    Some(cap.span()),
                    format!("max_cost_per_request_usd must be positive, found {usd}"),
                ));
            }
        }
        if self.routing.circuit_breaker_failures == 0 {
            return Err((
                None,
                "[routing] circuit_breaker_failures must be at least 1".to_string(),
            ));
        }
        if !(self.cache.max_temperature.is_finite() && self.cache.max_temperature >= 0.0) {
            return Err((
                None,
                "[cache] max_temperature must be zero or positive".to_string(),
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err((None, "[server] max_body_bytes must be positive".to_string()));
        }
        Ok(())
    }

    fn validate_team(&self) -> Result<(), Invalid> {
        let shared = self.budgets.iter().find(|(_, b)| b.shared);
        let url = self.team.url();
        if let (Some((name, _)), None) = (shared, &url) {
            return Err((
                Some(name.span()),
                format!(
                    "budget `{}` is shared = true, which needs a Redis: set [team] redis_url (or $P402_REDIS_URL)",
                    name.get_ref()
                ),
            ));
        }
        if let Some(url) = &url {
            let span = self.team.redis_url.as_ref().map(Spanned::span);
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
            {
                return Err((
                    span,
                    "[team] redis_url must start with redis://, rediss:// (TLS) or unix://"
                        .to_string(),
                ));
            }
        }
        if self.team.lease_seconds < 5 {
            return Err((None, "[team] lease_seconds must be at least 5".to_string()));
        }
        if self.team.prefix.is_empty() || self.team.prefix.contains(char::is_whitespace) {
            return Err((
                None,
                "[team] prefix must be a non-empty word without spaces".to_string(),
            ));
        }
        Ok(())
    }
}
