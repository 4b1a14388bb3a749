//! End-to-end latency of cache hits through the proxy: a real p402 on
//! loopback (release build), the real embedding model, a loopback provider
//! that is only asked once. Exact hits, semantic (paraphrase) hits, the
//! embedding alone, the pair verifier alone, and the provider asked
//! directly (the floor).
//!
//! Then the same with the `p402` binary as a process of its own, so that
//! its memory is its own: semantic hits at one connection and at 20
//! requests a second (open loop), and the resident memory once the models
//! are loaded, after 1,000 semantic lookups, and at its peak.
//!
//! Run: `cargo bench --bench cache_latency` (prints Markdown).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

const ROUNDS: usize = 300;
/// Semantic lookups before the memory is read again.
const LOOKUPS: usize = 1_000;
/// The open-loop rate, requests a second, and how many are sent at it.
const RATE: u64 = 20;
const PACED: usize = 300;

/// Paraphrases of the stored question: every one is embedded and verified.
const PARAPHRASES: [&str; 5] = [
    "What is the meaning of the HTTP 402 status?",
    "What does the HTTP status code 402 mean?",
    "What does status 402 mean in HTTP?",
    "Meaning of HTTP status 402?",
    "What is HTTP status 402?",
];

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
    let running =
        p402::server::serve::start_with(p402::config::LoadedConfig { config, path: None })
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
    drop(embedder);

    separate_process(upstream, &client).await;
}

/// A p402 process of its own, killed when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn start_process(
    upstream: std::net::SocketAddr,
    data: &Path,
    cache: &str,
    client: &reqwest::Client,
) -> (Proxy, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = data.join("p402.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n[routing]\ndefault_mode = \"passthrough\"\n[cache]\n{cache}\n[providers.openai]\nbase_url = \"http://{upstream}/v1\"\napi_key_env = \"P402_BENCH_KEY\"\n",
            data.join("data").display().to_string(),
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_p402"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("P402_BENCH_KEY", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start p402");
    let proxy = Proxy(child);
    let base = format!("http://127.0.0.1:{port}");
    let want = if cache.contains("enabled = false") {
        "disabled"
    } else {
        "connected"
    };
    for _ in 0..1200 {
        let health = client.get(format!("{base}/health")).send().await;
        if let Ok(health) = health {
            let health: serde_json::Value = health.json().await.unwrap_or_default();
            if health["cache"] == want {
                return (proxy, base);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("p402 did not become ready with its cache {want}");
}

async fn separate_process(upstream: std::net::SocketAddr, client: &reqwest::Client) {
    let ask =
        |q: &str| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]});
    let settle = || tokio::time::sleep(Duration::from_secs(2));

    let bare = tempfile::tempdir().expect("dir");
    let (proxy, _) = start_process(upstream, bare.path(), "enabled = false", client).await;
    settle().await;
    let (without, _) = memory(proxy.0.id());
    drop(proxy);

    let data = tempfile::tempdir().expect("dir");
    let embedder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/embedder");
    let cache = format!(
        "enabled = true\nmodel_dir = {:?}",
        embedder.display().to_string()
    );
    let (proxy, base) = start_process(upstream, data.path(), &cache, client).await;
    let pid = proxy.0.id();
    settle().await;
    let (idle, _) = memory(pid);
    let url = format!("{base}/v1/chat/completions");
    let answer: serde_json::Value = client
        .post(&url)
        .json(&ask("What does HTTP status 402 mean?"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["p402_metadata"]["cached"], false);

    // Only the paraphrases this model and verifier accept are timed: a
    // miss would time the provider instead.
    let mut hitting = Vec::new();
    for question in PARAPHRASES {
        let answer: serde_json::Value = client
            .post(&url)
            .json(&ask(question))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if answer["p402_metadata"]["cached"] == true {
            hitting.push(question);
        }
    }
    assert!(!hitting.is_empty(), "no paraphrase hit the cache");
    let one = |question: &'static str| {
        let client = client.clone();
        let request = client.post(&url).json(&ask(question));
        async move {
            let start = Instant::now();
            let answer: serde_json::Value = request
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            assert_eq!(answer["p402_metadata"]["cached"], true, "{answer}");
            start.elapsed().as_secs_f64() * 1000.0
        }
    };
    let mut sequential = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        sequential.push(one(hitting[i % hitting.len()]).await);
    }
    settle().await;
    let (after, _) = memory(pid);

    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut sent = Vec::with_capacity(PACED);
    for i in 0..PACED {
        ticks.tick().await;
        sent.push(tokio::spawn(one(hitting[i % hitting.len()])));
    }
    let mut paced = Vec::with_capacity(PACED);
    for answer in sent {
        paced.push(answer.await.expect("request task"));
    }
    let (end, peak) = memory(pid);
    drop(proxy);

    println!(
        "\n{} of {} paraphrases hit and were timed.",
        hitting.len(),
        PARAPHRASES.len()
    );
    println!("\n| the `p402` binary as its own process | p50 | p90 | p99 |");
    println!("|---|---:|---:|---:|");
    for (name, samples) in [
        (
            format!("semantic hit, 1 connection ({LOOKUPS} sequential)"),
            sequential,
        ),
        (
            format!("semantic hit, {RATE}/s open loop ({PACED} requests)"),
            paced,
        ),
    ] {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            percentile(samples.clone(), 0.5),
            percentile(samples.clone(), 0.9),
            percentile(samples, 0.99)
        );
    }
    println!("\n| resident memory (VmRSS) | MiB |");
    println!("|---|---:|");
    println!("| without the cache | {without:.1} |");
    println!("| models loaded, idle | {idle:.1} |");
    println!("| after {LOOKUPS} semantic lookups | {after:.1} |");
    println!("| after {PACED} more at {RATE}/s | {end:.1} |");
    println!("| peak (VmHWM) | {peak:.1} |");
}
