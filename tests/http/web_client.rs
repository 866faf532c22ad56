//! The built-in web client at `/` and its off switch; auto-join rooms at registration.

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::{registration::shared_secret_register, server::TestServer};

#[tokio::test]
async fn the_web_client_is_served_at_the_root_with_a_strict_policy() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for (path, content_type, needle) in [
        ("/", "text/html", "<script type=\"module\" src=\"app.js\""),
        ("/index.html", "text/html", "<main"),
        ("/app.js", "text/javascript", "import"),
        ("/matrix.js", "text/javascript", "export"),
        ("/style.css", "text/css", "body"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(content_type), "{path}: {headers:?}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(response.text().await.unwrap().contains(needle), "{path} lacks {needle}");

        // Revalidation with the ETag is a 304 without a body.
        let again = client.get(server.url(path)).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.text().await.unwrap().is_empty());
    }
    // No inline script in the page: the policy would block it.
    let page = client.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains(" onclick="), "inline script in index.html");

    // The root shadows nothing: unknown paths, inside /_matrix or not, are still Matrix 404s.
    for path in ["/nothing-here", "/_matrix/client/v3/nothing-here", "/web/app.js"] {
        let (status, body) = server.get(path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{path}");
    }
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_web_client_can_be_turned_off() {
    let server = TestServer::start_with(&[("MYELIN_WEB_CLIENT__ENABLED", "false")]).await;
    for path in ["/", "/index.html", "/app.js"] {
        let (status, body) = server.get(path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{path}");
    }
}

/// The rooms a user is joined to.
async fn joined(server: &TestServer, token: &str) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/joined_rooms", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body["joined_rooms"].clone()).unwrap()
}

#[tokio::test]
async fn new_accounts_join_the_auto_join_rooms_which_are_created_on_first_use() {
    let server =
        TestServer::start_with(&[("MYELIN_REGISTRATION__AUTO_JOIN_ROOMS", "#general, #random:test.local")]).await;
    let alice = server.register("alice", "pw").await;
    let rooms = joined(&server, &alice.token).await;
    assert_eq!(rooms.len(), 2, "{rooms:?}");

    // Created public, with the alias as canonical alias, a name, and in the directory.
    let (status, general) = server.get("/_matrix/client/v3/directory/room/%23general:test.local", None).await;
    assert_eq!(status, 200, "{general}");
    let general_id = general["room_id"].as_str().unwrap().to_owned();
    assert!(rooms.contains(&general_id));
    let (_, public) = server.get("/_matrix/client/v3/publicRooms", None).await;
    let listed = public["chunk"].as_array().unwrap();
    let entry = listed.iter().find(|r| r["room_id"] == general_id.as_str()).expect("#general is in the directory");
    assert_eq!(entry["canonical_alias"], "#general:test.local");
    assert_eq!(entry["name"], "general");
    assert_eq!(entry["join_rule"], "public");

    // Later accounts, by /register or by shared secret, join the same rooms.
    let bob = server.register("bob", "pw").await;
    let mut bob_rooms = joined(&server, &bob.token).await;
    let (status, admin) = shared_secret_register(&server, "carol", "pw", false).await;
    assert_eq!(status, 200, "{admin}");
    let mut carol_rooms = joined(&server, admin["access_token"].as_str().unwrap()).await;
    let mut alice_rooms = rooms;
    for list in [&mut alice_rooms, &mut bob_rooms, &mut carol_rooms] {
        list.sort();
    }
    assert_eq!(bob_rooms, alice_rooms);
    assert_eq!(carol_rooms, alice_rooms);
    let (_, members) =
        server.get(&format!("/_matrix/client/v3/rooms/{general_id}/joined_members"), Some(&alice.token)).await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 3, "{members}");
}

#[tokio::test]
async fn a_missing_auto_join_room_is_skipped_when_autocreation_is_off() {
    let server = TestServer::start_with(&[
        ("MYELIN_REGISTRATION__AUTO_JOIN_ROOMS", "#general"),
        ("MYELIN_REGISTRATION__AUTOCREATE_AUTO_JOIN_ROOMS", "false"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    assert!(joined(&server, &alice.token).await.is_empty());

    // Once someone makes it, new accounts join it.
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.tok(),
            json!({ "preset": "public_chat", "room_alias_name": "general" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let bob = server.register("bob", "pw").await;
    assert_eq!(joined(&server, &bob.token).await, [created["room_id"].as_str().unwrap()]);
}

#[tokio::test]
async fn a_bad_auto_join_room_is_a_configuration_error() {
    let output = std::process::Command::new(crate::server::binary())
        .arg("check-config")
        .env_clear()
        .env("MYELIN_SERVER_NAME", "a.example")
        .env("MYELIN_REGISTRATION__AUTO_JOIN_ROOMS", "general")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("registration.auto_join_rooms"));
}

#[tokio::test]
async fn create_user_joins_the_auto_join_rooms_too() {
    let mut server = TestServer::start_with(&[("MYELIN_REGISTRATION__AUTO_JOIN_ROOMS", "#general")]).await;
    let alice = server.register("alice", "pw").await;
    let general = joined(&server, &alice.token).await;
    assert_eq!(general.len(), 1);
    assert!(server.terminate().success());
    let db = server.database_path();
    let output = std::process::Command::new(crate::server::binary())
        .args(["create-user", "admin", "--admin", "--password", "pw"])
        .env_clear()
        .env("MYELIN_SERVER_NAME", crate::server::SERVER_NAME)
        .env("MYELIN_DATABASE__PATH", db.to_str().unwrap())
        .env("MYELIN_REGISTRATION__AUTO_JOIN_ROOMS", "#general")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    server.restart();
    let admin = server.login("admin", "pw").await;
    assert_eq!(joined(&server, &admin.token).await, general);
}
