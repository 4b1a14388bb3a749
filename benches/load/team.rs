//! `cargo bench --bench load -- --team`: what a shared (team) budget adds
//! to a request over a local one. Same p402, same routing, same upstream;
//! the only difference is where the budget lives: this p402's database, or
//! a `redis-server` on loopback (one round trip to reserve, one to
//! settle). Beside them, in the same run: the upstream alone, two bare
//! Redis round trips (the floor of what a shared budget can add), and
//! p402's two scripts alone (reserve, then settle, through its team
//! store). Concurrency 1, interleaved rounds, medians.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::generator::{Call, Generator, Run};
use crate::systems::{self, P402Setup};
use crate::{report, QUESTION, SYSTEM_PROMPT};

const WINDOW: Duration = Duration::from_secs(3);
const WARMUP: Duration = Duration::from_millis(500);
const ROUNDS: usize = 5;
/// Redis-only timings per round.
const REDIS_SAMPLES: usize = 2000;

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(work: &Path) -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = work.join("redis");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("redis dir");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn percentile(mut values: Vec<u64>, p: f64) -> u64 {
    values.sort_unstable();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

/// Two PINGs, and p402's reserve + settle, each timed per pair.
fn redis_alone(url: &str, runtime: &tokio::runtime::Runtime) -> (Vec<u64>, Vec<u64>) {
    runtime.block_on(async {
        let client = redis::Client::open(url).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut pings = Vec::with_capacity(REDIS_SAMPLES);
        for _ in 0..REDIS_SAMPLES {
            let started = Instant::now();
            for _ in 0..2 {
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("ping");
            }
            pings.push(started.elapsed().as_nanos() as u64);
        }
        std::env::set_var("P402_REDIS_URL", url);
        let config = p402::config::TeamConfig {
            prefix: "bench-scripts".to_string(),
            ..Default::default()
        };
        let store = p402::money::team::TeamStore::connect(
            &config,
            p402::ops::metrics::Metrics::default().team,
        )
        .expect("team store")
        .expect("configured");
        let account = p402::money::budget::Account::shared_budget(
            "bench",
            p402::money::Usd::from_dollars(1e6).expect("usd"),
            p402::config::Period::Month,
            chrono::Utc::now(),
        );
        let amount = p402::money::Usd::from_dollars(0.01).expect("usd");
        let mut scripts = Vec::with_capacity(REDIS_SAMPLES);
        for i in 0..REDIS_SAMPLES {
            let entry: p402::store::LedgerEntry = serde_json::from_value(json!({
                "time": chrono::Utc::now(), "request_id": format!("req_bench_{}_{i}", uuid_like()),
                "session": null, "budgets": ["bench"], "provider": "openai", "model": "gpt-4o-mini",
                "input_tokens": 40, "output_tokens": 20, "cost_nanos": 1000, "direct_nanos": 1000,
                "cached": false, "estimated": false}))
            .expect("entry");
            let started = Instant::now();
            let hold = store
                .reserve(std::slice::from_ref(&account), amount, amount)
                .await
                .expect("redis")
                .expect("fits");
            store
                .settle(Some(&hold), vec![account.key.clone().expect("key")], &entry)
                .await;
            scripts.push(started.elapsed().as_nanos() as u64);
        }
        (pings, scripts)
    })
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub fn run(work: &Path) {
    let generator = Generator::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = start_redis(work);
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    let (_upstream_server, upstream) = systems::start_upstream();
    let local = P402Setup {
        routing_mode: "cost",
        budget: true,
        cache: false,
        anthropic: false,
    };
    let no_embedder = work.join("no-embedder");
    let (local_server, local_addr) =
        systems::start_p402(work, "p402-budget-local", upstream, &local, &no_embedder);
    let (team_server, team_addr) = systems::start_p402_team(
        work,
        "p402-budget-team",
        upstream,
        &local,
        &no_embedder,
        &url,
    );
    let body = json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION}]})
    .to_string();
    for addr in [local_addr, team_addr] {
        let uri: hyper::Uri = format!("http://{addr}/v1/chat/completions")
            .parse()
            .expect("uri");
        for _ in 0..200 {
            let (status, text) = generator.fetch("POST", &uri, &body).expect("p402");
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                status == 200 && value["p402_metadata"].is_object(),
                "HTTP {status}: {text}"
            );
        }
    }
    let systems = [
        ("upstream direct", upstream),
        ("p402, local budget", local_addr),
        ("p402, shared budget (Redis)", team_addr),
    ];
    let mut runs: [Vec<Run>; 3] = Default::default();
    let (mut pings, mut scripts) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (i, (name, addr)) in systems.iter().enumerate() {
            let call = Call {
                uri: format!("http://{addr}/v1/chat/completions")
                    .parse()
                    .expect("uri"),
                body: Bytes::from(body.clone()),
                stream: false,
            };
            let cpu = || match i {
                1 => local_server.cpu_seconds(),
                2 => team_server.cpu_seconds(),
                _ => 0.0,
            };
            let run = generator.closed_loop(&call, 1, WARMUP, WINDOW, &cpu);
            assert_eq!(run.errors, 0, "{name}: {:?}", run.first_error);
            eprintln!(
                "team: round {round} {name}: p50 {} p99 {}",
                report::duration(run.latency(0.5)),
                report::duration(run.latency(0.99))
            );
            runs[i].push(run);
        }
        let (p, s) = redis_alone(&url, &runtime);
        pings.push((median(p.clone()), percentile(p, 0.99)));
        scripts.push((median(s.clone()), percentile(s, 0.99)));
    }
    let med = |runs: &[Run], p: f64| median(runs.iter().map(|r| r.latency(p)).collect());
    let direct = med(&runs[0], 0.5);
    let local_p50 = med(&runs[1], 0.5);
    let team_p50 = med(&runs[2], 0.5);
    let cpu = |runs: &[Run]| {
        let mut v: Vec<f64> = runs.iter().map(Run::cpu_per_request_us).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = String::new();
    out.push_str("| what | p50 | p99 | added over the upstream | p402 CPU per request |\n|---|---:|---:|---:|---:|\n");
    for (i, (name, _)) in systems.iter().enumerate() {
        let p50 = med(&runs[i], 0.5);
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            report::duration(p50),
            report::duration(med(&runs[i], 0.99)),
            if i == 0 {
                "-".to_string()
            } else {
                report::duration(p50.saturating_sub(direct))
            },
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:.0} µs", cpu(&runs[i]))
            },
        ));
    }
    let pair = |v: &[(u64, u64)]| {
        (
            median(v.iter().map(|x| x.0).collect()),
            median(v.iter().map(|x| x.1).collect()),
        )
    };
    let (ping50, ping99) = pair(&pings);
    let (script50, script99) = pair(&scripts);
    out.push_str(&format!(
        "| floor: two bare Redis round trips (PING, PING) | {} | {} | | |\n",
        report::duration(ping50),
        report::duration(ping99)
    ));
    out.push_str(&format!(
        "| p402's two scripts alone (reserve, then settle with the ledger append) | {} | {} | | |\n",
        report::duration(script50),
        report::duration(script99)
    ));
    out.push_str(&format!(
        "\nShared over local: **{}** at p50 (the scripts alone: {}; the floor: {}).\n",
        report::duration(team_p50.saturating_sub(local_p50)),
        report::duration(script50),
        report::duration(ping50)
    ));
    println!("{out}");
    std::fs::write(work.join("team.md"), &out).expect("write team.md");
    eprintln!("team: wrote {}", work.join("team.md").display());
}
