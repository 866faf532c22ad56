//! The authorization rules of the room versions, as a client meets them: each test shows the server
//! applying one rule (cited from the spec's text) through the client-server API. Rooms are version
//! 12 unless a test says otherwise, so rule numbers are version 12's unless they name a version.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{SERVER_NAME, TestServer, User, assert_error};

// ----- membership -----

/// v12 auth rule 5.3.6: if the `join_rule` is `public`, allow.
#[tokio::test]
async fn anyone_may_join_a_public_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "room_alias_name": "lobby" })).await;

    let (status, reply) = join(&server, &bob, &room).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room.as_str());
    // By alias too (`#` must be encoded in a path).
    let (status, reply) =
        server.post(&format!("/_matrix/client/v3/join/%23lobby:{SERVER_NAME}"), carol.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room.as_str());

    assert_eq!(membership(&server, &alice, &room, &bob).await, "join");
    let (_, joined) = server.get(&rooms(&room, "joined_members"), alice.tok()).await;
    let joined = joined["joined"].as_object().unwrap();
    assert!([&alice, &bob, &carol].iter().all(|u| joined.contains_key(&u.user_id)), "{joined:?}");
    assert_eq!(server.get("/_matrix/client/v3/joined_rooms", bob.tok()).await.1["joined_rooms"], json!([room]));
}

/// v12 auth rules 5.3.4 and 5.3.7: under the `invite` join rule, a join is allowed only if the user
/// is invited (or joined already); otherwise it is rejected.
#[tokio::test]
async fn joining_an_invite_only_room_needs_an_invite() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;

    assert_error(&join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, Value::Null);

    assert_eq!(act(&server, &alice, &room, "invite", &bob).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "invite");
    let (status, reply) = join(&server, &bob, &room).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "join");
}

/// v12 auth rules 5.3.3 (if the sender is banned, reject a join) and 5.4.3 (if the target user is
/// banned, reject an invite).
#[tokio::test]
async fn a_banned_user_can_neither_join_nor_be_invited() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;

    // A ban needs no membership of the target: bob is banned before he ever came.
    assert_eq!(act(&server, &alice, &room, "ban", &bob).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "ban");

    // 403 M_BAD_STATE, as Synapse answers (the spec only asks for a meaningful code).
    assert_refused(&join(&server, &bob, &room).await, &["M_BAD_STATE"]);
    assert_refused(&act(&server, &alice, &room, "invite", &bob).await, &["M_BAD_STATE"]);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "ban");
}

/// v12 auth rule 5.6.2: a ban is allowed if the sender's level is at least the ban level and the
/// target's level is less than the sender's.
#[tokio::test]
async fn banning_needs_the_ban_level_and_more_power_than_the_target() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol, dave] = users(&server, ["bob", "carol", "dave"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol, &dave]).await;

    // Level 0 is below the default ban level of 50.
    assert_error(&act(&server, &bob, &room, "ban", &dave).await, 403, "M_FORBIDDEN");

    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(50);
        pl["users"][&carol.user_id] = json!(50);
    })
    .await;
    // Equal power is not enough.
    assert_error(&act(&server, &bob, &room, "ban", &carol).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &carol).await, "join");
    assert_eq!(act(&server, &bob, &room, "ban", &dave).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &dave).await, "ban");

    // The ban level is the room's to choose.
    set_power(&server, &alice, &room, |pl| pl["ban"] = json!(60)).await;
    assert_error(&act(&server, &carol, &room, "ban", &bob).await, 403, "M_FORBIDDEN");
}

/// v12 auth rule 5.5.4: a kick (a `leave` for someone else) is allowed if the sender's level is at
/// least the kick level and the target's level is less than the sender's.
#[tokio::test]
async fn kicking_needs_the_kick_level_and_more_power_than_the_target() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol, dave] = users(&server, ["bob", "carol", "dave"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol, &dave]).await;

    assert_error(&act(&server, &bob, &room, "kick", &dave).await, 403, "M_FORBIDDEN");

    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(50);
        pl["users"][&carol.user_id] = json!(50);
    })
    .await;
    assert_error(&act(&server, &bob, &room, "kick", &carol).await, 403, "M_FORBIDDEN");
    assert_eq!(act(&server, &bob, &room, "kick", &dave).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &dave).await, "leave");
    // A kicked user may come back to a public room.
    assert_eq!(join(&server, &dave, &room).await.0, 200);

    set_power(&server, &alice, &room, |pl| pl["kick"] = json!(75)).await;
    assert_error(&act(&server, &bob, &room, "kick", &dave).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &dave).await, "join");
}

/// The spec's `/kick`: 403 when "the kickee is not currently in the room" (the auth rules alone
/// would let a `leave` replace a `leave`).
#[tokio::test]
async fn kicking_someone_who_is_not_in_the_room_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let room = public_room_with(&server, &alice, &[&carol]).await;

    assert_error(&act(&server, &alice, &room, "kick", &bob).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, Value::Null);
    // Nor someone who has left.
    assert_eq!(server.post(&rooms(&room, "leave"), carol.tok(), json!({})).await.0, 200);
    assert_error(&act(&server, &alice, &room, "kick", &carol).await, 403, "M_FORBIDDEN");
}

/// v12 auth rules 5.5.3 and 5.5.4: lifting a ban (`ban` to `leave`) needs the ban level as well as
/// the kick level and more power than the target ("To unban somebody, you must have power level
/// greater than or equal to both the kick *and* ban levels").
#[tokio::test]
async fn unbanning_needs_both_the_ban_and_kick_levels() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol]).await;
    assert_eq!(act(&server, &alice, &room, "ban", &bob).await.0, 200);

    assert_error(&act(&server, &carol, &room, "unban", &bob).await, 403, "M_FORBIDDEN");
    // At the kick level but below the ban level: still no.
    set_power(&server, &alice, &room, |pl| {
        pl["ban"] = json!(75);
        pl["users"][&carol.user_id] = json!(50);
    })
    .await;
    assert_error(&act(&server, &carol, &room, "unban", &bob).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "ban");

    assert_eq!(act(&server, &alice, &room, "unban", &bob).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "leave");
    assert_eq!(join(&server, &bob, &room).await.0, 200);
}

