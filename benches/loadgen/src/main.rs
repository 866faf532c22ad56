//! myelin-loadgen: an HTTP load generator for Matrix homeservers.
//!
//! It speaks only the Client-Server API (and the shared-secret admin
//! registration API) to a base URL, so the same run measures Myelin and
//! Synapse. Each benchmark scenario prints one JSON line on stdout; progress
//! and problems go to stderr. See `--help` and benches/README.md.
//!
//! Counting: a request is a success only if it answers 2xx with a JSON body;
//! anything else (non-2xx, bad JSON, transport error, timeout) is an error.
//! Latencies are of successful requests only; throughput is successes per
//! second of wall-clock time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "HTTP load generator for Matrix homeservers (Myelin, Synapse)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register users PREFIX0..PREFIX{N-1} via the shared-secret admin API (idempotent).
    SetupUsers {
        #[command(flatten)]
        users: Users,
        /// registration_shared_secret of the server
        #[arg(long)]
        secret: String,
        /// Registrations in flight at once
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Timed POST /login (m.login.password), each followed by an untimed logout.
    Login(Bench),
    /// Timed GET /account/whoami with tokens from one login per task.
    Whoami {
        #[command(flatten)]
        bench: Bench,
        /// Use this access token instead of logging in (to see the error path)
        #[arg(long)]
        token: Option<String>,
    },
    /// Timed PUT /user/USER_ID/account_data/org.myelin.bench.N (N cycles through --keys).
    AccountData {
        #[command(flatten)]
        bench: Bench,
        /// Distinct account data types written per user (n cycles through them)
        #[arg(long, default_value_t = 100)]
        keys: u64,
    },
}

#[derive(Args, Clone)]
struct Users {
    /// Base URL of the homeserver, e.g. http://127.0.0.1:8008
    #[arg(long)]
    url: String,
    /// Number of users (PREFIX0 .. PREFIX{N-1})
    #[arg(long = "users", visible_alias = "count", default_value_t = 16)]
    users: usize,
    #[arg(long, default_value = "bench")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
}

#[derive(Args, Clone)]
struct Bench {
    #[command(flatten)]
    users: Users,
    /// Concurrent tasks, each with one request in flight
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Free-form label copied into the output (e.g. the server measured)
    #[arg(long, default_value = "")]
    label: String,
}

/// A failed request: the HTTP status if there was an answer, and a description.
struct Failure {
    status: Option<u16>,
    text: String,
}

impl Failure {
    fn errcode(&self) -> Option<String> {
        let v: Value = serde_json::from_str(&self.text).ok()?;
        Some(v.get("errcode")?.as_str()?.to_owned())
    }
    fn describe(&self) -> String {
        let text: String = self.text.chars().take(200).collect();
        match self.status {
            Some(s) => format!("HTTP {s}: {text}"),
            None => text,
        }
    }
}

/// Send a request; Ok only for a 2xx answer with a JSON body.
async fn send(req: RequestBuilder) -> Result<Value, Failure> {
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
        return Err(Failure {
            status: Some(status),
            text: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| Failure {
        status: Some(status),
        text: format!("body is not JSON: {e}"),
    })
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    /// Errors of untimed requests (logout, session set-up and tear-down).
    untimed_errors: u64,
    latencies_us: Vec<u64>,
    /// The first few distinct error descriptions, with how often each was seen.
    samples: Vec<(String, u64)>,
}

const MAX_SAMPLES: usize = 5;

impl Stats {
    fn record<T>(&mut self, started: Instant, result: &Result<T, Failure>) {
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
    fn sample(&mut self, msg: String, count: u64) {
        if let Some(s) = self.samples.iter_mut().find(|s| s.0 == msg) {
            s.1 += count;
        } else if self.samples.len() < MAX_SAMPLES {
            self.samples.push((msg, count));
        }
    }
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.untimed_errors += other.untimed_errors;
        self.latencies_us.extend(other.latencies_us);
        for (msg, count) in other.samples {
            self.sample(msg, count);
        }
    }
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Print the scenario's result line.
fn report(scenario: &str, b: &Bench, mut st: Stats, elapsed: Duration) {
    st.latencies_us.sort_unstable();
    let l = &st.latencies_us;
    let mean = if l.is_empty() {
        0.0
    } else {
        l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0
    };
    let secs = elapsed.as_secs_f64();
    let samples: Vec<Value> = st
        .samples
        .iter()
        .map(|(m, c)| json!({"error": m, "count": c}))
        .collect();
    let line = json!({
        "scenario": scenario,
        "label": b.label,
        "url": b.users.url,
        "users": b.users.users,
        "concurrency": b.concurrency,
        "duration_s": b.duration,
        "elapsed_s": round3(secs),
        "ok": st.ok,
        "errors": st.errors,
        "untimed_errors": st.untimed_errors,
        "error_samples": samples,
        "throughput_rps": round3(st.ok as f64 / secs),
        "latency_ms": {
            "p50": percentile_ms(l, 0.50),
            "p90": percentile_ms(l, 0.90),
            "p99": percentile_ms(l, 0.99),
            "max": percentile_ms(l, 1.0),
            "mean": round3(mean),
        },
    });
    println!("{line}");
}

/// Percent-encode a path segment (a user ID contains '@' and ':').
fn encode_segment(s: &str) -> String {
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

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

fn user_name(u: &Users, i: usize) -> String {
    format!("{}{}", u.prefix, i % u.users)
}

struct Session {
    user_id: String,
    token: String,
}

async fn login(client: &Client, u: &Users, i: usize) -> Result<Value, Failure> {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_name(u, i)},
        "password": u.password,
        "initial_device_display_name": "myelin-loadgen",
    });
    send(
        client
            .post(format!("{}/_matrix/client/v3/login", base(&u.url)))
            .json(&body),
    )
    .await
}

