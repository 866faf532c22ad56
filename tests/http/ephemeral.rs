//! Typing, receipts, read markers, presence, room account data and tags, as the endpoints set them
//! and as other users' (and one's own) `/sync` sees them.

use serde_json::{Value, json};

use crate::{
    history::{V3, create_room, enc, public_room, room_path, send, send_text, sync, sync_token, sync_until},
    server::{TestServer, User, assert_error},
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn joined<'a>(reply: &'a Value, room_id: &str) -> &'a Value {
    &reply["rooms"]["join"][room_id]
}

/// The events of a section (`ephemeral`, `account_data`, `timeline`) of a joined room.
fn section(reply: &Value, room_id: &str, name: &str) -> Vec<Value> {
    joined(reply, room_id)[name]["events"].as_array().cloned().unwrap_or_default()
}

fn ephemeral_of(reply: &Value, room_id: &str, kind: &str) -> Option<Value> {
    section(reply, room_id, "ephemeral").into_iter().find(|e| e["type"] == kind)
}

/// Who is typing, if the response says.
fn typing_in(reply: &Value, room_id: &str) -> Option<Vec<String>> {
    ephemeral_of(reply, room_id, "m.typing")
        .map(|e| e["content"]["user_ids"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect())
}

fn receipts_in(reply: &Value, room_id: &str) -> Option<Value> {
    ephemeral_of(reply, room_id, "m.receipt").map(|e| e["content"].clone())
}

fn room_account_data(reply: &Value, room_id: &str, kind: &str) -> Option<Value> {
    section(reply, room_id, "account_data").into_iter().find(|e| e["type"] == kind).map(|e| e["content"].clone())
}

/// The presence contents of a user in a sync response.
fn presence_of(reply: &Value, user: &User) -> Vec<Value> {
    reply["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == user.user_id.as_str())
        .map(|e| {
            assert_eq!(e["type"], "m.presence", "{e}");
            e["content"].clone()
        })
        .collect()
}

fn last(seen: &[Value]) -> &Value {
    seen.last().unwrap()
}

fn next_batch(seen: &[Value]) -> String {
    last(seen)["next_batch"].as_str().unwrap().to_owned()
}

async fn set_typing(server: &TestServer, user: &User, room_id: &str, body: Value) -> (reqwest::StatusCode, Value) {
    server.put(&room_path(room_id, &format!("typing/{}", user.user_id)), user.tok(), body).await
}

async fn receipt(
    server: &TestServer,
    user: &User,
    room_id: &str,
    kind: &str,
    event_id: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    server.post(&room_path(room_id, &format!("receipt/{kind}/{}", enc(event_id))), user.tok(), body).await
}

async fn read(server: &TestServer, user: &User, room_id: &str, kind: &str, event_id: &str, body: Value) {
    let reply = receipt(server, user, room_id, kind, event_id, body).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
}

fn presence_path(user: &User) -> String {
    format!("{V3}/presence/{}/status", user.user_id)
}

async fn presence(server: &TestServer, viewer: &User, of: &User) -> Value {
    let (status, reply) = server.get(&presence_path(of), viewer.tok()).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn set_presence(server: &TestServer, user: &User, body: Value) {
    let (status, reply) = server.put(&presence_path(user), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
}

fn room_data_path(user: &User, room_id: &str, kind: &str) -> String {
    format!("{V3}/user/{}/rooms/{}/account_data/{kind}", user.user_id, enc(room_id))
}

fn tags_path(user: &User, room_id: &str) -> String {
    format!("{V3}/user/{}/rooms/{}/tags", user.user_id, enc(room_id))
}

// ---------------------------------------------------------------------------------------------
// Typing

#[tokio::test]
async fn typing_reaches_the_other_member_and_stops() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;

    let reply = set_typing(&server, &alice, &room, json!({ "typing": true, "timeout": 30000 })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let seen = sync_until(&server, &bob, &since, None, |r| typing_in(r, &room).is_some()).await;
    assert_eq!(typing_in(last(&seen), &room).unwrap(), [alice.user_id.as_str()]);
    // A first sync shows who is typing now.
    let initial = sync(&server, &bob, &[]).await;
    assert_eq!(typing_in(&initial, &room).unwrap(), [alice.user_id.as_str()]);

    let reply = set_typing(&server, &alice, &room, json!({ "typing": false })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| typing_in(r, &room).is_some()).await;
    assert_eq!(typing_in(last(&seen), &room).unwrap(), Vec::<String>::new());
    let initial = sync(&server, &bob, &[]).await;
    assert!(typing_in(&initial, &room).is_none(), "nobody types: {initial}");
}

#[tokio::test]
async fn typing_runs_out_by_itself_and_wakes_a_waiting_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;

    let reply = set_typing(&server, &alice, &room, json!({ "typing": true, "timeout": 1000 })).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let seen = sync_until(&server, &bob, &since, None, |r| typing_in(r, &room).is_some()).await;
    assert_eq!(typing_in(last(&seen), &room).unwrap(), [alice.user_id.as_str()]);
    // Nobody says anything more: the long-poll wakes when the typing runs out.
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| typing_in(r, &room).is_some()).await;
    assert_eq!(typing_in(last(&seen), &room).unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn typing_for_someone_else_or_outside_the_room_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;

    let for_bob =
        server.put(&room_path(&room, &format!("typing/{}", bob.user_id)), alice.tok(), json!({ "typing": true })).await;
    assert_error(&for_bob, 403, "M_FORBIDDEN");
    let outsider = set_typing(&server, &stranger, &room, json!({ "typing": true })).await;
    assert_error(&outsider, 403, "M_FORBIDDEN");
    let nowhere = set_typing(&server, &alice, "!unknown:test.local", json!({ "typing": true })).await;
    assert_error(&nowhere, 403, "M_FORBIDDEN");
    let bad = set_typing(&server, &alice, &room, json!({ "typing": "yes" })).await;
    assert_error(&bad, 400, "M_BAD_JSON");
    let missing = set_typing(&server, &alice, &room, json!({ "timeout": 1000 })).await;
    assert_error(&missing, 400, "M_BAD_JSON");

    // None of that made anyone type.
    let initial = sync(&server, &bob, &[]).await;
    assert!(typing_in(&initial, &room).is_none(), "{initial}");
}

// ---------------------------------------------------------------------------------------------
// Receipts

#[tokio::test]
async fn read_receipts_reach_others_and_private_ones_stay_private() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let e1 = send_text(&server, &alice, &room, "one").await;
    let e2 = send_text(&server, &alice, &room, "two").await;
    let e3 = send_text(&server, &alice, &room, "three").await;
    let alice_since = sync_token(&server, &alice).await;
    let bob_since = sync_token(&server, &bob).await;

    read(&server, &bob, &room, "m.read", &e1, json!({})).await;
    let seen = sync_until(&server, &alice, &alice_since, None, |r| receipts_in(r, &room).is_some()).await;
    let receipts = receipts_in(last(&seen), &room).unwrap();
    let mine = &receipts[&e1]["m.read"][&bob.user_id];
    assert!(mine["ts"].is_u64(), "{receipts}");
    assert!(mine.get("thread_id").is_none(), "an unthreaded receipt: {receipts}");

    // A private receipt, then a public one after it: alice hears of the public one only, and by
    // then the private one would have come too.
    read(&server, &bob, &room, "m.read.private", &e3, json!({})).await;
    read(&server, &bob, &room, "m.read", &e2, json!({})).await;
    let seen = sync_until(&server, &alice, &next_batch(&seen), None, |r| {
        receipts_in(r, &room).is_some_and(|c| c[&e2]["m.read"][&bob.user_id].is_object())
    })
    .await;
    for reply in &seen {
        assert!(!reply.to_string().contains("m.read.private"), "a private receipt leaked: {reply}");
    }
    let initial = sync(&server, &alice, &[]).await;
    let all = receipts_in(&initial, &room).unwrap();
    assert!(all[&e2]["m.read"][&bob.user_id].is_object(), "{all}");
    assert!(all.get(&e1).is_none(), "bob's receipt moved on: {all}");
    assert!(!initial.to_string().contains("m.read.private"), "{initial}");

    // Bob sees his own private receipt, in his next sync and in a first one.
    let seen = sync_until(&server, &bob, &bob_since, None, |r| {
        receipts_in(r, &room).is_some_and(|c| c[&e3]["m.read.private"][&bob.user_id].is_object())
    })
    .await;
    assert!(receipts_in(last(&seen), &room).is_some());
    let own = receipts_in(&sync(&server, &bob, &[]).await, &room).unwrap();
    assert!(own[&e3]["m.read.private"][&bob.user_id]["ts"].is_u64(), "{own}");
    assert!(own[&e2]["m.read"][&bob.user_id]["ts"].is_u64(), "{own}");
}

#[tokio::test]
async fn threaded_receipts_are_kept_apart_from_unthreaded_ones() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let in_thread = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "reply", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    )
    .await;
    let e1 = send_text(&server, &alice, &room, "one").await;
    let e2 = send_text(&server, &alice, &room, "two").await;
    let e3 = send_text(&server, &alice, &room, "three").await;

    read(&server, &bob, &room, "m.read", &e1, json!({})).await;
    read(&server, &bob, &room, "m.read", &e2, json!({ "thread_id": "main" })).await;
    read(&server, &bob, &room, "m.read", &in_thread, json!({ "thread_id": root })).await;
    let receipts = receipts_in(&sync(&server, &alice, &[]).await, &room).unwrap();
    let bobs = |receipts: &Value, event: &str| receipts[event]["m.read"][&bob.user_id].clone();
    assert!(bobs(&receipts, &e1)["ts"].is_u64(), "{receipts}");
    assert!(bobs(&receipts, &e1).get("thread_id").is_none(), "{receipts}");
    assert_eq!(bobs(&receipts, &e2)["thread_id"], "main", "{receipts}");
    assert_eq!(bobs(&receipts, &in_thread)["thread_id"], root.as_str(), "{receipts}");

    // A new unthreaded receipt replaces the unthreaded one only.
    read(&server, &bob, &room, "m.read", &e3, json!({})).await;
    let receipts = receipts_in(&sync(&server, &alice, &[]).await, &room).unwrap();
    assert!(receipts.get(&e1).is_none(), "{receipts}");
    assert!(bobs(&receipts, &e3).get("thread_id").is_none(), "{receipts}");
    assert_eq!(bobs(&receipts, &e2)["thread_id"], "main", "{receipts}");
    assert_eq!(bobs(&receipts, &in_thread)["thread_id"], root.as_str(), "{receipts}");
    // And a new one on the main timeline replaces the main one only.
    read(&server, &bob, &room, "m.read", &root, json!({ "thread_id": "main" })).await;
    let receipts = receipts_in(&sync(&server, &alice, &[]).await, &room).unwrap();
    assert!(receipts.get(&e2).is_none(), "{receipts}");
    assert_eq!(bobs(&receipts, &root)["thread_id"], "main", "{receipts}");
    assert!(bobs(&receipts, &e3).get("thread_id").is_none(), "{receipts}");
    assert_eq!(bobs(&receipts, &in_thread)["thread_id"], root.as_str(), "{receipts}");

    // Invalid thread IDs (spec: not a string, empty, or for a receipt type without threads).
    let before = receipts;
    assert_error(
        &receipt(&server, &bob, &room, "m.read", &e3, json!({ "thread_id": "" })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_eq!(receipt(&server, &bob, &room, "m.read", &e3, json!({ "thread_id": 7 })).await.0, 400);
    assert_eq!(receipt(&server, &bob, &room, "m.fully_read", &e3, json!({ "thread_id": "main" })).await.0, 400);
    assert_eq!(receipts_in(&sync(&server, &alice, &[]).await, &room).unwrap(), before, "nothing changed");
}

#[tokio::test]
async fn receipts_for_unknown_events_types_or_rooms_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let event = send_text(&server, &alice, &room, "hello").await;
    let other_room = create_room(&server, &alice, json!({})).await;
    let elsewhere = send_text(&server, &alice, &other_room, "elsewhere").await;

    let unknown = "$doesnotexist0000000000000000000000000000000";
    assert_error(&receipt(&server, &alice, &room, "m.read", unknown, json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&receipt(&server, &alice, &room, "m.read", &elsewhere, json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&receipt(&server, &alice, &room, "m.glance", &event, json!({})).await, 400, "M_INVALID_PARAM");
    assert_error(&receipt(&server, &stranger, &room, "m.read", &event, json!({})).await, 403, "M_FORBIDDEN");
    assert!(receipts_in(&sync(&server, &alice, &[]).await, &room).is_none(), "no receipt was stored");
    // A body may be left out.
    let (status, reply) = server
        .request(
            reqwest::Method::POST,
            &room_path(&room, &format!("receipt/m.read/{}", enc(&event))),
            alice.tok(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn a_read_receipt_on_the_latest_event_clears_unread_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    let counts = |reply: &Value| joined(reply, &room)["unread_notifications"].clone();

    send_text(&server, &alice, &room, "one").await;
    send_text(&server, &alice, &room, "two").await;
    let latest = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob.user_id] } }),
    )
    .await;
    let seen = sync_until(&server, &bob, &since, None, |r| counts(r)["notification_count"] == 3).await;
    assert_eq!(counts(last(&seen))["highlight_count"], 1, "{}", last(&seen));

    read(&server, &bob, &room, "m.read", &latest, json!({})).await;
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| counts(r)["notification_count"] == 0).await;
    assert_eq!(counts(last(&seen))["highlight_count"], 0);

    // A private receipt clears them as well.
    let more = send_text(&server, &alice, &room, "four").await;
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| counts(r)["notification_count"] == 1).await;
    read(&server, &bob, &room, "m.read.private", &more, json!({})).await;
    sync_until(&server, &bob, &next_batch(&seen), None, |r| counts(r)["notification_count"] == 0).await;
    assert_eq!(counts(&sync(&server, &bob, &[]).await), json!({ "notification_count": 0, "highlight_count": 0 }));
}

