//! The WebSocket transport (`docs/websocket.md`), with a real WebSocket client: opening and
//! authenticating, sync updates, the requests a client may make, errors, reconnecting without
//! loss, and the server closing (shutdown, a client that does not read).

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::CloseFrame},
};

use crate::{
    server::{TestServer, User, assert_error, signal},
    sync::{
        V3, create_room, enc, joined, next_batch, room_path, send_text, shared_room, sync, sync_token, timeline_ids,
    },
};

const STREAM: &str = "/_matrix/client/unstable/io.myelin.websocket/stream";
/// How long any one message may take to come (a deadline, not a pause).
const PATIENCE: Duration = Duration::from_secs(30);

fn ws_url(server: &TestServer, query: &str) -> String {
    format!("{}{STREAM}{query}", server.base.replacen("http://", "ws://", 1))
}

/// The handshake request: the bearer token in a header and the `m.json` subprotocol.
fn request(server: &TestServer, token: &str, query: &str) -> tungstenite::handshake::client::Request {
    let mut request = ws_url(server, query).into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("Sec-WebSocket-Protocol", "m.json".parse().unwrap());
    request
}

struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Updates that came while waiting for an answer.
    updates: VecDeque<Value>,
    /// `next_batch` of the last update taken.
    last_batch: Option<String>,
}

impl Client {
    async fn connect(server: &TestServer, user: &User, query: &str) -> Self {
        let (socket, response) = connect_async(request(server, &user.token, query)).await.expect("websocket connect");
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["sec-websocket-protocol"], "m.json");
        Self { socket, updates: VecDeque::new(), last_batch: None }
    }

    /// The next JSON message, whatever it is.
    async fn recv(&mut self) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.socket.next()).await {
                Err(_) => panic!("no message within {PATIENCE:?}"),
                Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).expect("a JSON message"),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next sync update (not an answer).
    async fn update(&mut self) -> Value {
        let update = match self.updates.pop_front() {
            Some(update) => update,
            None => {
                let message = self.recv().await;
                assert!(message.get("id").is_none(), "an answer nobody asked for: {message}");
                message
            }
        };
        self.last_batch = Some(next_batch(&update));
        update
    }

    /// Updates until one has this event in the room's timeline; returns it with the `next_batch`
    /// of the update before it.
    async fn update_with(&mut self, room: &str, event_id: &str) -> (String, Value) {
        loop {
            let before = self.last_batch.clone().expect("a first update was taken");
            let update = self.update().await;
            if timeline_ids(&update, room).iter().any(|id| id == event_id) {
                return (before, update);
            }
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Sends a request and waits for its answer, keeping updates that come meanwhile.
    async fn call(&mut self, id: &str, method: &str, params: Value) -> Value {
        self.send_text(&json!({ "id": id, "method": method, "params": params }).to_string()).await;
        self.answer().await
    }

    async fn answer(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message.get("id").is_some() {
                return message;
            }
            self.updates.push_back(message);
        }
    }

    /// A request that must succeed; returns its result.
    async fn ok(&mut self, id: &str, method: &str, params: Value) -> Value {
        let answer = self.call(id, method, params).await;
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer.get("error").is_none(), "{answer}");
        answer["result"].clone()
    }

    /// Reads (skipping messages) until the server closes; returns its close frame.
    async fn closed(&mut self) -> CloseFrame {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.socket.next()).await {
                Err(_) => panic!("not closed within {PATIENCE:?}"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    // Read on, as clients do, so that the answering close frame goes out.
                    while let Ok(Some(Ok(_))) = tokio::time::timeout(left, self.socket.next()).await {}
                    return frame;
                }
                Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// Opening

#[tokio::test]
async fn the_first_message_after_a_header_authenticated_connect_is_a_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let said = send_text(&server, &alice, &room, "hello").await;

    let mut client = Client::connect(&server, &alice, "").await;
    let first = client.update().await;
    assert!(first["next_batch"].is_string(), "{first}");
    assert_eq!(timeline_ids(&first, &room).last(), Some(&said), "an initial sync: {first}");
    let section = joined(&first, &room);
    let events =
        section["state"]["events"].as_array().unwrap().iter().chain(section["timeline"]["events"].as_array().unwrap());
    assert_eq!(events.filter(|e| e["type"] == "m.room.create").count(), 1, "the whole room: {section}");
    // Shaped exactly like a /sync answer.
    assert_eq!(keys(&first), keys(&sync(&server, &alice, &[]).await));
}

#[tokio::test]
async fn an_access_token_in_the_query_authenticates_too() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let query = format!("?access_token={}", enc(&alice.token));
    let (mut socket, response) = connect_async(ws_url(&server, &query)).await.expect("websocket connect");
    assert_eq!(response.status(), 101);
    let first = match socket.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Value>(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(first["next_batch"].is_string(), "{first}");
    assert!(joined(&first, &room).is_object(), "{first}");
}

