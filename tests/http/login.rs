//! Login, logout, whoami and refresh tokens.

use serde_json::json;

use crate::server::{TestServer, User, assert_error};

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn login_flows_and_identifier_forms() {
    let server = TestServer::start().await;
    let (status, flows) = server.get(LOGIN, None).await;
    assert_eq!(status, 200);
    assert_eq!(flows, json!({ "flows": [{ "type": "m.login.password" }] }));

    server.register("alice", "secret").await;
    for identity in [
        json!({ "identifier": { "type": "m.id.user", "user": "alice" } }),
        json!({ "identifier": { "type": "m.id.user", "user": "@alice:test.local" } }),
        json!({ "identifier": { "type": "m.id.user", "user": "@Alice:test.local" } }),
        json!({ "identifier": { "type": "m.id.user", "user": "ALICE" } }),
        json!({ "user": "alice" }),
    ] {
        let mut body = identity.clone();
        body["type"] = json!("m.login.password");
        body["password"] = json!("secret");
        let (status, reply) = server.post(LOGIN, None, body).await;
        assert_eq!(status, 200, "{identity}: {reply}");
        assert_eq!(reply["user_id"], "@alice:test.local");
        assert_eq!(reply["home_server"], "test.local");
        let user = User::from_login(&reply, "secret");
        let (_, whoami) = server.get(WHOAMI, user.tok()).await;
        assert_eq!(whoami["user_id"], "@alice:test.local");
        assert_eq!(whoami["device_id"], reply["device_id"]);
    }
}

#[tokio::test]
async fn bad_logins_are_refused_alike() {
    let server = TestServer::start().await;
    server.register("alice", "secret").await;
    let login = |user: &str, password: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    assert_error(&server.post(LOGIN, None, login("alice", "wrong")).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(LOGIN, None, login("nobody", "secret")).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(LOGIN, None, login("@alice:elsewhere.org", "secret")).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(LOGIN, None, login("@@@", "secret")).await, 403, "M_FORBIDDEN");
    let email = json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "a@b.c" }, "password": "secret" });
    assert_error(&server.post(LOGIN, None, email).await, 403, "M_FORBIDDEN");
    let odd = json!({ "type": "m.login.password", "identifier": { "type": "m.id.weird" }, "password": "secret" });
    assert_error(&server.post(LOGIN, None, odd).await, 400, "M_UNKNOWN");
    let no_password = json!({ "type": "m.login.password", "user": "alice" });
    assert_error(&server.post(LOGIN, None, no_password).await, 400, "M_MISSING_PARAM");
    let token_login = json!({ "type": "m.login.token", "token": "abc" });
    assert_error(&server.post(LOGIN, None, token_login).await, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn logging_in_on_a_known_device_replaces_its_token() {
    let server = TestServer::start().await;
    server.register("alice", "secret").await;
    let body = json!({ "type": "m.login.password", "user": "alice", "password": "secret", "device_id": "LAPTOP", "initial_device_display_name": "Laptop" });
    let (status, first) = server.post(LOGIN, None, body.clone()).await;
    assert_eq!((status.as_u16(), first["device_id"].as_str()), (200, Some("LAPTOP")));
    let first = User::from_login(&first, "secret");
    let (_, second) = server.post(LOGIN, None, body).await;
    let second = User::from_login(&second, "secret");
    assert_eq!(second.device_id, "LAPTOP");
    assert_error(&server.get(WHOAMI, first.tok()).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(server.get(WHOAMI, second.tok()).await.0, 200);
    let (_, devices) = server.get("/_matrix/client/v3/devices", second.tok()).await;
    let laptop: Vec<_> = devices["devices"].as_array().unwrap().iter().filter(|d| d["device_id"] == "LAPTOP").collect();
    assert_eq!(laptop.len(), 1);
    assert_eq!(laptop[0]["display_name"], "Laptop");
}

#[tokio::test]
async fn logout_deletes_the_device_and_logout_all_every_device() {
    let server = TestServer::start().await;
    let first = server.register("alice", "secret").await;
    let second = server.login("alice", "secret").await;
    let (_, devices) = server.get("/_matrix/client/v3/devices", first.tok()).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);

    // Clients often send no body at all.
    let response = reqwest::Client::new()
        .post(server.url("/_matrix/client/v3/logout"))
        .bearer_auth(&second.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_error(&server.get(WHOAMI, second.tok()).await, 401, "M_UNKNOWN_TOKEN");
    let (_, devices) = server.get("/_matrix/client/v3/devices", first.tok()).await;
    let ids: Vec<_> = devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].clone()).collect();
    assert_eq!(ids, vec![json!(first.device_id)]);

    let third = server.login("alice", "secret").await;
    let (status, _) = server.post("/_matrix/client/v3/logout/all", first.tok(), json!({})).await;
    assert_eq!(status, 200);
    assert_error(&server.get(WHOAMI, first.tok()).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.get(WHOAMI, third.tok()).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.post("/_matrix/client/v3/logout", None, json!({})).await, 401, "M_MISSING_TOKEN");
    assert_error(&server.post("/_matrix/client/v3/logout", Some("mya_bogus"), json!({})).await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn tokens_work_in_the_query_string_too() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let (status, whoami) = server.get(&format!("{WHOAMI}?access_token={}", alice.token), None).await;
    assert_eq!(status, 200);
    assert_eq!(whoami["user_id"], "@alice:test.local");
    // But not both ways at once.
    let both = server.get(&format!("{WHOAMI}?access_token={}", alice.token), alice.tok()).await;
    assert_error(&both, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn refresh_tokens_expire_refresh_and_rotate() {
    let server = TestServer::start_with(&[("MYELIN_AUTH__REFRESHABLE_ACCESS_TOKEN_LIFETIME_SECS", "2")]).await;
    server.register("alice", "secret").await;
    let (status, login) = server
        .post(
            LOGIN,
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": "secret", "refresh_token": true }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(login["expires_in_ms"], 2000);
    let refresh_1 = login["refresh_token"].as_str().unwrap().to_owned();
    let access_1 = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get(WHOAMI, Some(&access_1)).await.0, 200);

    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let expired = server.get(WHOAMI, Some(&access_1)).await;
    assert_error(&expired, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true, "an expired token asks the client to refresh");

    let (status, refreshed) =
        server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh_1 })).await;
    assert_eq!(status, 200, "{refreshed}");
    let access_2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh_2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refreshed["expires_in_ms"], 2000);

    // The answer may have been lost: until the new tokens are used, the old refresh token works
    // again, and replaces what it gave out last time.
    let (status, repeated) =
        server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh_1 })).await;
    assert_eq!(status, 200, "{repeated}");
    assert_error(&server.get(WHOAMI, Some(&access_2)).await, 401, "M_UNKNOWN_TOKEN");
    let refresh_2_lost = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh_2 })).await;
    assert_error(&refresh_2_lost, 401, "M_UNKNOWN_TOKEN");

    // Using the new access token spends the old refresh token for good.
    let access_3 = repeated["access_token"].as_str().unwrap().to_owned();
    let refresh_3 = repeated["refresh_token"].as_str().unwrap().to_owned();
    let (_, whoami) = server.get(WHOAMI, Some(&access_3)).await;
    assert_eq!(whoami["device_id"], login["device_id"], "the device stays the same");
    let spent = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh_1 })).await;
    assert_error(&spent, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(spent.1.get("soft_logout"), None);
    let (status, _) = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh_3 })).await;
    assert_eq!(status, 200);

    assert_error(
        &server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": "myr_nope" })).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&server.post("/_matrix/client/v3/refresh", None, json!({})).await, 400, "M_BAD_JSON");
}
