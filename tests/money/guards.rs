//! Alerts and guards (SPEC §14): a budget warns before its cap, a
//! burn-rate cap stops a runaway loop, a budget that charges nothing is
//! named, and a timed-out request is never $0.
//!
//! The webhook receiver is a real HTTP server on a loopback port, also one
//! that is down at first and comes up only after p402 restarted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(60);

/// A webhook receiver: takes every POST with a 200 and keeps its JSON.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (Self::serve(listener), addr)
    }

    /// On a given address: a receiver that was down comes up there.
    async fn start_on(addr: SocketAddr) -> Self {
        Self::serve(TcpListener::bind(addr).await.expect("bind again"))
    }

    fn serve(listener: TcpListener) -> Self {
        let receiver = Receiver::default();
        let got = Arc::clone(&receiver.got);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let got = Arc::clone(&got);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let got = Arc::clone(&got);
                            async move {
                                let bytes = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                got.lock().expect("lock").push(value);
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                    bytes::Bytes::from_static(b"ok"),
                                )))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    fn got(&self) -> Vec<Value> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `n` alerts have arrived.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        assert!(
            eventually(LIMIT, || async { self.got().len() >= n }).await,
            "the receiver got {:?}, expected {n} alerts",
            self.got()
        );
        self.got()
    }
}

/// A global budget of $0.01 a month that alerts at 50% and 80%. Each
/// answer of the fake costs $0.003012 (12 tokens in, 3 out, metered), so
/// the second request crosses 50% and the third 80%.
fn alerting(webhook: SocketAddr, fake: &FakeProvider) -> Setup {
    Setup {
        extra: format!(
            "{METERED}\n[alerts]\nwebhook_url = \"http://{webhook}/hook\"\nsession_alert_at = [0.5]\n\n[budgets.global]\nbudget_usd = 0.01\nperiod = \"month\"\nalert_at = [0.5, 0.8]\n"
        ),
        ..Setup::default()
    }
    .with_provider("openai", fake)
}

/// A request whose reservation fits the $0.01 budget three times.
fn small(text: &str) -> Value {
    let mut body = ask("metered", text);
    body["max_tokens"] = json!(3);
    body
}

