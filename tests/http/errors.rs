//! Server-wide behaviour: discovery endpoints, Matrix error bodies, CORS, limits, logs.

use reqwest::{Method, header};
use serde_json::json;

use crate::server::{TestServer, assert_error};

#[tokio::test]
async fn discovery_endpoints() {
    let server = TestServer::start_with(&[("MYELIN_PUBLIC_BASEURL", "https://matrix.test.local")]).await;
    let (status, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let list: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(list.contains(&"v1.12") && list.contains(&"r0.6.1"), "{list:?}");
    assert!(versions["unstable_features"].is_object());

    let (status, well_known) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(well_known["m.homeserver"]["base_url"], "https://matrix.test.local/");
    // No federation listener and no delegation configured: nothing to advertise.
    assert_error(&server.get("/.well-known/matrix/server", None).await, 404, "M_NOT_FOUND");

    let response = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "OK");

    assert_error(&server.get("/_matrix/client/v3/capabilities", None).await, 401, "M_MISSING_TOKEN");
    let alice = server.register("alice", "pw").await;
    let (status, caps) = server.get("/_matrix/client/v3/capabilities", alice.tok()).await;
    assert_eq!(status, 200);
    let caps = &caps["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], true);
    assert_eq!(caps["m.room_versions"]["default"], "12");
    assert_eq!(caps["m.room_versions"]["available"]["11"], "stable");
    assert_eq!(caps["m.room_versions"]["available"].as_object().unwrap().len(), 12);
}

#[tokio::test]
async fn well_known_server_names_the_delegation() {
    let server = TestServer::start_with(&[("MYELIN_WELL_KNOWN__SERVER", "fed.test.local:443")]).await;
    let (status, body) = server.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["m.server"], "fed.test.local:443");
}

