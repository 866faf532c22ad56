//! `/sync`: initial and incremental syncs, long-polling, limited timelines and filling their gap
//! with `/messages`, lazy-loaded members, tokens across restarts, and the sections (invites,
//! leaves, knocks, account data, presence, to-device). Filters are in `sync_filters.rs`; the
//! helpers here are shared with it and with `websocket.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{TestServer, User, assert_error};

pub const V3: &str = "/_matrix/client/v3";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Percent-encodes everything but unreserved characters (for path segments and query values).
pub fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn room_path(room_id: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room_id))
}

pub async fn create_room(server: &TestServer, user: &User, body: Value) -> String {
    let (status, reply) = server.post(&format!("{V3}/createRoom"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply["room_id"].as_str().unwrap().to_owned()
}

/// A public room created by `owner` and joined by each of `others`.
pub async fn shared_room(server: &TestServer, owner: &User, others: &[&User]) -> String {
    let room = create_room(server, owner, json!({ "preset": "public_chat" })).await;
    for user in others {
        join(server, user, &room).await;
    }
    room
}

pub async fn join(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "join"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

pub async fn leave(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "leave"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

pub async fn invite(server: &TestServer, user: &User, room_id: &str, target: &User) {
    let body = json!({ "user_id": target.user_id });
    let (status, reply) = server.post(&room_path(room_id, "invite"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
}

/// Sends a timeline event with a fresh transaction ID; returns its ID.
pub async fn send(server: &TestServer, user: &User, room_id: &str, kind: &str, content: Value) -> String {
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = format!("sync-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let (status, reply) = server.put(&room_path(room_id, &format!("send/{kind}/{txn}")), user.tok(), content).await;
    assert_eq!(status, 200, "{reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

pub async fn send_text(server: &TestServer, user: &User, room_id: &str, body: &str) -> String {
    send(server, user, room_id, "m.room.message", json!({ "msgtype": "m.text", "body": body })).await
}

pub async fn set_state(server: &TestServer, user: &User, room_id: &str, type_and_key: &str, content: Value) -> String {
    let (status, reply) = server.put(&room_path(room_id, &format!("state/{type_and_key}")), user.tok(), content).await;
    assert_eq!(status, 200, "{reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

pub fn sync_path(params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    format!("{V3}/sync?{}", query.join("&"))
}

pub async fn sync_raw(server: &TestServer, user: &User, params: &[(&str, &str)]) -> (StatusCode, Value) {
    server.get(&sync_path(params), user.tok()).await
}

/// `GET /sync` with these query parameters, asserting success.
pub async fn sync(server: &TestServer, user: &User, params: &[(&str, &str)]) -> Value {
    let (status, reply) = sync_raw(server, user, params).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["next_batch"].is_string(), "{reply}");
    reply
}

/// An initial sync; returns its `next_batch`.
pub async fn sync_token(server: &TestServer, user: &User) -> String {
    next_batch(&sync(server, user, &[]).await)
}

pub fn next_batch(reply: &Value) -> String {
    reply["next_batch"].as_str().unwrap().to_owned()
}

/// The room's section under `rooms.join` (Null when absent).
pub fn joined<'a>(reply: &'a Value, room_id: &str) -> &'a Value {
    &reply["rooms"]["join"][room_id]
}

pub fn event_ids(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

/// The event IDs of a joined room's timeline.
pub fn timeline_ids(reply: &Value, room_id: &str) -> Vec<String> {
    let events = &joined(reply, room_id)["timeline"]["events"];
    if events.is_null() { Vec::new() } else { event_ids(events) }
}

/// The users whose `m.room.member` events a list holds.
pub fn members(events: &Value) -> BTreeSet<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect()
}

pub fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `(type, state_key) -> event_id` of a list of state events, later ones winning.
fn state_map<'a>(lists: impl IntoIterator<Item = &'a Value>) -> BTreeMap<(String, String), String> {
    let mut map = BTreeMap::new();
    for list in lists {
        for event in list.as_array().unwrap() {
            if let Some(key) = event["state_key"].as_str() {
                let kind = event["type"].as_str().unwrap().to_owned();
                map.insert((kind, key.to_owned()), event["event_id"].as_str().unwrap().to_owned());
            }
        }
    }
    map
}

async fn current_state(server: &TestServer, user: &User, room_id: &str) -> BTreeMap<(String, String), String> {
    let (status, state) = server.get(&room_path(room_id, "state"), user.tok()).await;
    assert_eq!(status, 200, "{state}");
    state_map([&state])
}

fn presence_of<'a>(reply: &'a Value, user: &User) -> Vec<&'a Value> {
    reply["presence"]["events"].as_array().unwrap().iter().filter(|e| e["sender"] == user.user_id).collect()
}

// ---------------------------------------------------------------------------------------------
// Initial and incremental syncs

#[tokio::test]
async fn initial_sync_has_the_room_with_timeline_state_summary_and_unread_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    invite(&server, &alice, &room, &carol).await;
    let mention = json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [alice.user_id] } });
    let hello = send(&server, &bob, &room, "m.room.message", mention).await;
    let second = send_text(&server, &bob, &room, "second").await;

    let reply = sync(&server, &alice, &[]).await;
    let section = joined(&reply, &room);
    assert!(section.is_object(), "{reply}");
    let timeline = timeline_ids(&reply, &room);
    assert_eq!(timeline[timeline.len() - 2..], [hello, second], "{section}");
    assert!(section["timeline"]["prev_batch"].is_string());
    assert!(section["timeline"]["limited"].is_boolean());
    // The state at the timeline's start, then the timeline, make up the room's current state.
    let synced = state_map([&section["state"]["events"], &section["timeline"]["events"]]);
    assert_eq!(synced, current_state(&server, &alice, &room).await);
    for (kind, key) in [("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.power_levels", "")] {
        assert!(synced.contains_key(&(kind.to_owned(), key.to_owned())), "{kind}");
    }
    let summary = &section["summary"];
    assert_eq!(summary["m.heroes"], json!([bob.user_id, carol.user_id]), "{summary}");
    assert_eq!(summary["m.joined_member_count"], 2);
    assert_eq!(summary["m.invited_member_count"], 1);
    // Both of bob's messages count; the one naming alice highlights.
    assert_eq!(section["unread_notifications"], json!({ "notification_count": 2, "highlight_count": 1 }));

    // Each member sees the others as heroes.
    let reply = sync(&server, &bob, &[]).await;
    assert_eq!(joined(&reply, &room)["summary"]["m.heroes"], json!([alice.user_id, carol.user_id]));
    assert_eq!(joined(&reply, &room)["unread_notifications"]["notification_count"], 0, "own messages do not count");
}

#[tokio::test]
async fn incremental_sync_returns_only_what_is_new() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let other = shared_room(&server, &alice, &[]).await;
    send_text(&server, &bob, &room, "before").await;
    let first = sync_token(&server, &alice).await;

    let one = send_text(&server, &bob, &room, "one").await;
    let topic = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "news" })).await;
    let two = send_text(&server, &alice, &room, "two").await;
    let reply = sync(&server, &alice, &[("since", &first)]).await;
    assert_eq!(timeline_ids(&reply, &room), [one, topic, two]);
    let section = joined(&reply, &room);
    assert_eq!(section["timeline"]["limited"], false);
    assert_eq!(section["state"]["events"], json!([]), "state changes inside the timeline are not repeated");
    // Bob's two messages since alice joined (she sent no receipt); her own does not count.
    assert_eq!(section["unread_notifications"]["notification_count"], 2);
    assert!(joined(&reply, &other).is_null(), "a room where nothing happened is left out: {reply}");
    assert_ne!(next_batch(&reply), first);

    // Nothing since: no rooms at all.
    let again = sync(&server, &alice, &[("since", &next_batch(&reply))]).await;
    assert_eq!(again["rooms"]["join"], json!({}), "{again}");
}

