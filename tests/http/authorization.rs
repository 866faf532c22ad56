//! The authorization sweep: every client endpoint that reads room data, asked by users who may not
//! see a given event (non-members, users who left or were banned before it, users who joined after
//! it under `joined` or `invited` history visibility), answers 403/404 or leaves the event out;
//! never its content. Positive controls (`shared`, `world_readable`, events from before a leave)
//! show that the same requests do reveal what may be seen, so the sweep can fail.

use serde_json::{Value, json};

use crate::{
    server::{TestServer, User},
    sync::{V3, create_room, enc, invite, join, leave, room_path, send, send_text, set_state},
};

/// The requests that read room data, around one event.
fn reads(room: &str, event: &str, root: &str) -> Vec<(&'static str, String)> {
    let e = enc(event);
    vec![
        ("event", room_path(room, &format!("event/{e}"))),
        ("context", room_path(room, &format!("context/{e}?limit=10"))),
        ("relations of the event", v1(room, &format!("relations/{e}"))),
        ("relations of the thread root", v1(room, &format!("relations/{}?recurse=true", enc(root)))),
        ("threads", v1(room, "threads")),
        ("messages backward", room_path(room, "messages?dir=b&limit=100")),
        ("messages forward", room_path(room, "messages?dir=f&limit=100")),
        ("state", room_path(room, "state")),
        ("topic", room_path(room, "state/m.room.topic")),
        ("members", room_path(room, "members")),
        ("joined members", room_path(room, "joined_members")),
        ("aliases", room_path(room, "aliases")),
        ("initial sync", format!("{V3}/sync?timeout=0")),
    ]
}

/// Relations and threads are under `/v1`.
fn v1(room: &str, rest: &str) -> String {
    room_path(room, rest).replacen("/v3/", "/v1/", 1)
}

/// Single-event reads that must be refused outright when the event is hidden.
const REFUSED_WHEN_HIDDEN: [&str; 3] = ["event", "context", "relations of the event"];

/// What one user sees of a room: every read's status and body.
async fn sweep(
    server: &TestServer,
    user: &User,
    room: &str,
    event: &str,
    root: &str,
) -> Vec<(&'static str, u16, String)> {
    let mut seen = Vec::new();
    for (name, path) in reads(room, event, root) {
        let (status, body) = server.get(&path, user.tok()).await;
        seen.push((name, status.as_u16(), body.to_string()));
    }
    seen
}

/// The user learns nothing of `secret` (a message body, a topic) through any read.
async fn assert_hidden(server: &TestServer, user: &User, room: &str, event: &str, root: &str, secret: &str, who: &str) {
    for (name, status, body) in sweep(server, user, room, event, root).await {
        assert!(!body.contains(secret), "{who}: {name} ({status}) reveals {secret}: {body}");
        assert!(!body.contains(event), "{who}: {name} names {event}: {body}");
        assert!(!body.contains("M_UNRECOGNIZED"), "{who}: {name} is not an endpoint: {body}");
        if REFUSED_WHEN_HIDDEN.contains(&name) {
            assert!(matches!(status, 403 | 404), "{who}: {name} answered {status}: {body}");
        }
    }
}

/// The positive control: the same reads do show the event to a user allowed to see it.
async fn assert_visible(server: &TestServer, user: &User, room: &str, event: &str, root: &str, body: &str, who: &str) {
    let seen = sweep(server, user, room, event, root).await;
    for (name, status, reply) in &seen {
        if REFUSED_WHEN_HIDDEN.contains(name) || *name == "messages backward" {
            assert_eq!(*status, 200, "{who}: {name}: {reply}");
        }
    }
    let shows = |name: &str| seen.iter().any(|(n, _, reply)| *n == name && reply.contains(body));
    assert!(shows("event") && shows("context") && shows("messages backward"), "{who} cannot see {body}: {seen:?}");
}

/// A thread root everyone in the room saw, and a reply to it carrying `secret`.
async fn secret_thread_reply(server: &TestServer, author: &User, room: &str, root: &str, secret: &str) -> String {
    let content = json!({
        "msgtype": "m.text",
        "body": secret,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root },
    });
    send(server, author, room, "m.room.message", content).await
}

async fn room_with(server: &TestServer, owner: &User, visibility: &str, preset: &str) -> String {
    let room = create_room(server, owner, json!({ "preset": preset })).await;
    set_state(server, owner, room.as_str(), "m.room.history_visibility", json!({ "history_visibility": visibility }))
        .await;
    room
}

#[tokio::test]
async fn non_members_see_nothing_of_a_private_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let eve = server.register("eve", "pw").await;
    let room = room_with(&server, &alice, "shared", "private_chat").await;
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "SECRET-TOPIC" })).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let secret = secret_thread_reply(&server, &alice, &room, &root, "SECRET-1").await;
    assert_hidden(&server, &eve, &room, &secret, &root, "SECRET-1", "a non-member").await;
    assert_hidden(&server, &eve, &room, &secret, &root, "SECRET-TOPIC", "a non-member").await;
    // State reads are refused outright for someone who was never in the room.
    for (name, path) in reads(&room, &secret, &root) {
        if ["state", "topic", "members", "joined members"].contains(&name) {
            let (status, body) = server.get(&path, eve.tok()).await;
            assert_eq!(status, 403, "{name}: {body}");
        }
    }
}

