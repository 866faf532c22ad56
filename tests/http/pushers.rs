//! Pushers: `/pushers` and `/pushers/set` (validation, `append`), their deletion with their device
//! (logout, device deletion, password change), and notifications delivered to a push gateway, a
//! real HTTP server in the test process (axum on 127.0.0.1).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    server::{TestServer, User, assert_error},
    sync::{V3, enc, send, send_text, shared_room},
};

/// What the gateway received, and the pushkeys it rejects.
#[derive(Default)]
struct Gateway {
    notifications: Mutex<Vec<Value>>,
    reject: Mutex<Vec<String>>,
}

async fn notify(State(gateway): State<Arc<Gateway>>, Json(body): Json<Value>) -> Json<Value> {
    gateway.notifications.lock().unwrap().push(body.clone());
    let reject = gateway.reject.lock().unwrap().clone();
    let rejected: Vec<&Value> = body["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| &d["pushkey"])
        .filter(|k| reject.iter().any(|r| *k == r.as_str()))
        .collect();
    Json(json!({ "rejected": rejected }))
}

/// Starts a gateway on a free port of 127.0.0.1; returns its state and notify URL.
async fn start_gateway() -> (Arc<Gateway>, String) {
    start_gateway_on("127.0.0.1").await
}

async fn start_gateway_on(address: &str) -> (Arc<Gateway>, String) {
    let gateway = Arc::new(Gateway::default());
    let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (gateway, url)
}

impl Gateway {
    /// Waits (up to 10 s) for a notification of the event to the pushkey.
    async fn wait_for(&self, event_id: &str, pushkey: &str) -> Value {
        for _ in 0..200 {
            let found = self.find(event_id, pushkey);
            if let Some(found) = found {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no notification of {event_id} to {pushkey}: {:?}", self.notifications.lock().unwrap());
    }

    fn find(&self, event_id: &str, pushkey: &str) -> Option<Value> {
        self.notifications
            .lock()
            .unwrap()
            .iter()
            .find(|n| {
                n["notification"]["event_id"] == event_id && n["notification"]["devices"][0]["pushkey"] == pushkey
            })
            .cloned()
    }
}

fn pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "pushkey": pushkey,
        "lang": "en",
        "data": { "url": url },
    })
}

const URL: &str = "https://push.example.org/_matrix/push/v1/notify";

