//! The Markdown of the "Load" section of BENCHMARKS.md, from one run.

use std::fmt::Write;

use crate::generator::{percentile, Run};
use crate::upstream::{CHUNK_GAP, PIECES};
use crate::{Context, Measured};

/// The systems compared with p402, and the p402 configurations whose
/// overhead the targets are about.
const P402_MODES: [&str; 3] = ["p402-passthrough", "p402-cost", "p402-budget"];

/// A latency in ns as µs or ms.
pub fn duration(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A difference of latencies in ns, signed.
fn added(ns: i64) -> String {
    let sign = if ns < 0 { "−" } else { "+" };
    format!("{sign}{}", duration(ns.unsigned_abs()))
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 && a >= 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_string()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn find<'a>(all: &'a [Measured], key: &str) -> Option<&'a Measured> {
    all.iter().find(|m| m.key == key)
}

/// `system - direct` at percentile `p` and `rate`, in ns.
fn added_at(all: &[Measured], system: &Measured, rate: f64, p: f64) -> Option<i64> {
    let floor = find(all, "direct")?.at(rate)?;
    let run = system.at(rate)?;
    Some(run.latency(p) as i64 - floor.latency(p) as i64)
}

/// Arrival of each content chunk after the first, minus when the upstream
/// sent it relative to the first (it sends one every `CHUNK_GAP`): what
/// the path added to chunks after the first, in ns.
fn chunk_delays(run: &Run) -> Vec<u64> {
    let gap = CHUNK_GAP.as_nanos() as i64;
    run.samples
        .iter()
        .flat_map(|s| {
            let first = s.content.first().copied().unwrap_or(0) as i64;
            s.content
                .iter()
                .enumerate()
                .skip(1)
                .map(move |(i, at)| (*at as i64 - first - i as i64 * gap).max(0) as u64)
        })
        .collect()
}

fn gaps(run: &Run) -> Vec<u64> {
    run.samples
        .iter()
        .flat_map(|s| s.content.windows(2).map(|w| w[1] - w[0]))
        .collect()
}

fn first_events(run: &Run) -> Vec<u64> {
    run.samples.iter().map(|s| s.first_event).collect()
}

pub fn markdown(context: &Context, all: &[Measured]) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "## Load: overhead vs a bare forwarder and LiteLLM\n");
    let _ = writeln!(
        o,
        "`{}` (about 9 minutes; installs `litellm[proxy]` into `target/litellm-venv` on first use) \
         starts a fake OpenAI upstream on loopback and measures, in the same run and against that \
         same upstream: the upstream alone (the floor), a bare hyper forwarder written for the \
         bench (hyper server, pooled hyper-util client, the body streamed through and nothing \
         else: what any Rust proxy costs at least), the release `p402` binary in four \
         configurations, and LiteLLM's proxy. It prints this section and draws \
         `benches/load/latency.svg`. Source: `benches/load/`.\n",
        context.command
    );
    if context.quick {
        let _ = writeln!(
            o,
            "**A `--quick` smoke run: too short for the numbers to mean much.**\n"
        );
    }
    let _ = writeln!(
        o,
        "Measured {} on {} cores ({}), Linux {}. Load average (1, 5, 15 min) before the run: {}; \
         after: {}. {}; {}; {}.\n",
        context.date,
        context.cpus,
        context.model,
        context.kernel,
        context.load_before,
        context.load_after,
        context.p402,
        context.litellm.as_deref().unwrap_or("LiteLLM not measured"),
        context.rustc
    );
    method(o, context);
    fixed_rates(o, all);
    curve(o, all);
    throughput(o, all);
    streaming(o, all, context.stream_rate);
    resources(o, all);
    ratios(o, all);
    targets(o, all);
    out
}