#[tokio::test]
async fn full_state_with_since_returns_the_whole_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    set_state(&server, &alice, &room, "m.room.name", json!({ "name": "Garden" })).await;
    let since = sync_token(&server, &alice).await;

    let plain = sync(&server, &alice, &[("since", &since)]).await;
    assert!(joined(&plain, &room).is_null(), "{plain}");
    let full = sync(&server, &alice, &[("since", &since), ("full_state", "true")]).await;
    let section = joined(&full, &room);
    assert_eq!(section["timeline"]["events"], json!([]), "the timeline still starts at since: {section}");
    assert_eq!(state_map([&section["state"]["events"]]), current_state(&server, &alice, &room).await);
    assert_eq!(members(&section["state"]["events"]), set_of(&[&alice.user_id, &bob.user_id]));

    // With something new, the timeline has it and the state is still whole.
    let news = send_text(&server, &bob, &room, "news").await;
    let full = sync(&server, &alice, &[("since", &since), ("full_state", "true")]).await;
    let section = joined(&full, &room);
    assert_eq!(timeline_ids(&full, &room), [news]);
    assert_eq!(state_map([&section["state"]["events"]]), current_state(&server, &alice, &room).await);
}

// ---------------------------------------------------------------------------------------------
// Long-polling

#[tokio::test]
async fn a_parked_long_poll_returns_within_100ms_of_a_send() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let bob_since = sync_token(&server, &bob).await;
    // Alice takes no presence, so that only room events can answer her sync.
    let filter = json!({ "presence": { "types": [] } }).to_string();
    let alice_since = next_batch(&sync(&server, &alice, &[("filter", &filter)]).await);

    let poll = async {
        let params =
            [("since", &*alice_since), ("timeout", "30000"), ("filter", &filter), ("set_presence", "unavailable")];
        let reply = sync(&server, &alice, &params).await;
        (reply, Instant::now())
    };
    let send_when_parked = async {
        // Alice's poll turns her unavailable as it opens: once bob sees that, her poll is parked
        // (any change after its opening wakes it, so the send cannot be missed either way).
        let mut since = bob_since.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "alice's poll never showed up");
            let reply = sync(&server, &bob, &[("since", &since), ("timeout", "10000")]).await;
            since = next_batch(&reply);
            if presence_of(&reply, &alice).iter().any(|e| e["content"]["presence"] == "unavailable") {
                break;
            }
        }
        let event_id = send_text(&server, &bob, &room, "wake up").await;
        (event_id, Instant::now())
    };
    let ((reply, answered), (event_id, sent)) = tokio::join!(poll, send_when_parked);
    assert_eq!(timeline_ids(&reply, &room), [event_id], "{reply}");
    let latency = answered.saturating_duration_since(sent);
    assert!(latency < Duration::from_millis(100), "the parked sync answered {latency:?} after the send");
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_returns_empty_after_its_timeout() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync_token(&server, &alice).await;
    let started = Instant::now();
    let reply = sync(&server, &alice, &[("since", &since), ("timeout", "500")]).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "answered after {waited:?}, before its timeout");
    assert!(waited < Duration::from_secs(10), "answered after {waited:?}");
    assert_eq!(reply["rooms"]["join"], json!({}), "{reply}");
    assert!(joined(&reply, &room).is_null());
    assert_eq!(reply["to_device"]["events"], json!([]));
    // The token answered is still good, and an event after it comes next.
    let event = send_text(&server, &alice, &room, "later").await;
    let next = sync(&server, &alice, &[("since", &next_batch(&reply)), ("timeout", "30000")]).await;
    assert_eq!(timeline_ids(&next, &room), [event]);
}

