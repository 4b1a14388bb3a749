//! The ledger's entries out, for a spreadsheet or a warehouse:
//! `p402 export` and `GET /api/v2/export`.
//!
//! Entries are read a page at a time, each page its own snapshot, and
//! written out as they are read, so an export of millions of entries holds
//! one page in memory and never keeps a read transaction open for long.
//! An entry is what the ledger holds (times, ids, providers, models,
//! tokens, money): never prompt or answer text, which p402 does not keep.

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{header, HeaderValue, Response, StatusCode};

use crate::ops::state::AppState;
use crate::server::body::{self, Body};
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::store::{LedgerEntry, Store, StoreError};

/// Entries read per page.
const PAGE: usize = 1000;

/// Why an export stopped. What was written before stays written: an
/// export goes out as it is read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A page of entries could not be read from the ledger.
    #[error("the ledger could not be read: {0}")]
    Store(#[from] StoreError),
    /// An entry could not be turned into JSON.
    #[error("the entry could not be written out: {0}")]
    Json(#[from] serde_json::Error),
    /// The output (`p402 export`'s file or standard output) could not be
    /// written.
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

/// How the exported entries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, one header line, dollars as decimals.
    Csv,
    /// One JSON object per line, each entry as the ledger holds it.
    Jsonl,
}

impl Format {
    /// The format a query's `format=` names: `csv` or `jsonl`; `None` for
    /// anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(Format::Csv),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
        }
    }

    /// What comes before the first entry.
    fn header(self, out: &mut Vec<u8>) {
        if self == Format::Csv {
            out.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    fn entry(self, entry: &LedgerEntry, out: &mut Vec<u8>) -> Result<(), ExportError> {
        match self {
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, entry)?;
                out.push(b'\n');
            }
            Format::Csv => csv_row(entry, out),
        }
        Ok(())
    }

    /// A failure after the first bytes went out, when no status can say
    /// it any more: a last line a reader cannot take for an entry.
    fn failure(self, error: &ExportError, out: &mut Vec<u8>) {
        match self {
            Format::Jsonl => {
                let line = serde_json::json!({"error": {"message": error.to_string()}});
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
            Format::Csv => {
                out.extend_from_slice(b"# export failed: ");
                out.extend_from_slice(error.to_string().replace(['\r', '\n'], " ").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

const CSV_COLUMNS: [&str; 19] = [
    "time",
    "request_id",
    "provider",
    "model",
    "door",
    "session",
    "client_session",
    "budgets",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
    "direct_cost_usd",
    "cached",
    "estimated",
    "forwarded_endpoint",
    "forwarded_status",
    "forwarded_bytes_in",
    "forwarded_bytes_out",
];

fn csv_row(entry: &LedgerEntry, out: &mut Vec<u8>) {
    let forwarded = entry.forwarded.as_ref();
    let fields: [String; 19] = [
        entry.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        entry.request_id.clone(),
        entry.provider.clone(),
        entry.model.clone().unwrap_or_default(),
        entry.door.clone().unwrap_or_default(),
        entry.session.clone().unwrap_or_default(),
        entry.client_session.clone().unwrap_or_default(),
        entry.budgets.join(";"),
        entry.input_tokens.to_string(),
        entry.cached_input_tokens.to_string(),
        entry.output_tokens.to_string(),
        dollars(entry.cost_nanos),
        dollars(entry.direct_nanos),
        entry.cached.to_string(),
        entry.estimated.to_string(),
        forwarded.map(|f| f.endpoint.clone()).unwrap_or_default(),
        forwarded.map(|f| f.status.to_string()).unwrap_or_default(),
        forwarded
            .map(|f| f.bytes_in.to_string())
            .unwrap_or_default(),
        forwarded
            .map(|f| f.bytes_out.to_string())
            .unwrap_or_default(),
    ];
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        csv_field(field, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// One field, quoted when it holds a separator, a quote or a line break
/// (RFC 4180). Text a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@` first: a client's session header can be anything) gets a leading
/// `'`, which spreadsheets show as text; numbers are written here and
/// never start so.
fn csv_field(field: &str, out: &mut Vec<u8>) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number(field);
    let quote = field.contains([',', '"', '\r', '\n']) || formula;
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for byte in field.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    if quote {
        out.push(b'"');
    }
}

fn is_number(field: &str) -> bool {
    let digits = field.strip_prefix('-').unwrap_or(field);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Nano-dollars as an exact decimal number of dollars: `0.000012500`.
fn dollars(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    format!(
        "{sign}{}.{:09}",
        nanos / 1_000_000_000,
        nanos % 1_000_000_000
    )
}

/// Writes the entries settled from `since` until `until` (exclusive) to
/// `out` in `format`, a page at a time, calling `out` with each page's
/// bytes; returns the number of entries. `out` answering `false` (a reader
/// that has gone) ends the export early.
pub fn pages(
    store: &Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    format: Format,
    mut out: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64, ExportError> {
    let mut chunk = Vec::new();
    format.header(&mut chunk);
    // Entries are keyed by when their request began; one that began a
    // little before `since` may have settled after it.
    let from = since - chrono::Duration::seconds(crate::store::rollup::LOOKBACK_SECS);
    let mut after: Option<Vec<u8>> = None;
    let mut written = 0;
    loop {
        let page = store.entries_page(from, after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        let mut past_until = false;
        for (key, entry) in &page {
            after = Some(key.clone());
            // Keys follow the time requests began, and a request never
            // settles before it began: once one began at `until`, none
            // later can be in the range.
            past_until = crate::store::ledger_key_time(key)
                .zip(until)
                .is_some_and(|(began, until)| began >= until);
            if past_until {
                break;
            }
            if entry.time < since || until.is_some_and(|until| entry.time >= until) {
                continue;
            }
            format.entry(entry, &mut chunk)?;
            written += 1;
        }
        if !chunk.is_empty() && !out(std::mem::take(&mut chunk)) {
            return Ok(written);
        }
        if !full || past_until {
            return Ok(written);
        }
    }
}

/// Writes an export to `out` (the command line, offline); returns the
/// number of entries.
pub fn write_to(
    store: &Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut failed = None;
    let written = pages(store, since, until, format, |bytes| {
        match out.write_all(&bytes) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    match failed {
        Some(e) => Err(ExportError::Io(e)),
        None => {
            out.flush()?;
            Ok(written)
        }
    }
}

/// What an export asks for, from a query string or the command line.
pub struct Request {
    pub(crate) since: DateTime<Utc>,
    pub(crate) until: Option<DateTime<Utc>>,
    /// How the entries are written (`format=`; JSON lines by default).
    pub format: Format,
}

impl Request {
    /// From `since=7d&until=2026-12-01&format=csv`; `since` is required, so
    /// that a whole ledger is never sent by accident.
    pub fn from_query(query: Option<&str>, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut since = None;
        let mut until = None;
        let mut format = Format::Jsonl;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decoded(value);
            let time = |what: &str| {
                crate::ops::report::parse_since(&value, now).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_query",
                        format!("{what} `{value}` is not a span (7d, 24h), a date or a time"),
                    )
                })
            };
            match name {
                "since" => since = Some(time("since")?),
                "until" => until = Some(time("until")?),
                "format" => {
                    format = Format::parse(&value).ok_or_else(|| {
                        ApiError::invalid(
                            "invalid_query",
                            format!("format `{value}` must be csv or jsonl"),
                        )
                    })?;
                }
                _ => {}
            }
        }
        let since = since.ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                "since is required: a span (30d), a date (2026-11-01) or a time",
            )
        })?;
        Ok(Request {
            since,
            until,
            format,
        })
    }

    /// The query string that asks a running p402 for this export.
    pub fn query(&self) -> String {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut query = format!("since={}&format={}", time(self.since), self.format.name());
        if let Some(until) = self.until {
            query.push_str("&until=");
            query.push_str(&time(until));
        }
        query
    }
}

/// `%2B` and friends, so that an RFC 3339 time's `+` offset survives a
/// query string (a bare `+` there is a space, which no time contains).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /api/v2/export?since=30d[&until=...][&format=csv|jsonl]`: the
/// entries, streamed as they are read. The first page is read before the
/// answer starts, so that a ledger that cannot be read gets an error
/// status; a failure later ends the stream with a line saying so.
pub async fn handle(
    state: &AppState,
    query: Option<&str>,
    request_id: &RequestId,
) -> Response<Body> {
    let asked = match Request::from_query(query, Utc::now()) {
        Ok(asked) => asked,
        Err(error) => return error.into_response(request_id),
    };
    let format = asked.format;
    let store = state.book().store().clone();
    let (tx, body) = body::channel(4);
    let (first, started) = tokio::sync::oneshot::channel::<Result<(), String>>();
    tokio::task::spawn_blocking(move || {
        let mut first = Some(first);
        let result = pages(&store, asked.since, asked.until, asked.format, |bytes| {
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            }
            tx.blocking_send(Bytes::from(bytes)).is_ok()
        });
        match (result, first) {
            (Err(e), Some(first)) => {
                let _ = first.send(Err(e.to_string()));
            }
            (Err(e), None) => {
                tracing::warn!("an export stopped part way: {e}");
                let mut line = Vec::new();
                asked.format.failure(&e, &mut line);
                let _ = tx.blocking_send(Bytes::from(line));
            }
            // Nothing in the range (JSON lines have no header): an empty
            // answer.
            (Ok(_), Some(first)) => {
                let _ = first.send(Ok(()));
            }
            (Ok(_), None) => {}
        }
    });
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return ApiError::internal(format!("ledger: {e}")).into_response(request_id),
        Err(_) => return ApiError::internal("the export stopped").into_response(request_id),
    }
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(match format {
            Format::Csv => "attachment; filename=\"p402-ledger.csv\"",
            Format::Jsonl => "attachment; filename=\"p402-ledger.jsonl\"",
        }),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_exact_decimals() {
        assert_eq!(dollars(0), "0.000000000");
        assert_eq!(dollars(12_500), "0.000012500");
        assert_eq!(dollars(3_000_000_001), "3.000000001");
        assert_eq!(dollars(-5), "-0.000000005");
        assert_eq!(dollars(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let field = |text: &str| {
            let mut out = Vec::new();
            csv_field(text, &mut out);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(field("openai"), "openai");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field("-0.000000005"), "-0.000000005");
    }

    #[test]
    fn the_query_needs_since_and_knows_its_formats() {
        let now = Utc::now();
        assert!(Request::from_query(None, now).is_err());
        assert!(Request::from_query(Some("since=7d&format=xml"), now).is_err());
        let asked = Request::from_query(Some("since=7d&format=csv"), now).expect("query");
        assert_eq!(asked.format, Format::Csv);
        let time = "2026-11-01T10:00:00.000+01:00";
        let encoded = time.replace('+', "%2B");
        let asked =
            Request::from_query(Some(&format!("since=1d&until={encoded}")), now).expect("query");
        assert_eq!(
            asked.until,
            Some(
                DateTime::parse_from_rfc3339(time)
                    .expect("time")
                    .with_timezone(&Utc)
            )
        );
        let again = Request::from_query(Some(&asked.query()), now).expect("round trip");
        assert_eq!(again.until, asked.until);
        assert_eq!(again.format, Format::Jsonl);
    }
}
