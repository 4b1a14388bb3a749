//! End-to-end latency of cache hits through the proxy: a real p402 on
//! loopback (release build), the real embedding model, a loopback provider
//! that is only asked once. Exact hits, semantic (paraphrase) hits, the
//! embedding alone, the pair verifier alone, and the provider asked
//! directly (the floor).
//!
//! Run: `cargo bench --bench cache_latency` (prints Markdown).

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

const ROUNDS: usize = 300;

async fn fake_provider() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        let body = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "An HTTP 402 status means payment is required."}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}});
                        let mut response =
                            hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().expect("header"));
                        Ok::<_, Infallible>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let embedder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/embedder");
    p402::embed::fetch::ensure(&embedder)
        .await
        .expect("fetch the model");
    let data = tempfile::tempdir().expect("dir");
    let upstream = fake_provider().await;
    std::env::set_var("P402_BENCH_KEY", "bench");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[routing]\ndefault_mode = \"passthrough\"\n[cache]\nmodel_dir = {:?}\n[providers.openai]\nbase_url = \"http://{upstream}/v1\"\napi_key_env = \"P402_BENCH_KEY\"\n",
        data.path().display().to_string(),
        embedder.display().to_string()
    );
    let config = p402::config::parse("bench.toml", &config).expect("config");
    let running = p402::serve::start_with(p402::config::LoadedConfig { config, path: None })
        .await
        .expect("start");
    let url = format!("http://{}/v1/chat/completions", running.local_addr());
    let client = reqwest::Client::new();
    let health = format!("http://{}/health", running.local_addr());
    for _ in 0..600 {
        let h: serde_json::Value = client
            .get(&health)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        if h["cache"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ask =
        |q: &str| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]});
    let first: serde_json::Value = client
        .post(&url)
        .json(&ask("What does HTTP status 402 mean?"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(first["p402_metadata"]["cached"], false);

    // Times ROUNDS sequential requests of `question` to `url`, checking
    // each answer with `check`.
    let measure = |url: String, question: &'static str, check: fn(&serde_json::Value)| {
        let client = client.clone();
        async move {
            let mut samples = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let start = Instant::now();
                let answer: serde_json::Value = client
                    .post(&url)
                    .json(&ask(question))
                    .send()
                    .await
                    .expect("sent")
                    .json()
                    .await
                    .expect("json");
                samples.push(start.elapsed().as_secs_f64() * 1000.0);
                check(&answer);
            }
            samples
        }
    };
    let from_cache = |answer: &serde_json::Value| {
        assert_eq!(answer["p402_metadata"]["cached"], true, "{answer}");
    };
    // The floor: the same client and question, straight to the provider.
    let direct = measure(
        format!("http://{upstream}/v1/chat/completions"),
        "What does HTTP status 402 mean?",
        |answer| assert!(answer.get("p402_metadata").is_none(), "{answer}"),
    )
    .await;
    let exact = measure(url.clone(), "What does HTTP status 402 mean?", from_cache).await;
    let semantic = measure(
        url.clone(),
        "What is the meaning of the HTTP 402 status?",
        from_cache,
    )
    .await;

    let embedder = p402::embed::Embedder::load(&embedder).expect("model");
    let mut embedding = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        embedder
            .embed("What is the meaning of the HTTP 402 status?")
            .await
            .expect("embed");
        embedding.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut verifying = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let confidence = embedder
            .verify(
                "What is the meaning of the HTTP 402 status?",
                "What does HTTP status 402 mean?",
            )
            .await
            .expect("verify");
        verifying.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(confidence > 0.5, "{confidence}");
    }
    // Back to back, each model runs with the other's weights in the
    // caches: what a semantic hit pays.
    let mut both = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let question = "What is the meaning of the HTTP 402 status?";
        embedder.embed(question).await.expect("embed");
        embedder
            .verify(question, "What does HTTP status 402 mean?")
            .await
            .expect("verify");
        both.push(start.elapsed().as_secs_f64() * 1000.0);
    }

    println!(
        "| what ({ROUNDS} sequential requests, client-measured over loopback) | p50 | p90 | p99 |"
    );
    println!("|---|---:|---:|---:|");
    for (name, samples) in [
        (
            "the provider directly (the floor: same client, no p402)",
            direct,
        ),
        ("exact hit through p402", exact),
        ("semantic hit through p402", semantic),
        ("embedding one question (the model alone)", embedding),
        (
            "verifying one pair, both ways round (the verifier alone)",
            verifying,
        ),
        (
            "embedding, then verifying (the models as a semantic hit runs them)",
            both,
        ),
    ] {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            percentile(samples.clone(), 0.5),
            percentile(samples.clone(), 0.9),
            percentile(samples, 0.99)
        );
    }
    running.shutdown().await;
}
