//! Load: what p402 adds to a request, measured in one run on one loopback
//! upstream next to the upstream alone (the floor), a bare hyper forwarder
//! (the physical reference for a Rust proxy) and LiteLLM's proxy.
//!
//! Run: `cargo bench --bench load` (about 9 minutes; LiteLLM is installed
//! into `target/litellm-venv` on first use). It prints the Markdown of the
//! "Load" section of BENCHMARKS.md, writes it to `target/load-bench/report.md`
//! and draws `benches/load/latency.svg`.
//! `cargo bench --bench load -- --quick` is a short smoke run (numbers not
//! for publishing); `--no-litellm` leaves LiteLLM out; `--only KEY,KEY`
//! measures those systems and the direct floor (keys: forwarder,
//! p402-passthrough, p402-cost, p402-budget, p402-cache, litellm);
//! `--doors` measures each door (chat, Messages, Responses) instead
//! (`doors.rs`); `--team` what a shared (Redis) budget adds over a local
//! one (`team.rs`); `--p402-data DIR` puts p402's data dirs there (e.g. on tmpfs, to see
//! what the per-request fsync costs). `benches/load/profile.sh` counts
//! p402's instructions per request under callgrind.
//!
//! Never part of `cargo test` or `.ci/run`: it measures, it does not check.

mod doors;
mod forwarder;
mod generator;
mod plot;
mod procs;
mod report;
mod systems;
mod team;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use generator::{Call, Generator, Run};
use procs::Server;
use systems::P402Setup;

/// How long and how hard each part of the run is.
struct Plan {
    /// Open-loop rates, requests per second, lowest first.
    rates: Vec<f64>,
    warmup: Duration,
    /// The measured window at 100 RPS and below: 1,000 samples at 100/s.
    window_low: Duration,
    window: Duration,
    concurrencies: Vec<usize>,
    closed_warmup: Duration,
    closed_window: Duration,
    stream_rate: f64,
    stream_window: Duration,
    semantic_rate: f64,
    semantic_window: Duration,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            // 25/s: a rate LiteLLM can hold on this machine.
            rates: vec![25.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0],
            warmup: Duration::from_secs(1),
            window_low: Duration::from_secs(10),
            window: Duration::from_secs(5),
            concurrencies: vec![1, 16, 64],
            closed_warmup: Duration::from_millis(500),
            closed_window: Duration::from_secs(3),
            stream_rate: 20.0,
            stream_window: Duration::from_secs(10),
            semantic_rate: 20.0,
            semantic_window: Duration::from_secs(10),
        }
    }

    fn quick() -> Plan {
        Plan {
            rates: vec![25.0, 1000.0],
            warmup: Duration::from_millis(300),
            window_low: Duration::from_secs(2),
            window: Duration::from_secs(1),
            concurrencies: vec![1, 16],
            closed_warmup: Duration::from_millis(200),
            closed_window: Duration::from_secs(1),
            stream_rate: 20.0,
            stream_window: Duration::from_secs(2),
            semantic_rate: 20.0,
            semantic_window: Duration::from_secs(2),
        }
    }

    fn window(&self, rate: f64) -> Duration {
        if rate <= 100.0 {
            self.window_low
        } else {
            self.window
        }
    }
}

/// Everything measured on one system.
pub struct Measured {
    /// Short name used in the tables and the plot legend.
    pub name: String,
    pub key: &'static str,
    /// `VmRSS` after start and warm-up, KiB.
    pub idle_rss: u64,
    /// `VmHWM` after all its runs, KiB.
    pub peak_rss: u64,
    /// Open loop, per offered rate.
    pub rates: Vec<(f64, Run)>,
    /// Closed loop, per concurrency.
    pub closed: Vec<(usize, Run)>,
    pub stream: Option<Run>,
    pub semantic: Option<Run>,
    pub notes: Vec<String>,
}

impl Measured {
    /// The run at `rate`, unless it saturated or stopped answering.
    pub fn at(&self, rate: f64) -> Option<&Run> {
        self.rates
            .iter()
            .find(|(r, run)| *r == rate && !run.saturated && !run.stalled)
            .map(|(_, run)| run)
    }

