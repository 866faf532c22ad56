//! Sync scenarios: `sync-fanout` (delivery through long-poll `/sync` or the WebSocket),
//! `initial-sync` and `messages`.
//!
//! `sync-fanout`: N users registered with the shared secret, R public rooms. With `--membership
//! all` every user is in every room (R rooms of N members: a message reaches N - 1 receivers);
//! with `spread` user i is in room i mod R only (N / R members a room). Every user holds a sync
//! loop (long-poll `GET /sync?since=…&timeout=30000`, or a WebSocket) from before the first send
//! to the end. Messages carry `io.myelin.bench: {run, id, sent_unix_ms}` in their content; the
//! one load-generator process keeps, for each id, the `Instant` at which its `PUT /send` was
//! *started*, and a receiver's delivery latency is the time from that instant to the moment the
//! sync response (or WebSocket message) holding the event was read whole. The sender's own echo
//! is not counted: the receivers of a message are the other members of its room. At the end every
//! receiver must have seen every acknowledged message of its rooms; what is missing is counted,
//! and a run with anything missing exits with status 1 after printing its line.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::accounts::{Session, populate};
use crate::http::{Failure, Stats, base, encode_segment, fail, percentile_ms, round3, send};
use crate::rooms::{create_room, join, send_history, send_url, txn_nonce};
use crate::{InitialSync, Load, Membership, MessagesBench, SyncFanout, Transport, Users};

const WS_PATH: &str = "/_matrix/client/unstable/io.myelin.websocket/stream";
/// How long a receiver's long-poll may park on the server.
const LONG_POLL_MS: u64 = 30_000;
/// Content key of the benchmark's marker in every message it sends.
const MARKER: &str = "io.myelin.bench";