#[tokio::test]
async fn no_wake_up_is_missed_while_sends_keep_coming() {
    const PER_SENDER: usize = 40;
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;
    // Only room timelines: presence and receipts cannot answer alice's polls.
    let filter = json!({
        "presence": { "types": [] },
        "account_data": { "types": [] },
        "room": { "timeline": { "limit": 1000 }, "ephemeral": { "types": [] }, "account_data": { "types": [] } },
    })
    .to_string();
    let mut since = next_batch(&sync(&server, &alice, &[("filter", &filter)]).await);

    let sender = |user: &'static str, who: User| {
        let (server, room) = (&server, &room);
        async move {
            let mut sent = Vec::new();
            for i in 0..PER_SENDER {
                sent.push(send_text(server, &who, room, &format!("{user} {i}")).await);
            }
            sent
        }
    };
    let receive = async {
        let mut received = Vec::new();
        while received.len() < 2 * PER_SENDER {
            // A missed wake-up would park this poll until its timeout and answer it empty.
            let reply = sync(&server, &alice, &[("since", &since), ("timeout", "30000"), ("filter", &filter)]).await;
            let section = joined(&reply, &room);
            assert!(section.is_object(), "a poll answered without the room: {reply}");
            assert_eq!(section["timeline"]["limited"], false);
            received.extend(timeline_ids(&reply, &room));
            since = next_batch(&reply);
        }
        received
    };
    let (from_bob, from_carol, received) = tokio::join!(sender("bob", bob), sender("carol", carol), receive);

    // Each event exactly once, in the room's order, which keeps each sender's order.
    assert_eq!(received.iter().collect::<BTreeSet<_>>().len(), received.len(), "duplicates: {received:?}");
    let sent: BTreeSet<&String> = from_bob.iter().chain(&from_carol).collect();
    assert_eq!(received.iter().collect::<BTreeSet<_>>(), sent);
    let path = format!("{}?dir=f&limit=1000", room_path(&room, "messages"));
    let (_, history) = server.get(&path, alice.tok()).await;
    let order: Vec<String> = event_ids(&history["chunk"]).into_iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(received, order);
    for mine in [&from_bob, &from_carol] {
        let seen: Vec<&String> = received.iter().filter(|id| mine.contains(id)).collect();
        assert_eq!(seen, mine.iter().collect::<Vec<_>>());
    }
    // And nothing more comes.
    let after = sync(&server, &alice, &[("since", &since), ("filter", &filter)]).await;
    assert!(joined(&after, &room).is_null(), "{after}");
}

