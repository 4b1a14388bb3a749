//! Local models: routed to only while their server lists them, failed over
//! from when the server says "model not found", never handed a better
//! model's request on an estimated quality, and preferred only on request.
//!
//! The local server here is a loopback fake of Ollama: `GET /v1/models`
//! and `GET /api/tags` list a chosen set of models (the latter with
//! Ollama's `:latest` tags), and chat completions for a model it does not
//! have get Ollama's 404 "model ... not found, try pulling it first".

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// What the fake local server has, and what it was asked for.
#[derive(Clone, Default)]
struct Local {
    addr: Option<SocketAddr>,
    /// Listed by `/v1/models` and `/api/tags`.
    listed: Arc<Mutex<BTreeSet<String>>>,
    /// Answered by chat completions; others get 404.
    servable: Arc<Mutex<BTreeSet<String>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Local {
    async fn start(models: &[&str]) -> Local {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut local = Local {
            addr: Some(listener.local_addr().expect("addr")),
            ..Local::default()
        };
        local.set(models, models);
        let server = local.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        local
    }

    fn set(&mut self, listed: &[&str], servable: &[&str]) {
        *self.listed.lock().expect("lock") = listed.iter().map(|s| s.to_string()).collect();
        *self.servable.lock().expect("lock") = servable.iter().map(|s| s.to_string()).collect();
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr.expect("started"))
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let listed: Vec<String> = self.listed.lock().expect("lock").iter().cloned().collect();
        let (status, value) = match path.as_str() {
            "/v1/models" => (
                200,
                json!({"object": "list", "data": listed.iter().map(|m| json!({"id": m, "object": "model", "owned_by": "library"})).collect::<Vec<_>>()}),
            ),
            "/api/tags" => (
                200,
                json!({"models": listed.iter().map(|m| json!({"name": format!("{m}:latest"), "model": format!("{m}:latest"), "size": 1})).collect::<Vec<_>>()}),
            ),
            "/v1/chat/completions" => {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let model = request["model"].as_str().unwrap_or_default().to_string();
                self.asked.lock().expect("lock").push(model.clone());
                if self.servable.lock().expect("lock").contains(&model) {
                    (200, completion(&model, "local answer", 10, 2))
                } else {
                    (
                        404,
                        json!({"error": {"message": format!("model \"{model}\" not found, try pulling it first"), "type": "not_found_error", "param": null, "code": null}}),
                    )
                }
            }
            _ => (404, json!({"error": "not found"})),
        };
        let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        response
    }
}

/// A paid provider (the fake OpenAI) with a mid-tier and a flagship model,
/// and the local server as provider `home` with the given models.
async fn setup(local: &Local, local_models: &str, routing: &str) -> (FakeProvider, TestProxy) {
    let paid = FakeProvider::start().await;
    let extra = format!(
        r#"
[providers.home]
base_url = "{}"

[[models]]
id = "paid-mid"
provider = "openai"
input_per_mtok = 1.0
output_per_mtok = 2.0
context = 100000
capabilities = ["tools", "streaming"]
quality = 50

[[models]]
id = "paid-top"
provider = "openai"
input_per_mtok = 5.0
output_per_mtok = 20.0
context = 100000
capabilities = ["tools", "streaming"]
quality = 62
{local_models}
"#,
        local.base_url()
    );
    let proxy = TestProxy::start(
        Setup {
            routing: format!("default_mode = \"cost\"\n{routing}"),
            extra,
            ..Setup::default()
        }
        .with_provider("openai", &paid),
    )
    .await;
    (paid, proxy)
}

fn local_model(id: &str, quality: u8, estimated: Option<bool>) -> String {
    let estimated = estimated.map_or(String::new(), |e| format!("quality_estimated = {e}\n"));
    format!(
        "\n[[models]]\nid = \"{id}\"\nprovider = \"home\"\ninput_per_mtok = 0.0\noutput_per_mtok = 0.0\ncontext = 100000\nquality = {quality}\n{estimated}"
    )
}