fn method(o: &mut String, context: &Context) {
    let _ = writeln!(
        o,
        "- **The request**: `gpt-4o-mini`, a system prompt and a question (about 60 tokens), \
         temperature 0.2; the upstream answers at once with a 1 KB `chat.completion` (31 output \
         tokens). Streams ask for usage and get {} content chunks {} ms apart, then the finish \
         and usage chunks and `[DONE]`.",
        PIECES.len(),
        CHUNK_GAP.as_millis()
    );
    let _ = writeln!(
        o,
        "- **p402** is `target/release/p402 serve` with a generated config: the `openai` \
         provider's `base_url` at the upstream, the key from `OPENAI_API_KEY`, a fresh data dir \
         under `target/load-bench`, default logging (one line per request to stderr, read by the \
         bench). *passthrough*: `[routing] default_mode = \"passthrough\"`, cache off. *cost \
         routing*: `default_mode = \"cost\"` (the default), cache off. *cost routing + budget*: \
         the same plus `[budgets.global]` ($1M a month): every request reserves its worst case \
         and settles into the sled ledger. *exact cache hit*: passthrough, cache on, the same \
         request every time. Every p402 answer is written to the ledger and flushed before it \
         ends (SPEC §5), in every configuration."
    );
    let _ = writeln!(
        o,
        "- **LiteLLM**: `litellm --config config.yaml --num_workers N` with N = the number of \
         cores (`--timeout_worker_healthcheck 120`: its workers take longer than uvicorn's 5 s to \
         start here), one `openai/gpt-4o-mini` model whose `api_base` is the upstream, a master \
         key (it refuses to start without one; the generator sends it to every system), no \
         database, default logging, `LITELLM_LOCAL_MODEL_COST_MAP=True`."
    );
    let _ = writeln!(
        o,
        "- **Load generator**: written in the bench (`benches/load/generator.rs`) on a pooled \
         hyper client, one worker thread. Open loop: request *i* is due at *start + i/rate* \
         whatever the earlier ones did, and its latency runs from that due time \
         (coordinated-omission aware), so a stall is charged to every request that should have \
         gone out during it. Chosen over `oha` (whose `-q` rate and latency correction would do \
         for plain requests) because the same client must also time each SSE event of a stream \
         (first byte, every chunk), which no packaged generator reports, and over `wrk`, which \
         has no fixed rate. The sender's own lateness is measured and shown below. A rate is \
         *saturated* when more than a quarter second of requests is in flight: the run stops and \
         that system is not offered more."
    );
    let _ = writeln!(
        o,
        "- **Added latency** = the system's percentile minus the direct floor's at the same \
         rate, in the same run. **CPU per request**: user + system time of the server's process \
         tree (`/proc/<pid>/stat`) during the measured window, divided by the requests; for the \
         direct floor it is the upstream's. **Memory**: `VmRSS` after start and 200 requests \
         (idle), `VmHWM` after all runs (peak), summed over the process tree."
    );
    let _ = writeln!(
        o,
        "- Everything shares the machine's cores: generator, upstream and the system under \
         test. Absolute figures move with the machine; the ratios to the forwarder and to \
         LiteLLM, measured minutes apart on the same upstream, are the ones to compare across \
         runs. Plan: {}.\n",
        context.plan_text
    );
}

fn fixed_rates(o: &mut String, all: &[Measured]) {
    let _ = writeln!(
        o,
        "### Latency at 25, 100 and 1,000 requests/s (open loop)\n"
    );
    let _ = writeln!(
        o,
        "| system | rate | p50 | p90 | p99 | added p50 | added p99 | CPU per request | errors |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rate in [25.0, 100.0, 1000.0] {
        for system in all {
            let Some(run) = system.at(rate) else {
                let _ = writeln!(
                    o,
                    "| {} | {rate}/s | {} | | | | | | |",
                    system.name,
                    system.failure_at(rate)
                );
                continue;
            };
            let add = |p| {
                added_at(all, system, rate, p)
                    .filter(|_| system.key != "direct")
                    .map(added)
                    .unwrap_or_else(|| "–".to_string())
            };
            let _ = writeln!(
                o,
                "| {} | {rate}/s | {} | {} | {} | {} | {} | {:.0} µs | {} |",
                system.name,
                duration(run.latency(0.5)),
                duration(run.latency(0.9)),
                duration(run.latency(0.99)),
                add(0.5),
                add(0.99),
                run.cpu_per_request_us(),
                run.errors
            );
        }
    }
    let mut lags: Vec<u64> = all
        .iter()
        .filter_map(|m| m.at(1000.0))
        .flat_map(|run| run.lag.iter().copied())
        .collect();
    if !lags.is_empty() {
        let p50 = percentile(&mut lags, 0.5);
        let p99 = percentile(&mut lags, 0.99);
        let _ = writeln!(
            o,
            "\nThe generator sent late by {} at p50 and {} at p99 at 1,000/s (all systems); that \
             lateness is inside every latency above, the floor's included.\n",
            duration(p50),
            duration(p99)
        );
    }
}

