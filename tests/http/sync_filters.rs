//! Filters: `POST`/`GET /user/{userId}/filter`, and each field of a filter as `/sync` honours it,
//! by ID or inline.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    server::{TestServer, User, assert_error},
    sync::{
        V3, create_room, enc, event_ids, invite, join, joined, leave, members, next_batch, room_path, send, send_text,
        set_of, set_state, shared_room, sync, sync_raw, timeline_ids,
    },
};

/// `/sync` with an inline filter (and `since`, if given).
async fn filtered(server: &TestServer, user: &User, filter: Value, since: Option<&str>) -> Value {
    let filter = filter.to_string();
    match since {
        Some(since) => sync(server, user, &[("filter", &filter), ("since", since)]).await,
        None => sync(server, user, &[("filter", &filter)]).await,
    }
}

fn join_keys(reply: &Value) -> BTreeSet<String> {
    reply["rooms"]["join"].as_object().unwrap().keys().cloned().collect()
}

fn types(events: &Value) -> BTreeSet<String> {
    events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

/// `(type, state_key)` of each state event of a room's `state` section.
fn state_keys(reply: &Value, room: &str) -> BTreeSet<(String, String)> {
    let events = joined(reply, room)["state"]["events"].as_array().unwrap();
    events
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect()
}

fn filter_path(user: &User) -> String {
    format!("{V3}/user/{}/filter", enc(&user.user_id))
}

async fn upload(server: &TestServer, user: &User, filter: Value) -> String {
    let (status, reply) = server.post(&filter_path(user), user.tok(), filter).await;
    assert_eq!(status, 200, "{reply}");
    reply["filter_id"].as_str().unwrap().to_owned()
}

/// Removes what changes with the clock (`unsigned.age`), to compare two answers.
fn without_ages(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("age");
            map.values_mut().for_each(without_ages);
        }
        Value::Array(items) => items.iter_mut().for_each(without_ages),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms

#[tokio::test]
async fn room_rooms_and_not_rooms_choose_the_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let one = create_room(&server, &alice, json!({})).await;
    let two = create_room(&server, &alice, json!({})).await;
    let three = create_room(&server, &alice, json!({})).await;
    let invited = create_room(&server, &bob, json!({})).await;
    invite(&server, &bob, &invited, &alice).await;

    let reply = filtered(&server, &alice, json!({}), None).await;
    assert_eq!(join_keys(&reply), set_of(&[&one, &two, &three]));
    assert!(reply["rooms"]["invite"][&invited].is_object());

    let reply = filtered(&server, &alice, json!({ "room": { "rooms": [one, two] } }), None).await;
    assert_eq!(join_keys(&reply), set_of(&[&one, &two]));
    assert_eq!(reply["rooms"]["invite"], json!({}), "the invite's room is not in the list");
    let reply = filtered(&server, &alice, json!({ "room": { "not_rooms": [one] } }), None).await;
    assert_eq!(join_keys(&reply), set_of(&[&two, &three]));
    assert!(reply["rooms"]["invite"][&invited].is_object());
    // not_rooms wins over rooms.
    let reply = filtered(&server, &alice, json!({ "room": { "rooms": [one, two], "not_rooms": [two] } }), None).await;
    assert_eq!(join_keys(&reply), set_of(&[&one]));
    let reply = filtered(&server, &alice, json!({ "room": { "rooms": [] } }), None).await;
    assert_eq!(join_keys(&reply), BTreeSet::new());

    // Incremental syncs too.
    let since = next_batch(&reply);
    send_text(&server, &alice, &one, "in one").await;
    send_text(&server, &alice, &two, "in two").await;
    let reply = filtered(&server, &alice, json!({ "room": { "rooms": [two] } }), Some(&since)).await;
    assert_eq!(join_keys(&reply), set_of(&[&two]));
}

#[tokio::test]
async fn include_leave_brings_left_rooms_into_an_initial_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let said = send_text(&server, &alice, &room, "bye bob").await;
    leave(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "after bob left").await;

    let reply = filtered(&server, &bob, json!({}), None).await;
    assert_eq!(reply["rooms"]["leave"], json!({}), "{reply}");
    let reply = filtered(&server, &bob, json!({ "room": { "include_leave": true } }), None).await;
    let timeline = &reply["rooms"]["leave"][&room]["timeline"]["events"];
    let ids = event_ids(timeline);
    assert_eq!(ids[ids.len() - 2], said, "the timeline stops at the departure");
    let departure = timeline.as_array().unwrap().last().unwrap();
    assert_eq!((&departure["state_key"], &departure["content"]["membership"]), (&json!(bob.user_id), &json!("leave")));
    // Room lists apply to left rooms too.
    let reply = filtered(&server, &bob, json!({ "room": { "include_leave": true, "not_rooms": [room] } }), None).await;
    assert_eq!(reply["rooms"]["leave"], json!({}));
}

