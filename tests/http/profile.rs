//! Profiles.

use reqwest::Method;
use serde_json::json;

use crate::server::{TestServer, assert_error};

#[tokio::test]
async fn set_and_read_profile_fields() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let base = format!("/_matrix/client/v3/profile/{}", alice.user_id);

    let (status, _) =
        server.put(&format!("{base}/displayname"), alice.tok(), json!({ "displayname": "Alice A." })).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.put(&format!("{base}/avatar_url"), alice.tok(), json!({ "avatar_url": "mxc://test.local/abc" })).await;
    assert_eq!(status, 200);
    let (status, _) = server.put(&format!("{base}/m.tz"), alice.tok(), json!({ "m.tz": "Europe/Paris" })).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(&format!("{base}/org.example.pronouns"), alice.tok(), json!({ "org.example.pronouns": ["she", "her"] }))
        .await;
    assert_eq!(status, 200);

    // Reading needs no token.
    assert_eq!(server.get(&format!("{base}/displayname"), None).await.1, json!({ "displayname": "Alice A." }));
    assert_eq!(
        server.get(&format!("{base}/avatar_url"), None).await.1,
        json!({ "avatar_url": "mxc://test.local/abc" })
    );
    let (status, profile) = server.get(&base, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        profile,
        json!({ "displayname": "Alice A.", "avatar_url": "mxc://test.local/abc", "m.tz": "Europe/Paris", "org.example.pronouns": ["she", "her"] })
    );

    // Removing fields: DELETE, or an empty display name.
    let (status, _) = server.request(Method::DELETE, &format!("{base}/org.example.pronouns"), alice.tok(), None).await;
    assert_eq!(status, 200);
    let (status, _) = server.put(&format!("{base}/displayname"), alice.tok(), json!({ "displayname": "" })).await;
    assert_eq!(status, 200);
    assert_error(&server.get(&format!("{base}/displayname"), None).await, 404, "M_NOT_FOUND");
    assert_eq!(
        server.get(&base, None).await.1,
        json!({ "avatar_url": "mxc://test.local/abc", "m.tz": "Europe/Paris" })
    );
}

#[tokio::test]
async fn profile_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let base = format!("/_matrix/client/v3/profile/{}", alice.user_id);

    assert_error(
        &server.put(&format!("{base}/displayname"), bob.tok(), json!({ "displayname": "Mallory" })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(&format!("{base}/displayname"), None, json!({ "displayname": "x" })).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.put(&format!("{base}/displayname"), alice.tok(), json!({ "name": "x" })).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server.put(&format!("{base}/displayname"), alice.tok(), json!({ "displayname": 5 })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.put(&format!("{base}/displayname"), alice.tok(), json!({ "displayname": "x".repeat(300) })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.put(&format!("{base}/avatar_url"), alice.tok(), json!({ "avatar_url": "http://evil" })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.put(&format!("{base}/m.unknown"), alice.tok(), json!({ "m.unknown": 1 })).await,
        400,
        "M_INVALID_PARAM",
    );
    let long_key = "a".repeat(300);
    assert_error(
        &server.put(&format!("{base}/{long_key}"), alice.tok(), json!({ long_key.clone(): 1 })).await,
        400,
        "M_KEY_TOO_LARGE",
    );
    let big = "x".repeat(40 * 1024);
    let (status, _) = server.put(&format!("{base}/org.example.a"), alice.tok(), json!({ "org.example.a": big })).await;
    assert_eq!(status, 200);
    assert_error(
        &server.put(&format!("{base}/org.example.b"), alice.tok(), json!({ "org.example.b": big })).await,
        400,
        "M_PROFILE_TOO_LARGE",
    );
    assert_error(&server.get(&format!("{base}/org.example.b"), None).await, 404, "M_NOT_FOUND");

    assert_error(&server.get("/_matrix/client/v3/profile/@nobody:test.local", None).await, 404, "M_NOT_FOUND");
    assert_error(
        &server.get("/_matrix/client/v3/profile/@someone:elsewhere.org/displayname", None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&server.get("/_matrix/client/v3/profile/not-a-user-id", None).await, 400, "M_INVALID_PARAM");
}
