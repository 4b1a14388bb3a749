//! The dashboard in a real browser: real traffic through p402, the page
//! loaded in headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs), and the numbers it renders checked against
//! `/api/v2/report`. A screenshot is left in `target/dashboard.png`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let found = Command::new("which").arg(name).output().ok()?;
            found
                .status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
        })
}

/// The page after its script ran, as the browser rendered it.
fn rendered(browser: &PathBuf, url: &str, screenshot: Option<&PathBuf>) -> String {
    let profile = tempfile::tempdir().expect("profile");
    let mut command = Command::new(browser);
    command.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=6000",
        "--window-size=1280,1700",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command.arg(url).output().expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `data-figure="name"`.
fn figure(dom: &str, name: &str) -> String {
    let marker = format!("data-figure=\"{name}\">");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no figure {name} in\n{dom}"))
        + marker.len();
    dom[start..]
        .split('<')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// How the page writes an amount (`dollars()` in page.html).
fn dollars(value: &Value) -> String {
    let v = value.as_f64().expect("a number");
    if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.6}")
    }
}

fn browser_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed: .ci/run installs it"
        );
        eprintln!("skipped: no chromium");
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_what_the_report_says() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            extra: format!("{METERED}\n[budgets.monthly]\nbudget_usd = 1.0\nperiod = \"month\"\n"),
            cache: semantic_cache("").await,
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    let session = proxy.session(0.5).await;
    for i in 0..4 {
        let mut body = ask("metered", &format!("Question number {i} about Rust?"));
        if i % 2 == 0 {
            body["p402"] = json!({"session_id": session});
        }
        assert_eq!(proxy.chat(body).await.status(), 200);
    }
    // The same question again: a cache hit, which saves.
    let again = proxy
        .chat(ask("metered", "Question number 1 about Rust?"))
        .await;
    assert_eq!(again.headers()["x-p402-cached"], "true");
    // A Messages request too, for the door column.
    let messages = proxy
        .client
        .post(proxy.url("/v1/messages"))
        .json(&json!({"model": "metered", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello from messages"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(messages.status(), 200);

    let dom = tokio::task::spawn_blocking({
        let browser = browser.clone();
        let url = proxy.url("/dashboard");
        move || rendered(&browser, &url, None)
    })
    .await
    .expect("browser");
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded its data:\n{dom}"
    );

    let month_start = chrono::Local::now().format("%Y-%m-01").to_string();
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let month = proxy
        .get_json(&format!("/api/v2/report?since={month_start}"))
        .await;
    let day = proxy
        .get_json(&format!("/api/v2/report?since={today}"))
        .await;
    let total = &month["total"];
    assert!(
        total["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{month}"
    );
    assert_eq!(figure(&dom, "spend-month"), dollars(&total["cost_usd"]));
    assert_eq!(
        figure(&dom, "spend-today"),
        dollars(&day["total"]["cost_usd"])
    );
    assert_eq!(
        figure(&dom, "saved-cache"),
        dollars(&total["cache_savings_usd"])
    );
    let routing = json!(
        total["savings_usd"].as_f64().unwrap_or(0.0)
            - total["cache_savings_usd"].as_f64().unwrap_or(0.0)
    );
    assert_eq!(figure(&dom, "saved-routing"), dollars(&routing));
    assert_eq!(figure(&dom, "cache-hits-month"), "1");
    // The chart, the tables: by model, budgets and sessions, providers,
    // and the latest requests with their doors.
    assert!(dom.contains("<svg"), "no chart");
    assert!(dom.contains("openai: $"), "no bar for openai");
    assert!(dom.contains("<td>metered</td>"), "no model row");
    assert!(dom.contains("monthly (month)"), "no budget row");
    assert!(
        dom.contains(&format!("session {session}")),
        "no session row"
    );
    assert!(dom.contains("<td>messages</td>") && dom.contains("<td>chat</td>"));
    // Never a prompt.
    assert!(!dom.contains("about Rust"), "prompt text on the page");

    // A screenshot for a person to look at.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let url = proxy.url("/dashboard");
        let shot = shot.clone();
        move || rendered(&browser, &url, Some(&shot))
    })
    .await
    .expect("browser");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_api_keys_the_page_asks_for_a_key_and_uses_it() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let fake = FakeProvider::start().await;
    let proxy = TestProxy::start(
        Setup {
            server: "api_keys = [\"local-key-1\"]".to_string(),
            extra: METERED.to_string(),
            ..Setup::default()
        }
        .with_provider("openai", &fake),
    )
    .await;
    // The page is served without a key, offline by policy; the data is not.
    let page = proxy.client.get(proxy.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("policy")
        .to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    // Only the page's own script runs, named by its hash (and it does run:
    // the page loads below).
    assert!(
        policy.contains("script-src 'sha256-") && !policy.contains("script-src 'unsafe-inline'")
    );
    let html = page.text().await.expect("html");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let report = proxy
        .client
        .get(proxy.url("/api/v2/report"))
        .send()
        .await
        .expect("report");
    assert_eq!(report.status(), 401);

    let dom = tokio::task::spawn_blocking({
        let browser = browser.clone();
        let url = proxy.url("/dashboard");
        move || rendered(&browser, &url, None)
    })
    .await
    .expect("browser");
    assert!(
        dom.contains("<form id=\"key-form\" class=\"card\" data-test=\"key-form\">"),
        "the key form is not shown:\n{dom}"
    );
    assert!(!dom.contains("data-loaded=\"true\""));

    let dom = tokio::task::spawn_blocking({
        let url = format!("{}#key=local-key-1", proxy.url("/dashboard"));
        move || rendered(&browser, &url, None)
    })
    .await
    .expect("browser");
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    assert_eq!(figure(&dom, "spend-month"), "$0.000000");
    tokio::time::sleep(Duration::from_millis(10)).await;
    proxy.stop().await;
}
