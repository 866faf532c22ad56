//! `/register`, user-interactive authentication, availability, tokens, guests, shared secret.

use serde_json::{Value, json};

use crate::server::{SHARED_SECRET, TestServer, User, assert_error};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_walks_through_the_dummy_stage() {
    let server = TestServer::start().await;
    let (status, challenge) = server.post(REGISTER, None, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    assert!(challenge["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(challenge["params"].is_object());

    let body = json!({
        "username": "Alice",
        "password": "übers3kr1t",
        "device_id": "PHONE",
        "initial_device_display_name": "Alice's phone",
    });
    let (status, challenge) = server.post(REGISTER, None, body.clone()).await;
    assert_eq!(status, 401);
    let mut body = body;
    body["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
    let (status, reply) = server.post(REGISTER, None, body).await;
    assert_eq!(status, 200, "{reply}");
    // Usernames are lower-cased; the device is the one asked for.
    assert_eq!(reply["user_id"], "@alice:test.local");
    assert_eq!(reply["device_id"], "PHONE");
    assert_eq!(reply["home_server"], "test.local");
    assert!(reply.get("refresh_token").is_none() && reply.get("expires_in_ms").is_none());
    let alice = User::from_login(&reply, "übers3kr1t");

    let (status, whoami) = server.get("/_matrix/client/v3/account/whoami", alice.tok()).await;
    assert_eq!(status, 200);
    assert_eq!(whoami, json!({ "user_id": "@alice:test.local", "device_id": "PHONE", "is_guest": false }));
    // The display name starts as the localpart; the device has its name.
    let (_, profile) = server.get("/_matrix/client/v3/profile/@alice:test.local", None).await;
    assert_eq!(profile["displayname"], "alice");
    let (_, device) = server.get("/_matrix/client/v3/devices/PHONE", alice.tok()).await;
    assert_eq!(device["display_name"], "Alice's phone");
    // A non-ASCII password works for logging in.
    server.login("alice", "übers3kr1t").await;
}

#[tokio::test]
async fn one_shot_registration_and_remembered_fields() {
    let server = TestServer::start().await;
    // Clients that know the flow send the dummy stage straight away.
    let (status, reply) = server
        .post(REGISTER, None, json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(status, 200, "{reply}");

    // A session remembers the first request: coming back with only `auth` is enough.
    let (_, challenge) = server.post(REGISTER, None, json!({ "username": "carol", "password": "pw" })).await;
    let (status, reply) = server
        .post(REGISTER, None, json!({ "auth": { "type": "m.login.dummy", "session": challenge["session"] } }))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["user_id"], "@carol:test.local");
    server.login("carol", "pw").await;
}

#[tokio::test]
async fn a_pending_session_must_be_continued() {
    let server = TestServer::start().await;
    let body = json!({ "username": "dave", "password": "pw" });
    let (_, challenge) = server.post(REGISTER, None, body.clone()).await;
    let mut without_session = body.clone();
    without_session["auth"] = json!({ "type": "m.login.dummy" });
    let (status, again) = server.post(REGISTER, None, without_session).await;
    assert_eq!(status, 401, "{again}");
    // A session for one operation cannot be spent on another.
    let user = server.register("erin", "pw").await;
    let stolen = json!({ "devices": [], "auth": { "type": "m.login.dummy", "session": challenge["session"] } });
    assert_error(&server.post("/_matrix/client/v3/delete_devices", user.tok(), stolen).await, 403, "M_FORBIDDEN");
    // An unknown session is refused.
    let mut unknown = body;
    unknown["auth"] = json!({ "type": "m.login.dummy", "session": "nope" });
    assert_error(&server.post(REGISTER, None, unknown).await, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn usernames_are_validated_before_authentication() {
    let server = TestServer::start().await;
    for bad in ["user-!-x", "a:b", "é", "with space", "quote\"", "[x]", "£", ""] {
        let reply = server.post(REGISTER, None, json!({ "username": bad, "password": "pw" })).await;
        assert_error(&reply, 400, "M_INVALID_USERNAME");
    }
    let long = "a".repeat(250);
    assert_error(
        &server.post(REGISTER, None, json!({ "username": long, "password": "pw" })).await,
        400,
        "M_INVALID_USERNAME",
    );
    for good in ["q", "3", "a.b", "a_b", "a=b", "a-b", "a/b", "a+b"] {
        server.register(good, "pw").await;
    }
    server.register("taken", "pw").await;
    assert_error(
        &server.post(REGISTER, None, json!({ "username": "taken", "password": "pw" })).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server.post(REGISTER, None, json!({ "username": "TAKEN", "password": "pw" })).await,
        400,
        "M_USER_IN_USE",
    );

    let available = |name: &str| server.get_owned(format!("/_matrix/client/v3/register/available?username={name}"));
    let (status, reply) = available("free").await;
    assert_eq!((status.as_u16(), reply), (200, json!({ "available": true })));
    assert_error(&available("taken").await, 400, "M_USER_IN_USE");
    assert_error(&available("not%2Cvalid").await, 400, "M_INVALID_USERNAME");
    assert_error(&server.get("/_matrix/client/v3/register/available", None).await, 400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn missing_password_and_bad_kind_are_refused() {
    let server = TestServer::start().await;
    let reply = server.post(REGISTER, None, json!({ "username": "frank", "auth": { "type": "m.login.dummy" } })).await;
    assert_error(&reply, 400, "M_MISSING_PARAM");
    let reply = server.post("/_matrix/client/v3/register?kind=alien", None, json!({})).await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
    let reply = server.post(REGISTER, None, json!({ "username": "frank", "password": "x".repeat(600) })).await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
    let reply = server
        .post(REGISTER, None, json!({ "username": "frank", "password": "pw", "auth": { "type": "m.login.magic" } }))
        .await;
    assert_error(&reply, 400, "M_UNRECOGNIZED");
    // Nothing of the refused attempts was created.
    let (status, _) = server.get("/_matrix/client/v3/register/available?username=frank", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn no_username_gets_a_generated_one_and_inhibit_login_gets_no_token() {
    let server = TestServer::start().await;
    let (status, reply) =
        server.post(REGISTER, None, json!({ "password": "pw", "auth": { "type": "m.login.dummy" } })).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["user_id"].as_str().unwrap().ends_with(":test.local"));

    let (status, reply) = server
        .post(REGISTER, None, json!({ "username": "quiet", "password": "pw", "inhibit_login": true, "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "user_id": "@quiet:test.local", "home_server": "test.local" }));
    let user = server.login("quiet", "pw").await;
    let (_, devices) = server.get("/_matrix/client/v3/devices", user.tok()).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "inhibit_login created no device");
}

#[tokio::test]
async fn closed_registration() {
    let server = TestServer::start_with(&[("MYELIN_REGISTRATION__ENABLED", "false")]).await;
    let reply = server
        .post(REGISTER, None, json!({ "username": "x", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert_error(&server.get("/_matrix/client/v3/register/available?username=x", None).await, 403, "M_FORBIDDEN");
    let reply = server.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", None).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    // Shared-secret registration still works for administrators.
    let admin = shared_secret_register(&server, "admin", "pw", true).await;
    assert_eq!(admin.0, 200, "{}", admin.1);
}

#[tokio::test]
async fn registration_tokens() {
    let server = TestServer::start_with(&[
        ("MYELIN_REGISTRATION__TOKEN_REQUIRED", "true"),
        ("MYELIN_REGISTRATION__TOKENS", "letmein, other-token"),
    ])
    .await;
    let validity = |token: &str| {
        server.get_owned(format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"))
    };
    assert_eq!(validity("letmein").await.1, json!({ "valid": true }));
    assert_eq!(validity("other-token").await.1, json!({ "valid": true }));
    assert_eq!(validity("wrong").await.1, json!({ "valid": false }));

    let body = json!({ "username": "gina", "password": "pw" });
    let (status, challenge) = server.post(REGISTER, None, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.registration_token"] }]));
    // The dummy stage is not offered, and a wrong token keeps the session going.
    let mut attempt = body.clone();
    attempt["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
    assert_error(&server.post(REGISTER, None, attempt).await, 400, "M_UNRECOGNIZED");
    let mut attempt = body.clone();
    attempt["auth"] =
        json!({ "type": "m.login.registration_token", "token": "wrong", "session": challenge["session"] });
    let (status, retry) = server.post(REGISTER, None, attempt).await;
    assert_eq!(status, 401);
    assert_eq!(retry["errcode"], "M_UNAUTHORIZED");
    assert_eq!(retry["session"], challenge["session"]);
    let mut attempt = body;
    attempt["auth"] =
        json!({ "type": "m.login.registration_token", "token": "letmein", "session": challenge["session"] });
    let (status, reply) = server.post(REGISTER, None, attempt).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn guests_only_when_allowed() {
    let server = TestServer::start().await;
    let reply = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_error(&reply, 403, "M_GUEST_ACCESS_FORBIDDEN");

    let server = TestServer::start_with(&[("MYELIN_REGISTRATION__ALLOW_GUESTS", "true")]).await;
    let (status, reply) = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let guest = User::from_login(&reply, "");
    let (_, whoami) = server.get("/_matrix/client/v3/account/whoami", guest.tok()).await;
    assert_eq!(whoami["is_guest"], true);
    // Guests cannot manage devices.
    assert_error(&server.get("/_matrix/client/v3/devices", guest.tok()).await, 403, "M_GUEST_ACCESS_FORBIDDEN");
}

/// Registers through `/_synapse/admin/v1/register`; returns status and body.
pub async fn shared_secret_register(server: &TestServer, username: &str, password: &str, admin: bool) -> (u16, Value) {
    let (status, nonce) = server.get("/_synapse/admin/v1/register", None).await;
    assert_eq!(status, 200, "{nonce}");
    let nonce = nonce["nonce"].as_str().unwrap();
    let mac = myelin::service::shared_secret::sign(
        SHARED_SECRET,
        &myelin::service::shared_secret::SignedRequest { nonce, username, password, admin, user_type: None, mac: "" },
    );
    let body = json!({ "nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac });
    let (status, reply) = server.post("/_synapse/admin/v1/register", None, body).await;
    (status.as_u16(), reply)
}

#[tokio::test]
async fn shared_secret_registration() {
    let server = TestServer::start().await;
    let (status, reply) = shared_secret_register(&server, "Admin-User", "pw", true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["user_id"], "@admin-user:test.local");
    assert!(reply["access_token"].is_string() && reply["device_id"].is_string());
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", reply["access_token"].as_str()).await;
    assert_eq!(status, 200);

    let (status, reply) = shared_secret_register(&server, "us,er", "pw", false).await;
    assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_INVALID_USERNAME")));
    let (status, reply) = shared_secret_register(&server, "admin-user", "pw", false).await;
    assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_USER_IN_USE")));

    // A wrong MAC is refused, and a nonce cannot be used twice.
    let (_, nonce) = server.get("/_synapse/admin/v1/register", None).await;
    let body =
        json!({ "nonce": nonce["nonce"], "username": "mallory", "password": "pw", "admin": true, "mac": "00ff" });
    assert_error(&server.post("/_synapse/admin/v1/register", None, body.clone()).await, 403, "M_FORBIDDEN");
    assert_error(&server.post("/_synapse/admin/v1/register", None, body).await, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let server = TestServer::start_without(&["MYELIN_REGISTRATION__SHARED_SECRET"]).await;
    assert_error(&server.get("/_synapse/admin/v1/register", None).await, 400, "M_UNKNOWN");
}
