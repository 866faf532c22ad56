//! Password change and deactivation.

use serde_json::json;

use crate::server::{TestServer, assert_error};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn changing_the_password_logs_out_other_devices_by_default() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "old-password").await;
    let other = server.login("alice", "old-password").await;

    let (status, challenge) = server
        .post("/_matrix/client/v3/account/password", alice.tok(), json!({ "new_password": "new-password" }))
        .await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]));
    let mut wrong = alice.password_auth();
    wrong["password"] = json!("nope");
    let (status, retry) = server
        .post(
            "/_matrix/client/v3/account/password",
            alice.tok(),
            json!({ "new_password": "new-password", "auth": wrong }),
        )
        .await;
    assert_eq!((status.as_u16(), retry["errcode"].as_str()), (401, Some("M_FORBIDDEN")));

    let (status, reply) = server
        .post(
            "/_matrix/client/v3/account/password",
            alice.tok(),
            json!({ "new_password": "new-password", "auth": alice.password_auth() }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.get(WHOAMI, alice.tok()).await.0, 200, "the requesting session stays");
    assert_error(&server.get(WHOAMI, other.tok()).await, 401, "M_UNKNOWN_TOKEN");
    let old = json!({ "type": "m.login.password", "user": "alice", "password": "old-password" });
    assert_error(&server.post("/_matrix/client/v3/login", None, old).await, 403, "M_FORBIDDEN");
    server.login("alice", "new-password").await;
}

#[tokio::test]
async fn other_devices_can_be_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw1").await;
    let other = server.login("alice", "pw1").await;
    let body = json!({
        "new_password": "pw2",
        "logout_devices": false,
        "auth": { "type": "m.login.password", "user": alice.user_id, "password": "pw1" },
    });
    let (status, _) = server.post("/_matrix/client/v3/account/password", alice.tok(), body).await;
    assert_eq!(status, 200);
    assert_eq!(server.get(WHOAMI, other.tok()).await.0, 200);
    assert_error(&server.post("/_matrix/client/v3/account/password", alice.tok(), json!({})).await, 400, "M_BAD_JSON");
    assert_error(
        &server.post("/_matrix/client/v3/account/password", None, json!({ "new_password": "x" })).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn deactivation_is_final() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let other = server.login("alice", "secret").await;
    let (status, challenge) = server.post("/_matrix/client/v3/account/deactivate", alice.tok(), json!({})).await;
    assert_eq!(status, 401);
    assert!(challenge["flows"][0]["stages"].as_array().unwrap().contains(&json!("m.login.password")));

    let wrong = json!({ "auth": { "type": "m.login.password", "user": alice.user_id, "password": "wrong" } });
    let (status, retry) = server.post("/_matrix/client/v3/account/deactivate", alice.tok(), wrong).await;
    assert_eq!((status.as_u16(), retry["errcode"].as_str()), (401, Some("M_FORBIDDEN")));

    let right =
        json!({ "auth": { "type": "m.login.password", "user": alice.user_id, "password": "secret" }, "erase": true });
    let (status, reply) = server.post("/_matrix/client/v3/account/deactivate", alice.tok(), right).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["id_server_unbind_result"], "no-support");

    for token in [alice.tok(), other.tok()] {
        assert_error(&server.get(WHOAMI, token).await, 401, "M_UNKNOWN_TOKEN");
    }
    let login = json!({ "type": "m.login.password", "user": "alice", "password": "secret" });
    assert_error(&server.post("/_matrix/client/v3/login", None, login).await, 403, "M_FORBIDDEN");
    // The user ID is never handed out again, and the erased profile is gone.
    assert_error(
        &server.post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "x" })).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(&server.get("/_matrix/client/v3/profile/@alice:test.local", None).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn third_party_identifiers_are_an_empty_list() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let (status, reply) = server.get("/_matrix/client/v3/account/3pid", alice.tok()).await;
    assert_eq!((status.as_u16(), reply), (200, json!({ "threepids": [] })));
}