// ---------------------------------------------------------------------------------------------
// Limited timelines

#[tokio::test]
async fn a_limited_timeline_gap_is_filled_exactly_by_paging_from_prev_batch() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let before = send_text(&server, &bob, &room, "before").await;
    let filter = json!({ "room": { "timeline": { "limit": 3 } } }).to_string();
    let since = next_batch(&sync(&server, &alice, &[("filter", &filter)]).await);

    let mut sent = Vec::new();
    for i in 0..10 {
        let sender = if i % 2 == 0 { &bob } else { &alice };
        sent.push(send_text(&server, sender, &room, &format!("m{i}")).await);
    }
    let reply = sync(&server, &alice, &[("since", &since), ("filter", &filter)]).await;
    let section = joined(&reply, &room);
    assert_eq!(section["timeline"]["limited"], true, "{section}");
    assert_eq!(timeline_ids(&reply, &room), sent[7..]);
    let prev_batch = section["timeline"]["prev_batch"].as_str().unwrap();

    // Back from prev_batch down to the previous sync: exactly the gap, newest first.
    let path = format!("{}?dir=b&from={}&to={}&limit=100", room_path(&room, "messages"), enc(prev_batch), enc(&since));
    let (status, page) = server.get(&path, alice.tok()).await;
    assert_eq!(status, 200, "{page}");
    let mut gap = sent[..7].to_vec();
    gap.reverse();
    assert_eq!(event_ids(&page["chunk"]), gap);
    // `end` comes with the non-empty chunk (as Synapse); from it, nothing is left before the sync.
    let path = format!(
        "{}?dir=b&from={}&to={}",
        room_path(&room, "messages"),
        enc(page["end"].as_str().unwrap()),
        enc(&since)
    );
    let (_, beyond) = server.get(&path, alice.tok()).await;
    assert!(
        beyond["chunk"].as_array().unwrap().is_empty() && beyond.get("end").is_none(),
        "nothing more to page: {beyond}"
    );

    // The same in small pages: no gap, no duplicate, and it stops at the previous sync.
    let mut paged = Vec::new();
    let mut from = prev_batch.to_owned();
    for _ in 0..10 {
        let path = format!("{}?dir=b&from={}&to={}&limit=3", room_path(&room, "messages"), enc(&from), enc(&since));
        let (status, page) = server.get(&path, alice.tok()).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(event_ids(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, gap);

    // Without `to`, paging goes on past the previous sync.
    let path = format!("{}?dir=b&from={}&limit=100", room_path(&room, "messages"), enc(prev_batch));
    let (_, page) = server.get(&path, alice.tok()).await;
    let all = event_ids(&page["chunk"]);
    assert_eq!(all[..7], gap);
    assert_eq!(all[7], before);
}

// ---------------------------------------------------------------------------------------------
// Lazy-loading members

#[tokio::test]
async fn lazy_loading_sends_only_the_members_of_the_timeline_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let room = shared_room(&server, &alice, &[&bob, &carol, &dave]).await;
    send_text(&server, &carol, &room, "carol spoke long ago").await;
    send_text(&server, &bob, &room, "one").await;
    send_text(&server, &bob, &room, "two").await;

    let lazy = json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } }).to_string();
    let reply = sync(&server, &alice, &[("filter", &lazy)]).await;
    let state = &joined(&reply, &room)["state"]["events"];
    // Bob sent the timeline; Myelin, like Synapse, adds the syncing user's own membership.
    assert_eq!(members(state), set_of(&[&bob.user_id, &alice.user_id]), "{state}");
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"), "other state is all there");
    // The summary still counts everyone.
    assert_eq!(joined(&reply, &room)["summary"]["m.joined_member_count"], 4);

    // Without lazy-loading, every member.
    let eager = json!({ "room": { "timeline": { "limit": 2 } } }).to_string();
    let reply = sync(&server, &alice, &[("filter", &eager)]).await;
    let everyone = set_of(&[&alice.user_id, &bob.user_id, &carol.user_id, &dave.user_id]);
    assert_eq!(members(&joined(&reply, &room)["state"]["events"]), everyone);
}