/// Long-polls until the room's notification count is `count`; moves `since` on.
async fn unread_becomes(server: &TestServer, user: &User, room_id: &str, since: &mut String, count: u64) {
    let seen = sync_until(server, user, since, None, |r| {
        joined(r, room_id)["unread_notifications"]["notification_count"] == count
    })
    .await;
    *since = next_batch(&seen);
}

#[tokio::test]
async fn threaded_read_receipts_clear_the_counts_of_their_thread_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let mut since = sync_token(&server, &bob).await;
    let in_thread = |root: &str, body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });

    let root = send_text(&server, &alice, &room, "root").await;
    let main1 = send_text(&server, &alice, &room, "main 1").await;
    let reply1 = send(&server, &alice, &room, "m.room.message", in_thread(&root, "reply 1")).await;
    unread_becomes(&server, &bob, &room, &mut since, 3).await;
    // Read on the main timeline: the reply in the thread is still unread.
    read(&server, &bob, &room, "m.read", &main1, json!({ "thread_id": "main" })).await;
    unread_becomes(&server, &bob, &room, &mut since, 1).await;
    // Read in the thread.
    read(&server, &bob, &room, "m.read", &reply1, json!({ "thread_id": root })).await;
    unread_becomes(&server, &bob, &room, &mut since, 0).await;

    // New messages on both sides; reading the thread leaves the main timeline unread.
    let main2 = send_text(&server, &alice, &room, "main 2").await;
    unread_becomes(&server, &bob, &room, &mut since, 1).await;
    let reply2 = send(&server, &alice, &room, "m.room.message", in_thread(&root, "reply 2")).await;
    unread_becomes(&server, &bob, &room, &mut since, 2).await;
    read(&server, &bob, &room, "m.read", &reply2, json!({ "thread_id": root })).await;
    unread_becomes(&server, &bob, &room, &mut since, 1).await;
    // An unthreaded receipt reads everything up to its event, whatever the thread.
    read(&server, &bob, &room, "m.read", &main2, json!({})).await;
    unread_becomes(&server, &bob, &room, &mut since, 0).await;
}

