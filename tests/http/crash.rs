//! Crash safety: Myelin under a steady load of sends, receipts, state changes and room creations
//! from several clients is killed with SIGKILL at random moments and restarted, again and again.
//! After every restart: the database opens; every acknowledged event is there, with the same ID,
//! in the order it was acknowledged; `since` tokens handed out before the kill still work; a
//! repeated transaction ID still names the acknowledged event; and nothing half-written shows (every
//! room the users are in has its create event, their membership and its event, and its current
//! state names events that exist).
//!
//! `MYELIN_CRASH_KILLS` sets the number of kills (20 by default; raise it for a longer soak).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    server::{TestServer, User},
    sync::{V3, create_room, enc, join, room_path},
};

/// What the clients were told succeeded, across all the runs.
#[derive(Clone, Default)]
struct Acknowledged {
    /// Per sender, in the order acknowledged: (transaction ID, event ID).
    messages: BTreeMap<String, Vec<(String, String)>>,
    /// Topic changes: event IDs.
    topics: Vec<String>,
    /// Receipts: (user, event ID), in the order acknowledged.
    receipts: Vec<(String, String)>,
    /// Rooms created.
    rooms: Vec<String>,
    /// `next_batch` tokens handed out.
    tokens: Vec<(String, String)>,
}

/// One client's request loop against the current server; ends at the first failure (the kill).
async fn load(base: String, user: User, room: String, run: usize, acknowledged: Arc<Mutex<Acknowledged>>) {
    let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut request = client.request(method, format!("{base}{path}")).bearer_auth(&user.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.ok()?;
            (response.status() == StatusCode::OK).then_some(())?;
            response.json::<Value>().await.ok()
        }
    };
    let mut since: Option<String> = None;
    for i in 0.. {
        let txn = format!("r{run}-{i}");
        let body = json!({ "msgtype": "m.text", "body": txn });
        let path = room_path(&room, &format!("send/m.room.message/{txn}"));
        let Some(reply) = call(Method::PUT, path, Some(body)).await else { return };
        let event_id = reply["event_id"].as_str().unwrap().to_owned();
        acknowledged
            .lock()
            .unwrap()
            .messages
            .entry(user.user_id.clone())
            .or_default()
            .push((txn.clone(), event_id.clone()));

        let next = match i % 4 {
            0 => {
                let path = room_path(&room, &format!("receipt/m.read/{}", enc(&event_id)));
                call(Method::POST, path, Some(json!({}))).await.map(|_| {
                    acknowledged.lock().unwrap().receipts.push((user.user_id.clone(), event_id));
                })
            }
            1 => {
                let path = room_path(&room, "state/m.room.topic");
                call(Method::PUT, path, Some(json!({ "topic": txn }))).await.map(|reply| {
                    acknowledged.lock().unwrap().topics.push(reply["event_id"].as_str().unwrap().to_owned());
                })
            }
            2 => {
                let query = since.as_ref().map_or(String::new(), |s| format!("&since={}", enc(s)));
                call(Method::GET, format!("{V3}/sync?timeout=0{query}"), None).await.map(|reply| {
                    let token = reply["next_batch"].as_str().unwrap().to_owned();
                    since = Some(token.clone());
                    acknowledged.lock().unwrap().tokens.push((user.user_id.clone(), token));
                })
            }
            _ => {
                let body = json!({ "name": txn, "preset": "private_chat" });
                call(Method::POST, format!("{V3}/createRoom"), Some(body)).await.map(|reply| {
                    acknowledged.lock().unwrap().rooms.push(reply["room_id"].as_str().unwrap().to_owned());
                })
            }
        };
        if next.is_none() {
            return;
        }
    }
}

/// Every message of the room, oldest first, as (sender, body, event ID).
async fn history(server: &TestServer, user: &User, room: &str) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    let mut from = String::new();
    loop {
        let query = if from.is_empty() { String::new() } else { format!("&from={}", enc(&from)) };
        let path = room_path(room, &format!("messages?dir=f&limit=1000{query}"));
        let (status, page) = server.get(&path, user.tok()).await;
        assert_eq!(status, 200, "{page}");
        for event in page["chunk"].as_array().unwrap() {
            if event["type"] == "m.room.message" {
                let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
                events.push((
                    field("sender"),
                    event["content"]["body"].as_str().unwrap_or_default().to_owned(),
                    field("event_id"),
                ));
            }
        }
        match page["end"].as_str() {
            Some(end) if !page["chunk"].as_array().unwrap().is_empty() => from = end.to_owned(),
            _ => return events,
        }
    }
}