#[tokio::test]
async fn lazy_loading_does_not_repeat_members_unless_redundant_ones_are_asked_for() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let room = shared_room(&server, &alice, &[&bob, &carol, &dave]).await;
    send_text(&server, &bob, &room, "one").await;

    let lazy = json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } }).to_string();
    let redundant = json!({ "room": { "timeline": { "limit": 1 }, "state": {
        "lazy_load_members": true, "include_redundant_members": true,
    } } })
    .to_string();
    let initial = sync(&server, &alice, &[("filter", &lazy)]).await;
    assert_eq!(members(&joined(&initial, &room)["state"]["events"]), set_of(&[&bob.user_id, &alice.user_id]));
    let since = next_batch(&initial);

    // Bob (already sent) and carol (new to the client) speak.
    let from_bob = send_text(&server, &bob, &room, "two").await;
    let from_carol = send_text(&server, &carol, &room, "three").await;
    let wide = |filter: &str| filter.replace("\"limit\":1", "\"limit\":10");
    let reply = sync(&server, &alice, &[("since", &since), ("filter", &wide(&lazy))]).await;
    assert_eq!(timeline_ids(&reply, &room), [from_bob.clone(), from_carol.clone()]);
    let state = &joined(&reply, &room)["state"]["events"];
    assert_eq!(members(state), set_of(&[&carol.user_id]), "only the member the client lacks: {state}");
    let carol_member = state.as_array().unwrap().iter().find(|e| e["state_key"] == carol.user_id).unwrap();
    assert_eq!(carol_member["content"]["membership"], "join");
    let next = next_batch(&reply);

    // Carol again: nothing to add.
    let again = send_text(&server, &carol, &room, "four").await;
    let reply = sync(&server, &alice, &[("since", &next), ("filter", &wide(&lazy))]).await;
    assert_eq!(timeline_ids(&reply, &room), [again]);
    assert_eq!(members(&joined(&reply, &room)["state"]["events"]), BTreeSet::new());

    // A retried sync (its answer lost) from the older token gets carol's membership again.
    let retry = sync(&server, &alice, &[("since", &since), ("filter", &wide(&lazy))]).await;
    assert!(members(&joined(&retry, &room)["state"]["events"]).contains(&carol.user_id), "{retry}");

    // With include_redundant_members, every sender's membership comes each time; never dave's.
    let reply = sync(&server, &alice, &[("since", &since), ("filter", &wide(&redundant))]).await;
    let got = members(&joined(&reply, &room)["state"]["events"]);
    assert!(got.contains(&bob.user_id) && got.contains(&carol.user_id), "{got:?}");
    assert!(got.is_subset(&set_of(&[&alice.user_id, &bob.user_id, &carol.user_id])), "{got:?}");
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn since_tokens_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    send_text(&server, &bob, &room, "seen before the restart").await;
    let since = sync_token(&server, &alice).await;
    let before = send_text(&server, &bob, &room, "sent before the restart").await;

    assert!(server.terminate().success());
    server.restart();
    let after = send_text(&server, &bob, &room, "sent after the restart").await;
    let reply = sync(&server, &alice, &[("since", &since)]).await;
    assert_eq!(timeline_ids(&reply, &room), [before, after]);
    assert_eq!(joined(&reply, &room)["timeline"]["limited"], false);

    // The new token goes on from there.
    let latest = send_text(&server, &bob, &room, "latest").await;
    let reply = sync(&server, &alice, &[("since", &next_batch(&reply))]).await;
    assert_eq!(timeline_ids(&reply, &room), [latest]);
}

#[tokio::test]
async fn a_garbage_since_is_a_clear_400() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for garbage in ["garbage", "s", "sx_1", "s1_2_3_4", "12", ""] {
        let reply = sync_raw(&server, &alice, &[("since", garbage)]).await;
        assert_error(&reply, 400, "M_INVALID_PARAM");
    }
    let reply = sync_raw(&server, &alice, &[("set_presence", "sleepy")]).await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
}

// ---------------------------------------------------------------------------------------------
// Sections

