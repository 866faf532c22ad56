//! Room scenarios: `send-one-room`, `send-many-rooms`, `state-lookup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::accounts::{Session, close_sessions, populate, sessions};
use crate::http::{Failure, Stats, base, encode_segment, fail, print_line, round3, run_tasks, send};
use crate::{Bench, StateLookup, Users};

/// `POST /createRoom` with `preset: public_chat` and a name; the new room's ID.
pub async fn create_room(
    client: &Client,
    url: &str,
    s: &Session,
    name: &str,
    version: Option<&str>,
) -> Result<String, Failure> {
    let mut body = json!({"preset": "public_chat", "name": name});
    if let Some(v) = version {
        body["room_version"] = json!(v);
    }
    let answer =
        send(client.post(format!("{}/_matrix/client/v3/createRoom", base(url))).bearer_auth(&s.token).json(&body))
            .await?;
    answer
        .get("room_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure { status: None, text: format!("createRoom answered without room_id: {answer}") })
}

pub async fn join(client: &Client, url: &str, s: &Session, room_id: &str) -> Result<Value, Failure> {
    send(
        client
            .post(format!("{}/_matrix/client/v3/join/{}", base(url), encode_segment(room_id)))
            .bearer_auth(&s.token)
            .json(&json!({})),
    )
    .await
}

/// Join every session to the room, `concurrency` joins in flight; sessions of the same user join
/// once. Returns the seconds it took, or the errors seen.
pub async fn join_all(
    client: &Client,
    url: &str,
    room_id: &str,
    sess: &[Arc<Session>],
    concurrency: usize,
) -> Result<f64, Stats> {
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let joiners: Arc<Vec<Arc<Session>>> =
        Arc::new(sess.iter().filter(|s| seen.insert(s.user_id.clone())).cloned().collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, room_id, joiners, next) =
            (client.clone(), url.to_owned(), room_id.to_owned(), joiners.clone(), next.clone());
        set.spawn(async move {
            let mut st = Stats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= joiners.len() {
                    break;
                }
                let t0 = Instant::now();
                let r = join(&client, &url, &joiners[i], &room_id).await;
                st.record(t0, &r);
                if (i + 1) % 1000 == 0 {
                    eprintln!("loadgen: {} of {} joined", i + 1, joiners.len());
                }
            }
            st
        });
    }
    let mut st = Stats::default();
    for s in set.join_all().await {
        st.merge(s);
    }
    if st.errors > 0 { Err(st) } else { Ok(started.elapsed().as_secs_f64()) }
}

pub fn join_failed(st: &Stats) -> ! {
    let samples: Vec<String> = st.samples.iter().map(|(m, c)| format!("{c} x {m}")).collect();
    fail(&format!("{} joins failed: {}", st.errors, samples.join("; ")))
}

/// A unique prefix for transaction IDs, so that no two runs share one.
pub fn txn_nonce() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

pub fn send_url(url: &str, room_id: &str) -> String {
    format!("{}/_matrix/client/v3/rooms/{}/send/m.room.message/", base(url), encode_segment(room_id))
}

/// One task's loop of `PUT /send` with a fresh transaction ID each time, until the deadline.
async fn send_loop(
    client: Client,
    prefix: String,
    token: String,
    nonce: String,
    task: usize,
    deadline: Instant,
) -> Stats {
    let mut st = Stats::default();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let body = json!({"msgtype": "m.text", "body": format!("bench message {n} from task {task}")});
        let t0 = Instant::now();
        let r = send(client.put(format!("{prefix}{nonce}.{task}.{n}")).bearer_auth(&token).json(&body)).await;
        st.record(t0, &r);
        n += 1;
    }
    st
}

pub async fn bench_send_one_room(client: Client, b: Bench, version: Option<String>) {
    let sess = sessions(&client, &b).await;
    let url = b.users.url.clone();
    let room_id = create_room(&client, &url, &sess[0], "myelin-loadgen: one room", version.as_deref())
        .await
        .unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    if let Err(st) = join_all(&client, &url, &room_id, &sess[1..], b.concurrency).await {
        join_failed(&st);
    }
    let (prefix, nonce) = (send_url(&url, &room_id), txn_nonce());
    b.announce("send-one-room");
    let (st, elapsed) = run_tasks(b.concurrency, b.duration, |i, deadline| {
        send_loop(client.clone(), prefix.clone(), sess[i].token.clone(), nonce.clone(), i, deadline)
    })
    .await;
    print_line(b.head("send-one-room", json!({"rooms": 1, "room_version": version})), st, elapsed);
    close_sessions(&client, &url, &sess).await;
}

