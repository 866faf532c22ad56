//! Rooms shared between two Myelin servers on 127.0.0.1: joins by alias through the resident
//! server, messages both ways, leaving, invites of remote users, ephemeral events, and the
//! federation read endpoints.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{TestServer, User};

/// Polls `check` until it yields something, for up to 20 seconds.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn encode(text: &str) -> String {
    text.replace('#', "%23").replace('!', "%21").replace(':', "%3A").replace('@', "%40").replace('$', "%24")
}

/// The bodies of the `m.room.message` events of a room's timeline, oldest first.
async fn messages(server: &TestServer, user: &User, room_id: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", encode(room_id));
    let (status, body) = server.get(&path, user.tok()).await;
    if status != 200 {
        return Vec::new();
    }
    let mut bodies: Vec<String> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    bodies.reverse();
    bodies
}

async fn members(server: &TestServer, user: &User, room_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", encode(room_id));
    server.get(&path, user.tok()).await.1["joined"].clone()
}

async fn send_text(server: &TestServer, user: &User, room_id: &str, text: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), rand_txn());
    let (status, body) = server.put(&path, user.tok(), json!({ "msgtype": "m.text", "body": text })).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn rand_txn() -> String {
    format!("t{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// Two federating servers, alice on the first with a public room `#lobby`, bob on the second.
async fn two_servers() -> (TestServer, TestServer, User, User, String, String) {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let alice = a.register("alice", "password").await;
    let bob = b.register("bob", "password").await;
    let (status, body) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.tok(),
            json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby", "visibility": "public" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    let alias = format!("#lobby:{}", a.server_name);
    (a, b, alice, bob, room_id, alias)
}

#[tokio::test]
async fn a_remote_user_joins_by_alias_and_messages_flow_both_ways() {
    let (a, b, alice, bob, room_id, alias) = two_servers().await;
    send_text(&a, &alice, &room_id, "before bob").await;

    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{}", encode(&alias)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\nA: {}\nB: {}", a.log(), b.log());
    assert_eq!(body["room_id"], room_id);

    // Both servers know both members, and B has the room's state.
    let joined = members(&b, &bob, &room_id).await;
    assert!(joined.get(&alice.user_id).is_some() && joined.get(&bob.user_id).is_some(), "{joined}");
    let joined = members(&a, &alice, &room_id).await;
    assert!(joined.get(&bob.user_id).is_some(), "{joined}");
    let (status, name) =
        b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name", encode(&room_id)), bob.tok()).await;
    assert_eq!((status.as_u16(), &name["name"]), (200, &json!("Lobby")));

    // A → B through A's sending queue and B's /send.
    send_text(&a, &alice, &room_id, "hello bob").await;
    eventually("alice's message on B", || async {
        messages(&b, &bob, &room_id).await.contains(&"hello bob".to_owned()).then_some(())
    })
    .await;
    // B → A.
    send_text(&b, &bob, &room_id, "hello alice").await;
    eventually("bob's message on A", || async {
        messages(&a, &alice, &room_id).await.contains(&"hello alice".to_owned()).then_some(())
    })
    .await;

    // Several each way, in order.
    for i in 0..5 {
        send_text(&a, &alice, &room_id, &format!("a{i}")).await;
        send_text(&b, &bob, &room_id, &format!("b{i}")).await;
    }
    for (server, user) in [(&a, &alice), (&b, &bob)] {
        let seen = eventually("every message on both servers", || async {
            let seen = messages(server, user, &room_id).await;
            (seen.iter().filter(|m| m.len() == 2).count() == 10).then_some(seen)
        })
        .await;
        let ours: Vec<&String> = seen.iter().filter(|m| m.starts_with('a') && m.len() == 2).collect();
        let theirs: Vec<&String> = seen.iter().filter(|m| m.starts_with('b') && m.len() == 2).collect();
        assert_eq!(ours, ["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(theirs, ["b0", "b1", "b2", "b3", "b4"]);
    }
}