#[tokio::test]
async fn bad_tokens_and_parameters_are_plain_http_errors_before_the_upgrade() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mut bad = alice.clone();
    bad.token = "not-a-token".into();

    // A WebSocket client sees the refusal as an HTTP answer instead of the upgrade.
    match connect_async(request(&server, &bad.token, "")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401 answer, got {other:?}"),
    }
    // The same handshake over plain HTTP shows the Matrix error.
    let handshake = |token: Option<&str>, query: &str| {
        let mut request = reqwest::Client::new()
            .get(format!("{}{STREAM}{query}", server.base))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    assert_error(&handshake(Some("not-a-token"), "").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&handshake(None, "").await, 401, "M_MISSING_TOKEN");
    assert_error(&handshake(alice.tok(), "?since=garbage").await, 400, "M_INVALID_PARAM");
    assert_error(&handshake(alice.tok(), "?filter=unknown").await, 400, "M_INVALID_PARAM");
    assert_error(&handshake(alice.tok(), "?set_presence=asleep").await, 400, "M_INVALID_PARAM");
    assert_error(&handshake(alice.tok(), &format!("?filter={}", enc("{\"room\":1}"))).await, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn versions_advertise_the_websocket() {
    let server = TestServer::start().await;
    let (status, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert_eq!(versions["unstable_features"]["io.myelin.websocket"], true, "{versions}");
}

// ---------------------------------------------------------------------------------------------
// Updates

#[tokio::test]
async fn another_users_message_arrives_as_an_update_shaped_like_a_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    // Bob syncs first, so that he is online already: his first send would otherwise also bring
    // him online, a presence change that may land after the update and move the next sync's token.
    sync(&server, &bob, &[]).await;
    let mut client = Client::connect(&server, &alice, "").await;
    let first = client.update().await;

    let event_id = send_text(&server, &bob, &room, "over the socket").await;
    let (before, update) = client.update_with(&room, &event_id).await;
    assert_eq!(keys(&update), keys(&first));
    assert_eq!(timeline_ids(&update, &room), std::slice::from_ref(&event_id));
    let event = &joined(&update, &room)["timeline"]["events"][0];
    assert_eq!((&event["sender"], &event["content"]["body"]), (&json!(bob.user_id), &json!("over the socket")));
    assert_ne!(next_batch(&update), before);
    // What a /sync from the previous update's token answers.
    let polled = sync(&server, &alice, &[("since", &before)]).await;
    assert_eq!(timeline_ids(&polled, &room), [event_id]);
    assert_eq!(next_batch(&polled), next_batch(&update));
}

#[tokio::test]
async fn reconnecting_from_the_last_next_batch_misses_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;
    let seen = send_text(&server, &bob, &room, "seen").await;
    let (_, update) = client.update_with(&room, &seen).await;
    let last = next_batch(&update);
    client.socket.close(None).await.unwrap();
    drop(client);

    let missed = [send_text(&server, &bob, &room, "one").await, send_text(&server, &bob, &room, "two").await];
    let mut client = Client::connect(&server, &alice, &format!("?since={}", enc(&last))).await;
    let first = client.update().await;
    assert_eq!(timeline_ids(&first, &room), missed, "{first}");
    assert_eq!(joined(&first, &room)["timeline"]["limited"], false);
}

// ---------------------------------------------------------------------------------------------
// Requests

#[tokio::test]
async fn send_answers_with_the_event_id_and_a_repeated_id_is_not_a_duplicate() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &bob).await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;

    let params = json!({ "room_id": room, "event_type": "m.room.message", "content": { "msgtype": "m.text", "body": "hi bob" } });
    let sent = client.ok("m1", "send", params.clone()).await;
    let event_id = sent["event_id"].as_str().expect("an event ID").to_owned();
    let reply = sync(&server, &bob, &[("since", &since), ("timeout", "30000")]).await;
    assert_eq!(timeline_ids(&reply, &room), std::slice::from_ref(&event_id));
    let event = &joined(&reply, &room)["timeline"]["events"][0];
    assert_eq!((&event["sender"], &event["content"]["body"]), (&json!(alice.user_id), &json!("hi bob")));

    // The same request ID again: the same event, also after reconnecting.
    assert_eq!(client.ok("m1", "send", params.clone()).await["event_id"], event_id);
    drop(client);
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;
    assert_eq!(client.ok("m1", "send", params.clone()).await["event_id"], event_id);
    let other = client.ok("m2", "send", params).await["event_id"].as_str().unwrap().to_owned();
    assert_ne!(other, event_id);
    let reply = sync(&server, &bob, &[("since", &next_batch(&reply))]).await;
    assert_eq!(timeline_ids(&reply, &room), [other], "one new event, the resends made none");
}