// ---------------------------------------------------------------------------------------------
// Timeline

#[tokio::test]
async fn timeline_filter_fields_each_apply() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let other = shared_room(&server, &alice, &[&bob]).await;
    let since = next_batch(&filtered(&server, &alice, json!({}), None).await);

    let b1 = send_text(&server, &bob, &room, "b1").await;
    let a1 = send_text(&server, &alice, &room, "a1").await;
    let topic = set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "t" })).await;
    let custom = send(&server, &bob, &room, "org.example.custom", json!({ "x": 1 })).await;
    let image = json!({ "msgtype": "m.image", "body": "cat.png", "url": "mxc://test.local/cat" });
    let picture = send(&server, &bob, &room, "m.room.message", image).await;
    let elsewhere = send_text(&server, &bob, &other, "elsewhere").await;
    let all = [&b1, &a1, &topic, &custom, &picture];
    let pick = |wanted: &[&String]| wanted.iter().map(|s| (*s).clone()).collect::<Vec<_>>();

    // (timeline filter, what the room shows, whether bob's message in the other room passes)
    let cases = [
        (json!({}), pick(&all), true),
        (json!({ "limit": 2 }), pick(&[&custom, &picture]), true),
        (json!({ "types": ["m.room.message"] }), pick(&[&b1, &a1, &picture]), true),
        (json!({ "types": ["m.room.*"] }), pick(&[&b1, &a1, &topic, &picture]), true),
        (json!({ "types": ["*.custom", "m.room.topic"] }), pick(&[&topic, &custom]), false),
        (json!({ "not_types": ["m.room.message"] }), pick(&[&topic, &custom]), false),
        (json!({ "not_types": ["m.room.*"] }), pick(&[&custom]), false),
        (json!({ "types": ["m.room.*"], "not_types": ["m.room.message"] }), pick(&[&topic]), false),
        (json!({ "senders": [bob.user_id] }), pick(&[&b1, &custom, &picture]), true),
        (json!({ "not_senders": [bob.user_id] }), pick(&[&a1, &topic]), false),
        (
            json!({ "senders": [alice.user_id, bob.user_id], "not_senders": [alice.user_id] }),
            pick(&[&b1, &custom, &picture]),
            true,
        ),
        (json!({ "contains_url": true }), pick(&[&picture]), false),
        (json!({ "contains_url": false }), pick(&[&b1, &a1, &topic, &custom]), true),
        (json!({ "rooms": [room] }), pick(&all), false),
        (json!({ "not_rooms": [other] }), pick(&all), false),
        (json!({ "rooms": [other] }), vec![], true),
        (json!({ "not_rooms": [room] }), vec![], true),
    ];
    for (timeline, expected, other_passes) in cases {
        let reply = filtered(&server, &alice, json!({ "room": { "timeline": timeline } }), Some(&since)).await;
        assert_eq!(timeline_ids(&reply, &room), expected, "timeline filter {timeline}");
        let limited = joined(&reply, &room)["timeline"]["limited"].as_bool().unwrap_or(false);
        assert_eq!(limited, timeline.get("limit").is_some(), "{timeline}");
        let in_other = if other_passes { vec![elsewhere.clone()] } else { vec![] };
        assert_eq!(timeline_ids(&reply, &other), in_other, "the other room, with {timeline}");
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[tokio::test]
async fn state_filter_fields_each_apply() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let body = json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } });
    let room = create_room(&server, &alice, body).await;
    join(&server, &bob, &room).await;
    set_state(&server, &alice, &room, "m.room.name", json!({ "name": "Garden" })).await;
    set_state(&server, &bob, &room, &format!("org.example.flag/{}", enc(&bob.user_id)), json!({ "up": true })).await;
    send_text(&server, &alice, &room, "last").await;

    let state_of = |filter: Value| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let body = json!({ "room": { "timeline": { "limit": 1 }, "state": filter } });
            state_keys(&filtered(server, alice, body, None).await, room)
        }
    };
    let key = |kind: &str, key: &str| (kind.to_owned(), key.to_owned());
    let everything = state_of(json!({})).await;
    for wanted in [
        key("m.room.create", ""),
        key("m.room.name", ""),
        key("m.room.member", &alice.user_id),
        key("m.room.member", &bob.user_id),
        key("org.example.flag", &bob.user_id),
    ] {
        assert!(everything.contains(&wanted), "{wanted:?} in {everything:?}");
    }
    let only =
        |f: &dyn Fn(&(String, String)) -> bool| everything.iter().filter(|k| f(k)).cloned().collect::<BTreeSet<_>>();

    assert_eq!(state_of(json!({ "types": ["m.room.name"] })).await, only(&|k| k.0 == "m.room.name"));
    assert_eq!(state_of(json!({ "types": ["m.room.*"] })).await, only(&|k| k.0.starts_with("m.room.")));
    assert_eq!(state_of(json!({ "not_types": ["m.room.member"] })).await, only(&|k| k.0 != "m.room.member"));
    assert_eq!(
        state_of(json!({ "types": ["m.room.*"], "not_types": ["m.room.member", "m.room.name"] })).await,
        only(&|k| k.0.starts_with("m.room.") && k.0 != "m.room.member" && k.0 != "m.room.name")
    );
    // Bob sent his join and his flag; alice everything else.
    let from_bob = BTreeSet::from([key("m.room.member", &bob.user_id), key("org.example.flag", &bob.user_id)]);
    assert_eq!(state_of(json!({ "senders": [bob.user_id] })).await, from_bob);
    assert_eq!(state_of(json!({ "not_senders": [alice.user_id] })).await, from_bob);
    assert_eq!(state_of(json!({ "not_senders": [bob.user_id] })).await, only(&|k| !from_bob.contains(k)));
    assert_eq!(state_of(json!({ "rooms": [room] })).await, everything);
    assert_eq!(state_of(json!({ "not_rooms": [room] })).await, BTreeSet::new());
    assert_eq!(state_of(json!({ "rooms": ["!elsewhere:test.local"] })).await, BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------
// Ephemeral, account data, presence

#[tokio::test]
async fn ephemeral_filter_types_and_not_types() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = next_batch(&filtered(&server, &alice, json!({}), None).await);
    let said = send_text(&server, &bob, &room, "typing next").await;
    let (status, reply) =
        server.post(&room_path(&room, &format!("receipt/m.read/{}", enc(&said))), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let typing = json!({ "typing": true, "timeout": 30000 });
    let (status, reply) =
        server.put(&room_path(&room, &format!("typing/{}", enc(&bob.user_id))), bob.tok(), typing).await;
    assert_eq!(status, 200, "{reply}");

    let ephemeral_of = |filter: Value| {
        let (server, alice, room, since) = (&server, &alice, &room, &since);
        async move {
            let reply = filtered(server, alice, json!({ "room": { "ephemeral": filter } }), Some(since)).await;
            types(&joined(&reply, room)["ephemeral"]["events"])
        }
    };
    assert_eq!(ephemeral_of(json!({})).await, set_of(&["m.typing", "m.receipt"]));
    assert_eq!(ephemeral_of(json!({ "types": ["m.typing"] })).await, set_of(&["m.typing"]));
    assert_eq!(ephemeral_of(json!({ "not_types": ["m.typing"] })).await, set_of(&["m.receipt"]));
    assert_eq!(ephemeral_of(json!({ "types": ["m.*"], "not_types": ["m.receipt"] })).await, set_of(&["m.typing"]));
    assert_eq!(ephemeral_of(json!({ "types": [] })).await, BTreeSet::new());
    assert_eq!(ephemeral_of(json!({ "not_rooms": [room] })).await, BTreeSet::new());
}

#[tokio::test]
async fn room_and_global_account_data_filters() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    for kind in ["org.example.a", "org.example.b", "com.other.c"] {
        let room_data = format!("{V3}/user/{}/rooms/{}/account_data/{kind}", enc(&alice.user_id), enc(&room));
        let (status, reply) = server.put(&room_data, alice.tok(), json!({ "in": "room" })).await;
        assert_eq!(status, 200, "{reply}");
        let global = format!("{V3}/user/{}/account_data/{kind}", enc(&alice.user_id));
        let (status, reply) = server.put(&global, alice.tok(), json!({ "in": "global" })).await;
        assert_eq!(status, 200, "{reply}");
    }
    let ours = |found: BTreeSet<String>| found.into_iter().filter(|t| t != "m.push_rules").collect::<BTreeSet<_>>();
    let all = set_of(&["org.example.a", "org.example.b", "com.other.c"]);

    let room_data = |filter: Value| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let reply = filtered(server, alice, json!({ "room": { "account_data": filter } }), None).await;
            types(&joined(&reply, room)["account_data"]["events"])
        }
    };
    assert_eq!(room_data(json!({})).await, all);
    assert_eq!(room_data(json!({ "types": ["org.example.a"] })).await, set_of(&["org.example.a"]));
    assert_eq!(room_data(json!({ "types": ["org.example.*"] })).await, set_of(&["org.example.a", "org.example.b"]));
    assert_eq!(room_data(json!({ "not_types": ["org.example.*"] })).await, set_of(&["com.other.c"]));
    assert_eq!(room_data(json!({ "not_rooms": [room] })).await, BTreeSet::new());
    assert_eq!(room_data(json!({ "rooms": [room] })).await, all);

    let global = |filter: Value| {
        let (server, alice) = (&server, &alice);
        async move {
            types(&filtered(server, alice, json!({ "account_data": filter }), None).await["account_data"]["events"])
        }
    };
    assert_eq!(ours(global(json!({})).await), all);
    assert_eq!(global(json!({ "types": ["org.example.b"] })).await, set_of(&["org.example.b"]));
    assert_eq!(ours(global(json!({ "not_types": ["org.example.*"] })).await), set_of(&["com.other.c"]));
    assert_eq!(global(json!({ "types": [] })).await, BTreeSet::new());
    // The two are separate: the top-level filter does not touch room account data.
    let reply = filtered(&server, &alice, json!({ "account_data": { "types": [] } }), None).await;
    assert_eq!(types(&joined(&reply, &room)["account_data"]["events"]), all);
}

