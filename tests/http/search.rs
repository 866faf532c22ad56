//! Server-side search: matching, order, pages, context, redactions, and what is never searched.

use serde_json::{Value, json};

use crate::{
    server::{TestServer, User},
    sync::{V3, create_room, enc, join, leave, room_path, send_text, set_state},
};

async fn search(server: &TestServer, user: &User, criteria: Value, next_batch: Option<&str>) -> Value {
    let query = next_batch.map_or(String::new(), |n| format!("?next_batch={}", enc(n)));
    let body = json!({ "search_categories": { "room_events": criteria } });
    let (status, reply) = server.post(&format!("{V3}/search{query}"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply["search_categories"]["room_events"].clone()
}

fn bodies(category: &Value) -> Vec<String> {
    category["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn words_match_the_starts_of_words_and_results_page_newest_first() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    for i in 0..20 {
        send_text(&server, &alice, &room, &format!("Message number {i}")).await;
    }
    let hello = send_text(&server, &alice, &room, "hello, world").await;

    let found = search(&server, &alice, json!({ "search_term": "hello", "filter": { "rooms": [room] } }), None).await;
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(found["results"][0]["result"]["event_id"], hello.as_str());
    assert_eq!(found["results"][0]["result"]["room_id"], room.as_str());
    assert!(found["highlights"].as_array().unwrap().contains(&json!("hello")));

    let four = search(&server, &alice, json!({ "search_term": "Message 4", "order_by": "recent" }), None).await;
    assert_eq!(bodies(&four), ["Message number 4"], "every word must match: {four}");

    let criteria = json!({ "search_term": "message", "order_by": "recent", "filter": { "limit": 10 } });
    let page = search(&server, &alice, criteria.clone(), None).await;
    assert_eq!(page["count"], 20);
    let expected: Vec<String> = (10..20).rev().map(|i| format!("Message number {i}")).collect();
    assert_eq!(bodies(&page), expected);
    let next = page["next_batch"].as_str().unwrap().to_owned();
    let page = search(&server, &alice, criteria.clone(), Some(&next)).await;
    let expected: Vec<String> = (0..10).rev().map(|i| format!("Message number {i}")).collect();
    assert_eq!(bodies(&page), expected);
    let last = search(&server, &alice, criteria, Some(page["next_batch"].as_str().unwrap())).await;
    assert!(bodies(&last).is_empty() && last.get("next_batch").is_none(), "{last}");

    // Context around a result, nearest first before it.
    let criteria = json!({
        "search_term": "number 5", "order_by": "recent",
        "filter": { "limit": 1 }, "event_context": { "before_limit": 2, "after_limit": 2 },
    });
    let found = search(&server, &alice, criteria, None).await;
    let context = &found["results"][0]["context"];
    let texts = |side: &str| -> Vec<String> {
        context[side].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(texts("events_before"), ["Message number 4", "Message number 3"], "{found}");
    assert_eq!(texts("events_after"), ["Message number 6", "Message number 7"]);
}

#[tokio::test]
async fn names_topics_ranking_and_redactions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat", "name": "Gardening club" })).await;
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "Tomatoes and gardening tips" })).await;
    send_text(&server, &alice, &room, "gardening is what we do here, gardening all day").await;
    let doomed = send_text(&server, &alice, &room, "secret gardening plans").await;
    let path = room_path(&room, &format!("redact/{}/r1", enc(&doomed)));
    assert_eq!(server.put(&path, alice.tok(), json!({})).await.0, 200);

    let all = search(&server, &alice, json!({ "search_term": "gardening" }), None).await;
    assert_eq!(all["count"], 3, "the name, the topic and one message; not the redacted one: {all}");
    let types: Vec<&str> =
        all["results"].as_array().unwrap().iter().map(|r| r["result"]["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.room.name") && types.contains(&"m.room.topic"), "{all}");
    assert_eq!(all["results"][0]["result"]["type"], "m.room.name", "ranked: the short name matches best: {all}");
    let bodies_only =
        search(&server, &alice, json!({ "search_term": "gardening", "keys": ["content.body"] }), None).await;
    assert_eq!(bodies_only["count"], 1);
    assert!(!all.to_string().contains("secret"));

    let body = json!({ "search_categories": { "room_events": { "search_term": "x", "keys": ["content.nope"] } } });
    let (status, _) = server.post(&format!("{V3}/search"), alice.tok(), body).await;
    assert_eq!(status, 400);
    let body = json!({ "search_categories": { "room_events": { "search_term": "x", "order_by": "size" } } });
    assert_eq!(server.post(&format!("{V3}/search"), alice.tok(), body).await.0, 400);
}

#[tokio::test]
async fn only_rooms_one_is_in_and_events_one_may_see_are_searched() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let private = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice, &private, "zebra in the private room").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    set_state(&server, &alice, &room, "m.room.history_visibility", json!({ "history_visibility": "joined" })).await;
    send_text(&server, &alice, &room, "zebra before bob").await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "zebra with bob").await;
    leave(&server, &bob, &room).await;

    let found = search(&server, &bob, json!({ "search_term": "zebra" }), None).await;
    assert_eq!(found["count"], 0, "bob is no longer in any room: {found}");
    join(&server, &bob, &room).await;
    let found = search(&server, &bob, json!({ "search_term": "zebra" }), None).await;
    assert_eq!(bodies(&found), ["zebra with bob"], "{found}");
    let mine =
        search(&server, &alice, json!({ "search_term": "zebra", "filter": { "not_rooms": [room] } }), None).await;
    assert_eq!(bodies(&mine), ["zebra in the private room"]);
}