#[tokio::test]
async fn state_typing_read_markers_and_ping() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let mut since = sync_token(&server, &bob).await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;

    assert_eq!(client.ok("p", "ping", json!({})).await, json!({}));

    let params =
        json!({ "room_id": room, "event_type": "m.room.topic", "state_key": "", "content": { "topic": "sockets" } });
    let topic = client.ok("s", "state", params).await["event_id"].as_str().unwrap().to_owned();
    let (status, content) = server.get(&room_path(&room, "state/m.room.topic/"), bob.tok()).await;
    assert_eq!((status.as_u16(), content), (200, json!({ "topic": "sockets" })));
    let reply = sync(&server, &bob, &[("since", &since)]).await;
    assert_eq!(timeline_ids(&reply, &room), [topic]);
    since = next_batch(&reply);

    assert_eq!(client.ok("t", "typing", json!({ "room_id": room, "typing": true, "timeout": 20000 })).await, json!({}));
    let reply = sync(&server, &bob, &[("since", &since), ("timeout", "30000")]).await;
    let ephemeral = joined(&reply, &room)["ephemeral"]["events"].as_array().unwrap().clone();
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").expect("typing");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    since = next_batch(&reply);

    let from_bob = send_text(&server, &bob, &room, "read me").await;
    let reply = sync(&server, &bob, &[("since", &since)]).await;
    since = next_batch(&reply);
    let markers = json!({ "room_id": room, "m.fully_read": from_bob, "m.read": from_bob });
    assert_eq!(client.ok("r", "read_markers", markers).await, json!({}));
    let reply = sync(&server, &bob, &[("since", &since), ("timeout", "30000")]).await;
    let ephemeral = joined(&reply, &room)["ephemeral"]["events"].as_array().unwrap().clone();
    let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").expect("a receipt");
    assert!(receipt["content"][&from_bob]["m.read"][&alice.user_id]["ts"].is_u64(), "{receipt}");
    let path = format!("{V3}/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice.user_id), enc(&room));
    assert_eq!(server.get(&path, alice.tok()).await.1, json!({ "event_id": from_bob }));
}

#[tokio::test]
async fn bad_requests_get_matrix_errors_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let not_mine = create_room(&server, &bob, json!({})).await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;
    let errcode = |answer: &Value| answer["error"]["errcode"].as_str().unwrap_or_default().to_owned();

    let answer = client.call("u", "dance", json!({})).await;
    assert_eq!((&answer["id"], errcode(&answer)), (&json!("u"), "M_UNRECOGNIZED".into()), "{answer}");
    assert!(answer["error"]["error"].is_string());
    let answer = client.call("m", "send", json!({ "room_id": room, "event_type": "m.room.message" })).await;
    assert_eq!((&answer["id"], errcode(&answer)), (&json!("m"), "M_MISSING_PARAM".into()), "{answer}");
    let answer = client.call("t", "typing", json!({ "room_id": room })).await;
    assert_eq!(errcode(&answer), "M_MISSING_PARAM", "{answer}");
    let answer = client.call("w", "send", json!({ "room_id": room, "event_type": 5, "content": {} })).await;
    assert_eq!(errcode(&answer), "M_BAD_JSON", "{answer}");
    let content = json!({ "msgtype": "m.text", "body": "let me in" });
    let answer = client
        .call("f", "send", json!({ "room_id": not_mine, "event_type": "m.room.message", "content": content }))
        .await;
    assert_eq!(errcode(&answer), "M_FORBIDDEN", "as PUT /send would answer: {answer}");

    client.send_text("this is not JSON").await;
    let answer = client.answer().await;
    assert_eq!((&answer["id"], errcode(&answer)), (&Value::Null, "M_BAD_JSON".into()), "{answer}");
    client.send_text(r#"{"id": "no-method"}"#).await;
    let answer = client.answer().await;
    assert_eq!((&answer["id"], errcode(&answer)), (&json!("no-method"), "M_BAD_JSON".into()), "{answer}");

    assert_eq!(client.ok("still-here", "ping", json!({})).await, json!({}));
}

// ---------------------------------------------------------------------------------------------
// Closing

#[tokio::test]
async fn shutting_the_server_down_closes_the_socket_with_1001() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;
    signal(server.pid(), "TERM");
    let frame = client.closed().await;
    assert_eq!(u16::from(frame.code), 1001, "{frame}");
    assert!(server.wait_for_exit().success());
    assert!(server.log().contains("database closed cleanly"), "{}", server.log());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1008() {
    // The close is logged at debug level; the log tells the test when to read again.
    let server = TestServer::start_with(&[("MYELIN_LOG__LEVEL", "info,myelin::api::client::websocket=debug")]).await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let mut client = Client::connect(&server, &alice, "").await;
    client.update().await;

    // Alice stops reading. Bob sends large messages until the socket's buffers are full and the
    // server, unable to write for its write timeout (10 s), gives up.
    let big = "x".repeat(60_000);
    let given_up = || server.log().lines().any(|line| line.contains("closing websocket") && line.contains("1008"));
    for i in 0..400 {
        if given_up() {
            break;
        }
        let (status, reply) = server
            .put(
                &room_path(&room, &format!("send/m.room.message/big{i}")),
                bob.tok(),
                json!({ "msgtype": "m.text", "body": big }),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !given_up() {
        assert!(Instant::now() < deadline, "the server never gave up on the client; its log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading again drains the buffers, and the close frame comes after what was queued.
    let frame = client.closed().await;
    assert_eq!(u16::from(frame.code), 1008, "{frame}");
    assert!(frame.reason.contains("Too slow"), "{frame}");
}
