//! myelin-loadgen: an HTTP load generator for Matrix homeservers.
//!
//! It speaks only the Client-Server API (and the shared-secret admin
//! registration API) to a base URL, so the same run measures Myelin and
//! Synapse. Each benchmark scenario prints one JSON line on stdout (the
//! `state-lookup` scenario one per measurement); progress and problems go to
//! stderr. See `--help` and benches/README.md.
//!
//! Counting: a request is a success only if it answers 2xx with a JSON body;
//! anything else (non-2xx, bad JSON, transport error, timeout) is an error.
//! Latencies are of successful requests only; throughput is successes per
//! second of wall-clock time.
//!
//! Modules: `http` (requests, statistics, result lines), `accounts`
//! (registration, logins), `basic` (account scenarios), `rooms` (room
//! scenarios), `sync` (delivery through /sync and the WebSocket, initial
//! sync, /messages).

mod accounts;
mod basic;
mod connections;
mod federation;
mod http;
mod rooms;
mod sync;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Client;
use serde_json::{Value, json};

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
    /// Timed PUT /rooms/ROOM/send/m.room.message/TXN into one public room that every user joins.
    SendOneRoom {
        #[command(flatten)]
        bench: Bench,
        #[command(flatten)]
        room: RoomArgs,
    },
    /// Timed PUT /rooms/ROOM/send/m.room.message/TXN, each task into a room of its own.
    SendManyRooms {
        #[command(flatten)]
        bench: Bench,
        #[command(flatten)]
        room: RoomArgs,
    },
    /// Timed GET /rooms/ROOM/state/m.room.member/USER and GET /rooms/ROOM/state/m.room.name in a
    /// room of --members members, after each of the --history sizes of message history.
    StateLookup(StateLookup),
    /// N users in R rooms, each holding a sync loop (long-poll /sync or the WebSocket) while
    /// messages are sent: send rate, delivery latency to every receiver, completeness.
    SyncFanout(SyncFanout),
    /// Timed full initial GET /sync of a user in --rooms rooms with --history messages each.
    InitialSync(InitialSync),
    /// Timed GET /rooms/ROOM/messages?dir=b&limit=N in a room of --messages messages.
    Messages(MessagesBench),
    /// Messages sent on one server, timed until a client of another server syncs them.
    FederationLatency(FederationLatency),
    /// Many long-poll /sync requests and WebSockets held at once, one message delivered to all;
    /// the server's memory per connection.
    Connections(Connections),
}

#[derive(Args, Clone)]
pub struct Connections {
    /// Base URL of the homeserver
    #[arg(long)]
    url: String,
    /// registration_shared_secret of the server
    #[arg(long)]
    secret: String,
    /// PID of the server (on this machine), whose VmRSS is read
    #[arg(long)]
    pid: u32,
    /// Users the connections are spread over (all in one room)
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Long-poll GET /sync requests held
    #[arg(long, default_value_t = 2000)]
    long_polls: usize,
    /// WebSockets held
    #[arg(long, default_value_t = 2000)]
    websockets: usize,
    /// Seconds for opening every connection and delivering the message
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    #[arg(long, default_value = "conn")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Clone)]
pub struct FederationLatency {
    /// Base URL of the sending homeserver
    #[arg(long)]
    send_url: String,
    /// registration_shared_secret of the sending server
    #[arg(long)]
    send_secret: String,
    /// Base URL of the receiving homeserver
    #[arg(long)]
    recv_url: String,
    /// registration_shared_secret of the receiving server
    #[arg(long)]
    recv_secret: String,
    /// Messages measured
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Messages sent (and waited for) first, not measured
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Messages per second (one in flight at a time)
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds to wait for the last messages
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    #[arg(long, default_value = "fed")]
    prefix: String,
    #[arg(long)]
    room_version: Option<String>,
    #[arg(long, default_value = "")]
    label: String,
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

impl Bench {
    fn announce(&self, scenario: &str) {
        eprintln!("loadgen: {scenario} on {} for {}s with {} tasks", self.users.url, self.duration, self.concurrency);
    }

