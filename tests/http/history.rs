//! Room history: `/messages` (both directions, tokens, limits, filters, lazy-loaded members,
//! visibility), `/context`, `/relations` (with recursion), `/threads`, and the bundled
//! aggregations of edits, threads and references wherever events are served.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{TestServer, User, assert_error};

pub(crate) const V3: &str = "/_matrix/client/v3";
pub(crate) const V1: &str = "/_matrix/client/v1";

// ---------------------------------------------------------------------------------------------
// Helpers (also used by `ephemeral.rs`)

/// Percent-encodes what may not appear raw in a path segment.
pub(crate) fn enc(id: &str) -> String {
    id.replace('%', "%25").replace('#', "%23").replace('/', "%2F").replace('?', "%3F").replace('+', "%2B")
}

pub(crate) fn room_path(room_id: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room_id))
}

/// A query string (`?a=b&c=d`), values percent-encoded.
pub(crate) fn query(params: &[(&str, &str)]) -> String {
    if params.is_empty() { String::new() } else { format!("?{}", serde_urlencoded::to_string(params).unwrap()) }
}

pub(crate) async fn create_room(server: &TestServer, user: &User, body: Value) -> String {
    let (status, reply) = server.post(&format!("{V3}/createRoom"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply["room_id"].as_str().unwrap().to_owned()
}

/// A public room with `members` joined after its creator.
pub(crate) async fn public_room(server: &TestServer, creator: &User, members: &[&User]) -> String {
    let room = create_room(server, creator, json!({ "preset": "public_chat" })).await;
    for member in members {
        join(server, member, &room).await;
    }
    room
}

pub(crate) async fn join(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "join"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

pub(crate) async fn leave(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "leave"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

pub(crate) async fn invite(server: &TestServer, user: &User, room_id: &str, invitee: &User) {
    let (status, reply) =
        server.post(&room_path(room_id, "invite"), user.tok(), json!({ "user_id": invitee.user_id })).await;
    assert_eq!(status, 200, "{reply}");
}

/// Sends an event with a fresh transaction ID; returns its ID.
pub(crate) async fn send(server: &TestServer, user: &User, room_id: &str, kind: &str, content: Value) -> String {
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = format!("history-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let (status, reply) = server.put(&room_path(room_id, &format!("send/{kind}/{txn}")), user.tok(), content).await;
    assert_eq!(status, 200, "{kind}: {reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

pub(crate) async fn send_text(server: &TestServer, user: &User, room_id: &str, body: &str) -> String {
    send(server, user, room_id, "m.room.message", json!({ "msgtype": "m.text", "body": body })).await
}

/// Sends an event relating to `target`.
async fn relate(
    server: &TestServer,
    user: &User,
    room_id: &str,
    kind: &str,
    rel_type: &str,
    target: &str,
    mut content: Value,
) -> String {
    let mut relates_to = json!({ "rel_type": rel_type, "event_id": target });
    if rel_type == "m.annotation" {
        relates_to["key"] = content.get("key").cloned().unwrap_or(json!("👍"));
    }
    content["m.relates_to"] = relates_to;
    send(server, user, room_id, kind, content).await
}

async fn react(server: &TestServer, user: &User, room_id: &str, target: &str, key: &str) -> String {
    relate(server, user, room_id, "m.reaction", "m.annotation", target, json!({ "key": key })).await
}

async fn reply_in_thread(server: &TestServer, user: &User, room_id: &str, root: &str, body: &str) -> String {
    relate(server, user, room_id, "m.room.message", "m.thread", root, json!({ "msgtype": "m.text", "body": body }))
        .await
}

async fn reference(server: &TestServer, user: &User, room_id: &str, target: &str, body: &str) -> String {
    relate(server, user, room_id, "m.room.message", "m.reference", target, json!({ "msgtype": "m.text", "body": body }))
        .await
}

async fn edit(server: &TestServer, user: &User, room_id: &str, target: &str, body: &str) -> String {
    let content = json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
    });
    relate(server, user, room_id, "m.room.message", "m.replace", target, content).await
}

pub(crate) async fn set_state(server: &TestServer, user: &User, room_id: &str, kind_and_key: &str, content: Value) {
    let (status, reply) = server.put(&room_path(room_id, &format!("state/{kind_and_key}")), user.tok(), content).await;
    assert_eq!(status, 200, "{kind_and_key}: {reply}");
}

/// `GET /messages` with query parameters, asserting success.
async fn messages(server: &TestServer, user: &User, room_id: &str, params: &[(&str, &str)]) -> Value {
    let reply = messages_reply(server, user, room_id, params).await;
    assert_eq!(reply.0, 200, "{params:?}: {}", reply.1);
    reply.1
}

async fn messages_reply(
    server: &TestServer,
    user: &User,
    room_id: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    server.get(&format!("{}{}", room_path(room_id, "messages"), query(params)), user.tok()).await
}

async fn context(server: &TestServer, user: &User, room_id: &str, event_id: &str, params: &[(&str, &str)]) -> Value {
    let reply = context_reply(server, user, room_id, event_id, params).await;
    assert_eq!(reply.0, 200, "{params:?}: {}", reply.1);
    reply.1
}

async fn context_reply(
    server: &TestServer,
    user: &User,
    room_id: &str,
    event_id: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    server
        .get(&format!("{}{}", room_path(room_id, &format!("context/{}", enc(event_id))), query(params)), user.tok())
        .await
}

fn relations_path(room_id: &str, event_id: &str, rest: &str, params: &[(&str, &str)]) -> String {
    format!("{V1}/rooms/{}/relations/{}{rest}{}", enc(room_id), enc(event_id), query(params))
}

/// `GET /relations/{eventId}{rest}`, asserting success.
async fn relations(
    server: &TestServer,
    user: &User,
    room_id: &str,
    event_id: &str,
    rest: &str,
    params: &[(&str, &str)],
) -> Value {
    let (status, reply) = server.get(&relations_path(room_id, event_id, rest, params), user.tok()).await;
    assert_eq!(status, 200, "{rest} {params:?}: {reply}");
    reply
}

async fn threads(server: &TestServer, user: &User, room_id: &str, params: &[(&str, &str)]) -> Value {
    let path = format!("{V1}/rooms/{}/threads{}", enc(room_id), query(params));
    let (status, reply) = server.get(&path, user.tok()).await;
    assert_eq!(status, 200, "{params:?}: {reply}");
    reply
}

/// `GET /sync` with query parameters, asserting success.
pub(crate) async fn sync(server: &TestServer, user: &User, params: &[(&str, &str)]) -> Value {
    let (status, reply) = server.get(&format!("{V3}/sync{}", query(params)), user.tok()).await;
    assert_eq!(status, 200, "{params:?}: {reply}");
    reply
}

/// Long-polls `/sync` from `since` until a response satisfies `done`, giving up after 30 s.
/// Returns every response seen (the last one satisfied `done`).
pub(crate) async fn sync_until(
    server: &TestServer,
    user: &User,
    since: &str,
    filter: Option<&str>,
    mut done: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since = since.to_owned();
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "sync did not show what was expected; saw {seen:#?}");
        let mut params = vec![("since", since.as_str()), ("timeout", "10000")];
        if let Some(filter) = filter {
            params.push(("filter", filter));
        }
        let reply = sync(server, user, &params).await;
        since = reply["next_batch"].as_str().unwrap().to_owned();
        let matched = done(&reply);
        seen.push(reply);
        if matched {
            return seen;
        }
    }
}

/// A user's `next_batch` after an initial sync.
pub(crate) async fn sync_token(server: &TestServer, user: &User) -> String {
    sync(server, user, &[]).await["next_batch"].as_str().unwrap().to_owned()
}

fn chunk(reply: &Value) -> &Vec<Value> {
    reply["chunk"].as_array().unwrap_or_else(|| panic!("no chunk: {reply}"))
}

/// The bodies of the message events in a list of events.
fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

fn token<'a>(reply: &'a Value, key: &str) -> &'a str {
    reply[key].as_str().unwrap_or_else(|| panic!("no {key}: {reply}"))
}

fn numbered(prefix: &str, range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Sends `m0`, `m1`, ... in order.
async fn send_numbered(server: &TestServer, user: &User, room_id: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(send_text(server, user, room_id, &format!("m{i}")).await);
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// /messages

#[tokio::test]
async fn messages_page_backward_and_forward_with_from_to_and_limit() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_numbered(&server, &alice, &room, 25).await;

    // No `from` going backward: from the latest event, 10 by default, newest first.
    let latest = messages(&server, &alice, &room, &[("dir", "b")]).await;
    assert_eq!(chunk(&latest).len(), 10, "{latest}");
    assert_eq!(bodies(chunk(&latest)), numbered("m", (15..25).rev()));
    let first_start = token(&latest, "start");

    // On from `end`, with a limit.
    let next = messages(&server, &alice, &room, &[("dir", "b"), ("from", token(&latest, "end")), ("limit", "5")]).await;
    assert_eq!(bodies(chunk(&next)), numbered("m", (10..15).rev()));
    assert_eq!(next["start"], latest["end"], "a page starts where it was asked to");

    // Forward from a backward page's `end`: the events after it, oldest first.
    let forward =
        messages(&server, &alice, &room, &[("dir", "f"), ("from", token(&next, "end")), ("limit", "3")]).await;
    assert_eq!(bodies(chunk(&forward)), ["m10", "m11", "m12"]);
    let forward_more =
        messages(&server, &alice, &room, &[("dir", "f"), ("from", token(&forward, "end")), ("limit", "3")]).await;
    assert_eq!(bodies(chunk(&forward_more)), ["m13", "m14", "m15"]);

    // `to` stops the page: backward from the latest down to the first page's end is exactly the
    // first page, and nothing lies beyond it.
    let bounded = messages(
        &server,
        &alice,
        &room,
        &[("dir", "b"), ("from", first_start), ("to", token(&latest, "end")), ("limit", "50")],
    )
    .await;
    assert_eq!(bodies(chunk(&bounded)), numbered("m", (15..25).rev()));
    // Backwards, `end` comes with every non-empty chunk (as Synapse); from it, nothing is left.
    let beyond = messages(
        &server,
        &alice,
        &room,
        &[("dir", "b"), ("from", token(&bounded, "end")), ("to", token(&latest, "end"))],
    )
    .await;
    assert!(chunk(&beyond).is_empty() && beyond.get("end").is_none(), "the range is exhausted: {beyond}");
    // Forward between two tokens.
    let between =
        messages(&server, &alice, &room, &[("dir", "f"), ("from", token(&next, "end")), ("to", token(&latest, "end"))])
            .await;
    assert_eq!(bodies(chunk(&between)), numbered("m", 10..15));
    assert!(between.get("end").is_none(), "{between}");
    // With a limit inside the range, there is more to come.
    let cut = messages(
        &server,
        &alice,
        &room,
        &[("dir", "f"), ("from", token(&next, "end")), ("to", token(&latest, "end")), ("limit", "2")],
    )
    .await;
    assert_eq!(bodies(chunk(&cut)), ["m10", "m11"]);
    assert!(cut.get("end").is_some(), "{cut}");

    // Forward without `from`: from the start of the room, where the creation comes first.
    let from_start = messages(&server, &alice, &room, &[("dir", "f"), ("limit", "1")]).await;
    assert_eq!(chunk(&from_start)[0]["type"], "m.room.create", "{from_start}");
}

async fn latest_three(server: &TestServer, user: &User, room_id: &str) -> Vec<Value> {
    chunk(&messages(server, user, room_id, &[("dir", "b"), ("limit", "3")]).await).clone()
}

/// The fields of each event in a page: what the client format shows of the PDU (no hashes,
/// signatures or DAG), and the `unsigned` extras that depend on the reader.
#[tokio::test]
async fn messages_events_carry_the_client_format_and_the_readers_extras() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let alice_phone = server.login("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "first" })).await;
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "second" })).await;
    let (status, reply) = server
        .put(
            &room_path(&room, "send/m.room.message/own-txn"),
            alice.tok(),
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let message_id = reply["event_id"].as_str().unwrap().to_owned();

    let by_alice = latest_three(&server, &alice, &room).await;
    let (message, topic) = (&by_alice[0], &by_alice[1]);
    assert_eq!(message["event_id"], message_id.as_str());
    assert_eq!(message["type"], "m.room.message");
    assert_eq!(message["sender"], alice.user_id.as_str());
    assert_eq!(message["room_id"], room.as_str());
    assert_eq!(message["content"], json!({ "msgtype": "m.text", "body": "hi" }));
    assert!(message["origin_server_ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000), "{message}");
    for hidden in ["hashes", "signatures", "prev_events", "auth_events", "depth", "state_key"] {
        assert!(message.get(hidden).is_none(), "{hidden} in {message}");
    }
    let unsigned = &message["unsigned"];
    assert!(unsigned["age"].as_u64().is_some(), "{message}");
    assert_eq!(unsigned["membership"], "join", "MSC4115: the reader's membership at the event");
    assert_eq!(unsigned["transaction_id"], "own-txn", "the sending device sees its transaction ID");
    // The replaced topic's content, and the state key of a state event.
    assert_eq!(topic["state_key"], "");
    assert_eq!(topic["content"], json!({ "topic": "second" }));
    assert_eq!(topic["unsigned"]["prev_content"], json!({ "topic": "first" }), "{topic}");
    assert!(topic["unsigned"]["replaces_state"].is_string(), "{topic}");

    // Another device of the sender, and another user, do not see the transaction ID.
    for (reader, membership) in [(&alice_phone, "join"), (&bob, "join")] {
        let events = latest_three(&server, reader, &room).await;
        assert_eq!(events[0]["event_id"], message_id.as_str());
        assert!(events[0]["unsigned"].get("transaction_id").is_none(), "{}", events[0]);
        assert_eq!(events[0]["unsigned"]["membership"], membership);
        assert_eq!(events[1]["unsigned"]["prev_content"], json!({ "topic": "first" }));
    }
}

#[tokio::test]
async fn messages_page_through_more_than_a_thousand_events_to_the_creation() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    const COUNT: usize = 1010;
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let (server, alice, room) = (&server, &alice, &room);
            async move { send_text(server, alice, room, &format!("m{i}")).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    // The limit is capped at 1000.
    let capped = messages(&server, &alice, &room, &[("dir", "b"), ("limit", "5000")]).await;
    assert_eq!(chunk(&capped).len(), 1000);
    assert!(capped.get("end").is_some());

    // Backward to the creation, 300 at a time: every event once, and no `end` at the start.
    let mut backward = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("dir", "b"), ("limit", "300")];
        if let Some(from) = &from {
            params.push(("from", from.as_str()));
        }
        let page = messages(&server, &alice, &room, &params).await;
        backward.extend(chunk(&page).iter().cloned());
        pages += 1;
        assert!(pages < 20, "paging does not end");
        match page.get("end") {
            Some(end) => from = Some(end.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(backward.last().unwrap()["type"], "m.room.create", "paging back ends at the room's creation");
    let sent: BTreeSet<String> = numbered("m", 0..COUNT).into_iter().collect();
    let got = bodies(&backward);
    assert_eq!(got.len(), COUNT, "each message exactly once");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), sent);
    let all_ids = ids(&backward);
    assert_eq!(all_ids.iter().collect::<BTreeSet<_>>().len(), all_ids.len(), "no event twice");

    // Forward from the start, 1000 at a time: the same events in the opposite order.
    let mut forward = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut params = vec![("dir", "f"), ("limit", "1000")];
        if let Some(from) = &from {
            params.push(("from", from.as_str()));
        }
        let page = messages(&server, &alice, &room, &params).await;
        forward.extend(chunk(&page).iter().cloned());
        match page.get("end") {
            Some(end) => from = Some(end.as_str().unwrap().to_owned()),
            None => break,
        }
        assert!(forward.len() <= backward.len(), "paging forward does not end");
    }
    let mut reversed = all_ids.clone();
    reversed.reverse();
    assert_eq!(ids(&forward), reversed);
}

