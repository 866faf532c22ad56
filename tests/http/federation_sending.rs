//! The sending side between two Myelin servers: a peer that was down gets what was queued for it,
//! at once when it is heard from again; and a sender restarted with events queued delivers them.

use std::time::Duration;

use serde_json::json;

use crate::server::{TestServer, User};

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn encode(text: &str) -> String {
    text.replace('#', "%23").replace('!', "%21").replace(':', "%3A").replace('@', "%40").replace('$', "%24")
}

/// The bodies of the room's messages, oldest first.
async fn messages(server: &TestServer, user: &User, room_id: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500", encode(room_id));
    let (status, body) = server.get(&path, user.tok()).await;
    assert_eq!(status, 200, "{body}");
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

async fn send_text(server: &TestServer, user: &User, room_id: &str, text: &str) {
    let txn = format!("t{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room_id));
    let (status, body) = server.put(&path, user.tok(), json!({ "msgtype": "m.text", "body": text })).await;
    assert_eq!(status, 200, "{body}");
}

/// A (with `a_settings`) and B; alice's public room on A, which bob (on B) joined, and where a
/// first message from each side has crossed.
async fn joined(a_settings: &[(&str, &str)]) -> (TestServer, TestServer, User, User, String) {
    let a = TestServer::start_federating(a_settings).await;
    let b = TestServer::start_federating(&[]).await;
    let alice = a.register("alice", "password").await;
    let bob = b.register("bob", "password").await;
    let body = json!({ "preset": "public_chat", "room_alias_name": "lobby" });
    let (status, body) = a.post("/_matrix/client/v3/createRoom", alice.tok(), body).await;
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    let alias = format!("#lobby:{}", a.server_name);
    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{}", encode(&alias)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\nA: {}\nB: {}", a.log(), b.log());
    send_text(&a, &alice, &room_id, "hello bob").await;
    send_text(&b, &bob, &room_id, "hello alice").await;
    eventually("the greetings to cross", || async {
        messages(&b, &bob, &room_id).await.contains(&"hello bob".to_owned())
            && messages(&a, &alice, &room_id).await.contains(&"hello alice".to_owned())
    })
    .await;
    (a, b, alice, bob, room_id)
}

/// The messages named `{prefix}{n}`, in the order seen.
fn numbered(seen: &[String], prefix: &str) -> Vec<String> {
    seen.iter().filter(|m| m.strip_prefix(prefix).is_some_and(|n| n.parse::<u32>().is_ok())).cloned().collect()
}

#[tokio::test]
async fn a_peer_that_was_down_gets_everything_in_order_as_soon_as_it_is_heard_from() {
    // After one failure A would wait ten minutes: only a sign of life from B can bring the rest.
    let (a, mut b, alice, bob, room_id) =
        joined(&[("MYELIN_FEDERATION__RETRY_MIN_MS", "600000"), ("MYELIN_FEDERATION__RETRY_MAX_SECS", "600")]).await;
    b.terminate();
    // More than one transaction's worth.
    for i in 0..60 {
        send_text(&a, &alice, &room_id, &format!("m{i}")).await;
    }
    b.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(numbered(&messages(&b, &bob, &room_id).await, "m").is_empty(), "A should still be waiting");

    // Bob speaks: B's transaction reaches A, which retries at once.
    send_text(&b, &bob, &room_id, "i am back").await;
    let expected: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    eventually("alice's 60 messages on B", || async { numbered(&messages(&b, &bob, &room_id).await, "m").len() == 60 })
        .await;
    assert_eq!(numbered(&messages(&b, &bob, &room_id).await, "m"), expected, "\nA: {}", a.log());
    eventually("bob's message on A", || async {
        messages(&a, &alice, &room_id).await.contains(&"i am back".to_owned())
    })
    .await;
}

#[tokio::test]
async fn events_queued_when_the_sender_stops_go_out_after_it_starts_again() {
    let (mut a, mut b, alice, bob, room_id) =
        joined(&[("MYELIN_FEDERATION__RETRY_MIN_MS", "200"), ("MYELIN_FEDERATION__RETRY_MAX_SECS", "1")]).await;
    b.terminate();
    for i in 0..3 {
        send_text(&a, &alice, &room_id, &format!("r{i}")).await;
    }
    assert!(a.terminate().success());
    b.restart();
    a.restart();
    eventually("the queued messages on B", || async { numbered(&messages(&b, &bob, &room_id).await, "r").len() == 3 })
        .await;
    assert_eq!(numbered(&messages(&b, &bob, &room_id).await, "r"), ["r0", "r1", "r2"]);
    assert!(a.log().contains("resuming outbound federation queues"), "{}", a.log());
}
