//! The checks of the settings that warn before a cap and stop a runaway
//! loop (SPEC §14): `[alerts]`, a budget's `alert_at` and
//! `max_usd_per_hour` (declared with the rest in `schema`), and the
//! warnings about a config that is valid but does not do what it says.

use super::schema::{BudgetConfig, Config, Invalid, DEFAULT_ALERT_AT};

impl BudgetConfig {
    /// The fractions that raise an alert, ascending.
    pub fn thresholds(&self) -> Vec<f64> {
        self.alert_at
            .as_ref()
            .map_or_else(|| DEFAULT_ALERT_AT.to_vec(), |at| at.get_ref().clone())
    }
}

/// Whether a list of thresholds is usable: each a fraction in (0, 1].
fn check_thresholds(at: &[f64]) -> Result<(), String> {
    match at.iter().find(|t| !(t.is_finite() && **t > 0.0 && **t <= 1.0)) {
        Some(bad) => Err(format!(
            "alert thresholds are fractions of the budget above 0 and at most 1 (0.8 = 80%), found {bad}"
        )),
        None => Ok(()),
    }
}

impl Config {
    pub(super) fn validate_guards(&self) -> Result<(), Invalid> {
        for (name, budget) in &self.budgets {
            if let Some(at) = &budget.alert_at {
                check_thresholds(at.get_ref()).map_err(|e| (Some(at.span()), e))?;
            }
            if let Some(cap) = &budget.max_usd_per_hour {
                let usd = *cap.get_ref();
                if !(usd.is_finite() && usd > 0.0 && usd < 1e9) {
                    return Err((
                        Some(cap.span()),
                        format!(
                            "max_usd_per_hour must be a positive amount of dollars, found {usd}"
                        ),
                    ));
                }
                if budget.shared {
                    return Err((
                        Some(cap.span()),
                        format!(
                            "budget `{}` is shared; max_usd_per_hour is counted by each p402 alone, so it is only for budgets that are not shared",
                            name.get_ref()
                        ),
                    ));
                }
            }
        }
        check_thresholds(&self.alerts.session_alert_at)
            .map_err(|e| (None, format!("[alerts] session_alert_at: {e}")))?;
        if let Some(url) = &self.alerts.webhook_url {
            let text = url.get_ref();
            let parsed = text.parse::<http::Uri>().ok();
            let scheme = parsed.as_ref().and_then(|u| u.scheme_str());
            let usable = matches!(scheme, Some("http" | "https"))
                && parsed.as_ref().and_then(http::Uri::host).is_some();
            if !text.is_empty() && !usable {
                return Err((
                    Some(url.span()),
                    format!(
                        "[alerts] webhook_url must be an http:// or https:// URL, found `{text}`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What a valid config does that its author probably did not mean,
    /// said at load, by `p402 check` and in `/health`.
    pub fn warnings(&self) -> Vec<String> {
        self.orphan_budgets()
            .into_iter()
            .map(|name| {
                format!(
                    "budget `{name}` charges nothing: no request is charged to a budget without keys unless it is named `global` or `default`; add keys = [...] (local API keys from [server] api_keys), or rename it"
                )
            })
            .collect()
    }

    /// Declared budgets that no request can be charged to: no `keys`, and
    /// neither `global` nor `default` (SPEC §5 says who pays).
    pub fn orphan_budgets(&self) -> Vec<String> {
        self.budgets
            .iter()
            .filter(|(name, budget)| {
                budget.keys.is_empty() && !matches!(name.get_ref().as_str(), "global" | "default")
            })
            .map(|(name, _)| name.get_ref().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn a_budget_without_keys_is_an_orphan_unless_global_or_default() {
        let config = parse(
            "p402.toml",
            "[server]\napi_keys = [\"k\"]\n[budgets.team]\nbudget_usd = 5\n[budgets.mine]\nbudget_usd = 5\nkeys = [\"k\"]\n[budgets.global]\nbudget_usd = 50\n[budgets.default]\nbudget_usd = 1\n",
        )
        .expect("valid");
        assert_eq!(config.orphan_budgets(), vec!["team".to_string()]);
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("`team` charges nothing"),
            "{warnings:?}"
        );
    }

    #[test]
    fn thresholds_caps_and_webhooks_are_checked_where_they_are() {
        let err = |source: &str| match parse("p402.toml", source) {
            Ok(_) => panic!("expected an error for {source:?}"),
            Err(e) => e.to_string(),
        };
        let e = err("[budgets.global]\nbudget_usd = 5\nalert_at = [0.5, 80]\n");
        assert!(e.starts_with("p402.toml:3:12:"), "{e}");
        let e = err("[budgets.global]\nbudget_usd = 5\nmax_usd_per_hour = 0\n");
        assert!(e.starts_with("p402.toml:3:20:"), "{e}");
        let e = err("[alerts]\nwebhook_url = \"ftp://x\"\n");
        assert!(e.starts_with("p402.toml:2:15:"), "{e}");
        let e = err("[alerts]\nsession_alert_at = [0]\n");
        assert!(e.contains("session_alert_at"), "{e}");
        let config = parse(
            "p402.toml",
            "[alerts]\nwebhook_url = \"http://127.0.0.1:9/hook\"\ndesktop = true\n[budgets.global]\nbudget_usd = 5\nalert_at = [0.5]\nmax_usd_per_hour = 0.5\n",
        )
        .expect("valid");
        assert_eq!(config.alerts.webhook(), Some("http://127.0.0.1:9/hook"));
        let budget = config.budgets.values().next().expect("budget");
        assert_eq!(budget.thresholds(), vec![0.5]);
    }
}
