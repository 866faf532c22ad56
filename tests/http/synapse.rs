//! Federation with a real Synapse (`tests/synapse`, pinned in its requirements.txt) on
//! 127.0.0.1: rooms of each server joined by alias from the other, messages both ways. Skipped
//! (with a note) when the Synapse venv is not installed (`tests/synapse/setup`).

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
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let tls = test_tls();
        let (cert, key, ca) =
            (file("tls.crt", &tls.cert_pem), file("tls.key", &tls.key_pem), file("ca.pem", &tls.ca_pem));
        let home = dir.path().join("synapse");
        let output = Command::new("timeout")
            .arg("180")
            .arg(repo().join("tests/synapse/start"))
            .arg(&home)
            .env("SYNAPSE_DB", "sqlite")
            .env("SYNAPSE_BCRYPT_ROUNDS", "4")
            .env("SYNAPSE_FEDERATION_PORT", free_port().to_string())
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
        Some(Self {
            url: var("SYNAPSE_URL"),
            server_name: var("SYNAPSE_SERVER_NAME"),
            dir,
            client: reqwest::Client::new(),
        })
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

#[tokio::test]
async fn rooms_of_either_server_are_joined_by_alias_and_messages_cross_both_ways() {
    let Some(synapse) = Synapse::start() else { return };
    let myelin = TestServer::start_federating(&[]).await;
    let (m, s) = (Side::Myelin(&myelin), Side::Synapse(&synapse));
    let alice = myelin.register("alice", "password").await;
    let sam = synapse.register("sam").await;

    // A Myelin room, joined from Synapse.
    let (status, body) = myelin
        .post(
            "/_matrix/client/v3/createRoom",
            alice.tok(),
            json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lobby = body["room_id"].as_str().unwrap().to_owned();
    let joined = s.join(&sam, &format!("#lobby:{}", myelin.server_name)).await;
    assert_eq!(joined, lobby);
    let to_sam: Vec<String> = (0..5).map(|i| format!("alice {i}")).collect();
    for text in &to_sam {
        m.send(&alice, &lobby, text).await;
    }
    s.sees(&sam, &lobby, &to_sam, &m).await;
    let to_alice: Vec<String> = (0..5).map(|i| format!("sam {i}")).collect();
    for text in &to_alice {
        s.send(&sam, &lobby, text).await;
    }
    m.sees(&alice, &lobby, &to_alice, &s).await;

    // A Synapse room, joined from Myelin.
    let (status, body) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            &sam,
            Some(json!({ "preset": "public_chat", "room_alias_name": "hall", "name": "Hall" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hall = body["room_id"].as_str().unwrap().to_owned();
    s.send(&sam, &hall, "before alice").await;
    let joined = m.join(&alice, &format!("#hall:{}", synapse.server_name)).await;
    assert_eq!(joined, hall);
    let (status, name) = m
        .request(Method::GET, &format!("/_matrix/client/v3/rooms/{}/state/m.room.name", encode(&hall)), &alice, None)
        .await;
    assert_eq!((status.as_u16(), &name["name"]), (200, &json!("Hall")), "{name}");
    let to_alice: Vec<String> = (0..5).map(|i| format!("hall sam {i}")).collect();
    for text in &to_alice {
        s.send(&sam, &hall, text).await;
    }
    m.sees(&alice, &hall, &to_alice, &s).await;
    let to_sam: Vec<String> = (0..5).map(|i| format!("hall alice {i}")).collect();
    for text in &to_sam {
        m.send(&alice, &hall, text).await;
    }
    s.sees(&sam, &hall, &to_sam, &m).await;
    // History from before the join comes from Synapse (backfill).
    m.sees(&alice, &hall, &["before alice".to_owned()], &s).await;

    // Typing and receipts, Synapse to Myelin.
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&hall), encode(&sam.user_id));
    let (status, _) = s.request(Method::PUT, &path, &sam, Some(json!({ "typing": true, "timeout": 30000 }))).await;
    assert_eq!(status, 200);
    eventually("sam typing on Myelin", || async {
        let (_, sync) = myelin.get("/_matrix/client/v3/sync?timeout=0", alice.tok()).await;
        let ephemeral = sync["rooms"]["join"][&hall]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].to_string().contains(&sam.user_id))
    })
    .await;
    // And the other way.
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&lobby), encode(&alice.user_id));
    let (status, _) = myelin.put(&path, alice.tok(), json!({ "typing": true, "timeout": 30000 })).await;
    assert_eq!(status, 200);
    eventually("alice typing on Synapse", || async {
        let (_, sync) = s.request(Method::GET, "/_matrix/client/v3/sync?timeout=0", &sam, None).await;
        let ephemeral = sync["rooms"]["join"][&lobby]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral
            .iter()
            .any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].to_string().contains(&alice.user_id))
    })
    .await;

    // Leaving: alice leaves Synapse's room through Synapse (no other Myelin user is in it).
    let (status, body) = m
        .request(Method::POST, &format!("/_matrix/client/v3/rooms/{}/leave", encode(&hall)), &alice, Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}\n{}", tail(&myelin.log()));
    eventually("alice's leave on Synapse", || async {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", encode(&hall));
        let (_, members) = s.request(Method::GET, &path, &sam, None).await;
        members["joined"].get(&alice.user_id).is_none()
    })
    .await;

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