/// With the filter's `unread_thread_notifications`, `unread_notifications` counts the main
/// timeline and each thread with unread notifications has its own counts; without it, the counts
/// are of everything (as Complement's TestThreadedReceipts checks).
#[tokio::test]
async fn unread_thread_notifications_count_each_thread_apart() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    let in_thread = |root: &str, body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    let mention = format!("hello {}", bob.user_id);

    let root = send_text(&server, &alice, &room, "root").await;
    send(&server, &alice, &room, "m.room.message", in_thread(&root, "reply")).await;
    send(&server, &alice, &room, "m.room.message", in_thread(&root, &mention)).await;
    let main_mention = send_text(&server, &alice, &room, &mention).await;
    let reference =
        json!({ "msgtype": "m.text", "body": "see", "m.relates_to": { "rel_type": "m.reference", "event_id": root } });
    send(&server, &alice, &room, "m.room.message", reference).await;

    let counts = |notifications: u64, highlights: u64| json!({ "notification_count": notifications, "highlight_count": highlights });
    let everything = sync(&server, &bob, &[("since", &since)]).await;
    assert_eq!(joined(&everything, &room)["unread_notifications"], counts(5, 2), "{everything}");
    assert!(joined(&everything, &room).get("unread_thread_notifications").is_none(), "not asked for");

    let filter = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;
    let split = sync(&server, &bob, &[("since", &since), ("filter", filter)]).await;
    let section = joined(&split, &room);
    assert_eq!(section["unread_notifications"], counts(3, 1), "root, mention, reference: {split}");
    assert_eq!(section["unread_thread_notifications"], json!({ root.clone(): counts(2, 1) }), "{split}");

    // A receipt on the main timeline reads only it; the thread keeps its counts.
    read(&server, &bob, &room, "m.read", &main_mention, json!({ "thread_id": "main" })).await;
    let split = sync(&server, &bob, &[("since", &since), ("filter", filter)]).await;
    let section = joined(&split, &room);
    assert_eq!(section["unread_notifications"], counts(1, 0), "the reference is after the receipt: {split}");
    assert_eq!(section["unread_thread_notifications"], json!({ root.clone(): counts(2, 1) }));
    let everything = sync(&server, &bob, &[("since", &since)]).await;
    assert_eq!(joined(&everything, &room)["unread_notifications"], counts(3, 1));
}