#[tokio::test]
async fn messages_forward_from_a_sync_prev_batch_and_backward_beyond_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_numbered(&server, &alice, &room, 15).await;

    let filter = json!({ "room": { "timeline": { "limit": 5 } } }).to_string();
    let synced = sync(&server, &alice, &[("filter", &filter)]).await;
    let timeline = &synced["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true, "{timeline}");
    assert_eq!(bodies(timeline["events"].as_array().unwrap()), numbered("m", 10..15));
    let prev_batch = timeline["prev_batch"].as_str().unwrap();

    // Forward from prev_batch: the timeline's events, then nothing more.
    let forward = messages(&server, &alice, &room, &[("dir", "f"), ("from", prev_batch), ("limit", "50")]).await;
    assert_eq!(ids(chunk(&forward)), ids(timeline["events"].as_array().unwrap()));
    assert!(forward.get("end").is_none(), "the latest event was reached: {forward}");
    // Backward from prev_batch: what came before the timeline.
    let backward = messages(&server, &alice, &room, &[("dir", "b"), ("from", prev_batch), ("limit", "10")]).await;
    assert_eq!(bodies(chunk(&backward)), numbered("m", (0..10).rev()));

    // Forward from a next_batch: only what was sent since.
    let next_batch = token(&synced, "next_batch").to_owned();
    send_text(&server, &alice, &room, "later").await;
    let later = messages(&server, &alice, &room, &[("dir", "f"), ("from", &next_batch)]).await;
    assert_eq!(bodies(chunk(&later)), ["later"]);
}

