//! Keeps the reachability of keyless local servers (Ollama, vLLM, ...)
//! current. Such a provider has no key to tell whether it is configured, so
//! it is routed to only after it has answered a probe: a laptop without
//! Ollama running must not see every request try it first.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::state::AppState;

/// How often each keyless provider is probed.
const INTERVAL: Duration = Duration::from_secs(15);

pub async fn watch_local_providers(state: AppState) {
    loop {
        let runtime = state.runtime();
        for provider in runtime.catalog.providers() {
            if provider.api_key_env.is_some() || !provider.is_usable() {
                continue;
            }
            let url = format!("{}/models", provider.base_url);
            let Ok(request) = Request::builder()
                .method(Method::GET)
                .uri(&url)
                .body(Full::new(Bytes::new()))
            else {
                state.health().set_reachable(&provider.name, false);
                continue;
            };
            let reachable = runtime
                .upstream
                .probe(request)
                .await
                .is_ok_and(|status| status.is_success());
            state.health().set_reachable(&provider.name, reachable);
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
