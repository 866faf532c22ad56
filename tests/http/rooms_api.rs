//! The room endpoints: creating rooms, membership, sending and reading events and state,
//! redactions, history visibility, aliases, the room directory, upgrades. The authorization rules
//! themselves are tested in `rooms_auth.rs`.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{SERVER_NAME, TestServer, User, assert_error};

const V3: &str = "/_matrix/client/v3";

/// Percent-encodes what may not appear raw in a path segment: `#` in aliases, `/` in the event
/// IDs of room versions 1 to 3.
fn enc(id: &str) -> String {
    id.replace('%', "%25").replace('#', "%23").replace('/', "%2F").replace('?', "%3F")
}

fn room_path(room_id: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room_id))
}

fn alias_path(alias: &str) -> String {
    format!("{V3}/directory/room/{}", enc(alias))
}

fn alias(localpart: &str) -> String {
    format!("#{localpart}:{SERVER_NAME}")
}

async fn create_room(server: &TestServer, user: &User, body: Value) -> String {
    let (status, reply) = server.post(&format!("{V3}/createRoom"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply["room_id"].as_str().unwrap().to_owned()
}

async fn join(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "join"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

async fn leave(server: &TestServer, user: &User, room_id: &str) {
    let (status, reply) = server.post(&room_path(room_id, "leave"), user.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
}

/// Sends a text message with a fresh transaction ID; returns the event ID.
async fn send_text(server: &TestServer, user: &User, room_id: &str, body: &str) -> String {
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = format!("helper-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let path = room_path(room_id, &format!("send/m.room.message/{txn}"));
    let (status, reply) = server.put(&path, user.tok(), json!({ "msgtype": "m.text", "body": body })).await;
    assert_eq!(status, 200, "{reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

/// `GET /state/{type_and_key}` (the key may carry a query), asserting success.
async fn state(server: &TestServer, user: &User, room_id: &str, type_and_key: &str) -> Value {
    let (status, reply) = server.get(&room_path(room_id, &format!("state/{type_and_key}")), user.tok()).await;
    assert_eq!(status, 200, "{type_and_key}: {reply}");
    reply
}

async fn set_state(server: &TestServer, user: &User, room_id: &str, type_and_key: &str, content: Value) -> String {
    let (status, reply) = server.put(&room_path(room_id, &format!("state/{type_and_key}")), user.tok(), content).await;
    assert_eq!(status, 200, "{type_and_key}: {reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

async fn get_event(server: &TestServer, user: &User, room_id: &str, event_id: &str) -> (StatusCode, Value) {
    server.get(&room_path(room_id, &format!("event/{}", enc(event_id))), user.tok()).await
}

async fn joined_rooms(server: &TestServer, user: &User) -> Vec<Value> {
    let (status, reply) = server.get(&format!("{V3}/joined_rooms"), user.tok()).await;
    assert_eq!(status, 200, "{reply}");
    reply["joined_rooms"].as_array().unwrap().clone()
}

fn member_key(user: &User) -> String {
    format!("m.room.member/{}", user.user_id)
}

// ---------------------------------------------------------------------------------------------
// createRoom

#[tokio::test]
async fn create_room_presets_set_join_rule_history_and_guest_access() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    for (preset, join_rule, guest_access) in [
        ("private_chat", "invite", "can_join"),
        ("public_chat", "public", "forbidden"),
        ("trusted_private_chat", "invite", "can_join"),
    ] {
        let room = create_room(&server, &alice, json!({ "preset": preset })).await;
        assert_eq!(state(&server, &alice, &room, "m.room.join_rules").await["join_rule"], join_rule, "{preset}");
        assert_eq!(state(&server, &alice, &room, "m.room.history_visibility").await["history_visibility"], "shared");
        assert_eq!(state(&server, &alice, &room, "m.room.guest_access").await["guest_access"], guest_access);
    }

    // trusted_private_chat gives invitees the creator's power: an explicit level up to room
    // version 11, a place among the additional creators from version 12.
    let body = json!({ "preset": "trusted_private_chat", "invite": [bob.user_id], "room_version": "11" });
    let room = create_room(&server, &alice, body).await;
    let power = state(&server, &alice, &room, "m.room.power_levels").await;
    assert_eq!(power["users"][&bob.user_id], 100);
    assert_eq!(power["users"][&alice.user_id], 100);
    let body = json!({ "preset": "trusted_private_chat", "invite": [bob.user_id], "room_version": "12" });
    let room = create_room(&server, &alice, body).await;
    let create = state(&server, &alice, &room, "m.room.create").await;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
}

#[tokio::test]
async fn create_room_public_visibility_implies_public_chat_and_publishes() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let public = create_room(&server, &alice, json!({ "visibility": "public" })).await;
    let private = create_room(&server, &alice, json!({})).await;
    assert_eq!(state(&server, &alice, &public, "m.room.join_rules").await["join_rule"], "public");
    assert_eq!(state(&server, &alice, &public, "m.room.guest_access").await["guest_access"], "forbidden");
    assert_eq!(state(&server, &alice, &private, "m.room.join_rules").await["join_rule"], "invite");

    let (status, listed) = server.get(&format!("{V3}/publicRooms"), None).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&Value> = listed["chunk"].as_array().unwrap().iter().map(|r| &r["room_id"]).collect();
    assert_eq!(ids, [&json!(public)]);
    let (_, visibility) = server.get(&format!("{V3}/directory/list/room/{public}"), None).await;
    assert_eq!(visibility, json!({ "visibility": "public" }));
}

#[tokio::test]
async fn create_room_with_name_and_topic() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "name": "Garden", "topic": "Roses & tulips" })).await;
    assert_eq!(state(&server, &alice, &room, "m.room.name").await, json!({ "name": "Garden" }));
    assert_eq!(
        state(&server, &alice, &room, "m.room.topic").await,
        json!({ "topic": "Roses & tulips", "m.topic": { "m.text": [{ "body": "Roses & tulips", "mimetype": "text/plain" }] } })
    );
}

#[tokio::test]
async fn create_room_topic_beats_initial_state_which_is_otherwise_kept_verbatim() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let initial = json!([{ "type": "m.room.topic", "state_key": "", "content": { "topic": "from initial_state" } }]);

    let room = create_room(&server, &alice, json!({ "topic": "from topic", "initial_state": initial })).await;
    assert_eq!(state(&server, &alice, &room, "m.room.topic").await["topic"], "from topic");

    let room = create_room(&server, &alice, json!({ "initial_state": initial })).await;
    assert_eq!(state(&server, &alice, &room, "m.room.topic").await, json!({ "topic": "from initial_state" }));
}

#[tokio::test]
async fn create_room_with_alias_and_a_taken_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_alias_name": "garden" })).await;
    let (status, resolved) = server.get(&alias_path(&alias("garden")), None).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["room_id"], room);
    assert_eq!(state(&server, &alice, &room, "m.room.canonical_alias").await["alias"], alias("garden"));

    let bob = server.register("bob", "pw").await;
    let reply = server.post(&format!("{V3}/createRoom"), bob.tok(), json!({ "room_alias_name": "garden" })).await;
    assert_error(&reply, 400, "M_ROOM_IN_USE");
    // The refusal comes before anything is created.
    assert_eq!(joined_rooms(&server, &bob).await, Vec::<Value>::new());
    assert_eq!(server.get(&alias_path(&alias("garden")), None).await.1["room_id"], room);
}