/// A request whose answer is read whole before the clock is read: the JSON body and when it was
/// complete.
async fn fetch(req: RequestBuilder) -> Result<(Value, Instant, usize), Failure> {
    let transport = |e: reqwest::Error| {
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
    let at = Instant::now();
    if !(200..300).contains(&status) {
        return Err(Failure { status: Some(status), text: String::from_utf8_lossy(&body).into_owned() });
    }
    let v = serde_json::from_slice(&body)
        .map_err(|e| Failure { status: Some(status), text: format!("body is not JSON: {e}") })?;
    Ok((v, at, body.len()))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `POST /user/{userId}/filter`; the filter's ID.
async fn upload_filter(client: &Client, url: &str, s: &Session, filter: &Value) -> Result<String, Failure> {
    let endpoint = format!("{}/_matrix/client/v3/user/{}/filter", base(url), encode_segment(&s.user_id));
    let answer = send(client.post(endpoint).bearer_auth(&s.token).json(filter)).await?;
    answer
        .get("filter_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure { status: None, text: format!("filter upload answered without filter_id: {answer}") })
}

/// p50/p90/p95/p99/max/mean of latencies in microseconds, in milliseconds.
fn percentiles(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let mean = if us.is_empty() { 0.0 } else { us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0 };
    json!({
        "p50": percentile_ms(&us, 0.50),
        "p90": percentile_ms(&us, 0.90),
        "p95": percentile_ms(&us, 0.95),
        "p99": percentile_ms(&us, 0.99),
        "max": percentile_ms(&us, 1.0),
        "mean": round3(mean),
        "samples": us.len(),
    })
}

// --- sync-fanout -------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum SendState {
    Pending,
    Acked,
    Failed,
}

/// One message sent: when its `PUT` started, where, by whom, and how it ended.
struct Sent {
    started: Instant,
    room: usize,
    sender: usize,
    state: SendState,
}

/// What one receiver saw.
#[derive(Default)]
struct Inbox {
    seen: HashSet<u64>,
    latencies_us: Vec<u64>,
    duplicates: u64,
    /// Rooms whose timeline came `limited` in an incremental update (a gap, filled from /messages).
    limited: u64,
    /// Events recovered by filling gaps.
    gap_events: u64,
    /// Sync responses or WebSocket updates taken.
    updates: u64,
    /// Failed syncs, WebSocket connections or gap fills.
    errors: Stats,
}

struct Fanout {
    client: Client,
    url: String,
    run: String,
    sessions: Vec<Arc<Session>>,
    room_ids: Vec<String>,
    room_index: HashMap<String, usize>,
    /// Members (user indexes) of each room.
    members: Vec<Vec<usize>>,
    /// Rooms of each user.
    rooms_of: Vec<Vec<usize>>,
    filter_ids: Vec<String>,
    /// Indexed by message id.
    sent: Mutex<Vec<Sent>>,
    inboxes: Vec<Mutex<Inbox>>,
    /// (message, receiver) pairs seen, duplicates and own echoes not counted.
    delivered: AtomicU64,
    ready: AtomicUsize,
}

impl Fanout {
    /// Registers a message about to be sent, starting its clock; its id.
    fn start_send(&self, room: usize, sender: usize) -> (u64, Instant) {
        let mut sent = self.sent.lock().expect("sent lock");
        let started = Instant::now();
        sent.push(Sent { started, room, sender, state: SendState::Pending });
        ((sent.len() - 1) as u64, started)
    }

    fn end_send(&self, id: u64, ok: bool) {
        let mut sent = self.sent.lock().expect("sent lock");
        sent[id as usize].state = if ok { SendState::Acked } else { SendState::Failed };
    }

    /// The benchmark message id an event carries, if it is one of this run's.
    fn message_id(&self, event: &Value) -> Option<u64> {
        let marker = event.get("content")?.get(MARKER)?;
        if marker.get("run")?.as_str()? != self.run {
            return None;
        }
        marker.get("id")?.as_u64()
    }

    /// Records the events of `events` that receiver `me` got at `at`.
    fn record(&self, me: usize, events: &[Value], at: Instant, from_gap: bool) {
        let ids: Vec<u64> = events.iter().filter_map(|e| self.message_id(e)).collect();
        if ids.is_empty() {
            return;
        }
        let starts: Vec<Option<Instant>> = {
            let sent = self.sent.lock().expect("sent lock");
            ids.iter().map(|&id| sent.get(id as usize).filter(|s| s.sender != me).map(|s| s.started)).collect()
        };
        let mut inbox = self.inboxes[me].lock().expect("inbox lock");
        let mut new = 0;
        for (id, started) in ids.into_iter().zip(starts) {
            let Some(started) = started else { continue };
            if inbox.seen.insert(id) {
                inbox.latencies_us.push(at.saturating_duration_since(started).as_micros() as u64);
                new += 1;
                if from_gap {
                    inbox.gap_events += 1;
                }
            } else {
                inbox.duplicates += 1;
            }
        }
        self.delivered.fetch_add(new, Ordering::Relaxed);
    }

    /// Takes one sync response or WebSocket update of receiver `me`; the rooms whose timeline was
    /// limited (a gap to fill), with their `prev_batch`.
    fn take_update(&self, me: usize, update: &Value, at: Instant, incremental: bool) -> Vec<(usize, String)> {
        let mut gaps = Vec::new();
        self.inboxes[me].lock().expect("inbox lock").updates += 1;
        let Some(joined) = update.pointer("/rooms/join").and_then(Value::as_object) else { return gaps };
        for (room_id, room) in joined {
            let Some(&r) = self.room_index.get(room_id) else { continue };
            let timeline = room.get("timeline");
            if let Some(events) = timeline.and_then(|t| t.get("events")).and_then(Value::as_array) {
                self.record(me, events, at, false);
            }
            let limited = timeline.and_then(|t| t.get("limited")).and_then(Value::as_bool).unwrap_or(false);
            if limited && incremental {
                self.inboxes[me].lock().expect("inbox lock").limited += 1;
                if let Some(prev) = timeline.and_then(|t| t.get("prev_batch")).and_then(Value::as_str) {
                    gaps.push((r, prev.to_owned()));
                }
            }
        }
        gaps
    }

    /// Fills a limited timeline's gap: `/messages` backwards from `prev_batch` to the previous
    /// sync's token.
    async fn fill_gap(&self, me: usize, room: usize, prev_batch: String, since: &str) {
        let s = &self.sessions[me];
        let mut from = prev_batch;
        for _ in 0..100 {
            let url = format!(
                "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&from={}&to={}",
                base(&self.url),
                encode_segment(&self.room_ids[room]),
                encode_segment(&from),
                encode_segment(since)
            );
            match fetch(self.client.get(url).bearer_auth(&s.token)).await {
                Ok((page, at, _)) => {
                    let chunk = page.get("chunk").and_then(Value::as_array).cloned().unwrap_or_default();
                    self.record(me, &chunk, at, true);
                    match page.get("end").and_then(Value::as_str) {
                        Some(end) if !chunk.is_empty() => from = end.to_owned(),
                        _ => return,
                    }
                }
                Err(f) => {
                    self.inboxes[me].lock().expect("inbox lock").errors.record::<()>(Instant::now(), &Err(f));
                    return;
                }
            }
        }
    }

    fn sync_error(&self, me: usize, f: Failure) {
        self.inboxes[me].lock().expect("inbox lock").errors.record::<()>(Instant::now(), &Err(f));
    }

    fn sync_url(&self, me: usize, since: Option<&str>, timeout_ms: u64) -> String {
        let mut url = format!(
            "{}/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            base(&self.url),
            encode_segment(&self.filter_ids[me])
        );
        if let Some(since) = since {
            url.push_str(&format!("&since={}", encode_segment(since)));
        }
        url
    }
}

fn next_batch(update: &Value) -> Option<String> {
    update.get("next_batch").and_then(Value::as_str).map(str::to_owned)
}

/// Receiver `me` over long-poll `/sync`: an initial sync, then `since` loops until aborted.
async fn http_receiver(f: Arc<Fanout>, me: usize) {
    let token = f.sessions[me].token.clone();
    let mut since = loop {
        match fetch(f.client.get(f.sync_url(me, None, 0)).bearer_auth(&token)).await {
            Ok((v, _, _)) => match next_batch(&v) {
                Some(t) => break t,
                None => f.sync_error(me, Failure { status: None, text: "sync answered without next_batch".into() }),
            },
            Err(e) => f.sync_error(me, e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    f.ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match fetch(f.client.get(f.sync_url(me, Some(&since), LONG_POLL_MS)).bearer_auth(&token)).await {
            Ok((v, at, _)) => {
                for (room, prev) in f.take_update(me, &v, at, true) {
                    f.fill_gap(me, room, prev, &since).await;
                }
                match next_batch(&v) {
                    Some(t) => since = t,
                    None => f.sync_error(me, Failure { status: None, text: "sync answered without next_batch".into() }),
                }
            }
            Err(e) => {
                f.sync_error(me, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Receiver `me` over the WebSocket: the first update is the initial sync; after a lost
/// connection it reconnects with the last `next_batch`.
async fn ws_receiver(f: Arc<Fanout>, me: usize) {
    let ws_base = base(&f.url).replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    let mut since: Option<String> = None;
    let mut counted_ready = false;
    loop {
        let mut target = format!("{ws_base}{WS_PATH}?filter={}", encode_segment(&f.filter_ids[me]));
        if let Some(s) = &since {
            target.push_str(&format!("&since={}", encode_segment(s)));
        }
        let mut request = match target.into_client_request() {
            Ok(r) => r,
            Err(e) => fail(&format!("bad WebSocket URL: {e}")),
        };
        let headers = request.headers_mut();
        headers.insert("Authorization", format!("Bearer {}", f.sessions[me].token).parse().expect("header value"));
        headers.insert("Sec-WebSocket-Protocol", "m.json".parse().expect("header value"));
        let mut socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(e) => {
                f.sync_error(me, Failure { status: None, text: format!("websocket connect: {e}") });
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let at = Instant::now();
                    let update: Value = match serde_json::from_str(text.as_str()) {
                        Ok(v) => v,
                        Err(e) => {
                            f.sync_error(
                                me,
                                Failure { status: None, text: format!("websocket message not JSON: {e}") },
                            );
                            continue;
                        }
                    };
                    if update.get("id").is_some() {
                        continue; // an answer; we make no requests
                    }
                    let previous = since.clone();
                    for (room, prev) in f.take_update(me, &update, at, previous.is_some()) {
                        if let Some(p) = &previous {
                            f.fill_gap(me, room, prev, p).await;
                        }
                    }
                    since = next_batch(&update).or(since);
                    if !counted_ready {
                        counted_ready = true;
                        f.ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    f.sync_error(
                        me,
                        Failure { status: None, text: format!("websocket closed by the server: {frame:?}") },
                    );
                    let _ = socket.close(None).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    f.sync_error(me, Failure { status: None, text: format!("websocket: {e}") });
                    break;
                }
                None => {
                    f.sync_error(me, Failure { status: None, text: "websocket: connection ended".into() });
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one message into `room` as `sender`; whether the server acknowledged it.
async fn send_message(f: &Fanout, room: usize, sender: usize, st: &mut Stats) -> bool {
    let (id, started) = f.start_send(room, sender);
    let body = json!({
        "msgtype": "m.text",
        "body": format!("sync bench {}/{id}", f.run),
        MARKER: {"run": f.run, "id": id, "sent_unix_ms": unix_ms()},
    });
    let url = format!("{}{}.{id}", send_url(&f.url, &f.room_ids[room]), f.run);
    let r = send(f.client.put(url).bearer_auth(&f.sessions[sender].token).json(&body)).await;
    st.record(started, &r);
    f.end_send(id, r.is_ok());
    r.is_ok()
}

/// (message, receiver) pairs expected (acknowledged messages times the other members of their
/// room) and those missing.
fn completeness(f: &Fanout) -> (u64, u64) {
    let sent = f.sent.lock().expect("sent lock");
    let mut expected = 0;
    let mut missing = 0;
    let inboxes: Vec<_> = f.inboxes.iter().map(|i| i.lock().expect("inbox lock")).collect();
    for (id, s) in sent.iter().enumerate() {
        if s.state != SendState::Acked {
            continue;
        }
        for &m in &f.members[s.room] {
            if m != s.sender {
                expected += 1;
                if !inboxes[m].seen.contains(&(id as u64)) {
                    missing += 1;
                }
            }
        }
    }
    (expected, missing)
}

pub async fn bench_sync_fanout(client: Client, a: SyncFanout) {
    let url = a.url.clone();
    let (n, r) = (a.users, a.rooms);
    if a.membership == Membership::Spread && n < 2 * r {
        fail("--membership spread needs at least two users a room (--users >= 2 * --rooms)");
    }
    let (messages_cap, duration) = match a.load {
        Load::Light => (a.messages.unwrap_or(200), a.duration.unwrap_or(0.0)),
        Load::Saturating => (a.messages.unwrap_or(0), a.duration.unwrap_or(10.0)),
    };
    if messages_cap == 0 && duration <= 0.0 {
        fail("give --messages or --duration");
    }
    let setup_started = Instant::now();
    let users = Users { url: url.clone(), users: n, prefix: a.prefix.clone(), password: a.password.clone() };
    eprintln!("loadgen: sync-fanout: registering {n} users on {url}");
    let population = populate(&client, &users, &a.secret, a.setup_concurrency).await;
    let sessions = population.sessions;

    // Rooms: room k is created by user k mod N; members join.
    let mut members: Vec<Vec<usize>> = (0..r)
        .map(|k| match a.membership {
            Membership::All => (0..n).collect(),
            Membership::Spread => (0..n).filter(|i| i % r == k).collect(),
        })
        .collect();
    for (k, m) in members.iter_mut().enumerate() {
        m.sort_by_key(|&i| i != k % n); // the creator first
    }
    let rooms_started = Instant::now();
    let mut set = JoinSet::new();
    for (k, m) in members.iter().enumerate() {
        let (client, url, creator, version) =
            (client.clone(), url.clone(), sessions[m[0]].clone(), a.room_version.clone());
        set.spawn(async move {
            let name = format!("myelin-loadgen: sync room {k}");
            (k, create_room(&client, &url, &creator, &name, version.as_deref()).await)
        });
    }
    let mut room_ids = vec![String::new(); r];
    for (k, res) in set.join_all().await {
        room_ids[k] = res.unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    }
    let joins: Vec<(usize, usize)> =
        members.iter().enumerate().flat_map(|(k, m)| m[1..].iter().map(move |&u| (k, u))).collect();
    let joins = Arc::new(joins);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set: JoinSet<Result<(), Failure>> = JoinSet::new();
    for _ in 0..a.setup_concurrency.max(1) {
        let (client, url, joins, next, sessions, room_ids) =
            (client.clone(), url.clone(), joins.clone(), next.clone(), sessions.clone(), room_ids.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(k, u)) = joins.get(i) else { return Ok(()) };
                join(&client, &url, &sessions[u], &room_ids[k]).await?;
            }
        });
    }
    for res in set.join_all().await {
        if let Err(f) = res {
            fail(&format!("a join failed: {}", f.describe()));
        }
    }
    let rooms_s = rooms_started.elapsed().as_secs_f64();
    let mut rooms_of = vec![Vec::new(); n];
    for (k, m) in members.iter().enumerate() {
        for &u in m {
            rooms_of[u].push(k);
        }
    }

    let filter = json!({
        "room": {"timeline": {"limit": a.timeline_limit}, "state": {"lazy_load_members": true}},
    });
    let mut filter_ids = Vec::with_capacity(n);
    for s in &sessions {
        filter_ids.push(
            upload_filter(&client, &url, s, &filter)
                .await
                .unwrap_or_else(|f| fail(&format!("filter upload failed: {}", f.describe()))),
        );
    }
    let room_index = room_ids.iter().enumerate().map(|(k, id)| (id.clone(), k)).collect();
    let f = Arc::new(Fanout {
        client: client.clone(),
        url: url.clone(),
        run: txn_nonce(),
        sessions,
        room_ids,
        room_index,
        members,
        rooms_of,
        filter_ids,
        sent: Mutex::new(Vec::new()),
        inboxes: (0..n).map(|_| Mutex::new(Inbox::default())).collect(),
        delivered: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
    });

    // Receivers: every user, each with its sync loop, all started before the first send.
    let transport = match a.transport {
        Transport::Http => "http",
        Transport::Websocket => "websocket",
    };
    eprintln!("loadgen: sync-fanout: {n} receivers over {transport}");
    let mut receivers = JoinSet::new();
    for me in 0..n {
        match a.transport {
            Transport::Http => receivers.spawn(http_receiver(f.clone(), me)),
            Transport::Websocket => receivers.spawn(ws_receiver(f.clone(), me)),
        };
    }
    let ready_deadline = Instant::now() + Duration::from_secs(120);
    while f.ready.load(Ordering::SeqCst) < n {
        if Instant::now() > ready_deadline {
            fail(&format!(
                "only {} of {n} receivers got their initial sync within 120 s",
                f.ready.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the first long-polls park (WebSocket tasks are waiting already).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let setup_s = setup_started.elapsed().as_secs_f64();

    // Senders.
    let load = match a.load {
        Load::Light => "light",
        Load::Saturating => "saturating",
    };
    eprintln!(
        "loadgen: sync-fanout {load}: {}{}",
        if messages_cap > 0 { format!("up to {messages_cap} messages") } else { "messages".into() },
        if duration > 0.0 { format!(" for up to {duration}s") } else { String::new() }
    );
    let send_started = Instant::now();
    let deadline = (duration > 0.0).then(|| send_started + Duration::from_secs_f64(duration));
    let taken = Arc::new(AtomicU64::new(0));
    let may_send = {
        let taken = taken.clone();
        move || {
            deadline.is_none_or(|d| Instant::now() < d)
                && (messages_cap == 0 || taken.fetch_add(1, Ordering::Relaxed) < messages_cap)
        }
    };
    let send_stats = match a.load {
        Load::Light => {
            // One message in flight at a time, paced at --rate: rooms in turn, each message sent by
            // the room's members in turn.
            let mut st = Stats::default();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(0.001)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0usize;
            loop {
                tick.tick().await;
                if !may_send() {
                    break;
                }
                let room = k % r;
                let m = &f.members[room];
                send_message(&f, room, m[(k / r) % m.len()], &mut st).await;
                k += 1;
            }
            st
        }
        Load::Saturating => {
            // Every user sends as fast as it can, into its rooms in turn.
            let mut set = JoinSet::new();
            for u in 0..n {
                let (f, may_send) = (f.clone(), may_send.clone());
                set.spawn(async move {
                    let mut st = Stats::default();
                    let mut k = 0usize;
                    while may_send() {
                        let rooms = &f.rooms_of[u];
                        send_message(&f, rooms[k % rooms.len()], u, &mut st).await;
                        k += 1;
                    }
                    st
                });
            }
            let mut st = Stats::default();
            for s in set.join_all().await {
                st.merge(s);
            }
            st
        }
    };
    let send_elapsed = send_started.elapsed();

    // Wait for every receiver to see every acknowledged message, or the drain deadline.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + Duration::from_secs_f64(a.drain);
    let (expected, missing) = loop {
        let expected: u64 = {
            let sent = f.sent.lock().expect("sent lock");
            sent.iter().filter(|s| s.state == SendState::Acked).map(|s| f.members[s.room].len() as u64 - 1).sum()
        };
        let done = f.delivered.load(Ordering::Relaxed) >= expected;
        if done || Instant::now() >= drain_deadline {
            let (expected, missing) = completeness(&f);
            if missing == 0 || Instant::now() >= drain_deadline {
                break (expected, missing);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drain_s = drain_started.elapsed().as_secs_f64();
    receivers.abort_all();
    while receivers.join_next().await.is_some() {}

    // The result line.
    let mut latencies = Vec::new();
    let (mut duplicates, mut limited, mut gap_events, mut updates) = (0, 0, 0, 0);
    let mut sync_errors = Stats::default();
    for inbox in &f.inboxes {
        let mut inbox = inbox.lock().expect("inbox lock");
        latencies.append(&mut inbox.latencies_us);
        duplicates += inbox.duplicates;
        limited += inbox.limited;
        gap_events += inbox.gap_events;
        updates += inbox.updates;
        sync_errors.merge(std::mem::take(&mut inbox.errors));
    }
    let delivered = latencies.len() as u64;
    let secs = send_elapsed.as_secs_f64();
    let send_latencies = send_stats.latencies_us.clone();
    let members_per_room = f.members.iter().map(Vec::len).sum::<usize>() as f64 / r as f64;
    let line = json!({
        "scenario": "sync-fanout",
        "label": a.label,
        "url": url,
        "transport": transport,
        "load": load,
        "membership": match a.membership { Membership::All => "all", Membership::Spread => "spread" },
        "users": n,
        "rooms": r,
        "members_per_room": round3(members_per_room),
        "timeline_limit": a.timeline_limit,
        "rate_per_s": if a.load == Load::Light { json!(a.rate) } else { Value::Null },
        "messages_cap": messages_cap,
        "duration_s": duration,
        "room_version": a.room_version,
        "setup": {
            "register_s": round3(population.elapsed_s),
            "users_created": population.created,
            "users_existing": population.existing,
            "rooms_and_joins_s": round3(rooms_s),
            "total_s": round3(setup_s),
        },
        "sends": {
            "ok": send_stats.ok,
            "errors": send_stats.errors,
            "error_samples": send_stats.error_samples(),
            "elapsed_s": round3(secs),
            "rate_per_s": round3(send_stats.ok as f64 / secs),
            "latency_ms": percentiles(send_latencies),
        },
        "delivery": {
            "measured_from": "the start of the PUT /send",
            "pairs_expected": expected,
            "pairs_delivered": delivered,
            "missing": missing,
            "duplicates": duplicates,
            "limited_timelines": limited,
            "gap_events": gap_events,
            "drain_s": round3(drain_s),
            "latency_ms": percentiles(latencies),
        },
        "syncs": {
            "updates": updates,
            "errors": sync_errors.errors,
            "error_samples": sync_errors.error_samples(),
        },
        "complete": missing == 0,
        "errors": send_stats.errors + sync_errors.errors + missing,
    });
    println!("{line}");
    if missing > 0 {
        eprintln!("loadgen: sync-fanout: {missing} of {expected} (message, receiver) pairs were never delivered");
        std::process::exit(1);
    }
}

// --- initial-sync ------------------------------------------------------------------------------

/// One user, `--rooms` rooms of its own with `--history` messages each; then full initial syncs
/// (`GET /sync` without `since`, with the uploaded filter), one at a time.
pub async fn bench_initial_sync(client: Client, a: InitialSync) {
    let url = a.url.clone();
    let users = Users { url: url.clone(), users: 1, prefix: a.prefix.clone(), password: a.password.clone() };
    let population = populate(&client, &users, &a.secret, 1).await;
    let s = population.sessions[0].clone();
    eprintln!("loadgen: initial-sync: {} rooms with {} messages each on {url}", a.rooms, a.history);
    let rooms_started = Instant::now();
    let mut room_ids = Vec::with_capacity(a.rooms);
    for k in 0..a.rooms {
        let name = format!("myelin-loadgen: initial sync room {k}");
        room_ids.push(
            create_room(&client, &url, &s, &name, a.room_version.as_deref())
                .await
                .unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe()))),
        );
    }
    let rooms_s = rooms_started.elapsed().as_secs_f64();
    let history_started = Instant::now();
    let senders = [s.clone()];
    let sends = room_ids.iter().map(|room| send_history(&client, &url, room, &senders, a.history, 1));
    let mut history_errors = Stats::default();
    for (st, _) in futures::future::join_all(sends).await {
        history_errors.merge(st);
    }
    if history_errors.errors > 0 {
        let samples: Vec<String> = history_errors.samples.iter().map(|(m, c)| format!("{c} x {m}")).collect();
        fail(&format!("{} history sends failed: {}", history_errors.errors, samples.join("; ")));
    }
    let history_s = history_started.elapsed().as_secs_f64();
    let filter = json!({
        "room": {"timeline": {"limit": a.timeline_limit}, "state": {"lazy_load_members": true}},
    });
    let filter_id = upload_filter(&client, &url, &s, &filter)
        .await
        .unwrap_or_else(|f| fail(&format!("filter upload failed: {}", f.describe())));

    // `timeout` changes with every request: Synapse caches a /sync answer for two minutes under a
    // key that holds it, and an initial sync never waits, so it changes nothing else.
    let mut k: u64 = 0;
    let mut one = |client: Client, token: String, filter_id: String, url: String| {
        k += 1;
        let target = format!("{}/_matrix/client/v3/sync?filter={}&timeout={k}", base(&url), encode_segment(&filter_id));
        async move {
            let t0 = Instant::now();
            let r = fetch(client.get(target).bearer_auth(&token)).await;
            (t0, r)
        }
    };
    let warm_deadline = Instant::now() + Duration::from_secs_f64(a.warmup);
    while Instant::now() < warm_deadline {
        let _ = one(client.clone(), s.token.clone(), filter_id.clone(), url.clone()).await;
    }
    eprintln!("loadgen: initial-sync for {}s", a.duration);
    let mut st = Stats::default();
    let (mut bytes, mut rooms_seen, mut events_seen) = (0usize, usize::MAX, 0usize);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    while Instant::now() < deadline {
        let (t0, r) = one(client.clone(), s.token.clone(), filter_id.clone(), url.clone()).await;
        if let Ok((v, _, len)) = &r {
            bytes = *len;
            let joined = v.pointer("/rooms/join").and_then(Value::as_object);
            let ours = joined.map_or(0, |j| room_ids.iter().filter(|id| j.contains_key(id.as_str())).count());
            rooms_seen = rooms_seen.min(ours);
            events_seen = joined.map_or(0, |j| {
                j.values()
                    .map(|room| room.pointer("/timeline/events").and_then(Value::as_array).map_or(0, Vec::len))
                    .sum()
            });
        }
        st.record(t0, &r.map(|_| ()));
    }
    let elapsed = started.elapsed();
    let mut head = json!({
        "scenario": "initial-sync",
        "label": a.label,
        "url": url,
        "rooms": a.rooms,
        "history": a.history,
        "timeline_limit": a.timeline_limit,
        "filter": filter,
        "duration_s": a.duration,
        "room_version": a.room_version,
        "response_bytes": bytes,
        "rooms_returned": if rooms_seen == usize::MAX { 0 } else { rooms_seen },
        "timeline_events_returned": events_seen,
        "setup": {
            "register_s": round3(population.elapsed_s),
            "rooms_s": round3(rooms_s),
            "history_s": round3(history_s),
            "history_sends_per_s": round3((a.history * a.rooms as u64) as f64 / history_s),
        },
    });
    if let Value::Object(h) = &mut head {
        h.extend(crate::http::measured(st, elapsed));
    }
    println!("{head}");
}

// --- messages ----------------------------------------------------------------------------------

/// One room with `--messages` messages; then `GET /rooms/{roomId}/messages?dir=b&limit=N`, one at
/// a time, checking how many events each answer carries.
pub async fn bench_messages(client: Client, a: MessagesBench) {
    let url = a.url.clone();
    let users = Users { url: url.clone(), users: 1, prefix: a.prefix.clone(), password: a.password.clone() };
    let population = populate(&client, &users, &a.secret, 1).await;
    let s = population.sessions[0].clone();
    eprintln!("loadgen: messages: a room with {} messages on {url}", a.messages);
    let room = create_room(&client, &url, &s, "myelin-loadgen: history", a.room_version.as_deref())
        .await
        .unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    let (history, history_took) =
        send_history(&client, &url, &room, std::slice::from_ref(&s), a.messages, a.send_concurrency).await;
    if history.errors > 0 {
        let samples: Vec<String> = history.samples.iter().map(|(m, c)| format!("{c} x {m}")).collect();
        fail(&format!("{} history sends failed: {}", history.errors, samples.join("; ")));
    }
    let target =
        format!("{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit={}", base(&url), encode_segment(&room), a.limit);
    let one = || {
        let (client, target, token) = (client.clone(), target.clone(), s.token.clone());
        async move {
            let t0 = Instant::now();
            (t0, fetch(client.get(target).bearer_auth(&token)).await)
        }
    };
    let warm_deadline = Instant::now() + Duration::from_secs_f64(a.warmup);
    while Instant::now() < warm_deadline {
        let _ = one().await;
    }
    eprintln!("loadgen: messages for {}s", a.duration);
    let mut st = Stats::default();
    let (mut min_events, mut max_events, mut messages_returned, mut bytes) = (usize::MAX, 0usize, 0usize, 0usize);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    while Instant::now() < deadline {
        let (t0, r) = one().await;
        if let Ok((v, _, len)) = &r {
            let chunk = v.get("chunk").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            min_events = min_events.min(chunk.len());
            max_events = max_events.max(chunk.len());
            messages_returned = chunk.iter().filter(|e| e["type"] == "m.room.message").count();
            bytes = *len;
        }
        st.record(t0, &r.map(|_| ()));
    }
    let elapsed = started.elapsed();
    let mut head = json!({
        "scenario": "messages",
        "label": a.label,
        "url": url,
        "history": a.messages,
        "limit": a.limit,
        "duration_s": a.duration,
        "room_version": a.room_version,
        "events_returned": {"min": if min_events == usize::MAX { 0 } else { min_events }, "max": max_events},
        "messages_returned": messages_returned,
        "response_bytes": bytes,
        "setup": {
            "register_s": round3(population.elapsed_s),
            "history_s": round3(history_took.as_secs_f64()),
            "history_sends_per_s": round3(history.ok as f64 / history_took.as_secs_f64()),
        },
    });
    if let Value::Object(h) = &mut head {
        h.extend(crate::http::measured(st, elapsed));
    }
    println!("{head}");
}