/// Unbanning someone who is not banned is refused (Synapse: 403 `M_BAD_STATE`, "Cannot unban user
/// who was not banned"); without the check it would kick them.
#[tokio::test]
async fn unbanning_someone_who_is_not_banned_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    assert_error(&act(&server, &alice, &room, "unban", &bob).await, 403, "M_BAD_STATE");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "join");
}

/// v12 auth rules 5.5.1 (a user may leave if invited, joined or knocking) and 6 (once out, the
/// sender's membership is not `join`: their events are rejected).
#[tokio::test]
async fn leaving_a_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    let (status, reply) = server.post(&rooms(&room, "leave"), bob.tok(), json!({ "reason": "bye" })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "leave");
    assert_eq!(server.get("/_matrix/client/v3/joined_rooms", bob.tok()).await.1["joined_rooms"], json!([]));
    assert_error(&send(&server, &bob, &room, json!({ "msgtype": "m.text", "body": "hi" })).await, 403, "M_FORBIDDEN");
    // Leaving twice: the current membership is `leave`, not `invite` or `join`.
    assert_error(&server.post(&rooms(&room, "leave"), bob.tok(), json!({})).await, 403, "M_FORBIDDEN");
}

/// v12 auth rule 5.5.1: "If the `sender` matches `state_key`, allow if and only if that user's
/// current membership state is `invite`, `join`, or `knock`" — so `/leave` rejects an invite.
#[tokio::test]
async fn rejecting_an_invite_with_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    assert_eq!(membership(&server, &alice, &room, &bob).await, "invite");

    assert_eq!(server.post(&rooms(&room, "leave"), bob.tok(), json!({})).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "leave");
    // The invite is spent: the room is invite-only again for bob.
    assert_error(&join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
}

/// v12 auth rules 5.4.2 (the inviter must be joined) and 5.4.3 (the target must not be joined):
/// nobody can invite themselves, from outside or from inside.
#[tokio::test]
async fn a_user_cannot_invite_themselves() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;

    assert_error(&act(&server, &bob, &room, "invite", &bob).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, Value::Null);
    assert_error(&act(&server, &alice, &room, "invite", &alice).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &alice).await, "join");
}

/// v12 auth rule 5.4.3: if the target user's current membership state is `join`, reject an invite.
#[tokio::test]
async fn inviting_a_joined_user_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    assert_error(&act(&server, &alice, &room, "invite", &bob).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "join");
}

/// v12 auth rule 5.4.4: an invite is allowed if the sender's level is at least the invite level.
#[tokio::test]
async fn inviting_needs_the_invite_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol, dave] = users(&server, ["bob", "carol", "dave"]).await;

    // `public_chat` leaves the invite level at 50.
    let public = public_room_with(&server, &alice, &[&bob]).await;
    assert_eq!(power_levels(&server, &alice, &public).await["invite"], 50);
    assert_error(&act(&server, &bob, &public, "invite", &carol).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &public, &carol).await, Value::Null);
    set_power(&server, &alice, &public, |pl| pl["invite"] = json!(0)).await;
    assert_eq!(act(&server, &bob, &public, "invite", &carol).await.0, 200);

    // `private_chat` sets it to 0, so any member may invite.
    let private = create_room(&server, &alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    assert_eq!(power_levels(&server, &alice, &private).await["invite"], 0);
    assert_eq!(join(&server, &bob, &private).await.0, 200);
    assert_eq!(act(&server, &bob, &private, "invite", &dave).await.0, 200);
    assert_eq!(membership(&server, &alice, &private, &dave).await, "invite");
}

/// v12 auth rules 5.7.1–5.7.3 (a knock is allowed under the `knock` join rule from someone not
/// banned, invited or joined) and 5.3.4 (under `knock`, joining still needs an invite).
#[tokio::test]
async fn knocking_asks_for_an_invite() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "private_chat", "initial_state": [join_rule_state(json!({ "join_rule": "knock" }))] }),
    )
    .await;

    assert_error(&join(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    let (status, reply) = knock(&server, &bob, &room).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["room_id"], room.as_str());
    assert_eq!(membership(&server, &alice, &room, &bob).await, "knock");
    // A knock is not an invite.
    assert_error(&join(&server, &bob, &room).await, 403, "M_FORBIDDEN");

    assert_eq!(act(&server, &alice, &room, "invite", &bob).await.0, 200);
    assert_error(&knock(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    assert_error(&knock(&server, &bob, &room).await, 403, "M_FORBIDDEN");
}

/// v12 auth rule 5.5.1: a knocking user may withdraw the knock with `leave`.
#[tokio::test]
async fn a_knock_can_be_withdrawn_and_banned_users_cannot_knock() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "private_chat", "initial_state": [join_rule_state(json!({ "join_rule": "knock" }))] }),
    )
    .await;

    assert_eq!(knock(&server, &bob, &room).await.0, 200);
    assert_eq!(server.post(&rooms(&room, "leave"), bob.tok(), json!({})).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "leave");

    // v12 auth rule 5.7.3: "If the sender's current membership is not ban, invite, or join,
    // allow. Otherwise, reject."
    assert_eq!(act(&server, &alice, &room, "ban", &bob).await.0, 200);
    assert_error(&knock(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, "ban");
}