#[tokio::test]
async fn create_room_invites_directly() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "invite": [bob.user_id], "is_direct": true })).await;
    let member = state(&server, &alice, &room, &member_key(&bob)).await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true);
    // The flag is for the invitees; the creator's own join does not carry it.
    assert_eq!(state(&server, &alice, &room, &member_key(&alice)).await.get("is_direct"), None);
}

#[tokio::test]
async fn create_room_initial_state_power_override_and_creation_content() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "room_version": "11",
            "initial_state": [
                { "type": "com.example.settings", "state_key": "colour", "content": { "value": "green" } },
                { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
            ],
            "power_level_content_override": { "events_default": 10, "events": { "com.example.settings": 75 } },
            "creation_content": { "m.federate": false, "room_version": "1", "com.example.extra": [1, 2] },
            "com.example.unknown_key": { "ignored": true },
        }),
    )
    .await;
    assert_eq!(state(&server, &alice, &room, "com.example.settings/colour").await, json!({ "value": "green" }));
    // initial_state replaces what the preset would have set.
    assert_eq!(state(&server, &alice, &room, "m.room.history_visibility").await["history_visibility"], "joined");

    let power = state(&server, &alice, &room, "m.room.power_levels").await;
    assert_eq!(power["events_default"], 10);
    assert_eq!(power["events"]["com.example.settings"], 75);
    // What the override leaves out keeps its default.
    assert_eq!(power["users"][&alice.user_id], 100);
    assert_eq!(power["state_default"], 50);

    let create = state(&server, &alice, &room, "m.room.create").await;
    assert_eq!(create["m.federate"], false);
    assert_eq!(create["com.example.extra"], json!([1, 2]));
    // The server owns the room version.
    assert_eq!(create["room_version"], "11");
}

#[tokio::test]
async fn create_room_refusals() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let path = format!("{V3}/createRoom");
    assert_error(
        &server.post(&path, alice.tok(), json!({ "room_version": "99" })).await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_error(&server.post(&path, alice.tok(), json!({ "room_version": 11 })).await, 400, "M_BAD_JSON");
    // The creator could not name the room: the implied state is impossible, and nothing is made.
    let impossible = json!({
        "room_version": "11",
        "name": "Unnameable",
        "room_alias_name": "unnameable",
        "power_level_content_override": { "events": { "m.room.name": 200 } },
    });
    assert_error(&server.post(&path, alice.tok(), impossible).await, 400, "M_INVALID_ROOM_STATE");
    assert_eq!(joined_rooms(&server, &alice).await, Vec::<Value>::new());
    assert_error(&server.get(&alias_path(&alias("unnameable")), None).await, 404, "M_NOT_FOUND");

    assert_error(&server.post(&path, alice.tok(), json!({ "preset": "secret_chat" })).await, 400, "M_BAD_JSON");
    let (status, reply) = server.post(&path, alice.tok(), json!({ "room_alias_name": "two:parts" })).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["errcode"].is_string(), "{reply}");
    assert_eq!(joined_rooms(&server, &alice).await, Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// Membership

#[tokio::test]
async fn join_by_id_and_by_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "room_alias_name": "lobby" })).await;

    let (status, reply) = server.post(&format!("{V3}/join/{}", enc(&alias("lobby"))), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room);
    let (status, reply) = server.post(&format!("{V3}/join/{room}"), carol.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room);

    let dave = server.register("dave", "pw").await;
    let body = json!({ "foo": "bar", "reason": "curious" });
    let (status, reply) = server.post(&room_path(&room, "join"), dave.tok(), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room);
    let member = state(&server, &alice, &room, &format!("{}?format=event", member_key(&dave))).await;
    assert_eq!(member["content"]["membership"], "join");
    assert_eq!(member["content"]["foo"], "bar");
    assert_eq!(member["content"]["reason"], "curious");

    // Joining again changes nothing.
    let (status, _) = server.post(&room_path(&room, "join"), dave.tok(), body).await;
    assert_eq!(status, 200);
    let again = state(&server, &alice, &room, &format!("{}?format=event", member_key(&dave))).await;
    assert_eq!(again["event_id"], member["event_id"]);

    assert_eq!(joined_rooms(&server, &dave).await, [json!(room)]);
}

