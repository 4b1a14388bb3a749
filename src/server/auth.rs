//! Local API keys (`[server] api_keys`).

use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::server::error::{ApiError, ErrorKind};

/// With no keys configured every caller is let in (a loopback sidecar);
/// otherwise the bearer token (or `x-api-key`, where Anthropic's clients
/// put their key) must match one of them, and the matched key is returned
/// (it decides which budget is charged). Keys are compared in
/// constant time so response timing does not reveal a key's prefix.
pub fn check(config: &Config, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let keys = &config.server.api_keys;
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ErrorKind::Unauthorized,
            "missing_api_key",
            "this p402 requires a local API key: send Authorization: Bearer <key> (or x-api-key: <key>)",
        ));
    };
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= key.get_ref().as_bytes().ct_eq(presented.as_bytes());
    }
    if bool::from(matched) {
        Ok(Some(presented.to_string()))
    } else {
        Err(ApiError::new(
            ErrorKind::Unauthorized,
            "invalid_api_key",
            "the API key is not one of this p402's [server] api_keys",
        ))
    }
}
