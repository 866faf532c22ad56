//! Application services: a registration file, the `as_token` and identity assertion, exclusive
//! namespaces, and events pushed to the service in transactions. The service is a real HTTP
//! server in the test process (axum on 127.0.0.1), receiving what Myelin sends it.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, put},
};
use serde_json::{Value, json};

use crate::{
    server::{TestServer, assert_error},
    sync::{V3, create_room, enc, send_text},
};

const AS_TOKEN: &str = "as-token-of-the-bridge";
const HS_TOKEN: &str = "hs-token-of-the-bridge";

/// What the service received, and how it answers.
#[derive(Default)]
struct Received {
    /// `(txnId, Authorization header, body)` of every transaction, failed ones included.
    transactions: Mutex<Vec<(String, String, Value)>>,
    /// Transactions to refuse (500) before accepting.
    refuse: AtomicUsize,
    /// Alias queries (`GET /_matrix/app/v1/rooms/{alias}`).
    alias_queries: Mutex<Vec<String>>,
    /// Myelin's base URL, for the service's own requests.
    myelin: OnceLock<String>,
}

impl Received {
    fn accepted_events(&self) -> Vec<Value> {
        let transactions = self.transactions.lock().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut events = Vec::new();
        for (txn, _, body) in transactions.iter() {
            // A retried transaction carries the same ID and events.
            if seen.insert(txn.clone()) {
                events.extend(body["events"].as_array().unwrap().iter().cloned());
            }
        }
        events
    }
}