/// v12 auth rule 5.7.1: if the `join_rule` is anything other than `knock` or `knock_restricted`,
/// reject a knock.
#[tokio::test]
async fn knocking_on_an_invite_only_room_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;

    assert_error(&knock(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, Value::Null);
}

/// v6 auth rule 4.6: there is no `knock` membership before room version 7 ("Otherwise, the
/// membership is unknown. Reject."), even under a `knock` join rule.
#[tokio::test]
async fn knocking_needs_room_version_7() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "room_version": "6", "initial_state": [join_rule_state(json!({ "join_rule": "knock" }))] }),
    )
    .await;

    assert_error(&knock(&server, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &bob).await, Value::Null);

    // The same in version 7 is a knock.
    let room = create_room(
        &server,
        &alice,
        json!({ "room_version": "7", "initial_state": [join_rule_state(json!({ "join_rule": "knock" }))] }),
    )
    .await;
    assert_eq!(knock(&server, &bob, &room).await.0, 200);
}

/// v12 auth rule 5.3.5: under the `restricted` join rule, a user who is not invited may join when a
/// member who may invite vouches for them (`join_authorised_via_users_server`); the server does so
/// for members of a room the join rule allows, and for nobody else.
#[tokio::test]
async fn restricted_rooms_admit_members_of_the_allowed_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol, dave] = users(&server, ["bob", "carol", "dave"]).await;
    let space = public_room_with(&server, &alice, &[&bob]).await;
    let room = create_room(
        &server,
        &alice,
        json!({ "initial_state": [join_rule_state(json!({
            "join_rule": "restricted",
            "allow": [{ "type": "m.room_membership", "room_id": space }],
        }))] }),
    )
    .await;

    let (status, reply) = join(&server, &bob, &room).await;
    assert_eq!(status, 200, "{reply}");
    let (_, member) = server.get(&rooms(&room, &format!("state/m.room.member/{}", bob.user_id)), bob.tok()).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());

    assert_error(&join(&server, &carol, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &room, &carol).await, Value::Null);

    // 5.3.5.1: an invite admits anyone.
    assert_eq!(act(&server, &alice, &room, "invite", &dave).await.0, 200);
    assert_eq!(join(&server, &dave, &room).await.0, 200);
}

/// v12 auth rules 5.3.5 and 5.7.1: under `knock_restricted` (room version 10 on), members of an
/// allowed room join directly and anyone else may knock.
#[tokio::test]
async fn knock_restricted_rooms_admit_members_and_take_knocks() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let space = public_room_with(&server, &alice, &[&bob]).await;
    let room = create_room(
        &server,
        &alice,
        json!({ "initial_state": [join_rule_state(json!({
            "join_rule": "knock_restricted",
            "allow": [{ "type": "m.room_membership", "room_id": space }],
        }))] }),
    )
    .await;

    assert_eq!(join(&server, &bob, &room).await.0, 200);
    assert_error(&join(&server, &carol, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(knock(&server, &carol, &room).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &carol).await, "knock");
}

/// v7 auth rule 4.2.6: the `restricted` join rule only exists from room version 8; before, a join
/// under it is rejected ("Otherwise, reject") whatever rooms the user is in.
#[tokio::test]
async fn restricted_join_rule_needs_room_version_8() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let space = public_room_with(&server, &alice, &[&bob]).await;
    let restricted = join_rule_state(json!({
        "join_rule": "restricted",
        "allow": [{ "type": "m.room_membership", "room_id": space }],
    }));

    let v7 = create_room(&server, &alice, json!({ "room_version": "7", "initial_state": [restricted] })).await;
    assert_error(&join(&server, &bob, &v7).await, 403, "M_FORBIDDEN");
    let v8 = create_room(&server, &alice, json!({ "room_version": "8", "initial_state": [restricted] })).await;
    assert_eq!(join(&server, &bob, &v8).await.0, 200);
}

// ----- power levels -----

/// v12 auth rule 8: if the event type's required power level (`state_default` for state events not
/// listed in `events`) is greater than the sender's power level, reject.
#[tokio::test]
async fn sending_state_needs_the_state_default_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await, 403, "M_FORBIDDEN");
    assert_error(&put_state(&server, &bob, &room, "com.example.thing/", json!({})).await, 403, "M_FORBIDDEN");
    set_power(&server, &alice, &room, |pl| pl["state_default"] = json!(0)).await;
    assert_eq!(put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await.0, 200);
    assert_eq!(put_state(&server, &bob, &room, "com.example.thing/", json!({})).await.0, 200);
}

/// v12 auth rule 8, with the `events` map: a type listed there needs its own level, whatever
/// `state_default` or `events_default` say.
#[tokio::test]
async fn events_overrides_the_level_per_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    assert_eq!(power_levels(&server, &alice, &room).await["events"]["m.room.name"], 50);

    set_power(&server, &alice, &room, |pl| pl["state_default"] = json!(0)).await;
    assert_eq!(put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "t" })).await.0, 200);
    assert_error(&put_state(&server, &bob, &room, "m.room.name", json!({ "name": "n" })).await, 403, "M_FORBIDDEN");

    set_power(&server, &alice, &room, |pl| {
        pl["events"]["m.room.name"] = json!(0);
        pl["events"]["m.room.topic"] = json!(20);
        pl["events"]["m.reaction"] = json!(20);
    })
    .await;
    assert_eq!(put_state(&server, &bob, &room, "m.room.name", json!({ "name": "n" })).await.0, 200);
    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "u" })).await, 403, "M_FORBIDDEN");
    // Message types are listed in the same map.
    assert_error(&send_kind(&server, &bob, &room, "m.reaction", json!({})).await, 403, "M_FORBIDDEN");
    assert_eq!(send(&server, &bob, &room, json!({ "msgtype": "m.text", "body": "still fine" })).await.0, 200);
}

