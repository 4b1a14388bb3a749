//! The cache stage: a repeated or paraphrased question is answered here,
//! free, and its request ends without reaching a provider.

use http::Response;
use serde_json::Value;

use crate::cache::replay;
use crate::cache::{Cache, Hit, Probe};
use crate::money::metadata::Metadata;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::wire::Answer;

use super::context::Context;
use super::finish;

/// What the cache had for the request.
pub enum Looked {
    /// A stored answer, for the driver to finish and render.
    Hit(Hit),
    /// Nothing: where to store the provider's answer, if it may be stored.
    Miss(Option<Probe>),
}

/// Looks the request up, within the scope of everything that shapes its
/// answer (and of its key, unless keys share the cache). A failed lookup
/// is a miss: the cache may never stand between a request and a provider.
pub async fn lookup(cx: &Context, local_key: Option<&str>) -> Looked {
    let config = &cx.runtime.config().cache;
    let mode = serde_json::to_value(cx.mode).unwrap_or(Value::Null);
    let mut probe = Cache::probe(&cx.chat, &mode, config, local_key);
    if let Some(probe) = probe.as_mut() {
        match cx.state.cache().lookup(probe, config.similarity.0).await {
            Ok(Some(hit)) => return Looked::Hit(hit),
            Ok(None) => {
                cx.state.metrics().cache_misses.inc();
            }
            Err(e) => {
                tracing::warn!(request_id = %cx.id, "cache lookup failed, asking a provider: {e}")
            }
        }
    }
    Looked::Miss(probe)
}

/// The stored answer with fresh metadata, whole or replayed as a stream.
pub fn render(cx: &Context, hit: &Hit, metadata: Option<Metadata>) -> Response<Body> {
    let Some(metadata) = metadata else {
        let error = ApiError::internal("a cache hit without metadata");
        return cx.door.error(&error, &cx.id);
    };
    if cx.chat.stream {
        let mut writer = cx.door.stream(&cx.chat, None);
        let mut events: Vec<_> = replay::chunks(hit)
            .into_iter()
            .filter_map(|chunk| writer.chunk(chunk))
            .collect();
        events.extend(writer.end(&metadata));
        return finish::respond_events(events, &metadata);
    }
    match cx
        .door
        .answer(Answer::Tree(replay::answer(hit)), &metadata, &cx.chat)
    {
        Ok(body) => finish::respond(body, &metadata),
        Err(e) => cx.door.error(&ApiError::internal(e.to_string()), &cx.id),
    }
}