async fn answered(proxy: &TestProxy, body: Value) {
    let response = proxy.chat(body).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

fn thresholds(alerts: &[Value]) -> Vec<(String, f64)> {
    alerts
        .iter()
        .map(|a| {
            (
                a["budget"].as_str().unwrap_or_default().to_string(),
                a["threshold"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_gets_exactly_one_alert_when_a_budget_crosses_half() {
    let (receiver, addr) = Receiver::start().await;
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(alerting(addr, &fake)).await;

    answered(&proxy, small("one")).await;
    answered(&proxy, small("two")).await;
    let got = receiver.wait_for(1).await;
    let alert = &got[0];
    assert_eq!(alert["budget"], "global", "{alert}");
    assert_eq!(alert["period"], "month", "{alert}");
    assert_eq!(alert["threshold"], 0.5, "{alert}");
    assert_eq!(alert["budget_usd"], 0.01, "{alert}");
    let used = alert["used_usd"].as_f64().expect("used_usd");
    assert!((used - 0.006024).abs() < 1e-9, "{alert}");
    let at = alert["at"].as_str().expect("at");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{alert}");

    // The third request crosses 80%. Alerts go out in the order they are
    // raised, so once the 80% one is in, a second 50% one would be too.
    answered(&proxy, small("three")).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(
        thresholds(&got),
        vec![("global".to_string(), 0.5), ("global".to_string(), 0.8)]
    );

    // The same alerts in the metrics and on the dashboard's list.
    let metrics = proxy
        .client
        .get(proxy.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("p402_budget_alerts_total{budget=\"global\",threshold=\"0.5\"} 1"),
        "{metrics}"
    );
    let listed = proxy.get_json("/api/v2/alerts").await;
    let data = listed["data"].as_array().expect("alerts");
    assert_eq!(data.len(), 2, "{listed}");
    assert!(
        eventually(LIMIT, || async {
            let listed = proxy.get_json("/api/v2/alerts").await;
            listed["data"]
                .as_array()
                .is_some_and(|d| d.iter().all(|a| a["webhook"] == "delivered"))
        })
        .await,
        "{}",
        proxy.get_json("/api/v2/alerts").await
    );
    let page = proxy
        .client
        .get(proxy.url("/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-test=\"alerts\"") && page.contains("/api/v2/alerts"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_alert_as_session_and_their_id() {
    let (receiver, addr) = Receiver::start().await;
    let fake = FakeProvider::start().await;
    let mut setup = alerting(addr, &fake);
    // No global budget here: only the session's thresholds count.
    setup.extra = format!(
        "{METERED}\n[alerts]\nwebhook_url = \"http://{addr}/hook\"\nsession_alert_at = [0.5]\n"
    );
    let proxy = TestProxy::start(setup).await;
    let session = proxy.session(0.01).await;
    for text in ["one", "two"] {
        let mut body = small(text);
        body["p402"] = json!({"session_id": session});
        answered(&proxy, body).await;
    }
    let got = receiver.wait_for(1).await;
    assert_eq!(
        thresholds(&got),
        vec![(format!("session:{session}"), 0.5)],
        "{got:?}"
    );
    assert_eq!(got[0]["period"], "session");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_due_survives_a_restart_and_is_not_sent_twice() {
    // A receiver that is down: its port is free, so every POST is refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(alerting(addr, &fake)).await;
    answered(&proxy, small("one")).await;
    answered(&proxy, small("two")).await;
    // p402 has tried, and keeps the alert as due.
    assert!(
        eventually(LIMIT, || async {
            let listed = proxy.get_json("/api/v2/alerts").await;
            let first = &listed["data"][0];
            first["webhook"] == "pending" && first["webhook_attempts"].as_u64() >= Some(1)
        })
        .await,
        "{}",
        proxy.get_json("/api/v2/alerts").await
    );

    let proxy = proxy.restart().await;
    let receiver = Receiver::start_on(addr).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(thresholds(&got), vec![("global".to_string(), 0.5)]);
    assert!(
        eventually(LIMIT, || async {
            proxy.get_json("/api/v2/alerts").await["data"][0]["webhook"] == "delivered"
        })
        .await,
        "{}",
        proxy.get_json("/api/v2/alerts").await
    );

    // Delivered is delivered: another restart sends nothing again, and
    // the next threshold is the only thing that arrives.
    let proxy = proxy.restart().await;
    answered(&proxy, small("three")).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(
        thresholds(&got),
        vec![("global".to_string(), 0.5), ("global".to_string(), 0.8)]
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_raises_the_cap_alert() {
    let (receiver, addr) = Receiver::start().await;
    let fake = FakeProvider::start().await;
    let mut setup = alerting(addr, &fake);
    setup.extra = format!(
        "{METERED}\n[alerts]\nwebhook_url = \"http://{addr}/hook\"\n\n[budgets.global]\nbudget_usd = 0.005\nalert_at = [1.0]\n"
    );
    let proxy = TestProxy::start(setup).await;
    answered(&proxy, small("one")).await;
    // $0.001988 left: not enough for the next reservation.
    let refused = proxy.chat(small("two")).await;
    expect_error(refused, 402, "BUDGET_EXCEEDED").await;
    let got = receiver.wait_for(1).await;
    assert_eq!(thresholds(&got), vec![("global".to_string(), 1.0)]);
    assert_eq!(got[0]["reason"], "refused", "{got:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embeddings_request_refused_at_the_cap_raises_its_alert() {
    let (receiver, addr) = Receiver::start().await;
    let fake = FakeProvider::start().await;
    let mut setup = alerting(addr, &fake);
    // 4,000 tokens at $0.02/M cost $0.00008: more than the budget holds.
    setup.extra = format!(
        "[alerts]\nwebhook_url = \"http://{addr}/hook\"\n\n[budgets.global]\nbudget_usd = 0.00005\nalert_at = [1.0]\n"
    );
    let proxy = TestProxy::start(setup).await;
    let refused = proxy
        .client
        .post(proxy.url("/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": "hello ".repeat(4000)}))
        .send()
        .await
        .expect("sent");
    expect_error(refused, 402, "BUDGET_EXCEEDED").await;
    let got = receiver.wait_for(1).await;
    assert_eq!(thresholds(&got), vec![("global".to_string(), 1.0)]);
    assert_eq!(got[0]["reason"], "refused", "{got:?}");
    assert_eq!(fake.received().len(), 0, "nothing went upstream");
    proxy.stop().await;
}

/// A model whose answers cost $0.00042 (12 tokens at $10/M, 3 at
/// $100/M) and whose 10-token reservation is about $0.0011.
const HOURLY: &str = r#"
[[models]]
id = "hourly"
provider = "openai"
input_per_mtok = 10.0
output_per_mtok = 100.0
context = 100000
max_output = 1000
quality = 50
"#;

fn hourly(text: &str) -> Value {
    let mut body = ask("hourly", text);
    body["max_tokens"] = json!(10);
    body
}

/// What the ledger says the global budget spent.
async fn global_spent(proxy: &TestProxy) -> f64 {
    let budgets = proxy.get_json("/api/v2/budgets").await;
    budgets["data"]
        .as_array()
        .and_then(|d| d.iter().find(|b| b["name"] == "global"))
        .and_then(|b| b["budget"]["used_usd"].as_f64())
        .expect("the global budget")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_under_an_hourly_cap_gets_429_with_retry_after() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!(
                "{HOURLY}\n[budgets.global]\nbudget_usd = 10\nperiod = \"month\"\nmax_usd_per_hour = 0.004\n"
            ),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let mut served = 0;
    let mut stopped = None;
    for n in 0..30 {
        let response = proxy.chat(hourly(&format!("loop {n}"))).await;
        if response.status() == 429 {
            stopped = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
        served += 1;
    }
    let response = stopped.expect("the loop was stopped by the hourly cap");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    // The oldest spend leaves the hour in just under an hour.
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let error = expect_error(response, 429, "spend_rate_exceeded").await;
    assert_eq!(error["max_usd_per_hour"], 0.004, "{error}");
    assert!(served >= 3, "{served} requests before the cap");
    let spent = global_spent(&proxy).await;
    assert!(spent <= 0.004 + 1e-12, "spent {spent} in the hour");
    assert!(
        (spent - 0.00042 * f64::from(served)).abs() < 1e-9,
        "{spent}"
    );

    // A restart does not give the loop a fresh hour.
    let proxy = proxy.restart().await;
    expect_error(
        proxy.chat(hourly("after a restart")).await,
        429,
        "spend_rate_exceeded",
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hourly_cap_holds_under_concurrency() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!(
                "{HOURLY}\n[budgets.global]\nbudget_usd = 10\nmax_usd_per_hour = 0.004\n"
            ),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    // Answers that take a while: every request is in flight at once, so
    // only reservations (no settled spend yet) can hold the cap.
    for _ in 0..16 {
        fake.push(Reply::Delay(
            Duration::from_millis(500),
            Box::new(Reply::Normal),
        ));
    }
    let proxy = Arc::new(proxy);
    let requests = (0..16).map(|n| {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            proxy
                .chat(hourly(&format!("at once {n}")))
                .await
                .status()
                .as_u16()
        })
    });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("request task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + limited, 16, "{statuses:?}");
    assert!(ok >= 1 && limited >= 1, "{statuses:?}");
    let spent = global_spent(&proxy).await;
    // Sixteen answers would be $0.00672: the cap held.
    assert!(spent <= 0.004 + 1e-12, "spent {spent}: {statuses:?}");
    if let Ok(proxy) = Arc::try_unwrap(proxy) {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_and_p402_run_take_an_hourly_cap() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: HOURLY.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let created: Value = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .json(&json!({"budget_usd": 5, "max_usd_per_hour": 0.002}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert_eq!(created["max_usd_per_hour"], 0.002, "{created}");
    let session = created["session_id"].as_str().expect("id").to_string();
    let mut limited = false;
    for n in 0..10 {
        let mut body = hourly(&format!("session loop {n}"));
        body["p402"] = json!({"session_id": session});
        let response = proxy.chat(body).await;
        if response.status() == 429 {
            let error = expect_error(response, 429, "spend_rate_exceeded").await;
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&session)),
                "{error}"
            );
            limited = true;
            break;
        }
        assert_eq!(response.status(), 200);
    }
    assert!(limited, "the session's hourly cap stopped the loop");

    // `p402 run --max-usd-per-hour` puts the cap on its session.
    let home = tempfile::tempdir().expect("home");
    let config = home.path().join("p402.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{}\"\ndata_dir = \"{}\"\n",
            proxy.addr(),
            home.path().join("data").display()
        ),
    )
    .expect("config");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_p402"))
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--budget",
                "1",
                "--max-usd-per-hour",
                "0.25",
                "--name",
                "capped",
                "--",
                "true",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("p402 run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("an hour"), "{stderr}");
    let sessions = proxy.get_json("/api/v2/sessions").await;
    let run = sessions["data"]
        .as_array()
        .and_then(|d| d.iter().find(|s| s["name"] == "capped"))
        .unwrap_or_else(|| panic!("the run's session: {sessions}"));
    assert_eq!(run["max_usd_per_hour"], 0.25, "{run}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_request_raises_the_budgets_spend() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            upstream: "first_byte_timeout_seconds = 1".to_string(),
            extra: format!("{METERED}\n[budgets.global]\nbudget_usd = 1\n"),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    // The provider takes 2.5 s: p402 gives up after 1 s, but the provider
    // had the request and bills it.
    fake.push(Reply::Delay(
        Duration::from_millis(2500),
        Box::new(Reply::Normal),
    ));
    let mut body = ask("metered", "slow");
    body["max_tokens"] = json!(50);
    let response = proxy.chat(body).await;
    let error = expect_error(response, 504, "upstream_timeout").await;
    let id = error["request_id"].as_str().expect("id");
    let spent = global_spent(&proxy).await;
    assert!(spent > 0.0, "a timed-out request is not free");
    let entry = proxy.ledger_entry(&format!("{id}.1")).await.expect("entry");
    assert_eq!(entry["estimated"], true, "{entry}");
    // Not streamed: the prompt plus the 50 output tokens reserved.
    assert_eq!(entry["output_tokens"], 50, "{entry}");
    let cost = entry["cost_nanos"].as_i64().expect("cost");
    assert!(
        (spent * 1e9 - cost as f64).abs() < 0.5,
        "{spent} vs {entry}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_health_name_a_budget_that_charges_nothing() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: "[budgets.team]\nbudget_usd = 50\nperiod = \"month\"\n".to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let health = proxy.get_json("/health").await;
    let warnings = health["config"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("`team` charges nothing"))),
        "{health}"
    );

    let config = proxy.config_path.clone();
    let check = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_p402"));
        command.arg("check").arg("--config").arg(&config);
        if json {
            command.arg("--json");
        }
        let output = command.output().expect("p402 check");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = check(false);
    assert!(text.contains("NOT CHARGED"), "{text}");
    assert!(text.contains("`team` charges nothing"), "{text}");
    let view: Value = serde_json::from_str(&check(true)).expect("json");
    let team = view["budgets"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "team"))
        .expect("team");
    assert_eq!(team["charged"], false, "{view}");
    assert!(
        view["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("`team` charges nothing")),
        "{view}"
    );
    proxy.stop().await;
}
