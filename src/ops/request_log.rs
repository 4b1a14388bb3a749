//! The one log line each request leaves behind.
//!
//! It carries what an operator needs to account for a request (id,
//! provider, model, status, latency, cost) and never the prompt, the answer
//! or any key.

use std::time::Instant;

use crate::money::metadata::Metadata;
use crate::ops::metrics::{Metrics, ProviderLabels, RequestLabels, TokenLabels};
use crate::server::error::ApiError;
use crate::server::ids::RequestId;

/// Milliseconds since `since`, as the log and the metadata report them.
pub fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub struct RequestLog {
    request_id: String,
    /// The API the client called by (`chat`, ...).
    door: &'static str,
    stream: bool,
    started: Instant,
    provider: Option<String>,
    model: Option<String>,
    status: u16,
    cost_usd: Option<f64>,
    savings_usd: Option<f64>,
    input_tokens: u64,
    output_tokens: u64,
    cached: bool,
    error_code: Option<&'static str>,
    /// A forwarded request's method and path.
    endpoint: Option<String>,
    /// The requested model and the two ratings, when both are known.
    quality: Option<(String, i64, i64)>,
    /// Failed attempts at providers before the request ended.
    attempts: usize,
}

impl RequestLog {
    pub fn new(request_id: &RequestId, stream: bool, started: Instant) -> Self {
        RequestLog {
            request_id: request_id.to_string(),
            door: "-",
            stream,
            started,
            provider: None,
            model: None,
            status: 0,
            cost_usd: None,
            savings_usd: None,
            input_tokens: 0,
            output_tokens: 0,
            cached: false,
            error_code: None,
            endpoint: None,
            quality: None,
            attempts: 0,
        }
    }

    /// What a side door (embeddings, a forwarded call) served, which has no
    /// answer metadata of its own: who answered and what it cost.
    pub fn served(
        &mut self,
        provider: &str,
        model: Option<&str>,
        cost: Option<crate::money::Usd>,
        input_tokens: u64,
    ) {
        self.provider = Some(provider.to_string());
        self.model = model.map(str::to_string);
        self.cost_usd = cost.map(|c| c.to_dollars());
        self.input_tokens = input_tokens;
        self.cached = provider == "cache";
    }

    /// A forwarded request's method and path, for its line.
    pub fn endpoint(&mut self, endpoint: &str) {
        self.endpoint = Some(endpoint.to_string());
    }

    pub fn answered(&mut self, metadata: &Metadata) {
        self.provider = Some(metadata.provider.clone());
        self.model = metadata.model.clone();
        self.cost_usd = metadata.cost_usd.map(|c| c.to_dollars());
        self.savings_usd = metadata.savings.map(|s| s.to_dollars());
        self.input_tokens = metadata.input_tokens;
        self.output_tokens = metadata.output_tokens;
        self.cached = metadata.cached;
        self.quality = metadata
            .quality
            .as_ref()
            .and_then(|q| Some((metadata.requested_model.clone(), q.requested?, q.served?)));
    }

    /// How many attempts at providers failed before the request ended.
    pub fn attempts(&mut self, attempts: usize) {
        self.attempts = attempts;
    }

    pub fn door(&mut self, door: &'static str) {
        self.door = door;
    }

    pub fn status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn failed(&mut self, error: &ApiError) {
        if self.status == 0 {
            self.status = error.status().as_u16();
        }
        self.error_code = Some(error.code);
    }

    /// Writes the line and counts the request in the metrics.
    pub fn emit(self, metrics: &Metrics) {
        self.count(metrics);
        self.write();
    }

    fn count(&self, metrics: &Metrics) {
        let provider = self.provider.clone().unwrap_or_else(|| "-".to_string());
        metrics
            .requests
            .get_or_create(&RequestLabels {
                door: self.door,
                provider: provider.clone(),
                model: self.model.clone().unwrap_or_else(|| "-".to_string()),
                status: self.status,
            })
            .inc();
        metrics
            .latency
            .observe(self.started.elapsed().as_secs_f64());
        if self.cached {
            metrics.cache_hits.inc();
        } else if self.provider.is_some() {
            for (direction, count) in [("input", self.input_tokens), ("output", self.output_tokens)]
            {
                metrics
                    .tokens
                    .get_or_create(&TokenLabels {
                        provider: provider.clone(),
                        direction,
                    })
                    .inc_by(count);
            }
            if let Some(cost) = self.cost_usd {
                metrics
                    .cost_usd
                    .get_or_create(&ProviderLabels { provider })
                    .inc_by(cost);
            }
        }
        if let Some(savings) = self.savings_usd.filter(|s| *s > 0.0) {
            metrics.savings_usd.inc_by(savings);
        }
        if let (Some((requested_model, requested, served)), Some(model), false) =
            (&self.quality, &self.model, self.cached)
        {
            metrics
                .quality
                .record(requested_model, model, *requested, *served);
        }
    }

    fn write(self) {
        tracing::info!(
            target: "p402::request",
            request_id = %self.request_id,
            door = self.door,
            stream = self.stream,
            provider = self.provider.as_deref().unwrap_or("-"),
            model = self.model.as_deref().unwrap_or("-"),
            status = self.status,
            latency_ms = elapsed_ms(self.started),
            cost_usd = self.cost_usd,
            error = self.error_code,
            endpoint = self.endpoint.as_deref(),
            failed_attempts = (self.attempts > 0).then_some(self.attempts),
            "request"
        );
    }
}
