//! The dashboard: a page a person opens instead of reading JSON (SPEC §9).
//!
//! `GET /` and `/dashboard` serve one HTML page compiled into the binary.
//! It holds no data and loads nothing from outside the machine (its
//! Content-Security-Policy forbids it): its script reads the same API a
//! client would (`/api/v2/report`, `budgets`, `sessions`, `providers`,
//! `cache/stats`, `requests`), with the local key the person typed when
//! `api_keys` is set, and draws the spend chart from [`chart`]'s SVG.

pub mod chart;

use chrono::Utc;
use http::{header, Response, StatusCode};

use crate::api::json_response;
use crate::body::Body;
use crate::error::ApiError;
use crate::ids::RequestId;
use crate::state::AppState;

const PAGE: &str = include_str!("page.html");

/// Nothing from elsewhere: scripts and styles are the page's own, and it
/// talks only to the p402 that served it.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page. It carries no data, so it needs no key; what it reads does.
pub fn page() -> Response<Body> {
    let mut response = Response::new(crate::body::full(bytes::Bytes::from_static(
        PAGE.as_bytes(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        http::HeaderValue::from_static(POLICY),
    );
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
    let Some(since) = crate::report::parse_since(&since, now) else {
        return ApiError::invalid(
            "invalid_query",
            format!("since `{since}` is not a span (7d, 24h) or a date"),
        )
        .into_response(request_id);
    };
    match state.book().store().period(since) {
        Ok(period) => {
            let svg = chart::spend(&period.parts, period.start, now, step);
            let mut response = Response::new(crate::body::full(bytes::Bytes::from(svg)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("image/svg+xml"),
            );
            response
        }
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}

/// `GET /api/v2/requests?limit=20`: the latest settled requests, newest
/// first; what the ledger holds, which is never prompt text.
pub fn latest(state: &AppState, query: Option<&str>, request_id: &RequestId) -> Response<Body> {
    let limit = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("limit="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 500);
    match state.book().store().latest_entries(limit) {
        Ok(entries) => json_response(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": entries}),
        ),
        Err(e) => ApiError::internal(format!("ledger: {e}")).into_response(request_id),
    }
}