/// Checks the restarted server against what was acknowledged; returns the rooms it saw, which the
/// next check need not look into again.
async fn check(
    server: &TestServer,
    users: &[User],
    room: &str,
    acknowledged: &Acknowledged,
    kill: usize,
    rooms_seen_before: BTreeSet<String>,
) -> BTreeSet<String> {
    let context = format!("after kill {kill}");
    // Every acknowledged message, with its ID, in the order each sender was told.
    let history = history(server, &users[0], room).await;
    let position: BTreeMap<&str, usize> = history.iter().enumerate().map(|(i, (.., id))| (id.as_str(), i)).collect();
    assert_eq!(position.len(), history.len(), "{context}: an event appears twice");
    for (sender, sent) in &acknowledged.messages {
        let mut last = None;
        for (txn, event_id) in sent {
            let at = *position
                .get(event_id.as_str())
                .unwrap_or_else(|| panic!("{context}: {sender}'s {txn} ({event_id}) is lost"));
            assert_eq!(history[at].1, *txn, "{context}: {event_id} has other content");
            assert!(last < Some(at), "{context}: {sender}'s {txn} is out of order");
            last = Some(at);
        }
    }
    // A repeated transaction ID names the acknowledged event (idempotency survives the crash).
    for user in users {
        if let Some((txn, event_id)) = acknowledged.messages.get(&user.user_id).and_then(|sent| sent.last()) {
            let body = json!({ "msgtype": "m.text", "body": txn });
            let (status, reply) =
                server.put(&room_path(room, &format!("send/m.room.message/{txn}")), user.tok(), body).await;
            assert_eq!(
                (status.as_u16(), reply["event_id"].as_str()),
                (200, Some(event_id.as_str())),
                "{context}: {reply}"
            );
        }
    }
    // Acknowledged state changes and receipts.
    for event_id in &acknowledged.topics {
        let (status, reply) = server.get(&room_path(room, &format!("event/{}", enc(event_id))), users[0].tok()).await;
        assert_eq!(status, 200, "{context}: topic {event_id} is lost: {reply}");
    }
    let initial = sync_initial(server, &users[0]).await;
    let receipts = &initial["rooms"]["join"][room]["ephemeral"]["events"];
    for user in users {
        let Some((_, acked)) = acknowledged.receipts.iter().rev().find(|(u, _)| *u == user.user_id) else { continue };
        let Some(receipt) = receipts.as_array().into_iter().flatten().find(|e| e["type"] == "m.receipt") else {
            panic!("{context}: no receipts at all, though {} has one acknowledged", user.user_id)
        };
        let read_at = receipt["content"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, by)| by["m.read"].get(&user.user_id).is_some())
            .map(|(event_id, _)| event_id.as_str())
            .unwrap_or_else(|| panic!("{context}: {}'s receipt is lost", user.user_id));
        assert!(position[read_at] >= position[acked.as_str()], "{context}: {}'s receipt went back", user.user_id);
    }
    // Tokens handed out before the kill still work.
    for (user_id, token) in acknowledged.tokens.iter().rev().take(4) {
        let user = users.iter().find(|u| u.user_id == *user_id).unwrap();
        let (status, reply) = server.get(&format!("{V3}/sync?timeout=0&since={}", enc(token)), user.tok()).await;
        assert_eq!(status, 200, "{context}: since {token}: {reply}");
    }
    // Nothing half-written: every room each user is in (acknowledged or not) is whole.
    let checked = rooms_seen_before;
    let mut rooms_seen = BTreeSet::new();
    for user in users {
        let (status, joined) = server.get(&format!("{V3}/joined_rooms"), user.tok()).await;
        assert_eq!(status, 200, "{context}: {joined}");
        for room_id in joined["joined_rooms"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()) {
            rooms_seen.insert(room_id.to_owned());
            let (status, state) = server.get(&room_path(room_id, "state"), user.tok()).await;
            assert_eq!(status, 200, "{context}: state of {room_id}: {state}");
            let state = state.as_array().unwrap();
            let has = |kind: &str, key: &str| state.iter().any(|e| e["type"] == kind && e["state_key"] == key);
            assert!(has("m.room.create", ""), "{context}: {room_id} has no create event");
            assert!(has("m.room.power_levels", ""), "{context}: {room_id} has no power levels");
            let member = state.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == user.user_id.as_str());
            assert_eq!(member.map(|e| &e["content"]["membership"]), Some(&json!("join")), "{context}: {room_id}");
            // The room's current state names events that exist (checked once per room and run).
            if room_id == room || !checked.contains(room_id) {
                for event in state {
                    let path = room_path(room_id, &format!("event/{}", enc(event["event_id"].as_str().unwrap())));
                    assert_eq!(server.get(&path, user.tok()).await.0, 200, "{context}: {room_id}: {event}");
                }
            }
        }
    }
    for room_id in &acknowledged.rooms {
        assert!(rooms_seen.contains(room_id), "{context}: the acknowledged room {room_id} is lost");
    }
    rooms_seen
}

async fn sync_initial(server: &TestServer, user: &User) -> Value {
    let (status, reply) = server.get(&format!("{V3}/sync?timeout=0"), user.tok()).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn acknowledged_work_survives_sigkill_at_random_moments() {
    let kills: usize = std::env::var("MYELIN_CRASH_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let mut server = TestServer::start().await;
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol"] {
        users.push(server.register(name, "pw").await);
    }
    let room = create_room(&server, &users[0], json!({ "preset": "public_chat" })).await;
    for user in &users[1..] {
        join(&server, user, &room).await;
    }
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let mut rooms_seen = BTreeSet::new();
    for kill in 1..=kills {
        let tasks: Vec<_> = users
            .iter()
            .map(|user| tokio::spawn(load(server.base.clone(), user.clone(), room.clone(), kill, acknowledged.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..700))).await;
        server.kill();
        for task in tasks {
            task.await.unwrap();
        }
        server.restart();
        let so_far = acknowledged.lock().unwrap().clone();
        rooms_seen = check(&server, &users, &room, &so_far, kill, rooms_seen).await;
    }
    let acknowledged = acknowledged.lock().unwrap();
    let messages: usize = acknowledged.messages.values().map(Vec::len).sum();
    eprintln!(
        "{kills} kills; acknowledged: {messages} messages, {} topics, {} receipts, {} rooms",
        acknowledged.topics.len(),
        acknowledged.receipts.len(),
        acknowledged.rooms.len()
    );
    assert!(messages >= kills, "the load barely ran: {messages} messages");
}