/// Gateways are denied the server's own network unless allowed, as outbound federation is.
const GATEWAY_ON_LOOPBACK: (&str, &str) = ("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "127.0.0.1");

async fn set(server: &TestServer, user: &User, body: Value) -> (reqwest::StatusCode, Value) {
    server.post(&format!("{V3}/pushers/set"), user.tok(), body).await
}

async fn pushkeys(server: &TestServer, user: &User) -> Vec<String> {
    let (status, reply) = server.get(&format!("{V3}/pushers"), user.tok()).await;
    assert_eq!(status, 200, "{reply}");
    let mut keys: Vec<String> =
        reply["pushers"].as_array().unwrap().iter().map(|p| p["pushkey"].as_str().unwrap().to_owned()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn set_get_and_delete() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    assert_eq!(server.get(&format!("{V3}/pushers"), alice.tok()).await.1, json!({ "pushers": [] }));

    let mut body = pusher("key-1", URL);
    body["profile_tag"] = json!("tag");
    body["data"]["format"] = json!("event_id_only");
    body["data"]["custom"] = json!(7);
    let (status, reply) = set(&server, &alice, body).await;
    assert_eq!(status, 200, "{reply}");
    let (_, reply) = server.get(&format!("{V3}/pushers"), alice.tok()).await;
    assert_eq!(
        reply,
        json!({ "pushers": [{
            "pushkey": "key-1", "kind": "http", "app_id": "org.example.app", "app_display_name": "Example",
            "device_display_name": "Phone", "profile_tag": "tag", "lang": "en",
            "data": { "url": URL, "format": "event_id_only", "custom": 7 },
        }] })
    );

    // The same app ID and pushkey again replace it; another pushkey adds one.
    let mut changed = pusher("key-1", URL);
    changed["lang"] = json!("fr");
    assert_eq!(set(&server, &alice, changed).await.0, 200);
    assert_eq!(set(&server, &alice, pusher("key-2", URL)).await.0, 200);
    let (_, reply) = server.get(&format!("{V3}/pushers"), alice.tok()).await;
    let pushers = reply["pushers"].as_array().unwrap();
    assert_eq!(pushers.len(), 2, "{reply}");
    let first = pushers.iter().find(|p| p["pushkey"] == "key-1").unwrap();
    assert_eq!(first["lang"], "fr");
    assert!(first.get("profile_tag").is_none(), "{first}");

    // Another user does not see them.
    let bob = server.register("bob", "secret").await;
    assert!(pushkeys(&server, &bob).await.is_empty());

    // `kind: null` deletes.
    let deletion = json!({ "kind": null, "app_id": "org.example.app", "pushkey": "key-1" });
    assert_eq!(set(&server, &alice, deletion).await.0, 200);
    assert_eq!(pushkeys(&server, &alice).await, ["key-2"]);

    assert_error(&server.get(&format!("{V3}/pushers"), None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn set_validates_the_pusher() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;

    for field in ["kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang", "data"] {
        let mut body = pusher("key", URL);
        body.as_object_mut().unwrap().remove(field);
        assert_error(&set(&server, &alice, body).await, 400, "M_MISSING_PARAM");
    }
    let mut body = pusher("key", URL);
    body["lang"] = json!(5);
    assert_error(&set(&server, &alice, body).await, 400, "M_BAD_JSON");
    let mut body = pusher("key", URL);
    body["data"] = json!("not an object");
    assert_error(&set(&server, &alice, body).await, 400, "M_BAD_JSON");

    let bad_urls = [
        json!({}),
        json!({ "url": 5 }),
        json!({ "url": "not a url" }),
        json!({ "url": "ftp://push.example.org/_matrix/push/v1/notify" }),
        json!({ "url": "https://push.example.org/notify" }),
        json!({ "url": URL, "format": "full" }),
    ];
    for data in bad_urls {
        let mut body = pusher("key", URL);
        body["data"] = data.clone();
        assert_error(&set(&server, &alice, body).await, 400, "M_INVALID_PARAM");
    }
    let mut email = pusher("alice@example.org", URL);
    email["kind"] = json!("email");
    assert_error(&set(&server, &alice, email).await, 400, "M_INVALID_PARAM");
    let mut unknown = pusher("key", URL);
    unknown["kind"] = json!("carrier-pigeon");
    assert_error(&set(&server, &alice, unknown).await, 400, "M_INVALID_PARAM");

    // The spec's limits: pushkey 512 bytes, app_id 64 characters.
    assert_eq!(set(&server, &alice, pusher(&"k".repeat(512), URL)).await.0, 200);
    assert_error(&set(&server, &alice, pusher(&"k".repeat(513), URL)).await, 400, "M_INVALID_PARAM");
    let mut long_app = pusher("key", URL);
    long_app["app_id"] = json!("é".repeat(64));
    assert_eq!(set(&server, &alice, long_app).await.0, 200);
    let mut too_long_app = pusher("key", URL);
    too_long_app["app_id"] = json!("a".repeat(65));
    assert_error(&set(&server, &alice, too_long_app).await, 400, "M_INVALID_PARAM");

    // Nothing refused was stored.
    assert_eq!(pushkeys(&server, &alice).await, ["key".to_owned(), "k".repeat(512)]);
}

#[tokio::test]
async fn without_append_a_pushkey_leaves_other_users() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let bob = server.register("bob", "secret").await;
    let carol = server.register("carol", "secret").await;

    assert_eq!(set(&server, &alice, pusher("shared", URL)).await.0, 200);
    // With `append`, both keep it.
    let mut appended = pusher("shared", URL);
    appended["append"] = json!(true);
    assert_eq!(set(&server, &bob, appended).await.0, 200);
    assert_eq!(pushkeys(&server, &alice).await, ["shared"]);
    assert_eq!(pushkeys(&server, &bob).await, ["shared"]);

    // Without it (the default), the others lose it; another app ID's same pushkey stays.
    let mut other_app = pusher("shared", URL);
    other_app["app_id"] = json!("org.example.other");
    other_app["append"] = json!(true);
    assert_eq!(set(&server, &alice, other_app).await.0, 200);
    assert_eq!(set(&server, &carol, pusher("shared", URL)).await.0, 200);
    assert!(pushkeys(&server, &bob).await.is_empty());
    let (_, reply) = server.get(&format!("{V3}/pushers"), alice.tok()).await;
    let apps: Vec<&Value> = reply["pushers"].as_array().unwrap().iter().map(|p| &p["app_id"]).collect();
    assert_eq!(apps, [&json!("org.example.other")], "{reply}");
    assert_eq!(pushkeys(&server, &carol).await, ["shared"]);
}

#[tokio::test]
async fn a_devices_pushers_go_with_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let phone = server.login("alice", "secret").await;
    let tablet = server.login("alice", "secret").await;
    let laptop = server.login("alice", "secret").await;
    for (user, key) in [(&alice, "main"), (&phone, "phone"), (&tablet, "tablet"), (&laptop, "laptop")] {
        assert_eq!(set(&server, user, pusher(key, URL)).await.0, 200);
    }
    assert_eq!(pushkeys(&server, &alice).await, ["laptop", "main", "phone", "tablet"]);

    // Logout.
    assert_eq!(server.post(&format!("{V3}/logout"), phone.tok(), json!({})).await.0, 200);
    assert_eq!(pushkeys(&server, &alice).await, ["laptop", "main", "tablet"]);

    // Device deletion.
    let path = format!("{V3}/devices/{}", tablet.device_id);
    let (status, reply) =
        server.request(Method::DELETE, &path, alice.tok(), Some(json!({ "auth": alice.password_auth() }))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(pushkeys(&server, &alice).await, ["laptop", "main"]);

    // Logout everywhere.
    assert_eq!(server.post(&format!("{V3}/logout/all"), laptop.tok(), json!({})).await.0, 200);
    let fresh = server.login("alice", "secret").await;
    assert!(pushkeys(&server, &fresh).await.is_empty());
}

#[tokio::test]
async fn a_password_change_keeps_only_the_current_devices_pushers() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret").await;
    let other = server.login("alice", "secret").await;
    assert_eq!(set(&server, &alice, pusher("mine", URL)).await.0, 200);
    assert_eq!(set(&server, &other, pusher("theirs", URL)).await.0, 200);

    // `logout_devices: false` keeps everything.
    let body = json!({ "new_password": "second", "logout_devices": false, "auth": alice.password_auth() });
    assert_eq!(server.post(&format!("{V3}/account/password"), alice.tok(), body).await.0, 200);
    assert_eq!(pushkeys(&server, &alice).await, ["mine", "theirs"]);

    let mut auth = alice.password_auth();
    auth["password"] = json!("second");
    let body = json!({ "new_password": "third", "auth": auth });
    let (status, reply) = server.post(&format!("{V3}/account/password"), alice.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(pushkeys(&server, &alice).await, ["mine"]);
}

#[tokio::test]
async fn notifications_reach_the_gateway() {
    let (gateway, url) = start_gateway().await;
    let server = TestServer::start_with(&[GATEWAY_ON_LOOPBACK, ("MYELIN_FEDERATION__RETRY_MIN_MS", "100")]).await;
    let alice = server.register("alice", "secret").await;
    let bob = server.register("bob", "secret").await;
    let carol = server.register("carol", "secret").await;
    let room = shared_room(&server, &bob, &[&alice, &carol]).await;
    let (status, _) =
        server.put(&format!("{V3}/rooms/{room}/state/m.room.name/"), bob.tok(), json!({ "name": "Garden" })).await;
    assert_eq!(status, 200);
    let mut body = pusher("alice-key", &url);
    body["data"]["extra"] = json!("kept");
    assert_eq!(set(&server, &alice, body).await.0, 200);
    let mut body = pusher("carol-key", &url);
    body["data"]["format"] = json!("event_id_only");
    assert_eq!(set(&server, &carol, body).await.0, 200);

    // Alice's own message is not pushed to her (Carol gets it).
    let own = send_text(&server, &alice, &room, "from alice").await;
    let event = send_text(&server, &bob, &room, "hello alice").await;

    let to_alice = gateway.wait_for(&event, "alice-key").await;
    let to_carol_event = gateway.wait_for(&event, "carol-key").await;
    let n = &to_alice["notification"];
    assert_eq!(n["room_id"], room);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], bob.user_id);
    assert_eq!(n["sender_display_name"], "bob");
    assert_eq!(n["room_name"], "Garden");
    assert_eq!(n["content"], json!({ "msgtype": "m.text", "body": "hello alice" }));
    assert_eq!(n["prio"], "high");
    assert!(n["counts"]["unread"].as_u64().unwrap() >= 1, "{n}");
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["data"], json!({ "extra": "kept" }), "the URL is not sent: {device}");
    assert!(device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000, "{device}");
    assert!(device["tweaks"].is_object(), "{device}");

    // Carol's pusher is `event_id_only`: no content, sender or names.
    let n = &to_carol_event["notification"];
    assert_eq!(n["room_id"], room);
    assert_eq!(n["devices"][0]["data"], json!({ "format": "event_id_only" }));
    for field in ["content", "sender", "sender_display_name", "room_name", "type"] {
        assert!(n.get(field).is_none(), "{field} in {n}");
    }
    gateway.wait_for(&own, "carol-key").await;

    // Notifications of one event are worked out together and sent at once: had alice's own been
    // pushed to her, it would arrive with carol's (give it a moment).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gateway.find(&own, "alice-key").is_none(), "the sender's own message is pushed to them");
    // A mention highlights; by the default rules it also plays a sound.
    let content = json!({ "msgtype": "m.text", "body": "look", "m.mentions": { "user_ids": [alice.user_id] } });
    let mention = send(&server, &bob, &room, "m.room.message", content).await;
    let tweaks = &gateway.wait_for(&mention, "alice-key").await["notification"]["devices"][0]["tweaks"];
    assert_eq!(tweaks["highlight"], true, "{tweaks}");
    assert_eq!(tweaks["sound"], "default", "{tweaks}");

    // Alice mutes the room with a push rule: nothing more reaches her phone; Carol still hears.
    let (status, reply) =
        server.put(&format!("{V3}/pushrules/global/room/{}", enc(&room)), alice.tok(), json!({ "actions": [] })).await;
    assert_eq!(status, 200, "{reply}");
    let muted = send_text(&server, &bob, &room, "quiet please").await;
    gateway.wait_for(&muted, "carol-key").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gateway.find(&muted, "alice-key").is_none(), "a muted room is pushed");

    // The state event (not a message) is not pushed either.
    assert!(gateway.notifications.lock().unwrap().iter().all(|n| n["notification"]["type"] != "m.room.name"));
}