/// v12 auth rule 8 for message events: their required level is `events_default` unless the type
/// is listed in `events`.
#[tokio::test]
async fn events_default_governs_messages() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    let text = json!({ "msgtype": "m.text", "body": "hello" });

    assert_eq!(send(&server, &bob, &room, text.clone()).await.0, 200);
    set_power(&server, &alice, &room, |pl| pl["events_default"] = json!(10)).await;
    assert_error(&send(&server, &bob, &room, text.clone()).await, 403, "M_FORBIDDEN");
    assert_error(&send_kind(&server, &bob, &room, "com.example.ping", json!({})).await, 403, "M_FORBIDDEN");
    set_power(&server, &alice, &room, |pl| pl["events"]["m.room.message"] = json!(0)).await;
    assert_eq!(send(&server, &bob, &room, text).await.0, 200);
    assert_error(&send_kind(&server, &bob, &room, "com.example.ping", json!({})).await, 403, "M_FORBIDDEN");
}

/// "Power levels are inferred from defaults when not explicitly supplied": a user not listed in
/// `users` has the `users_default` level.
#[tokio::test]
async fn users_default_is_the_level_of_unlisted_users() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await, 403, "M_FORBIDDEN");
    set_power(&server, &alice, &room, |pl| pl["users_default"] = json!(50)).await;
    assert_eq!(put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await.0, 200);
    // A listed level beats the default, even a lower one.
    set_power(&server, &alice, &room, |pl| pl["users"][&bob.user_id] = json!(10)).await;
    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "y" })).await, 403, "M_FORBIDDEN");
}

/// v12 auth rule 10.10: for each entry added to or changed in `users`, if the new value is greater
/// than the sender's level, reject — for others and for the sender alike.
#[tokio::test]
async fn nobody_can_give_more_power_than_they_have() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol]).await;
    // bob is a moderator who may send power levels.
    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(50);
        pl["events"]["m.room.power_levels"] = json!(50);
    })
    .await;

    let before = power_levels(&server, &alice, &room).await;
    let mut raised = before.clone();
    raised["users"][&carol.user_id] = json!(51);
    assert_error(&put_state(&server, &bob, &room, "m.room.power_levels", raised).await, 403, "M_FORBIDDEN");
    let mut raised = before.clone();
    raised["users"][&bob.user_id] = json!(51);
    assert_error(&put_state(&server, &bob, &room, "m.room.power_levels", raised).await, 403, "M_FORBIDDEN");
    assert_eq!(power_levels(&server, &alice, &room).await, before);

    // Up to their own level is fine, and so is lowering their own.
    let mut allowed = before.clone();
    allowed["users"][&carol.user_id] = json!(50);
    assert_eq!(put_state(&server, &bob, &room, "m.room.power_levels", allowed.clone()).await.0, 200);
    allowed["users"][&bob.user_id] = json!(40);
    assert_eq!(put_state(&server, &bob, &room, "m.room.power_levels", allowed).await.0, 200);
    assert_eq!(power_levels(&server, &alice, &room).await["users"][&bob.user_id], 40);
}

/// v12 auth rules 10.6.1, 10.7 and 10.9: a level whose current value is above the sender's
/// (a property, an `events` or `notifications` entry), or a user at or above the sender's level
/// (other than the sender), cannot be changed or removed.
#[tokio::test]
async fn nobody_can_change_a_level_above_their_own() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol, dave] = users(&server, ["bob", "carol", "dave"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol, &dave]).await;
    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(50);
        pl["users"][&carol.user_id] = json!(50);
        pl["users"][&dave.user_id] = json!(100);
        pl["events"]["m.room.power_levels"] = json!(50);
        pl["kick"] = json!(75);
        pl["notifications"] = json!({ "room": 75 });
    })
    .await;
    let before = power_levels(&server, &alice, &room).await;

    let changed = |change: &dyn Fn(&mut Value)| {
        let mut content = before.clone();
        change(&mut content);
        content
    };
    let refused = [
        ("demote a higher user", changed(&|pl| pl["users"][&dave.user_id] = json!(0))),
        ("demote an equal user", changed(&|pl| pl["users"][&carol.user_id] = json!(0))),
        ("remove an equal user", changed(&|pl| pl["users"] = json!({ &bob.user_id: 50, &dave.user_id: 100 }))),
        ("lower a higher property", changed(&|pl| pl["kick"] = json!(50))),
        ("lower a higher events entry", changed(&|pl| pl["events"]["m.room.server_acl"] = json!(50))),
        ("lower a higher notifications entry", changed(&|pl| pl["notifications"]["room"] = json!(50))),
    ];
    for (what, content) in refused {
        let reply = put_state(&server, &bob, &room, "m.room.power_levels", content).await;
        assert_eq!(reply.0, 403, "bob could {what}: {}", reply.1);
        assert_eq!(reply.1["errcode"], "M_FORBIDDEN", "{what}");
    }
    assert_eq!(power_levels(&server, &alice, &room).await, before);

    // Levels at or below bob's are his to change, users below him too.
    let mut content = before.clone();
    content["ban"] = json!(40);
    content["events"]["m.room.name"] = json!(10);
    content["users"]["@newcomer:test.local"] = json!(20);
    assert_eq!(put_state(&server, &bob, &room, "m.room.power_levels", content).await.0, 200);
}