#[tokio::test]
async fn messages_filter_by_types_not_types_and_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    send_text(&server, &alice, &room, "a1").await;
    send(&server, &alice, &room, "org.example.ping", json!({ "n": 1 })).await;
    send_text(&server, &bob, &room, "b1").await;
    send(&server, &bob, &room, "org.example.pong", json!({ "n": 2 })).await;
    send_text(&server, &alice, &room, "a2").await;

    let page = |filter: Value| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let filter = filter.to_string();
            let reply = messages(server, alice, room, &[("dir", "b"), ("limit", "50"), ("filter", &filter)]).await;
            chunk(&reply).clone()
        }
    };
    let types = |events: &[Value]| events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

    let only_messages = page(json!({ "types": ["m.room.message"] })).await;
    assert_eq!(bodies(&only_messages), ["a2", "b1", "a1"]);
    assert_eq!(only_messages.len(), 3);

    let custom = page(json!({ "types": ["org.example.*"] })).await;
    assert_eq!(types(&custom), ["org.example.pong", "org.example.ping"]);

    let not_messages = page(json!({ "not_types": ["m.room.message", "m.room.*"] })).await;
    assert_eq!(types(&not_messages), ["org.example.pong", "org.example.ping"]);

    let bobs = page(json!({ "senders": [bob.user_id] })).await;
    assert!(bobs.iter().all(|e| e["sender"] == bob.user_id.as_str()), "{bobs:?}");
    assert_eq!(types(&bobs), ["org.example.pong", "m.room.message", "m.room.member"]);

    let not_alice = page(json!({ "not_senders": [alice.user_id], "types": ["m.room.message"] })).await;
    assert_eq!(bodies(&not_alice), ["b1"]);

    // A filter that is not JSON, or of the wrong shape, is refused.
    for bad in ["{not json", r#"{"types": "m.room.message"}"#, r#"{"senders": ["not a user"]}"#] {
        let reply = messages_reply(&server, &alice, &room, &[("dir", "b"), ("filter", bad)]).await;
        assert_eq!(reply.0, 400, "{bad}: {}", reply.1);
    }
}

