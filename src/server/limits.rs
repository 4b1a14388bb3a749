//! `[limits]`: requests per minute and concurrent requests, answered with
//! 429 and `Retry-After` when exceeded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use crate::server::error::{ApiError, ErrorKind};

const WINDOW: Duration = Duration::from_secs(60);

/// Process-wide counters; limits are read from the live config on each
/// request, so a reload changes them at once.
#[derive(Default)]
pub struct Limiter {
    /// Start times of the requests admitted in the last minute.
    recent: Mutex<VecDeque<Instant>>,
    in_flight: Arc<AtomicU32>,
}

/// Holds one concurrency slot until dropped (the end of the response,
/// streams included).
pub struct Permit {
    in_flight: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    pub fn admit(&self, limits: &LimitsConfig) -> Result<Permit, ApiError> {
        let now = Instant::now();
        if let Some(per_minute) = limits.requests_per_minute {
            let mut recent = match self.recent.lock() {
                Ok(recent) => recent,
                Err(poisoned) => poisoned.into_inner(),
            };
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                recent.pop_front();
            }
            if recent.len() >= per_minute as usize {
                let wait = recent.front().map_or(WINDOW, |oldest| {
                    WINDOW.saturating_sub(now.duration_since(*oldest))
                });
                return Err(limited(
                    "rate_limited",
                    format!("more than {per_minute} requests in a minute ([limits] requests_per_minute)"),
                    wait,
                ));
            }
            recent.push_back(now);
        }
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            in_flight: self.in_flight.clone(),
        };
        if let Some(max) = limits.concurrent_requests {
            if previous >= max {
                drop(permit);
                return Err(limited(
                    "too_many_concurrent_requests",
                    format!("{max} requests are already in flight ([limits] concurrent_requests)"),
                    Duration::from_secs(1),
                ));
            }
        }
        Ok(permit)
    }
}

fn limited(code: &'static str, message: String, wait: Duration) -> ApiError {
    let mut error = ApiError::new(ErrorKind::RateLimited, code, message);
    error.retry_after = Some(wait.as_secs().max(1));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_concurrency_limits() {
        let limiter = Limiter::default();
        let limits = LimitsConfig {
            requests_per_minute: Some(3),
            concurrent_requests: Some(2),
            ..LimitsConfig::default()
        };
        let a = limiter.admit(&limits).expect("1");
        let b = limiter.admit(&limits).expect("2");
        let busy = limiter
            .admit(&limits)
            .err()
            .expect("a third at once is refused");
        assert_eq!(busy.code, "too_many_concurrent_requests");
        assert_eq!(busy.retry_after, Some(1));
        drop(a);
        drop(b);
        // The refused one counted against the minute: 3 of 3 used.
        let rate = limiter.admit(&limits).err().expect("over the minute");
        assert_eq!(rate.code, "rate_limited");
        assert!(rate.retry_after.is_some_and(|s| (1..=60).contains(&s)));
    }
}
