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

    // Twenty each way, interleaved, each side's in order.
    for i in 0..20 {
        send_text(&a, &alice, &room_id, &format!("a{i}")).await;
        send_text(&b, &bob, &room_id, &format!("b{i}")).await;
    }
    let numbered = |seen: &[String], prefix: char| -> Vec<String> {
        seen.iter().filter(|m| m.starts_with(prefix) && m[1..].parse::<u32>().is_ok()).cloned().collect()
    };
    for (server, user) in [(&a, &alice), (&b, &bob)] {
        let seen = eventually("every message on both servers", || async {
            let seen = messages(server, user, &room_id).await;
            (numbered(&seen, 'a').len() + numbered(&seen, 'b').len() == 40).then_some(seen)
        })
        .await;
        assert_eq!(numbered(&seen, 'a'), (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>());
        assert_eq!(numbered(&seen, 'b'), (0..20).map(|i| format!("b{i}")).collect::<Vec<_>>());
    }
}

/// The user's sync, initial.
async fn sync(server: &TestServer, user: &User) -> Value {
    let (status, body) = server.get("/_matrix/client/v3/sync?timeout=0", user.tok()).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn join_by_alias(b: &TestServer, bob: &User, alias: &str) {
    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{}", encode(alias)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
}

#[tokio::test]
async fn the_last_local_member_leaves_through_the_resident_server() {
    let (a, b, alice, bob, room_id, alias) = two_servers().await;
    join_by_alias(&b, &bob, &alias).await;
    let since = sync(&b, &bob).await["next_batch"].as_str().unwrap().to_owned();
    let (status, body) =
        b.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room_id)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    // B knows bob left at once; A was told through send_leave.
    let joined = members(&a, &alice, &room_id).await;
    assert!(joined.get(&bob.user_id).is_none(), "{joined}");
    let (_, sync) = b.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"), bob.tok()).await;
    let left = &sync["rooms"]["leave"][&room_id]["timeline"]["events"];
    assert!(
        left.as_array().unwrap().iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "{sync}"
    );
    assert!(sync["rooms"]["join"].get(&room_id).is_none(), "{sync}");
    // And can come back.
    join_by_alias(&b, &bob, &alias).await;
    let joined = members(&a, &alice, &room_id).await;
    assert!(joined.get(&bob.user_id).is_some(), "{joined}");
}

#[tokio::test]
async fn a_remote_invite_is_signed_by_the_invitees_server_and_accepted_by_joining() {
    let (a, b, alice, bob, room_id, _) = two_servers().await;
    let carol = b.register("carol", "password").await;
    let invite = |user: &User| json!({ "user_id": user.user_id });
    let (status, body) =
        a.post(&format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id)), alice.tok(), invite(&bob)).await;
    assert_eq!(status, 200, "{body}\nA: {}\nB: {}", a.log(), b.log());

    // Bob sees the invite with the room's stripped state.
    let sync = sync(&b, &bob).await;
    let state = &sync["rooms"]["invite"][&room_id]["invite_state"]["events"];
    let names: Vec<&Value> = state.as_array().unwrap().iter().filter(|e| e["type"] == "m.room.name").collect();
    assert_eq!(names[0]["content"]["name"], "Lobby", "{sync}");
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    // A has the invite in the room, signed by B too.
    let (_, member) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room_id), encode(&bob.user_id)),
            alice.tok(),
        )
        .await;
    assert_eq!(member["membership"], "invite", "{member}");

    // Accepting is joining (through the inviter's server).
    let (status, body) =
        b.post(&format!("/_matrix/client/v3/rooms/{}/join", encode(&room_id)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let joined = members(&a, &alice, &room_id).await;
    assert!(joined.get(&bob.user_id).is_some(), "{joined}");
    let sync = crate::federation_rooms::sync(&b, &bob).await;
    assert!(sync["rooms"]["join"].get(&room_id).is_some(), "{sync}");
    assert!(sync["rooms"]["invite"].get(&room_id).is_none(), "{sync}");

    // Carol declines hers (through A, as B is in the room now only through bob: a local leave
    // would do as well, but carol is not in the room, so it goes through send_leave).
    let (status, _) =
        a.post(&format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id)), alice.tok(), invite(&carol)).await;
    assert_eq!(status, 200);
    let (status, body) =
        b.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room_id)), carol.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let (_, member) = eventually("carol's refusal on A", || async {
        let reply = a
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                    encode(&room_id),
                    encode(&carol.user_id)
                ),
                alice.tok(),
            )
            .await;
        (reply.1["membership"] == "leave").then_some(reply)
    })
    .await;
    assert_eq!(member["membership"], "leave");
}