// ---------------------------------------------------------------------------------------------
// Read markers

#[tokio::test]
async fn read_markers_set_the_fully_read_marker_and_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let e1 = send_text(&server, &alice, &room, "one").await;
    let e2 = send_text(&server, &alice, &room, "two").await;
    let e3 = send_text(&server, &alice, &room, "three").await;
    let alice_since = sync_token(&server, &alice).await;
    let bob_since = sync_token(&server, &bob).await;

    let markers = json!({ "m.fully_read": e1, "m.read": e2, "m.read.private": e3 });
    let (status, reply) = server.post(&room_path(&room, "read_markers"), bob.tok(), markers).await;
    assert_eq!(status, 200, "{reply}");

    let bob_seen =
        sync_until(&server, &bob, &bob_since, None, |r| room_account_data(r, &room, "m.fully_read").is_some()).await;
    assert_eq!(room_account_data(last(&bob_seen), &room, "m.fully_read").unwrap(), json!({ "event_id": e1 }));
    let (status, content) = server.get(&room_data_path(&bob, &room, "m.fully_read"), bob.tok()).await;
    assert_eq!(status, 200, "{content}");
    assert_eq!(content, json!({ "event_id": e1 }));
    let own = receipts_in(&sync(&server, &bob, &[]).await, &room).unwrap();
    assert!(own[&e2]["m.read"][&bob.user_id].is_object(), "{own}");
    assert!(own[&e3]["m.read.private"][&bob.user_id].is_object(), "{own}");

    // Alice sees the public receipt, not the private one, and not the marker.
    let seen = sync_until(&server, &alice, &alice_since, None, |r| {
        receipts_in(r, &room).is_some_and(|c| c[&e2]["m.read"][&bob.user_id].is_object())
    })
    .await;
    for reply in &seen {
        assert!(!reply.to_string().contains("m.read.private"), "{reply}");
        assert!(room_account_data(reply, &room, "m.fully_read").is_none(), "{reply}");
    }

    // The receipt endpoint moves the marker too.
    read(&server, &bob, &room, "m.fully_read", &e3, json!({})).await;
    sync_until(&server, &bob, &next_batch(&bob_seen), None, |r| {
        room_account_data(r, &room, "m.fully_read") == Some(json!({ "event_id": e3 }))
    })
    .await;
    let (_, content) = server.get(&room_data_path(&bob, &room, "m.fully_read"), bob.tok()).await;
    assert_eq!(content, json!({ "event_id": e3 }));
    let all = receipts_in(&sync(&server, &bob, &[]).await, &room).unwrap();
    assert!(!all.to_string().contains("m.fully_read"), "the marker is not a receipt: {all}");

    // Clients may not set the marker as plain account data; an unknown event moves nothing.
    let direct = server.put(&room_data_path(&bob, &room, "m.fully_read"), bob.tok(), json!({ "event_id": e1 })).await;
    assert_error(&direct, 405, "M_BAD_JSON");
    let unknown = "$doesnotexist0000000000000000000000000000000";
    let reply = server.post(&room_path(&room, "read_markers"), bob.tok(), json!({ "m.fully_read": unknown })).await;
    assert_error(&reply, 404, "M_NOT_FOUND");
    let (_, content) = server.get(&room_data_path(&bob, &room, "m.fully_read"), bob.tok()).await;
    assert_eq!(content, json!({ "event_id": e3 }));
    let bad = server.post(&room_path(&room, "read_markers"), bob.tok(), json!({ "m.fully_read": 12 })).await;
    assert_error(&bad, 400, "M_BAD_JSON");
}

