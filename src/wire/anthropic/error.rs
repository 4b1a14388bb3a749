//! Anthropic's failures in p402's terms, in one place for whole answers and
//! stream `error` events alike: the status the client sees, and whether
//! another candidate is worth trying.

use http::StatusCode;
use serde_json::{json, Value};

use crate::wire::is_retryable;

/// Maps an Anthropic error answer to p402's status and an OpenAI-style error
/// body, and says whether another candidate is worth trying.
///
/// A rejected key, permission or billing problem is p402's own provider
/// configuration failing, not the client's request: it becomes a 502, and,
/// like every 5xx, a reason to fail over. An overloaded Anthropic (529)
/// becomes 503, a status clients know.
pub fn translate_error(status: StatusCode, body: &[u8]) -> (StatusCode, Value, bool) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let fault = kind
        .and_then(Fault::of_type)
        .unwrap_or_else(|| Fault::of_status(status));
    let detail = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => describe_body(status, body),
    };
    let returned = fault.status();
    let body = json!({ "error": fault.body(kind, &detail) });
    (returned, body, is_retryable(returned))
}

/// What went wrong upstream, by Anthropic's error `type` (or its status
/// when the body does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    InvalidRequest,
    Authentication,
    Permission,
    Billing,
    NotFound,
    TooLarge,
    RateLimited,
    Api,
    Overloaded,
    /// Another 4xx: the request's fault, status kept.
    OtherClient(StatusCode),
}

impl Fault {
    pub(super) fn of_type(kind: &str) -> Option<Self> {
        Some(match kind {
            "invalid_request_error" => Fault::InvalidRequest,
            "authentication_error" => Fault::Authentication,
            "permission_error" => Fault::Permission,
            "billing_error" => Fault::Billing,
            "not_found_error" => Fault::NotFound,
            "request_too_large" => Fault::TooLarge,
            "rate_limit_error" => Fault::RateLimited,
            "api_error" | "timeout_error" => Fault::Api,
            "overloaded_error" => Fault::Overloaded,
            _ => return None,
        })
    }

    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Fault::InvalidRequest,
            401 => Fault::Authentication,
            // Anthropic's account, not the client's: p402's own 402 means a
            // budget, so this one is never passed on.
            402 => Fault::Billing,
            403 => Fault::Permission,
            404 => Fault::NotFound,
            413 => Fault::TooLarge,
            429 => Fault::RateLimited,
            529 => Fault::Overloaded,
            405..=499 => Fault::OtherClient(status),
            _ => Fault::Api,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Fault::InvalidRequest => StatusCode::BAD_REQUEST,
            Fault::NotFound => StatusCode::NOT_FOUND,
            Fault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Fault::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Fault::OtherClient(status) => status,
            Fault::Authentication | Fault::Permission | Fault::Billing | Fault::Api => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Anthropic's type name for the fault, for bodies that do not say.
    fn default_code(self) -> &'static str {
        match self {
            Fault::NotFound => "not_found_error",
            Fault::TooLarge => "request_too_large",
            Fault::Api => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI-style error object: the `type` names p402 uses elsewhere,
    /// Anthropic's own type as `code` so nothing is lost.
    pub(super) fn body(self, kind: Option<&str>, detail: &str) -> Value {
        let (type_name, code, message) = match self {
            Fault::Authentication => (
                "upstream_error",
                "upstream_authentication_error",
                format!("Anthropic rejected the API key p402 is configured with ({detail}); this is p402's configuration, not the request: check the provider's key (ANTHROPIC_API_KEY for the built-in `anthropic` provider)"),
            ),
            Fault::Permission => (
                "upstream_error",
                "upstream_permission_error",
                format!("the API key p402 is configured with may not use this Anthropic resource ({detail}); this is p402's configuration, not the request: check the key's workspace and model access"),
            ),
            Fault::Billing => (
                "upstream_error",
                "upstream_billing_error",
                format!("Anthropic refused p402's account for billing reasons ({detail}); check the account's credit and billing settings"),
            ),
            Fault::InvalidRequest | Fault::NotFound | Fault::TooLarge | Fault::OtherClient(_) => (
                "invalid_request_error",
                kind.unwrap_or(self.default_code()),
                format!("Anthropic refused the request: {detail}"),
            ),
            Fault::RateLimited => (
                "rate_limit_error",
                "rate_limit_error",
                format!("Anthropic rate limit: {detail}"),
            ),
            Fault::Overloaded => (
                "upstream_error",
                "overloaded_error",
                format!("Anthropic is overloaded: {detail}"),
            ),
            Fault::Api => (
                "upstream_error",
                kind.unwrap_or(self.default_code()),
                format!("Anthropic failed: {detail}"),
            ),
        };
        json!({ "message": message, "type": type_name, "code": code })
    }
}

/// Error bodies that are not Anthropic's JSON (a proxy's HTML page, an
/// empty 529) still say what happened.
fn describe_body(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status}: {}", truncate(text, 200))
    }
}