#[tokio::test]
async fn join_unknown_room_or_alias_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let unknown_room = format!("!nowhere:{SERVER_NAME}");
    assert_error(&server.post(&room_path(&unknown_room, "join"), alice.tok(), json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&server.post(&format!("{V3}/join/{unknown_room}"), alice.tok(), json!({})).await, 404, "M_NOT_FOUND");
    assert_error(
        &server.post(&format!("{V3}/join/{}", enc(&alias("nowhere"))), alice.tok(), json!({})).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn leave_then_forget() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    assert_eq!(joined_rooms(&server, &bob).await, [json!(room)]);

    assert_error(&server.post(&room_path(&room, "forget"), bob.tok(), json!({})).await, 400, "M_UNKNOWN");

    leave(&server, &bob, &room).await;
    assert_eq!(state(&server, &alice, &room, &member_key(&bob)).await["membership"], "leave");
    assert_eq!(joined_rooms(&server, &bob).await, Vec::<Value>::new());
    let (status, reply) = server.post(&room_path(&room, "forget"), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(joined_rooms(&server, &bob).await, Vec::<Value>::new());
}

#[tokio::test]
async fn invite_kick_ban_and_unban_record_the_reason() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    let bob_member = member_key(&bob);

    let expect = |action: &'static str, reason: &'static str, membership: &'static str| {
        let server = &server;
        let (alice, bob, room, key) = (&alice, &bob, &room, &bob_member);
        async move {
            let body = json!({ "user_id": bob.user_id, "reason": reason });
            let (status, reply) = server.post(&room_path(room, action), alice.tok(), body).await;
            assert_eq!(status, 200, "{action}: {reply}");
            let event = state(server, alice, room, &format!("{key}?format=event")).await;
            assert_eq!(event["content"]["membership"], membership, "{action}");
            assert_eq!(event["content"]["reason"], reason, "{action}");
            assert_eq!(event["sender"], alice.user_id, "{action}");
        }
    };
    expect("invite", "come in", "invite").await;
    join(&server, &bob, &room).await;
    expect("kick", "out you go", "leave").await;
    expect("ban", "and stay out", "ban").await;
    expect("unban", "forgiven", "leave").await;
}

// ---------------------------------------------------------------------------------------------
// Sending events

#[tokio::test]
async fn send_is_idempotent_per_device_room_and_transaction() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let send = |token: String, room: String, body: &'static str| {
        let server = &server;
        async move {
            let path = room_path(&room, "send/m.room.message/txn1");
            let (status, reply) = server.put(&path, Some(&token), json!({ "msgtype": "m.text", "body": body })).await;
            assert_eq!(status, 200, "{reply}");
            reply["event_id"].as_str().unwrap().to_owned()
        }
    };

    let first = send(alice.token.clone(), room.clone(), "hello").await;
    assert!(first.starts_with('$'), "{first}");
    assert_eq!(send(alice.token.clone(), room.clone(), "something else").await, first);

    // Logging in again on the same device keeps its transactions.
    let (status, login) = server
        .post(
            &format!("{V3}/login"),
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": "pw", "device_id": alice.device_id }),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["device_id"], alice.device_id.as_str());
    let same_device = User::from_login(&login, "pw");
    assert_eq!(send(same_device.token.clone(), room.clone(), "hello").await, first);

    // Another device's txn1 is its own.
    let phone = server.login("alice", "pw").await;
    assert_ne!(send(phone.token.clone(), room.clone(), "hello").await, first);

    // The original content was kept.
    let (_, event) = get_event(&server, &same_device, &room, &first).await;
    assert_eq!(event["content"]["body"], "hello");
}

#[tokio::test]
async fn the_same_transaction_id_elsewhere_is_a_new_request() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other_room = create_room(&server, &alice, json!({})).await;
    let body = json!({ "msgtype": "m.text", "body": "hello" });
    let (_, first) = server.put(&room_path(&room, "send/m.room.message/txn1"), alice.tok(), body.clone()).await;
    let first = first["event_id"].as_str().unwrap();

    // A retransmission is the same transaction ID on the same path: another room is another path.
    let (status, reply) = server.put(&room_path(&other_room, "send/m.room.message/txn1"), alice.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    let second = reply["event_id"].as_str().unwrap();
    assert_ne!(second, first);
    let (status, event) = get_event(&server, &alice, &other_room, second).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["room_id"], other_room);
}

#[tokio::test]
async fn transaction_id_is_shown_to_the_sending_device_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let phone = server.login("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let path = room_path(&room, "send/m.room.message/my-txn");
    let (_, reply) = server.put(&path, alice.tok(), json!({ "msgtype": "m.text", "body": "hi" })).await;
    let event_id = reply["event_id"].as_str().unwrap();

    let (status, event) = get_event(&server, &alice, &room, event_id).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["unsigned"]["transaction_id"], "my-txn");
    assert_eq!(event["event_id"], event_id);
    assert_eq!(event["room_id"], room);
    assert_eq!(event["sender"], alice.user_id);
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["content"], json!({ "msgtype": "m.text", "body": "hi" }));
    for reader in [&phone, &bob] {
        let (status, event) = get_event(&server, reader, &room, event_id).await;
        assert_eq!(status, 200, "{event}");
        assert_eq!(event["unsigned"].get("transaction_id"), None, "{event}");
    }
}

