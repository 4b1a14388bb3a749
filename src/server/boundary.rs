//! Who may talk to p402 at all, checked before anything else.
//!
//! p402 spends money for whoever reaches it, and the browser on the same
//! machine reaches it too: any web page can send a "simple" cross-origin
//! POST (no preflight) to `127.0.0.1:8402`, and a page on a name that its
//! owner re-points at 127.0.0.1 (DNS rebinding) can even read the answers.
//! So:
//!
//! - a request with an `Origin` (or `Sec-Fetch-Site: cross-site`) is refused
//!   unless the origin is p402's own (the dashboard) or listed in
//!   `[server] allowed_origins`; listed origins get CORS headers and
//!   answered preflights. SDKs, curl and agents send no `Origin`;
//! - the `Host` must name this listener: an IP address, `localhost`, or a
//!   name in `[server] allowed_hosts`. A rebound name is none of those;
//! - a body sent to p402 must be JSON (or untyped): a page's `text/plain`
//!   form post is not.

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::config::ServerConfig;
use crate::server::body::{self, Body};
use crate::server::error::{ApiError, ErrorKind};

/// What a request that passed may carry back: the CORS headers of an
/// allowed foreign origin.
#[derive(Debug, Default)]
pub struct Pass {
    allowed_origin: Option<HeaderValue>,
}

impl Pass {
    /// Adds the CORS headers an allowed origin needs to read the answer.
    pub fn decorate(&self, response: &mut Response<Body>) {
        if let Some(origin) = &self.allowed_origin {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// The headers of p402's own that a page may read.
const EXPOSED: &str = "x-p402-request-id, x-p402-provider, x-p402-model, x-p402-cost-usd, x-p402-cached, x-p402-savings, x-p402-dropped";

/// Either the request goes on, or this is its answer (a refusal, or the
/// answer to a CORS preflight).
pub enum Checked {
    Pass(Pass),
    Answer(Result<Response<Body>, ApiError>),
}

/// Applies the Host, Origin and content-type rules. `bound` is the address
/// p402 actually listens on.
pub fn check(
    config: &ServerConfig,
    bound: SocketAddr,
    method: &Method,
    path: &str,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Checked {
    if let Err(e) = check_host(config, authority, headers) {
        return Checked::Answer(Err(e));
    }
    let origin = headers.get(header::ORIGIN);
    let allowed_origin = match origin {
        None => {
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
            if cross_site {
                return Checked::Answer(Err(refused("a cross-site request")));
            }
            None
        }
        Some(origin) => match classify_origin(config, bound, origin) {
            Origin::Own => None,
            Origin::Listed => Some(origin.clone()),
            Origin::Foreign(shown) => {
                return Checked::Answer(Err(refused(&format!("origin `{shown}`"))));
            }
        },
    };
    let pass = Pass { allowed_origin };
    if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return Checked::Answer(Ok(preflight(&pass, headers)));
    }
    // Paths forwarded as they are carry whatever their API takes (file
    // uploads, audio); the Origin rules above still keep web pages out.
    if matches!(*method, Method::POST | Method::PATCH | Method::PUT) && !forwarded_as_is(path) {
        if let Err(e) = check_content_type(headers) {
            return Checked::Answer(Err(e));
        }
    }
    Checked::Pass(pass)
}

/// Whether `path` is forwarded to the passthrough provider as it is, not
/// read by p402 (see `forward`).
pub fn forwarded_as_is(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let path = match path
        .strip_prefix("/s/")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
    {
        Some(rest) => rest,
        None => path,
    };
    path.starts_with("/v1/")
        && !matches!(
            path,
            "/v1/chat/completions"
                | "/v1/messages"
                | "/v1/messages/count_tokens"
                | "/v1/responses"
                | "/v1/embeddings"
                | "/v1/models"
        )
}

fn refused(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Forbidden,
        "origin_not_allowed",
        format!(
            "{what} may not use this p402: a web page could spend your money through it. \
             To let a local web app call p402, list its origin in [server] allowed_origins"
        ),
    )
}

/// The host a request names: `Host`, or the URI's authority (HTTP/2).
fn check_host(
    config: &ServerConfig,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let host = match headers.get(header::HOST) {
        Some(value) => match value.to_str() {
            Ok(text) => Some(text),
            Err(_) => {
                return Err(ApiError::invalid(
                    "invalid_host",
                    "the Host header is not text",
                ))
            }
        },
        None => authority,
    };
    // HTTP/1.0 clients may send none; there is no name to rebind then.
    let Some(host) = host else {
        return Ok(());
    };
    if host_allowed(config, strip_port(host)) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Misdirected,
        "host_not_allowed",
        format!(
            "this p402 does not answer to the host name `{host}`: only IP addresses, localhost \
             and the names in [server] allowed_hosts (this guards against DNS rebinding)"
        ),
    ))
}