pub async fn bench_send_many_rooms(client: Client, b: Bench, version: Option<String>) {
    let sess = sessions(&client, &b).await;
    let url = b.users.url.clone();
    let mut set = JoinSet::new();
    for (i, s) in sess.iter().enumerate() {
        let (client, url, s, version) = (client.clone(), url.clone(), s.clone(), version.clone());
        set.spawn(async move {
            let name = format!("myelin-loadgen: room {i}");
            (i, create_room(&client, &url, &s, &name, version.as_deref()).await)
        });
    }
    let mut rooms = vec![String::new(); sess.len()];
    for (i, r) in set.join_all().await {
        rooms[i] = r.unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    }
    let nonce = txn_nonce();
    b.announce("send-many-rooms");
    let (st, elapsed) = run_tasks(b.concurrency, b.duration, |i, deadline| {
        let prefix = send_url(&url, &rooms[i]);
        send_loop(client.clone(), prefix, sess[i].token.clone(), nonce.clone(), i, deadline)
    })
    .await;
    print_line(b.head("send-many-rooms", json!({"rooms": rooms.len(), "room_version": version})), st, elapsed);
    close_sessions(&client, &url, &sess).await;
}

/// Send `count` messages into the room from `senders`, `concurrency` in flight; the stats of the
/// sends and the time they took.
pub async fn send_history(
    client: &Client,
    url: &str,
    room_id: &str,
    senders: &[Arc<Session>],
    count: u64,
    concurrency: usize,
) -> (Stats, Duration) {
    let started = Instant::now();
    let (prefix, nonce) = (send_url(url, room_id), txn_nonce());
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for task in 0..concurrency.max(1) {
        let (client, prefix, nonce, next) = (client.clone(), prefix.clone(), nonce.clone(), next.clone());
        let token = senders[task % senders.len()].token.clone();
        set.spawn(async move {
            let mut st = Stats::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let body = json!({"msgtype": "m.text", "body": format!("history message {n}")});
                let t0 = Instant::now();
                let r = send(client.put(format!("{prefix}{nonce}.{task}.{n}")).bearer_auth(&token).json(&body)).await;
                st.record(t0, &r);
                if (n + 1) % 5000 == 0 {
                    eprintln!("loadgen: {} of {count} history messages sent", n + 1);
                }
            }
            st
        });
    }
    let mut st = Stats::default();
    for s in set.join_all().await {
        st.merge(s);
    }
    (st, started.elapsed())
}

/// Which state lookup a measurement makes.
#[derive(Clone, Copy)]
enum Lookup {
    /// `GET /rooms/{roomId}/state/m.room.member/{userId}`, for members picked at random.
    Member,
    /// `GET /rooms/{roomId}/state/m.room.name`.
    Name,
}

impl Lookup {
    fn key(self) -> &'static str {
        match self {
            Lookup::Member => "member",
            Lookup::Name => "name",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Lookup::Member => "GET /rooms/{roomId}/state/m.room.member/{userId}",
            Lookup::Name => "GET /rooms/{roomId}/state/m.room.name",
        }
    }
}

/// `concurrency` tasks looking up state for `duration` seconds; task i reads as member i.
async fn lookups(
    client: &Client,
    url: &str,
    room_id: &str,
    members: &Arc<Vec<Arc<Session>>>,
    kind: Lookup,
    concurrency: usize,
    duration: f64,
) -> (Stats, Duration) {
    let state_url = format!("{}/_matrix/client/v3/rooms/{}/state/", base(url), encode_segment(room_id));
    run_tasks(concurrency, duration, |i, deadline| {
        let (client, state_url, members) = (client.clone(), state_url.clone(), members.clone());
        async move {
            let token = &members[i % members.len()].token;
            let mut st = Stats::default();
            // xorshift64, seeded per task: which member to look up next.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0xBF58_476D_1CE4_E5B9);
            while Instant::now() < deadline {
                let target = match kind {
                    Lookup::Member => {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let who = &members[(x % members.len() as u64) as usize].user_id;
                        format!("{state_url}m.room.member/{}", encode_segment(who))
                    }
                    Lookup::Name => format!("{state_url}m.room.name"),
                };
                let t0 = Instant::now();
                let r = send(client.get(target).bearer_auth(token)).await;
                st.record(t0, &r);
            }
            st
        }
    })
    .await
}