/// Waits until p402's probe has seen the local server list `model`.
async fn until_installed(proxy: &TestProxy, model: &str, installed: bool) {
    let seen = eventually(Duration::from_secs(20), || async {
        let models = proxy.get_json("/api/v2/models").await;
        models["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["id"] == model && m["installed"] == json!(installed))
    })
    .await;
    assert!(seen, "{model} installed = {installed} in /api/v2/models");
}

fn meta(answer: &Value) -> &Value {
    &answer["p402_metadata"]
}

#[tokio::test(flavor = "multi_thread")]
async fn only_listed_models_are_routed_to_and_not_found_fails_over() {
    let mut local = Local::start(&["loc-b"]).await;
    let models = format!(
        "{}{}",
        local_model("loc-a", 50, Some(false)),
        local_model("loc-b", 50, Some(false))
    );
    let (paid, proxy) = setup(&local, &models, "").await;
    until_installed(&proxy, "loc-b", true).await;
    until_installed(&proxy, "loc-a", false).await;
    let catalog = proxy.get_json("/api/v2/models").await;
    let loc_a = catalog["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == "loc-a"))
        .expect("loc-a listed");
    assert_eq!(loc_a["routable"], false);
    assert!(
        loc_a["unroutable_reason"]
            .as_str()
            .is_some_and(|r| r.contains("not installed")),
        "{loc_a}"
    );

    // Free and good enough, but only the installed one is used.
    for _ in 0..3 {
        let answer = proxy.chat_json(ask("paid-mid", "hello")).await;
        assert_eq!(meta(&answer)["provider"], "home", "{answer}");
        assert_eq!(meta(&answer)["model"], "loc-b");
    }
    assert!(
        local.asked().iter().all(|m| m == "loc-b"),
        "{:?}",
        local.asked()
    );
    assert!(paid.received().is_empty());

    // The model goes away behind p402's back: the 404 fails over to the
    // paid provider at once, and the model is not asked for again.
    local.set(&[], &[]);
    let answer = proxy.chat_json(ask("paid-mid", "hello again")).await;
    assert_eq!(meta(&answer)["provider"], "openai", "{answer}");
    assert_eq!(
        meta(&answer)["failover"],
        json!([{"provider": "home", "model": "loc-b", "status": 404}])
    );
    let asked = local.asked().len();
    let answer = proxy.chat_json(ask("paid-mid", "and again")).await;
    assert_eq!(meta(&answer)["provider"], "openai");
    assert_eq!(meta(&answer)["failover"], json!([]));
    assert_eq!(local.asked().len(), asked, "a missing model is not retried");
    until_installed(&proxy, "loc-b", false).await;
    let providers = proxy.get_json("/api/v2/providers").await;
    let home = providers["data"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["name"] == "home"))
        .expect("home");
    assert_eq!(home["health"]["circuit"], "closed", "{home}");

    // Pulled again: listed at the next probe and used again.
    local.set(&["loc-b"], &["loc-b"]);
    until_installed(&proxy, "loc-b", true).await;
    let answer = proxy.chat_json(ask("paid-mid", "back")).await;
    assert_eq!(meta(&answer)["provider"], "home", "{answer}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_requested_by_name_that_no_provider_has_is_a_404() {
    let local = Local::start(&[]).await;
    let (_paid, proxy) = setup(&local, &local_model("ghost", 10, None), "").await;
    until_installed(&proxy, "ghost", false).await;
    let mut body = ask("ghost", "hi");
    body["p402"] = json!({"provider": "home"});
    let error = expect_error(proxy.chat(body).await, 404, "model_not_found").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("ghost")),
        "{error}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_estimated_quality_never_replaces_a_better_model() {
    // `llama` claims 55, above the 0.85 floor of a 62 flagship (52.7), but
    // the estimate (the default for a keyless provider) does not count.
    let local = Local::start(&["llama"]).await;
    let (paid, proxy) = setup(&local, &local_model("llama", 55, None), "").await;
    until_installed(&proxy, "llama", true).await;
    let answer = proxy.chat_json(ask("paid-top", "hello")).await;
    assert_eq!(meta(&answer)["provider"], "openai", "{answer}");
    // For a model rated at or below the estimate it may stand in.
    let answer = proxy.chat_json(ask("paid-mid", "hello")).await;
    assert_eq!(meta(&answer)["provider"], "home", "{answer}");
    assert_eq!(paid.received().len(), 1);
    let catalog = proxy.get_json("/api/v2/models").await;
    let llama = catalog["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == "llama"))
        .expect("llama");
    assert_eq!(llama["quality_estimated"], true);
    proxy.stop().await;

    // Trusted on purpose, the estimate counts like a measured quality.
    let (_paid, proxy) = setup(
        &local,
        &local_model("llama", 55, None),
        "trust_estimated_quality = true\n",
    )
    .await;
    until_installed(&proxy, "llama", true).await;
    let answer = proxy.chat_json(ask("paid-top", "hello")).await;
    assert_eq!(meta(&answer)["provider"], "home", "{answer}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_local_sends_what_a_local_model_can_serve_there_first() {
    let local = Local::start(&["tiny"]).await;
    let tiny = local_model("tiny", 10, None);
    // Off (the default): a weak local model does not replace paid-mid.
    let (paid, proxy) = setup(&local, &tiny, "").await;
    until_installed(&proxy, "tiny", true).await;
    let answer = proxy.chat_json(ask("paid-mid", "hello")).await;
    assert_eq!(meta(&answer)["provider"], "openai", "{answer}");
    assert_eq!(paid.received().len(), 1);
    proxy.stop().await;

    // On: local first whatever its quality, the provider only on failure.
    let (paid, proxy) = setup(&local, &tiny, "prefer_local = true\n").await;
    until_installed(&proxy, "tiny", true).await;
    let answer = proxy.chat_json(ask("paid-top", "hello")).await;
    assert_eq!(meta(&answer)["provider"], "home", "{answer}");
    assert_eq!(meta(&answer)["model"], "tiny");
    // In every mode, not only where free wins anyway.
    let mut body = ask("paid-top", "hello");
    body["p402"] = json!({"mode": "quality"});
    let answer = proxy.chat_json(body).await;
    assert_eq!(meta(&answer)["model"], "tiny", "{answer}");
    assert!(paid.received().is_empty());
    // A request the local model cannot serve (a tool call; it declares no
    // tools) still goes to a provider.
    let mut body = ask("paid-top", "use the tool");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let answer = proxy.chat_json(body).await;
    assert_eq!(meta(&answer)["provider"], "openai", "{answer}");
    proxy.stop().await;
}
