//! `connections`: many idle sync connections held at once on one server, then one message that
//! every one of them must deliver. U users registered with the shared secret share one public
//! room; connection i syncs as user i mod U: `--long-polls` long-poll `GET /sync?since=…` and
//! `--websockets` WebSockets, all open before the send. The server's resident memory
//! (`/proc/PID/status`, so the server runs on this machine) is read before the connections
//! open, once they are all held, and after the delivery; the line reports it per connection.
//! A connection that does not see the message within `--timeout` seconds is counted missing,
//! and a run with anything missing exits with status 1 after printing its line.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Client;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::Connections;
use crate::accounts::{Session, populate};
use crate::http::{base, encode_segment, fail, round3, send};
use crate::rooms::{create_room, join, send_url, txn_nonce};

const WS_PATH: &str = "/_matrix/client/unstable/io.myelin.websocket/stream";

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| fail(&format!("reading /proc/{pid}/status: {e}")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| fail("no VmRSS in /proc/PID/status"))
}

/// Whether a sync update carries the message with `marker` in its body.
fn holds(update: &Value, marker: &str) -> bool {
    update["rooms"]["join"].as_object().is_some_and(|rooms| {
        rooms.values().any(|room| {
            room["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["content"]["body"].as_str() == Some(marker)))
        })
    })
}

struct Shared {
    client: Client,
    url: String,
    sessions: Vec<Arc<Session>>,
    since: Vec<String>,
    marker: String,
    /// Connections open: long-polls sent, WebSockets upgraded.
    open: AtomicUsize,
    delivered: AtomicUsize,
}

/// A long-poll from the user's position; loops (a timeout or another update) until the message.
async fn long_poll(s: Arc<Shared>, user: usize, deadline: Instant) -> bool {
    let mut since = s.since[user].clone();
    let token = &s.sessions[user].token;
    let mut counted = false;
    while Instant::now() < deadline {
        let url = format!("{}/_matrix/client/v3/sync?timeout=50000&since={}", base(&s.url), encode_segment(&since));
        let request = s.client.get(url).bearer_auth(token).send();
        if !counted {
            counted = true;
            s.open.fetch_add(1, Ordering::SeqCst);
        }
        let Ok(Ok(response)) = tokio::time::timeout(deadline - Instant::now(), request).await else { return false };
        let Ok(update) = response.json::<Value>().await else { return false };
        if holds(&update, &s.marker) {
            s.delivered.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        match update["next_batch"].as_str() {
            Some(next) => since = next.to_owned(),
            None => return false,
        }
    }
    false
}

/// A WebSocket from the user's position, read until the message.
async fn websocket(s: Arc<Shared>, user: usize, deadline: Instant) -> bool {
    let ws_base = base(&s.url).replacen("http://", "ws://", 1);
    let target = format!("{ws_base}{WS_PATH}?since={}", encode_segment(&s.since[user]));
    let mut request = target.into_client_request().unwrap_or_else(|e| fail(&format!("bad WebSocket URL: {e}")));
    let headers = request.headers_mut();
    headers.insert("Authorization", format!("Bearer {}", s.sessions[user].token).parse().expect("header"));
    headers.insert("Sec-WebSocket-Protocol", "m.json".parse().expect("header"));
    let Ok(Ok((mut socket, _))) =
        tokio::time::timeout(deadline - Instant::now(), tokio_tungstenite::connect_async(request)).await
    else {
        return false;
    };
    s.open.fetch_add(1, Ordering::SeqCst);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(deadline - Instant::now(), socket.next()).await {
        if let Message::Text(text) = message
            && serde_json::from_str::<Value>(text.as_str()).is_ok_and(|update| holds(&update, &s.marker))
        {
            s.delivered.fetch_add(1, Ordering::SeqCst);
            let _ = socket.close(None).await;
            return true;
        }
    }
    false
}

pub async fn bench_connections(client: Client, a: Connections) {
    let users =
        crate::Users { url: a.url.clone(), users: a.users, prefix: a.prefix.clone(), password: a.password.clone() };
    eprintln!("loadgen: connections: registering {} users on {}", a.users, a.url);
    let sessions = populate(&client, &users, &a.secret, 4).await.sessions;
    let room = create_room(&client, &a.url, &sessions[0], "myelin-loadgen: connections", None)
        .await
        .unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    for s in &sessions[1..] {
        join(&client, &a.url, s, &room).await.unwrap_or_else(|f| fail(&format!("join failed: {}", f.describe())));
    }
    // Each user's position now, so that connections start from it and wait.
    let mut since = Vec::new();
    for s in &sessions {
        let filter = encode_segment(r#"{"room":{"timeline":{"limit":1}}}"#);
        let url = format!("{}/_matrix/client/v3/sync?filter={filter}", base(&a.url));
        let answer = send(client.get(url).bearer_auth(&s.token)).await.unwrap_or_else(|f| fail(&f.describe()));
        since.push(answer["next_batch"].as_str().unwrap_or_else(|| fail("sync without next_batch")).to_owned());
    }
    let marker = format!("connections {}", txn_nonce());
    let shared = Arc::new(Shared {
        client: client.clone(),
        url: a.url.clone(),
        sessions,
        since,
        marker: marker.clone(),
        open: AtomicUsize::new(0),
        delivered: AtomicUsize::new(0),
    });
    let rss_before = rss_kib(a.pid);
    let total = a.long_polls + a.websockets;
    eprintln!("loadgen: connections: opening {} long-polls and {} WebSockets", a.long_polls, a.websockets);
    let opened = Instant::now();
    let deadline = opened + Duration::from_secs_f64(a.timeout);
    let mut set = JoinSet::new();
    for i in 0..total {
        let (s, user) = (shared.clone(), i % a.users);
        if i < a.long_polls {
            set.spawn(long_poll(s, user, deadline));
        } else {
            set.spawn(websocket(s, user, deadline));
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await; // not all handshakes in one burst
        }
    }
    while shared.open.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Requests sent are not yet parked on the server: give the last ones time to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open_s = opened.elapsed().as_secs_f64();
    let rss_held = rss_kib(a.pid);
    let sent_at = Instant::now();
    let url = format!("{}{}", send_url(&a.url, &room), txn_nonce());
    send(client.put(url).bearer_auth(&shared.sessions[0].token).json(&json!({"msgtype": "m.text", "body": marker})))
        .await
        .unwrap_or_else(|f| fail(&format!("the send failed: {}", f.describe())));
    let outcomes = set.join_all().await;
    let delivered_s = sent_at.elapsed().as_secs_f64();
    let rss_after = rss_kib(a.pid);
    let delivered = outcomes.iter().filter(|ok| **ok).count();
    let per_connection = (rss_held.saturating_sub(rss_before)) as f64 * 1024.0 / total as f64;
    let line = json!({
        "scenario": "connections",
        "label": a.label,
        "users": a.users,
        "long_polls": a.long_polls,
        "websockets": a.websockets,
        "opened": shared.open.load(Ordering::SeqCst),
        "delivered": delivered,
        "missing": total - delivered,
        "open_s": round3(open_s),
        "all_delivered_s": round3(delivered_s),
        "rss_kib": {"before": rss_before, "held": rss_held, "after": rss_after},
        "bytes_per_connection": per_connection.round(),
    });
    println!("{line}");
    if delivered < total {
        std::process::exit(1);
    }
}
