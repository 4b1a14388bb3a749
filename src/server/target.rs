//! What a request names: its method, its path and its header values,
//! refused (400) when they can be read two ways.
//!
//! p402 decides by the path what a request may do (which paths a budget
//! may use, which are p402's own), and forwards the rest of `/v1/` to a
//! provider, whose server reads the path again. If the two could read it
//! differently, a priced call could pass as a free one: `/v1/files/../images/generations`
//! starts like a file path to p402 and is an image generation to the
//! provider, once it resolves the dot segments (raw, or percent-encoded as
//! `%2e%2e` or with `%2f` for the slashes). Methods are case-sensitive, so
//! `post` is not `POST` to p402 but may be to a provider. So neither a
//! dot segment nor a method outside the standard ones goes any further,
//! and every check after this one reads the path as the provider will.

use http::{HeaderMap, Method};

use crate::server::error::{Classify, ErrorKind};

/// Why a request's target is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the method `{0}` is not one p402 serves; methods are upper case (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)")]
    Method(String),
    #[error("the path has a `.` or `..` segment (or one percent-encoded): p402 does not resolve them, so that it reads a path as the provider would; send the resolved path")]
    DotSegment,
    #[error("the value of header `{0}` is not valid text (UTF-8)")]
    HeaderValue(String),
}

impl Classify for TargetError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidRequest
    }

    fn code(&self) -> &'static str {
        match self {
            TargetError::Method(_) => "invalid_method",
            TargetError::DotSegment => "invalid_path",
            TargetError::HeaderValue(_) => "invalid_header",
        }
    }
}

/// Checks the method, the path and the header values of a request.
pub fn check(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), TargetError> {
    check_method(method)?;
    check_path(path)?;
    check_headers(headers)
}

/// Only the standard methods, spelled as the standard spells them.
/// (CONNECT and TRACE have no use here either.)
fn check_method(method: &Method) -> Result<(), TargetError> {
    let standard = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    if standard.contains(method) {
        Ok(())
    } else {
        Err(TargetError::Method(
            method.as_str().chars().take(32).collect(),
        ))
    }
}

/// No segment of the path, once percent-decoded, is `.` or `..`. A
/// decoded `/` or `\` separates segments too, as a lenient server would
/// take it.
fn check_path(path: &str) -> Result<(), TargetError> {
    let decoded = percent_decode(path.as_bytes());
    let dotted = decoded
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|segment| segment == b"." || segment == b"..");
    if dotted {
        Err(TargetError::DotSegment)
    } else {
        Ok(())
    }
}

/// Header values p402 reads, logs or forwards must be text: a value that
/// is not UTF-8 gets a 400 rather than being passed on as it came.
fn check_headers(headers: &HeaderMap) -> Result<(), TargetError> {
    match headers
        .iter()
        .find(|(_, value)| std::str::from_utf8(value.as_bytes()).is_err())
    {
        Some((name, _)) => Err(TargetError::HeaderValue(name.as_str().to_string())),
        None => Ok(()),
    }
}

/// `%XX` escapes decoded, once; anything else (a stray `%`) kept as it is.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_raw_and_encoded() {
        for path in [
            "/v1/files/../images/generations",
            "/v1/files/..%2fimages%2fgenerations",
            "/v1/files/%2e%2e/chat/completions",
            "/v1/files/%2E./x",
            "/v1/files/.",
            "/v1/./files",
            "/v1/files/..\\images",
            "/v1/files/..%5cimages",
            "/..",
        ] {
            assert_eq!(check_path(path), Err(TargetError::DotSegment), "{path}");
        }
        for path in [
            "/v1/files",
            "/v1/files/file-abc.jsonl",
            "/v1/files/...",
            "/v1/files/..a",
            "/v1/files/%2e%2e%2e",
            "/v1/files/%25%32%65%25%32%65",
            "/v1/files/100%",
            "/v1/files/%zz",
            "",
            "/",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn only_standard_methods_in_upper_case_pass() {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(check_method(&method), Ok(()));
        }
        for method in ["post", "Get", "CONNECT", "TRACE", "PROPFIND"] {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert!(check_method(&method).is_err(), "{method}");
        }
    }

    #[test]
    fn header_values_must_be_text() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ok",
            http::HeaderValue::from_bytes("fine é".as_bytes()).expect("value"),
        );
        assert_eq!(check_headers(&headers), Ok(()));
        let latin1 = http::HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is allowed");
        headers.insert("x-p402-session", latin1);
        assert_eq!(
            check_headers(&headers),
            Err(TargetError::HeaderValue("x-p402-session".into()))
        );
    }
}