fn curve(o: &mut String, all: &[Measured]) {
    let rates: Vec<f64> = all
        .iter()
        .flat_map(|m| m.rates.iter().map(|(r, _)| *r))
        .fold(Vec::new(), |mut v, r| {
            if !v.contains(&r) {
                v.push(r);
            }
            v
        });
    let _ = writeln!(
        o,
        "### Latency against load (p50 / p99, open loop)\n\n![latency against load](benches/load/latency.svg)\n"
    );
    let header: Vec<String> = rates.iter().map(|r| format!("{r}/s")).collect();
    let _ = writeln!(o, "| system | {} |", header.join(" | "));
    let _ = writeln!(o, "|---|{}", "---:|".repeat(rates.len()));
    for system in all {
        let cells: Vec<String> = rates
            .iter()
            .map(|rate| match system.rates.iter().find(|(r, _)| r == rate) {
                Some((_, run)) if run.stalled => "stopped answering".to_string(),
                Some((_, run)) if run.saturated => {
                    format!("saturated ({:.0}/s done)", run.throughput())
                }
                Some((_, run)) => format!(
                    "{} / {}",
                    duration(run.latency(0.5)),
                    duration(run.latency(0.99))
                ),
                None => "–".to_string(),
            })
            .collect();
        let _ = writeln!(o, "| {} | {} |", system.name, cells.join(" | "));
    }
    let _ = writeln!(o);
}