#[tokio::test]
async fn invites_come_once_with_stripped_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let since = sync_token(&server, &bob).await;
    let room =
        create_room(&server, &alice, json!({ "name": "Tea", "topic": "Earl Grey", "preset": "private_chat" })).await;
    invite(&server, &alice, &room, &bob).await;

    let reply = sync(&server, &bob, &[("since", &since)]).await;
    assert!(joined(&reply, &room).is_null());
    let events = reply["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap().clone();
    let find = |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("{kind}: {events:?}"));
    assert_eq!(find("m.room.create")["sender"], alice.user_id);
    assert_eq!(find("m.room.name")["content"], json!({ "name": "Tea" }));
    assert_eq!(find("m.room.topic")["content"]["topic"], "Earl Grey");
    assert_eq!(find("m.room.join_rules")["content"]["join_rule"], "invite");
    let member = find("m.room.member");
    assert_eq!((&member["state_key"], &member["content"]["membership"]), (&json!(bob.user_id), &json!("invite")));
    assert_eq!(member["sender"], alice.user_id);
    for event in &events {
        // Stripped: type, state_key, content, sender, and nothing that belongs to a full event.
        assert!(event.get("event_id").is_none() && event.get("origin_server_ts").is_none(), "{event}");
        assert!(event["state_key"].is_string() && event["content"].is_object(), "{event}");
    }
    // Once: the next sync does not repeat it; an initial sync does show it.
    let again = sync(&server, &bob, &[("since", &next_batch(&reply))]).await;
    assert!(again["rooms"]["invite"].get(&room).is_none(), "{again}");
    assert!(sync(&server, &bob, &[]).await["rooms"]["invite"][&room].is_object());

    // Joining moves it to join.
    join(&server, &bob, &room).await;
    let joined_reply = sync(&server, &bob, &[("since", &next_batch(&again))]).await;
    assert!(joined(&joined_reply, &room).is_object(), "{joined_reply}");
    assert!(joined_reply["rooms"]["invite"].get(&room).is_none());
}

#[tokio::test]
async fn leaving_moves_the_room_to_leave_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    let last_seen = send_text(&server, &alice, &room, "before bob leaves").await;
    leave(&server, &bob, &room).await;
    let after_leaving = send_text(&server, &alice, &room, "after bob left").await;

    let reply = sync(&server, &bob, &[("since", &since)]).await;
    assert!(joined(&reply, &room).is_null(), "{reply}");
    let left = &reply["rooms"]["leave"][&room];
    let timeline: Vec<&Value> = left["timeline"]["events"].as_array().unwrap().iter().collect();
    assert_eq!(timeline[0]["event_id"], last_seen);
    let departure = timeline.last().unwrap();
    assert_eq!((&departure["type"], &departure["state_key"]), (&json!("m.room.member"), &json!(bob.user_id)));
    assert_eq!(departure["content"]["membership"], "leave");
    assert!(!timeline.iter().any(|e| e["event_id"] == after_leaving), "nothing after the departure");

    let again = sync(&server, &bob, &[("since", &next_batch(&reply))]).await;
    assert!(again["rooms"]["leave"].get(&room).is_none(), "{again}");
    assert!(joined(&again, &room).is_null());
    // An initial sync leaves it out unless include_leave asks (see sync_filters.rs).
    assert!(sync(&server, &bob, &[]).await["rooms"]["leave"].get(&room).is_none());
}

#[tokio::test]
async fn a_room_left_since_the_last_sync_brings_only_the_state_that_changed() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    leave(&server, &bob, &room).await;

    // Bob had the room: the timeline has his departure, and the state nothing (it did not change
    // before the timeline), as for a room he is still in.
    let reply = sync(&server, &bob, &[("since", &since)]).await;
    let left = &reply["rooms"]["leave"][&room];
    assert_eq!(left["state"]["events"], json!([]), "{left}");
    let timeline = left["timeline"]["events"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "{left}");
    assert_eq!(
        (&timeline[0]["state_key"], &timeline[0]["content"]["membership"]),
        (&json!(bob.user_id), &json!("leave"))
    );

    // With a timeline too short for what happened, the state has the change before it, and only that.
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    let topic = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "tea" })).await;
    send_text(&server, &alice, &room, "hello").await;
    leave(&server, &bob, &room).await;
    let filter = json!({ "room": { "timeline": { "limit": 1 } } }).to_string();
    let reply = sync(&server, &bob, &[("since", &since), ("filter", &filter)]).await;
    let left = &reply["rooms"]["leave"][&room];
    assert_eq!(event_ids(&left["state"]["events"]), vec![topic], "{left}");
    assert_eq!(left["timeline"]["limited"], true);
}

