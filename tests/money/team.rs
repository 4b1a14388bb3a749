//! Team budgets on a real `redis-server` (SPEC §11): one cap across several
//! p402 processes under concurrency, failing closed while Redis is down and
//! recovering by itself, holds of a crashed instance lapsing with their
//! lease, settlement counted once, the team ledger, and TLS.

use std::time::Duration;

use crate::common::redis_server::{free_port, RedisServer};
use crate::common::*;
use chrono::{Datelike, Utc};
use serde_json::{json, Value};

/// With [`METERED`]'s prices a request with `max_tokens = 10` holds
/// $0.010012 and costs $0.003012 (12 prompt and 3 completion tokens).
const COST_NANOS: i64 = 3_012_000;

fn request() -> Value {
    let mut body = ask("metered", "hello");
    body["max_tokens"] = json!(10);
    body
}

/// This month's key of a shared monthly budget (UTC periods).
fn month_key(prefix: &str, budget: &str) -> String {
    let first = Utc::now().date_naive().with_day(1).expect("first");
    format!("{prefix}:budget:{budget}:month:{first}")
}

fn team_table(redis: &RedisServer, prefix: &str, extra: &str) -> String {
    format!(
        "[team]\nredis_url = {:?}\nprefix = {prefix:?}\n{extra}\n",
        redis.url()
    )
}

async fn post(client: &reqwest::Client, base: &str, key: Option<&str>) -> reqwest::Response {
    let mut builder = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&request());
    if let Some(key) = key {
        builder = builder.bearer_auth(key);
    }
    builder.send().await.expect("request to p402")
}

