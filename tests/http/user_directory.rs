//! The user directory: who can be found, by what, and what never leaks.

use serde_json::{Value, json};

use crate::{
    server::{TestServer, User},
    sync::{V3, create_room, join, set_state},
};

async fn search(server: &TestServer, user: &User, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({ "search_term": term });
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    let (status, reply) = server.post(&format!("{V3}/user_directory/search"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

fn ids(reply: &Value) -> Vec<&str> {
    reply["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap()).collect()
}

async fn set_name(server: &TestServer, user: &User, name: &str) {
    let path = format!("{V3}/profile/{}/displayname", user.user_id);
    assert_eq!(server.put(&path, user.tok(), json!({ "displayname": name })).await.0, 200);
}

#[tokio::test]
async fn users_sharing_a_room_or_in_a_public_room_are_found_by_id_or_name() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    set_name(&server, &bob, "Bob Builder").await;
    set_name(&server, &carol, "Carol Singer").await;
    set_name(&server, &dave, "Dave Hermit").await;

    // Bob shares a private room with Alice; Carol is in a public room; Dave is nowhere.
    let private = create_room(&server, &alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    join(&server, &bob, &private).await;
    let public = create_room(&server, &carol, json!({ "preset": "public_chat", "visibility": "public" })).await;

    assert_eq!(ids(&search(&server, &alice, "bob", None).await), [bob.user_id.as_str()]);
    assert_eq!(ids(&search(&server, &alice, "builder", None).await), [bob.user_id.as_str()], "by a word of the name");
    assert_eq!(ids(&search(&server, &alice, "SINGER", None).await), [carol.user_id.as_str()], "case-insensitive");
    let found = search(&server, &alice, "carol", None).await;
    assert_eq!(found["results"][0]["display_name"], "Carol Singer", "{found}");
    assert_eq!(found["limited"], false);
    assert!(
        ids(&search(&server, &alice, "dave", None).await).is_empty(),
        "Dave shares no room and is in no public one"
    );
    assert!(ids(&search(&server, &dave, "bob", None).await).is_empty(), "Bob is only in a private room");
    assert_eq!(ids(&search(&server, &dave, "carol", None).await), [carol.user_id.as_str()]);

    // Once Dave joins the public room he can be found too.
    join(&server, &dave, &public).await;
    assert_eq!(ids(&search(&server, &alice, "hermit", None).await), [dave.user_id.as_str()]);
}

#[tokio::test]
async fn limits_rank_and_room_specific_names_stay_private() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mut others = Vec::new();
    for name in ["sam", "samantha", "samuel", "isambard"] {
        others.push(server.register(name, "pw").await);
    }
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    for user in &others {
        join(&server, user, &room).await;
    }
    let reply = search(&server, &alice, "sam", Some(2)).await;
    assert_eq!(reply["limited"], true, "{reply}");
    assert_eq!(ids(&reply)[0], others[0].user_id, "the exact match first: {reply}");
    let all = search(&server, &alice, "sam", None).await;
    assert_eq!(ids(&all).len(), 3, "isambard does not match: words match from their start: {all}");
    assert!(ids(&search(&server, &alice, "alice", None).await).is_empty(), "the searcher is left out");

    // A display name set only in one room's member event is not what the directory shows.
    let sam = &others[0];
    let member = format!("m.room.member/{}", sam.user_id);
    set_state(&server, sam, &room, &member, json!({ "membership": "join", "displayname": "Secret Agent" })).await;
    assert!(ids(&search(&server, &alice, "agent", None).await).is_empty());

    let (status, reply) = server.post(&format!("{V3}/user_directory/search"), alice.tok(), json!({})).await;
    assert_eq!((status.as_u16(), reply["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{reply}");
    let (status, _) = server.post(&format!("{V3}/user_directory/search"), None, json!({ "search_term": "x" })).await;
    assert_eq!(status, 401);
}