#[tokio::test]
async fn send_without_transaction_id_and_by_a_non_member() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let body = json!({ "msgtype": "m.text", "body": "no txn" });
    let (status, reply) = server.post(&room_path(&room, "send/m.room.message"), alice.tok(), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let (_, event) = get_event(&server, &alice, &room, reply["event_id"].as_str().unwrap()).await;
    assert_eq!(event["content"], body);

    let reply = server.put(&room_path(&room, "send/m.room.message/t1"), bob.tok(), body).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// State

#[tokio::test]
async fn put_and_get_state_with_and_without_a_state_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;

    set_state(&server, &alice, &room, "m.room.name", json!({ "name": "No slash" })).await;
    assert_eq!(state(&server, &alice, &room, "m.room.name").await, json!({ "name": "No slash" }));
    set_state(&server, &alice, &room, "m.room.name/", json!({ "name": "Slash" })).await;
    assert_eq!(state(&server, &alice, &room, "m.room.name/").await, json!({ "name": "Slash" }));
    assert_eq!(state(&server, &alice, &room, "m.room.name").await, json!({ "name": "Slash" }));
    let keyed = set_state(&server, &alice, &room, "com.example.thing/key1", json!({ "n": 1 })).await;
    assert_eq!(state(&server, &alice, &room, "com.example.thing/key1").await, json!({ "n": 1 }));

    let event = state(&server, &alice, &room, "com.example.thing/key1?format=event").await;
    assert_eq!(event["event_id"], keyed);
    assert_eq!(event["sender"], alice.user_id);
    assert_eq!(event["room_id"], room);
    assert_eq!(event["type"], "com.example.thing");
    assert_eq!(event["state_key"], "key1");
    assert_eq!(event["content"], json!({ "n": 1 }));

    assert_error(&server.get(&room_path(&room, "state/com.example.thing/key2"), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&room_path(&room, "state/com.example.nothing"), alice.tok()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn all_state_lists_every_state_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "name": "Everything" })).await;
    let (status, all) = server.get(&room_path(&room, "state"), alice.tok()).await;
    assert_eq!(status, 200, "{all}");
    let all = all.as_array().unwrap();
    for kind in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        let event = all.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("{kind} missing: {all:?}"));
        assert!(event["event_id"].is_string() && event["state_key"].is_string(), "{event}");
        assert_eq!(event["room_id"], room);
    }
    assert_eq!(all.iter().filter(|e| e["type"] == "m.room.create").count(), 1);

    // Someone never in the room reads none of it.
    assert_error(&server.get(&room_path(&room, "state"), bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&room_path(&room, "state/m.room.name"), bob.tok()).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn identical_state_twice_is_one_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let first = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "same" })).await;
    let second = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "same" })).await;
    assert_eq!(first, second);
    let third = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "different" })).await;
    assert_ne!(first, third);
}

#[tokio::test]
async fn a_second_create_event_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_version": "11" })).await;
    let (status, reply) =
        server.put(&room_path(&room, "state/m.room.create"), alice.tok(), json!({ "room_version": "10" })).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["errcode"].is_string(), "{reply}");
    assert_eq!(state(&server, &alice, &room, "m.room.create").await["room_version"], "11");
}

#[tokio::test]
async fn replacing_state_records_what_it_replaced() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let first = set_state(&server, &alice, &room, "m.room.name", json!({ "name": "One" })).await;
    let second = set_state(&server, &alice, &room, "m.room.name", json!({ "name": "Two" })).await;

    let (_, event) = get_event(&server, &alice, &room, &first).await;
    assert_eq!(event["unsigned"].get("replaces_state"), None, "{event}");
    for event in [
        get_event(&server, &alice, &room, &second).await.1,
        state(&server, &alice, &room, "m.room.name?format=event").await,
    ] {
        assert_eq!(event["event_id"], second);
        assert_eq!(event["unsigned"]["replaces_state"], first, "{event}");
        assert_eq!(event["unsigned"]["prev_content"], json!({ "name": "One" }), "{event}");
    }
}

#[tokio::test]
async fn a_former_member_reads_state_as_it_was_when_they_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "name": "Before" })).await;
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;
    set_state(&server, &alice, &room, "m.room.name", json!({ "name": "After" })).await;

    assert_eq!(state(&server, &bob, &room, "m.room.name").await["name"], "Before");
    assert_eq!(state(&server, &alice, &room, "m.room.name").await["name"], "After");
    let (status, all) = server.get(&room_path(&room, "state"), bob.tok()).await;
    assert_eq!(status, 200, "{all}");
    let name = all.as_array().unwrap().iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], "Before");
}

// ---------------------------------------------------------------------------------------------
// Redaction

#[tokio::test]
async fn redacting_an_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;

    // A member with no power may redact their own event...
    let mine = send_text(&server, &bob, &room, "oops").await;
    let path = room_path(&room, &format!("redact/{}/r1", enc(&mine)));
    let (status, reply) = server.put(&path, bob.tok(), json!({ "reason": "typo" })).await;
    assert_eq!(status, 200, "{reply}");
    let redaction = reply["event_id"].as_str().unwrap().to_owned();
    // ...and retrying the request does not redact twice.
    assert_eq!(server.put(&path, bob.tok(), json!({ "reason": "typo" })).await.1["event_id"], redaction);

    let (status, event) = get_event(&server, &alice, &room, &mine).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"], json!({}));
    let because = &event["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction);
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["sender"], bob.user_id);
    assert_eq!(because["content"]["reason"], "typo");

    // ...but not someone else's.
    let theirs = send_text(&server, &alice, &room, "keep").await;
    let path = room_path(&room, &format!("redact/{}/r2", enc(&theirs)));
    assert_error(&server.put(&path, bob.tok(), json!({})).await, 403, "M_FORBIDDEN");
    assert_eq!(get_event(&server, &alice, &room, &theirs).await.1["content"]["body"], "keep");

    let path = room_path(&room, &format!("redact/{}/r3", enc("$doesnotexist")));
    assert_error(&server.put(&path, alice.tok(), json!({})).await, 404, "M_NOT_FOUND");
    // An event is only found in its own room.
    let elsewhere = create_room(&server, &alice, json!({})).await;
    let path = room_path(&elsewhere, &format!("redact/{}/r4", enc(&theirs)));
    assert_error(&server.put(&path, alice.tok(), json!({})).await, 404, "M_NOT_FOUND");
    assert_error(&get_event(&server, &alice, &elsewhere, &theirs).await, 404, "M_NOT_FOUND");
    assert_error(&get_event(&server, &alice, &room, "$doesnotexist").await, 404, "M_NOT_FOUND");
    assert_eq!(get_event(&server, &alice, &room, &theirs).await.1["content"]["body"], "keep");
}