    /// The head of a result line: scenario, label, parameters, and `extra`'s fields.
    fn head(&self, scenario: &str, extra: Value) -> Value {
        let mut head = json!({
            "scenario": scenario,
            "label": self.label,
            "url": self.users.url,
            "users": self.users.users,
            "concurrency": self.concurrency,
            "duration_s": self.duration,
        });
        if let (Value::Object(h), Value::Object(e)) = (&mut head, extra) {
            h.extend(e);
        }
        head
    }
}

#[derive(Args, Clone)]
struct RoomArgs {
    /// Room version of the rooms created (default: the server's)
    #[arg(long)]
    room_version: Option<String>,
}

#[derive(Args, Clone)]
pub struct StateLookup {
    /// Base URL of the homeserver
    #[arg(long)]
    url: String,
    /// registration_shared_secret of the server (members are registered through it)
    #[arg(long)]
    secret: String,
    /// Members of the room (users PREFIX0 .. PREFIX{M-1}, registered or logged in)
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    #[arg(long, default_value = "member")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Messages of history before each measurement (cumulative), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1000,20000")]
    history: Vec<u64>,
    /// Concurrent lookup tasks of each measurement, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Seconds of each measurement
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unrecorded lookups before the measurements at each history size
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Registrations in flight while populating the room
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Joins in flight while populating the room
    #[arg(long, default_value_t = 16)]
    join_concurrency: usize,
    /// Sends in flight while writing the history
    #[arg(long, default_value_t = 16)]
    send_concurrency: usize,
    /// Room version of the room (default: the server's)
    #[arg(long)]
    room_version: Option<String>,
    /// Free-form label copied into the output
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Membership {
    /// Every user is in every room
    All,
    /// User i is in room i mod R only
    Spread,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Transport {
    /// Long-poll GET /sync?since=...&timeout=30000
    Http,
    /// Myelin's WebSocket (GET /_matrix/client/unstable/io.myelin.websocket/stream, m.json)
    Websocket,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Load {
    /// One message in flight at a time, paced at --rate per second
    Light,
    /// Every user sends as fast as it can (one message in flight each)
    Saturating,
}

#[derive(Args, Clone)]
pub struct SyncFanout {
    /// Base URL of the homeserver
    #[arg(long)]
    url: String,
    /// registration_shared_secret of the server (users are registered through it)
    #[arg(long)]
    secret: String,
    /// Users (PREFIX0 .. PREFIX{N-1}); every one holds a sync loop
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Rooms
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Who is in which room
    #[arg(long, value_enum, default_value_t = Membership::All)]
    membership: Membership,
    /// How receivers get their updates
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    transport: Transport,
    #[arg(long, value_enum, default_value_t = Load::Light)]
    load: Load,
    /// Messages to send at most (default: 200 for light load, no limit for saturating)
    #[arg(long)]
    messages: Option<u64>,
    /// Seconds of sending at most (default: no limit for light load, 10 for saturating)
    #[arg(long)]
    duration: Option<f64>,
    /// Messages per second under light load
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds to wait, after the last send, for every receiver to see every message
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Timeline limit of the receivers' sync filter (Synapse caps it at 100)
    #[arg(long, default_value_t = 100)]
    timeline_limit: usize,
    #[arg(long, default_value = "sync")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Registrations and joins in flight during set-up
    #[arg(long, default_value_t = 4)]
    setup_concurrency: usize,
    /// Room version of the rooms (default: the server's)
    #[arg(long)]
    room_version: Option<String>,
    /// Free-form label copied into the output
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Clone)]
pub struct InitialSync {
    /// Base URL of the homeserver
    #[arg(long)]
    url: String,
    /// registration_shared_secret of the server
    #[arg(long)]
    secret: String,
    /// Rooms the user is in (each created by it)
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Messages of history in each room
    #[arg(long, default_value_t = 100)]
    history: u64,
    /// Timeline limit of the sync filter
    #[arg(long, default_value_t = 10)]
    timeline_limit: usize,
    /// Seconds of measurement
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unrecorded syncs first
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "isync")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    #[arg(long)]
    room_version: Option<String>,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Clone)]
pub struct MessagesBench {
    /// Base URL of the homeserver
    #[arg(long)]
    url: String,
    /// registration_shared_secret of the server
    #[arg(long)]
    secret: String,
    /// Messages sent into the room first
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// `limit` of each GET /messages
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Sends in flight while writing the history
    #[arg(long, default_value_t = 8)]
    send_concurrency: usize,
    /// Seconds of measurement
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unrecorded requests first
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "hist")]
    prefix: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    #[arg(long)]
    room_version: Option<String>,
    #[arg(long, default_value = "")]
    label: String,
}