/// v12 auth rule 7: an `m.room.third_party_invite` event needs only the invite level, not the
/// state level (it stands for an invite).
#[tokio::test]
async fn third_party_invite_state_needs_the_invite_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let content = json!({
        "display_name": "c...@example.org",
        "key_validity_url": "https://id.example.org/_matrix/identity/v2/pubkey/isvalid",
        "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    });

    // Invite level 50 (public_chat): bob at 0 may not.
    let public = public_room_with(&server, &alice, &[&bob]).await;
    let reply = put_state(&server, &bob, &public, "m.room.third_party_invite/token1", content.clone()).await;
    assert_error(&reply, 403, "M_FORBIDDEN");

    // Invite level 0 (private_chat), state_default still 50: bob may.
    let private = create_room(&server, &alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    assert_eq!(join(&server, &bob, &private).await.0, 200);
    assert_eq!(power_levels(&server, &alice, &private).await["state_default"], 50);
    let (status, reply) = put_state(&server, &bob, &private, "m.room.third_party_invite/token1", content).await;
    assert_eq!(status, 200, "{reply}");
}

/// v12 auth rule 9: if the event has a `state_key` that starts with an `@` and does not match the
/// sender, reject — even when the sender's level would allow the type.
#[tokio::test]
async fn state_keyed_by_a_user_id_belongs_to_that_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    set_power(&server, &alice, &room, |pl| pl["state_default"] = json!(0)).await;

    let mine = format!("com.example.status/{}", bob.user_id);
    let (status, reply) = put_state(&server, &bob, &room, &mine, json!({ "busy": true })).await;
    assert_eq!(status, 200, "{reply}");
    let theirs = format!("com.example.status/{}", alice.user_id);
    assert_error(&put_state(&server, &bob, &room, &theirs, json!({ "busy": true })).await, 403, "M_FORBIDDEN");
    // Not even the creator, with unlimited power, may write another user's key.
    assert_error(&put_state(&server, &alice, &room, &mine, json!({ "busy": false })).await, 403, "M_FORBIDDEN");
    // A key that merely contains `@` further in is nobody's.
    assert_eq!(put_state(&server, &bob, &room, "com.example.status/x@y", json!({})).await.0, 200);
}

/// The power levels event is an event like any other: its content is kept as the client sent it,
/// unknown keys included.
#[tokio::test]
async fn power_levels_content_is_stored_verbatim() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;

    let content = json!({
        "users": { &bob.user_id: 42 },
        "users_default": 1,
        "events": { "m.room.name": 20, "m.room.power_levels": 100, "m.room.tombstone": 150 },
        "events_default": 2,
        "state_default": 30,
        "ban": 60,
        "kick": 55,
        "redact": 45,
        "invite": 5,
        "notifications": { "room": 70, "com.example.other": 3 },
        "com.example.extra": { "nested": [1, 2, 3] },
    });
    let (status, reply) = put_state(&server, &alice, &room, "m.room.power_levels", content.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(power_levels(&server, &bob, &room).await, content);
    let (_, event) =
        server.get(&rooms(&room, &format!("event/{}", reply["event_id"].as_str().unwrap())), bob.tok()).await;
    assert_eq!(event["content"], content);
}

/// An empty power levels event is valid (every level takes its default) and leaves the former
/// admin powerless (`users_default`, 0) below the default `state_default` of 50 (v12 auth rule 8).
/// Sending the identical event again is answered with the existing event, as Synapse does (it
/// deduplicates a state event identical to the current one from the same sender before the auth
/// checks); anything new from the powerless is refused.
#[tokio::test]
async fn empty_power_levels_leave_everyone_at_the_defaults() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let room = public_room_with(&server, &alice, &[&bob, &carol]).await;
    // bob becomes an admin; no event needs more than he has, so he may reset everything.
    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(100);
        pl["events"]["m.room.tombstone"] = json!(100);
    })
    .await;

    let (status, first) = put_state(&server, &bob, &room, "m.room.power_levels", json!({})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(power_levels(&server, &alice, &room).await, json!({}));

    let (status, again) = put_state(&server, &bob, &room, "m.room.power_levels", json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);
    assert_error(&put_state(&server, &carol, &room, "m.room.power_levels", json!({})).await, 403, "M_FORBIDDEN");
    let reply = put_state(&server, &bob, &room, "m.room.power_levels", json!({ "users_default": 0 })).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await, 403, "M_FORBIDDEN");
    // Messages need `events_default`, 0.
    assert_eq!(send(&server, &bob, &room, json!({ "msgtype": "m.text", "body": "ok" })).await.0, 200);
    // The creator of a version 12 room is not affected.
    assert_eq!(put_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "x" })).await.0, 200);
}

// ----- room version 12 -----

/// v12 auth rules 1.2 and 2: a create event has no `room_id`; the room ID is the create event's ID
/// with the sigil `!` instead of `$`. Version 12 is the default, and its create event has no
/// `creator`.
#[tokio::test]
async fn v12_room_id_is_the_create_event_id() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;

    let (status, create) = server.get(&rooms(&room, "state/m.room.create?format=event"), alice.tok()).await;
    assert_eq!(status, 200, "{create}");
    let event_id = create["event_id"].as_str().unwrap();
    assert_eq!(room, format!("!{}", event_id.strip_prefix('$').unwrap()));
    assert!(!room.contains(':'), "a v12 room ID has no server name: {room}");
    assert_eq!(create["room_id"], room.as_str());
    assert_eq!(create["sender"], alice.user_id.as_str());
    assert_eq!(create["content"]["room_version"], "12");
    assert!(create["content"].get("creator").is_none(), "{create}");
    // The state endpoint without `format` gives the content; the trailing slash is the empty key.
    assert_eq!(server.get(&rooms(&room, "state/m.room.create/"), alice.tok()).await.1, create["content"]);
}