#[tokio::test]
async fn messages_lazy_load_members_returns_exactly_the_senders_member_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let room = public_room(&server, &alice, &[&bob, &carol, &dave]).await;
    send_text(&server, &carol, &room, "carol, earlier").await;
    send_text(&server, &alice, &room, "alice 1").await;
    send_text(&server, &bob, &room, "bob 1").await;
    send_text(&server, &alice, &room, "alice 2").await;

    let filter = json!({ "lazy_load_members": true }).to_string();
    let page = messages(&server, &dave, &room, &[("dir", "b"), ("limit", "3"), ("filter", &filter)]).await;
    assert_eq!(bodies(chunk(&page)), ["alice 2", "bob 1", "alice 1"]);
    let state = page["state"].as_array().unwrap_or_else(|| panic!("no state: {page}"));
    assert!(state.iter().all(|e| e["type"] == "m.room.member"), "{state:?}");
    let members: BTreeSet<&str> = state.iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(members, BTreeSet::from([alice.user_id.as_str(), bob.user_id.as_str()]), "only the senders");
    assert!(state.iter().all(|e| e["content"]["membership"] == "join"));

    // Without lazy-loading, no member events come along.
    let plain = messages(&server, &dave, &room, &[("dir", "b"), ("limit", "3")]).await;
    assert!(plain.get("state").is_none_or(|s| s.as_array().unwrap().is_empty()), "{plain}");
}

#[tokio::test]
async fn messages_refuses_bad_tokens_parameters_and_non_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    send_text(&server, &alice, &room, "hello").await;

    for params in [
        vec![("dir", "b"), ("from", "garbage")],
        vec![("dir", "f"), ("from", "s12_x")],
        vec![("dir", "b"), ("to", "nonsense")],
    ] {
        assert_error(&messages_reply(&server, &alice, &room, &params).await, 400, "M_INVALID_PARAM");
    }
    assert_error(&messages_reply(&server, &alice, &room, &[("dir", "x")]).await, 400, "M_INVALID_PARAM");
    let no_dir = messages_reply(&server, &alice, &room, &[]).await;
    assert_eq!(no_dir.0, 400, "{}", no_dir.1);
    let bad_limit = messages_reply(&server, &alice, &room, &[("dir", "b"), ("limit", "many")]).await;
    assert_eq!(bad_limit.0, 400, "{}", bad_limit.1);

    // Someone who never joined may not read a (not world-readable) room, nor an unknown one.
    assert_error(&messages_reply(&server, &stranger, &room, &[("dir", "b")]).await, 403, "M_FORBIDDEN");
    assert_error(&messages_reply(&server, &stranger, "!unknown:test.local", &[("dir", "b")]).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&format!("{}?dir=b", room_path(&room, "messages")), None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn messages_of_a_member_who_left_stop_at_their_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    send_text(&server, &alice, &room, "while bob is here").await;
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after bob left").await;

    let page = messages(&server, &bob, &room, &[("dir", "b"), ("limit", "50")]).await;
    let events = chunk(&page);
    assert_eq!(events[0]["type"], "m.room.member", "the newest is bob's leave: {page}");
    assert_eq!(events[0]["state_key"], bob.user_id.as_str());
    assert_eq!(events[0]["content"]["membership"], "leave");
    assert_eq!(bodies(events), ["while bob is here"]);

    // Forward, too, ends at the leave, even from a token past it.
    let forward = messages(&server, &bob, &room, &[("dir", "f"), ("limit", "50")]).await;
    assert_eq!(chunk(&forward).last().unwrap()["content"]["membership"], "leave");
    let alice_now = sync_token(&server, &alice).await;
    let past = messages(&server, &bob, &room, &[("dir", "b"), ("from", &alice_now), ("limit", "1")]).await;
    assert_eq!(chunk(&past)[0]["content"]["membership"], "leave", "{past}");

    // Alice, still in the room, sees everything.
    let alice_page = messages(&server, &alice, &room, &[("dir", "b"), ("limit", "1")]).await;
    assert_eq!(bodies(chunk(&alice_page)), ["after bob left"]);
}