fn throughput(o: &mut String, all: &[Measured]) {
    let Some(concurrencies) = all
        .first()
        .map(|m| m.closed.iter().map(|(c, _)| *c).collect::<Vec<_>>())
    else {
        return;
    };
    let _ = writeln!(
        o,
        "### Maximum throughput (closed loop: each connection sends its next request when the answer is read)\n"
    );
    let header: Vec<String> = concurrencies
        .iter()
        .map(|c| format!("{c} conn.: req/s (p50 / p99)"))
        .collect();
    let _ = writeln!(
        o,
        "| system | {} | max | CPU per request at max |",
        header.join(" | ")
    );
    let _ = writeln!(o, "|---|{}---:|---:|", "---:|".repeat(concurrencies.len()));
    for system in all {
        let cells: Vec<String> = system
            .closed
            .iter()
            .map(|(_, run)| {
                if run.stalled {
                    return format!("stopped answering ({} answered)", run.samples.len());
                }
                format!(
                    "{:.0} ({} / {}){}",
                    run.throughput(),
                    duration(run.latency(0.5)),
                    duration(run.latency(0.99)),
                    if run.errors > 0 {
                        format!(", {} errors", run.errors)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let best = system
            .closed
            .iter()
            .filter(|(_, run)| !run.stalled)
            .max_by(|a, b| a.1.throughput().total_cmp(&b.1.throughput()));
        let _ = writeln!(
            o,
            "| {} | {} | **{:.0}/s** | {} |",
            system.name,
            cells.join(" | "),
            system.max_throughput(),
            best.map(|(_, run)| format!("{:.0} µs", run.cpu_per_request_us()))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(o);
}

fn streaming(o: &mut String, all: &[Measured], stream_rate: f64) {
    let Some(floor) = find(all, "direct").and_then(|m| m.stream.as_ref()) else {
        return;
    };
    let _ = writeln!(
        o,
        "### Streaming ({} content chunks, {} ms apart at the upstream; open loop at {} streams/s)\n",
        PIECES.len(),
        CHUNK_GAP.as_millis(),
        stream_rate
    );
    let _ = writeln!(
        o,
        "*First byte*: from the request's due time to the first SSE event. *Chunk delay*: how \
         much later than the upstream's schedule each chunk after the first content chunk \
         arrived, relative to that first one. *Gap*: time between two content chunks at the \
         client.\n"
    );
    let _ = writeln!(
        o,
        "| system | first byte p50 | p99 | added p50 | added p99 | gap p50 | gap p99 | chunk delay p50 | p99 | added p99 | errors |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut floor_first = first_events(floor);
    let mut floor_delay = chunk_delays(floor);
    let (ff50, ff99) = (
        percentile(&mut floor_first, 0.5) as i64,
        percentile(&mut floor_first, 0.99) as i64,
    );
    let fd99 = percentile(&mut floor_delay, 0.99) as i64;
    for system in all {
        let Some(run) = &system.stream else {
            continue;
        };
        if run.saturated || run.stalled || run.samples.is_empty() {
            let what = if run.stalled {
                "stopped answering"
            } else {
                "saturated"
            };
            let _ = writeln!(o, "| {} | {what} | | | | | | | | | |", system.name);
            continue;
        }
        let mut first = first_events(run);
        let mut gap = gaps(run);
        let mut delay = chunk_delays(run);
        let (f50, f99) = (
            percentile(&mut first, 0.5) as i64,
            percentile(&mut first, 0.99) as i64,
        );
        let d99 = percentile(&mut delay, 0.99) as i64;
        let direct = system.key == "direct";
        let show = |v: i64| if direct { "–".to_string() } else { added(v) };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            system.name,
            duration(f50 as u64),
            duration(f99 as u64),
            show(f50 - ff50),
            show(f99 - ff99),
            duration(percentile(&mut gap, 0.5)),
            duration(percentile(&mut gap, 0.99)),
            duration(percentile(&mut delay, 0.5)),
            duration(d99 as u64),
            show(d99 - fd99),
            run.errors
        );
    }
    let _ = writeln!(o);
}

fn resources(o: &mut String, all: &[Measured]) {
    let _ = writeln!(o, "### CPU and memory of the server\n");
    let _ = writeln!(
        o,
        "| system | CPU per request at 25/s | at 100/s | at max throughput | RSS idle | peak RSS (VmHWM) | notes |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---|");
    for system in all {
        let cpu = |rate| {
            system
                .at(rate)
                .map(|run| format!("{:.0} µs", run.cpu_per_request_us()))
                .unwrap_or_else(|| system.failure_at(rate).to_string())
        };
        let mut notes = system.notes.clone();
        if system.key == "direct" {
            notes.insert(0, "the upstream itself".to_string());
        }
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            system.name,
            cpu(25.0),
            cpu(100.0),
            system
                .best_closed()
                .map(|run| format!("{:.0} µs", run.cpu_per_request_us()))
                .unwrap_or_default(),
            mib(system.idle_rss),
            mib(system.peak_rss),
            notes.join("; ")
        );
    }
    let _ = writeln!(o);
}

fn ratios(o: &mut String, all: &[Measured]) {
    let references: Vec<&Measured> = ["forwarder", "litellm"]
        .iter()
        .filter_map(|k| find(all, k))
        .collect();
    let systems: Vec<&Measured> = P402_MODES.iter().filter_map(|k| find(all, k)).collect();
    if references.is_empty() || systems.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "### Ratios (p402 / reference; below 1 means p402 is lower)\n"
    );
    let mut columns = Vec::new();
    for reference in &references {
        for system in &systems {
            columns.push((*system, *reference));
        }
    }
    let header: Vec<String> = columns
        .iter()
        .map(|(s, r)| format!("{} / {}", s.name, r.name))
        .collect();
    let _ = writeln!(o, "| | {} |", header.join(" | "));
    let _ = writeln!(o, "|---|{}", "---:|".repeat(columns.len()));
    let mut rows: Vec<(String, Pick<'_>)> = Vec::new();
    for rate in [25.0, 100.0, 1000.0] {
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            rows.push((
                format!("added latency {name} at {rate}/s"),
                Box::new(move |m: &Measured| {
                    added_at(all, m, rate, p).map_or(f64::NAN, |v| v as f64)
                }),
            ));
        }
    }
    rows.push((
        "maximum throughput".to_string(),
        Box::new(|m: &Measured| m.max_throughput()),
    ));
    rows.push((
        "CPU per request at maximum throughput".to_string(),
        Box::new(|m: &Measured| m.best_closed().map_or(f64::NAN, Run::cpu_per_request_us)),
    ));
    rows.push((
        "peak RSS".to_string(),
        Box::new(|m: &Measured| m.peak_rss as f64),
    ));
    for (name, metric) in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|(s, r)| ratio(metric(s), metric(r)))
            .collect();
        let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        o,
        "\nA ratio is n/a where either system has no usable run (saturated or stopped answering) \
         or the reference's added latency is not above zero (within noise of the floor).\n"
    );
}

fn targets(o: &mut String, all: &[Measured]) {
    let _ = writeln!(o, "### Targets of the benchmarks issue\n");
    let _ = writeln!(o, "| target | system | measured | met |");
    let _ = writeln!(o, "|---|---|---:|---|");
    let verdict = |ok: bool| if ok { "yes" } else { "**no**" };
    let forwarder = find(all, "forwarder").map(Measured::max_throughput);
    for key in P402_MODES {
        let Some(system) = find(all, key) else {
            continue;
        };
        for (target, p, limit) in [
            ("added latency p50 ≤ 50 µs at 1,000/s", 0.5, 50_000),
            ("added latency p99 ≤ 300 µs at 1,000/s", 0.99, 300_000),
        ] {
            match added_at(all, system, 1000.0, p) {
                Some(v) => {
                    let _ = writeln!(
                        o,
                        "| {target} | {} | {} | {} |",
                        system.name,
                        added(v),
                        verdict(v <= limit)
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "| {target} | {} | {} | **no** |",
                        system.name,
                        system.failure_at(1000.0)
                    );
                }
            }
        }
        if let Some(reference) = forwarder {
            let share = system.max_throughput() / reference;
            let _ = writeln!(
                o,
                "| throughput ≥ 80% of the bare forwarder | {} | {:.0}% ({:.0} / {:.0} req/s) | {} |",
                system.name,
                share * 100.0,
                system.max_throughput(),
                reference,
                verdict(share >= 0.8)
            );
        }
    }
    if let Some(cache) = find(all, "p402-cache") {
        for rate in [100.0, 1000.0] {
            if let Some(run) = cache.at(rate) {
                let p50 = run.latency(0.5);
                let _ = writeln!(
                    o,
                    "| exact cache hit p50 ≤ 0.5 ms | {} at {rate}/s | {} | {} |",
                    cache.name,
                    duration(p50),
                    verdict(p50 <= 500_000)
                );
            }
        }
        match &cache.semantic {
            Some(run) => {
                let p50 = run.latency(0.5);
                let _ = writeln!(
                    o,
                    "| semantic cache hit p50 ≤ 8 ms | p402 semantic hit at 20/s (p99 {}) | {} | {} |",
                    duration(run.latency(0.99)),
                    duration(p50),
                    verdict(p50 <= 8_000_000)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| semantic cache hit p50 ≤ 8 ms | p402 | not measured ({}) | |",
                    cache.notes.join("; ")
                );
            }
        }
    }
    let _ = writeln!(o);
}

/// Reads one figure out of a measurement, for a row of the ratio table.
type Pick<'a> = Box<dyn Fn(&Measured) -> f64 + 'a>;
