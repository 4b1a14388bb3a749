//! The load generator: open-loop at a fixed rate, or closed-loop at a fixed
//! concurrency, over a pooled hyper client (keep-alive, like an SDK).
//!
//! Open loop is coordinated-omission aware: request `i` is due at
//! `start + i / rate` whatever happened to the ones before it, and its
//! latency runs from that due time, not from when it was actually sent. A
//! server that stalls therefore shows the stall in every request that should
//! have gone out meanwhile. The sending thread sleeps with a 1 ns timer
//! slack; how late it still was (its lag) is recorded, so that the
//! generator's own error is on the page next to the numbers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The bearer key every request carries: LiteLLM's master key (it refuses
/// to start without one); p402 and the forwarder ignore it.
pub const CLIENT_KEY: &str = "sk-load-7f3a9c2e5b8d1f4a6c0e9b2d5f8a1c4e7b0d3f6a9c2e5b8d";

/// One kind of request, sent again and again.
#[derive(Clone)]
pub struct Call {
    pub uri: Uri,
    pub body: Bytes,
    /// An SSE answer: events are timed as they arrive.
    pub stream: bool,
}

/// What one successful request saw, in nanoseconds from its due time.
#[derive(Clone, Default)]
pub struct Sample {
    /// Until the whole answer was read.
    pub total: u64,
    /// Until the first SSE event (streams only).
    pub first_event: u64,
    /// Arrival of each SSE event that carried answer text (streams only).
    pub content: Vec<u64>,
}

/// The outcome of one measured run.
pub struct Run {
    /// Successful requests due inside the measured window.
    pub samples: Vec<Sample>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// How late the sender was, per request (open loop only).
    pub lag: Vec<u64>,
    /// The server fell so far behind (over a quarter second of requests in
    /// flight) that the run was stopped: the rate is beyond its capacity.
    pub saturated: bool,
    /// Requests were still unanswered 5 s after the last one was due: the
    /// server stopped answering (the upstream answers in microseconds).
    pub stalled: bool,
    pub window: Duration,
    /// CPU seconds the server under test used during the window.
    pub cpu_seconds: f64,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.samples.len() as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile of the whole-answer latency, in ns.
    pub fn latency(&self, p: f64) -> u64 {
        let mut totals: Vec<u64> = self.samples.iter().map(|s| s.total).collect();
        percentile(&mut totals, p)
    }

    /// CPU time of the server per request, in µs.
    pub fn cpu_per_request_us(&self) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        self.cpu_seconds * 1e6 / self.samples.len() as f64
    }
}

/// Nearest-rank percentile (`p` in 0..=1); sorts `values`. 0 when empty.
pub fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Shared between the sender and the request tasks.
#[derive(Default)]
struct Results {
    samples: Vec<Sample>,
    errors: u64,
    first_error: Option<String>,
}