async fn get(client: &reqwest::Client, url: String, key: Option<&str>) -> Value {
    let mut builder = client.get(url);
    if let Some(key) = key {
        builder = builder.bearer_auth(key);
    }
    builder
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

fn nanos(text: &str) -> i64 {
    if text.is_empty() {
        0
    } else {
        text.parse()
            .unwrap_or_else(|_| panic!("not a number: {text:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shared_cap_holds_across_three_p402_processes() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start().await;
    // Every answer takes a while, so that many requests hold money at once.
    for i in 0..120u64 {
        fake.push(Reply::Delay(
            Duration::from_millis(20 + (i * 37) % 80),
            Box::new(Reply::Normal),
        ));
    }
    let budget = 0.10;
    let dir = tempfile::tempdir().expect("dir");
    let mut processes = Vec::new();
    let mut configs = Vec::new();
    for i in 0..3 {
        let config = Setup {
            extra: format!(
                "{METERED}\n{}\n[budgets.global]\nbudget_usd = {budget}\nperiod = \"month\"\nshared = true\n",
                team_table(&redis, "cap", &format!("instance = \"p402-{i}\""))
            ),
            ..Setup::default()
        }
        .with_provider("openai", &fake)
        .toml(&dir.path().join(format!("data-{i}")));
        let path = dir.path().join(format!("p402-{i}.toml"));
        std::fs::write(&path, config).expect("write");
        processes.push(ProxyProcess::start(&path));
        configs.push(path);
    }
    let bases: Vec<String> = processes
        .iter()
        .map(|p| format!("http://{}", p.addr))
        .collect();

    // 96 requests in 8 waves of 12 at once (4 per process), 150 ms apart:
    // each wave contends for what is left, and the later ones find the
    // budget used up.
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..96u64 {
        let (client, base) = (client.clone(), bases[(i % 3) as usize].clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 * (i / 12))).await;
            let response = post(&client, &base, None).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }));
    }
    let mut spent = 0i64;
    let (mut answered, mut refused) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            200 => {
                let cost = body["p402_metadata"]["cost_usd"].as_f64().expect("cost");
                assert!((cost - 0.003012).abs() < 1e-9, "{body}");
                spent += COST_NANOS;
                answered += 1;
            }
            402 => {
                assert_eq!(body["error"]["code"], "BUDGET_EXCEEDED", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        refused > 0,
        "the load is meant to want more than the budget"
    );
    // Then one at a time, round the three, until the budget says no.
    for i in 0..40 {
        let response = post(&client, &bases[i % 3], None).await;
        if response.status() == 402 {
            break;
        }
        assert_eq!(response.status(), 200);
        spent += COST_NANOS;
        answered += 1;
    }
    // The cap held: what the clients were told they spent is within it,
    // and it is what Redis counted.
    assert!(
        spent <= 100_000_000,
        "spent {spent} nano-dollars of a 100,000,000 budget ({answered} answered)"
    );
    // And it was reached: what is left cannot pay for one more hold.
    assert!(
        spent > 100_000_000 - 10_012_000,
        "only {spent} nano-dollars spent ({answered} answered, {refused} refused)"
    );
    let key = month_key("cap", "global");
    assert_eq!(nanos(&redis.cli(&["HGET", &key, "settled"])), spent);
    assert_eq!(
        nanos(&redis.cli(&["HGET", &key, "held"])),
        0,
        "no hold outlives its request"
    );
    // Every instance shows the same shared spend.
    for base in &bases {
        let budgets = get(&client, format!("{base}/api/v2/budgets"), None).await;
        let global = &budgets["data"][0];
        assert_eq!(global["shared"], true, "{budgets}");
        let used = global["budget"]["used_usd"].as_f64().expect("used");
        assert!((used - spent as f64 / 1e9).abs() < 1e-9, "{budgets}");
    }
    // The team ledger has every settled charge, from all three.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(["report", "--team", "--by", "instance", "--json", "--config"])
        .arg(&configs[0])
        .output()
        .expect("p402 report --team");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("report json");
    assert_eq!(report["total"]["requests"], answered, "{report}");
    assert!(
        (report["total"]["cost_usd"].as_f64().expect("cost") - spent as f64 / 1e9).abs() < 1e-9
    );
    let instances: Vec<&str> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(instances.len(), 3, "{report}");
    // And the table form names them.
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_p402"))
        .args(["report", "--team", "--by", "instance", "--config"])
        .arg(&configs[1])
        .output()
        .expect("p402 report --team");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("p402-0") && table.contains("p402-2"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_shared_budgets_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup {
        server: "api_keys = [\"team-key\", \"solo-key\"]\n".to_string(),
        extra: format!(
            "{METERED}\n{}\n[budgets.team]\nbudget_usd = 5\nperiod = \"month\"\nshared = true\nkeys = [\"team-key\"]\n",
            team_table(&redis, "out", "")
        ),
        ..Setup::default()
    }
    .with_provider("openai", &fake))
    .await;
    let base = format!("http://{}", proxy.addr());
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &base, Some("team-key")).await.status(), 200);
    let health = get(&client, format!("{base}/health"), None).await;
    assert_eq!(health["team"], "connected", "{health}");

    // A request holding money when Redis dies: answered, and its
    // settlement is written once Redis is back.
    fake.push(Reply::Delay(
        Duration::from_millis(1500),
        Box::new(Reply::Normal),
    ));
    let seen = fake.received().len();
    let in_flight = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { post(&client, &base, Some("team-key")).await })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            fake.received().len() > seen
        })
        .await,
        "the request reached the provider"
    );
    redis.kill();
    let in_flight = in_flight.await.expect("task");
    assert_eq!(in_flight.status(), 200);
    let kept_id = request_id(&in_flight);

    // Shared budget: refused, naming Redis. Everything else: served.
    let refused = expect_error(
        post(&client, &base, Some("team-key")).await,
        503,
        "team_store_unavailable",
    )
    .await;
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("Redis"), "{message}");
    assert!(message.contains(&redis.url()), "{message}");
    assert_eq!(post(&client, &base, Some("solo-key")).await.status(), 200);
    let unreachable = eventually(Duration::from_secs(10), || async {
        get(&client, format!("{base}/health"), None).await["team"] == "unreachable"
    })
    .await;
    assert!(unreachable, "/health says the team store is unreachable");
    let health = get(&client, format!("{base}/health"), None).await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["team_store"]["settlements_waiting"], 1, "{health}");
    let budgets = get(&client, format!("{base}/api/v2/budgets"), Some("team-key")).await;
    assert!(
        budgets["data"][0]["budget"]["used_usd"].is_null(),
        "{budgets}"
    );
    assert!(budgets["data"][0]["team_error"].is_string(), "{budgets}");

    // Recovery needs nothing from anyone.
    redis.restart();
    let back = eventually(Duration::from_secs(20), || async {
        post(&client, &base, Some("team-key")).await.status() == 200
    })
    .await;
    assert!(back, "shared budgets work again once Redis is back");
    let written = eventually(Duration::from_secs(10), || async {
        redis
            .cli(&["XRANGE", "out:ledger", "-", "+"])
            .contains(&kept_id)
    })
    .await;
    assert!(
        written,
        "the settlement kept during the outage reached the team ledger"
    );
    let health = get(&client, format!("{base}/health"), None).await;
    assert_eq!(health["team"], "connected", "{health}");
    assert_eq!(health["team_store"]["settlements_waiting"], 0, "{health}");
    let key = month_key("out", "team");
    assert!(nanos(&redis.cli(&["HGET", &key, "settled"])) >= 2 * COST_NANOS);
    let metrics = proxy
        .client
        .get(format!("{base}/metrics"))
        .bearer_auth("team-key")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("p402_team_store_errors_total{op=\"reserve\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p402_team_store_duration_seconds_bucket{"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_instance_holds_lapse_and_a_long_request_keeps_its_own() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let extra = format!(
        "{METERED}\n{}\n[budgets.global]\nbudget_usd = 0.05\nperiod = \"month\"\nshared = true\n",
        team_table(&redis, "lease", "lease_seconds = 5")
    );
    let config = Setup {
        extra: extra.clone(),
        ..Setup::default()
    }
    .with_provider("openai", &fake)
    .toml(&dir.path().join("data-a"));
    let path = dir.path().join("a.toml");
    std::fs::write(&path, config).expect("write");
    let crashing = ProxyProcess::start(&path);
    let key = month_key("lease", "global");
    // Started first, so that it reads the budget right after the crash,
    // well within the crashed hold's lease however busy the machine is.
    let other = TestProxy::start(
        Setup {
            extra: extra.clone(),
            upstream: "first_byte_timeout_seconds = 30\n".to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;

    // A holds money for a request that never ends, then dies.
    fake.push(Reply::Hang);
    let seen = fake.received().len();
    let client = reqwest::Client::new();
    let base = format!("http://{}", crashing.addr);
    let hung = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .json(&request())
                .send()
                .await
        }
    });
    let held = eventually(Duration::from_secs(10), || async {
        nanos(&redis.cli(&["HGET", &key, "held"])) > 0
    })
    .await;
    assert!(held, "the request holds money in Redis");
    // Money is held before the request goes out: wait until it has taken
    // its (hanging) answer, which is then no other request's.
    let sent = eventually(Duration::from_secs(10), || async {
        fake.received().len() > seen
    })
    .await;
    assert!(sent, "the request reached the provider");
    let mut crashing = crashing;
    crashing.signal("KILL");
    let _ = crashing.child.wait();
    let _ = hung.await;

    // The other instance sees the hold until its lease runs out, then the
    // whole budget again.
    let budgets = other.get_json("/api/v2/budgets").await;
    let left = budgets["data"][0]["budget"]["remaining_usd"]
        .as_f64()
        .expect("left");
    assert!(
        left < 0.045,
        "the crashed instance's hold still counts: {budgets}"
    );
    let lapsed = eventually(Duration::from_secs(15), || async {
        other.get_json("/api/v2/budgets").await["data"][0]["budget"]["remaining_usd"]
            .as_f64()
            .is_some_and(|left| (left - 0.05).abs() < 1e-12)
    })
    .await;
    assert!(lapsed, "the hold lapsed with its lease");

    // A request longer than the lease keeps its hold: it is renewed.
    fake.push(Reply::Delay(
        Duration::from_millis(8000),
        Box::new(Reply::Normal),
    ));
    let long = tokio::spawn({
        let (client, base) = (client.clone(), format!("http://{}", other.addr()));
        async move { post(&client, &base, None).await }
    });
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert!(
        nanos(&redis.cli(&["HGET", &key, "held"])) > 0,
        "a live request's hold outlives one lease"
    );
    assert_eq!(long.await.expect("task").status(), 200);
    assert_eq!(nanos(&redis.cli(&["HGET", &key, "held"])), 0);
    assert_eq!(nanos(&redis.cli(&["HGET", &key, "settled"])), COST_NANOS);
    other.stop().await;
}

