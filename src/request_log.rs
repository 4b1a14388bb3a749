//! The one log line each request leaves behind.
//!
//! It carries what an operator needs to account for a request (id,
//! provider, model, status, latency, cost) and never the prompt, the answer
//! or any key.

use std::time::Instant;

use crate::error::ApiError;
use crate::ids::RequestId;
use crate::metadata::Metadata;

pub struct RequestLog {
    request_id: String,
    stream: bool,
    started: Instant,
    provider: Option<String>,
    model: Option<String>,
    status: u16,
    cost_usd: Option<f64>,
    error_code: Option<&'static str>,
}

impl RequestLog {
    pub fn new(request_id: &RequestId, stream: bool, started: Instant) -> Self {
        RequestLog {
            request_id: request_id.to_string(),
            stream,
            started,
            provider: None,
            model: None,
            status: 0,
            cost_usd: None,
            error_code: None,
        }
    }

    pub fn answered(&mut self, metadata: &Metadata) {
        self.provider = Some(metadata.provider.clone());
        self.model = metadata.model.clone();
        self.cost_usd = metadata.cost_usd.map(|c| c.to_dollars());
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

    pub fn emit(self) {
        tracing::info!(
            target: "p402::request",
            request_id = %self.request_id,
            stream = self.stream,
            provider = self.provider.as_deref().unwrap_or("-"),
            model = self.model.as_deref().unwrap_or("-"),
            status = self.status,
            latency_ms = crate::stream::elapsed_ms(self.started),
            cost_usd = self.cost_usd,
            error = self.error_code,
            "request"
        );
    }
}