#[tokio::test]
async fn messages_respect_history_visibility_for_a_user_who_joins_later() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for visibility in ["joined", "invited", "shared"] {
        let bob = server.register(&format!("bob-{visibility}"), "pw").await;
        let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
        set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": visibility }))
            .await;
        send_text(&server, &alice, &room, "before the invite").await;
        invite(&server, &alice, &room, &bob).await;
        send_text(&server, &alice, &room, "between invite and join").await;
        join(&server, &bob, &room).await;
        send_text(&server, &alice, &room, "after the join").await;

        let page = messages(&server, &bob, &room, &[("dir", "b"), ("limit", "100")]).await;
        let expected: &[&str] = match visibility {
            "joined" => &["after the join"],
            "invited" => &["after the join", "between invite and join"],
            _ => &["after the join", "between invite and join", "before the invite"],
        };
        assert_eq!(bodies(chunk(&page)), expected, "{visibility}");
        let beyond = messages(&server, &bob, &room, &[("dir", "b"), ("from", token(&page, "end"))]).await;
        assert!(chunk(&beyond).is_empty() && beyond.get("end").is_none(), "{visibility}: {beyond}");
        // Forward from the start of the room shows the same.
        let forward = messages(&server, &bob, &room, &[("dir", "f"), ("limit", "100")]).await;
        let mut reversed = expected.to_vec();
        reversed.reverse();
        assert_eq!(bodies(chunk(&forward)), reversed, "{visibility}");
    }

    // A world-readable room can be read without joining it.
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": "world_readable" }))
        .await;
    send_text(&server, &alice, &room, "for everyone").await;
    let page = messages(&server, &carol, &room, &[("dir", "b"), ("limit", "1")]).await;
    assert_eq!(bodies(chunk(&page)), ["for everyone"]);
}

// ---------------------------------------------------------------------------------------------
// /context

#[tokio::test]
async fn context_splits_the_limit_and_its_tokens_page_on() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let sent = send_numbered(&server, &alice, &room, 20).await;
    let middle = &sent[10];

    let reply = context(&server, &alice, &room, middle, &[("limit", "4")]).await;
    assert_eq!(reply["event"]["event_id"], middle.as_str());
    assert_eq!(reply["event"]["content"]["body"], "m10");
    assert_eq!(bodies(reply["events_before"].as_array().unwrap()), ["m9", "m8"], "newest first");
    assert_eq!(bodies(reply["events_after"].as_array().unwrap()), ["m11", "m12"]);

    // The limit is for both lists together, whatever its parity; 0 still gives the event.
    for (limit, total) in [("1", 1), ("3", 3), ("7", 7), ("0", 0)] {
        let reply = context(&server, &alice, &room, middle, &[("limit", limit)]).await;
        let count = reply["events_before"].as_array().unwrap().len() + reply["events_after"].as_array().unwrap().len();
        assert_eq!(count, total, "limit {limit}: {reply}");
        assert_eq!(reply["event"]["event_id"], middle.as_str());
    }
    let default = context(&server, &alice, &room, middle, &[]).await;
    let count = default["events_before"].as_array().unwrap().len() + default["events_after"].as_array().unwrap().len();
    assert_eq!(count, 10, "the default limit is 10");

    // `start` pages backward from before events_before, `end` forward from after events_after.
    let earlier =
        messages(&server, &alice, &room, &[("dir", "b"), ("from", token(&reply, "start")), ("limit", "3")]).await;
    assert_eq!(bodies(chunk(&earlier)), ["m7", "m6", "m5"]);
    let later = messages(&server, &alice, &room, &[("dir", "f"), ("from", token(&reply, "end")), ("limit", "3")]).await;
    assert_eq!(bodies(chunk(&later)), ["m13", "m14", "m15"]);

    // The state: the room's state events, the members among them.
    let state = reply["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{state:?}");
    let members: BTreeSet<&str> =
        state.iter().filter(|e| e["type"] == "m.room.member").map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(members, BTreeSet::from([alice.user_id.as_str(), bob.user_id.as_str()]));
}