/// v12: "Room creators have infinitely high power level and cannot be specified in the
/// `m.room.power_levels` event". The creator is not in `users`, yet outranks any level.
#[tokio::test]
async fn v12_creator_is_not_listed_yet_outranks_everyone() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    let levels = power_levels(&server, &alice, &room).await;
    assert_eq!(levels["users"], json!({}));

    // The largest level a room allows is still below the creator.
    const MAX: i64 = 9_007_199_254_740_991;
    set_power(&server, &alice, &room, |pl| {
        pl["users"][&bob.user_id] = json!(MAX);
        pl["state_default"] = json!(MAX);
        pl["kick"] = json!(MAX);
        pl["events"]["m.room.power_levels"] = json!(MAX);
    })
    .await;
    assert_eq!(put_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "mine" })).await.0, 200);
    assert_error(&act(&server, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN");
    assert_eq!(act(&server, &alice, &room, "kick", &bob).await.0, 200);
    assert_eq!(membership(&server, &alice, &room, &bob).await, "leave");
}

/// v12's default power levels put `m.room.tombstone` at 150, above an admin's 100: only creators
/// can end a room (v12 auth rule 8).
#[tokio::test]
async fn v12_tombstone_needs_150_by_default() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    assert_eq!(power_levels(&server, &alice, &room).await["events"]["m.room.tombstone"], 150);
    set_power(&server, &alice, &room, |pl| pl["users"][&bob.user_id] = json!(100)).await;
    let tombstone = json!({ "body": "moved", "replacement_room": "!elsewhere" });

    assert_error(&put_state(&server, &bob, &room, "m.room.tombstone", tombstone.clone()).await, 403, "M_FORBIDDEN");
    let (status, reply) = put_state(&server, &alice, &room, "m.room.tombstone", tombstone).await;
    assert_eq!(status, 200, "{reply}");
}

/// v12 auth rules 5.5.4 and 5.6.2: the target's level must be below the sender's, and a creator's
/// is infinite — an admin can neither kick nor ban the creator.
#[tokio::test]
async fn v12_an_admin_cannot_kick_or_ban_the_creator() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    set_power(&server, &alice, &room, |pl| pl["users"][&bob.user_id] = json!(100)).await;

    assert_error(&act(&server, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &bob, &room, "ban", &alice).await, 403, "M_FORBIDDEN");
    assert_eq!(membership(&server, &bob, &room, &alice).await, "join");
}

/// v12: "Room creators include ... Any user IDs contained in the `additional_creators` array".
/// `trusted_private_chat` makes its invitees such creators (as Synapse does): they are listed in
/// the create event, not in `users`, and nobody can kick them.
#[tokio::test]
async fn v12_trusted_private_chat_invitees_are_additional_creators() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "trusted_private_chat", "invite": [bob.user_id] })).await;

    let (_, create) = server.get(&rooms(&room, "state/m.room.create"), alice.tok()).await;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    assert_eq!(power_levels(&server, &alice, &room).await["users"], json!({}));

    // Invited, then joined: infinite against infinite is never "less than".
    assert_error(&act(&server, &alice, &room, "kick", &bob).await, 403, "M_FORBIDDEN");
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    assert_error(&act(&server, &alice, &room, "kick", &bob).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &bob, &room, "ban", &alice).await, 403, "M_FORBIDDEN");
    // bob has a creator's power.
    let tombstone = json!({ "body": "moved", "replacement_room": "!elsewhere" });
    assert_eq!(put_state(&server, &bob, &room, "m.room.tombstone", tombstone).await.0, 200);
}

/// v12 auth rule 10.4: if the `users` property contains the sender of the create event or any of
/// the `additional_creators`, reject. Refused before it is built: 400.
#[tokio::test]
async fn v12_creators_cannot_be_given_a_power_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "trusted_private_chat", "invite": [bob.user_id] })).await;
    let before = state_of(&server, &alice, &room).await;

    for creator in [&alice, &bob] {
        let mut content = power_levels(&server, &alice, &room).await;
        content["users"][&creator.user_id] = json!(100);
        let reply = put_state(&server, &alice, &room, "m.room.power_levels", content).await;
        assert_error(&reply, 400, "M_BAD_JSON");
    }
    assert_eq!(state_of(&server, &alice, &room).await, before);
}

// ----- older room versions -----

/// Versions 1 to 11 in brief: the creator is listed in `users` at 100 (v12's "In room versions 1
/// through 11, room creators by default have power level 100"); the create event names the
/// `creator` up to version 10 (v1 auth rule 1.4 requires it) and not from 11 ("The `content` of a
/// `m.room.create` event no longer has a `creator` property"); room IDs name the server; members
/// send messages but, at level 0, not state (auth rule 8 of v1, 7 of v6 on).
#[tokio::test]
async fn older_room_versions_work_by_their_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;

    for version in ["1", "2", "6", "10", "11"] {
        let room = create_room(&server, &alice, json!({ "preset": "public_chat", "room_version": version })).await;
        assert!(room.ends_with(&format!(":{SERVER_NAME}")), "v{version}: {room}");
        let (_, create) = server.get(&rooms(&room, "state/m.room.create"), alice.tok()).await;
        assert_eq!(create["room_version"], version);
        if version == "11" {
            assert!(create.get("creator").is_none(), "v{version}: {create}");
        } else {
            assert_eq!(create["creator"], alice.user_id.as_str(), "v{version}");
        }
        let levels = power_levels(&server, &alice, &room).await;
        assert_eq!(levels["users"], json!({ &alice.user_id: 100 }), "v{version}");
        assert_eq!(levels["events"]["m.room.tombstone"], 100, "v{version}");

        assert_eq!(join(&server, &bob, &room).await.0, 200, "v{version}");
        let (status, reply) = send(&server, &bob, &room, json!({ "msgtype": "m.text", "body": version })).await;
        assert_eq!(status, 200, "v{version}: {reply}");
        let event_id = reply["event_id"].as_str().unwrap();
        // Room versions 1 and 2 have server-chosen event IDs; later ones are hashes.
        assert_eq!(event_id.contains(':'), matches!(version, "1" | "2"), "v{version}: {event_id}");
        let (status, event) = server.get(&rooms(&room, &format!("event/{event_id}")), alice.tok()).await;
        assert_eq!(status, 200, "v{version}: {event}");
        assert_eq!(event["content"]["body"], version);

        let reply = put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "x" })).await;
        assert_error(&reply, 403, "M_FORBIDDEN");
        assert_eq!(put_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "x" })).await.0, 200);
    }
}