#[tokio::test]
async fn events_of_a_version_1_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_version": "1" })).await;
    assert!(room.ends_with(&format!(":{SERVER_NAME}")), "{room}");
    // Event IDs of versions 1 and 2 carry the server name.
    let event_id = send_text(&server, &alice, &room, "old style").await;
    assert!(event_id.starts_with('$') && event_id.ends_with(&format!(":{SERVER_NAME}")), "{event_id}");
    let (status, event) = get_event(&server, &alice, &room, &event_id).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "old style");

    let path = room_path(&room, &format!("redact/{}/r1", enc(&event_id)));
    let (status, reply) = server.put(&path, alice.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(get_event(&server, &alice, &room, &event_id).await.1["content"], json!({}));
    assert_eq!(state(&server, &alice, &room, "m.room.create").await["creator"], alice.user_id);
}

#[tokio::test]
async fn redacting_state_keeps_what_the_algorithm_keeps() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let rules =
        set_state(&server, &alice, &room, "m.room.join_rules", json!({ "join_rule": "public", "com.example.x": 1 }))
            .await;
    let topic = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "secret" })).await;
    for (event_id, txn) in [(&rules, "r1"), (&topic, "r2")] {
        let path = room_path(&room, &format!("redact/{}/{txn}", enc(event_id)));
        let (status, reply) = server.put(&path, alice.tok(), json!({})).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (_, event) = get_event(&server, &alice, &room, &rules).await;
    assert_eq!(event["content"], json!({ "join_rule": "public" }));
    assert_eq!(event["type"], "m.room.join_rules");
    assert_eq!(event["state_key"], "");
    let (_, event) = get_event(&server, &alice, &room, &topic).await;
    assert_eq!(event["content"], json!({}));
}

// ---------------------------------------------------------------------------------------------
// History visibility

/// A public room with the given history visibility, and an event alice sent before anyone else
/// came.
async fn room_with_history(server: &TestServer, alice: &User, visibility: &str, preset: &str) -> (String, String) {
    let initial = json!([{ "type": "m.room.history_visibility", "content": { "history_visibility": visibility } }]);
    let room = create_room(server, alice, json!({ "preset": preset, "initial_state": initial })).await;
    let early = send_text(server, alice, &room, "early").await;
    (room, early)
}

#[tokio::test]
async fn joined_history_hides_what_came_before_joining() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (room, early) = room_with_history(&server, &alice, "joined", "public_chat").await;
    join(&server, &bob, &room).await;
    let late = send_text(&server, &alice, &room, "late").await;
    assert_error(&get_event(&server, &bob, &room, &early).await, 404, "M_NOT_FOUND");
    assert_eq!(get_event(&server, &bob, &room, &late).await.0, 200);
    assert_eq!(get_event(&server, &alice, &room, &early).await.0, 200);
}

#[tokio::test]
async fn shared_history_is_visible_once_joined() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (room, early) = room_with_history(&server, &alice, "shared", "public_chat").await;
    assert_error(&get_event(&server, &bob, &room, &early).await, 404, "M_NOT_FOUND");
    join(&server, &bob, &room).await;
    let (status, event) = get_event(&server, &bob, &room, &early).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "early");

    // What is sent after leaving is not shared with the one who left.
    leave(&server, &bob, &room).await;
    let late = send_text(&server, &alice, &room, "late").await;
    assert_error(&get_event(&server, &bob, &room, &late).await, 404, "M_NOT_FOUND");
    assert_eq!(get_event(&server, &bob, &room, &early).await.0, 200);
}

#[tokio::test]
async fn invited_history_is_visible_from_the_invite_on() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (room, early) = room_with_history(&server, &alice, "invited", "private_chat").await;
    let (status, _) = server.post(&room_path(&room, "invite"), alice.tok(), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 200);
    let after_invite = send_text(&server, &alice, &room, "after invite").await;

    assert_error(&get_event(&server, &bob, &room, &early).await, 404, "M_NOT_FOUND");
    assert_eq!(get_event(&server, &bob, &room, &after_invite).await.0, 200);
    join(&server, &bob, &room).await;
    assert_error(&get_event(&server, &bob, &room, &early).await, 404, "M_NOT_FOUND");
    assert_eq!(get_event(&server, &bob, &room, &after_invite).await.0, 200);
}

#[tokio::test]
async fn world_readable_history_is_visible_to_anyone() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let (room, early) = room_with_history(&server, &alice, "world_readable", "private_chat").await;
    let (status, event) = get_event(&server, &stranger, &room, &early).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "early");
}

// ---------------------------------------------------------------------------------------------
// Members

