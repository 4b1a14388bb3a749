//! The ledger at scale (issue 36): fills a ledger with N settled requests,
//! starts the real server on it, and times every endpoint that reports
//! from it, and the dashboard's whole refresh, over loopback HTTP; with the
//! data dir's size, the process's memory, the one-time build of the hourly
//! sums from an existing ledger, and the old full scan for comparison.
//!
//! Run: `cargo bench --bench ledger_scale` (prints Markdown for
//! BENCHMARKS.md). `P402_LEDGER_SIZES=10000,20000` picks the sizes
//! (default 10k, 20k, 100k, 200k and 1M); `P402_LEDGER_RUNS` the timed
//! requests per endpoint (default 30).
//!
//! The traffic is an agent user's: entries spread evenly over the last 60
//! days, six models at four providers, two agent runs an hour, one p402
//! session a day, one budget, one cache hit in ten.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use p402::ops::report::{self, GroupBy};
use p402::store::{LedgerEntry, Store};

const SPAN_DAYS: i64 = 60;

fn id_at(time: DateTime<Utc>) -> String {
    let secs = u64::try_from(time.timestamp()).unwrap_or(0);
    let stamp = uuid::Timestamp::from_unix(uuid::NoContext, secs, time.timestamp_subsec_nanos());
    format!("req_{}", uuid::Uuid::new_v7(stamp).simple())
}

fn entry(n: u64, of: u64, now: DateTime<Utc>) -> LedgerEntry {
    let span_ms = SPAN_DAYS * 86_400_000;
    let offset = i64::try_from(n).unwrap_or(0) * span_ms / i64::try_from(of).unwrap_or(1);
    let began = now - chrono::Duration::milliseconds(span_ms - offset);
    let models = [
        ("openai", "gpt-4o-mini", "chat"),
        ("openai", "gpt-4o", "chat"),
        ("anthropic", "claude-sonnet-5-5", "messages"),
        ("anthropic", "claude-haiku-5", "messages"),
        ("groq", "llama-3.3-70b", "chat"),
        ("google", "gemini-4-neon", "responses"),
    ];
    let (provider, model, door) = models[(n % 6) as usize];
    let cached = n % 10 == 0;
    let hour = began.timestamp() / 3600;
    let input = 800 + n % 3000;
    let output = 50 + n % 700;
    let cost = if cached {
        0
    } else {
        i64::try_from(input * 150 + output * 600).unwrap_or(0)
    };
    LedgerEntry {
        time: began + chrono::Duration::milliseconds(i64::try_from(n % 9000).unwrap_or(0)),
        request_id: id_at(began),
        session: Some(format!("ses_day{}", hour / 24)),
        budgets: vec!["laptop".to_string()],
        provider: if cached { "cache" } else { provider }.to_string(),
        model: Some(model.to_string()),
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: 0,
        cost_nanos: cost,
        direct_nanos: cost * 3 + 1_000,
        cached,
        estimated: n % 50 == 0,
        client_session: Some(format!(
            "run{}",
            hour * 2 + i64::try_from(n % 2).unwrap_or(0)
        )),
        door: Some(door.to_string()),
        forwarded: None,
    }
}