/// At most `max` characters of `text`: cut by characters, not bytes, since
/// slicing inside a multi-byte character would panic.
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn error_types_map_to_status_and_failover() {
        let cases = [
            (
                "invalid_request_error",
                400,
                400,
                "invalid_request_error",
                false,
            ),
            ("authentication_error", 401, 502, "upstream_error", true),
            ("permission_error", 403, 502, "upstream_error", true),
            ("billing_error", 402, 502, "upstream_error", true),
            ("not_found_error", 404, 404, "invalid_request_error", false),
            (
                "request_too_large",
                413,
                413,
                "invalid_request_error",
                false,
            ),
            ("rate_limit_error", 429, 429, "rate_limit_error", true),
            ("api_error", 500, 502, "upstream_error", true),
            ("overloaded_error", 529, 503, "upstream_error", true),
        ];
        for (kind, upstream, returned, type_name, retry) in cases {
            let status = StatusCode::from_u16(upstream).expect("status");
            let (out, body, retryable) = translate_error(status, &anthropic_error(kind, "detail"));
            assert_eq!(out.as_u16(), returned, "{kind}");
            assert_eq!(retryable, retry, "{kind}");
            assert_eq!(body["error"]["type"], type_name, "{kind}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains("detail"),
                "{kind}: {body}"
            );
        }
    }

    #[test]
    fn key_problems_are_p402s_not_the_clients() {
        let (status, body, retry) = translate_error(
            StatusCode::UNAUTHORIZED,
            &anthropic_error("authentication_error", "invalid x-api-key"),
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(retry);
        assert_eq!(body["error"]["code"], "upstream_authentication_error");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("invalid x-api-key"), "{message}");
        assert!(message.contains("p402's configuration"), "{message}");
        assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
    }

    #[test]
    fn client_errors_keep_anthropics_message_and_type() {
        let (status, body, retry) = translate_error(
            StatusCode::BAD_REQUEST,
            &anthropic_error(
                "invalid_request_error",
                "messages: text content blocks must be non-empty",
            ),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!retry);
        assert_eq!(
            body,
            json!({"error": {
                "message": "Anthropic refused the request: messages: text content blocks must be non-empty",
                "type": "invalid_request_error",
                "code": "invalid_request_error",
            }})
        );
    }

    #[test]
    fn non_json_error_bodies_fall_back_to_the_status() {
        let html = b"<html><body>413 Request Entity Too Large</body></html>";
        let (status, body, retry) = translate_error(StatusCode::PAYLOAD_TOO_LARGE, html);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!retry);
        assert_eq!(body["error"]["code"], "request_too_large");
        assert!(body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("Request Entity Too Large"));

        let overloaded = StatusCode::from_u16(529).expect("529");
        let (status, body, retry) = translate_error(overloaded, b"");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry);
        assert!(body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("empty body"));

        let (status, body, retry) =
            translate_error(StatusCode::BAD_GATEWAY, b"upstream connect error");
        assert_eq!((status, retry), (StatusCode::BAD_GATEWAY, true));
        assert_eq!(body["error"]["code"], "api_error");

        let (status, _, retry) = translate_error(StatusCode::CONFLICT, b"{\"unexpected\": true}");
        assert_eq!((status, retry), (StatusCode::CONFLICT, false));

        let (status, body, _) = translate_error(
            StatusCode::TOO_MANY_REQUESTS,
            &anthropic_error("some_future_error", "slow down"),
        );
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "rate_limit_error");
    }
}