impl Results {
    fn record(&mut self, result: Result<Sample, String>) {
        match result {
            Ok(sample) => self.samples.push(sample),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

pub struct Generator {
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
}

impl Generator {
    /// One worker thread: the generator should take as little as it can of
    /// the two cores the servers under test share with it.
    pub fn new() -> Generator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("generator runtime");
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = {
            let _guard = runtime.enter();
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(http)
        };
        Generator { runtime, client }
    }

    /// One request, its status and body (for checks and warm-up).
    pub fn fetch(&self, method: &str, uri: &Uri, body: &str) -> Result<(u16, String), String> {
        let request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let client = self.client.clone();
        self.runtime.block_on(async move {
            let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })
    }

    /// Sends `call` at `rate` per second for `warmup + window`; measures the
    /// requests due inside the window.
    pub fn open_loop(
        &self,
        call: &Call,
        rate: f64,
        warmup: Duration,
        window: Duration,
        cpu: &dyn Fn() -> f64,
    ) -> Run {
        let warm = (rate * warmup.as_secs_f64()).round() as u64;
        let total = warm + (rate * window.as_secs_f64()).round() as u64;
        let cap = ((rate * 0.25) as usize).max(64);
        let results = Arc::new(Mutex::new(Results::default()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(total as usize);
        let mut lag = Vec::with_capacity(total as usize);
        let mut saturated = false;
        let mut cpu_start = cpu();
        precise_sleep_here();
        let start = Instant::now() + Duration::from_millis(5);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if i == warm {
                cpu_start = cpu();
            }
            if in_flight.load(Ordering::Relaxed) > cap {
                saturated = true;
                break;
            }
            let measured = i >= warm;
            if measured {
                lag.push(nanos(due.elapsed()));
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, call, results, in_flight) = (
                self.client.clone(),
                call.clone(),
                results.clone(),
                in_flight.clone(),
            );
            tasks.push(
                self.runtime
                    .spawn(async move {
                        let result = exchange(&client, &call, due).await;
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        if measured {
                            results.lock().expect("results").record(result);
                        }
                    })
                    .abort_handle(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let cpu_seconds = cpu() - cpu_start;
        let unfinished = in_flight.load(Ordering::Relaxed) as u64;
        for task in tasks {
            task.abort();
        }
        let mut results = std::mem::take(&mut *results.lock().expect("results"));
        if unfinished > 0 {
            results.errors += unfinished;
            results
                .first_error
                .get_or_insert_with(|| "no answer within 5 s of the last send".to_string());
        }
        Run {
            samples: results.samples,
            errors: results.errors,
            first_error: results.first_error,
            lag,
            saturated,
            stalled: unfinished > 0,
            window,
            cpu_seconds,
        }
    }

    /// `concurrency` clients each sending the next request as soon as the
    /// previous answer is read, for `warmup + window`; measures requests
    /// sent and answered inside the window.
    pub fn closed_loop(
        &self,
        call: &Call,
        concurrency: usize,
        warmup: Duration,
        window: Duration,
        cpu: &dyn Fn() -> f64,
    ) -> Run {
        let from = Instant::now() + warmup;
        let until = from + window;
        let results = Arc::new(Mutex::new(Results::default()));
        let mut tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, call, results) = (self.client.clone(), call.clone(), results.clone());
                self.runtime.spawn(async move {
                    loop {
                        let sent = Instant::now();
                        if sent >= until {
                            break;
                        }
                        let result = exchange(&client, &call, sent).await;
                        if sent >= from && Instant::now() <= until {
                            results.lock().expect("results").record(result);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let cpu_start = cpu();
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let cpu_seconds = cpu() - cpu_start;
        let stalled = self.runtime.block_on(async {
            let all = futures_util::future::join_all(tasks.iter_mut());
            tokio::time::timeout(Duration::from_secs(5), all)
                .await
                .is_err()
        });
        let unfinished = tasks.iter().filter(|t| !t.is_finished()).count() as u64;
        for task in &tasks {
            task.abort();
        }
        let mut results = std::mem::take(&mut *results.lock().expect("results"));
        if stalled {
            results.errors += unfinished;
            results
                .first_error
                .get_or_insert_with(|| "no answer within 5 s of the window end".to_string());
        }
        Run {
            samples: results.samples,
            errors: results.errors,
            first_error: results.first_error,
            lag: Vec::new(),
            saturated: false,
            stalled,
            window,
            cpu_seconds,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// Asks the kernel to wake this thread on time (the default slack is 50 µs).
fn precise_sleep_here() {
    let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1");
}

/// Sends `call`, reads the whole answer, times it from `due`.
async fn exchange(client: &HttpClient, call: &Call, due: Instant) -> Result<Sample, String> {
    let request = Request::post(call.uri.clone())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(Full::new(call.body.clone()))
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut sample = Sample::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !status.is_success() {
            pending.extend_from_slice(&data);
            continue;
        }
        if !call.stream {
            continue;
        }
        let at = nanos(due.elapsed());
        pending.extend(data.iter().filter(|b| **b != b'\r'));
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            if sample.first_event == 0 {
                sample.first_event = at;
            }
            let Some(payload) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let payload = &payload[..payload.len() - 2];
            if payload == b"[DONE]" {
                done = true;
            } else if carries_text(payload) {
                sample.content.push(at);
            }
        }
    }
    sample.total = nanos(due.elapsed());
    if !status.is_success() {
        let text = String::from_utf8_lossy(&pending);
        return Err(format!("HTTP {status}: {}", &text[..text.len().min(300)]));
    }
    if call.stream && !done {
        return Err("the stream ended without [DONE]".to_string());
    }
    Ok(sample)
}

fn carries_text(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload).is_ok_and(|chunk| {
        chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
    })
}
