//! State lookups in a big room do not grow with the room's history.
//!
//! `cargo bench --bench state [-- --members 10000 --history 0,10000,50000 --lookups 20000
//! --restarts 15 --dir DIR]` builds, in process and on disk, a public room with `--members`
//! joined members, then at each history size (messages sent into the room, cumulative) measures:
//!
//! - `member`: `Rooms::current_state_event(room, "m.room.member", user)` for members at random;
//! - `name`: `Rooms::current_state_event(room, "m.room.name", "")`;
//! - `state_map`: the room's whole current state as a map (`Rooms::current_state`), which is what
//!   the layered snapshots rebuild;
//! - `state_events`: that map and every event in it, loaded and parsed (`Rooms::state_events`),
//!   what `GET /rooms/{roomId}/state` starts from;
//! - `room_record` and `state_key`: the two database reads every lookup makes (the room's record,
//!   which names its current state snapshot, and the short ID of `(type, state_key)`), to break
//!   the lookups down.
//!
//! Each twice: `warm` (the same `Services`, after one pass over every member to fill the caches)
//! and `cold` (the first call after a restart of `Services` on the same database, so Myelin's
//! caches and RocksDB's block cache are empty; the operating system's page cache is not).
//! Accounts are created without a password so that no hash is computed. One JSON line per
//! measurement, plus the set-up phases' timings.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use myelin::{
    config::Config,
    service::{
        Services,
        accounts::NewAccount,
        rooms::{CreateRoom, EventDraft, MembershipChange, canonical_content},
    },
    storage::Storage,
};
use ruma::{OwnedRoomId, OwnedUserId, events::TimelineEventType};
use serde_json::{Map, Value, json};

const SERVER_NAME: &str = "bench.local";
/// Tasks that register, join and send at once.
const TASKS: usize = 16;

struct Args {
    members: usize,
    history: Vec<u64>,
    lookups: usize,
    restarts: usize,
    dir: std::path::PathBuf,
}

fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let list =
        |s: String| s.split(',').filter(|p| !p.is_empty()).map(|p| p.trim().parse().expect("a number")).collect();
    Args {
        members: flag("--members").map_or(10_000, |s| s.parse().expect("--members N")),
        history: flag("--history").map_or_else(|| vec![0, 10_000, 50_000], list),
        lookups: flag("--lookups").map_or(20_000, |s| s.parse().expect("--lookups N")),
        restarts: flag("--restarts").map_or(15, |s| s.parse().expect("--restarts N")),
        dir: flag("--dir").map_or_else(std::env::temp_dir, Into::into),
    }
}

async fn open(dir: &Path) -> Arc<Services> {
    let config = Config::load(
        None,
        [
            ("MYELIN_SERVER_NAME".to_owned(), SERVER_NAME.to_owned()),
            ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().expect("UTF-8 path").to_owned()),
        ],
    )
    .expect("config");
    let storage = Storage::open(&config.database).expect("open the database");
    Services::new(config, storage).await.expect("services")
}

/// Closes the database: `Services` must be the last holder of it.
fn close(services: Arc<Services>) {
    let services = Arc::try_unwrap(services).unwrap_or_else(|_| panic!("Services still shared"));
    drop(services);
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir_in(&args.dir).expect("temporary directory");
    let db = dir.path().join("db");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args, &db));
}

