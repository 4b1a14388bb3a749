//! The one place where failures become HTTP answers.
//!
//! Each module reports what went wrong in its own error enum, and says of
//! each case only what kind of failure it is and its SPEC code
//! ([`Classify`]); every such error becomes an [`ApiError`] here, and only
//! [`ApiError::into_response`] knows the status codes and the JSON shape,
//! so a client sees the same `{"error": {...}}` whatever failed. (A door
//! may restate it in its own API's shape.)

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::server::body::{self, Body};
use crate::server::ids::RequestId;

/// What kind of failure, which fixes the status code and the `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400).
    InvalidRequest,
    /// A web page's request (a foreign `Origin`) (403).
    Forbidden,
    /// The body did not arrive within the read deadline (408).
    RequestTimeout,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The `Host` names something other than this listener (421).
    Misdirected,
    /// A local API key is required and missing or unknown (401).
    Unauthorized,
    /// A budget, session or `max_cost` cannot pay for the request (402).
    BudgetExceeded,
    /// No such path, session or model (404).
    NotFound,
    /// The path exists but not for this method (405).
    MethodNotAllowed,
    /// The body is larger than `max_body_bytes` (413).
    PayloadTooLarge,
    /// A configured rate or concurrency limit (429).
    RateLimited,
    /// Every eligible provider failed (502).
    UpstreamFailed,
    /// No provider can serve the request at all (503).
    NoProvider,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// Every provider tried said it is overloaded (Anthropic's 529),
    /// passed on as such so that clients back off as they would.
    Overloaded,
    /// p402 cannot do this now: its database is stuck or failing (503).
    Unavailable,
    /// A bug or an environment failure inside p402 (500).
    Internal,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::BudgetExceeded => StatusCode::PAYMENT_REQUIRED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::NoProvider | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // 529 is Anthropic's; it is a valid status code.
            ErrorKind::Overloaded => {
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field, using OpenAI's names where OpenAI has one so that
    /// SDKs classify the error the way their users expect.
    fn type_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::Misdirected => "invalid_request_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::BudgetExceeded => "budget_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::UpstreamFailed
            | ErrorKind::NoProvider
            | ErrorKind::UpstreamTimeout
            | ErrorKind::Overloaded => "upstream_error",
            ErrorKind::Internal | ErrorKind::Unavailable => "server_error",
        }
    }
}

/// A module's error, said in the SPEC's terms. Modules implement this
/// rather than build HTTP errors, so that they stay free of HTTP and the
/// mapping stays here.
pub trait Classify: std::error::Error {
    fn kind(&self) -> ErrorKind;
    fn code(&self) -> &'static str;
    /// Further fields of the error object, such as a 402's figures.
    fn extra(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// Seconds for a `Retry-After` header, for a 429.
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

impl<E: Classify> From<E> for ApiError {
    fn from(error: E) -> Self {
        let mut out = ApiError::new(error.kind(), error.code(), error.to_string());
        out.extra = error.extra().map(Box::new);
        out.retry_after = error.retry_after();
        out
    }
}

/// A failure on its way to the client: kind, a machine-readable code and a
/// message that tells the user what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 only).
    pub retry_after: Option<u64>,
    /// Further fields of the error object (a 402's `session_remaining_usd`).
    /// Boxed: rarely set, and it would double the size of every `Result`.
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            code,
            message: message.into(),
            retry_after: None,
            extra: None,
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal_error", message)
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The error object as the SPEC shapes it, also used inside SSE error events.
    pub fn to_json(&self, request_id: &RequestId) -> serde_json::Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind.type_name(),
            "code": self.code,
            "request_id": request_id.as_str(),
        });
        if let (Some(extra), Some(object)) = (&self.extra, error.as_object_mut()) {
            for (key, value) in extra.iter() {
                object.insert(key.clone(), value.clone());
            }
        }
        json!({ "error": error })
    }

    pub fn into_response(self, request_id: &RequestId) -> Response<Body> {
        let bytes = Bytes::from(self.to_json(request_id).to_string());
        self.response(bytes, request_id)
    }

    /// `body` (the error in some client's shape) with the error's status
    /// and headers: the request id, `Retry-After`, and `x-should-retry:
    /// false` for a request that would fail the same way again (the SDKs
    /// otherwise retry some statuses by default).
    pub fn response(&self, body: Bytes, request_id: &RequestId) -> Response<Body> {
        let mut response = Response::new(body::full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
            headers.insert("x-p402-request-id", value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.kind == ErrorKind::InvalidRequest {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}
