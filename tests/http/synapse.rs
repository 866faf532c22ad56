//! Federation with a real Synapse (`tests/synapse`, pinned in its requirements.txt) on
//! 127.0.0.1, every scenario both ways: rooms joined by alias, 20 messages in order, typing (and
//! its stop on timeout), receipts, presence, invites accepted, leaving, backfill of 200 messages
//! from before the join, and a restart of either side with what was sent meanwhile delivered
//! after it. Skipped (with a note) when the Synapse venv is not installed (`tests/synapse/setup`).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{TestServer, User, free_port, test_tls};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    let cache = std::env::var_os("MYELIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/myelin"));
    cache.join("synapse-venv/bin/python")
}

/// A Synapse with a TLS federation listener, trusting the test CA, its database in SQLite.
struct Synapse {
    dir: tempfile::TempDir,
    url: String,
    server_name: String,
    federation_port: u16,
    client: reqwest::Client,
}

impl Synapse {
    /// `None` when Synapse is not installed here.
    fn start() -> Option<Self> {
        if !venv_python().exists() {
            eprintln!("skipped: no Synapse venv at {} (tests/synapse/setup)", venv_python().display());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut synapse = Self {
            dir,
            url: String::new(),
            server_name: String::new(),
            federation_port: free_port(),
            client: reqwest::Client::new(),
        };
        synapse.launch();
        Some(synapse)
    }

    /// `tests/synapse/start` on this instance's directory (again after `stop`: same database,
    /// ports and name).
    fn launch(&mut self) {
        let file = |name: &str, text: &str| {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let tls = test_tls();
        let (cert, key, ca) =
            (file("tls.crt", &tls.cert_pem), file("tls.key", &tls.key_pem), file("ca.pem", &tls.ca_pem));
        let home = self.home();
        let output = Command::new("timeout")
            .arg("180")
            .arg(repo().join("tests/synapse/start"))
            .arg(&home)
            .env("SYNAPSE_DB", "sqlite")
            .env("SYNAPSE_BCRYPT_ROUNDS", "4")
            .env("SYNAPSE_FEDERATION_PORT", self.federation_port.to_string())
            .env("SYNAPSE_TLS_CERT", cert)
            .env("SYNAPSE_TLS_KEY", key)
            .env("SYNAPSE_FEDERATION_CA", ca)
            .env("SYNAPSE_LOG_LEVEL", "INFO")
            .output()
            .unwrap();
        assert!(output.status.success(), "Synapse did not start:\n{}", String::from_utf8_lossy(&output.stderr));
        let env = std::fs::read_to_string(home.join("env")).unwrap();
        let var = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_default()
        };
        self.url = var("SYNAPSE_URL");
        self.server_name = var("SYNAPSE_SERVER_NAME");
    }

    /// Stops the process (SIGTERM), keeping its directory for `launch`.
    fn stop(&self) {
        let status =
            Command::new("timeout").arg("60").arg(repo().join("tests/synapse/stop")).arg(self.home()).status().unwrap();
        assert!(status.success());
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("synapse")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("homeserver.log")).unwrap_or_default()
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, name: &str) -> User {
        let body = json!({ "username": name, "password": "password", "auth": { "type": "m.login.dummy" } });
        let (status, reply) = self.request(Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
        assert_eq!(status, 200, "{reply}");
        User::from_login(&reply, "password")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("timeout").arg("60").arg(repo().join("tests/synapse/stop")).arg(self.home()).output();
    }
}

fn encode(text: &str) -> String {
    text.replace('#', "%23").replace('!', "%21").replace(':', "%3A").replace('@', "%40").replace('$', "%24")
}

fn txn() -> String {
    format!("t{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// Either server's client API, as the test talks to it.
enum Side<'a> {
    Myelin(&'a TestServer),
    Synapse(&'a Synapse),
}

impl Side<'_> {
    async fn request(&self, method: Method, path: &str, user: &User, body: Option<Value>) -> (StatusCode, Value) {
        match self {
            Side::Myelin(server) => server.request(method, path, user.tok(), body).await,
            Side::Synapse(server) => server.request(method, path, user.tok(), body).await,
        }
    }

    fn log(&self) -> String {
        match self {
            Side::Myelin(server) => server.log(),
            Side::Synapse(server) => server.log(),
        }
    }

    async fn send(&self, user: &User, room_id: &str, text: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), txn());
        let (status, body) =
            self.request(Method::PUT, &path, user, Some(json!({ "msgtype": "m.text", "body": text }))).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn join(&self, user: &User, alias: &str) -> String {
        let path = format!("/_matrix/client/v3/join/{}", encode(alias));
        let (status, body) = self.request(Method::POST, &path, user, Some(json!({}))).await;
        assert_eq!(status, 200, "{body}\n{}", self.log());
        body["room_id"].as_str().unwrap().to_owned()
    }

    async fn messages(&self, user: &User, room_id: &str) -> Vec<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", encode(room_id));
        let (status, body) = self.request(Method::GET, &path, user, None).await;
        if status != 200 {
            return Vec::new();
        }
        let mut bodies: Vec<String> = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        bodies.reverse();
        bodies
    }

    /// The bodies of every message of the room the user can page back to (`/messages` from the
    /// end until it runs out), oldest first: history from before a join is backfilled on the way.
    async fn history(&self, user: &User, room_id: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..40 {
            let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", encode(room_id));
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", from.replace('~', "%7E")));
            }
            let (status, body) = self.request(Method::GET, &path, user, None).await;
            assert_eq!(status, 200, "{body}");
            let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
            bodies.extend(
                chunk
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
            );
            match body["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        bodies.reverse();
        bodies
    }

    /// The user's sync, initial (which does not wait). Synapse answers a request like one made
    /// in the last two minutes from a cache (`sync_response_cache_duration`), so each asks with
    /// another `timeout`, which is part of the cache's key.
    async fn sync(&self, user: &User) -> Value {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("/_matrix/client/v3/sync?timeout={n}");
        let (status, body) = self.request(Method::GET, &path, user, None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `device_lists.changed` of the user's sync since `since` (waiting a little, with another
    /// `timeout` each time for Synapse's cache).
    async fn changed_since(&self, user: &User, since: &str) -> Vec<String> {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("/_matrix/client/v3/sync?since={}&timeout={n}", encode(since));
        let (status, body) = self.request(Method::GET, &path, user, None).await;
        assert_eq!(status, 200, "{body}");
        body["device_lists"]["changed"]
            .as_array()
            .map(|users| users.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// Whether `who` is typing in the room, as the user's sync says.
    async fn typing(&self, user: &User, room_id: &str, who: &str) -> bool {
        let sync = self.sync(user).await;
        let ephemeral = sync["rooms"]["join"][room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral.iter().any(|e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"].as_array().is_some_and(|users| users.iter().any(|u| u == who))
        })
    }

    /// Whether the user's sync shows `who` with this status message.
    async fn sees_status(&self, user: &User, who: &str, status_msg: &str) -> bool {
        let sync = self.sync(user).await;
        sync["presence"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["sender"] == who && e["content"]["status_msg"] == status_msg))
    }

    /// Whether the user's sync shows `who`'s read receipt on `event_id`.
    async fn sees_receipt(&self, user: &User, room_id: &str, event_id: &str, who: &str) -> bool {
        let sync = self.sync(user).await;
        let ephemeral = sync["rooms"]["join"][room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral.iter().any(|e| e["type"] == "m.receipt" && !e["content"][event_id]["m.read"][who].is_null())
    }

    async fn joined_members(&self, user: &User, room_id: &str) -> Value {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", encode(room_id));
        self.request(Method::GET, &path, user, None).await.1["joined"].clone()
    }

    async fn last_event_id(&self, user: &User, room_id: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", encode(room_id));
        let (_, page) = self.request(Method::GET, &path, user, None).await;
        page["chunk"][0]["event_id"].as_str().unwrap().to_owned()
    }

    async fn create_room(&self, user: &User, body: Value) -> String {
        let (status, reply) = self.request(Method::POST, "/_matrix/client/v3/createRoom", user, Some(body)).await;
        assert_eq!(status, 200, "{reply}\n{}", tail(&self.log()));
        reply["room_id"].as_str().unwrap().to_owned()
    }

    /// Waits (up to 30 s) until the user sees `texts`, in this order, among the room's messages.
    async fn sees(&self, user: &User, room_id: &str, texts: &[String], other: &Side<'_>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.messages(user, room_id).await;
            let found: Vec<&String> = seen.iter().filter(|m| texts.contains(m)).collect();
            if found.len() == texts.len() {
                assert!(found.iter().zip(texts).all(|(a, b)| *a == b), "out of order: {found:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {texts:?} (saw {seen:?})\n---- this side:\n{}\n---- the other:\n{}",
                user.user_id,
                tail(&self.log()),
                tail(&other.log())
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Uploads identity keys for the user's device, unsigned (both servers store such keys; clients
/// would refuse them), with `ed25519` key `ed-{device}`.
async fn upload_device_keys(side: &Side<'_>, user: &User) {
    let keys = json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{}", user.device_id): format!("ed-{}", user.device_id),
            format!("curve25519:{}", user.device_id): format!("curve-{}", user.device_id),
        },
        "signatures": {},
    });
    let (status, body) =
        side.request(Method::POST, "/_matrix/client/v3/keys/upload", user, Some(json!({ "device_keys": keys }))).await;
    assert_eq!(status, 200, "{body}");
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix} {i}")).collect()
}

/// The messages of `seen` that start with `prefix`, in the order seen.
fn with_prefix(seen: &[String], prefix: &str) -> Vec<String> {
    seen.iter().filter(|m| m.starts_with(prefix)).cloned().collect()
}

#[tokio::test]
async fn myelin_and_synapse_share_rooms_both_ways() {
    let Some(mut synapse) = Synapse::start() else { return };
    // Quick retries: Synapse is down for a while below.
    let mut myelin = TestServer::start_federating(&[
        ("MYELIN_FEDERATION__RETRY_MIN_MS", "200"),
        ("MYELIN_FEDERATION__RETRY_MAX_SECS", "2"),
    ])
    .await;
    let alice = myelin.register("alice", "password").await;
    let sam = synapse.register("sam").await;
    let (lobby, hall, private, sue) = {
        let (m, s) = (Side::Myelin(&myelin), Side::Synapse(&synapse));

        // A Myelin room with 200 messages, joined from Synapse, which backfills them.
        let lobby = m
            .create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby" }))
            .await;
        let old_lobby = numbered("old lobby", 200);
        for text in &old_lobby {
            m.send(&alice, &lobby, text).await;
        }
        assert_eq!(s.join(&sam, &format!("#lobby:{}", myelin.server_name)).await, lobby);
        eventually("the lobby's history on Synapse", || async {
            with_prefix(&s.history(&sam, &lobby).await, "old lobby") == old_lobby
        })
        .await;
        let to_sam = numbered("alice", 20);
        for text in &to_sam {
            m.send(&alice, &lobby, text).await;
        }
        s.sees(&sam, &lobby, &to_sam, &m).await;
        let to_alice = numbered("sam", 20);
        for text in &to_alice {
            s.send(&sam, &lobby, text).await;
        }
        m.sees(&alice, &lobby, &to_alice, &s).await;

        // A Synapse room with 200 messages, joined from Myelin, which backfills them.
        let hall =
            s.create_room(&sam, json!({ "preset": "public_chat", "room_alias_name": "hall", "name": "Hall" })).await;
        let old_hall = numbered("old hall", 200);
        for text in &old_hall {
            s.send(&sam, &hall, text).await;
        }
        assert_eq!(m.join(&alice, &format!("#hall:{}", synapse.server_name)).await, hall);
        let (status, name) = m
            .request(
                Method::GET,
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.name", encode(&hall)),
                &alice,
                None,
            )
            .await;
        assert_eq!((status.as_u16(), &name["name"]), (200, &json!("Hall")), "{name}");
        let to_alice = numbered("hall sam", 20);
        for text in &to_alice {
            s.send(&sam, &hall, text).await;
        }
        m.sees(&alice, &hall, &to_alice, &s).await;
        let to_sam = numbered("hall alice", 20);
        for text in &to_sam {
            m.send(&alice, &hall, text).await;
        }
        s.sees(&sam, &hall, &to_sam, &m).await;
        let history = m.history(&alice, &hall).await;
        assert_eq!(with_prefix(&history, "old hall"), old_hall, "\n{}", tail(&myelin.log()));

        // Typing, Synapse to Myelin.
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&hall), encode(&sam.user_id));
        let (status, _) = s.request(Method::PUT, &path, &sam, Some(json!({ "typing": true, "timeout": 30000 }))).await;
        assert_eq!(status, 200);
        eventually("sam typing on Myelin", || async { m.typing(&alice, &hall, &sam.user_id).await }).await;
        // And the other way, until it runs out: Synapse hears of the stop (on its own it would
        // keep a remote user typing for a minute).
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&lobby), encode(&alice.user_id));
        let (status, _) = myelin.put(&path, alice.tok(), json!({ "typing": true, "timeout": 3000 })).await;
        assert_eq!(status, 200);
        eventually("alice typing on Synapse", || async { s.typing(&sam, &lobby, &alice.user_id).await }).await;
        eventually("alice's typing to stop on Synapse", || async { !s.typing(&sam, &lobby, &alice.user_id).await })
            .await;

        // Receipts both ways.
        let last = s.last_event_id(&sam, &lobby).await;
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&lobby), encode(&last));
        let (status, body) = s.request(Method::POST, &path, &sam, Some(json!({}))).await;
        assert_eq!(status, 200, "{body}");
        eventually("sam's receipt on Myelin", || async { m.sees_receipt(&alice, &lobby, &last, &sam.user_id).await })
            .await;
        let last = m.last_event_id(&alice, &hall).await;
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&hall), encode(&last));
        let (status, body) = m.request(Method::POST, &path, &alice, Some(json!({}))).await;
        assert_eq!(status, 200, "{body}");
        eventually("alice's receipt on Synapse", || async { s.sees_receipt(&sam, &hall, &last, &alice.user_id).await })
            .await;

        // Presence both ways.
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(&sam.user_id));
        let (status, body) = s
            .request(Method::PUT, &path, &sam, Some(json!({ "presence": "online", "status_msg": "on synapse" })))
            .await;
        assert_eq!(status, 200, "{body}");
        eventually("sam's presence on Myelin", || async { m.sees_status(&alice, &sam.user_id, "on synapse").await })
            .await;
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(&alice.user_id));
        let (status, body) =
            myelin.put(&path, alice.tok(), json!({ "presence": "online", "status_msg": "on myelin" })).await;
        assert_eq!(status, 200, "{body}");
        eventually("alice's presence on Synapse", || async { s.sees_status(&sam, &alice.user_id, "on myelin").await })
            .await;

        // Device keys both ways: each side's /keys/query for the other's user goes to the other
        // server (Synapse: /user/keys/query or /user/devices, both served by Myelin).
        upload_device_keys(&m, &alice).await;
        upload_device_keys(&s, &sam).await;
        for (side, user, other) in [(&m, &alice, &sam), (&s, &sam, &alice)] {
            eventually("the other side's device keys", || async {
                let body = json!({ "device_keys": { &other.user_id: [] } });
                let (_, keys) = side.request(Method::POST, "/_matrix/client/v3/keys/query", user, Some(body)).await;
                keys["device_keys"][&other.user_id][&other.device_id]["keys"][format!("ed25519:{}", other.device_id)]
                    == format!("ed-{}", other.device_id)
            })
            .await;
        }

        // A new device of each: the other server hears of it (m.device_list_update) and its
        // user's sync lists the owner in device_lists.changed.
        let since_alice = m.sync(&alice).await["next_batch"].as_str().unwrap().to_owned();
        let since_sam = s.sync(&sam).await["next_batch"].as_str().unwrap().to_owned();
        let login = |user: &User| {
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user.user_id },
                "password": "password",
            })
        };
        let (status, body) = s.request(Method::POST, "/_matrix/client/v3/login", &sam, Some(login(&sam))).await;
        assert_eq!(status, 200, "{body}");
        upload_device_keys(&s, &User::from_login(&body, "password")).await;
        let (status, body) = m.request(Method::POST, "/_matrix/client/v3/login", &alice, Some(login(&alice))).await;
        assert_eq!(status, 200, "{body}");
        upload_device_keys(&m, &User::from_login(&body, "password")).await;
        eventually("sam's new device in alice's sync", || async {
            m.changed_since(&alice, &since_alice).await.contains(&sam.user_id)
        })
        .await;
        eventually("alice's new device in sam's sync", || async {
            s.changed_since(&sam, &since_sam).await.contains(&alice.user_id)
        })
        .await;

        // Invites both ways, accepted by joining.
        let sue = synapse.register("sue").await;
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&lobby));
        let (status, body) = myelin.post(&path, alice.tok(), json!({ "user_id": sue.user_id })).await;
        assert_eq!(status, 200, "{body}\n{}", tail(&myelin.log()));
        eventually("sue's invite on Synapse", || async { s.sync(&sue).await["rooms"]["invite"].get(&lobby).is_some() })
            .await;
        assert_eq!(s.join(&sue, &lobby).await, lobby);
        eventually("sue in the lobby on Myelin", || async {
            m.joined_members(&alice, &lobby).await.get(&sue.user_id).is_some()
        })
        .await;
        let bea = myelin.register("bea", "password").await;
        let private = s.create_room(&sam, json!({ "preset": "private_chat", "invite": [bea.user_id] })).await;
        eventually("bea's invite on Myelin", || async {
            m.sync(&bea).await["rooms"]["invite"][&private]["invite_state"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.member"))
        })
        .await;
        assert_eq!(m.join(&bea, &private).await, private);
        s.send(&sam, &private, "welcome bea").await;
        m.sees(&bea, &private, &["welcome bea".to_owned()], &s).await;

        // Leaving both ways: alice leaves Synapse's room through Synapse (no other Myelin user
        // is in it); sue leaves Myelin's room.
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&hall));
        let (status, body) = m.request(Method::POST, &path, &alice, Some(json!({}))).await;
        assert_eq!(status, 200, "{body}\n{}", tail(&myelin.log()));
        eventually("alice's leave on Synapse", || async {
            s.joined_members(&sam, &hall).await.get(&alice.user_id).is_none()
        })
        .await;
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&lobby));
        let (status, body) = s.request(Method::POST, &path, &sue, Some(json!({}))).await;
        assert_eq!(status, 200, "{body}");
        eventually("sue's leave on Myelin", || async {
            m.joined_members(&alice, &lobby).await.get(&sue.user_id).is_none()
        })
        .await;
        (lobby, hall, private, sue)
    };
    let _ = (hall, private, sue);

    // Synapse down: what alice sends meanwhile waits in Myelin's queue, through a restart of
    // Myelin too, and reaches Synapse once it is back.
    synapse.stop();
    let queued = numbered("while synapse was down", 10);
    for text in &queued {
        Side::Myelin(&myelin).send(&alice, &lobby, text).await;
    }
    assert!(myelin.terminate().success());
    myelin.restart();
    synapse.launch();
    let (m, s) = (Side::Myelin(&myelin), Side::Synapse(&synapse));
    s.sees(&sam, &lobby, &queued, &m).await;

    // Myelin down: what sam sends meanwhile reaches Myelin after its restart (Synapse tries
    // again when Myelin is heard from, and Myelin fetches what Synapse's catch-up skips).
    let queued = numbered("while myelin was down", 10);
    assert!(myelin.terminate().success());
    for text in &queued {
        s.send(&sam, &lobby, text).await;
    }
    myelin.restart();
    let (m, s) = (Side::Myelin(&myelin), Side::Synapse(&synapse));
    m.send(&alice, &lobby, "myelin is back").await;
    m.sees(&alice, &lobby, &queued, &s).await;
    s.sees(&sam, &lobby, &["myelin is back".to_owned()], &m).await;

    // Nothing Synapse sent was refused.
    let log = myelin.log();
    for bad in ["rejected a remote event", "dropped a PDU", "soft-failed a remote event"] {
        assert!(!log.contains(bad), "Myelin logged '{bad}':\n{}", tail(&log));
    }
}

/// Polls `check` for up to 30 seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
