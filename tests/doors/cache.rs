//! The semantic cache end to end, with the real embedding model: exact and
//! paraphrase hits, scopes, guards, streaming replay, what is never stored,
//! persistence, exact-only mode, stats and the ledger.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

async fn cached_proxy() -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            cache: semantic_cache("").await,
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let ready = eventually(Duration::from_secs(60), || async {
        proxy.health().await["cache"] == "connected"
    })
    .await;
    assert!(
        ready,
        "the embedding model never loaded: {}",
        proxy.health().await
    );
    (fake, proxy)
}

async fn answer(proxy: &TestProxy, body: Value) -> Value {
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exact_repeat_is_answered_from_the_cache_for_free() {
    let (fake, proxy) = cached_proxy().await;
    let first = answer(&proxy, ask("gpt-4o-mini", "What is the capital of France?")).await;
    assert_eq!(first["p402_metadata"]["cached"], false);
    let response = proxy
        .chat(ask("gpt-4o-mini", "what is the capital of   France?"))
        .await;
    assert_eq!(response.headers()["x-p402-cached"], "true");
    assert_eq!(response.headers()["x-p402-provider"], "cache");
    let second: Value = response.json().await.expect("json");
    let meta = &second["p402_metadata"];
    assert_eq!(meta["cached"], true);
    assert_eq!(meta["provider"], "cache");
    assert_eq!(meta["model"], Value::Null);
    assert_eq!(meta["cost_usd"].as_f64(), Some(0.0));
    assert_eq!(meta["similarity"].as_f64(), Some(1.0));
    // The saving is what the first answer's usage costs on the requested model.
    assert_eq!(meta["direct_cost"], first["p402_metadata"]["cost_usd"]);
    assert_eq!(meta["savings"], meta["direct_cost"]);
    assert_eq!(second["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(fake.received().len(), 1, "the provider was asked once");
    // The hit's free entry is queued rather than awaited, yet an audit read
    // right after the answer finds it.
    let audited = proxy
        .get_json(&format!(
            "/api/v2/requests/{}",
            meta["request_id"].as_str().expect("request id")
        ))
        .await;
    assert_eq!(audited["provider"], "cache", "{audited}");
    assert_eq!(audited["cached"], true);
    assert_eq!(audited["cost_nanos"], 0);

    let stats: Value = proxy
        .client
        .get(proxy.url("/api/v2/cache/stats"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["entries"], 1);
    assert_eq!(stats["exact_hits"], 1);
    assert_eq!(stats["misses"], 1);
    assert!(stats["saved_usd"].as_f64().is_some_and(|s| s > 0.0));
    // The ledger has the hit, so reports count the cache's savings.
    let report: Value = proxy
        .client
        .get(proxy.url("/api/v2/report?since=1h&by=provider"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        report["total"]["cache_savings_usd"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{report}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paraphrase_hits_and_a_guarded_near_miss_does_not() {
    let (fake, proxy) = cached_proxy().await;
    answer(&proxy, ask("gpt-4o-mini", "What is the x402 protocol?")).await;
    let hit = answer(
        &proxy,
        ask("gpt-4o-mini", "Can you explain the x402 protocol?"),
    )
    .await;
    let similarity = hit["p402_metadata"]["similarity"]
        .as_f64()
        .expect("similarity");
    assert_eq!(hit["p402_metadata"]["cached"], true, "{hit}");
    assert!(similarity > 0.90 && similarity < 1.0, "{similarity}");
    assert_eq!(fake.received().len(), 1);

    answer(&proxy, ask("gpt-4o-mini", "Turn the living room alarm on")).await;
    let off = answer(&proxy, ask("gpt-4o-mini", "Turn the living room alarm off")).await;
    assert_eq!(
        off["p402_metadata"]["cached"], false,
        "on/off must never share an answer"
    );
    answer(
        &proxy,
        ask("gpt-4o-mini", "What were the sales figures for 2021?"),
    )
    .await;
    let year = answer(
        &proxy,
        ask("gpt-4o-mini", "What were the sales figures for 2022?"),
    )
    .await;
    assert_eq!(
        year["p402_metadata"]["cached"], false,
        "different numbers must never share an answer"
    );
    let unrelated = answer(&proxy, ask("gpt-4o-mini", "What is the HTTP/2 protocol?")).await;
    assert_eq!(unrelated["p402_metadata"]["cached"], false);
    proxy.stop().await;
}

/// The pair verifier (a cross-encoder reading both questions at once) has
/// the last word: it vouches for a rewording that shares few words, and
/// refuses a question about something else that no guard can tell apart.
#[tokio::test(flavor = "multi_thread")]
async fn the_verifier_has_the_last_word_on_a_semantic_hit() {
    let (fake, proxy) = cached_proxy().await;
    answer(
        &proxy,
        ask(
            "gpt-4o-mini",
            "How long should I boil an egg for a runny yolk?",
        ),
    )
    .await;
    let reworded = answer(
        &proxy,
        ask(
            "gpt-4o-mini",
            "How many minutes do I boil an egg so the yolk stays runny?",
        ),
    )
    .await;
    assert_eq!(reworded["p402_metadata"]["cached"], true, "{reworded}");
    for (first, second) in [
        (
            "What are the symptoms of the flu?",
            "What are the symptoms of a cold?",
        ),
        (
            "Write a poem about the sea",
            "Write a poem about the mountains",
        ),
    ] {
        answer(&proxy, ask("gpt-4o-mini", first)).await;
        let other = answer(&proxy, ask("gpt-4o-mini", second)).await;
        assert_eq!(
            other["p402_metadata"]["cached"], false,
            "{first} / {second}"
        );
    }
    assert_eq!(fake.received().len(), 5);
    let stats = proxy.get_json("/api/v2/cache/stats").await;
    assert_eq!(stats["semantic_hits"], 1, "{stats}");
    assert!(
        stats["refused_by_verifier"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{stats}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_keep_answers_apart() {
    let (fake, proxy) = cached_proxy().await;
    let with_system = |system: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Summarize the plot of Hamlet."}]})
    };
    answer(&proxy, with_system("Answer in English.")).await;
    let other = answer(&proxy, with_system("Answer in French.")).await;
    assert_eq!(
        other["p402_metadata"]["cached"], false,
        "another system prompt is another scope"
    );
    let mut hotter = with_system("Answer in English.");
    hotter["temperature"] = json!(0.9);
    assert_eq!(
        answer(&proxy, hotter).await["p402_metadata"]["cached"],
        false
    );
    let same = answer(&proxy, with_system("Answer in English.")).await;
    assert_eq!(same["p402_metadata"]["cached"], true);
    let mut other_model = with_system("Answer in English.");
    other_model["model"] = json!("gpt-4o");
    assert_eq!(
        answer(&proxy, other_model).await["p402_metadata"]["cached"],
        false
    );
    assert_eq!(fake.received().len(), 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_stored_and_replayed_as_sse() {
    let (fake, proxy) = cached_proxy().await;
    let mut streamed = ask("gpt-4o-mini", "Write a haiku about proxies.");
    streamed["stream"] = json!(true);
    let text = proxy
        .chat(streamed.clone())
        .await
        .text()
        .await
        .expect("stream");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // Stored from the stream: a plain request now hits...
    let plain = answer(&proxy, ask("gpt-4o-mini", "Write a haiku about proxies.")).await;
    assert_eq!(plain["p402_metadata"]["cached"], true);
    assert_eq!(plain["choices"][0]["message"]["content"], "Hello there!");
    // ...and a streaming one is replayed as SSE, usage chunk included when asked.
    streamed["stream_options"] = json!({"include_usage": true});
    let response = proxy.chat(streamed).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.expect("replay");
    let chunks = stream_chunks(&text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there!");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert!(chunks.iter().any(|c| c["usage"]["total_tokens"] == 15));
    let last = chunks.last().expect("metadata");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["p402_metadata"]["cached"], true);
    assert_eq!(fake.received().len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn incomplete_answers_errors_and_opted_out_requests_are_never_stored() {
    let (fake, proxy) = cached_proxy().await;
    let mut cut = completion("gpt-4o-mini", "A long answer that was cut", 10, 100);
    cut["choices"][0]["finish_reason"] = json!("length");
    fake.push(Reply::Json(200, cut));
    answer(&proxy, ask("gpt-4o-mini", "Tell me everything about Rome.")).await;
    assert_eq!(
        answer(&proxy, ask("gpt-4o-mini", "Tell me everything about Rome.")).await["p402_metadata"]
            ["cached"],
        false
    );

    fake.push(Reply::Json(400, json!({"error": {"message": "bad"}})));
    assert_eq!(
        proxy
            .chat(ask("gpt-4o-mini", "Is this an error?"))
            .await
            .status(),
        400
    );
    assert_eq!(
        answer(&proxy, ask("gpt-4o-mini", "Is this an error?")).await["p402_metadata"]["cached"],
        false
    );

    let mut opted_out = ask("gpt-4o-mini", "Do not cache me");
    opted_out["p402"] = json!({"cache": false});
    answer(&proxy, opted_out.clone()).await;
    assert_eq!(
        answer(&proxy, opted_out).await["p402_metadata"]["cached"],
        false
    );
    let header = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header("x-p402-cache", "false")
        .json(&ask("gpt-4o-mini", "Do not cache me"))
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(header["p402_metadata"]["cached"], false);

    let mut hot = ask("gpt-4o-mini", "Be creative");
    hot["temperature"] = json!(1.5);
    answer(&proxy, hot.clone()).await;
    assert_eq!(
        answer(&proxy, hot).await["p402_metadata"]["cached"],
        false,
        "above max_temperature"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_survive_a_restart_and_clear_empties_the_cache_only() {
    let (fake, proxy) = cached_proxy().await;
    answer(&proxy, ask("gpt-4o-mini", "How tall is Mount Everest?")).await;
    let proxy = proxy.restart().await;
    let again = answer(&proxy, ask("gpt-4o-mini", "How tall is Mount Everest?")).await;
    assert_eq!(
        again["p402_metadata"]["cached"], true,
        "exact hits need no model, even right after start"
    );
    assert_eq!(fake.received().len(), 1);

    let cleared: Value = proxy
        .client
        .post(proxy.url("/api/v2/cache/clear"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(cleared["removed"], 1);
    assert_eq!(
        answer(&proxy, ask("gpt-4o-mini", "How tall is Mount Everest?")).await["p402_metadata"]
            ["cached"],
        false
    );
    let report: Value = proxy
        .client
        .get(proxy.url("/api/v2/report?since=1h"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        report["total"]["requests"], 3,
        "clearing the cache keeps the ledger"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_model_the_cache_runs_exact_only() {
    let fake = FakeProvider::start().await;
    // A model directory that cannot be created: the fetch fails, the proxy serves.
    let proxy = TestProxy::start(
        Setup {
            cache: "enabled = true\nmodel_dir = \"/dev/null/embedder\"\n".into(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    assert_eq!(proxy.health().await["cache"], "exact-only");
    answer(&proxy, ask("gpt-4o-mini", "What is the x402 protocol?")).await;
    assert_eq!(
        answer(&proxy, ask("gpt-4o-mini", "What is the x402 protocol?")).await["p402_metadata"]
            ["cached"],
        true
    );
    assert_eq!(
        answer(
            &proxy,
            ask("gpt-4o-mini", "Can you explain the x402 protocol?")
        )
        .await["p402_metadata"]["cached"],
        false
    );
    proxy.stop().await;
}