// ---------------------------------------------------------------------------------------------
// Presence

#[tokio::test]
async fn presence_status_round_trips_and_reaches_those_who_share_a_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    public_room(&server, &alice, &[&bob]).await;
    create_room(&server, &carol, json!({})).await;
    let since = sync_token(&server, &bob).await;

    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "writing tests" })).await;
    for viewer in [&alice, &bob] {
        let content = presence(&server, viewer, &alice).await;
        assert_eq!(content["presence"], "online", "{content}");
        assert_eq!(content["status_msg"], "writing tests");
        assert_eq!(content["currently_active"], true);
        assert!(content["last_active_ago"].is_u64(), "{content}");
    }
    assert_error(&server.get(&presence_path(&alice), carol.tok()).await, 403, "M_FORBIDDEN");

    let seen = sync_until(&server, &bob, &since, None, |r| {
        presence_of(r, &alice).iter().any(|c| c["status_msg"] == "writing tests")
    })
    .await;
    let content = presence_of(last(&seen), &alice).pop().unwrap();
    assert_eq!(content["presence"], "online", "{content}");
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].is_u64(), "{content}");

    set_presence(&server, &alice, json!({ "presence": "unavailable", "status_msg": "lunch" })).await;
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| {
        presence_of(r, &alice).iter().any(|c| c["status_msg"] == "lunch")
    })
    .await;
    let content = presence_of(last(&seen), &alice).pop().unwrap();
    assert_eq!(content["presence"], "unavailable", "{content}");
    assert_eq!(content["currently_active"], false);
    assert_eq!(presence(&server, &bob, &alice).await["presence"], "unavailable");

    // Carol shares no room with alice: her sync does not carry alice's presence.
    let carols = sync(&server, &carol, &[]).await;
    assert!(presence_of(&carols, &alice).is_empty(), "{carols}");

    // Only one's own presence can be set, and only to a known state.
    let reply = server.put(&presence_path(&bob), alice.tok(), json!({ "presence": "offline" })).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    let reply = server.put(&presence_path(&alice), alice.tok(), json!({ "presence": "busy" })).await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
    let reply = server.put(&presence_path(&alice), alice.tok(), json!({ "status_msg": "no state" })).await;
    assert_error(&reply, 400, "M_BAD_JSON");
    let content = presence(&server, &alice, &alice).await;
    assert_eq!((&content["presence"], &content["status_msg"]), (&json!("unavailable"), &json!("lunch")));
    // Syncing makes one online; one's own sync shows one's presence.
    let own = sync(&server, &bob, &[]).await;
    assert_eq!(presence_of(&own, &bob).pop().unwrap()["presence"], "online", "{own}");
}