fn member_ids(reply: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        reply["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn members_with_filters_and_as_at_leaving() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    let members = |user: User, query: &'static str| {
        let server = &server;
        let path = room_path(&room, &format!("members{query}"));
        async move {
            let (status, reply) = server.get(&path, user.tok()).await;
            assert_eq!(status, 200, "{query}: {reply}");
            reply
        }
    };
    let (a, b, c) = (alice.user_id.as_str(), bob.user_id.as_str(), carol.user_id.as_str());

    let all = members(alice.clone(), "").await;
    assert_eq!(member_ids(&all), [a, b, c]);
    for event in all["chunk"].as_array().unwrap() {
        assert_eq!(event["type"], "m.room.member");
        assert_eq!(event["room_id"], room);
        assert!(event["event_id"].is_string() && event["sender"].is_string(), "{event}");
    }
    assert_eq!(member_ids(&members(alice.clone(), "?membership=join").await), [a, c]);
    assert_eq!(member_ids(&members(alice.clone(), "?membership=leave").await), [b]);
    assert_eq!(member_ids(&members(alice.clone(), "?not_membership=leave").await), [a, c]);

    // Bob left before carol came: he sees the room as he left it.
    let as_left = members(bob.clone(), "").await;
    assert_eq!(member_ids(&as_left), [a, b]);
    let bob_event = as_left["chunk"].as_array().unwrap().iter().find(|e| e["state_key"] == b).unwrap();
    assert_eq!(bob_event["content"]["membership"], "leave");

    assert_error(&server.get(&room_path(&room, "members"), stranger.tok()).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn joined_members_with_profiles() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let profile = format!("{V3}/profile/{}", alice.user_id);
    server.put(&format!("{profile}/displayname"), alice.tok(), json!({ "displayname": "Alice A." })).await;
    server.put(&format!("{profile}/avatar_url"), alice.tok(), json!({ "avatar_url": "mxc://test.local/alice" })).await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;

    let (status, reply) = server.get(&room_path(&room, "joined_members"), bob.tok()).await;
    assert_eq!(status, 200, "{reply}");
    let joined = reply["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 2);
    assert_eq!(joined[&alice.user_id], json!({ "display_name": "Alice A.", "avatar_url": "mxc://test.local/alice" }));
    // No avatar: `null`, with the key present (as Synapse; Complement's TestRoomState wants both keys).
    let bobs = joined[&bob.user_id].as_object().unwrap();
    assert_eq!(bobs.get("avatar_url"), Some(&Value::Null), "{reply}");
    assert!(bobs["display_name"].is_string(), "{reply}");

    leave(&server, &bob, &room).await;
    assert_error(&server.get(&room_path(&room, "joined_members"), bob.tok()).await, 403, "M_FORBIDDEN");
    let (_, reply) = server.get(&room_path(&room, "joined_members"), alice.tok()).await;
    assert_eq!(reply["joined"].as_object().unwrap().keys().collect::<Vec<_>>(), [&alice.user_id]);
}

#[tokio::test]
async fn joined_rooms_lists_only_joined_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let one = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let two = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let invited = create_room(&server, &alice, json!({ "invite": [bob.user_id] })).await;
    join(&server, &bob, &one).await;
    join(&server, &bob, &two).await;
    leave(&server, &bob, &two).await;
    assert_eq!(joined_rooms(&server, &bob).await, [json!(one)]);
    let mut alices: Vec<String> =
        joined_rooms(&server, &alice).await.iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    alices.sort();
    let mut expected = vec![one, two, invited];
    expected.sort();
    assert_eq!(alices, expected);
}

// ---------------------------------------------------------------------------------------------
// Aliases

#[tokio::test]
async fn create_resolve_and_refuse_aliases() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;

    let (status, reply) = server.put(&alias_path(&alias("home")), alice.tok(), json!({ "room_id": room })).await;
    assert_eq!(status, 200, "{reply}");
    let (status, resolved) = server.get(&alias_path(&alias("home")), None).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved, json!({ "room_id": room, "servers": [SERVER_NAME] }));

    let reply = server.put(&alias_path(&alias("home")), alice.tok(), json!({ "room_id": room })).await;
    assert_eq!(reply.0, 409, "{}", reply.1);
    assert_error(
        &server.put(&alias_path(&alias("intruder")), stranger.tok(), json!({ "room_id": room })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(&alias_path("#home:elsewhere.example"), alice.tok(), json!({ "room_id": room })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&server.get(&alias_path(&alias("intruder")), None).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&alias_path(&alias("nowhere")), None).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_unicode_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let unicode = alias("café-☕");
    let (status, reply) = server.put(&alias_path(&unicode), alice.tok(), json!({ "room_id": room })).await;
    assert_eq!(status, 200, "{reply}");
    let (status, resolved) = server.get(&alias_path(&unicode), None).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["room_id"], room);
    assert_eq!(server.get(&room_path(&room, "aliases"), alice.tok()).await.1, json!({ "aliases": [unicode] }));
}

#[tokio::test]
async fn deleting_aliases() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    let delete = |user: User, name: &'static str| {
        let server = &server;
        async move { server.request(Method::DELETE, &alias_path(&alias(name)), user.tok(), None).await }
    };
    for name in ["one", "two"] {
        let (status, _) = server.put(&alias_path(&alias(name)), bob.tok(), json!({ "room_id": room })).await;
        assert_eq!(status, 200);
    }

    // Whoever made the alias may delete it.
    let (status, reply) = delete(bob.clone(), "one").await;
    assert_eq!(status, 200, "{reply}");
    assert_error(&server.get(&alias_path(&alias("one")), None).await, 404, "M_NOT_FOUND");
    // Another member without power may not; a room admin may.
    assert_error(&delete(carol.clone(), "two").await, 403, "M_FORBIDDEN");
    let (status, reply) = delete(alice.clone(), "two").await;
    assert_eq!(status, 200, "{reply}");
    assert_error(&delete(alice.clone(), "two").await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_the_canonical_alias_updates_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_alias_name": "main" })).await;
    let (status, _) = server.put(&alias_path(&alias("other")), alice.tok(), json!({ "room_id": room })).await;
    assert_eq!(status, 200);
    set_state(
        &server,
        &alice,
        &room,
        "m.room.canonical_alias",
        json!({ "alias": alias("main"), "alt_aliases": [alias("other")] }),
    )
    .await;

    let (status, reply) = server.request(Method::DELETE, &alias_path(&alias("main")), alice.tok(), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({ "alt_aliases": [alias("other")] })
    );
    let (status, _) = server.request(Method::DELETE, &alias_path(&alias("other")), alice.tok(), None).await;
    assert_eq!(status, 200);
    assert_eq!(state(&server, &alice, &room, "m.room.canonical_alias").await, json!({}));
}

