//! Reading the request body: within a deadline and a size limit, so that a
//! slow or endless sender holds nothing for long.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::config::ServerConfig;
use crate::server::error::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("the request body is larger than max_body_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("could not read the request body: {0}")]
    Unreadable(String),
}

impl Classify for BodyError {
    fn kind(&self) -> ErrorKind {
        match self {
            BodyError::Timeout(_) => ErrorKind::RequestTimeout,
            BodyError::TooLarge(_) => ErrorKind::PayloadTooLarge,
            BodyError::Unreadable(_) => ErrorKind::InvalidRequest,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            BodyError::Timeout(_) => "body_timeout",
            BodyError::TooLarge(_) => "payload_too_large",
            BodyError::Unreadable(_) => "unreadable_body",
        }
    }
}

/// Reads the body within `[server] body_read_timeout_seconds`, refusing it
/// as soon as it passes `max_body_bytes` rather than after holding it all.
pub async fn body(
    body: Incoming,
    headers: &HeaderMap,
    server: &ServerConfig,
) -> Result<Bytes, BodyError> {
    let deadline = server.body_read_timeout_seconds.duration();
    tokio::time::timeout(deadline, limited(body, headers, server.max_body_bytes))
        .await
        .unwrap_or(Err(BodyError::Timeout(deadline)))
}

async fn limited(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}
