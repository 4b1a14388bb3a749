//! The dashboard: a page a person opens instead of reading JSON (SPEC §9).
//!
//! `GET /` and `/dashboard` serve one HTML page compiled into the binary.
//! It holds no data and loads nothing from outside the machine (its
//! Content-Security-Policy forbids it): its script reads the same API a
//! client would (`/api/v2/report`, `budgets`, `sessions`, `providers`,
//! `cache/stats`, `requests`), with the local key the person typed when
//! `api_keys` is set, and draws the spend chart from [`chart`]'s SVG.

pub mod chart;

use std::sync::OnceLock;

use chrono::Utc;
use http::{header, Response, StatusCode};

use crate::api::json_response;
use crate::ops::state::AppState;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;

const PAGE: &str = include_str!("page.html");

/// Nothing from elsewhere: styles are the page's own, it talks only to
/// the p402 that served it, and the one script that runs is the page's,
/// named by its hash: a script that found its way into the page some other
/// way (an injected element, an event-handler attribute) does not run.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            script_hash(PAGE)
        )
    })
}

/// The base64 SHA-256 of the page's inline script, as CSP hashes it: the
/// text between `<script>` and `</script>`, exactly.
fn script_hash(page: &str) -> String {
    use sha2::{Digest, Sha256};
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    base64(&Sha256::digest(script.as_bytes()))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page. It carries no data, so it needs no key; what it reads does.
pub fn page() -> Response<Body> {
    let mut response = Response::new(crate::server::body::full(bytes::Bytes::from_static(
        PAGE.as_bytes(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(policy) = http::HeaderValue::from_str(policy()) {
        headers.insert("content-security-policy", policy);
    }
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /api/v2/dashboard/spend.svg?since=7d&step=day|hour`.
pub fn spend(state: &AppState, query: Option<&str>, request_id: &RequestId) -> Response<Body> {
    let mut since = "7d".to_string();
    let mut step = chart::Step::Day;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("since", value)) => since = value.to_string(),
            Some(("step", "hour")) => step = chart::Step::Hour,
            Some(("step", "day")) => step = chart::Step::Day,
            _ => {}
        }
    }
    let now = Utc::now();
    let Some(since) = crate::ops::report::parse_since(&since, now) else {
        return ApiError::invalid(
            "invalid_query",
            format!("since `{since}` is not a span (7d, 24h) or a date"),
        )
        .into_response(request_id);
    };
    match state.book().store().period(since) {
        Ok(period) => {
            let svg = chart::spend(&period.parts, period.start, now, step);
            let mut response = Response::new(crate::server::body::full(bytes::Bytes::from(svg)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("image/svg+xml"),
            );
            response
        }
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}

/// `GET /api/v2/quality`: per requested and served model, the requests
/// whose ratings are both known and the mean rating difference (served
/// minus requested, Elo points, in each request's category), since start.
pub fn quality(state: &AppState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": state.metrics().quality.pairs()}),
    )
}

/// `GET /api/v2/requests?limit=20`: the latest settled requests, newest
/// first; what the ledger holds, which is never prompt text.
pub fn latest(
    state: &AppState,
    query: Option<&str>,
    request_id: &RequestId,
    viewer: &crate::api::visibility::Viewer,
) -> Response<Body> {
    let limit = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("limit="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 500);
    // Other keys' sessions' requests are left out (src/api/visibility.rs).
    let entries = state.book().store().latest_entries(limit).map(|entries| {
        entries
            .into_iter()
            .filter(|e| viewer.sees(e.session.as_deref()))
            .collect::<Vec<_>>()
    });
    match entries {
        Ok(entries) => json_response(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": entries}),
        ),
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn the_policy_names_the_page_script_by_hash_and_allows_no_inline_script() {
        let policy = policy();
        assert!(!policy.contains("script-src 'unsafe-inline'"), "{policy}");
        assert!(policy.contains(&format!("script-src 'sha256-{}'", script_hash(PAGE))));
        assert_eq!(PAGE.matches("<script>").count(), 1, "one script, hashed");
        assert_eq!(script_hash(PAGE).len(), 44);
    }
}
