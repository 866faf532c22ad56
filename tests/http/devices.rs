//! Device management, and the user-interactive authentication that guards deletion.

use reqwest::Method;
use serde_json::json;

use crate::server::{TestServer, assert_error};

#[tokio::test]
async fn list_get_and_rename_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let (_, login) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": "secret", "device_id": "TABLET", "initial_device_display_name": "Tablet" }),
        )
        .await;
    assert_eq!(login["device_id"], "TABLET");

    let (status, devices) = server.get("/_matrix/client/v3/devices", alice.tok()).await;
    assert_eq!(status, 200);
    let devices = devices["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2);
    // The device in use has been seen, from the loopback address.
    let current = devices.iter().find(|d| d["device_id"] == alice.device_id.as_str()).unwrap();
    assert_eq!(current["last_seen_ip"], "127.0.0.1");
    assert!(current["last_seen_ts"].as_u64().unwrap() > 1_700_000_000_000);
    // A device never used since login has not been seen; the keys are there, as clients expect.
    let tablet = devices.iter().find(|d| d["device_id"] == "TABLET").unwrap();
    assert_eq!(tablet["last_seen_ip"], serde_json::Value::Null);
    assert_eq!(tablet["last_seen_ts"], serde_json::Value::Null);

    let (status, tablet) = server.get("/_matrix/client/v3/devices/TABLET", alice.tok()).await;
    assert_eq!(status, 200);
    assert_eq!(tablet["display_name"], "Tablet");
    assert_error(&server.get("/_matrix/client/v3/devices/NOPE", alice.tok()).await, 404, "M_NOT_FOUND");

    let (status, _) =
        server.put("/_matrix/client/v3/devices/TABLET", alice.tok(), json!({ "display_name": "Old tablet" })).await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/_matrix/client/v3/devices/TABLET", alice.tok()).await.1["display_name"], "Old tablet");
    // Leaving the name out changes nothing.
    let (status, _) = server.put("/_matrix/client/v3/devices/TABLET", alice.tok(), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/_matrix/client/v3/devices/TABLET", alice.tok()).await.1["display_name"], "Old tablet");
    assert_error(
        &server.put("/_matrix/client/v3/devices/NOPE", alice.tok(), json!({ "display_name": "x" })).await,
        404,
        "M_NOT_FOUND",
    );

    // Another user sees none of it.
    let bob = server.register("bob", "pw").await;
    assert_error(&server.get("/_matrix/client/v3/devices/TABLET", bob.tok()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_device_needs_the_password() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let phone = server.login("alice", "secret").await;
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);

    // No body at all: the challenge.
    let (status, challenge) = server.request(Method::DELETE, &path, alice.tok(), None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]));
    assert!(challenge["session"].is_string() && challenge["params"].is_object());

    // A wrong password: the challenge again, with the error.
    let mut wrong = alice.password_auth();
    wrong["password"] = json!("wrong");
    let (status, retry) = server.request(Method::DELETE, &path, alice.tok(), Some(json!({ "auth": wrong }))).await;
    assert_eq!(status, 401);
    assert_eq!(retry["errcode"], "M_FORBIDDEN");
    assert!(retry["flows"].is_array() && retry["session"].is_string());

    // Someone else's correct password does not authorize deleting alice's device.
    let bob = server.register("bob", "bobpw").await;
    let (status, _) =
        server.request(Method::DELETE, &path, alice.tok(), Some(json!({ "auth": bob.password_auth() }))).await;
    assert_eq!(status, 403);
    assert_eq!(server.get(&path, alice.tok()).await.0, 200);

    // The right password, continuing the session.
    let mut auth = alice.password_auth();
    auth["session"] = challenge["session"].clone();
    let (status, reply) = server.request(Method::DELETE, &path, alice.tok(), Some(json!({ "auth": auth }))).await;
    assert_eq!(status, 200, "{reply}");
    assert_error(&server.get(&path, alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get("/_matrix/client/v3/account/whoami", phone.tok()).await, 401, "M_UNKNOWN_TOKEN");

    // The legacy `user` field works in the password stage, without a session.
    let tablet = server.login("alice", "secret").await;
    let auth = json!({ "type": "m.login.password", "user": "alice", "password": "secret" });
    let path = format!("/_matrix/client/v3/devices/{}", tablet.device_id);
    let (status, _) = server.request(Method::DELETE, &path, alice.tok(), Some(json!({ "auth": auth }))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delete_several_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let a = server.login("alice", "secret").await;
    let b = server.login("alice", "secret").await;
    let body = json!({ "devices": [a.device_id, b.device_id, "NEVER_EXISTED"] });
    let (status, challenge) = server.post("/_matrix/client/v3/delete_devices", alice.tok(), body.clone()).await;
    assert_eq!(status, 401);
    let mut body = body;
    body["auth"] = alice.password_auth();
    body["auth"]["session"] = challenge["session"].clone();
    let (status, _) = server.post("/_matrix/client/v3/delete_devices", alice.tok(), body).await;
    assert_eq!(status, 200);
    let (_, devices) = server.get("/_matrix/client/v3/devices", alice.tok()).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_error(&server.get("/_matrix/client/v3/account/whoami", a.tok()).await, 401, "M_UNKNOWN_TOKEN");
    // The list is checked before any password is asked for.
    assert_error(&server.post("/_matrix/client/v3/delete_devices", alice.tok(), json!({})).await, 400, "M_BAD_JSON");
}
