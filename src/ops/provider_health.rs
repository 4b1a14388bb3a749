//! Live health of each provider: a circuit breaker, recent errors and
//! latency, whether keyless local servers (Ollama and the like) answer and
//! which models they have installed, and which models a provider said it
//! does not have.
//!
//! It lives beside the config rather than inside it, so that a config reload
//! does not forget that a provider has been failing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// How many recent errors are kept per provider for `/api/v2/providers`.
const RECENT_ERRORS: usize = 5;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Consecutive failures (429, 5xx, connect errors, timeouts) that open it.
    pub failures: u32,
    pub(crate) cooldown: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// After the cool-down one trial request goes through; until it reports
    /// back, others keep skipping the provider.
    trial_in_flight: bool,
    requests: u64,
    failures: u64,
    latency_ewma_ms: Option<f64>,
    recent_errors: VecDeque<(DateTime<Utc>, String)>,
    /// For keyless local servers: did the last probe get an answer?
    reachable: Option<bool>,
    /// For keyless local servers: the models the last probe listed, by
    /// [`model_key`].
    installed: Option<BTreeSet<String>>,
    /// Models the provider answered "model not found" for, until when they
    /// are not routed to.
    missing: HashMap<String, Instant>,
}

/// How long a model a cloud provider said it does not have is left out.
/// (A local server's models are listed again at its next probe instead.)
pub const MISSING_FOR: Duration = Duration::from_secs(600);

/// A model name as servers list it: Ollama lists `llama3.2` as
/// `llama3.2:latest`, and either may be asked for.
pub fn model_key(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// What `/api/v2/providers` shows of one provider's health.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub(crate) circuit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) open_for_seconds: Option<f64>,
    pub(crate) consecutive_failures: u32,
    /// Calls made to the provider since p402 started, failed ones included.
    pub requests: u64,
    pub(crate) failures: u64,
    pub(crate) avg_latency_ms: Option<f64>,
    pub(crate) recent_errors: Vec<RecentError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reachable: Option<bool>,
    /// For local servers, the models they list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_models: Option<Vec<String>>,
    /// Models the provider said it does not have, left out for now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_models: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecentError {
    pub(crate) at: String,
    pub(crate) error: String,
}

/// Shared by all requests; a std mutex because it is held only for a few
/// field updates, never across an `.await`.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    entries: Mutex<HashMap<String, Entry>>,
    /// Wakes the local-server probe early: a local server said it does not
    /// have a model it was thought to have.
    probe_now: tokio::sync::Notify,
}

impl ProviderHealth {
    fn with<R>(&self, provider: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entries = match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(entries.entry(provider.to_string()).or_default())
    }