fn session_of(v: &Value) -> Option<Session> {
    Some(Session {
        user_id: v.get("user_id")?.as_str()?.to_owned(),
        token: v.get("access_token")?.as_str()?.to_owned(),
    })
}

async fn logout(client: &Client, url: &str, token: &str) -> Result<Value, Failure> {
    let req = client
        .post(format!("{}/_matrix/client/v3/logout", base(url)))
        .bearer_auth(token);
    send(req.json(&json!({}))).await
}

/// Log in once per task (untimed), or exit: a benchmark without sessions is void.
async fn sessions(client: &Client, b: &Bench) -> Vec<Arc<Session>> {
    let mut set = JoinSet::new();
    for i in 0..b.concurrency {
        let (client, u) = (client.clone(), b.users.clone());
        set.spawn(async move { (i, login(&client, &u, i).await) });
    }
    let mut out: Vec<(usize, Arc<Session>)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.expect("login task panicked");
        match result.as_ref().map(session_of) {
            Ok(Some(s)) => out.push((i, Arc::new(s))),
            Ok(None) => fail(&format!(
                "login of {} answered without user_id/access_token",
                user_name(&b.users, i)
            )),
            Err(f) => fail(&format!(
                "login of {} failed: {}",
                user_name(&b.users, i),
                f.describe()
            )),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1);
}

/// Run `task(i, deadline)` on `concurrency` tasks and report their merged stats.
/// Task i acts as user PREFIX{i mod N}.
async fn drive<F, Fut>(scenario: &str, b: &Bench, task: F)
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = Stats> + Send + 'static,
{
    eprintln!(
        "loadgen: {scenario} on {} for {}s with {} tasks",
        b.users.url, b.duration, b.concurrency
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(b.duration);
    let mut set = JoinSet::new();
    for i in 0..b.concurrency {
        set.spawn(task(i, deadline));
    }
    let mut total = Stats::default();
    while let Some(joined) = set.join_next().await {
        total.merge(joined.expect("benchmark task panicked"));
    }
    let elapsed = started.elapsed();
    report(scenario, b, total, elapsed);
}

async fn bench_login(client: Client, b: Bench) {
    drive("login", &b, |i, deadline| {
        let (client, u) = (client.clone(), b.users.clone());
        async move {
            let mut st = Stats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = login(&client, &u, i).await;
                st.record(t0, &r);
                if let Some(s) = r.ok().as_ref().and_then(session_of)
                    && logout(&client, &u.url, &s.token).await.is_err()
                {
                    st.untimed_errors += 1;
                }
            }
            st
        }
    })
    .await;
}

async fn bench_whoami(client: Client, b: Bench, token: Option<String>) {
    let sess = match &token {
        Some(t) => {
            let shared = Arc::new(Session {
                user_id: String::new(),
                token: t.clone(),
            });
            vec![shared; b.concurrency]
        }
        None => sessions(&client, &b).await,
    };
    let url = format!("{}/_matrix/client/v3/account/whoami", base(&b.users.url));
    drive("whoami", &b, |i, deadline| {
        let (client, url, s) = (client.clone(), url.clone(), sess[i].clone());
        async move {
            let mut st = Stats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = send(client.get(&url).bearer_auth(&s.token)).await;
                st.record(t0, &r);
            }
            st
        }
    })
    .await;
    if token.is_none() {
        close_sessions(&client, &b.users.url, &sess).await;
    }
}