async fn fill(dir: &Path, entries: u64) -> Duration {
    let store = Store::open(dir).expect("store");
    let now = Utc::now();
    let accounts = vec!["budget:laptop:total".to_string()];
    let started = Instant::now();
    for n in 0..entries {
        store
            .record_queued(&entry(n, entries, now), &accounts)
            .expect("queued");
        if n % 20_000 == 19_999 {
            store.caught_up().await.expect("caught up");
        }
    }
    store.flush().await.expect("flush");
    started.elapsed()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .map(|item| match item.metadata() {
                    Ok(meta) if meta.is_dir() => dir_bytes(&item.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// VmRSS and VmHWM of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Timing {
    p50: f64,
    p95: f64,
}

async fn time<F, Fut>(runs: usize, mut call: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    call().await; // warm
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Timing {
        p50: percentile(&ms, 0.5),
        p95: percentile(&ms, 0.95),
    }
}

async fn get(client: &reqwest::Client, url: &str) {
    let response = client.get(url).send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let _ = response.bytes().await.expect("body");
}

/// The dashboard's refresh as its script makes it: nine reads at once,
/// then the chart.
async fn refresh(client: &reqwest::Client, base: &str) {
    // As the page's periodStarts(): local dates of today, this week's
    // Monday and the first of the month.
    use chrono::Datelike;
    let today = chrono::Local::now().date_naive();
    let week = today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let month = today.with_day(1).unwrap_or(today);
    let paths = [
        format!("/api/v2/report?since={today}"),
        format!("/api/v2/report?since={week}"),
        format!("/api/v2/report?since={month}"),
        format!("/api/v2/report?by=model&since={month}"),
        "/api/v2/cache/stats".to_string(),
        "/api/v2/budgets".to_string(),
        "/api/v2/sessions".to_string(),
        "/api/v2/providers".to_string(),
        "/api/v2/requests?limit=20".to_string(),
    ];
    let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
    futures_util::future::join_all(urls.iter().map(|url| get(client, url))).await;
    get(
        client,
        &format!("{base}/api/v2/dashboard/spend.svg?since=30d&step=day"),
    )
    .await;
}

struct Size {
    entries: u64,
    fill: Duration,
    build: Duration,
    old_scan_ms: f64,
    rows: Vec<(&'static str, Timing)>,
    data_mib: f64,
    rss: (f64, f64),
}

async fn measure(entries: u64, runs: usize) -> Size {
    let temp = tempfile::tempdir().expect("dir");
    let data = temp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let fill_time = fill(&data, entries).await;

    // The old report, for comparison: every entry of 30 days, read and
    // summed, as p402 did before the hourly sums.
    let (old_scan_ms, build) = {
        let store = Store::open(&data).expect("store");
        let since = Utc::now() - chrono::Duration::days(30);
        let started = Instant::now();
        // From 15 minutes earlier, as the sums do: an entry is keyed by
        // when its request began, and may have settled after `since`.
        let scanned: Vec<(String, LedgerEntry)> = store
            .entries_since(since - chrono::Duration::minutes(15))
            .map(|e| ("local".to_string(), e.expect("entry")))
            .collect();
        let old = report::build_team(&scanned, since, GroupBy::Provider);
        let old_ms = started.elapsed().as_secs_f64() * 1000.0;
        let new = report::build(&store, since, GroupBy::Provider).expect("report");
        assert_eq!(
            old.total.requests, new.total.requests,
            "the sums agree with the scan"
        );
        // The one-time build, as a ledger from before the sums gets it.
        store
            .write_blocking(
                p402::store::Write {
                    ops: vec![
                        p402::store::Op::Clear(p402::store::Table::Rollup),
                        p402::store::Op::Clear(p402::store::Table::Meta),
                    ],
                    only_if_present: None,
                },
                true,
            )
            .expect("clear");
        drop(store);
        let started = Instant::now();
        let store = Store::open(&data).expect("migrated");
        let build = started.elapsed();
        let again = report::build(&store, since, GroupBy::Provider).expect("report");
        assert_eq!(again.total.requests, new.total.requests);
        (old_ms, build)
    };

    let config = temp.path().join("p402.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[cache]\nenabled = false\n[ledger]\nkeep_entries_days = 0\n",
            data.display().to_string()
        ),
    )
    .expect("config");
    let running = p402::server::serve::start(Some(&config))
        .await
        .expect("p402 starts");
    let base = format!("http://{}", running.local_addr());
    let client = reqwest::Client::new();
    let endpoints: [(&'static str, &str); 8] = [
        (
            "`GET /api/v2/report` (7 days by provider)",
            "/api/v2/report",
        ),
        (
            "`GET /api/v2/report?since=30d&by=model`",
            "/api/v2/report?since=30d&by=model",
        ),
        (
            "`GET /api/v2/report?since=30d&by=day`",
            "/api/v2/report?since=30d&by=day",
        ),
        (
            "`GET /api/v2/report?since=60d&by=client_session`",
            "/api/v2/report?since=60d&by=client_session",
        ),
        (
            "`GET /api/v2/dashboard/spend.svg` (30 days)",
            "/api/v2/dashboard/spend.svg?since=30d&step=day",
        ),
        (
            "`GET /api/v2/dashboard/spend.svg` (24 h)",
            "/api/v2/dashboard/spend.svg?since=24h&step=hour",
        ),
        ("`GET /api/v2/budgets`", "/api/v2/budgets"),
        (
            "`GET /api/v2/requests?limit=20`",
            "/api/v2/requests?limit=20",
        ),
    ];
    let mut rows = Vec::new();
    for (name, path) in endpoints {
        let url = format!("{base}{path}");
        rows.push((name, time(runs, || get(&client, &url)).await));
    }
    rows.push((
        "the dashboard's refresh (9 reads at once, then the chart)",
        time(runs, || refresh(&client, &base)).await,
    ));
    let rss = memory();
    running.shutdown().await;
    Size {
        entries,
        fill: fill_time,
        build,
        old_scan_ms,
        rows,
        data_mib: dir_bytes(&data) as f64 / (1024.0 * 1024.0),
        rss,
    }
}

fn label(entries: u64) -> String {
    if entries >= 1_000_000 && entries % 1_000_000 == 0 {
        format!("{}M", entries / 1_000_000)
    } else if entries >= 1000 && entries % 1000 == 0 {
        format!("{}k", entries / 1000)
    } else {
        entries.to_string()
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("P402_LEDGER_SIZES")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![10_000, 20_000, 100_000, 200_000, 1_000_000]);
    let runs: usize = std::env::var("P402_LEDGER_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    for entries in sizes {
        eprintln!("ledger_scale: {entries} entries ...");
        results.push(runtime.block_on(measure(entries, runs)));
    }
    let header: Vec<String> = results.iter().map(|r| label(r.entries)).collect();
    println!("| p50 / p95 ms | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(results.len()));
    let names: Vec<&str> = results
        .first()
        .map(|r| r.rows.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<String> = results
            .iter()
            .map(|r| format!("{:.2} / {:.2}", r.rows[i].1.p50, r.rows[i].1.p95))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let line = |name: &str, cell: &dyn Fn(&Size) -> String| {
        let cells: Vec<String> = results.iter().map(cell).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    line(
        "old full scan, 30 days by provider (for comparison), ms",
        &|r| format!("{:.0}", r.old_scan_ms),
    );
    line("building the sums once from an existing ledger, s", &|r| {
        format!("{:.2}", r.build.as_secs_f64())
    });
    line("filling the ledger (through the writer), s", &|r| {
        format!("{:.1}", r.fill.as_secs_f64())
    });
    line("data dir, MiB", &|r| format!("{:.1}", r.data_mib));
    line("bench process RSS after the run / peak, MiB", &|r| {
        format!("{:.0} / {:.0}", r.rss.0, r.rss.1)
    });
}