#[tokio::test]
async fn every_failure_is_a_matrix_error() {
    let server = TestServer::start().await;
    assert_error(&server.get("/_matrix/client/v3/does/not/exist", None).await, 404, "M_UNRECOGNIZED");
    assert_error(&server.get("/nothing/here", None).await, 404, "M_UNRECOGNIZED");
    assert_error(
        &server.request(Method::PUT, "/_matrix/client/v3/login", None, Some(json!({}))).await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server.request(Method::DELETE, "/_matrix/client/r0/account/whoami", None, None).await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(&server.get("/_matrix/client/v3/account/whoami", None).await, 401, "M_MISSING_TOKEN");
    assert_error(&server.get("/_matrix/client/v3/account/whoami", Some("mya_nonsense")).await, 401, "M_UNKNOWN_TOKEN");
    let unknown = server.get("/_matrix/client/v3/account/whoami", Some("mya_nonsense")).await;
    assert!(unknown.1.get("soft_logout").is_none(), "a never-valid token is not a soft logout");

    let client = reqwest::Client::new();
    let raw = |body: &'static [u8]| {
        client
            .post(server.url("/_matrix/client/v3/login"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };
    for (body, errcode) in [
        (&b"{not json"[..], "M_NOT_JSON"),
        (b"", "M_NOT_JSON"),
        (b"{\"a\": \"\x81\"}", "M_NOT_JSON"),
        (b"[1, 2]", "M_BAD_JSON"),
        (b"{\"type\": 7}", "M_BAD_JSON"),
        (b"{}", "M_BAD_JSON"),
    ] {
        let response = raw(body).await.unwrap();
        let status = response.status().as_u16();
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (status, reply["errcode"].as_str().unwrap()),
            (400, errcode),
            "body {:?}: {reply}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn responses_are_json_with_cors_headers() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/_matrix/client/versions"))
        .header(header::ORIGIN, "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    // A preflight is answered without running the endpoint.
    let preflight = client
        .request(Method::OPTIONS, server.url("/_matrix/client/v3/account/whoami"))
        .header(header::ORIGIN, "https://app.element.io")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let methods = preflight.headers()[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_owned();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = preflight.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");

    // A bare OPTIONS (no preflight headers) is answered too, and does not need a token.
    let bare = client.request(Method::OPTIONS, server.url("/_matrix/client/v3/account/whoami")).send().await.unwrap();
    assert_eq!(bare.status(), 200);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = TestServer::start_with(&[("MYELIN_LIMITS__MAX_REQUEST_SIZE", "4096")]).await;
    let alice = server.register("alice", "pw").await;
    let big = json!({ "data": "x".repeat(8000) });
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.big", alice.user_id);
    assert_error(&server.put(&path, alice.tok(), big).await, 413, "M_TOO_LARGE");
    assert_error(&server.get(&path, alice.tok()).await, 404, "M_NOT_FOUND");
    let (status, _) = server.put(&path, alice.tok(), json!({ "data": "small" })).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rate_limits_answer_429_with_a_retry_time() {
    let server = TestServer::start_with(&[
        ("MYELIN_RATE_LIMITS__ENABLED", "true"),
        ("MYELIN_RATE_LIMITS__LOGIN__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__LOGIN__BURST", "3"),
    ])
    .await;
    let body = json!({ "type": "m.login.password", "user": "nobody", "password": "x" });
    for _ in 0..3 {
        assert_error(&server.post("/_matrix/client/v3/login", None, body.clone()).await, 403, "M_FORBIDDEN");
    }
    let response =
        reqwest::Client::new().post(server.url("/_matrix/client/v3/login")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["errcode"], "M_LIMIT_EXCEEDED");
    assert!(reply["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn sends_joins_and_invites_are_limited_per_user() {
    let server = TestServer::start_with(&[
        ("MYELIN_RATE_LIMITS__ENABLED", "true"),
        ("MYELIN_RATE_LIMITS__MESSAGES__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__MESSAGES__BURST", "3"),
        ("MYELIN_RATE_LIMITS__JOINS__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__JOINS__BURST", "1"),
        ("MYELIN_RATE_LIMITS__INVITES__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__INVITES__BURST", "1"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let (_, created) =
        server.post("/_matrix/client/v3/createRoom", alice.tok(), json!({ "preset": "public_chat" })).await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let send = |user: &crate::server::User, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let token = user.token.clone();
        let server = &server;
        async move { server.put(&path, Some(&token), json!({ "msgtype": "m.text", "body": "hi" })).await }
    };
    // Events (messages and state alike) share one bucket per user.
    for txn in ["t1", "t2"] {
        assert_eq!(send(&alice, txn).await.0, 200);
    }
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic");
    assert_eq!(server.put(&topic, alice.tok(), json!({ "topic": "x" })).await.0, 200);
    let refused = send(&alice, "t3").await;
    assert_error(&refused, 429, "M_LIMIT_EXCEEDED");
    assert!(refused.1["retry_after_ms"].as_u64().unwrap() > 0);
    assert_error(&server.put(&topic, alice.tok(), json!({ "topic": "y" })).await, 429, "M_LIMIT_EXCEEDED");
    let (_, messages) =
        server.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), alice.tok()).await;
    let sent = messages["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.message").count();
    assert_eq!(sent, 2, "a refused send stores nothing");

    // Joins per user; one user's limit is not another's.
    let join = |user: &crate::server::User| {
        let path = format!("/_matrix/client/v3/join/{room}");
        let token = user.token.clone();
        let server = &server;
        async move { server.post(&path, Some(&token), json!({})).await }
    };
    assert_eq!(join(&bob).await.0, 200);
    assert_eq!(send(&bob, "b1").await.0, 200);
    let (_, other) =
        server.post("/_matrix/client/v3/createRoom", carol.tok(), json!({ "preset": "public_chat" })).await;
    let other = other["room_id"].as_str().unwrap().to_owned();
    assert_error(
        &server.post(&format!("/_matrix/client/v3/join/{other}"), bob.tok(), json!({})).await,
        429,
        "M_LIMIT_EXCEEDED",
    );

    // Invites per user.
    let (_, private) = server.post("/_matrix/client/v3/createRoom", carol.tok(), json!({})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", private["room_id"].as_str().unwrap());
    assert_eq!(server.post(&invite, carol.tok(), json!({ "user_id": alice.user_id })).await.0, 200);
    assert_error(&server.post(&invite, carol.tok(), json!({ "user_id": bob.user_id })).await, 429, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn sends_and_uploads_are_limited_per_address_too() {
    // Per user two; per address three (1.5 times): every test client comes from 127.0.0.1.
    let server = TestServer::start_with(&[
        ("MYELIN_RATE_LIMITS__ENABLED", "true"),
        ("MYELIN_RATE_LIMITS__MESSAGES__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__MESSAGES__BURST", "2"),
        ("MYELIN_RATE_LIMITS__MEDIA_UPLOADS__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__MEDIA_UPLOADS__BURST", "2"),
        ("MYELIN_RATE_LIMITS__ADDRESS_MULTIPLIER", "1.5"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (_, created) =
        server.post("/_matrix/client/v3/createRoom", alice.tok(), json!({ "preset": "public_chat" })).await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    assert_eq!(server.post(&format!("/_matrix/client/v3/join/{room}"), bob.tok(), json!({})).await.0, 200);
    let send = |token: Option<&str>, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let token = token.map(str::to_owned);
        let server = &server;
        async move { server.put(&path, token.as_deref(), json!({ "msgtype": "m.text", "body": "hi" })).await }
    };
    assert_eq!(send(alice.tok(), "a1").await.0, 200);
    assert_eq!(send(alice.tok(), "a2").await.0, 200);
    assert_error(&send(alice.tok(), "a3").await, 429, "M_LIMIT_EXCEEDED");
    // Bob has both his tokens, but the address has one left.
    assert_eq!(send(bob.tok(), "b1").await.0, 200);
    let refused = send(bob.tok(), "b2").await;
    assert_error(&refused, 429, "M_LIMIT_EXCEEDED");
    assert!(refused.1["retry_after_ms"].as_u64().unwrap() > 0);

    // Uploads likewise (`/create` counts as one): two of alice's, one of bob's, then the
    // address is spent.
    for (user, expected) in [(&alice, 200), (&alice, 200), (&bob, 200), (&bob, 429)] {
        let status = server.post("/_matrix/media/v1/create", user.tok(), json!({})).await.0;
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let server = TestServer::start_with(&[
        ("MYELIN_RATE_LIMITS__ENABLED", "true"),
        ("MYELIN_RATE_LIMITS__FAILED_LOGIN__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__FAILED_LOGIN__BURST", "2"),
    ])
    .await;
    server.register("alice", "right").await;
    let attempt = |password: &str| json!({ "type": "m.login.password", "user": "alice", "password": password });
    for _ in 0..2 {
        assert_error(&server.post("/_matrix/client/v3/login", None, attempt("wrong")).await, 403, "M_FORBIDDEN");
    }
    // Even the right password waits now: guessing is throttled per account, not per address.
    assert_error(&server.post("/_matrix/client/v3/login", None, attempt("right")).await, 429, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn logs_carry_requests_but_no_secrets() {
    let server = TestServer::start_with(&[("MYELIN_LOG__LEVEL", "debug")]).await;
    let alice = server.register("alice", "hunter2-secret").await;
    let refreshed = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": "hunter2-secret", "refresh_token": true }),
        )
        .await
        .1;
    // The deprecated query-string token must not end up in the log either.
    let (status, _) =
        server.get(&format!("/_matrix/client/v3/account/whoami?access_token={}", alice.token), None).await;
    assert_eq!(status, 200);
    let log = server.log();
    assert!(log.contains("/_matrix/client/v3/account/whoami"), "requests are logged with their path");
    for secret in [
        alice.token.as_str(),
        "hunter2-secret",
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}

#[tokio::test]
async fn state_resolution_logs_only_warnings_unless_asked() {
    let quiet = TestServer::start().await;
    let verbose = TestServer::start_with(&[("MYELIN_LOG__LEVEL", "info,ruma_state_res=info")]).await;
    for server in [&quiet, &verbose] {
        let alice = server.register("alice", "pw").await;
        let room = crate::history::create_room(server, &alice, json!({})).await;
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
                Some(&alice.token),
                json!({ "msgtype": "m.text", "body": "hello" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Two lines an event at INFO would bury the server's own messages.
    assert!(!quiet.log().contains("ruma_state_res"), "{}", quiet.log());
    assert!(verbose.log().contains("ruma_state_res"), "naming it in the filter shows it");
}
