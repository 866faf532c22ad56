//! `federation-latency`: how long a message takes from one server to a client of another.
//!
//! A sender registered on the sending server (`--send-url`) creates a public room; a receiver
//! registered on the receiving server (`--recv-url`) joins it through the sender's server
//! (`/join/{roomId}?server_name=…`) and holds a long-poll `/sync` loop. Messages go one at a time,
//! paced at `--rate` per second, each carrying `io.myelin.bench: {run, id}`; a message's latency is
//! the time from the start of its `PUT /send` on the sending server to the moment the receiver's
//! sync response holding it has been read whole. `--warmup` messages go first, each waited for and
//! not counted (the first transaction between two servers also fetches keys and opens
//! connections). Then it waits up to `--drain` seconds for the rest; missing messages are counted
//! and make the exit status 1 (after the line is printed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use crate::FederationLatency;
use crate::accounts::{Session, register, session_of};
use crate::http::{Stats, base, encode_segment, fail, send};
use crate::rooms::{create_room, send_url, txn_nonce};

const MARKER: &str = "io.myelin.bench";

/// When each message (by id) reached the receiver.
#[derive(Default)]
struct Arrivals {
    at: HashMap<u64, Instant>,
    sync_errors: u64,
    limited: u64,
}

async fn registered(client: &Client, url: &str, secret: &str, name: &str) -> Session {
    match register(client, url, secret, name, "bench-password").await {
        Ok(Some(answer)) => session_of(&answer).unwrap_or_else(|| fail(&format!("registration answered {answer}"))),
        Ok(None) => fail(&format!("{name} exists already on {url}")),
        Err(e) => fail(&format!("registering {name} on {url}: {}", e.describe())),
    }
}