#[tokio::test]
async fn users_who_left_or_were_banned_see_nothing_after_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let mallory = server.register("mallory", "pw").await;
    let room = room_with(&server, &alice, "shared", "public_chat").await;
    join(&server, &bob, &room).await;
    join(&server, &mallory, &room).await;
    let root = send_text(&server, &alice, &room, "before they went").await;
    leave(&server, &bob, &room).await;
    let (status, reply) = server
        .post(&room_path(&room, "ban"), alice.tok(), json!({ "user_id": mallory.user_id, "reason": "spam" }))
        .await;
    assert_eq!(status, 200, "{reply}");

    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "SECRET-TOPIC" })).await;
    let secret = secret_thread_reply(&server, &alice, &room, &root, "SECRET-2").await;
    let after = send_text(&server, &alice, &room, "SECRET-3").await;
    for (user, who) in [(&bob, "a user who left"), (&mallory, "a banned user")] {
        for (event, text) in [(&secret, "SECRET-2"), (&after, "SECRET-3")] {
            assert_hidden(&server, user, &room, event, &root, text, who).await;
        }
        assert_hidden(&server, user, &room, &after, &root, "SECRET-TOPIC", who).await;
        // What they saw before leaving stays readable (the control).
        assert_visible(&server, user, &room, &root, &root, "before they went", who).await;
    }
}

#[tokio::test]
async fn joined_and_invited_visibility_hide_what_came_before() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let carol = server.register("carol", "pw").await;

    // `joined`: nothing from before the join, even after being invited.
    let room = room_with(&server, &alice, "joined", "private_chat").await;
    let root = send_text(&server, &alice, &room, "root").await;
    let before = secret_thread_reply(&server, &alice, &room, &root, "SECRET-J").await;
    invite(&server, &alice, &room, &carol).await;
    let while_invited = send_text(&server, &alice, &room, "SECRET-JI").await;
    join(&server, &carol, &room).await;
    let after = send_text(&server, &alice, &room, "after the join").await;
    assert_hidden(&server, &carol, &room, &before, &root, "SECRET-J", "joined, before").await;
    assert_hidden(&server, &carol, &room, &while_invited, &root, "SECRET-JI", "joined, while invited").await;
    assert_visible(&server, &carol, &room, &after, &root, "after the join", "joined, after").await;

    // `invited`: from the invite on, not before it.
    let room = room_with(&server, &alice, "invited", "private_chat").await;
    let root = send_text(&server, &alice, &room, "root").await;
    let before = secret_thread_reply(&server, &alice, &room, &root, "SECRET-I").await;
    invite(&server, &alice, &room, &carol).await;
    let while_invited = send_text(&server, &alice, &room, "since the invite").await;
    join(&server, &carol, &room).await;
    assert_hidden(&server, &carol, &room, &before, &root, "SECRET-I", "invited, before").await;
    assert_visible(&server, &carol, &room, &while_invited, &root, "since the invite", "invited").await;
}

#[tokio::test]
async fn shared_and_world_readable_show_history_as_they_should() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let carol = server.register("carol", "pw").await;
    let eve = server.register("eve", "pw").await;

    // `shared`: a member sees history from before their join; a non-member still nothing.
    let room = room_with(&server, &alice, "shared", "public_chat").await;
    let root = send_text(&server, &alice, &room, "root").await;
    let early = secret_thread_reply(&server, &alice, &room, &root, "EARLY-S").await;
    join(&server, &carol, &room).await;
    assert_visible(&server, &carol, &room, &early, &root, "EARLY-S", "shared").await;
    assert_hidden(&server, &eve, &room, &early, &root, "EARLY-S", "shared, a non-member").await;

    // `world_readable`: anyone, member or not.
    let room = room_with(&server, &alice, "world_readable", "public_chat").await;
    let root = send_text(&server, &alice, &room, "root").await;
    let open = secret_thread_reply(&server, &alice, &room, &root, "OPEN-W").await;
    assert_visible(&server, &eve, &room, &open, &root, "OPEN-W", "world_readable, a non-member").await;
    // Until the room is no longer world-readable: later events are hidden again.
    set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": "shared" })).await;
    let closed = send_text(&server, &alice, &room, "SECRET-W").await;
    assert_hidden(&server, &eve, &room, &closed, &root, "SECRET-W", "no longer world_readable").await;
}

#[tokio::test]
async fn sync_never_carries_hidden_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = room_with(&server, &alice, "joined", "public_chat").await;
    send_text(&server, &alice, &room, "SECRET-BEFORE").await;
    join(&server, &bob, &room).await;
    let (_, first) = server.get(&format!("{V3}/sync?timeout=0"), bob.tok()).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    assert!(!first.to_string().contains("SECRET-BEFORE"), "{first}");
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "SECRET-AFTER").await;
    let (_, later) = server.get(&format!("{V3}/sync?timeout=0&since={}", enc(&since)), bob.tok()).await;
    let (_, full) = server.get(&format!("{V3}/sync?timeout=0&full_state=true&since={}", enc(&since)), bob.tok()).await;
    let filter = enc(&json!({ "room": { "include_leave": true } }).to_string());
    let (_, with_leave) = server.get(&format!("{V3}/sync?timeout=0&filter={filter}"), bob.tok()).await;
    for reply in [&later, &full, &with_leave] {
        let text = reply.to_string();
        assert!(!text.contains("SECRET-AFTER") && !text.contains("SECRET-BEFORE"), "{text}");
    }
    assert!(left_room(&with_leave, &room), "the control: the left room is there: {with_leave}");
}

fn left_room(reply: &Value, room: &str) -> bool {
    reply["rooms"]["leave"].get(room).is_some()
}