#[tokio::test]
async fn a_timeline_limit_of_zero_sends_the_state_without_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    send_text(&server, &alice, &room, "hello").await;
    leave(&server, &bob, &room).await;

    let filter = json!({ "room": { "timeline": { "limit": 0 }, "include_leave": true } }).to_string();
    let reply = sync(&server, &alice, &[("filter", &filter)]).await;
    let room_reply = joined(&reply, &room);
    assert_eq!(room_reply["timeline"]["events"], json!([]), "{room_reply}");
    assert_eq!(room_reply["timeline"]["limited"], true);
    assert!(room_reply["timeline"]["prev_batch"].is_string());
    let state = &room_reply["state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"), "{state}");
    assert_eq!(members(state), set_of(&[&alice.user_id, &bob.user_id]));

    // A left room: its state up to the departure, the departure included.
    let reply = sync(&server, &bob, &[("filter", &filter)]).await;
    let left = &reply["rooms"]["leave"][&room];
    assert_eq!(left["timeline"]["events"], json!([]), "{left}");
    let departure = left["state"]["events"].as_array().unwrap().iter().find(|e| e["state_key"] == bob.user_id);
    assert_eq!(departure.unwrap()["content"]["membership"], "leave", "{left}");
}

#[tokio::test]
async fn invites_from_ignored_users_are_not_sent() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let path = format!("{V3}/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id));
    let ignore = json!({ "ignored_users": { (bob.user_id.clone()): {} } });
    let (status, reply) = server.put(&path, alice.tok(), ignore).await;
    assert_eq!(status, 200, "{reply}");
    let since = sync_token(&server, &alice).await;

    let from_bob = create_room(&server, &bob, json!({ "preset": "private_chat", "invite": [alice.user_id] })).await;
    let from_carol = create_room(&server, &carol, json!({ "preset": "private_chat", "invite": [alice.user_id] })).await;
    for reply in [sync(&server, &alice, &[("since", &since)]).await, sync(&server, &alice, &[]).await] {
        let invites = &reply["rooms"]["invite"];
        assert!(invites.get(&from_bob).is_none(), "{invites}");
        assert!(invites[&from_carol].is_object(), "{invites}");
    }
}

#[tokio::test]
async fn the_leave_of_a_room_forgotten_since_the_last_sync_still_comes() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    leave(&server, &bob, &room).await;
    let (status, reply) = server.post(&room_path(&room, "forget"), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");

    // Bob's other devices learn of the departure from an incremental sync...
    let reply = sync(&server, &bob, &[("since", &since)]).await;
    assert!(reply["rooms"]["leave"][&room].is_object(), "{reply}");
    // ...and the room is gone after that, and from initial syncs even with include_leave.
    let again = sync(&server, &bob, &[("since", &next_batch(&reply))]).await;
    assert!(again["rooms"]["leave"].get(&room).is_none(), "{again}");
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let initial = sync(&server, &bob, &[("filter", &filter)]).await;
    assert!(initial["rooms"]["leave"].get(&room).is_none(), "{initial}");
    // Its history is closed to him, whatever the parameters.
    assert_error(&server.get(&room_path(&room, "messages"), bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&room_path(&room, "messages?dir=b"), bob.tok()).await, 403, "M_FORBIDDEN");
    // Someone who may read it is told what is missing.
    assert_error(&server.get(&room_path(&room, "messages"), alice.tok()).await, 400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn knocks_appear_under_knock() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let knock_rule = json!({ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } });
    let body = json!({ "room_version": "7", "name": "Porch", "preset": "private_chat", "initial_state": [knock_rule] });
    let room = create_room(&server, &alice, body).await;
    let bob_since = sync_token(&server, &bob).await;
    let alice_since = sync_token(&server, &alice).await;

    let (status, reply) =
        server.post(&format!("{V3}/knock/{}", enc(&room)), bob.tok(), json!({ "reason": "hi" })).await;
    assert_eq!(status, 200, "{reply}");
    let reply = sync(&server, &bob, &[("since", &bob_since)]).await;
    let events = reply["rooms"]["knock"][&room]["knock_state"]["events"].as_array().unwrap().clone();
    let find = |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("{kind}: {events:?}"));
    assert_eq!(find("m.room.join_rules")["content"]["join_rule"], "knock");
    assert_eq!(find("m.room.name")["content"]["name"], "Porch");
    assert!(find("m.room.create").is_object());
    let member = find("m.room.member");
    assert_eq!((&member["state_key"], &member["content"]["membership"]), (&json!(bob.user_id), &json!("knock")));
    assert!(joined(&reply, &room).is_null() && reply["rooms"]["invite"].get(&room).is_none());
    let again = sync(&server, &bob, &[("since", &next_batch(&reply))]).await;
    assert!(again["rooms"]["knock"].get(&room).is_none(), "once: {again}");

    // The room's members see the knock in the timeline.
    let reply = sync(&server, &alice, &[("since", &alice_since)]).await;
    let knock = joined(&reply, &room)["timeline"]["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&knock["state_key"], &knock["content"]["membership"]), (&json!(bob.user_id), &json!("knock")));
}