#[tokio::test]
async fn room_aliases_for_members_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (status, reply) = server.get(&room_path(&room, "aliases"), alice.tok()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "aliases": [] }));

    server.put(&alias_path(&alias("a")), alice.tok(), json!({ "room_id": room })).await;
    server.put(&alias_path(&alias("b")), alice.tok(), json!({ "room_id": room })).await;
    let (_, reply) = server.get(&room_path(&room, "aliases"), alice.tok()).await;
    let mut aliases: Vec<&str> = reply["aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    aliases.sort();
    assert_eq!(aliases, [alias("a"), alias("b")]);

    assert_error(&server.get(&room_path(&room, "aliases"), stranger.tok()).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn canonical_alias_must_exist_and_point_to_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_alias_name": "mine" })).await;
    let other = create_room(&server, &alice, json!({ "room_alias_name": "theirs" })).await;
    let path = room_path(&room, "state/m.room.canonical_alias");

    for content in [
        json!({ "alias": alias("missing") }),
        json!({ "alias": alias("theirs") }),
        json!({ "alias": alias("mine"), "alt_aliases": [alias("missing")] }),
        json!({ "alias": alias("mine"), "alt_aliases": [alias("theirs")] }),
    ] {
        assert_error(&server.put(&path, alice.tok(), content).await, 400, "M_BAD_ALIAS");
    }
    for content in [json!({ "alias": "not-an-alias" }), json!({ "alt_aliases": ["#no-server"] })] {
        assert_error(&server.put(&path, alice.tok(), content).await, 400, "M_INVALID_PARAM");
    }
    assert_eq!(state(&server, &alice, &room, "m.room.canonical_alias").await, json!({ "alias": alias("mine") }));
    assert_eq!(state(&server, &alice, &other, "m.room.canonical_alias").await, json!({ "alias": alias("theirs") }));

    let (status, reply) = server.put(&path, alice.tok(), json!({ "alt_aliases": [alias("mine")] })).await;
    assert_eq!(status, 200, "{reply}");
}

// ---------------------------------------------------------------------------------------------
// The room directory

#[tokio::test]
async fn directory_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let path = format!("{V3}/directory/list/room/{room}");
    assert_eq!(server.get(&path, None).await.1, json!({ "visibility": "private" }));

    let (status, reply) = server.put(&path, alice.tok(), json!({ "visibility": "public" })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.get(&path, None).await.1, json!({ "visibility": "public" }));
    assert_eq!(server.get(&format!("{V3}/publicRooms"), None).await.1["chunk"][0]["room_id"], room);

    assert_error(&server.put(&path, bob.tok(), json!({ "visibility": "private" })).await, 403, "M_FORBIDDEN");
    assert_eq!(server.get(&path, None).await.1, json!({ "visibility": "public" }));

    let (status, _) = server.put(&path, alice.tok(), json!({ "visibility": "private" })).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(&format!("{V3}/publicRooms"), None).await.1["chunk"], json!([]));

    let unknown = format!("{V3}/directory/list/room/!nowhere:{SERVER_NAME}");
    assert_error(&server.get(&unknown, None).await, 404, "M_NOT_FOUND");
    assert_error(&server.put(&unknown, alice.tok(), json!({ "visibility": "public" })).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn public_rooms_entries_describe_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let described = create_room(
        &server,
        &alice,
        json!({ "visibility": "public", "name": "Cheese", "topic": "Tasty", "room_alias_name": "cheese" }),
    )
    .await;
    join(&server, &bob, &described).await;
    let initial = json!([
        { "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } },
        { "type": "m.room.guest_access", "content": { "guest_access": "can_join" } },
    ]);
    let bare = create_room(&server, &alice, json!({ "visibility": "public", "initial_state": initial })).await;

    let (status, reply) = server.get(&format!("{V3}/publicRooms"), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["total_room_count_estimate"], 2);
    let chunk = reply["chunk"].as_array().unwrap();
    let entry = |id: &str| chunk.iter().find(|r| r["room_id"] == id).unwrap_or_else(|| panic!("{id}: {reply}"));
    assert_eq!(
        entry(&described),
        &json!({
            "room_id": described,
            "num_joined_members": 2,
            "world_readable": false,
            "guest_can_join": false,
            "join_rule": "public",
            "name": "Cheese",
            "topic": "Tasty",
            "canonical_alias": alias("cheese"),
        })
    );
    let bare_entry = entry(&bare);
    assert_eq!(bare_entry["num_joined_members"], 1);
    assert_eq!(bare_entry["world_readable"], true);
    assert_eq!(bare_entry["guest_can_join"], true);
    for absent in ["name", "topic", "canonical_alias"] {
        assert_eq!(bare_entry.get(absent), None, "{bare_entry}");
    }
    // The most joined first.
    assert_eq!(chunk[0]["room_id"], described);
}

#[tokio::test]
async fn public_rooms_search_matches_name_and_topic_case_insensitively() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let by_name = create_room(&server, &alice, json!({ "visibility": "public", "name": "Cats only" })).await;
    let by_topic = create_room(&server, &alice, json!({ "visibility": "public", "topic": "We love CATS" })).await;
    create_room(&server, &alice, json!({ "visibility": "public", "name": "Dogs", "topic": "woof" })).await;

    let (status, reply) = server
        .post(&format!("{V3}/publicRooms"), alice.tok(), json!({ "filter": { "generic_search_term": "cAtS" } }))
        .await;
    assert_eq!(status, 200, "{reply}");
    let mut found: Vec<&str> =
        reply["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    found.sort();
    let mut expected = [by_name.as_str(), by_topic.as_str()];
    expected.sort();
    assert_eq!(found, expected);

    let (_, reply) = server
        .post(&format!("{V3}/publicRooms"), alice.tok(), json!({ "filter": { "generic_search_term": "parrots" } }))
        .await;
    assert_eq!(reply["chunk"], json!([]));
}

#[tokio::test]
async fn public_rooms_pages_forwards_and_back() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for i in 0..5 {
        create_room(&server, &alice, json!({ "visibility": "public", "name": format!("Room {i}") })).await;
    }
    let page = |query: String| {
        let server = &server;
        async move {
            let (status, reply) = server.get(&format!("{V3}/publicRooms?{query}"), None).await;
            assert_eq!(status, 200, "{query}: {reply}");
            let ids: Vec<String> =
                reply["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect();
            (ids, reply)
        }
    };

    let (first, reply) = page("limit=2".into()).await;
    assert_eq!(first.len(), 2);
    assert_eq!(reply["total_room_count_estimate"], 5);
    assert_eq!(reply.get("prev_batch"), None, "{reply}");
    let next = reply["next_batch"].as_str().unwrap().to_owned();

    let (second, reply) = page(format!("limit=2&since={next}")).await;
    assert_eq!(second.len(), 2);
    let back = reply["prev_batch"].as_str().unwrap().to_owned();
    let next = reply["next_batch"].as_str().unwrap().to_owned();

    let (third, reply) = page(format!("limit=2&since={next}")).await;
    assert_eq!(third.len(), 1);
    assert_eq!(reply.get("next_batch"), None, "{reply}");
    assert!(reply["prev_batch"].is_string(), "{reply}");

    let mut all: Vec<String> = [first.clone(), second, third].concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5);

    assert_eq!(page(format!("limit=2&since={back}")).await.0, first);

    // The same through POST.
    let (status, reply) =
        server.post(&format!("{V3}/publicRooms"), alice.tok(), json!({ "limit": 2, "since": next })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["chunk"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Upgrades

#[tokio::test]
async fn upgrading_a_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let old = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "room_version": "10", "room_alias_name": "up", "name": "Upgrade me" }),
    )
    .await;
    join(&server, &bob, &old).await;
    let upgrade = room_path(&old, "upgrade");

    assert_error(&server.post(&upgrade, bob.tok(), json!({ "new_version": "11" })).await, 403, "M_FORBIDDEN");

    let (status, reply) = server.post(&upgrade, alice.tok(), json!({ "new_version": "11" })).await;
    assert_eq!(status, 200, "{reply}");
    let new = reply["replacement_room"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let tombstone = state(&server, &alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new);
    let create = state(&server, &alice, &new, "m.room.create").await;
    assert_eq!(create["predecessor"]["room_id"], old);
    assert_eq!(create["room_version"], "11");
    assert_eq!(state(&server, &alice, &new, "m.room.name").await["name"], "Upgrade me");

    // The alias moves, with the canonical alias.
    assert_eq!(server.get(&alias_path(&alias("up")), None).await.1["room_id"], new);
    assert_eq!(state(&server, &alice, &new, "m.room.canonical_alias").await["alias"], alias("up"));
    assert_eq!(state(&server, &alice, &old, "m.room.canonical_alias").await, json!({}));

    // The old room is silenced for those without power.
    let power = state(&server, &alice, &old, "m.room.power_levels").await;
    assert!(power["events_default"].as_i64().unwrap() > 0, "{power}");
    let reply = server.put(&room_path(&old, "send/m.room.message/t"), bob.tok(), json!({ "body": "hi" })).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert_eq!(joined_rooms(&server, &alice).await.iter().filter(|r| **r == json!(new)).count(), 1);
}