    /// What happened at `rate` when there is no usable run.
    pub fn failure_at(&self, rate: f64) -> &'static str {
        match self.rates.iter().find(|(r, _)| *r == rate) {
            Some((_, run)) if run.stalled => "stopped answering",
            Some(_) => "saturated",
            // The sweep stops at the first rate a system cannot hold.
            None if self
                .rates
                .iter()
                .any(|(r, run)| *r < rate && (run.saturated || run.stalled)) =>
            {
                "saturated below"
            }
            None => "not measured",
        }
    }

    /// The closed-loop run with the most answers a second.
    pub fn best_closed(&self) -> Option<&Run> {
        self.closed
            .iter()
            .map(|(_, run)| run)
            .filter(|run| !run.stalled)
            .max_by(|a, b| a.throughput().total_cmp(&b.throughput()))
    }

    pub fn max_throughput(&self) -> f64 {
        self.closed
            .iter()
            .filter(|(_, run)| !run.stalled)
            .map(|(_, run)| run.throughput())
            .fold(0.0, f64::max)
    }
}

/// What the run was and where.
pub struct Context {
    pub date: String,
    pub cpus: String,
    pub model: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub p402: String,
    pub litellm: Option<String>,
    pub rustc: String,
    pub quick: bool,
    pub stream_rate: f64,
    pub command: String,
    pub plan_text: String,
}

const SYSTEM_PROMPT: &str = "You are a concise assistant for a software team. Answer in plain English in at most three sentences, and name the relevant standard when there is one.";
const QUESTION: &str =
    "What does HTTP status 402 mean, and when should an API return it instead of 403?";
const PARAPHRASE: &str =
    "What is the meaning of HTTP status 402, and when should an API send it instead of 403?";