fn main() {
    let cli = Cli::parse();
    let pool = match &cli.cmd {
        Cmd::SetupUsers { concurrency, .. } => *concurrency,
        Cmd::Login(b)
        | Cmd::Whoami { bench: b, .. }
        | Cmd::AccountData { bench: b, .. }
        | Cmd::SendOneRoom { bench: b, .. }
        | Cmd::SendManyRooms { bench: b, .. } => {
            if b.concurrency == 0 || b.users.users == 0 || b.duration <= 0.0 {
                http::fail("--concurrency, --users and --duration must be positive");
            }
            b.concurrency
        }
        Cmd::StateLookup(a) => {
            if a.members == 0 || a.duration <= 0.0 || a.concurrency.contains(&0) || a.concurrency.is_empty() {
                http::fail("--members, --concurrency and --duration must be positive");
            }
            let most = a.concurrency.iter().copied().max().unwrap_or(1);
            most.max(a.setup_concurrency).max(a.join_concurrency).max(a.send_concurrency)
        }
        Cmd::SyncFanout(a) => {
            if a.users < 2 || a.rooms == 0 || a.rate <= 0.0 || a.timeline_limit == 0 {
                http::fail("--users must be at least 2; --rooms, --rate and --timeline-limit positive");
            }
            // A long-poll and a send per user, plus gap fills.
            a.users * 3 + a.setup_concurrency
        }
        Cmd::InitialSync(a) => {
            if a.rooms == 0 || a.duration <= 0.0 {
                http::fail("--rooms and --duration must be positive");
            }
            4
        }
        Cmd::Messages(a) => {
            if a.duration <= 0.0 || a.limit == 0 {
                http::fail("--duration and --limit must be positive");
            }
            a.send_concurrency.max(1)
        }
        Cmd::FederationLatency(a) => {
            if a.rate <= 0.0 || a.messages == 0 {
                http::fail("--rate and --messages must be positive");
            }
            4
        }
        Cmd::Connections(a) => {
            if a.users == 0 || a.long_polls + a.websockets == 0 {
                http::fail("--users and the connections must be positive");
            }
            a.long_polls + 8
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run(cli.cmd, pool));
}

async fn run(cmd: Cmd, pool: usize) {
    let client = Client::builder()
        .pool_max_idle_per_host(pool * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    match cmd {
        Cmd::SetupUsers { users, secret, concurrency } => {
            accounts::setup_users(client, users, secret, concurrency).await
        }
        Cmd::Login(b) => basic::bench_login(client, b).await,
        Cmd::Whoami { bench, token } => basic::bench_whoami(client, bench, token).await,
        Cmd::AccountData { bench, keys } => basic::bench_account_data(client, bench, keys).await,
        Cmd::SendOneRoom { bench, room } => rooms::bench_send_one_room(client, bench, room.room_version).await,
        Cmd::SendManyRooms { bench, room } => rooms::bench_send_many_rooms(client, bench, room.room_version).await,
        Cmd::StateLookup(a) => rooms::bench_state_lookup(client, a).await,
        Cmd::SyncFanout(a) => sync::bench_sync_fanout(client, a).await,
        Cmd::InitialSync(a) => sync::bench_initial_sync(client, a).await,
        Cmd::Messages(a) => sync::bench_messages(client, a).await,
        Cmd::FederationLatency(a) => federation::bench_federation_latency(client, a).await,
        Cmd::Connections(a) => connections::bench_connections(client, a).await,
    }
}
