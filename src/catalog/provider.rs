//! A provider as configured: where it is, which API it speaks, and its
//! key, which never shows in a log line and never crosses the network
//! unencrypted unless the config says so.

use std::fmt;

use super::Api;

/// A provider key. Its `Debug` never shows the value, so a stray `{:?}` in a
/// log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub(super) String);

impl ApiKey {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A provider as configured right now.
#[derive(Debug, Clone)]
pub struct Provider {
    pub(crate) name: String,
    pub(crate) base_url: String,
    pub(crate) api: Api,
    /// The variable the key is read from; `None` for keyless local servers.
    pub api_key_env: Option<String>,
    pub(crate) api_key: Option<ApiKey>,
    /// Off (`enabled = false` in its `[providers.NAME]` table): the
    /// provider is not routed to.
    pub enabled: bool,
    /// The key may go over plain HTTP to a host that is not loopback.
    pub allow_insecure: bool,
    /// `base_url` is plain `http://` to a host that is not loopback, so a
    /// key sent there crosses the network unencrypted. Decided when the
    /// catalog is built, like the key read from its variable, rather than
    /// by parsing the URL on every request that asks whether the provider
    /// is usable.
    pub key_would_leak: bool,
}

impl Provider {
    /// A keyless server (Ollama, vLLM, ...): free to use, routed to only
    /// while it answers, and only for the models it lists.
    pub fn is_local(&self) -> bool {
        self.api_key_env.is_none()
    }

    /// Why the provider cannot be routed to, or `None` if it can.
    pub fn unusable_reason(&self) -> Option<String> {
        if !self.enabled {
            return Some(format!(
                "provider `{}` is disabled in the config",
                self.name
            ));
        }
        match (&self.api_key_env, &self.api_key) {
            (Some(env), None) => Some(format!(
                "provider `{}` has no API key: set the environment variable {env}",
                self.name
            )),
            (Some(_), Some(_)) if !self.allow_insecure && self.key_would_leak => {
                Some(format!(
                    "provider `{}` would send its key over plain HTTP to {}: use https, a loopback address, or set allow_insecure = true",
                    self.name, self.base_url
                ))
            }
            _ => None,
        }
    }

    pub(crate) fn is_usable(&self) -> bool {
        self.unusable_reason().is_none()
    }
}

/// Whether a key sent to `base_url` crosses the network unencrypted: plain
/// `http://` to a host that is not loopback.
pub(super) fn key_would_leak(base_url: &str) -> bool {
    let Ok(uri) = base_url.parse::<http::Uri>() else {
        return false;
    };
    if uri.scheme_str() != Some("http") {
        return false;
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}