#[tokio::test]
async fn typing_receipts_and_presence_cross_over() {
    let (a, b, alice, bob, room_id, alias) = two_servers().await;
    join_by_alias(&b, &bob, &alias).await;
    let event_id = send_text(&a, &alice, &room_id, "read me").await;
    eventually("the message on B", || async {
        messages(&b, &bob, &room_id).await.contains(&"read me".to_owned()).then_some(())
    })
    .await;

    // Alice types on A: bob sees it on B.
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&room_id), encode(&alice.user_id));
    let (status, _) = a.put(&path, alice.tok(), json!({ "typing": true, "timeout": 2000 })).await;
    assert_eq!(status, 200);
    let typing_on_b = || async {
        let sync = sync(&b, &bob).await;
        let ephemeral = sync["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral.iter().any(|e| {
            e["type"] == "m.typing" && e["content"]["user_ids"].as_array().unwrap().contains(&json!(alice.user_id))
        })
    };
    eventually("alice typing on B", || async { typing_on_b().await.then_some(()) }).await;
    // It runs out on A, which tells B (B alone would keep a remote user typing for a minute).
    eventually("alice's typing to stop on B", || async { (!typing_on_b().await).then_some(()) }).await;

    // Bob reads on B: alice sees the receipt on A.
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room_id), encode(&event_id));
    let (status, body) = b.post(&path, bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}");
    eventually("bob's receipt on A", || async {
        let sync = sync(&a, &alice).await;
        let ephemeral = sync["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        ephemeral
            .iter()
            .any(|e| e["type"] == "m.receipt" && !e["content"][&event_id]["m.read"][&bob.user_id].is_null())
            .then_some(())
    })
    .await;

    // Bob sets his status on B: alice sees it on A.
    let path = format!("/_matrix/client/v3/presence/{}/status", encode(&bob.user_id));
    let (status, _) = b.put(&path, bob.tok(), json!({ "presence": "online", "status_msg": "over here" })).await;
    assert_eq!(status, 200);
    eventually("bob's presence on A", || async {
        let sync = sync(&a, &alice).await;
        sync["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["status_msg"] == "over here")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_server_that_joins_hears_the_presence_of_those_already_there() {
    let (a, b, alice, bob, _, alias) = two_servers().await;
    // Each says something before they share a room: nobody else is told then.
    let path = format!("/_matrix/client/v3/presence/{}/status", encode(&alice.user_id));
    let (status, _) = a.put(&path, alice.tok(), json!({ "presence": "online", "status_msg": "alice here" })).await;
    assert_eq!(status, 200);
    let path = format!("/_matrix/client/v3/presence/{}/status", encode(&bob.user_id));
    let (status, _) = b.put(&path, bob.tok(), json!({ "presence": "online", "status_msg": "bob here" })).await;
    assert_eq!(status, 200);
    join_by_alias(&b, &bob, &alias).await;
    let sees = |server: &'static str, who: String, text: &'static str| {
        let (server, user) = if server == "a" { (&a, &alice) } else { (&b, &bob) };
        async move {
            let sync = sync(server, user).await;
            sync["presence"]["events"]
                .as_array()
                .is_some_and(|events| {
                    events.iter().any(|e| e["sender"] == who.as_str() && e["content"]["status_msg"] == text)
                })
                .then_some(())
        }
    };
    eventually("alice's presence on B", || sees("b", alice.user_id.clone(), "alice here")).await;
    eventually("bob's presence on A", || sees("a", bob.user_id.clone(), "bob here")).await;
}

#[tokio::test]
async fn history_from_before_the_join_is_backfilled_from_the_resident_server() {
    let (a, b, alice, bob, room_id, alias) = two_servers().await;
    let count = 200;
    for i in 0..count {
        send_text(&a, &alice, &room_id, &format!("old {i}")).await;
    }
    join_by_alias(&b, &bob, &alias).await;
    send_text(&b, &bob, &room_id, "new").await;

    // Paging back from now: bob's message and join, then the older history, fetched from A as
    // B's own runs out.
    let mut seen = Vec::new();
    let mut last_type = String::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=25", encode(&room_id));
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, body) = b.get(&path, bob.tok()).await;
        assert_eq!(status, 200, "{body}\n{}", b.log());
        for event in body["chunk"].as_array().unwrap() {
            if event["type"] == "m.room.message" {
                seen.push(event["content"]["body"].as_str().unwrap().to_owned());
            }
            last_type = event["type"].as_str().unwrap().to_owned();
        }
        match body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let mut expected = vec!["new".to_owned()];
    expected.extend((0..count).rev().map(|i| format!("old {i}")));
    assert_eq!(seen, expected, "\n{}", b.log());
    // Back to the room's creation.
    assert_eq!(last_type, "m.room.create");
}

#[tokio::test]
async fn declining_an_invite_to_a_room_we_are_not_in_goes_through_the_inviter() {
    let (a, b, alice, bob, room_id, _) = two_servers().await;
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id)),
            alice.tok(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let since = sync(&b, &bob).await["next_batch"].as_str().unwrap().to_owned();
    let (status, body) =
        b.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room_id)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let (_, member) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room_id), encode(&bob.user_id)),
            alice.tok(),
        )
        .await;
    assert_eq!(member["membership"], "leave", "{member}");
    // Bob's client drops the invite: the room comes as left, with the leave.
    let (_, sync) = b.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"), bob.tok()).await;
    let events = &sync["rooms"]["leave"][&room_id]["timeline"]["events"];
    assert_eq!(events[0]["content"]["membership"], "leave", "{sync}");
    assert!(sync["rooms"]["invite"].get(&room_id).is_none(), "{sync}");
}

#[tokio::test]
async fn a_remote_user_knocks_and_is_let_in() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let alice = a.register("alice", "password").await;
    let bob = b.register("bob", "password").await;
    let (status, body) = a
        .post(
            "/_matrix/client/v3/createRoom",
            alice.tok(),
            json!({
                "room_version": "10",
                "room_alias_name": "door",
                "name": "Knock first",
                "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    let alias = format!("#door:{}", a.server_name);

    let (status, body) =
        b.post(&format!("/_matrix/client/v3/knock/{}", encode(&alias)), bob.tok(), json!({ "reason": "hi" })).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let (_, member) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room_id), encode(&bob.user_id)),
            alice.tok(),
        )
        .await;
    assert_eq!(member["membership"], "knock", "{member}");
    let sync = sync(&b, &bob).await;
    let state = &sync["rooms"]["knock"][&room_id]["knock_state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"), "{sync}");

    // Alice lets him in: an invite, which bob accepts.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id)),
            alice.tok(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", a.log());
    let (status, body) = b.post(&format!("/_matrix/client/v3/join/{}", encode(&room_id)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let joined = members(&a, &alice, &room_id).await;
    assert!(joined.get(&bob.user_id).is_some(), "{joined}");
}