#[tokio::test]
async fn context_filter_applies_to_the_surroundings_and_state_not_the_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = public_room(&server, &alice, &[&bob, &carol]).await;
    send_text(&server, &bob, &room, "b1").await;
    send(&server, &alice, &room, "org.example.ping", json!({})).await;
    let middle = send_text(&server, &alice, &room, "a1").await;
    send(&server, &alice, &room, "org.example.ping", json!({})).await;
    send_text(&server, &bob, &room, "b2").await;

    let filter = json!({ "types": ["m.room.message"], "lazy_load_members": true }).to_string();
    let reply = context(&server, &carol, &room, &middle, &[("limit", "10"), ("filter", &filter)]).await;
    assert_eq!(reply["event"]["content"]["body"], "a1");
    assert_eq!(bodies(reply["events_before"].as_array().unwrap()), ["b1"]);
    assert_eq!(reply["events_before"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(bodies(reply["events_after"].as_array().unwrap()), ["b2"]);
    assert_eq!(reply["events_after"].as_array().unwrap().len(), 1, "{reply}");
    // Lazy-loading: the senders' member events only (carol did not send anything).
    let members: BTreeSet<&str> =
        reply["state"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(members, BTreeSet::from([alice.user_id.as_str(), bob.user_id.as_str()]), "{reply}");

    // The filter does not hide the event itself.
    let hide = json!({ "not_types": ["m.room.message"] }).to_string();
    let reply = context(&server, &carol, &room, &middle, &[("filter", &hide)]).await;
    assert_eq!(reply["event"]["event_id"], middle.as_str());
    let around: Vec<&Value> =
        reply["events_before"].as_array().unwrap().iter().chain(reply["events_after"].as_array().unwrap()).collect();
    assert!(around.iter().all(|e| e["type"] != "m.room.message"), "{reply}");
    assert!(around.iter().any(|e| e["type"] == "org.example.ping"), "{reply}");
}

#[tokio::test]
async fn context_of_unknown_or_invisible_events_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": "joined" })).await;
    let hidden = send_text(&server, &alice, &room, "before bob").await;
    join(&server, &bob, &room).await;
    let seen = send_text(&server, &alice, &room, "after bob").await;
    let other_room = create_room(&server, &alice, json!({})).await;
    let elsewhere = send_text(&server, &alice, &other_room, "elsewhere").await;

    let unknown = "$doesnotexist0000000000000000000000000000000";
    assert_error(&context_reply(&server, &alice, &room, unknown, &[]).await, 404, "M_NOT_FOUND");
    // An event of another room is not found in this one.
    assert_error(&context_reply(&server, &alice, &room, &elsewhere, &[]).await, 404, "M_NOT_FOUND");
    // History from before bob joined (visibility `joined`) is as good as absent for him.
    assert_error(&context_reply(&server, &bob, &room, &hidden, &[]).await, 404, "M_NOT_FOUND");
    // The spec leaves the code for those who may not read the room open; Myelin does not reveal
    // whether the event exists.
    assert_error(&context_reply(&server, &stranger, &room, &seen, &[]).await, 404, "M_NOT_FOUND");

    // What bob may see comes without what he may not.
    let reply = context(&server, &bob, &room, &seen, &[("limit", "20")]).await;
    let before = reply["events_before"].as_array().unwrap();
    assert!(!ids(before).contains(&hidden), "{reply}");
    assert_eq!(before[0]["state_key"], bob.user_id.as_str(), "bob's join comes just before: {reply}");
}

// ---------------------------------------------------------------------------------------------
// /relations

#[tokio::test]
async fn relations_by_type_and_event_type_with_pagination_and_direction() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let other = send_text(&server, &alice, &room, "unrelated").await;
    let r1 = react(&server, &alice, &room, &root, "👍").await;
    let ref1 = reference(&server, &bob, &room, &root, "see root").await;
    let r2 = react(&server, &bob, &room, &root, "🎉").await;
    let t1 = reply_in_thread(&server, &bob, &room, &root, "in thread").await;
    react(&server, &bob, &room, &other, "👀").await;
    let r3 = react(&server, &bob, &room, &root, "👍").await;
    let e1 = edit(&server, &alice, &room, &root, "root, edited").await;
    let all_newest_first = [&e1, &r3, &t1, &r2, &ref1, &r1].map(|s| s.to_owned()).to_vec();

    let reply = relations(&server, &bob, &room, &root, "", &[]).await;
    assert_eq!(ids(chunk(&reply)), all_newest_first);
    assert!(reply.get("next_batch").is_none(), "{reply}");
    assert!(reply.get("recursion_depth").is_none(), "only with recurse: {reply}");

    let annotations = relations(&server, &bob, &room, &root, "/m.annotation", &[]).await;
    assert_eq!(ids(chunk(&annotations)), [&r3, &r2, &r1].map(|s| s.to_owned()));
    let reactions = relations(&server, &bob, &room, &root, "/m.annotation/m.reaction", &[]).await;
    assert_eq!(ids(chunk(&reactions)), [&r3, &r2, &r1].map(|s| s.to_owned()));
    let none = relations(&server, &bob, &room, &root, "/m.annotation/m.room.message", &[]).await;
    assert_eq!(chunk(&none).len(), 0, "{none}");
    let references = relations(&server, &bob, &room, &root, "/m.reference/m.room.message", &[]).await;
    assert_eq!(ids(chunk(&references)), [ref1.as_str()]);
    let thread = relations(&server, &bob, &room, &root, "/m.thread", &[]).await;
    assert_eq!(ids(chunk(&thread)), [t1.as_str()]);
    let edits = relations(&server, &bob, &room, &root, "/m.replace", &[]).await;
    assert_eq!(ids(chunk(&edits)), [e1.as_str()]);

    // Pages of two, backward (the default) and forward; each follows `next_batch` to the end.
    for (dir, expected) in [("b", all_newest_first.clone()), ("f", all_newest_first.iter().rev().cloned().collect())] {
        let mut paged = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut params = vec![("dir", dir), ("limit", "2")];
            if let Some(from) = &from {
                params.push(("from", from.as_str()));
            }
            let page = relations(&server, &bob, &room, &root, "", &params).await;
            assert!(chunk(&page).len() <= 2, "{page}");
            paged.extend(ids(chunk(&page)));
            match page.get("next_batch") {
                Some(next) => from = Some(next.as_str().unwrap().to_owned()),
                None => break,
            }
            assert!(paged.len() <= expected.len(), "paging does not end: {paged:?}");
        }
        assert_eq!(paged, expected, "dir={dir}");
    }
    // Paging on with a relation-type filter.
    let first = relations(&server, &bob, &room, &root, "/m.annotation", &[("limit", "1")]).await;
    assert_eq!(ids(chunk(&first)), [r3.as_str()]);
    let second = relations(
        &server,
        &bob,
        &room,
        &root,
        "/m.annotation",
        &[("limit", "5"), ("from", token(&first, "next_batch"))],
    )
    .await;
    assert_eq!(ids(chunk(&second)), [r2.clone(), r1.clone()]);
    // `to` stops a page: from the start down to the first page's next_batch.
    let bounded = relations(&server, &bob, &room, &root, "", &[("to", token(&first, "next_batch"))]).await;
    assert_eq!(ids(chunk(&bounded)), [e1.clone(), r3.clone()]);

    let bad_dir = server.get(&relations_path(&room, &root, "", &[("dir", "sideways")]), bob.tok()).await;
    assert_error(&bad_dir, 400, "M_INVALID_PARAM");
    let bad_from = server.get(&relations_path(&room, &root, "", &[("from", "garbage")]), bob.tok()).await;
    assert_error(&bad_from, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn relations_of_unknown_or_invisible_events_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": "joined" })).await;
    let hidden = send_text(&server, &alice, &room, "before bob").await;
    react(&server, &alice, &room, &hidden, "👍").await;
    join(&server, &bob, &room).await;

    let unknown = "$doesnotexist0000000000000000000000000000000";
    assert_error(&server.get(&relations_path(&room, unknown, "", &[]), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&relations_path(&room, &hidden, "", &[]), bob.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&relations_path(&room, &hidden, "", &[]), stranger.tok()).await, 404, "M_NOT_FOUND");
    assert_eq!(chunk(&relations(&server, &alice, &room, &hidden, "", &[]).await).len(), 1);
}

