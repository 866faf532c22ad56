//! Requests, what counts as a success, statistics and result lines, shared by every scenario.

use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

/// A failed request: the HTTP status if there was an answer, and a description.
pub struct Failure {
    pub status: Option<u16>,
    pub text: String,
}

impl Failure {
    pub fn errcode(&self) -> Option<String> {
        let v: Value = serde_json::from_str(&self.text).ok()?;
        Some(v.get("errcode")?.as_str()?.to_owned())
    }
    pub fn describe(&self) -> String {
        let text: String = self.text.chars().take(200).collect();
        match self.status {
            Some(s) => format!("HTTP {s}: {text}"),
            None => text,
        }
    }
}

/// Send a request; Ok only for a 2xx answer with a JSON body.
pub async fn send(req: RequestBuilder) -> Result<Value, Failure> {
    let transport = |e: reqwest::Error| {
        // reqwest's own message leaves out the cause ("connection refused", ...).
        let mut text = format!("transport: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Failure { status: None, text }
    };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(transport)?;
    if !(200..300).contains(&status) {
        return Err(Failure { status: Some(status), text: String::from_utf8_lossy(&body).into_owned() });
    }
    serde_json::from_slice(&body).map_err(|e| Failure { status: Some(status), text: format!("body is not JSON: {e}") })
}

#[derive(Default)]
pub struct Stats {
    pub ok: u64,
    pub errors: u64,
    /// Errors of untimed requests (logout, session set-up and tear-down).
    pub untimed_errors: u64,
    pub latencies_us: Vec<u64>,
    /// The first few distinct error descriptions, with how often each was seen.
    pub samples: Vec<(String, u64)>,
}

const MAX_SAMPLES: usize = 5;

impl Stats {
    pub fn record<T>(&mut self, started: Instant, result: &Result<T, Failure>) {
        match result {
            Ok(_) => {
                self.ok += 1;
                self.latencies_us.push(started.elapsed().as_micros() as u64);
            }
            Err(f) => {
                self.errors += 1;
                self.sample(f.describe(), 1);
            }
        }
    }
    pub fn sample(&mut self, msg: String, count: u64) {
        if let Some(s) = self.samples.iter_mut().find(|s| s.0 == msg) {
            s.1 += count;
        } else if self.samples.len() < MAX_SAMPLES {
            self.samples.push((msg, count));
        }
    }
    pub fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.untimed_errors += other.untimed_errors;
        self.latencies_us.extend(other.latencies_us);
        for (msg, count) in other.samples {
            self.sample(msg, count);
        }
    }
    pub fn error_samples(&self) -> Vec<Value> {
        self.samples.iter().map(|(m, c)| json!({"error": m, "count": c})).collect()
    }
}

pub fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The measured part of a result line: counts, throughput and latency percentiles.
pub fn measured(mut st: Stats, elapsed: Duration) -> Map<String, Value> {
    st.latencies_us.sort_unstable();
    let l = &st.latencies_us;
    let mean = if l.is_empty() { 0.0 } else { l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0 };
    let secs = elapsed.as_secs_f64();
    let v = json!({
        "elapsed_s": round3(secs),
        "ok": st.ok,
        "errors": st.errors,
        "untimed_errors": st.untimed_errors,
        "error_samples": st.error_samples(),
        "throughput_rps": round3(st.ok as f64 / secs),
        "latency_ms": {
            "p50": percentile_ms(l, 0.50),
            "p90": percentile_ms(l, 0.90),
            "p99": percentile_ms(l, 0.99),
            "max": percentile_ms(l, 1.0),
            "mean": round3(mean),
        },
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Print one result line: `head` (scenario, label, parameters) followed by the measured fields.
pub fn print_line(head: Value, st: Stats, elapsed: Duration) {
    let mut line = match head {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    line.extend(measured(st, elapsed));
    println!("{}", Value::Object(line));
}

/// Run `task(i, deadline)` on `concurrency` tasks for `duration` seconds; their merged stats and
/// the wall-clock time, the drain of the last requests included.
pub async fn run_tasks<F, Fut>(concurrency: usize, duration: f64, task: F) -> (Stats, Duration)
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = Stats> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(duration);
    let mut set = JoinSet::new();
    for i in 0..concurrency {
        set.spawn(task(i, deadline));
    }
    let mut total = Stats::default();
    while let Some(joined) = set.join_next().await {
        total.merge(joined.expect("benchmark task panicked"));
    }
    (total, started.elapsed())
}

/// Percent-encode a path segment (a user ID contains '@' and ':', a room ID '!').
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

pub fn fail(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1);
}