#[tokio::test]
async fn global_account_data_changes_appear_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let path = format!("{V3}/user/{}/account_data/org.example.colour", enc(&alice.user_id));
    let (status, _) = server.put(&path, alice.tok(), json!({ "colour": "red" })).await;
    assert_eq!(status, 200);
    let initial = sync(&server, &alice, &[]).await;
    let events = initial["account_data"]["events"].as_array().unwrap();
    assert!(events.contains(&json!({ "type": "org.example.colour", "content": { "colour": "red" } })), "{initial}");

    let since = next_batch(&initial);
    assert_eq!(sync(&server, &alice, &[("since", &since)]).await["account_data"]["events"], json!([]));
    let (status, _) = server.put(&path, alice.tok(), json!({ "colour": "green" })).await;
    assert_eq!(status, 200);
    let (status, _) = server.put(&path, alice.tok(), json!({ "colour": "blue" })).await;
    assert_eq!(status, 200);
    let reply = sync(&server, &alice, &[("since", &since), ("timeout", "30000")]).await;
    assert_eq!(
        reply["account_data"]["events"],
        json!([{ "type": "org.example.colour", "content": { "colour": "blue" } }]),
        "the latest content, once"
    );
    let again = sync(&server, &alice, &[("since", &next_batch(&reply))]).await;
    assert_eq!(again["account_data"]["events"], json!([]));
}

#[tokio::test]
async fn set_presence_offline_and_unavailable() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    shared_room(&server, &alice, &[&bob, &carol]).await;
    let since = sync_token(&server, &alice).await;
    let status_of = |user: &User| format!("{V3}/presence/{}/status", enc(&user.user_id));

    // offline: syncing does not bring carol online.
    sync(&server, &carol, &[("set_presence", "offline")]).await;
    assert_eq!(server.get(&status_of(&carol), alice.tok()).await.1["presence"], "offline");
    // unavailable: bob shows as away.
    sync(&server, &bob, &[("set_presence", "unavailable")]).await;
    assert_eq!(server.get(&status_of(&bob), alice.tok()).await.1["presence"], "unavailable");

    let reply = sync(&server, &alice, &[("since", &since)]).await;
    let bob_presence = presence_of(&reply, &bob);
    assert_eq!(bob_presence.len(), 1, "{reply}");
    assert_eq!(bob_presence[0]["content"]["presence"], "unavailable");
    assert_eq!(bob_presence[0]["type"], "m.presence");
    assert!(presence_of(&reply, &carol).is_empty(), "carol did not change: {reply}");

    // A plain sync brings carol online, and alice hears of it.
    let since = next_batch(&reply);
    sync(&server, &carol, &[]).await;
    assert_eq!(server.get(&status_of(&carol), alice.tok()).await.1["presence"], "online");
    let reply = sync(&server, &alice, &[("since", &since)]).await;
    let carol_presence = presence_of(&reply, &carol);
    assert_eq!(carol_presence.len(), 1, "{reply}");
    assert_eq!(carol_presence[0]["content"]["presence"], "online");
    assert!(presence_of(&reply, &bob).is_empty(), "bob's presence is not repeated: {reply}");
}

#[tokio::test]
async fn to_device_messages_stay_until_a_later_sync_acknowledges_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let since = sync_token(&server, &bob).await;

    let messages = json!({ "messages": { &bob.user_id: { &bob.device_id: { "secret": "s3" } } } });
    let (status, reply) = server.put(&format!("{V3}/sendToDevice/org.example.key/txn1"), alice.tok(), messages).await;
    assert_eq!(status, 200, "{reply}");
    let expected = json!([{ "sender": alice.user_id, "type": "org.example.key", "content": { "secret": "s3" } }]);

    let first = sync(&server, &bob, &[("since", &since), ("timeout", "30000")]).await;
    assert_eq!(first["to_device"]["events"], expected);
    // The client syncs again from the same token (it lost the answer): the message comes again.
    let retry = sync(&server, &bob, &[("since", &since)]).await;
    assert_eq!(retry["to_device"]["events"], expected);
    // Syncing from the newer token acknowledges it: gone for good.
    let next = sync(&server, &bob, &[("since", &next_batch(&retry))]).await;
    assert_eq!(next["to_device"]["events"], json!([]));
    assert_eq!(sync(&server, &bob, &[("since", &since)]).await["to_device"]["events"], json!([]));
    // Only that device's messages: alice got none.
    assert_eq!(sync(&server, &alice, &[]).await["to_device"]["events"], json!([]));
}