/// Before version 12 the creator is an ordinary admin ("room creators by default have power level
/// 100 but still can have that level changed by power level events, by the same rules as other
/// members"): an equal admin cannot kick them (v11 auth rule 4.5.4), but once they step down, can.
#[tokio::test]
async fn before_v12_the_creator_is_an_ordinary_admin() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "room_version": "11" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    set_power(&server, &alice, &room, |pl| pl["users"][&bob.user_id] = json!(100)).await;

    assert_error(&act(&server, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN");
    set_power(&server, &alice, &room, |pl| pl["users"][&alice.user_id] = json!(50)).await;
    assert_eq!(act(&server, &bob, &room, "kick", &alice).await.0, 200);
    assert_eq!(membership(&server, &bob, &room, &alice).await, "leave");
}

/// v1 auth rule 4.2: in room versions 1 to 5, an `m.room.aliases` event whose `state_key` is not the
/// sender's server is rejected.
#[tokio::test]
async fn v1_aliases_events_are_keyed_by_the_senders_server() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "room_version": "1" })).await;
    let aliases = json!({ "aliases": [format!("#a:{SERVER_NAME}")] });

    let reply = put_state(&server, &alice, &room, "m.room.aliases/example.org", aliases.clone()).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    let (status, reply) = put_state(&server, &alice, &room, &format!("m.room.aliases/{SERVER_NAME}"), aliases).await;
    assert_eq!(status, 200, "{reply}");
}

/// Room versions 6 on: "Servers MUST strictly enforce the JSON format specified in the
/// appendices" (integers in [-(2**53)+1, (2**53)-1], no floats), which "translates to a 400
/// `M_BAD_JSON` error" on the client-server API.
#[tokio::test]
async fn non_canonical_json_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;

    for version in ["6", "11", "12"] {
        let room = create_room(&server, &alice, json!({ "room_version": version })).await;
        let before = state_of(&server, &alice, &room).await;
        for bad in [
            json!({ "n": 9_007_199_254_740_992_i64 }),
            json!({ "n": -9_007_199_254_740_992_i64 }),
            json!({ "n": 1.5 }),
            // Whole-valued floats are floats too (Synapse refuses them alike): `1000.0`, `2.0`.
            json!({ "n": 1000.0 }),
            json!({ "deep": { "list": [1, 2.0] } }),
        ] {
            for (what, reply) in [
                ("message", send(&server, &alice, &room, bad.clone()).await),
                ("state", put_state(&server, &alice, &room, "com.example.state/", bad.clone()).await),
            ] {
                let got = (reply.0.as_u16(), reply.1["errcode"].as_str());
                assert_eq!(got, (400, Some("M_BAD_JSON")), "v{version} {what} {bad}: {}", reply.1);
            }
        }
        assert_eq!(state_of(&server, &alice, &room).await, before, "v{version}");
        // The extremes themselves are fine.
        let edges = json!({ "max": 9_007_199_254_740_991_i64, "min": -9_007_199_254_740_991_i64 });
        let (status, reply) = send(&server, &alice, &room, edges.clone()).await;
        assert_eq!(status, 200, "v{version}: {reply}");
        let (_, event) =
            server.get(&rooms(&room, &format!("event/{}", reply["event_id"].as_str().unwrap())), alice.tok()).await;
        assert_eq!(event["content"], edges);
    }
}

/// "The complete event MUST NOT be larger than 65536 bytes, when formatted with the federation
/// event format, including any signatures, and encoded as Canonical JSON."
#[tokio::test]
async fn events_over_64_kib_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;

    for version in ["1", "12"] {
        let room = create_room(&server, &alice, json!({ "room_version": version })).await;
        let before = state_of(&server, &alice, &room).await;
        let huge = json!({ "msgtype": "m.text", "body": "x".repeat(65_536) });
        assert_error(&send(&server, &alice, &room, huge.clone()).await, 413, "M_TOO_LARGE");
        assert_error(&put_state(&server, &alice, &room, "com.example.big/", huge).await, 413, "M_TOO_LARGE");
        assert_eq!(state_of(&server, &alice, &room).await, before, "v{version}");
        // The envelope (hashes, signatures, references) is well under 5 KiB: this one fits.
        let (status, reply) = send(&server, &alice, &room, json!({ "body": "x".repeat(60_000) })).await;
        assert_eq!(status, 200, "v{version}: {reply}");
    }
}

// ----- refusals -----