#[tokio::test]
async fn relations_recurse_follows_relations_of_relations_through_matching_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    // A chain of references four deep, B <- C <- D <- E.
    let b = reference(&server, &alice, &room, &root, "B").await;
    let c = reference(&server, &alice, &room, &b, "C").await;
    let d = reference(&server, &alice, &room, &c, "D").await;
    let e = reference(&server, &alice, &room, &d, "E").await;
    // A thread reply with a reaction, an edit and a reference of its own.
    let t = reply_in_thread(&server, &alice, &room, &root, "T").await;
    let t_reaction = react(&server, &alice, &room, &t, "👍").await;
    let t_edit = edit(&server, &alice, &room, &t, "T, edited").await;
    let t_reference = reference(&server, &alice, &room, &t, "about T").await;
    // Reactions straight on the root, newer than the rest.
    let s1 = react(&server, &alice, &room, &root, "1").await;
    let s2 = react(&server, &alice, &room, &root, "2").await;
    let s3 = react(&server, &alice, &room, &root, "3").await;

    let set = |reply: &Value| ids(chunk(reply)).into_iter().collect::<BTreeSet<_>>();
    let of = |list: &[&String]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    let direct = relations(&server, &alice, &room, &root, "", &[]).await;
    assert_eq!(set(&direct), of(&[&b, &t, &s1, &s2, &s3]));
    assert!(direct.get("recursion_depth").is_none());
    let explicit_false = relations(&server, &alice, &room, &root, "", &[("recurse", "false")]).await;
    assert_eq!(set(&explicit_false), of(&[&b, &t, &s1, &s2, &s3]));

    let deep = relations(&server, &alice, &room, &root, "", &[("recurse", "true")]).await;
    let depth = deep["recursion_depth"].as_u64().unwrap_or_else(|| panic!("recursion_depth is mandatory: {deep}"));
    assert!(depth >= 3, "the spec asks for at least three levels: {deep}");
    let mut expected = of(&[&b, &c, &d, &t, &t_reaction, &t_edit, &t_reference, &s1, &s2, &s3]);
    if depth >= 4 {
        expected.insert(e.clone());
    }
    assert_eq!(set(&deep), expected, "recursion_depth {depth}");
    // Newest first, as without recursion.
    assert_eq!(ids(chunk(&deep))[..3], [s3.clone(), s2.clone(), s1.clone()]);

    // Type filters apply at every level: relations reached only through a non-matching event (the
    // reference on the thread reply, the reaction on it) are left out.
    let references = relations(&server, &alice, &room, &root, "/m.reference", &[("recurse", "true")]).await;
    let mut expected = of(&[&b, &c, &d]);
    if depth >= 4 {
        expected.insert(e.clone());
    }
    assert_eq!(set(&references), expected, "{references}");
    let reactions = relations(&server, &alice, &room, &root, "/m.annotation/m.reaction", &[("recurse", "true")]).await;
    assert_eq!(set(&reactions), of(&[&s1, &s2, &s3]), "{reactions}");
    assert!(reactions["recursion_depth"].is_u64());

    // Paging works the same when recursing.
    let page = relations(&server, &alice, &room, &root, "", &[("recurse", "true"), ("limit", "4")]).await;
    assert_eq!(chunk(&page).len(), 4);
    let rest = relations(
        &server,
        &alice,
        &room,
        &root,
        "",
        &[("recurse", "true"), ("limit", "50"), ("from", token(&page, "next_batch"))],
    )
    .await;
    let mut together = ids(chunk(&page));
    together.extend(ids(chunk(&rest)));
    assert_eq!(together, ids(chunk(&deep)));
}

// ---------------------------------------------------------------------------------------------
// /threads

#[tokio::test]
async fn threads_list_by_latest_activity_with_participation_and_pagination() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = public_room(&server, &alice, &[&bob]).await;

    let mine = send_text(&server, &alice, &room, "alice's thread").await;
    let untouched = send_text(&server, &bob, &room, "bob's thread").await;
    let joined = send_text(&server, &bob, &room, "bob's thread alice replied to").await;
    let quiet = send_text(&server, &bob, &room, "bob's other thread").await;
    send_text(&server, &bob, &room, "not a thread").await;
    reply_in_thread(&server, &bob, &room, &mine, "bob in alice's").await;
    reply_in_thread(&server, &bob, &room, &untouched, "bob in his").await;
    reply_in_thread(&server, &alice, &room, &joined, "alice in bob's").await;
    reply_in_thread(&server, &bob, &room, &quiet, "bob again").await;
    // A new reply moves alice's thread to the top.
    reply_in_thread(&server, &bob, &room, &mine, "bob in alice's, again").await;

    let all = threads(&server, &alice, &room, &[]).await;
    let order = [&mine, &quiet, &joined, &untouched].map(|s| s.to_owned()).to_vec();
    assert_eq!(ids(chunk(&all)), order);
    assert!(all.get("next_batch").is_none(), "{all}");
    let summary = &chunk(&all)[0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2, "{summary}");
    assert_eq!(summary["latest_event"]["content"]["body"], "bob in alice's, again");
    assert_eq!(ids(chunk(&threads(&server, &alice, &room, &[("include", "all")]).await)), order);

    let participated = threads(&server, &alice, &room, &[("include", "participated")]).await;
    assert_eq!(ids(chunk(&participated)), [mine.clone(), joined.clone()]);
    let bobs = threads(&server, &bob, &room, &[("include", "participated")]).await;
    assert_eq!(ids(chunk(&bobs)), order, "bob is in every thread");

    // One at a time, following next_batch.
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut params = vec![("limit", "1")];
        if let Some(from) = &from {
            params.push(("from", from.as_str()));
        }
        let page = threads(&server, &alice, &room, &params).await;
        assert!(chunk(&page).len() <= 1);
        paged.extend(ids(chunk(&page)));
        match page.get("next_batch") {
            Some(next) => from = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
        assert!(paged.len() <= order.len(), "paging does not end: {paged:?}");
    }
    assert_eq!(paged, order);
    // Paging the participated threads too.
    let first = threads(&server, &alice, &room, &[("include", "participated"), ("limit", "1")]).await;
    assert_eq!(ids(chunk(&first)), [mine.as_str()]);
    let second =
        threads(&server, &alice, &room, &[("include", "participated"), ("from", token(&first, "next_batch"))]).await;
    assert_eq!(ids(chunk(&second)), [joined.as_str()]);
    assert!(second.get("next_batch").is_none());

    let path = |params: &[(&str, &str)]| format!("{V1}/rooms/{}/threads{}", enc(&room), query(params));
    assert_error(&server.get(&path(&[("include", "some")]), alice.tok()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&path(&[("from", "garbage")]), alice.tok()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get(&path(&[]), stranger.tok()).await, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Bundled aggregations

/// The `unsigned.m.relations` of the event with this ID among `events`.
fn bundled<'a>(events: &'a [Value], event_id: &str) -> &'a Value {
    let event =
        events.iter().find(|e| e["event_id"] == event_id).unwrap_or_else(|| panic!("{event_id} not in {events:?}"));
    &event["unsigned"]["m.relations"]
}