pub async fn bench_state_lookup(client: Client, a: StateLookup) {
    let url = a.url.clone();
    let users = Users { url: url.clone(), users: a.members, prefix: a.prefix.clone(), password: a.password.clone() };
    eprintln!("loadgen: state-lookup: registering {} members on {url}", a.members);
    let population = populate(&client, &users, &a.secret, a.setup_concurrency).await;
    let members = Arc::new(population.sessions);
    eprintln!(
        "loadgen: {} members ready in {:.1}s ({} created, {} existed)",
        members.len(),
        population.elapsed_s,
        population.created,
        population.existing
    );
    let room_id = create_room(&client, &url, &members[0], "myelin-loadgen: state lookups", a.room_version.as_deref())
        .await
        .unwrap_or_else(|f| fail(&format!("createRoom failed: {}", f.describe())));
    let join_s = join_all(&client, &url, &room_id, &members[1..], a.join_concurrency)
        .await
        .unwrap_or_else(|st| join_failed(&st));
    eprintln!("loadgen: {} joins in {join_s:.1}s", members.len() - 1);
    let joined = send(
        client
            .get(format!("{}/_matrix/client/v3/rooms/{}/joined_members", base(&url), encode_segment(&room_id)))
            .bearer_auth(&members[0].token),
    )
    .await
    .map(|v| v.get("joined").and_then(Value::as_object).map_or(0, |m| m.len()))
    .unwrap_or_else(|f| fail(&format!("joined_members failed: {}", f.describe())));
    if joined != members.len() {
        fail(&format!("the room has {joined} joined members, not {}", members.len()));
    }

    let mut setup = json!({
        "register_s": round3(population.elapsed_s),
        "users_created": population.created,
        "users_existing": population.existing,
        "join_s": round3(join_s),
        "joins_per_s": round3((members.len() - 1) as f64 / join_s),
        "joined_members": joined,
    });
    let mut history_sent: u64 = 0;
    let mut targets = a.history.clone();
    targets.sort_unstable();
    for target in targets {
        if target > history_sent {
            let senders = &members[..members.len().min(16)];
            let (st, took) =
                send_history(&client, &url, &room_id, senders, target - history_sent, a.send_concurrency).await;
            eprintln!("loadgen: {} history messages in {:.1}s ({} errors)", st.ok, took.as_secs_f64(), st.errors);
            history_sent += st.ok;
            setup[format!("history_{target}_send")] = json!({
                "ok": st.ok, "errors": st.errors, "error_samples": st.error_samples(),
                "elapsed_s": round3(took.as_secs_f64()),
                "throughput_rps": round3(st.ok as f64 / took.as_secs_f64()),
            });
        }
        for kind in [Lookup::Member, Lookup::Name] {
            if a.warmup > 0.0 {
                lookups(&client, &url, &room_id, &members, kind, *a.concurrency.iter().max().unwrap_or(&1), a.warmup)
                    .await;
            }
            for &c in &a.concurrency {
                eprintln!(
                    "loadgen: state-lookup {} with {c} tasks for {}s, {} members, {history_sent} messages",
                    kind.key(),
                    a.duration,
                    members.len()
                );
                let (st, elapsed) = lookups(&client, &url, &room_id, &members, kind, c, a.duration).await;
                let head = json!({
                    "scenario": "state-lookup",
                    "label": a.label,
                    "url": url,
                    "request": kind.key(),
                    "path": kind.path(),
                    "members": members.len(),
                    "history": target,
                    "history_sent": history_sent,
                    "concurrency": c,
                    "duration_s": a.duration,
                    "room_version": a.room_version,
                    "setup": setup,
                });
                print_line(head, st, elapsed);
            }
        }
    }
}