/// The receiver's sync loop: records the arrival of every marked message of `run` in `room_id`.
async fn receive(
    client: Client,
    url: String,
    session: Arc<Session>,
    room_id: String,
    run: String,
    arrivals: Arc<Mutex<Arrivals>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let sync = |since: Option<&str>| {
        let mut endpoint = format!("{}/_matrix/client/v3/sync?timeout=30000", base(&url));
        if let Some(since) = since {
            endpoint.push_str(&format!("&since={}", encode_segment(since)));
        } else {
            endpoint = format!("{}/_matrix/client/v3/sync?timeout=0", base(&url));
        }
        client.get(endpoint).bearer_auth(&session.token).timeout(Duration::from_secs(60))
    };
    let mut since = loop {
        match send(sync(None)).await {
            Ok(v) => {
                if let Some(t) = v.get("next_batch").and_then(Value::as_str) {
                    break t.to_owned();
                }
            }
            Err(_) => arrivals.lock().unwrap().sync_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = ready.send(());
    loop {
        let answer = match sync(Some(&since)).send().await {
            Ok(resp) if resp.status().is_success() => resp.bytes().await.ok(),
            _ => None,
        };
        let at = Instant::now();
        let Some(v) = answer.and_then(|body| serde_json::from_slice::<Value>(&body).ok()) else {
            arrivals.lock().unwrap().sync_errors += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let timeline = &v["rooms"]["join"][&room_id]["timeline"];
        let mut arrivals = arrivals.lock().unwrap();
        if timeline["limited"].as_bool() == Some(true) {
            arrivals.limited += 1;
        }
        for event in timeline["events"].as_array().into_iter().flatten() {
            let marker = &event["content"][MARKER];
            if marker["run"].as_str() == Some(&run)
                && let Some(id) = marker["id"].as_u64()
            {
                arrivals.at.entry(id).or_insert(at);
            }
        }
        drop(arrivals);
        if let Some(t) = v.get("next_batch").and_then(Value::as_str) {
            since = t.to_owned();
        }
    }
}

fn percentiles(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let pick = |q: f64| crate::http::percentile_ms(&us, q);
    let mean = if us.is_empty() { 0.0 } else { us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0 };
    json!({
        "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": pick(1.0),
        "mean": crate::http::round3(mean), "samples": us.len(),
    })
}

pub async fn bench_federation_latency(client: Client, a: FederationLatency) {
    let run = txn_nonce();
    let sender = registered(&client, &a.send_url, &a.send_secret, &format!("{}-s-{run}", a.prefix)).await;
    let receiver = Arc::new(registered(&client, &a.recv_url, &a.recv_secret, &format!("{}-r-{run}", a.prefix)).await);
    let sender_server = sender.user_id.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
    let receiver_server = receiver.user_id.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
    let room_id = create_room(&client, &a.send_url, &sender, "federation latency", a.room_version.as_deref())
        .await
        .unwrap_or_else(|e| fail(&format!("createRoom: {}", e.describe())));

    // The join goes through the sender's server: the room is new to the receiver's.
    let joined_at = Instant::now();
    let endpoint = format!(
        "{}/_matrix/client/v3/join/{}?server_name={}",
        base(&a.recv_url),
        encode_segment(&room_id),
        encode_segment(&sender_server)
    );
    if let Err(e) = send(client.post(endpoint).bearer_auth(&receiver.token).json(&json!({}))).await {
        fail(&format!("the receiver could not join through {sender_server}: {}", e.describe()));
    }
    let join_ms = joined_at.elapsed().as_secs_f64() * 1000.0;

    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let receiving = tokio::spawn(receive(
        client.clone(),
        a.recv_url.clone(),
        receiver.clone(),
        room_id.clone(),
        run.clone(),
        arrivals.clone(),
        ready_tx,
    ));
    let _ = ready.await;

    let put = |id: u64| {
        let body = json!({ "msgtype": "m.text", "body": format!("federation latency {id}"), MARKER: { "run": run, "id": id } });
        client.put(format!("{}{run}-{id}", send_url(&a.send_url, &room_id))).bearer_auth(&sender.token).json(&body)
    };
    let arrived = |id: u64| arrivals.lock().unwrap().at.get(&id).copied();

    // Warm-up: each waited for (up to 30 s), not counted.
    for id in 0..a.warmup {
        if let Err(e) = send(put(id)).await {
            fail(&format!("warm-up send: {}", e.describe()));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while arrived(id).is_none() {
            if Instant::now() > deadline {
                fail(&format!("warm-up message {id} never reached the receiver"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let mut sends = Stats::default();
    let mut started: HashMap<u64, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let began = Instant::now();
    for n in 0..a.messages {
        let id = a.warmup + n;
        tokio::time::sleep_until((began + interval * n as u32).into()).await;
        let t0 = Instant::now();
        let result = send(put(id)).await;
        sends.record(t0, &result);
        if result.is_ok() {
            started.insert(id, t0);
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.drain);
    while Instant::now() < deadline && started.keys().any(|id| arrived(*id).is_none()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiving.abort();

    let arrivals = arrivals.lock().unwrap();
    let latencies: Vec<u64> = started
        .iter()
        .filter_map(|(id, t0)| arrivals.at.get(id).map(|at| at.saturating_duration_since(*t0).as_micros() as u64))
        .collect();
    let missing = started.len() - latencies.len();
    let send_latencies = percentiles(sends.latencies_us.clone());
    let line = json!({
        "scenario": "federation-latency",
        "label": a.label,
        "from": sender_server,
        "to": receiver_server,
        "messages": a.messages,
        "rate_per_s": a.rate,
        "warmup": a.warmup,
        "join_ms": crate::http::round3(join_ms),
        "sends": { "ok": sends.ok, "errors": sends.errors, "latency_ms": send_latencies, "error_samples": sends.error_samples() },
        "delivery": {
            "delivered": latencies.len(),
            "missing": missing,
            "limited_timelines": arrivals.limited,
            "sync_errors": arrivals.sync_errors,
            "latency_ms": percentiles(latencies),
        },
        "complete": missing == 0 && sends.errors == 0,
    });
    println!("{line}");
    if missing > 0 {
        std::process::exit(1);
    }
}