async fn transaction(
    State(received): State<Arc<Received>>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    received.transactions.lock().unwrap().push((txn_id, auth, body));
    let refuse = received.refuse.load(Ordering::SeqCst);
    if refuse > 0 {
        received.refuse.store(refuse - 1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    (StatusCode::OK, Json(json!({})))
}

/// The service creates the room of an alias of its namespace when asked about it.
async fn alias_query(State(received): State<Arc<Received>>, Path(alias): Path<String>) -> (StatusCode, Json<Value>) {
    received.alias_queries.lock().unwrap().push(alias.clone());
    let base = received.myelin.get().unwrap();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}{V3}/createRoom"))
        .bearer_auth(AS_TOKEN)
        .json(&json!({ "room_alias_name": alias.trim_start_matches('#').split(':').next().unwrap() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["room_id"].is_string(), "{created}");
    (StatusCode::OK, Json(json!({})))
}

/// Starts the service on a free port; returns its state and URL.
async fn start_service() -> (Arc<Received>, String) {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .route("/_matrix/app/v1/rooms/{alias}", get(alias_query))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, url)
}

/// A Myelin with one application service: sender `bridge`, users `@_bridge_.*` and aliases
/// `#_bridge_.*` exclusively.
async fn start(url: &str, rate_limited: bool) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.yaml");
    std::fs::write(
        &file,
        format!(
            "id: bridge\nurl: '{url}'\nas_token: {AS_TOKEN}\nhs_token: {HS_TOKEN}\nsender_localpart: bridge\n\
             rate_limited: {rate_limited}\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@_bridge_.*'\n\
             \x20 aliases:\n    - exclusive: true\n      regex: '#_bridge_.*'\n  rooms: []\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_with(&[
        ("MYELIN_APP_SERVICES__REGISTRATION_FILES", file.to_str().unwrap()),
        ("MYELIN_FEDERATION__RETRY_MIN_MS", "100"),
    ])
    .await;
    (server, dir)
}

async fn register_as_user(server: &TestServer, username: &str) -> (reqwest::StatusCode, Value) {
    let body = json!({ "type": "m.login.application_service", "username": username, "inhibit_login": true });
    server.post(&format!("{V3}/register"), Some(AS_TOKEN), body).await
}

#[tokio::test]
async fn the_as_token_acts_as_the_sender_or_an_asserted_user_of_the_namespace() {
    let (_received, url) = start_service().await;
    let (server, _dir) = start(&url, true).await;

    let (status, me) = server.get(&format!("{V3}/account/whoami"), Some(AS_TOKEN)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridge:test.local");
    assert!(me.get("device_id").is_none(), "a service has no device: {me}");

    // The service registers users of its namespace, without a password or UIA.
    let (status, reply) = register_as_user(&server, "_bridge_alice").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["user_id"], "@_bridge_alice:test.local");
    let (status, me) =
        server.get(&format!("{V3}/account/whoami?user_id={}", enc("@_bridge_alice:test.local")), Some(AS_TOKEN)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@_bridge_alice:test.local");

    // Outside its namespace: neither registration nor assertion.
    assert_error(&register_as_user(&server, "someone").await, 400, "M_EXCLUSIVE");
    let carol = server.register("carol", "pw").await;
    let asserted = server.get(&format!("{V3}/account/whoami?user_id={}", enc(&carol.user_id)), Some(AS_TOKEN)).await;
    assert_error(&asserted, 400, "M_EXCLUSIVE");
    // In the namespace but never registered.
    let ghost =
        server.get(&format!("{V3}/account/whoami?user_id={}", enc("@_bridge_ghost:test.local")), Some(AS_TOKEN)).await;
    assert_error(&ghost, 403, "M_FORBIDDEN");
    // Without the token, m.login.application_service is refused.
    let body = json!({ "type": "m.login.application_service", "username": "_bridge_bob" });
    assert_error(&server.post(&format!("{V3}/register"), None, body).await, 401, "M_MISSING_TOKEN");

    // Everyone else keeps out of the exclusive namespaces.
    let body = json!({ "username": "_bridge_mallory", "password": "pw", "auth": { "type": "m.login.dummy" } });
    assert_error(&server.post(&format!("{V3}/register"), None, body).await, 400, "M_EXCLUSIVE");
    assert_error(
        &server.get(&format!("{V3}/register/available?username=_bridge_mallory"), None).await,
        400,
        "M_EXCLUSIVE",
    );
    let room = create_room(&server, &carol, json!({})).await;
    let alias = format!("{V3}/directory/room/{}", enc("#_bridge_room:test.local"));
    assert_error(&server.put(&alias, carol.tok(), json!({ "room_id": room })).await, 400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn events_that_concern_the_service_reach_it_in_transactions_retried_until_accepted() {
    let (received, url) = start_service().await;
    received.refuse.store(2, Ordering::SeqCst);
    let (server, _dir) = start(&url, true).await;
    let alice = server.register("alice", "pw").await;
    register_as_user(&server, "_bridge_bob").await;
    let bob = format!("?user_id={}", enc("@_bridge_bob:test.local"));

    // A room with a user of the namespace is of interest; one without is not.
    let bridged = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (status, reply) = server.post(&format!("{V3}/join/{}{bob}", enc(&bridged)), Some(AS_TOKEN), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let hello = send_text(&server, &alice, &bridged, "hello bridge").await;
    let private = create_room(&server, &alice, json!({})).await;
    let secret = send_text(&server, &alice, &private, "not for the bridge").await;
    let (status, reply) = server
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/t1{bob}", enc(&bridged)),
            Some(AS_TOKEN),
            json!({ "msgtype": "m.text", "body": "from the bridge" }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let bodies: Vec<String> = received
            .accepted_events()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        if bodies.contains(&"from the bridge".to_owned()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not get the events: {bodies:?}\n{:?}",
            received.transactions.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = received.accepted_events();
    let ids: Vec<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert!(ids.contains(&hello.as_str()), "{ids:?}");
    assert!(!ids.contains(&secret.as_str()), "a room without the service's users is none of its business");
    let join = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == "@_bridge_bob:test.local");
    assert_eq!(join.unwrap()["content"]["membership"], "join");
    assert!(events.iter().all(|e| e["room_id"].is_string() && e.get("signatures").is_none()), "client format");

    let transactions = received.transactions.lock().unwrap();
    assert!(transactions.iter().all(|(_, auth, _)| auth == &format!("Bearer {HS_TOKEN}")));
    // The two refused tries were of the first transaction, sent again unchanged.
    assert_eq!(transactions[0].0, transactions[1].0);
    assert_eq!(transactions[1].0, transactions[2].0);
    let ids =
        |body: &Value| body["events"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&transactions[0].2), ids(&transactions[2].2));
}

#[tokio::test]
async fn the_service_lists_rooms_and_is_asked_for_aliases_of_its_namespace() {
    let (received, url) = start_service().await;
    let (server, _dir) = start(&url, false).await;
    received.myelin.set(server.base.clone()).unwrap();
    let alice = server.register("alice", "pw").await;

    // An unknown alias of the exclusive namespace: the service is asked and creates it.
    let alias = "#_bridge_irc:test.local";
    let (status, reply) = server.get(&format!("{V3}/directory/room/{}", enc(alias)), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(*received.alias_queries.lock().unwrap(), [alias]);
    let room = reply["room_id"].as_str().unwrap().to_owned();
    // Unknown aliases elsewhere are not asked about.
    let missing = server.get(&format!("{V3}/directory/room/{}", enc("#nothing:test.local")), None).await;
    assert_error(&missing, 404, "M_NOT_FOUND");
    assert_eq!(received.alias_queries.lock().unwrap().len(), 1);

    // The service lists the room in the directory, without being a moderator of it.
    let list = format!("{V3}/directory/list/appservice/irc.example/{}", enc(&room));
    assert_error(&server.put(&list, alice.tok(), json!({ "visibility": "public" })).await, 403, "M_FORBIDDEN");
    let (status, reply) = server.put(&list, Some(AS_TOKEN), json!({ "visibility": "public" })).await;
    assert_eq!(status, 200, "{reply}");
    let (_, rooms) = server.get(&format!("{V3}/publicRooms"), alice.tok()).await;
    assert!(rooms["chunk"].as_array().unwrap().iter().any(|r| r["room_id"] == room.as_str()), "{rooms}");
}