#[tokio::test]
async fn upgrade_refusals() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let unknown = format!("!nowhere:{SERVER_NAME}");
    for room_id in [&room, &unknown] {
        let reply = server.post(&room_path(room_id, "upgrade"), alice.tok(), json!({ "new_version": "99" })).await;
        assert_error(&reply, 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    let reply = server.post(&room_path(&unknown, "upgrade"), alice.tok(), json!({ "new_version": "11" })).await;
    assert_error(&reply, 404, "M_NOT_FOUND");
    assert_error(&server.get(&room_path(&room, "state/m.room.tombstone"), alice.tok()).await, 404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Account changes reaching rooms

#[tokio::test]
async fn display_name_changes_reach_every_joined_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let rooms = [
        create_room(&server, &alice, json!({})).await,
        create_room(&server, &alice, json!({ "room_version": "10" })).await,
    ];
    let path = format!("{V3}/profile/{}/displayname", alice.user_id);
    let (status, reply) = server.put(&path, alice.tok(), json!({ "displayname": "Alice Liddell" })).await;
    assert_eq!(status, 200, "{reply}");
    for room in &rooms {
        let member = state(&server, &alice, room, &member_key(&alice)).await;
        assert_eq!(member["displayname"], "Alice Liddell", "{room}");
        assert_eq!(member["membership"], "join");
    }
}

#[tokio::test]
async fn display_name_changes_leave_left_rooms_alone() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    leave(&server, &bob, &room).await;
    let before = state(&server, &alice, &room, &format!("{}?format=event", member_key(&bob))).await;
    let path = format!("{V3}/profile/{}/displayname", bob.user_id);
    let (status, _) = server.put(&path, bob.tok(), json!({ "displayname": "Robert" })).await;
    assert_eq!(status, 200);
    let after = state(&server, &alice, &room, &format!("{}?format=event", member_key(&bob))).await;
    assert_eq!(after["event_id"], before["event_id"]);
    assert_eq!(after["content"]["membership"], "leave");
}

#[tokio::test]
async fn deactivated_accounts_leave_their_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let body = json!({ "auth": { "type": "m.login.password", "user": bob.user_id, "password": "pw" } });
    let (status, reply) = server.post(&format!("{V3}/account/deactivate"), bob.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(state(&server, &alice, &room, &member_key(&bob)).await["membership"], "leave");
    let (_, joined) = server.get(&room_path(&room, "joined_members"), alice.tok()).await;
    assert_eq!(joined["joined"].as_object().unwrap().len(), 1);
}