/// Whether a sync's timeline of `room_id` holds `user`'s join.
fn shows_join(reply: &Value, room_id: &str, user: &User) -> bool {
    section(reply, room_id, "timeline")
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == user.user_id && e["content"]["membership"] == "join")
}

#[tokio::test]
async fn presence_of_those_who_newly_share_a_room_comes_with_the_join() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "alice here" })).await;
    set_presence(&server, &bob, json!({ "presence": "online", "status_msg": "bob here" })).await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    // Neither presence changes after these tokens: what the syncs below carry is news only
    // because the two come to share a room.
    let (alice_since, bob_since) = (sync_token(&server, &alice).await, sync_token(&server, &bob).await);
    let (status, reply) = server.post(&room_path(&room, "join"), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");

    // The existing member learns the new member's presence in the sync that shows the join.
    let alices = sync_until(&server, &alice, &alice_since, None, |r| shows_join(r, &room, &bob)).await;
    let content = presence_of(last(&alices), &bob).pop().unwrap_or_else(|| panic!("{:#}", last(&alices)));
    assert_eq!((&content["presence"], &content["status_msg"]), (&json!("online"), &json!("bob here")));
    // The new member learns the presence of the room's members with the room.
    let seen = sync_until(&server, &bob, &bob_since, None, |r| !section(r, &room, "timeline").is_empty()).await;
    let content = presence_of(last(&seen), &alice).pop().unwrap_or_else(|| panic!("{:#}", last(&seen)));
    assert_eq!((&content["presence"], &content["status_msg"]), (&json!("online"), &json!("alice here")));

    // Once shared, unchanged presence is not repeated.
    let id = send_text(&server, &alice, &room, "hello").await;
    let seen = sync_until(&server, &alice, &next_batch(&alices), None, |r| {
        section(r, &room, "timeline").iter().any(|e| e["event_id"] == id.as_str())
    })
    .await;
    assert!(presence_of(last(&seen), &bob).is_empty(), "{:#}", last(&seen));
}

#[tokio::test]
async fn presence_idle_turns_unavailable_and_activity_brings_back_online() {
    let server = TestServer::start_with(&[
        ("MYELIN_PRESENCE__IDLE_AFTER_SECS", "1"),
        ("MYELIN_PRESENCE__OFFLINE_AFTER_SECS", "3600"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;

    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "here" })).await;
    let seen = sync_until(&server, &bob, &since, None, |r| {
        presence_of(r, &alice).iter().any(|c| c["presence"] == "unavailable")
    })
    .await;
    let content = presence_of(last(&seen), &alice).pop().unwrap();
    assert_eq!(content["status_msg"], "here", "idling keeps the status: {content}");
    assert_eq!(content["currently_active"], false);
    assert!(content["last_active_ago"].is_u64());
    assert_eq!(presence(&server, &bob, &alice).await["presence"], "unavailable");

    // Sending is activity: online again, then idle again.
    send_text(&server, &alice, &room, "back").await;
    let seen = sync_until(&server, &bob, &next_batch(&seen), None, |r| {
        presence_of(r, &alice).iter().any(|c| c["presence"] == "online")
    })
    .await;
    assert_eq!(presence_of(last(&seen), &alice).pop().unwrap()["currently_active"], true);
    sync_until(&server, &bob, &next_batch(&seen), None, |r| {
        presence_of(r, &alice).iter().any(|c| c["presence"] == "unavailable")
    })
    .await;
}

