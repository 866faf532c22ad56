//! Space hierarchies: the walk, its order, depth, suggested rooms, pages, and what a user may see.

use serde_json::{Value, json};

use crate::{
    server::{TestServer, User},
    sync::{create_room, enc, invite, join, set_state},
};

async fn hierarchy(server: &TestServer, user: &User, root: &str, query: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy{query}", enc(root));
    let (status, reply) = server.get(&path, user.tok()).await;
    (status.as_u16(), reply)
}

fn room_ids(reply: &Value) -> Vec<String> {
    reply["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
}

fn children_of(reply: &Value, room: &str) -> Vec<String> {
    let entry = reply["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == room).unwrap();
    entry["children_state"].as_array().unwrap().iter().map(|c| c["state_key"].as_str().unwrap().to_owned()).collect()
}

fn ids(rooms: &[&String]) -> Vec<String> {
    rooms.iter().map(|r| r.to_string()).collect()
}

async fn room(server: &TestServer, user: &User, name: &str, preset: &str, space: bool) -> String {
    let mut body = json!({ "preset": preset, "name": name });
    if space {
        body["creation_content"] = json!({ "type": "m.space" });
    }
    create_room(server, user, body).await
}

async fn link(server: &TestServer, user: &User, parent: &str, child: &str, extra: Value) {
    let mut content = json!({ "via": ["test.local"] });
    content.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    set_state(server, user, parent, &format!("m.space.child/{child}"), content).await;
}

#[tokio::test]
async fn the_walk_goes_depth_first_in_order_with_depth_suggested_and_pages() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let root = room(&server, &alice, "Root", "public_chat", true).await;
    let r1 = room(&server, &alice, "R1", "public_chat", false).await;
    let ss1 = room(&server, &alice, "Sub-space", "public_chat", true).await;
    let r2 = room(&server, &alice, "R2", "public_chat", false).await;
    let ss2 = room(&server, &alice, "SS2", "public_chat", true).await;
    let r3 = room(&server, &alice, "R3", "public_chat", false).await;
    let r5 = room(&server, &alice, "R5", "public_chat", false).await;
    link(&server, &alice, &root, &r1, json!({ "suggested": true })).await;
    link(&server, &alice, &root, &ss1, json!({})).await;
    link(&server, &alice, &root, &r2, json!({ "suggested": true })).await;
    link(&server, &alice, &ss1, &ss2, json!({})).await;
    link(&server, &alice, &ss2, &r3, json!({})).await;
    // A child of a room that is not a space is not followed.
    link(&server, &alice, &r2, &r5, json!({})).await;

    let (status, all) = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(room_ids(&all), ids(&[&root, &r1, &ss1, &ss2, &r3, &r2]));
    assert_eq!(children_of(&all, &root), ids(&[&r1, &ss1, &r2]));
    let first = &all["rooms"][0];
    assert_eq!((first["name"].as_str(), first["room_type"].as_str()), (Some("Root"), Some("m.space")), "{first}");
    assert_eq!(first["num_joined_members"], 1);
    assert_eq!(first["children_state"][0]["type"], "m.space.child");
    assert!(first["children_state"][0]["origin_server_ts"].is_u64());
    assert!(all.get("next_batch").is_none(), "{all}");

    let (_, shallow) = hierarchy(&server, &alice, &root, "?max_depth=1").await;
    assert_eq!(room_ids(&shallow), ids(&[&root, &r1, &ss1, &r2]));
    assert_eq!(children_of(&shallow, &ss1), ids(&[&ss2]), "children_state even where the walk stops");
    let (_, suggested) = hierarchy(&server, &alice, &root, "?suggested_only=true").await;
    assert_eq!(room_ids(&suggested), ids(&[&root, &r1, &r2]));

    let (_, page) = hierarchy(&server, &alice, &root, "?limit=4").await;
    assert_eq!(room_ids(&page), ids(&[&root, &r1, &ss1, &ss2]));
    let next = page["next_batch"].as_str().expect("another page").to_owned();
    let (_, rest) = hierarchy(&server, &alice, &root, &format!("?from={}", enc(&next))).await;
    assert_eq!(room_ids(&rest), ids(&[&r3, &r2]));

    // `order` comes first; removing a link (empty content) removes the child.
    link(&server, &alice, &root, &r2, json!({ "order": "a" })).await;
    set_state(&server, &alice, &root, &format!("m.space.child/{ss1}"), json!({})).await;
    let (_, reordered) = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(room_ids(&reordered), ids(&[&root, &r2, &r1]));

    assert_eq!(hierarchy(&server, &alice, &root, "?from=nonsense").await.0, 400);
    assert_eq!(hierarchy(&server, &alice, &root, "?suggested_only=maybe").await.0, 400);
}

#[tokio::test]
async fn users_see_only_rooms_they_may_and_not_past_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let root = room(&server, &alice, "Root", "public_chat", true).await;
    let r1 = room(&server, &alice, "R1", "private_chat", false).await;
    let ss1 = room(&server, &alice, "SS1", "private_chat", true).await;
    let r2 = room(&server, &alice, "R2", "private_chat", false).await;
    set_state(&server, &alice, &r2, "m.room.history_visibility", json!({ "history_visibility": "world_readable" }))
        .await;
    let r3 = room(&server, &alice, "R3", "private_chat", false).await;
    link(&server, &alice, &root, &r1, json!({})).await;
    link(&server, &alice, &root, &ss1, json!({})).await;
    link(&server, &alice, &ss1, &r2, json!({})).await;
    link(&server, &alice, &ss1, &r3, json!({})).await;

    // A private space's hierarchy is not for outsiders.
    assert_eq!(hierarchy(&server, &bob, &ss1, "").await.0, 403);
    join(&server, &bob, &root).await;
    let (_, seen) = hierarchy(&server, &bob, &root, "").await;
    assert_eq!(room_ids(&seen), ids(&[&root]));
    assert_eq!(children_of(&seen, &root), ids(&[&r1, &ss1]), "the links themselves are the space's state");

    invite(&server, &alice, &r1, &bob).await;
    invite(&server, &alice, &r3, &bob).await;
    assert_eq!(room_ids(&hierarchy(&server, &bob, &root, "").await.1), ids(&[&root, &r1]));
    invite(&server, &alice, &ss1, &bob).await;
    assert_eq!(room_ids(&hierarchy(&server, &bob, &root, "").await.1), ids(&[&root, &r1, &ss1, &r2, &r3]));
}