fn chat_body(question: &str, stream: bool) -> String {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question}
        ],
        "temperature": 0.2
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        match args.get(i + 1).map(String::as_str) {
            Some("upstream") => upstream::run(),
            Some("forwarder") => forwarder::run(args.get(i + 2).expect("upstream address")),
            other => panic!("unknown role {other:?}"),
        }
        return;
    }
    if args.iter().any(|a| a == "--team") {
        let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/load-bench");
        std::fs::create_dir_all(&work).expect("target/load-bench");
        team::run(&work);
        return;
    }
    if args.iter().any(|a| a == "--doors") {
        let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/load-bench");
        std::fs::create_dir_all(&work).expect("target/load-bench");
        doors::run(&work);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only p402-passthrough,litellm`: those systems (and the floor) only.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let wanted = |key: &str| {
        only.as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    };
    let with_litellm = !args.iter().any(|a| a == "--no-litellm");
    let plan = if quick { Plan::quick() } else { Plan::full() };

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("target/load-bench");
    std::fs::create_dir_all(&work).expect("target/load-bench");
    // `--p402-data DIR`: where p402's data dirs go (default: under
    // target/load-bench, on the disk, as a user's would be).
    let p402_data = args
        .iter()
        .position(|a| a == "--p402-data")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| work.clone(), PathBuf::from);
    let litellm = if with_litellm && wanted("litellm") {
        match systems::ensure_litellm(&root.join("target/litellm-venv")) {
            Ok(path) => Some(path),
            Err(e) => {
                eprintln!("load: LiteLLM left out: {e}");
                None
            }
        }
    } else {
        None
    };
    let load_before = procs::load_average();
    let generator = Generator::new();
    let (upstream_server, upstream) = systems::start_upstream();
    let mut all = Vec::new();

    let direct = Target {
        name: "upstream direct",
        key: "direct",
        stream: true,
        check: &is_completion,
    };
    let instance = Instance::Fixed(&upstream_server, upstream);
    all.push(measure(&generator, &plan, direct, instance).0);
    if wanted("forwarder") {
        let start = || systems::start_forwarder(upstream);
        let target = Target {
            name: "bare hyper forwarder",
            key: "forwarder",
            stream: true,
            check: &is_completion,
        };
        all.push(measure(&generator, &plan, target, Instance::started(&start)).0);
    }
    let embedder = root.join("target/embedder");
    for (key, name, setup, stream) in [
        (
            "p402-passthrough",
            "p402 passthrough",
            P402Setup {
                routing_mode: "passthrough",
                budget: false,
                cache: false,
                anthropic: false,
            },
            true,
        ),
        (
            "p402-cost",
            "p402 cost routing",
            P402Setup {
                routing_mode: "cost",
                budget: false,
                cache: false,
                anthropic: false,
            },
            false,
        ),
        (
            "p402-budget",
            "p402 cost routing + budget",
            P402Setup {
                routing_mode: "cost",
                budget: true,
                cache: false,
                anthropic: false,
            },
            true,
        ),
    ] {
        if !wanted(key) {
            continue;
        }
        let start = || systems::start_p402(&p402_data, key, upstream, &setup, &embedder);
        let target = Target {
            name,
            key,
            stream,
            check: &has_metadata,
        };
        all.push(measure(&generator, &plan, target, Instance::started(&start)).0);
    }
    if wanted("p402-cache") {
        all.push(cache_hits(
            &generator, &plan, &p402_data, upstream, &embedder,
        ));
    }
    if let Some(litellm) = &litellm {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let probe = chat_body(QUESTION, false);
        let start =
            || systems::start_litellm(litellm, &work, upstream, workers, &generator, &probe);
        let target = Target {
            name: "LiteLLM",
            key: "litellm",
            stream: true,
            check: &is_completion,
        };
        let (mut measured, _) = measure(&generator, &plan, target, Instance::started(&start));
        measured.notes.push(format!("{workers} uvicorn workers"));
        all.push(measured);
    }
    drop(upstream_server);

    let context = Context {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpus: command_output("nproc", &[]),
        model: command_output("lscpu", &[])
            .lines()
            .find_map(|l| l.strip_prefix("Model name:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default(),
        kernel: command_output("uname", &["-r"]),
        load_before,
        load_after: procs::load_average(),
        p402: format!(
            "p402 {} ({})",
            env!("CARGO_PKG_VERSION"),
            command_output(
                "git",
                &[
                    "-C",
                    &root.display().to_string(),
                    "describe",
                    "--always",
                    "--dirty"
                ]
            )
        ),
        litellm: litellm.as_ref().map(|path| {
            let python = path.with_file_name("python");
            format!(
                "LiteLLM {} ({}, `litellm[proxy]=={}`)",
                systems::LITELLM_VERSION,
                command_output(&python.display().to_string(), &["--version"]),
                systems::LITELLM_VERSION
            )
        }),
        rustc: command_output("rustc", &["--version"]),
        quick,
        stream_rate: plan.stream_rate,
        command: if quick {
            "cargo bench --bench load -- --quick".to_string()
        } else {
            "cargo bench --bench load".to_string()
        },
        plan_text: plan_text(&plan),
    };
    let markdown = report::markdown(&context, &all);
    println!("{markdown}");
    std::fs::write(work.join("report.md"), &markdown).expect("write report.md");
    let svg = if quick {
        work.join("latency.svg")
    } else {
        root.join("benches/load/latency.svg")
    };
    plot::draw(&svg, &all, &context);
    eprintln!(
        "load: wrote {} and {}",
        work.join("report.md").display(),
        svg.display()
    );
}

fn plan_text(plan: &Plan) -> String {
    let rates: Vec<String> = plan.rates.iter().map(|r| format!("{r}")).collect();
    let concurrencies: Vec<String> = plan.concurrencies.iter().map(|c| c.to_string()).collect();
    format!(
        "open loop at {} requests/s ({} s measured up to 100/s, {} s above, after {} s of warm-up each); \
         closed loop at {} connections ({} s each after {} s); streams at {}/s for {} s",
        rates.join(", "),
        plan.window_low.as_secs_f64(),
        plan.window.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        concurrencies.join(", "),
        plan.closed_window.as_secs_f64(),
        plan.closed_warmup.as_secs_f64(),
        plan.stream_rate,
        plan.stream_window.as_secs_f64(),
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_else(|| "?".to_string())
}

/// One system to measure.
struct Target<'a> {
    name: &'static str,
    key: &'static str,
    stream: bool,
    /// What a right answer looks like.
    check: &'a dyn Fn(&Value) -> Result<(), String>,
}

/// Where a system under test runs.
enum Instance<'a> {
    /// The direct floor: the upstream itself (its CPU and memory are the
    /// floor's), never restarted.
    Fixed(&'a Server, SocketAddr),
    /// A server this bench starts, and starts afresh if it stops answering.
    Started {
        start: &'a dyn Fn() -> (Server, SocketAddr),
        /// Empty only while being replaced.
        current: Option<(Server, SocketAddr)>,
    },
}

impl<'a> Instance<'a> {
    fn started(start: &'a dyn Fn() -> (Server, SocketAddr)) -> Instance<'a> {
        Instance::Started {
            start,
            current: Some(start()),
        }
    }

    fn server(&self) -> &Server {
        match self {
            Instance::Fixed(server, _) => server,
            Instance::Started { current, .. } => &current.as_ref().expect("running").0,
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Instance::Fixed(_, addr) => *addr,
            Instance::Started { current, .. } => current.as_ref().expect("running").1,
        }
    }

    fn restart(&mut self) {
        if let Instance::Started { start, current } = self {
            // The old one is killed before the new one starts.
            drop(current.take());
            *current = Some(start());
        }
    }
}

fn is_completion(body: &Value) -> Result<(), String> {
    if body["object"] == "chat.completion" && body["choices"][0]["message"]["content"].is_string() {
        Ok(())
    } else {
        Err(format!("not a chat completion: {body}"))
    }
}

fn has_metadata(body: &Value) -> Result<(), String> {
    is_completion(body)?;
    if body["p402_metadata"]["provider"] == "openai" {
        Ok(())
    } else {
        Err(format!(
            "not answered through p402's openai provider: {body}"
        ))
    }
}

fn is_cache_hit(body: &Value) -> Result<(), String> {
    is_completion(body)?;
    if body["p402_metadata"]["cached"] == true {
        Ok(())
    } else {
        Err(format!("not a cache hit: {}", body["p402_metadata"]))
    }
}

fn chat_uri(addr: SocketAddr) -> hyper::Uri {
    format!("http://{addr}/v1/chat/completions")
        .parse()
        .expect("uri")
}

/// Sends `count` requests one by one; each must be answered 200 and pass
/// `check`.
fn warm_up(generator: &Generator, target: &Target, addr: SocketAddr, body: &str, count: usize) {
    let uri = chat_uri(addr);
    for _ in 0..count {
        let (status, text) = generator
            .fetch("POST", &uri, body)
            .unwrap_or_else(|e| panic!("{}: {e}", target.name));
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 {
            panic!("{}: HTTP {status}: {text}", target.name);
        }
        if let Err(e) = (target.check)(&value) {
            panic!("{}: {e}", target.name);
        }
    }
}

/// Everything about one system, in order: warm-up, idle memory, the open
/// loop at each rate (stopping at the first saturated one), the closed loop
/// at each concurrency, streams. A server that stops answering is noted,
/// killed and started afresh for the next run.
fn measure<'a>(
    generator: &Generator,
    plan: &Plan,
    target: Target,
    mut instance: Instance<'a>,
) -> (Measured, Instance<'a>) {
    eprintln!("load: {}", target.name);
    let body = chat_body(QUESTION, false);
    warm_up(generator, &target, instance.addr(), &body, 200);
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = instance.server().memory_kib().0;
    let mut peak_rss = 0;
    let mut stalls = Vec::new();
    let mut runs = 0;
    let mut after = |run: &Run, what: &str, instance: &mut Instance| {
        runs += 1;
        progress(target.name, what, run);
        if run.stalled {
            eprintln!(
                "load:   it stopped answering; its last output:\n{}",
                instance.server().tail()
            );
            peak_rss = peak_rss.max(instance.server().memory_kib().1);
            stalls.push(what.to_string());
            instance.restart();
            warm_up(generator, &target, instance.addr(), &body, 20);
        }
    };
    let call = |addr, stream| Call {
        uri: chat_uri(addr),
        body: Bytes::from(chat_body(QUESTION, stream)),
        stream,
    };
    let mut rates = Vec::new();
    for &rate in &plan.rates {
        let run = generator.open_loop(
            &call(instance.addr(), false),
            rate,
            plan.warmup,
            plan.window(rate),
            &|| instance.server().cpu_seconds(),
        );
        after(&run, &format!("{rate}/s"), &mut instance);
        let saturated = run.saturated && !run.stalled;
        rates.push((rate, run));
        if saturated {
            break;
        }
    }
    let mut closed = Vec::new();
    for &concurrency in &plan.concurrencies {
        let run = generator.closed_loop(
            &call(instance.addr(), false),
            concurrency,
            plan.closed_warmup,
            plan.closed_window,
            &|| instance.server().cpu_seconds(),
        );
        after(&run, &format!("{concurrency} connections"), &mut instance);
        closed.push((concurrency, run));
    }
    let stream = target.stream.then(|| {
        let run = generator.open_loop(
            &call(instance.addr(), true),
            plan.stream_rate,
            plan.warmup,
            plan.stream_window,
            &|| instance.server().cpu_seconds(),
        );
        after(&run, "streams", &mut instance);
        run
    });
    let peak_rss = peak_rss.max(instance.server().memory_kib().1);
    let mut notes = Vec::new();
    if !stalls.is_empty() {
        notes.push(format!(
            "stopped answering in {} of {runs} runs ({}), restarted after each",
            stalls.len(),
            stalls.join(", ")
        ));
    }
    let measured = Measured {
        name: target.name.to_string(),
        key: target.key,
        idle_rss,
        peak_rss,
        rates,
        closed,
        stream,
        semantic: None,
        notes,
    };
    (measured, instance)
}

fn progress(name: &str, what: &str, run: &Run) {
    eprintln!(
        "load:   {name} {what}: {:.0}/s, p50 {} p99 {}, {} errors{}{}{}",
        run.throughput(),
        report::duration(run.latency(0.5)),
        report::duration(run.latency(0.99)),
        run.errors,
        if run.saturated { ", saturated" } else { "" },
        if run.stalled { ", STALLED" } else { "" },
        run.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
}

/// p402 with the cache on, started, its model loaded (or given up on after
/// two minutes), and the question asked once so that it is stored.
fn start_cached_p402(
    generator: &Generator,
    work: &Path,
    upstream: SocketAddr,
    embedder: &Path,
) -> (Server, SocketAddr, String) {
    let setup = P402Setup {
        routing_mode: "passthrough",
        budget: false,
        cache: true,
        anthropic: false,
    };
    let (server, addr) = systems::start_p402(work, "p402-cache", upstream, &setup, embedder);
    // The model loads (or, on a fresh machine, is fetched) in the background.
    let health: hyper::Uri = format!("http://{addr}/health").parse().expect("uri");
    let mut state = String::new();
    for _ in 0..1200 {
        if let Ok((200, text)) = generator.fetch("GET", &health, "") {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            state = value["cache"].as_str().unwrap_or("?").to_string();
            if state == "connected" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = generator.fetch("POST", &chat_uri(addr), &chat_body(QUESTION, false));
    // The answer is stored off the request path.
    std::thread::sleep(Duration::from_millis(300));
    (server, addr, state)
}

/// p402 answering every request from its cache: exact hits at every rate,
/// then semantic hits (a paraphrase, embedded each time) at a low rate when
/// the embedding model is there.
fn cache_hits(
    generator: &Generator,
    plan: &Plan,
    work: &Path,
    upstream: SocketAddr,
    embedder: &Path,
) -> Measured {
    let state = std::cell::RefCell::new(String::new());
    let start = || {
        let (server, addr, cache) = start_cached_p402(generator, work, upstream, embedder);
        *state.borrow_mut() = cache;
        (server, addr)
    };
    let target = Target {
        name: "p402 exact cache hit",
        key: "p402-cache",
        stream: false,
        check: &is_cache_hit,
    };
    let (mut measured, instance) = measure(generator, plan, target, Instance::started(&start));
    let state = state.borrow().clone();
    measured.notes.push(format!("cache {state}"));
    if state != "connected" {
        return measured;
    }
    let uri = chat_uri(instance.addr());
    let paraphrase = chat_body(PARAPHRASE, false);
    let hit = generator
        .fetch("POST", &uri, &paraphrase)
        .ok()
        .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
        .filter(|v| v["p402_metadata"]["cached"] == true);
    let Some(answer) = hit else {
        measured
            .notes
            .push("the paraphrase was not a semantic hit".to_string());
        return measured;
    };
    measured.notes.push(format!(
        "paraphrase similarity {}",
        answer["p402_metadata"]["similarity"]
    ));
    let call = Call {
        uri,
        body: Bytes::from(paraphrase),
        stream: false,
    };
    let run = generator.open_loop(
        &call,
        plan.semantic_rate,
        plan.warmup,
        plan.semantic_window,
        &|| instance.server().cpu_seconds(),
    );
    progress(
        "p402 semantic cache hit",
        &format!("{}/s", plan.semantic_rate),
        &run,
    );
    measured.semantic = Some(run);
    measured
}