async fn run(args: &Args, db: &Path) {
    let services = open(db).await;
    let users: Arc<Vec<OwnedUserId>> = Arc::new(
        (0..args.members.max(1)).map(|i| format!("@member{i}:{SERVER_NAME}").try_into().expect("user ID")).collect(),
    );

    // Accounts, without passwords.
    let started = Instant::now();
    let (s, u) = (services.clone(), users.clone());
    on_tasks(users.len(), move |i| {
        let (services, user) = (s.clone(), u[i].clone());
        async move {
            let account = NewAccount { user_id: Some(user), password: None, login: None, ..Default::default() };
            services.accounts.register(account).await.expect("register");
        }
    })
    .await;
    let register_s = started.elapsed().as_secs_f64();

    // The room, and everyone in it.
    let request =
        CreateRoom { preset: Some("public_chat".into()), name: Some("State benchmark".into()), ..Default::default() };
    let room: OwnedRoomId = services.rooms.create_room(&users[0], request).await.expect("createRoom");
    let started = Instant::now();
    let (s, u, r) = (services.clone(), users.clone(), room.clone());
    on_tasks(users.len() - 1, move |i| {
        let (services, user, room) = (s.clone(), u[i + 1].clone(), r.clone());
        async move {
            let join = MembershipChange::Join { reason: None, extra: Map::new() };
            services.rooms.change_membership(&room, &user, join).await.expect("join");
        }
    })
    .await;
    let join_s = started.elapsed().as_secs_f64();
    let state = services.rooms.current_state(&services.rooms.room_exists(&room).unwrap()).unwrap();
    println!(
        "{}",
        json!({
            "scenario": "state-inprocess", "phase": "populate", "members": users.len(),
            "register_s": register_s, "join_s": join_s, "joins_per_s": (users.len() - 1) as f64 / join_s,
            "state_entries": state.len(),
        })
    );

    let mut services = services;
    let mut sent = 0u64;
    let mut history = args.history.clone();
    history.sort_unstable();
    for target in history {
        if target > sent {
            let count = target - sent;
            let started = Instant::now();
            let (s, u, r) = (services.clone(), users.clone(), room.clone());
            on_tasks(count as usize, move |n| {
                let (services, user, room) = (s.clone(), u[n % TASKS.min(u.len())].clone(), r.clone());
                async move {
                    let content = json!({"msgtype": "m.text", "body": format!("history message {n}")});
                    let Value::Object(content) = content else { unreachable!() };
                    let draft = EventDraft::new(TimelineEventType::RoomMessage, canonical_content(content).unwrap());
                    services.rooms.send(&room, &user, draft, None).await.expect("send");
                }
            })
            .await;
            let took = started.elapsed().as_secs_f64();
            sent = target;
            println!(
                "{}",
                json!({
                    "scenario": "state-inprocess", "phase": "history", "history": target, "sent": count,
                    "send_s": took, "sends_per_s": count as f64 / took, "tasks": TASKS,
                })
            );
        }
        let shape = snapshot_chain(&services, &room);
        let db_bytes = dir_size(db);
        let line = |op: &str, cache: &str, mut latencies: Vec<Duration>| {
            latencies.sort_unstable();
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let pct = |q: f64| us(latencies[((latencies.len() - 1) as f64 * q).round() as usize]);
            let mean = latencies.iter().map(|d| us(*d)).sum::<f64>() / latencies.len() as f64;
            println!(
                "{}",
                json!({
                    "scenario": "state-inprocess", "phase": "lookup", "operation": op, "cache": cache,
                    "members": users.len(), "history": target, "samples": latencies.len(),
                    "latency_us": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0), "mean": mean},
                    "snapshots_read": shape.0, "entries_decoded": shape.1, "state_entries": shape.2,
                    "db_bytes": db_bytes,
                })
            );
        };

        // Warm: one pass over every member first.
        for user in users.iter() {
            services.rooms.current_state_event(&room, "m.room.member", user.as_str()).unwrap().expect("member");
        }
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next_user = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            users[(rng % users.len() as u64) as usize].clone()
        };
        let timed = |f: &mut dyn FnMut()| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        };
        let ops: [(&str, usize); 6] = [
            ("member", args.lookups),
            ("name", args.lookups),
            ("room_record", args.lookups),
            ("state_key", args.lookups),
            ("state_map", (args.lookups / 20).max(10)),
            ("state_events", (args.lookups / 200).max(10)),
        ];
        for (op, samples) in ops {
            let latencies = (0..samples)
                .map(|_| {
                    let user = next_user();
                    timed(&mut || run_op(&services, &room, op, &user))
                })
                .collect();
            line(op, "warm", latencies);
        }

        // Cold: the first call after each restart.
        for (op, _) in ops {
            let mut latencies = Vec::with_capacity(args.restarts);
            for _ in 0..args.restarts {
                close(services);
                services = open(db).await;
                let user = next_user();
                latencies.push(timed(&mut || run_op(&services, &room, op, &user)));
            }
            line(op, "cold", latencies);
        }
    }
    close(services);
}

fn run_op(services: &Services, room: &OwnedRoomId, op: &str, user: &OwnedUserId) {
    let rooms = &services.rooms;
    match op {
        "member" => {
            let pdu = rooms.current_state_event(room, "m.room.member", user.as_str()).unwrap().expect("member");
            assert_eq!(pdu.content_str("membership").as_deref(), Some("join"));
        }
        "name" => {
            rooms.current_state_event(room, "m.room.name", "").unwrap().expect("name");
        }
        // The two database reads of every lookup, for a breakdown.
        "room_record" => {
            services.storage.room(room).unwrap().expect("room");
        }
        "state_key" => {
            services.storage.short_state_key("m.room.member", user.as_str()).unwrap().expect("state key");
        }
        "state_map" => {
            let state = rooms.current_state(&rooms.room_exists(room).unwrap()).unwrap();
            assert!(!state.is_empty());
        }
        "state_events" => {
            let state = rooms.current_state(&rooms.room_exists(room).unwrap()).unwrap();
            let events = rooms.state_events(&state).unwrap();
            assert_eq!(events.len(), state.len());
        }
        _ => unreachable!(),
    }
}

/// The current state's snapshot chain: snapshots read to rebuild it (the chain from its base),
/// entries decoded on the way, and entries in the state.
fn snapshot_chain(services: &Services, room: &OwnedRoomId) -> (u64, u64, usize) {
    let record = services.rooms.room_exists(room).unwrap();
    let (mut snapshots, mut entries) = (0u64, 0u64);
    let mut next = Some(record.state);
    while let Some(id) = next {
        let snapshot = services.storage.snapshot(id).unwrap().expect("snapshot");
        snapshots += 1;
        entries += (snapshot.added.len() + snapshot.removed.len()) as u64;
        next = snapshot.parent;
    }
    (snapshots, entries, services.rooms.current_state(&record).unwrap().len())
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `job(0) .. job(count - 1)` on `TASKS` tasks.
async fn on_tasks<F, Fut>(count: usize, job: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    job(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task panicked");
    }
}
