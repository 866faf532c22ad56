//! Global account data.

use serde_json::json;

use crate::server::{TestServer, assert_error};

#[tokio::test]
async fn account_data_round_trips_and_is_private() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", alice.user_id);

    assert_error(&server.get(&path, alice.tok()).await, 404, "M_NOT_FOUND");
    let (status, _) = server.put(&path, alice.tok(), json!({ "theme": "dark" })).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "theme": "dark" }));
    let (status, _) = server.put(&path, alice.tok(), json!({ "theme": "light", "size": 3 })).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "theme": "light", "size": 3 }));

    assert_error(&server.get(&path, bob.tok()).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&path, bob.tok(), json!({ "theme": "pink" })).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&path, None).await, 401, "M_MISSING_TOKEN");
    assert_error(&server.put(&path, alice.tok(), json!(["not", "an", "object"])).await, 400, "M_BAD_JSON");
    let push_rules = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", alice.user_id);
    assert_error(&server.put(&push_rules, alice.tok(), json!({})).await, 405, "M_BAD_JSON");
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "theme": "light", "size": 3 }));
}