#[tokio::test]
async fn settlement_is_idempotent_by_request_id() {
    use p402::money::budget::Account;
    use p402::money::Usd;
    let redis = RedisServer::start();
    let config = p402::config::TeamConfig {
        redis_url: None,
        prefix: "idem".to_string(),
        ..Default::default()
    };
    std::env::set_var("P402_REDIS_URL", redis.url());
    let store =
        p402::money::team::TeamStore::connect(&config, p402::ops::metrics::Metrics::default().team)
            .expect("connect")
            .expect("configured");
    std::env::remove_var("P402_REDIS_URL");
    let account = Account::shared_budget(
        "b",
        Usd::from_dollars(1.0).expect("usd"),
        p402::config::Period::Total,
        Utc::now(),
    );
    let wanted = Usd::from_dollars(0.4).expect("usd");
    let hold = store
        .reserve(std::slice::from_ref(&account), wanted, wanted)
        .await
        .expect("redis")
        .expect("fits");
    assert_eq!(hold.amount, wanted);
    // A second and a third 0.4: the third does not fit, and says what is left.
    let second = store
        .reserve(std::slice::from_ref(&account), wanted, wanted)
        .await
        .expect("redis");
    assert!(second.is_ok());
    let third = store
        .reserve(std::slice::from_ref(&account), wanted, wanted)
        .await
        .expect("redis");
    let short = third.expect_err("over the cap");
    assert_eq!(short.remaining, Usd::from_dollars(0.2).expect("usd"));

    let entry: p402::store::LedgerEntry = serde_json::from_value(json!({
        "time": Utc::now(), "request_id": "req_idem", "session": null, "budgets": ["b"],
        "provider": "openai", "model": "metered", "input_tokens": 12, "output_tokens": 3,
        "cost_nanos": COST_NANOS, "direct_nanos": COST_NANOS, "cached": false, "estimated": false
    }))
    .expect("entry");
    let keys = vec![account.key.clone().expect("key")];
    store.settle(Some(&hold), keys.clone(), &entry).await;
    store.settle(Some(&hold), keys.clone(), &entry).await;
    store.settle(None, keys, &entry).await;
    let balances = store.balances(&[account]).await.expect("balances");
    assert_eq!(balances[0].0, Usd::from_nanos(COST_NANOS), "settled once");
    assert_eq!(
        balances[0].1, wanted,
        "the settled hold is gone, the other stays"
    );
    assert_eq!(redis.cli(&["XLEN", "idem:ledger"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=p402 test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let path = |name: &str| d.join(name).display().to_string();
    let port = free_port();
    let _redis = RedisServer::start_with(
        vec![
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        Some(port),
    );
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(Setup {
        extra: format!(
            "{METERED}\n[team]\nredis_url = \"rediss://localhost:{port}/0\"\nca_file = {:?}\n\n[budgets.global]\nbudget_usd = 1\nshared = true\n",
            path("ca.pem")
        ),
        ..Setup::default()
    }
    .with_provider("openai", &fake))
    .await;
    let response = proxy.chat(request()).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let budgets = proxy.get_json("/api/v2/budgets").await;
    let used = budgets["data"][0]["budget"]["used_usd"].as_f64();
    assert_eq!(used, Some(0.003012), "{budgets}");
    assert_eq!(proxy.health().await["team"], "connected");
    proxy.stop().await;
}