/// `name:port`, `[v6]:port`, or a bare name.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An IP literal cannot be rebound; `localhost` resolves locally; anything
/// else must be listed.
fn host_allowed(config: &ServerConfig, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || config
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

enum Origin {
    /// p402's own pages (same scheme, an accepted host, the listening port).
    Own,
    /// Listed in `allowed_origins`.
    Listed,
    /// Anything else, as shown in the refusal.
    Foreign(String),
}

fn classify_origin(config: &ServerConfig, bound: SocketAddr, origin: &HeaderValue) -> Origin {
    let Ok(text) = origin.to_str() else {
        return Origin::Foreign("(not text)".to_string());
    };
    let normal = text.trim_end_matches('/');
    if config
        .allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(normal))
    {
        return Origin::Listed;
    }
    let own = normal.strip_prefix("http://").is_some_and(|authority| {
        let port = match authority.rsplit_once(':') {
            Some((_, port)) if !authority.ends_with(']') => port.parse::<u16>().ok(),
            _ => Some(80),
        };
        port == Some(bound.port()) && host_allowed(config, strip_port(authority))
    });
    if own {
        Origin::Own
    } else {
        Origin::Foreign(text.chars().take(200).collect())
    }
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight(pass: &Pass, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    pass.decorate(&mut response);
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
    );
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// A body must be JSON, or say nothing of its type.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            format!(
                "the body must be application/json, not `{}`",
                String::from_utf8_lossy(value.as_bytes())
                    .chars()
                    .take(100)
                    .collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str], hosts: &[&str]) -> ServerConfig {
        ServerConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn verdict(
        config: &ServerConfig,
        method: Method,
        pairs: &[(&'static str, &str)],
    ) -> Result<u16, u16> {
        let bound: SocketAddr = "127.0.0.1:8402".parse().expect("addr");
        match check(
            config,
            bound,
            &method,
            "/v1/chat/completions",
            None,
            &headers(pairs),
        ) {
            Checked::Pass(_) => Ok(200),
            Checked::Answer(Ok(response)) => Ok(response.status().as_u16()),
            Checked::Answer(Err(e)) => Err(e.status().as_u16()),
        }
    }

    #[test]
    fn hosts_that_cannot_be_rebound_pass() {
        let c = config(&[], &["p402.internal"]);
        for host in [
            "127.0.0.1:8402",
            "localhost:8402",
            "LOCALHOST",
            "[::1]:8402",
            "10.0.0.5:8402",
            "p402.internal:8402",
        ] {
            assert_eq!(
                verdict(&c, Method::GET, &[("host", host)]),
                Ok(200),
                "{host}"
            );
        }
        for host in ["evil.example", "evil.example:8402", "127.0.0.1.nip.io:8402"] {
            assert_eq!(
                verdict(&c, Method::GET, &[("host", host)]),
                Err(421),
                "{host}"
            );
        }
    }

    #[test]
    fn only_own_and_listed_origins_pass() {
        let c = config(&["http://localhost:3000"], &[]);
        let own = [
            ("host", "127.0.0.1:8402"),
            ("origin", "http://127.0.0.1:8402"),
        ];
        assert_eq!(verdict(&c, Method::POST, &own), Ok(200));
        let own_name = [("origin", "http://localhost:8402")];
        assert_eq!(verdict(&c, Method::POST, &own_name), Ok(200));
        for origin in [
            "https://evil.example",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8402",
            "null",
        ] {
            assert_eq!(
                verdict(&c, Method::POST, &[("origin", origin)]),
                Err(403),
                "{origin}"
            );
        }
        assert_eq!(
            verdict(&c, Method::POST, &[("sec-fetch-site", "cross-site")]),
            Err(403)
        );
        assert_eq!(
            verdict(&c, Method::POST, &[("origin", "http://localhost:3000")]),
            Ok(200)
        );
        let preflight = [
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "POST"),
        ];
        assert_eq!(verdict(&c, Method::OPTIONS, &preflight), Ok(204));
        let foreign_preflight = [
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ];
        assert_eq!(verdict(&c, Method::OPTIONS, &foreign_preflight), Err(403));
    }

    #[test]
    fn bodies_must_be_json_or_untyped() {
        let c = config(&[], &[]);
        assert_eq!(verdict(&c, Method::POST, &[]), Ok(200));
        assert_eq!(
            verdict(
                &c,
                Method::POST,
                &[("content-type", "application/json; charset=utf-8")]
            ),
            Ok(200)
        );
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                verdict(&c, Method::POST, &[("content-type", kind)]),
                Err(415),
                "{kind}"
            );
        }
        assert_eq!(
            verdict(&c, Method::GET, &[("content-type", "text/plain")]),
            Ok(200)
        );
    }
}