#[tokio::test]
async fn a_rejected_pushkey_is_deleted() {
    let (gateway, url) = start_gateway().await;
    let server = TestServer::start_with(&[GATEWAY_ON_LOOPBACK, ("MYELIN_FEDERATION__RETRY_MIN_MS", "100")]).await;
    let alice = server.register("alice", "secret").await;
    let bob = server.register("bob", "secret").await;
    let room = shared_room(&server, &bob, &[&alice]).await;
    gateway.reject.lock().unwrap().push("stale".to_owned());
    assert_eq!(set(&server, &alice, pusher("stale", &url)).await.0, 200);
    assert_eq!(set(&server, &alice, pusher("fresh", &url)).await.0, 200);

    let event = send_text(&server, &bob, &room, "hello").await;
    gateway.wait_for(&event, "stale").await;
    gateway.wait_for(&event, "fresh").await;
    for _ in 0..200 {
        if pushkeys(&server, &alice).await == ["fresh"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pushkeys(&server, &alice).await, ["fresh"]);
}

#[tokio::test]
async fn gateways_in_denied_ranges_are_not_called() {
    // 127.0.0.1 is allowed, the rest of the loopback range is not (both reach this process).
    let (allowed, allowed_url) = start_gateway().await;
    let (denied, denied_url) = start_gateway_on("127.0.0.2").await;
    let server = TestServer::start_with(&[GATEWAY_ON_LOOPBACK]).await;
    let alice = server.register("alice", "secret").await;
    let bob = server.register("bob", "secret").await;
    let room = shared_room(&server, &bob, &[&alice]).await;
    assert_eq!(set(&server, &alice, pusher("denied-key", &denied_url)).await.0, 200);
    let mut body = pusher("allowed-key", &allowed_url);
    body["append"] = json!(true);
    body["app_id"] = json!("org.example.other");
    assert_eq!(set(&server, &alice, body).await.0, 200);

    let event = send_text(&server, &bob, &room, "hello").await;
    allowed.wait_for(&event, "allowed-key").await;
    // Both pushes start together; the denied one would have arrived by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(denied.notifications.lock().unwrap().is_empty(), "a gateway on a denied address was called");
}