    /// Whether the router may send a request to `provider` now. A provider
    /// whose breaker has cooled down gets exactly one trial request.
    pub fn admits(&self, provider: &str) -> bool {
        self.with(provider, |entry| match entry.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if entry.trial_in_flight => false,
            Some(_) => {
                entry.trial_in_flight = true;
                true
            }
        })
    }

    /// Whether the breaker would admit a request, without claiming the trial.
    pub fn is_open(&self, provider: &str) -> bool {
        self.with(provider, |entry| {
            entry
                .open_until
                .is_some_and(|until| Instant::now() < until || entry.trial_in_flight)
        })
    }

    /// A call succeeded: the breaker closes and its failures start again
    /// from zero. `latency` feeds the average shown (weighted to recent calls).
    pub(crate) fn record_success(&self, provider: &str, latency: Duration) {
        self.with(provider, |entry| {
            entry.requests += 1;
            entry.consecutive_failures = 0;
            entry.open_until = None;
            entry.trial_in_flight = false;
            let ms = latency.as_secs_f64() * 1000.0;
            entry.latency_ewma_ms = Some(match entry.latency_ewma_ms {
                Some(avg) => avg * 0.8 + ms * 0.2,
                None => ms,
            });
        });
    }

    /// A call failed with `error` (kept among the recent ones). The breaker
    /// opens after `policy.failures` failures in a row, or at once when the
    /// failed call was the trial after a cool-down.
    pub(crate) fn record_failure(&self, provider: &str, error: &str, policy: BreakerPolicy) {
        let opened = self.with(provider, |entry| {
            entry.requests += 1;
            entry.failures += 1;
            entry.consecutive_failures += 1;
            entry
                .recent_errors
                .push_back((Utc::now(), error.to_string()));
            while entry.recent_errors.len() > RECENT_ERRORS {
                entry.recent_errors.pop_front();
            }
            let was_trial = entry.trial_in_flight;
            entry.trial_in_flight = false;
            if was_trial || entry.consecutive_failures >= policy.failures {
                entry.open_until = Some(Instant::now() + policy.cooldown);
                true
            } else {
                false
            }
        });
        if opened {
            tracing::warn!(
                provider,
                "circuit open: skipping the provider for {:?} after repeated failures",
                policy.cooldown
            );
        }
    }

    /// A trial request that ended without a verdict (the client's own 4xx,
    /// say) gives the trial back.
    pub fn release_trial(&self, provider: &str) {
        self.with(provider, |entry| entry.trial_in_flight = false);
    }

    /// Whether a local server answered its last probe; a change is logged.
    pub(crate) fn set_reachable(&self, provider: &str, reachable: bool) {
        let changed = self.with(provider, |entry| {
            let changed = entry.reachable != Some(reachable);
            entry.reachable = Some(reachable);
            changed
        });
        if changed {
            tracing::info!(provider, reachable, "local provider probe");
        }
    }

    /// For keyless local servers: `None` until the first probe answered.
    pub fn reachable(&self, provider: &str) -> Option<bool> {
        self.with(provider, |entry| entry.reachable)
    }

    /// What a local server's probe listed; `None` when it listed nothing
    /// readable (it is then not routed to). A model listed again is no
    /// longer missing.
    pub fn set_installed(&self, provider: &str, models: Option<BTreeSet<String>>) {
        let changed = self.with(provider, |entry| {
            if let Some(models) = &models {
                entry.missing.retain(|model, _| !models.contains(model));
            }
            let changed = entry.installed != models;
            entry.installed = models;
            changed
        });
        if changed {
            tracing::info!(
                provider,
                models = ?self.installed(provider),
                "local provider models"
            );
        }
    }

    /// Returns when a probe of the local servers is wanted before its time.
    pub async fn probe_wanted(&self) {
        self.probe_now.notified().await;
    }

    /// The models a local server listed at its last probe.
    pub fn installed(&self, provider: &str) -> Option<Vec<String>> {
        self.with(provider, |entry| {
            entry
                .installed
                .as_ref()
                .map(|models| models.iter().cloned().collect())
        })
    }

    /// Whether `model` may be routed to on `provider`: not reported missing
    /// lately and, on a local server (`local`), listed by its last probe.
    pub fn has_model(&self, provider: &str, model: &str, local: bool) -> bool {
        let key = model_key(model);
        self.with(provider, |entry| {
            if let Some(until) = entry.missing.get(key) {
                if Instant::now() < *until {
                    return false;
                }
                entry.missing.remove(key);
            }
            !local
                || entry
                    .installed
                    .as_ref()
                    .is_some_and(|models| models.contains(key))
        })
    }

    /// The provider answered that it does not have `model`: it is not
    /// routed to for [`MISSING_FOR`], or until a local server lists it
    /// (which it is asked again at once).
    pub fn mark_missing(&self, provider: &str, model: &str) {
        let key = model_key(model).to_string();
        let local = self.with(provider, |entry| {
            if let Some(models) = entry.installed.as_mut() {
                models.remove(&key);
            }
            entry.missing.insert(key, Instant::now() + MISSING_FOR);
            entry.installed.is_some()
        });
        if local {
            self.probe_now.notify_one();
        }
        tracing::warn!(
            provider,
            model,
            "the provider does not have this model; not routing to it for now"
        );
    }

    /// The provider's health as `/api/v2/providers` shows it.
    pub(crate) fn view(&self, provider: &str) -> HealthView {
        self.with(provider, |entry| {
            let now = Instant::now();
            let (circuit, open_for) = match entry.open_until {
                None => ("closed", None),
                Some(until) if now < until => ("open", Some((until - now).as_secs_f64())),
                Some(_) => ("half_open", None),
            };
            HealthView {
                circuit,
                open_for_seconds: open_for,
                consecutive_failures: entry.consecutive_failures,
                requests: entry.requests,
                failures: entry.failures,
                avg_latency_ms: entry.latency_ewma_ms.map(|ms| (ms * 10.0).round() / 10.0),
                recent_errors: entry
                    .recent_errors
                    .iter()
                    .map(|(at, error)| RecentError {
                        at: at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        error: error.clone(),
                    })
                    .collect(),
                reachable: entry.reachable,
                installed_models: entry
                    .installed
                    .as_ref()
                    .map(|models| models.iter().cloned().collect()),
                missing_models: entry
                    .missing
                    .iter()
                    .filter(|(_, until)| now < **until)
                    .map(|(model, _)| model.clone())
                    .collect(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures: 3,
        cooldown: Duration::from_millis(30),
    };

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        let health = ProviderHealth::default();
        for _ in 0..2 {
            health.record_failure("p", "500", POLICY);
            assert!(health.admits("p"));
        }
        health.record_failure("p", "500", POLICY);
        assert!(!health.admits("p"));
        assert_eq!(health.view("p").circuit, "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(health.admits("p"), "one trial after the cool-down");
        assert!(!health.admits("p"), "only one trial at a time");
        health.record_success("p", Duration::from_millis(5));
        assert!(health.admits("p") && health.admits("p"));
        assert_eq!(health.view("p").circuit, "closed");
    }

    #[test]
    fn a_failed_trial_reopens_at_once() {
        let health = ProviderHealth::default();
        for _ in 0..3 {
            health.record_failure("p", "timeout", POLICY);
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(health.admits("p"));
        health.record_failure("p", "timeout", POLICY);
        assert!(!health.admits("p"));
        assert_eq!(health.view("p").recent_errors.len(), 4);
    }

    #[test]
    fn a_success_resets_the_count() {
        let health = ProviderHealth::default();
        health.record_failure("p", "500", POLICY);
        health.record_failure("p", "500", POLICY);
        health.record_success("p", Duration::from_millis(1));
        health.record_failure("p", "500", POLICY);
        assert!(health.admits("p"));
    }
}
