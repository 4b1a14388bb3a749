//! Keeps the reachability and the installed models of keyless local servers
//! (Ollama, vLLM, ...) current. Such a provider has no key to tell whether
//! it is configured, so it is routed to only after it has answered a probe
//! (a laptop without Ollama running must not see every request try it
//! first), and only for the models it lists (a catalog entry for a model
//! that was never pulled must not turn every request into a 404).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;

use crate::catalog::Provider;
use crate::ops::provider_health::model_key;
use crate::ops::state::AppState;
use crate::wire::upstream::Upstream;

/// How often each keyless provider is probed (and at once after one said a
/// model it listed is not there).
const INTERVAL: Duration = Duration::from_secs(15);
/// A model list larger than this is not read.
const MAX_LIST_BYTES: usize = 1 << 20;

pub async fn watch_local_providers(state: AppState) {
    loop {
        let runtime = state.runtime();
        for provider in runtime.catalog.providers() {
            if provider.api_key_env.is_some() || !provider.is_usable() {
                continue;
            }
            let (reachable, installed) = list_models(&runtime.upstream, provider).await;
            state.health().set_reachable(&provider.name, reachable);
            state.health().set_installed(&provider.name, installed);
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = state.health().probe_wanted() => {}
        }
    }
}

/// Whether the server answers, and the models it lists: OpenAI's
/// `GET /models` (every OpenAI-compatible server), and for a server whose
/// base URL ends in `/v1` also Ollama's own `GET /api/tags`, which lists
/// every pulled model even where the first does not.
async fn list_models(upstream: &Upstream, provider: &Provider) -> (bool, Option<BTreeSet<String>>) {
    let base = provider.base_url.trim_end_matches('/');
    let mut urls = vec![(format!("{base}/models"), "/data", "id")];
    if let Some(root) = base.strip_suffix("/v1") {
        urls.push((format!("{root}/api/tags"), "/models", "name"));
    }
    let mut reachable = false;
    let mut installed: Option<BTreeSet<String>> = None;
    for (url, list, field) in urls {
        let Ok(request) = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .body(Full::new(Bytes::new()))
        else {
            continue;
        };
        let Ok((status, body)) = upstream.fetch_small(request, MAX_LIST_BYTES).await else {
            continue;
        };
        if !status.is_success() {
            continue;
        }
        reachable = true;
        if let Some(names) = names(&body, list, field) {
            installed.get_or_insert_with(BTreeSet::new).extend(names);
        }
    }
    (reachable, installed)
}

/// The names in a model list: `field` of each object in the array at
/// `list`; `None` if the body is not such a list.
fn names(body: &[u8], list: &str, field: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let items = value.pointer(list)?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|item| item.get(field)?.as_str())
            .map(|name| model_key(name).to_string())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_from_openai_and_ollama_shapes() {
        let openai = br#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model"},{"id":"qwen3:8b"}]}"#;
        assert_eq!(
            names(openai, "/data", "id"),
            Some(vec!["llama3.2".to_string(), "qwen3:8b".to_string()])
        );
        let tags = br#"{"models":[{"name":"gpt-oss:20b","model":"gpt-oss:20b","size":1}]}"#;
        assert_eq!(
            names(tags, "/models", "name"),
            Some(vec!["gpt-oss:20b".to_string()])
        );
        assert_eq!(names(b"<html>", "/data", "id"), None);
        assert_eq!(names(br#"{"data":{}}"#, "/data", "id"), None);
    }
}