#[tokio::test]
async fn presence_silence_turns_offline_but_a_parked_sync_keeps_a_user_online() {
    let server = TestServer::start_with(&[
        ("MYELIN_PRESENCE__IDLE_AFTER_SECS", "3600"),
        ("MYELIN_PRESENCE__OFFLINE_AFTER_SECS", "1"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    public_room(&server, &alice, &[&bob]).await;
    let bob_since = sync_token(&server, &bob).await;

    // Alice long-polls for a while, a few times the silence limit. Were she marked offline, her
    // own sync would wake to say so.
    let mut since = sync_token(&server, &alice).await;
    for _ in 0..3 {
        let reply = sync(&server, &alice, &[("since", &since), ("timeout", "1500")]).await;
        for content in presence_of(&reply, &alice) {
            assert_eq!(content["presence"], "online", "a syncing user went offline: {reply}");
        }
        since = reply["next_batch"].as_str().unwrap().to_owned();
    }

    // She stops syncing: bob's long-poll hears that she went offline.
    let seen = sync_until(&server, &bob, &bob_since, None, |r| {
        presence_of(r, &alice).iter().any(|c| c["presence"] == "offline")
    })
    .await;
    let content = presence_of(last(&seen), &alice).pop().unwrap();
    assert_eq!(content["currently_active"], false, "{content}");
    assert_eq!(presence(&server, &bob, &alice).await["presence"], "offline");
    // Syncing again brings her back.
    let reply = sync(&server, &alice, &[]).await;
    assert_eq!(presence_of(&reply, &alice).pop().unwrap()["presence"], "online", "{reply}");
}

#[tokio::test]
async fn presence_disabled_shows_everyone_offline_and_nothing_in_sync() {
    let server = TestServer::start_with(&[("MYELIN_PRESENCE__ENABLED", "false")]).await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let initial = sync(&server, &bob, &[]).await;
    assert_eq!(initial["presence"]["events"], json!([]), "{initial}");
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "hello?" })).await;
    assert_eq!(presence(&server, &alice, &alice).await, json!({ "presence": "offline" }));
    assert_eq!(presence(&server, &bob, &alice).await, json!({ "presence": "offline" }));
    send_text(&server, &alice, &room, "anyone?").await;
    let seen = sync_until(&server, &bob, &since, None, |r| !section(r, &room, "timeline").is_empty()).await;
    for reply in &seen {
        assert_eq!(reply["presence"]["events"], json!([]), "{reply}");
    }
    let reply = server.put(&presence_path(&bob), alice.tok(), json!({ "presence": "online" })).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Room account data and tags

#[tokio::test]
async fn room_account_data_appears_in_that_rooms_sync_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    let since = sync_token(&server, &alice).await;
    let path = room_data_path(&alice, &room, "org.example.pref");

    assert_error(&server.get(&path, alice.tok()).await, 404, "M_NOT_FOUND");
    let (status, reply) = server.put(&path, alice.tok(), json!({ "colour": "green" })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "colour": "green" }));
    assert_error(
        &server.get(&room_data_path(&alice, &other, "org.example.pref"), alice.tok()).await,
        404,
        "M_NOT_FOUND",
    );
    let global = format!("{V3}/user/{}/account_data/org.example.pref", alice.user_id);
    assert_error(&server.get(&global, alice.tok()).await, 404, "M_NOT_FOUND");

    let seen =
        sync_until(&server, &alice, &since, None, |r| room_account_data(r, &room, "org.example.pref").is_some()).await;
    let reply = last(&seen);
    assert_eq!(room_account_data(reply, &room, "org.example.pref").unwrap(), json!({ "colour": "green" }));
    assert!(room_account_data(reply, &other, "org.example.pref").is_none(), "{reply}");
    assert!(!reply["account_data"].to_string().contains("org.example.pref"), "not global: {reply}");

    // Once: the next change in the room comes without it.
    send_text(&server, &alice, &room, "something else").await;
    let seen =
        sync_until(&server, &alice, &next_batch(&seen), None, |r| !section(r, &room, "timeline").is_empty()).await;
    for reply in &seen {
        assert!(room_account_data(reply, &room, "org.example.pref").is_none(), "sent again: {reply}");
    }
    // A change comes again, with the new content; a first sync has it.
    let (status, _) = server.put(&path, alice.tok(), json!({ "colour": "blue" })).await;
    assert_eq!(status, 200);
    let seen = sync_until(&server, &alice, &next_batch(&seen), None, |r| {
        room_account_data(r, &room, "org.example.pref").is_some()
    })
    .await;
    assert_eq!(room_account_data(last(&seen), &room, "org.example.pref").unwrap(), json!({ "colour": "blue" }));
    let initial = sync(&server, &alice, &[]).await;
    assert_eq!(room_account_data(&initial, &room, "org.example.pref").unwrap(), json!({ "colour": "blue" }));
}