#[tokio::test]
async fn presence_filter_types_and_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    shared_room(&server, &alice, &[&bob, &carol]).await;
    let since = next_batch(&filtered(&server, &alice, json!({}), None).await);
    sync(&server, &bob, &[]).await;
    sync(&server, &carol, &[]).await;

    let senders = |filter: Value| {
        let (server, alice, since) = (&server, &alice, &since);
        async move {
            let reply = filtered(server, alice, json!({ "presence": filter }), Some(since)).await;
            let events = reply["presence"]["events"].as_array().unwrap().clone();
            assert!(events.iter().all(|e| e["type"] == "m.presence" && e["content"]["presence"] == "online"));
            events.iter().map(|e| e["sender"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>()
        }
    };
    let both = set_of(&[&bob.user_id, &carol.user_id]);
    assert_eq!(senders(json!({})).await, both);
    assert_eq!(senders(json!({ "types": ["m.presence"] })).await, both);
    assert_eq!(senders(json!({ "types": ["m.*"] })).await, both);
    assert_eq!(senders(json!({ "types": [] })).await, BTreeSet::new());
    assert_eq!(senders(json!({ "not_types": ["m.presence"] })).await, BTreeSet::new());
    assert_eq!(senders(json!({ "senders": [bob.user_id] })).await, set_of(&[&bob.user_id]));
    assert_eq!(senders(json!({ "not_senders": [bob.user_id] })).await, set_of(&[&carol.user_id]));
}

// ---------------------------------------------------------------------------------------------
// Stored filters

#[tokio::test]
async fn an_uploaded_filter_and_the_same_filter_inline_behave_the_same() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;
    let other = shared_room(&server, &alice, &[]).await;
    for i in 0..4 {
        send_text(&server, if i % 2 == 0 { &bob } else { &carol }, &room, &format!("m{i}")).await;
    }
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "t" })).await;
    let filter = json!({
        "room": {
            "not_rooms": [other],
            "timeline": { "limit": 3, "not_types": ["m.room.topic"] },
            "state": { "lazy_load_members": true, "not_types": ["m.room.power_levels"] },
            "ephemeral": { "types": [] },
        },
        "presence": { "types": [] },
        "account_data": { "not_types": ["m.push_rules"] },
    });

    let id = upload(&server, &alice, filter.clone()).await;
    let (status, stored) = server.get(&format!("{}/{}", filter_path(&alice), enc(&id)), alice.tok()).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored, filter, "GET gives the filter back as uploaded");
    assert_eq!(upload(&server, &alice, filter.clone()).await, id, "the same filter, the same ID");

    let inline = filter.to_string();
    let mut by_id = sync(&server, &alice, &[("filter", &id)]).await;
    let mut by_json = sync(&server, &alice, &[("filter", &inline)]).await;
    without_ages(&mut by_id);
    without_ages(&mut by_json);
    assert_eq!(by_id, by_json);
    // And the filter did filter.
    assert_eq!(join_keys(&by_id), set_of(&[&room]));
    assert_eq!(event_ids(&joined(&by_id, &room)["timeline"]["events"]).len(), 3);
    assert_eq!(
        members(&joined(&by_id, &room)["state"]["events"]),
        set_of(&[&alice.user_id, &bob.user_id, &carol.user_id])
    );
    assert!(!types(&joined(&by_id, &room)["state"]["events"]).contains("m.room.power_levels"));
    assert_eq!(by_id["presence"]["events"], json!([]));

    // Incremental too.
    let since = next_batch(&by_id);
    send_text(&server, &bob, &room, "later").await;
    let mut by_id = sync(&server, &alice, &[("filter", &id), ("since", &since)]).await;
    let mut by_json = sync(&server, &alice, &[("filter", &inline), ("since", &since)]).await;
    without_ages(&mut by_id);
    without_ages(&mut by_json);
    assert_eq!(by_id["rooms"], by_json["rooms"]);
    assert_eq!(timeline_ids(&by_id, &room).len(), 1);
}

