//! The pooled HTTP client that talks to providers.
//!
//! One client per upstream config, shared by every request: connections are
//! kept alive and reused (HTTP/1.1, or HTTP/2 where the provider offers it
//! over ALPN), which is most of what makes a proxy cheap to put in the path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
}

/// A request body streamed as it arrives (an upload forwarded as is).
pub type StreamedBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A cheap-to-clone handle on the shared connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The pool for requests whose bodies are streamed through.
    streaming: Client<HttpsConnector<HttpConnector>, StreamedBody>,
    config: Arc<UpstreamConfig>,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout_seconds.duration()));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64);
        Ok(Upstream {
            client: builder.build(https.clone()),
            streaming: builder.build(https),
            config: Arc::new(config.clone()),
        })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Sends a request and waits for the response headers, at most the
    /// first-byte timeout.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let limit = self.config.first_byte_timeout_seconds.duration();
        match tokio::time::timeout(limit, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(limit)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Request(error_chain(&e))),
        }
    }
}

impl Upstream {
    /// [`Upstream::send`] for a request whose body is streamed through.
    pub async fn send_streamed(
        &self,
        request: Request<StreamedBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let limit = self.config.first_byte_timeout_seconds.duration();
        match tokio::time::timeout(limit, self.streaming.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(limit)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Request(error_chain(&e))),
        }
    }

    /// A small answer read whole (a model list), at most 2 s and
    /// `max_bytes`; a larger body is cut off and reported as such.
    pub async fn fetch_small(
        &self,
        request: Request<Full<Bytes>>,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, Bytes), UpstreamError> {
        use http_body_util::BodyExt;
        let limit = Duration::from_secs(2);
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| UpstreamError::Request(e.to_string()))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(limit, fetch)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(limit)))
    }

    /// A quick liveness check: the status of a small request, at most 2 s.
    pub async fn probe(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::StatusCode, UpstreamError> {
        let limit = Duration::from_secs(2);
        match tokio::time::timeout(limit, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(limit)),
            Ok(Ok(response)) => Ok(response.status()),
            Ok(Err(e)) => Err(UpstreamError::Connect(error_chain(&e))),
        }
    }
}

/// Web PKI roots plus the system's own, so both public providers and
/// corporate proxies with a private CA verify.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, not fatal.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// "connection refused" is in the source chain, not in hyper's top message.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