/// A refused event leaves nothing behind: the room's state (and what the next event builds on) is
/// exactly as before.
#[tokio::test]
async fn refused_events_leave_the_state_unchanged() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let [bob, carol] = users(&server, ["bob", "carol"]).await;
    let room = public_room_with(&server, &alice, &[&bob]).await;
    let before = state_of(&server, &alice, &room).await;

    assert_error(&put_state(&server, &bob, &room, "m.room.topic", json!({ "topic": "no" })).await, 403, "M_FORBIDDEN");
    let mut grab = power_levels(&server, &alice, &room).await;
    grab["users"][&bob.user_id] = json!(100);
    assert_error(&put_state(&server, &bob, &room, "m.room.power_levels", grab).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &bob, &room, "kick", &alice).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &bob, &room, "ban", &alice).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &bob, &room, "invite", &carol).await, 403, "M_FORBIDDEN");
    assert_error(&act(&server, &alice, &room, "invite", &bob).await, 403, "M_FORBIDDEN");
    // v12 auth rule 6: an outsider's events are rejected.
    assert_error(&send(&server, &carol, &room, json!({ "body": "spam" })).await, 403, "M_FORBIDDEN");
    let member = format!("m.room.member/{}", carol.user_id);
    let reply = put_state(&server, &bob, &room, &member, json!({ "membership": "join" })).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert_error(&knock(&server, &carol, &room).await, 403, "M_FORBIDDEN");

    assert_eq!(state_of(&server, &alice, &room).await, before);
    assert_eq!(membership(&server, &alice, &room, &carol).await, Value::Null);
    assert_eq!(server.get("/_matrix/client/v3/joined_rooms", carol.tok()).await.1["joined_rooms"], json!([]));
    // The room carries on from where it was.
    assert_eq!(send(&server, &bob, &room, json!({ "body": "still here" })).await.0, 200);
    assert_eq!(put_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "yes" })).await.0, 200);
}

// ----- helpers -----

fn rooms(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

async fn users<const N: usize>(server: &TestServer, names: [&str; N]) -> [User; N] {
    let mut users = Vec::with_capacity(N);
    for name in names {
        users.push(server.register(name, "pw").await);
    }
    users.try_into().unwrap()
}

async fn create_room(server: &TestServer, creator: &User, body: Value) -> String {
    let (status, reply) = server.post("/_matrix/client/v3/createRoom", creator.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply["room_id"].as_str().unwrap().to_owned()
}

/// A `public_chat` room of the default version that `members` have joined.
async fn public_room_with(server: &TestServer, creator: &User, members: &[&User]) -> String {
    let room = create_room(server, creator, json!({ "preset": "public_chat" })).await;
    for member in members {
        let (status, reply) = join(server, member, &room).await;
        assert_eq!(status, 200, "{reply}");
    }
    room
}

fn join_rule_state(content: Value) -> Value {
    json!({ "type": "m.room.join_rules", "state_key": "", "content": content })
}

async fn join(server: &TestServer, user: &User, room: &str) -> (StatusCode, Value) {
    server.post(&rooms(room, "join"), user.tok(), json!({})).await
}

async fn knock(server: &TestServer, user: &User, room: &str) -> (StatusCode, Value) {
    server.post(&format!("/_matrix/client/v3/knock/{room}"), user.tok(), json!({})).await
}

/// `invite`, `kick`, `ban` or `unban` of `target`.
async fn act(server: &TestServer, user: &User, room: &str, action: &str, target: &User) -> (StatusCode, Value) {
    server.post(&rooms(room, action), user.tok(), json!({ "user_id": target.user_id })).await
}

/// `user`'s membership as `viewer` sees it in the current state (`null` if none).
async fn membership(server: &TestServer, viewer: &User, room: &str, user: &User) -> Value {
    let (status, content) =
        server.get(&rooms(room, &format!("state/m.room.member/{}", user.user_id)), viewer.tok()).await;
    match status.as_u16() {
        200 => content["membership"].clone(),
        404 => Value::Null,
        _ => panic!("reading {}'s membership: {status} {content}", user.user_id),
    }
}

async fn send(server: &TestServer, user: &User, room: &str, content: Value) -> (StatusCode, Value) {
    send_kind(server, user, room, "m.room.message", content).await
}

async fn send_kind(server: &TestServer, user: &User, room: &str, kind: &str, content: Value) -> (StatusCode, Value) {
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    server.put(&rooms(room, &format!("send/{kind}/t{txn}")), user.tok(), content).await
}

/// `PUT /state/{type_and_key}`: `type` alone for the empty key is fine, `type/` too.
async fn put_state(
    server: &TestServer,
    user: &User,
    room: &str,
    type_and_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server.put(&rooms(room, &format!("state/{type_and_key}")), user.tok(), content).await
}

async fn power_levels(server: &TestServer, user: &User, room: &str) -> Value {
    let (status, content) = server.get(&rooms(room, "state/m.room.power_levels/"), user.tok()).await;
    assert_eq!(status, 200, "{content}");
    content
}

/// Changes the power levels as `admin`, who must be allowed to.
async fn set_power(server: &TestServer, admin: &User, room: &str, change: impl FnOnce(&mut Value)) {
    let mut content = power_levels(server, admin, room).await;
    change(&mut content);
    let (status, reply) = put_state(server, admin, room, "m.room.power_levels", content).await;
    assert_eq!(status, 200, "{reply}");
}

/// The room's state as `user` reads it, in a stable order and without the ever-changing `age`.
async fn state_of(server: &TestServer, user: &User, room: &str) -> Vec<Value> {
    let (status, state) = server.get(&rooms(room, "state"), user.tok()).await;
    assert_eq!(status, 200, "{state}");
    let mut events = state.as_array().unwrap().clone();
    for event in &mut events {
        if let Some(unsigned) = event["unsigned"].as_object_mut() {
            unsigned.remove("age");
        }
    }
    events.sort_by(|a, b| a["event_id"].as_str().cmp(&b["event_id"].as_str()));
    events
}

/// A refusal: 403 with one of the given error codes.
#[track_caller]
fn assert_refused(reply: &(StatusCode, Value), errcodes: &[&str]) {
    assert_eq!(reply.0, 403, "unexpected status; body: {}", reply.1);
    let errcode = reply.1["errcode"].as_str().unwrap_or_default();
    assert!(errcodes.contains(&errcode), "unexpected errcode; body: {}", reply.1);
}