#[tokio::test]
async fn filters_are_private_to_their_owner() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let id = upload(&server, &alice, json!({ "room": { "timeline": { "limit": 1 } } })).await;
    let path = format!("{}/{}", filter_path(&alice), enc(&id));
    assert_error(&server.get(&path, bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(&filter_path(&alice), bob.tok(), json!({})).await, 403, "M_FORBIDDEN");
    // Bob cannot use alice's filter ID either: to him it does not exist.
    assert_error(&sync_raw(&server, &bob, &[("filter", &id)]).await, 400, "M_INVALID_PARAM");
    let unknown = format!("{}/{}", filter_path(&alice), "0123456789abcdef");
    assert_error(&server.get(&unknown, alice.tok()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn bad_filters_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    // Filter IDs are derived from the content (the first 8 bytes of the SHA-256 of its JSON),
    // which lets us ask for what a refused filter would have been stored as.
    let id_of = |filter: &Value| hex::encode(&Sha256::digest(filter.to_string().as_bytes())[..8]);
    let good = json!({ "room": { "timeline": { "limit": 5 } } });
    assert_eq!(upload(&server, &alice, good.clone()).await, id_of(&good), "the derivation the test relies on");

    for bad in [
        json!({ "room": { "timeline": { "limit": "ten" } } }),
        json!({ "room": { "timeline": { "limit": -1 } } }),
        json!({ "room": { "rooms": ["not a room ID"] } }),
        json!({ "room": { "timeline": { "senders": ["bob"] } } }),
        json!({ "room": { "state": { "types": [1, 2] } } }),
        json!({ "room": { "include_leave": "yes" } }),
        json!({ "presence": { "not_senders": "@bob:test.local" } }),
        json!({ "account_data": [] }),
        json!({ "room": { "timeline": [] } }),
        json!({ "event_format": "xml" }),
        json!({ "event_fields": "content.body" }),
    ] {
        let reply = server.post(&filter_path(&alice), alice.tok(), bad.clone()).await;
        assert_error(&reply, 400, "M_BAD_JSON");
        let path = format!("{}/{}", filter_path(&alice), id_of(&bad));
        assert_error(&server.get(&path, alice.tok()).await, 404, "M_NOT_FOUND");
        // Inline, the same filters are refused by /sync.
        assert_error(&sync_raw(&server, &alice, &[("filter", &bad.to_string())]).await, 400, "M_BAD_JSON");
    }
    assert_error(&server.post(&filter_path(&alice), alice.tok(), json!([1])).await, 400, "M_BAD_JSON");
    assert_error(&sync_raw(&server, &alice, &[("filter", "{not json")]).await, 400, "M_BAD_JSON");
    // An unknown filter ID is a bad parameter (as Synapse answers).
    assert_error(&sync_raw(&server, &alice, &[("filter", "nope")]).await, 400, "M_INVALID_PARAM");
}