#[tokio::test]
async fn room_account_data_refusals_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_data_path(&alice, &room, "org.example.pref");
    let (status, _) = server.put(&path, alice.tok(), json!({ "colour": "green" })).await;
    assert_eq!(status, 200);

    assert_error(&server.get(&path, bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&path, bob.tok(), json!({ "colour": "red" })).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&path, alice.tok(), json!(["not", "an", "object"])).await, 400, "M_BAD_JSON");
    let bad_room = format!("{V3}/user/{}/rooms/not-a-room/account_data/org.example.pref", alice.user_id);
    assert_error(&server.put(&bad_room, alice.tok(), json!({})).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&bad_room, alice.tok()).await, 400, "M_INVALID_PARAM");
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "colour": "green" }));
}

#[tokio::test]
async fn tags_round_trip_and_appear_as_m_tag_room_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync_token(&server, &alice).await;
    let tags = tags_path(&alice, &room);

    assert_eq!(server.get(&tags, alice.tok()).await.1, json!({ "tags": {} }));
    let (status, reply) = server.put(&format!("{tags}/u.work"), alice.tok(), json!({ "order": 0.25 })).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = server.put(&format!("{tags}/m.favourite"), alice.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let both = json!({ "tags": { "u.work": { "order": 0.25 }, "m.favourite": {} } });
    assert_eq!(server.get(&tags, alice.tok()).await.1, both);
    assert_eq!(server.get(&room_data_path(&alice, &room, "m.tag"), alice.tok()).await.1, both);

    let seen =
        sync_until(&server, &alice, &since, None, |r| room_account_data(r, &room, "m.tag") == Some(both.clone())).await;
    assert!(!last(&seen)["account_data"].to_string().contains("m.tag"), "room data, not global");

    // Changing the order replaces the tag's content.
    let (status, _) = server.put(&format!("{tags}/u.work"), alice.tok(), json!({ "order": 0.5 })).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(&tags, alice.tok()).await.1["tags"]["u.work"], json!({ "order": 0.5 }));

    let (status, _) = server.request(reqwest::Method::DELETE, &format!("{tags}/u.work"), alice.tok(), None).await;
    assert_eq!(status, 200);
    let favourite = json!({ "tags": { "m.favourite": {} } });
    assert_eq!(server.get(&tags, alice.tok()).await.1, favourite);
    let seen = sync_until(&server, &alice, &next_batch(&seen), None, |r| {
        room_account_data(r, &room, "m.tag") == Some(favourite.clone())
    })
    .await;
    drop(seen);
    // Deleting a tag that is not there is fine and changes nothing.
    let (status, _) = server.request(reqwest::Method::DELETE, &format!("{tags}/u.absent"), alice.tok(), None).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(&tags, alice.tok()).await.1, favourite);
    let initial = sync(&server, &alice, &[]).await;
    assert_eq!(room_account_data(&initial, &room, "m.tag"), Some(favourite));
}

#[tokio::test]
async fn tags_of_someone_else_or_with_invalid_bodies_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let tags = tags_path(&alice, &room);
    let (status, _) = server.put(&format!("{tags}/u.work"), alice.tok(), json!({ "order": 0.5 })).await;
    assert_eq!(status, 200);
    let kept = json!({ "tags": { "u.work": { "order": 0.5 } } });

    assert_error(&server.get(&tags, bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&format!("{tags}/u.bob"), bob.tok(), json!({})).await, 403, "M_FORBIDDEN");
    let delete = server.request(reqwest::Method::DELETE, &format!("{tags}/u.work"), bob.tok(), None).await;
    assert_error(&delete, 403, "M_FORBIDDEN");

    for body in [json!({ "order": "first" }), json!({ "order": [1] }), json!(["u.work"]), json!("order")] {
        let reply = server.put(&format!("{tags}/u.work"), alice.tok(), body.clone()).await;
        assert_error(&reply, 400, "M_BAD_JSON");
        let reply = server.put(&format!("{tags}/u.new"), alice.tok(), body.clone()).await;
        assert_error(&reply, 400, "M_BAD_JSON");
    }
    let long = format!("{tags}/u.{}", "x".repeat(300));
    assert_error(&server.put(&long, alice.tok(), json!({})).await, 400, "M_INVALID_PARAM");
    assert_eq!(server.get(&tags, alice.tok()).await.1, kept, "nothing changed");
    assert_eq!(
        server.get(&tags, alice.tok()).await.1,
        server.get(&room_data_path(&alice, &room, "m.tag"), alice.tok()).await.1
    );
}