#[tokio::test]
async fn bundled_aggregations_of_edits_threads_and_references_everywhere() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = public_room(&server, &alice, &[&bob, &carol]).await;
    let root = send_text(&server, &alice, &room, "original").await;
    let first_edit = edit(&server, &alice, &room, &root, "first edit").await;
    let latest_edit = edit(&server, &alice, &room, &root, "latest edit").await;
    // Invalid edits are ignored: by someone else, without `m.new_content`, of an edit.
    edit(&server, &bob, &room, &root, "bob's forgery").await;
    let no_new_content = json!({ "msgtype": "m.text", "body": "* no new content" });
    relate(&server, &alice, &room, "m.room.message", "m.replace", &root, no_new_content).await;
    edit(&server, &alice, &room, &first_edit, "an edit of an edit").await;
    reply_in_thread(&server, &bob, &room, &root, "reply 1").await;
    let last_reply = reply_in_thread(&server, &bob, &room, &root, "reply 2").await;
    let ref1 = reference(&server, &carol, &room, &root, "ref 1").await;
    let ref2 = reference(&server, &bob, &room, &root, "ref 2").await;
    let plain = send_text(&server, &alice, &room, "nothing relates to me").await;

    let check = |relations: &Value, viewer: &User, participated: bool, place: &str| {
        assert_eq!(
            relations["m.replace"]["event_id"],
            latest_edit.as_str(),
            "{place} for {}: {relations}",
            viewer.user_id
        );
        assert_eq!(relations["m.replace"]["content"]["m.new_content"]["body"], "latest edit", "{place}");
        assert_eq!(relations["m.replace"]["sender"], alice.user_id.as_str(), "{place}");
        let thread = &relations["m.thread"];
        assert_eq!(thread["count"], 2, "{place}: {relations}");
        assert_eq!(thread["latest_event"]["event_id"], last_reply.as_str(), "{place}");
        assert_eq!(thread["current_user_participated"], participated, "{place} for {}", viewer.user_id);
        assert_eq!(relations["m.reference"]["chunk"], json!([{ "event_id": ref1 }, { "event_id": ref2 }]), "{place}");
    };

    // Alice sent the root, bob replied: both participated. Carol only referenced it.
    for (viewer, participated) in [(&alice, true), (&bob, true), (&carol, false)] {
        let (status, event) = server.get(&room_path(&room, &format!("event/{}", enc(&root))), viewer.tok()).await;
        assert_eq!(status, 200, "{event}");
        check(&event["unsigned"]["m.relations"], viewer, participated, "/event");

        let page = messages(&server, viewer, &room, &[("dir", "b"), ("limit", "50")]).await;
        check(bundled(chunk(&page), &root), viewer, participated, "/messages");
        assert!(bundled(chunk(&page), &plain).is_null(), "no relations, no bundle");

        let around = context(&server, viewer, &room, &root, &[]).await;
        check(&around["event"]["unsigned"]["m.relations"], viewer, participated, "/context event");
        let around_plain = context(&server, viewer, &room, &plain, &[("limit", "50")]).await;
        check(
            bundled(around_plain["events_before"].as_array().unwrap(), &root),
            viewer,
            participated,
            "/context before",
        );

        let filter = json!({ "room": { "timeline": { "limit": 50 } } }).to_string();
        let synced = sync(&server, viewer, &[("filter", &filter)]).await;
        let timeline = synced["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
        check(bundled(timeline, &root), viewer, participated, "/sync");

        let listed = threads(&server, viewer, &room, &[]).await;
        check(bundled(chunk(&listed), &root), viewer, participated, "/threads");
    }

    // Redacting the latest edit brings back the one before; a redacted reference leaves the list.
    for target in [&latest_edit, &ref1] {
        let (status, reply) = server
            .put(&room_path(&room, &format!("redact/{}/undo-{}", enc(target), enc(target))), alice.tok(), json!({}))
            .await;
        assert_eq!(status, 200, "{reply}");
    }
    let (_, event) = server.get(&room_path(&room, &format!("event/{}", enc(&root))), carol.tok()).await;
    let relations = &event["unsigned"]["m.relations"];
    assert_eq!(relations["m.replace"]["event_id"], first_edit.as_str(), "{relations}");
    assert_eq!(relations["m.reference"]["chunk"], json!([{ "event_id": ref2 }]));
    let (_, event) = server.get(&room_path(&room, &format!("event/{}", enc(&first_edit))), carol.tok()).await;
    assert!(event["unsigned"]["m.relations"].get("m.replace").is_none(), "an edit is not edited: {event}");

    // A redacted event shows no edit, though its other relations stay.
    let (status, reply) =
        server.put(&room_path(&room, &format!("redact/{}/undo-root", enc(&root))), alice.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let (_, event) = server.get(&room_path(&room, &format!("event/{}", enc(&root))), carol.tok()).await;
    let relations = &event["unsigned"]["m.relations"];
    assert!(relations.get("m.replace").is_none(), "{event}");
    assert_eq!(relations["m.thread"]["count"], 2, "{event}");
}