async fn bench_account_data(client: Client, b: Bench, keys: u64) {
    let sess = sessions(&client, &b).await;
    let base = base(&b.users.url).to_owned();
    let keys = keys.max(1);
    drive("account-data", &b, |i, deadline| {
        let (client, s) = (client.clone(), sess[i].clone());
        let prefix = format!(
            "{base}/_matrix/client/v3/user/{}/account_data/",
            encode_segment(&s.user_id)
        );
        async move {
            let mut st = Stats::default();
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let url = format!("{prefix}org.myelin.bench.{}", n % keys);
                let body = json!({"n": n, "task": i, "note": "myelin-loadgen account data"});
                let t0 = Instant::now();
                let r = send(client.put(url).bearer_auth(&s.token).json(&body)).await;
                st.record(t0, &r);
                n += 1;
            }
            st
        }
    })
    .await;
    close_sessions(&client, &b.users.url, &sess).await;
}

/// Log the benchmark's devices out so they don't pile up across runs.
async fn close_sessions(client: &Client, url: &str, sess: &[Arc<Session>]) {
    let mut set = JoinSet::new();
    for s in sess {
        let (client, url, s) = (client.clone(), url.to_owned(), s.clone());
        set.spawn(async move { logout(&client, &url, &s.token).await.is_ok() });
    }
    let failed = set.join_all().await.iter().filter(|ok| !**ok).count();
    if failed > 0 {
        eprintln!(
            "loadgen: {failed} of {} logouts after the run failed",
            sess.len()
        );
    }
}

fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for part in [nonce, user, password] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

/// Register one user; Ok(true) if created, Ok(false) if it already existed.
async fn register(
    client: &Client,
    url: &str,
    secret: &str,
    user: &str,
    password: &str,
) -> Result<bool, Failure> {
    let endpoint = format!("{}/_synapse/admin/v1/register", base(url));
    let nonce = send(client.get(&endpoint)).await?;
    let nonce = nonce
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let body = json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": false,
        "mac": registration_mac(secret, &nonce, user, password, false),
    });
    match send(client.post(&endpoint).json(&body)).await {
        Ok(_) => Ok(true),
        Err(f) if f.errcode().as_deref() == Some("M_USER_IN_USE") => Ok(false),
        Err(f) => Err(f),
    }
}

async fn setup_users(client: Client, u: Users, secret: String, concurrency: usize) {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, u, secret, next) = (client.clone(), u.clone(), secret.clone(), next.clone());
        set.spawn(async move {
            let (mut created, mut existing, mut st) = (0u64, 0u64, Stats::default());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u.users {
                    break;
                }
                match register(&client, &u.url, &secret, &user_name(&u, i), &u.password).await {
                    Ok(true) => created += 1,
                    Ok(false) => existing += 1,
                    Err(f) => st.record::<()>(Instant::now(), &Err(f)),
                }
            }
            (created, existing, st)
        });
    }
    let (mut created, mut existing, mut st) = (0, 0, Stats::default());
    for (c, e, s) in set.join_all().await {
        created += c;
        existing += e;
        st.merge(s);
    }
    let samples: Vec<Value> = st
        .samples
        .iter()
        .map(|(m, c)| json!({"error": m, "count": c}))
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "setup-users", "url": u.url, "users": u.users, "created": created,
            "existing": existing, "errors": st.errors, "error_samples": samples,
            "elapsed_s": round3(started.elapsed().as_secs_f64()),
        })
    );
    if st.errors > 0 {
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let pool = match &cli.cmd {
        Cmd::SetupUsers { concurrency, .. } => *concurrency,
        Cmd::Login(b) | Cmd::Whoami { bench: b, .. } | Cmd::AccountData { bench: b, .. } => {
            if b.concurrency == 0 || b.users.users == 0 || b.duration <= 0.0 {
                fail("--concurrency, --users and --duration must be positive");
            }
            b.concurrency
        }
    };
    let client = Client::builder()
        .pool_max_idle_per_host(pool * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    match cli.cmd {
        Cmd::SetupUsers {
            users,
            secret,
            concurrency,
        } => setup_users(client, users, secret, concurrency).await,
        Cmd::Login(b) => bench_login(client, b).await,
        Cmd::Whoami { bench, token } => bench_whoami(client, bench, token).await,
        Cmd::AccountData { bench, keys } => bench_account_data(client, bench, keys).await,
    }
}
