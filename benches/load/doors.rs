//! `cargo bench --bench load -- --doors`: what p402 adds on each door in
//! passthrough (Chat Completions, Anthropic Messages, the Responses API),
//! each beside the upstream alone (its floor) and the bare hyper forwarder
//! (the peer) on the same door, in one run.
//!
//! The Messages door goes to an Anthropic provider and the Responses door
//! to OpenAI, both natively, so what is measured is the door itself: its
//! parse, the charge, the ledger entry, the metadata written into the
//! answer. Whole answers only (the generator times streams by their
//! `[DONE]`, which neither Anthropic's nor the Responses API's stream has).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::generator::{Call, Generator, Run};
use crate::systems::{self, P402Setup};
use crate::{report, QUESTION, SYSTEM_PROMPT};

/// How long each door and system is measured at concurrency 1, and how
/// many rounds: every round measures every door on every system in turn,
/// so that a slow minute of the machine does not fall on one of them only.
/// The tables give the median of the rounds.
const WINDOW: Duration = Duration::from_secs(3);
const WARMUP: Duration = Duration::from_millis(500);
const ROUNDS: usize = 5;

/// One door: its path and the body its clients send.
struct Door {
    name: &'static str,
    path: &'static str,
    body: Value,
    /// What the door's answer looks like.
    check: fn(&Value) -> bool,
}

fn doors() -> Vec<Door> {
    vec![
        Door {
            name: "Chat Completions",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": QUESTION}]}),
            check: |v| v["object"] == "chat.completion",
        },
        Door {
            name: "Anthropic Messages",
            path: "/v1/messages",
            body: json!({"model": "claude-haiku-4-5", "max_tokens": 1024, "temperature": 0.2,
                "system": SYSTEM_PROMPT,
                "messages": [{"role": "user", "content": QUESTION}]}),
            check: |v| v["type"] == "message",
        },
        Door {
            name: "Responses",
            path: "/v1/responses",
            body: json!({"model": "gpt-4o-mini", "instructions": SYSTEM_PROMPT,
                "input": QUESTION, "temperature": 0.2, "store": false}),
            check: |v| v["object"] == "response",
        },
    ]
}

/// Per door: the p50 and p99 (ns) of the upstream alone, the forwarder
/// and p402, each the median of the rounds.
struct Row {
    door: &'static str,
    direct: (u64, u64),
    forwarder: (u64, u64),
    p402: (u64, u64),
    /// p402's CPU time per request, µs.
    cpu_us: f64,
}

pub fn run(work: &Path) {
    let generator = Generator::new();
    let (_upstream_server, upstream) = systems::start_upstream();
    let (_forwarder_server, forwarder) = systems::start_forwarder(upstream);
    let setup = P402Setup {
        routing_mode: "passthrough",
        budget: false,
        cache: false,
        anthropic: true,
    };
    let (p402_server, p402) = systems::start_p402(
        work,
        "p402-doors",
        upstream,
        &setup,
        &work.join("no-embedder"),
    );
    let doors = doors();
    let uri = |addr: SocketAddr, door: &Door| -> hyper::Uri {
        format!("http://{addr}{}", door.path).parse().expect("uri")
    };
    for door in &doors {
        let body = door.body.to_string();
        for _ in 0..200 {
            let (status, text) = generator
                .fetch("POST", &uri(p402, door), &body)
                .expect("p402");
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                status == 200 && (door.check)(&value),
                "{}: HTTP {status}: {text}",
                door.name
            );
        }
    }
    // runs[door][system], system 0 the upstream, 1 the forwarder, 2 p402.
    let mut runs: Vec<[Vec<Run>; 3]> = doors.iter().map(|_| Default::default()).collect();
    for round in 0..ROUNDS {
        for (d, door) in doors.iter().enumerate() {
            for (s, addr) in [upstream, forwarder, p402].into_iter().enumerate() {
                let call = Call {
                    uri: uri(addr, door),
                    body: Bytes::from(door.body.to_string()),
                    stream: false,
                };
                let cpu = || {
                    if addr == p402 {
                        p402_server.cpu_seconds()
                    } else {
                        0.0
                    }
                };
                let run = generator.closed_loop(&call, 1, WARMUP, WINDOW, &cpu);
                assert_eq!(run.errors, 0, "{}: {:?}", door.name, run.first_error);
                if addr == p402 {
                    eprintln!(
                        "doors: round {round} {}: p402 p50 {} p99 {}, {:.0} µs CPU per request",
                        door.name,
                        report::duration(run.latency(0.5)),
                        report::duration(run.latency(0.99)),
                        run.cpu_per_request_us()
                    );
                }
                runs[d][s].push(run);
            }
        }
    }
    let rows: Vec<Row> = doors
        .iter()
        .zip(&runs)
        .map(|(door, [direct, forwarded, through])| Row {
            door: door.name,
            direct: median(direct),
            forwarder: median(forwarded),
            p402: median(through),
            cpu_us: median_f64(through.iter().map(Run::cpu_per_request_us).collect()),
        })
        .collect();
    let markdown = markdown(&rows);
    println!("{markdown}");
    std::fs::write(work.join("doors.md"), &markdown).expect("write doors.md");
    eprintln!("doors: wrote {}", work.join("doors.md").display());
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The median over the rounds of each round's p50 and p99.
fn median(runs: &[Run]) -> (u64, u64) {
    let mut p50: Vec<u64> = runs.iter().map(|r| r.latency(0.5)).collect();
    let mut p99: Vec<u64> = runs.iter().map(|r| r.latency(0.99)).collect();
    p50.sort_unstable();
    p99.sort_unstable();
    (p50[p50.len() / 2], p99[p99.len() / 2])
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| door | upstream direct p50 | forwarder p50 (added) | p402 p50 (added) | p402 p99 | p402 CPU per request | p402's added vs the chat door's |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let added = |row: &Row| row.p402.0.saturating_sub(row.direct.0);
    let chat = rows.first().map(added).unwrap_or(1).max(1);
    for row in rows {
        let ours = added(row);
        out.push_str(&format!(
            "| {} | {} | {} ({}) | {} ({}) | {} | {:.0} µs | {:+.1}% |\n",
            row.door,
            report::duration(row.direct.0),
            report::duration(row.forwarder.0),
            report::duration(row.forwarder.0.saturating_sub(row.direct.0)),
            report::duration(row.p402.0),
            report::duration(ours),
            report::duration(row.p402.1),
            row.cpu_us,
            (ours as f64 / chat as f64 - 1.0) * 100.0,
        ));
    }
    out
}
