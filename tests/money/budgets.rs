//! Sessions and budgets end to end: the API, the hard cap under
//! concurrency, file budgets with hot reload, output-limit lowering,
//! estimated settlement, rate limits, and the ledger surviving SIGKILL.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The fake reports 12 prompt and 3 completion tokens: 12 * 1 + 3 * 1000 =
/// 3012 $/M = $0.003012 a request.
const ACTUAL_COST: f64 = 0.003012;

async fn setup(extra_config: &str, server: &str) -> (FakeProvider, TestProxy) {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n{extra_config}"),
            server: server.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    (fake, proxy)
}

async fn create_session(proxy: &TestProxy, body: Value) -> Value {
    let response = proxy
        .client
        .post(proxy.url("/api/v2/sessions"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

fn in_session(session: &str, max_tokens: u32) -> Value {
    let mut body = ask("metered", "hello");
    body["max_tokens"] = json!(max_tokens);
    body["p402"] = json!({"session_id": session});
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_api_lifecycle() {
    let (_fake, proxy) = setup("", "").await;
    let created = create_session(
        &proxy,
        json!({"budget_usd": 5, "name": "agent run", "expires_in_hours": 2}),
    )
    .await;
    assert_eq!(created["object"], "session");
    let id = created["session_id"].as_str().expect("id").to_string();
    assert!(id.starts_with("ses_"));
    assert_eq!(created["name"], "agent run");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["budget"],
        json!({"total_usd": 5.0, "used_usd": 0.0, "remaining_usd": 5.0, "reserved_usd": 0.0})
    );
    assert!(created["created_at"].is_string() && created["expires_at"].is_string());

    let listed = proxy.get_json("/api/v2/sessions").await;
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["session_id"], id.as_str());

    let patched: Value = proxy
        .client
        .patch(proxy.url(&format!("/api/v2/sessions/{id}")))
        .json(&json!({"add_budget_usd": 2.5, "extend_hours": 1}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(patched["budget"]["total_usd"], 7.5);
    assert!(patched["expires_at"].as_str() > created["expires_at"].as_str());

    for (body, code) in [
        (json!({"budget_usd": -1}), "invalid_session"),
        (json!({"budget_usd": 1, "colour": "red"}), "invalid_session"),
        (json!({"name": "no budget"}), "invalid_session"),
    ] {
        let response = proxy
            .client
            .post(proxy.url("/api/v2/sessions"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        expect_error(response, 400, code).await;
    }
    let missing = proxy
        .client
        .get(proxy.url("/api/v2/sessions/ses_nope"))
        .send()
        .await
        .expect("sent");
    expect_error(missing, 404, "session_not_found").await;

    let ended: Value = proxy
        .client
        .delete(proxy.url(&format!("/api/v2/sessions/{id}")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(ended["status"], "ended");
    expect_error(
        proxy.chat(in_session(&id, 100)).await,
        404,
        "session_not_active",
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_charged_and_reports_its_remaining_budget() {
    let (_fake, proxy) = setup("", "").await;
    let session = create_session(&proxy, json!({"budget_usd": 1})).await;
    let id = session["session_id"].as_str().expect("id");
    let answer: Value = proxy.chat_json(in_session(id, 100)).await;
    let meta = &answer["p402_metadata"];
    assert_eq!(meta["session_id"], id);
    assert_eq!(meta["cost_usd"].as_f64(), Some(ACTUAL_COST));
    assert_eq!(
        meta["session_remaining_usd"].as_f64(),
        Some(1.0 - ACTUAL_COST)
    );

    let read = proxy.get_json(&format!("/api/v2/sessions/{id}")).await;
    assert_eq!(read["budget"]["used_usd"].as_f64(), Some(ACTUAL_COST));
    assert_eq!(read["budget"]["reserved_usd"].as_f64(), Some(0.0));
    assert_eq!(read["requests"], 1);

    // The ledger has it, by request id.
    let request_id = meta["request_id"].as_str().expect("request id");
    let entry = proxy
        .get_json(&format!("/api/v2/requests/{request_id}"))
        .await;
    assert_eq!(entry["session"], id);
    assert_eq!(entry["cost_nanos"], 3_012_000);
    assert_eq!(entry["estimated"], false);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_parallel_requests_never_pass_the_cap() {
    let (fake, proxy) = setup("", "").await;
    for _ in 0..100 {
        fake.push(Reply::Delay(
            Duration::from_millis(100),
            Box::new(Reply::Normal),
        ));
    }
    // Worst case of one request: ~10 input tokens + 300 output tokens at
    // $0.001 = ~$0.30, so $1 holds three at a time (a fourth would be cut
    // below the 256 useful tokens and is refused).
    let session = create_session(&proxy, json!({"budget_usd": 1})).await;
    let id = session["session_id"].as_str().expect("id").to_string();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = proxy.client.clone();
        let url = proxy.url("/v1/chat/completions");
        let body = in_session(&id, 300);
        tasks.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }));
    }
    let mut served_cost = 0.0;
    let (mut served, mut refused) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            200 => {
                served += 1;
                served_cost += body["p402_metadata"]["cost_usd"].as_f64().expect("cost");
            }
            402 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "SESSION_BUDGET_EXCEEDED", "{body}");
                assert!(body["error"]["session_remaining_usd"].is_number(), "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(served + refused, 100);
    assert!(served >= 3, "at least the first three fit: {served}");
    assert!(refused > 0, "a hundred at once cannot all fit");
    let read = proxy.get_json(&format!("/api/v2/sessions/{id}")).await;
    let used = read["budget"]["used_usd"].as_f64().expect("used");
    assert!(used <= 1.0, "spend {used} passed the budget");
    assert!(
        (used - served_cost).abs() < 1e-9,
        "used {used} != served {served_cost}"
    );
    assert_eq!(read["requests"], served);
    assert_eq!(
        read["budget"]["reserved_usd"].as_f64(),
        Some(0.0),
        "every reservation released"
    );
    proxy.stop().await;
}

/// Sustained concurrent settlements. sled's own flush pool once deadlocked
/// against the ledger transactions at 16 concurrent requests, and p402
/// stopped answering for good; every request here must be answered, settled
/// exactly once, and still be there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn sustained_concurrent_load_settles_every_request() {
    const CLIENTS: usize = 32;
    const EACH: usize = 40;
    let (_fake, proxy) = setup("", "").await;
    let id = proxy.session(1000.0).await;
    let mut clients = Vec::new();
    for client_no in 0..CLIENTS {
        let client = proxy.client.clone();
        let url = proxy.url("/v1/chat/completions");
        let mut body = in_session(&id, 300);
        clients.push(tokio::spawn(async move {
            let mut cost = 0.0;
            for i in 0..EACH {
                // Every third request streams: relays settle on their own task.
                let stream = (client_no + i) % 3 == 0;
                body["stream"] = json!(stream);
                body["stream_options"] = json!({"include_usage": true});
                let response = client.post(&url).json(&body).send().await.expect("sent");
                assert_eq!(response.status(), 200);
                let text = response.text().await.expect("body");
                let answer: Value = if stream {
                    stream_chunks(&text).pop().expect("a final chunk")
                } else {
                    serde_json::from_str(&text).expect("json")
                };
                cost += answer["p402_metadata"]["cost_usd"]
                    .as_f64()
                    .expect("cost in the metadata");
            }
            cost
        }));
    }
    let all = async {
        let mut cost = 0.0;
        for client in clients {
            cost += client.await.expect("client task");
        }
        cost
    };
    let served_cost = tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("p402 stopped answering under concurrent load");

    let check = |read: &Value| {
        assert_eq!(read["requests"], CLIENTS * EACH, "{read}");
        let used = read["budget"]["used_usd"].as_f64().expect("used");
        assert!(
            (used - served_cost).abs() < 1e-6,
            "used {used} != served {served_cost}"
        );
    };
    let read = proxy.get_json(&format!("/api/v2/sessions/{id}")).await;
    check(&read);
    assert_eq!(read["budget"]["reserved_usd"].as_f64(), Some(0.0));
    let proxy = proxy.restart().await;
    check(&proxy.get_json(&format!("/api/v2/sessions/{id}")).await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_output_limit_is_lowered_to_what_the_budget_pays_for() {
    let (fake, proxy) = setup("", "").await;
    // $0.5 pays ~500 output tokens; the client asks for 1000 (the model's max).
    let session = create_session(&proxy, json!({"budget_usd": 0.5})).await;
    let id = session["session_id"].as_str().expect("id");
    assert_eq!(proxy.chat(in_session(id, 1000)).await.status(), 200);
    let sent = fake.received()[0].body.clone();
    let lowered = sent["max_completion_tokens"]
        .as_u64()
        .expect("openai gets max_completion_tokens");
    assert!((256..1000).contains(&lowered), "{sent}");
    assert!(sent.get("max_tokens").is_none());

    // With no limit at all, the model's maximum is the worst case, lowered too.
    let mut body = ask("metered", "hello");
    body["p402"] = json!({"session_id": id});
    let response = proxy.chat(body).await;
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    assert!(fake.received()[1].body["max_completion_tokens"]
        .as_u64()
        .is_some_and(|n| n < 1000));

    // max_cost is a cap like a budget.
    let mut capped = ask("metered", "hello");
    capped["p402"] = json!({"max_cost": 0.3});
    assert_eq!(proxy.chat(capped).await.status(), 200);
    assert!(fake.received()[2].body["max_completion_tokens"]
        .as_u64()
        .is_some_and(|n| n < 300));
    let mut broke = ask("metered", "hello");
    broke["p402"] = json!({"max_cost": 0.01});
    expect_error(proxy.chat(broke).await, 402, "MAX_COST_EXCEEDED").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_budgets_follow_keys_default_and_global_and_reload_live() {
    let budgets = |team: f64| {
        format!(
            "[budgets.team]\nbudget_usd = {team}\nperiod = \"day\"\nkeys = [\"k-team\"]\n\n[budgets.global]\nbudget_usd = 100\nperiod = \"month\"\n"
        )
    };
    let fake = FakeProvider::start().await;
    let make = |team: f64| {
        Setup {
            extra: format!("{METERED}\n{}", budgets(team)),
            server: "api_keys = [\"k-team\", \"k-other\"]".into(),
            ..Setup::default()
        }
        .with_provider("openai", &fake)
    };
    let proxy = TestProxy::start(make(0.004)).await;
    let data_dir = proxy.dir.path().join("data");
    let send = |key: &'static str| {
        let mut body = ask("metered", "hello");
        body["max_tokens"] = json!(1);
        proxy
            .client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    // team can pay for one request ($0.003012 of $0.004); a second needs at
    // least the 256-token minimum and is refused.
    assert_eq!(send("k-team").await.expect("sent").status(), 200);
    let error = expect_error(send("k-team").await.expect("sent"), 402, "BUDGET_EXCEEDED").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("budget team"),
        "{error}"
    );
    // Another key is charged only to global.
    assert_eq!(send("k-other").await.expect("sent").status(), 200);

    let budgets_view = |proxy: &TestProxy| {
        let client = proxy.client.clone();
        let url = proxy.url("/api/v2/budgets");
        async move {
            client
                .get(url)
                .bearer_auth("k-team")
                .send()
                .await
                .expect("sent")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let view = budgets_view(&proxy).await;
    let global = view["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["name"] == "global")
        .expect("global")
        .clone();
    assert_eq!(
        global["budget"]["used_usd"].as_f64(),
        Some(2.0 * ACTUAL_COST)
    );

    // An invalid file keeps the old limits.
    std::fs::write(
        &proxy.config_path,
        make(5.0)
            .toml(&data_dir)
            .replace("budget_usd = 5", "budget_usd = -5"),
    )
    .expect("write");
    let refused = eventually(Duration::from_secs(10), || async {
        proxy.health().await["config"]["status"] == "error"
    })
    .await;
    assert!(refused);
    expect_error(send("k-team").await.expect("sent"), 402, "BUDGET_EXCEEDED").await;

    // Raising the limit applies live; the spend already recorded is kept.
    std::fs::write(&proxy.config_path, make(5.0).toml(&data_dir)).expect("write");
    let raised = eventually(Duration::from_secs(10), || async {
        send("k-team").await.expect("sent").status() == 200
    })
    .await;
    assert!(raised, "the raised budget never applied");
    let view = budgets_view(&proxy).await;
    let team = view["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|b| b["name"] == "team")
        .expect("team")
        .clone();
    assert_eq!(
        team["budget"]["used_usd"].as_f64(),
        Some(2.0 * ACTUAL_COST),
        "{team}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_usage_is_settled_from_counted_tokens() {
    let (fake, proxy) = setup("", "").await;
    let mut events = stream_events("metered", &["one two three four five"], false);
    events.retain(|e| !e.contains("\"usage\""));
    fake.push(Reply::Sse { events, gate: None });
    let session = create_session(&proxy, json!({"budget_usd": 1})).await;
    let id = session["session_id"].as_str().expect("id");
    let mut body = in_session(id, 100);
    body["stream"] = json!(true);
    let text = proxy.chat(body).await.text().await.expect("body");
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(&events[events.len() - 2]).expect("metadata chunk");
    let meta = &last["p402_metadata"];
    assert_eq!(meta["cost_estimated"], true, "{meta}");
    assert!(meta["output_tokens"].as_u64().is_some_and(|n| n >= 5));
    assert!(meta["cost_source"]
        .as_str()
        .unwrap_or("")
        .contains("counted by p402"));
    let request_id = meta["request_id"].as_str().expect("id");
    let entry = proxy
        .get_json(&format!("/api/v2/requests/{request_id}"))
        .await;
    assert_eq!(entry["estimated"], true);
    let read = proxy.get_json(&format!("/api/v2/sessions/{id}")).await;
    assert!(read["budget"]["used_usd"].as_f64().is_some_and(|u| u > 0.0));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_and_concurrency_limits_answer_429_with_retry_after() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: "[limits]\nrequests_per_minute = 2\n".into(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    assert_eq!(proxy.chat(ask("gpt-4o-mini", "1")).await.status(), 200);
    assert_eq!(proxy.chat(ask("gpt-4o-mini", "2")).await.status(), 200);
    let response = proxy.chat(ask("gpt-4o-mini", "3")).await;
    assert!(response.headers().get("retry-after").is_some());
    expect_error(response, 429, "rate_limited").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_settled_charge_and_holds_no_reservation() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("p402.toml");
    let config = Setup {
        extra: METERED.to_string(),
        ..Setup::default()
    }
    .with_provider("openai", &fake)
    .toml(&dir.path().join("data"));
    // A fixed port, so clients can reconnect after the restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    std::fs::write(
        &path,
        config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .expect("write");

    let mut answered: Vec<(String, f64)> = Vec::new();
    let mut session_id = String::new();
    for round in 0..3 {
        let process = ProxyProcess::start(&path);
        let base = format!("http://{}", process.addr);
        let client = reqwest::Client::new();
        if round == 0 {
            let created: Value = client
                .post(format!("{base}/api/v2/sessions"))
                .json(&json!({"budget_usd": 100}))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            session_id = created["session_id"].as_str().expect("id").to_string();
        }
        // One request first, so the server is warm (tokenizer loaded) and the
        // kill below lands among requests that really run.
        let warm: Value = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&in_session(&session_id, 100))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let meta = &warm["p402_metadata"];
        answered.push((
            meta["request_id"].as_str().expect("id").to_string(),
            meta["cost_usd"].as_f64().expect("cost"),
        ));
        // Requests with staggered upstream delays, so the kill lands while
        // some are in flight.
        for i in 0..40u64 {
            fake.push(Reply::Delay(
                Duration::from_millis(5 * (i % 20)),
                Box::new(Reply::Normal),
            ));
        }
        let mut tasks = Vec::new();
        let completed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..40 {
            let completed = completed.clone();
            let client = client.clone();
            let url = format!("{base}/v1/chat/completions");
            let mut body = in_session(&session_id, 100);
            body["stream"] = json!(i % 2 == 0);
            tasks.push(tokio::spawn(async move {
                let response = client.post(url).json(&body).send().await.ok()?;
                if response.status() != 200 {
                    return None;
                }
                let text = response.text().await.ok()?;
                // A response counts as received only when it arrived whole.
                let meta = if text.starts_with("data: ") {
                    if !text.ends_with("data: [DONE]\n\n") {
                        return None;
                    }
                    let events = sse_data(&text);
                    serde_json::from_str::<Value>(&events[events.len() - 2]).ok()?["p402_metadata"]
                        .clone()
                } else {
                    serde_json::from_str::<Value>(&text).ok()?["p402_metadata"].clone()
                };
                let done = (
                    meta["request_id"].as_str()?.to_string(),
                    meta["cost_usd"].as_f64()?,
                );
                completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(done)
            }));
        }
        // Kill once a few answers are out and the rest are in flight, however
        // fast or slow this machine is.
        let enough = 3 + 2 * round as usize;
        let loaded = eventually(Duration::from_secs(30), || {
            let completed = completed.clone();
            async move { completed.load(std::sync::atomic::Ordering::SeqCst) >= enough }
        })
        .await;
        assert!(loaded, "no answers within 30 s");
        let mut process = process;
        process.signal("KILL");
        let _ = process.child.wait();
        for task in tasks {
            if let Some(done) = task.await.expect("task") {
                answered.push(done);
            }
        }
    }

    // Restart on the same data dir and audit.
    let process = ProxyProcess::start(&path);
    let base = format!("http://{}", process.addr);
    let client = reqwest::Client::new();
    let mut seen = HashSet::new();
    for (request_id, cost) in &answered {
        let entry: Value = client
            .get(format!("{base}/api/v2/requests/{request_id}"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(
            entry["request_id"],
            request_id.as_str(),
            "answered request {request_id} missing from the ledger: {entry}"
        );
        assert!((entry["cost_nanos"].as_f64().unwrap_or(-1.0) / 1e9 - cost).abs() < 1e-12);
        seen.insert(request_id.clone());
    }
    let session: Value = client
        .get(format!("{base}/api/v2/sessions/{session_id}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        session["budget"]["reserved_usd"].as_f64(),
        Some(0.0),
        "no reservation survives a restart: {session}"
    );
    let requests = session["requests"].as_u64().expect("requests");
    assert!(
        requests >= seen.len() as u64,
        "ledger has {requests}, clients saw {}",
        seen.len()
    );
    assert!(
        answered.len() > 3,
        "requests completed between the kills: {}",
        answered.len()
    );
}

/// What goes upstream in a budgeted request is exactly the output limit
/// that was reserved: one field, whatever pair the client sent, under the
/// target's name, and an explicit one where the client set none.
#[tokio::test(flavor = "multi_thread")]
async fn the_reserved_output_limit_is_the_one_sent_upstream() {
    let openai = FakeProvider::start().await;
    let groq = FakeProvider::start().await;
    let anthropic = FakeProvider::start_anthropic().await;
    let models = r#"
[[models]]
id = "metered-groq"
provider = "groq"
input_per_mtok = 1.0
output_per_mtok = 1000.0
context = 100000
max_output = 1000

[[models]]
id = "metered-claude"
provider = "anthropic"
input_per_mtok = 1.0
output_per_mtok = 1000.0
context = 100000
max_output = 1000

[[models]]
id = "unknown-max"
provider = "groq"
input_per_mtok = 1.0
output_per_mtok = 1.0
context = 100000
"#;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n{models}"),
            ..Setup::default()
        }
        .with_provider("openai", &openai)
        .with_provider("groq", &groq)
        .with_provider("anthropic", &anthropic),
    )
    .await;
    let session = proxy.session(5.0).await;
    let limits = |body: &Value| {
        (
            body.get("max_tokens").and_then(Value::as_u64),
            body.get("max_completion_tokens").and_then(Value::as_u64),
        )
    };
    for (model, fake, expected) in [
        ("metered", &openai, (None, Some(20))),
        ("metered-groq", &groq, (Some(20), None)),
        ("metered-claude", &anthropic, (Some(20), None)),
    ] {
        let mut body = ask(model, "two limits");
        body["max_tokens"] = json!(500);
        body["max_completion_tokens"] = json!(20);
        body["p402"] = json!({"session_id": session});
        let response = proxy.chat(body).await;
        assert_eq!(response.status(), 200, "{model}");
        let sent = fake.received().last().expect("sent").body.clone();
        assert_eq!(limits(&sent), expected, "{model}: {sent}");
    }
    // No limit from the client: the model's maximum goes out, or for a
    // model whose maximum is unknown, the default the reservation used.
    let mut body = ask("metered-groq", "no limit");
    body["p402"] = json!({"session_id": session});
    assert_eq!(proxy.chat(body).await.status(), 200);
    let sent = groq.received().last().expect("sent").body.clone();
    assert_eq!(limits(&sent), (Some(1000), None), "{sent}");
    let mut body = ask("unknown-max", "no limit");
    body["p402"] = json!({"session_id": session});
    assert_eq!(proxy.chat(body).await.status(), 200);
    let sent = groq.received().last().expect("sent").body.clone();
    assert!(
        limits(&sent).0.is_some_and(|n| n > 0),
        "an explicit limit for an unknown maximum: {sent}"
    );
    proxy.stop().await;
}

/// With local keys a session belongs to the key that created it, and its
/// requests still count against that key's budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_belongs_to_its_key_and_narrows_the_keys_budget() {
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            server: "api_keys = [\"key-a\", \"key-b\"]\n".to_string(),
            extra: format!(
                "{METERED}\n[budgets.team-a]\nbudget_usd = 0.004\nperiod = \"day\"\nkeys = [\"key-a\"]\n\n[limits]\nmax_active_sessions_per_key = 2\n"
            ),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let call = |key: &'static str, method: reqwest::Method, path: String| {
        proxy
            .client
            .request(method, proxy.url(&path))
            .bearer_auth(key)
    };
    let created: Value = call("key-a", reqwest::Method::POST, "/api/v2/sessions".into())
        .json(&json!({"budget_usd": 100}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = created["session_id"].as_str().expect("id").to_string();
    let path = format!("/api/v2/sessions/{id}");

    // Another key: not found, whatever it tries, and not in its list.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = call("key-b", method, path.clone())
            .send()
            .await
            .expect("sent");
        expect_error(response, 404, "session_not_found").await;
    }
    let response = call("key-b", reqwest::Method::PATCH, path.clone())
        .json(&json!({"add_budget_usd": 5}))
        .send()
        .await
        .expect("sent");
    expect_error(response, 404, "session_not_found").await;
    let mut body = in_session(&id, 10);
    body["max_tokens"] = json!(1);
    let response = call(
        "key-b",
        reqwest::Method::POST,
        "/v1/chat/completions".into(),
    )
    .json(&body)
    .send()
    .await
    .expect("sent");
    expect_error(response, 404, "session_not_found").await;
    let listed: Value = call("key-b", reqwest::Method::GET, "/api/v2/sessions".into())
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]), "{listed}");
    let listed: Value = call("key-a", reqwest::Method::GET, "/api/v2/sessions".into())
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"][0]["session_id"], id.as_str());
    assert!(fake.received().is_empty());

    // Its creator uses it, and the $100 session does not lift key-a's
    // $0.004 budget: the first request fits (1 output token reserved), the
    // second no longer does.
    let mut body = in_session(&id, 1);
    body["max_tokens"] = json!(1);
    let ok = call(
        "key-a",
        reqwest::Method::POST,
        "/v1/chat/completions".into(),
    )
    .json(&body)
    .send()
    .await
    .expect("sent");
    assert_eq!(ok.status(), 200);
    let refused = call(
        "key-a",
        reqwest::Method::POST,
        "/v1/chat/completions".into(),
    )
    .json(&body)
    .send()
    .await
    .expect("sent");
    let error = expect_error(refused, 402, "BUDGET_EXCEEDED").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("team-a")),
        "{error}"
    );

    // At most two active sessions per key.
    let create = |key: &'static str| {
        call(key, reqwest::Method::POST, "/api/v2/sessions".into())
            .json(&json!({"budget_usd": 1}))
            .send()
    };
    assert_eq!(create("key-a").await.expect("sent").status(), 201);
    expect_error(
        create("key-a").await.expect("sent"),
        429,
        "too_many_sessions",
    )
    .await;
    assert_eq!(create("key-b").await.expect("sent").status(), 201);
    proxy.stop().await;
}
