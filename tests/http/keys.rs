//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim` (one-time keys in
//! upload order, then the fallback key), `/keys/changes`, cross-signing keys and signatures, the
//! sync's `device_lists`, one-time key counts and unused fallback key types (with the wake-up of a
//! parked sync), device deletion, restarts, key backups, and keys of users of another server (asked
//! through it; their changes told by `m.device_list_update`). Keys are real ed25519 keys signed with
//! ruma, as a client signs them.

use std::time::{Duration, Instant};

use reqwest::Method;
use ruma::{
    canonical_json::try_from_json_map,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Map, Value, json};

use crate::{
    server::{TestServer, User, assert_error},
    sync::{V3, enc, join, leave, next_batch, shared_room, sync, sync_token},
};

// ---------------------------------------------------------------------------------------------
// Helpers: keys as a client makes them

/// An ed25519 key pair whose key ID is `ed25519:{name}`.
struct SigningKey {
    pair: Ed25519KeyPair,
    public: String,
}

impl SigningKey {
    /// A key named `name` (a device ID); `None` names it after its public key (cross-signing).
    fn new(name: Option<&str>) -> Self {
        let der = Ed25519KeyPair::generate();
        let public = b64(&Ed25519KeyPair::from_der(&der, "x".into()).unwrap().public_key());
        let name = name.map_or(public.clone(), str::to_owned);
        Self { pair: Ed25519KeyPair::from_der(&der, name).unwrap(), public }
    }

    fn id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// `object` with this key's signature by `signer` added.
    fn sign(&self, signer: &str, object: Value) -> Value {
        let Value::Object(map) = object else { panic!("sign an object") };
        let mut canonical = try_from_json_map(map).unwrap();
        sign_json(signer, &self.pair, &mut canonical).unwrap();
        serde_json::to_value(canonical).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64::<Standard>::new(bytes.to_vec()).encode()
}

/// A key that looks like a curve25519 key (32 random bytes).
fn curve_key() -> String {
    SigningKey::new(Some("c")).public
}

/// A user's device with its ed25519 key.
struct Device {
    user: User,
    key: SigningKey,
}

impl Device {
    fn new(user: &User) -> Self {
        Self { user: user.clone(), key: SigningKey::new(Some(&user.device_id)) }
    }

    /// The device's identity keys, signed by itself.
    fn device_keys(&self) -> Value {
        let (user, device) = (&self.user.user_id, &self.user.device_id);
        self.key.sign(
            user,
            json!({
                "user_id": user,
                "device_id": device,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": { format!("ed25519:{device}"): self.key.public, format!("curve25519:{device}"): curve_key() },
            }),
        )
    }

    /// `count` signed one-time keys with IDs `{prefix}{n}`.
    fn one_time_keys(&self, prefix: &str, count: usize) -> Map<String, Value> {
        (0..count)
            .map(|n| {
                let key = self.key.sign(&self.user.user_id, json!({ "key": curve_key() }));
                (format!("signed_curve25519:{prefix}{n}"), key)
            })
            .collect()
    }

    fn fallback_key(&self, id: &str) -> Map<String, Value> {
        let key = self.key.sign(&self.user.user_id, json!({ "key": curve_key(), "fallback": true }));
        [(format!("signed_curve25519:{id}"), key)].into_iter().collect()
    }

    async fn upload(&self, server: &TestServer, body: Value) -> Value {
        let (status, reply) = server.post(&format!("{V3}/keys/upload"), self.user.tok(), body).await;
        assert_eq!(status, 200, "{reply}");
        reply
    }

    /// Uploads the identity keys and `otks` one-time keys.
    async fn publish(&self, server: &TestServer, otks: usize) {
        let body = json!({ "device_keys": self.device_keys(), "one_time_keys": self.one_time_keys("A", otks) });
        self.upload(server, body).await;
    }
}

async fn query(server: &TestServer, user: &User, device_keys: Value) -> Value {
    let (status, reply) =
        server.post(&format!("{V3}/keys/query"), user.tok(), json!({ "device_keys": device_keys })).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn claim(server: &TestServer, user: &User, one_time_keys: Value) -> Value {
    let body = json!({ "one_time_keys": one_time_keys });
    let (status, reply) = server.post(&format!("{V3}/keys/claim"), user.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

fn changed(reply: &Value) -> Vec<String> {
    strings(&reply["device_lists"]["changed"])
}

fn left(reply: &Value) -> Vec<String> {
    strings(&reply["device_lists"]["left"])
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array().map(|l| l.iter().map(|s| s.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Upload, query, claim

#[tokio::test]
async fn uploaded_keys_are_queried_as_uploaded_and_claimed_once_each_then_the_fallback() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let laptop = Device::new(&alice);
    let device_keys = laptop.device_keys();
    let reply = laptop
        .upload(
            &server,
            json!({
                "device_keys": device_keys,
                "one_time_keys": laptop.one_time_keys("A", 2),
                "fallback_keys": laptop.fallback_key("F"),
            }),
        )
        .await;
    assert_eq!(reply["one_time_key_counts"], json!({ "signed_curve25519": 2 }));

    // Bob sees alice's keys exactly as signed, with the device's name added unsigned; her
    // cross-signing sections are there, empty.
    let all = query(&server, &bob, json!({ &alice.user_id: [] })).await;
    let keys = &all["device_keys"][&alice.user_id][&alice.device_id];
    for field in ["user_id", "device_id", "algorithms", "keys", "signatures"] {
        assert_eq!(keys[field], device_keys[field], "{field}");
    }
    assert!(keys["unsigned"].is_object(), "{keys}");
    assert_eq!(all["failures"], json!({}));
    assert_eq!(all["master_keys"], json!({}));
    let named = server
        .put(&format!("{V3}/devices/{}", alice.device_id), alice.tok(), json!({ "display_name": "Laptop" }))
        .await;
    assert_eq!(named.0, 200);
    let one = query(&server, &bob, json!({ &alice.user_id: [&alice.device_id] })).await;
    assert_eq!(one["device_keys"][&alice.user_id][&alice.device_id]["unsigned"]["device_display_name"], "Laptop");
    // Unknown devices are left out; a user without keys is an empty object; a user of another
    // server is a failure of that server (until federation); devices must be a list.
    let none =
        query(&server, &bob, json!({ &alice.user_id: ["NOPE"], &bob.user_id: [], "@carol:elsewhere.example": [] }))
            .await;
    assert_eq!(none["device_keys"][&alice.user_id], json!({}));
    assert_eq!(none["device_keys"][&bob.user_id], json!({}));
    assert!(none["failures"]["elsewhere.example"].is_object(), "{none}");
    let body = json!({ "device_keys": { &alice.user_id: { "DEV1": true } } });
    assert_error(&server.post(&format!("{V3}/keys/query"), bob.tok(), body).await, 400, "M_BAD_JSON");

    // Claims: the two one-time keys, each once, then the fallback key (again and again).
    let ask = json!({ &alice.user_id: { &alice.device_id: "signed_curve25519" } });
    let mut seen = Vec::new();
    for _ in 0..2 {
        let claimed = claim(&server, &bob, ask.clone()).await;
        let keys = claimed["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap().clone();
        assert_eq!(keys.len(), 1);
        let (id, key) = keys.into_iter().next().unwrap();
        assert!(id.starts_with("signed_curve25519:A"), "{id}");
        assert!(key["signatures"][&alice.user_id].is_object());
        seen.push(id);
    }
    seen.dedup();
    assert_eq!(seen.len(), 2, "a one-time key was handed out twice");
    let reply = sync(&server, &alice, &[]).await;
    assert_eq!(reply["device_one_time_keys_count"]["signed_curve25519"], 0, "{reply}");
    assert_eq!(reply["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    for _ in 0..2 {
        let claimed = claim(&server, &bob, ask.clone()).await;
        let key = &claimed["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:F"];
        assert_eq!(key["fallback"], true, "{claimed}");
    }
    let reply = sync(&server, &alice, &[]).await;
    assert_eq!(reply["device_unused_fallback_key_types"], json!([]), "the fallback key is used now");

    // A new fallback key is unused again; a device with nothing for the algorithm is left out.
    laptop.upload(&server, json!({ "fallback_keys": laptop.fallback_key("G") })).await;
    assert_eq!(sync(&server, &alice, &[]).await["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    let other = claim(&server, &bob, json!({ &alice.user_id: { &alice.device_id: "curve25519", "NOPE": "signed_curve25519" }, "@x:elsewhere.example": { "D": "signed_curve25519" } })).await;
    assert_eq!(other["one_time_keys"], json!({}), "{other}");
    assert!(other["failures"]["elsewhere.example"].is_object());
}

#[tokio::test]
async fn uploads_are_checked_and_idempotent() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let laptop = Device::new(&alice);
    let path = format!("{V3}/keys/upload");
    let upload = |body: Value| server.post(&path, alice.tok(), body);

    // Keys of another user or device, without required fields, or signed badly: refused.
    let mut theirs = laptop.device_keys();
    theirs["user_id"] = json!(bob.user_id);
    let theirs = laptop.key.sign(&alice.user_id, theirs);
    assert_error(&upload(json!({ "device_keys": theirs })).await, 400, "M_INVALID_PARAM");
    let mut other_device = laptop.device_keys();
    other_device["device_id"] = json!("OTHER");
    assert_error(&upload(json!({ "device_keys": other_device })).await, 400, "M_INVALID_PARAM");
    let missing = json!({ "device_keys": { "user_id": alice.user_id, "device_id": alice.device_id } });
    assert_error(&upload(missing).await, 400, "M_BAD_JSON");
    let mut tampered = laptop.device_keys();
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    assert_error(&upload(json!({ "device_keys": tampered })).await, 400, "M_INVALID_SIGNATURE");
    let forged = SigningKey::new(Some(&alice.device_id)).sign(&alice.user_id, {
        let mut keys = laptop.device_keys();
        keys.as_object_mut().unwrap().remove("signatures");
        keys
    });
    assert_error(&upload(json!({ "device_keys": forged })).await, 400, "M_INVALID_SIGNATURE");
    assert_error(&upload(json!({ "one_time_keys": { "no-colon": "key" } })).await, 400, "M_BAD_JSON");
    assert_error(&upload(json!({ "one_time_keys": { "curve25519:A": 5 } })).await, 400, "M_BAD_JSON");
    assert_eq!(query(&server, &bob, json!({ &alice.user_id: [] })).await["device_keys"][&alice.user_id], json!({}));

    // The same keys again are fine, and count once; another key under a used ID is refused,
    // and nothing of that upload is kept.
    let otks = laptop.one_time_keys("A", 3);
    let body = json!({ "device_keys": laptop.device_keys(), "one_time_keys": otks });
    for _ in 0..2 {
        let (status, reply) = upload(body.clone()).await;
        assert_eq!((status.as_u16(), &reply["one_time_key_counts"]["signed_curve25519"]), (200, &json!(3)));
    }
    let mut clash = laptop.one_time_keys("B", 2);
    clash.insert("signed_curve25519:A0".into(), laptop.key.sign(&alice.user_id, json!({ "key": curve_key() })));
    assert_error(&upload(json!({ "one_time_keys": clash })).await, 400, "M_INVALID_PARAM");
    let (_, reply) = upload(json!({})).await;
    assert_eq!(reply["one_time_key_counts"], json!({ "signed_curve25519": 3 }));
    // Unsigned string keys of other algorithms count apart.
    let (_, reply) = upload(json!({ "one_time_keys": { "curve25519:X": "abc" } })).await;
    assert_eq!(reply["one_time_key_counts"], json!({ "signed_curve25519": 3, "curve25519": 1 }));
}

#[tokio::test]
async fn one_time_keys_are_claimed_in_upload_order() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let laptop = Device::new(&alice);
    // IDs that sort the other way round from their uploads.
    laptop.upload(&server, json!({ "one_time_keys": laptop.one_time_keys("Z", 2) })).await;
    laptop.upload(&server, json!({ "one_time_keys": laptop.one_time_keys("A", 2) })).await;
    let ask = json!({ &alice.user_id: { &alice.device_id: "signed_curve25519" } });
    let mut order = Vec::new();
    for _ in 0..4 {
        let claimed = claim(&server, &bob, ask.clone()).await;
        let keys = claimed["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap();
        order.push(keys.keys().next().unwrap()[18..19].to_owned());
    }
    assert_eq!(order, ["Z", "Z", "A", "A"]);
    assert_eq!(claim(&server, &bob, ask).await["one_time_keys"], json!({}), "exhausted, and no fallback key");
}

// ---------------------------------------------------------------------------------------------
// Device lists

#[tokio::test]
async fn a_key_upload_wakes_a_parked_sync_of_someone_sharing_a_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    shared_room(&server, &alice, &[&bob]).await;
    // Alice takes no presence, so that only the device list can answer her sync.
    let filter = json!({ "presence": { "types": [] } }).to_string();
    let since = next_batch(&sync(&server, &alice, &[("filter", &filter)]).await);
    let phone = Device::new(&bob);

    let poll = async {
        let reply = sync(&server, &alice, &[("since", &since), ("timeout", "20000"), ("filter", &filter)]).await;
        (reply, Instant::now())
    };
    let upload = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        phone.publish(&server, 1).await;
        Instant::now()
    };
    let ((reply, answered), uploaded) = tokio::join!(poll, upload);
    assert_eq!(changed(&reply), [bob.user_id.as_str()], "{reply}");
    let latency = answered.saturating_duration_since(uploaded);
    assert!(latency < Duration::from_secs(2), "the parked sync answered {latency:?} after the upload");

    // The same through /keys/changes, and only bob.
    let path = format!("{V3}/keys/changes?from={}&to={}", enc(&since), enc(&next_batch(&reply)));
    let (status, changes) = server.get(&path, alice.tok()).await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes, json!({ "changed": [bob.user_id], "left": [] }));
    assert_error(
        &server.get(&format!("{V3}/keys/changes?from=nonsense&to=s1"), alice.tok()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&server.get(&format!("{V3}/keys/changes?from=s1"), alice.tok()).await, 400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn device_lists_follow_keys_joins_leaves_and_deletions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let stranger = server.register("stranger", "pw").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let mut since = sync_token(&server, &alice).await;
    let mut step = async |server: &TestServer| {
        let reply = sync(server, &alice, &[("since", &since)]).await;
        since = next_batch(&reply);
        (changed(&reply), left(&reply))
    };

    // Keys of someone sharing a room, and one's own (for one's other devices); not a stranger's.
    Device::new(&bob).publish(&server, 1).await;
    Device::new(&stranger).publish(&server, 1).await;
    Device::new(&alice).publish(&server, 1).await;
    assert_eq!(step(&server).await, (vec![alice.user_id.clone(), bob.user_id.clone()], vec![]));

    // Someone joining is new to track, whether or not they have keys.
    join(&server, &carol, &room).await;
    assert_eq!(step(&server).await, (vec![carol.user_id.clone()], vec![]));

    // A second device of bob's, renamed, then deleted (with the password): changes each time,
    // and its keys go with it.
    let bob_phone = server.login("bob", "pw").await;
    Device::new(&bob_phone).publish(&server, 2).await;
    assert_eq!(step(&server).await.0, [bob.user_id.as_str()]);
    let rename = json!({ "display_name": "Phone" });
    assert_eq!(server.put(&format!("{V3}/devices/{}", bob_phone.device_id), bob_phone.tok(), rename).await.0, 200);
    assert_eq!(step(&server).await.0, [bob.user_id.as_str()]);
    let delete = json!({ "auth": bob.password_auth() });
    let path = format!("{V3}/devices/{}", bob_phone.device_id);
    let (status, reply) = server.request(Method::DELETE, &path, bob.tok(), Some(delete)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(step(&server).await.0, [bob.user_id.as_str()]);
    let keys = query(&server, &alice, json!({ &bob.user_id: [] })).await;
    let devices: Vec<&String> = keys["device_keys"][&bob.user_id].as_object().unwrap().keys().collect();
    assert_eq!(devices, [&bob.device_id]);
    let ask = json!({ &bob.user_id: { &bob_phone.device_id: "signed_curve25519" } });
    assert_eq!(claim(&server, &alice, ask).await["one_time_keys"], json!({}), "its one-time keys went too");

    // Logging out deletes the device, its keys, and is a change too.
    let carol_phone = server.login("carol", "pw").await;
    Device::new(&carol_phone).publish(&server, 1).await;
    assert_eq!(step(&server).await.0, [carol.user_id.as_str()]);
    assert_eq!(server.post(&format!("{V3}/logout"), carol_phone.tok(), json!({})).await.0, 200);
    assert_eq!(step(&server).await.0, [carol.user_id.as_str()]);
    assert_eq!(query(&server, &alice, json!({ &carol.user_id: [] })).await["device_keys"][&carol.user_id], json!({}));

    // Leaving: left, and later changes of the one who left are not told.
    leave(&server, &bob, &room).await;
    assert_eq!(step(&server).await, (vec![], vec![bob.user_id.clone()]));
    Device::new(&bob).publish(&server, 0).await;
    assert_eq!(step(&server).await, (vec![], vec![]));
    // Rejoining: changed again. Alice leaving: everyone she no longer shares a room with.
    join(&server, &bob, &room).await;
    assert_eq!(step(&server).await, (vec![bob.user_id.clone()], vec![]));
    leave(&server, &alice, &room).await;
    assert_eq!(step(&server).await, (vec![], vec![bob.user_id.clone(), carol.user_id.clone()]));
}

#[tokio::test]
async fn keys_of_another_servers_users_come_from_it_and_their_changes_cross_over() {
    let a = TestServer::start_federating(&[]).await;
    let b = TestServer::start_federating(&[]).await;
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let body = json!({ "preset": "public_chat", "room_alias_name": "lobby" });
    let (status, reply) = a.post(&format!("{V3}/createRoom"), alice.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    let alias = format!("#lobby:{}", a.server_name);
    let (status, reply) = b.post(&format!("{V3}/join/{}", enc(&alias)), bob.tok(), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let bob_laptop = Device::new(&bob);
    bob_laptop.publish(&b, 2).await;
    let since = sync_token(&a, &alice).await;

    // Queried through B, exactly as uploaded; a server that cannot be reached is a failure.
    let unreachable = "@nobody:127.0.0.1:1";
    let keys = query(&a, &alice, json!({ &bob.user_id: [], unreachable: [] })).await;
    let ed25519 = &keys["device_keys"][&bob.user_id][&bob.device_id]["keys"][format!("ed25519:{}", bob.device_id)];
    assert_eq!(ed25519, &json!(bob_laptop.key.public), "{keys}");
    assert!(keys["failures"]["127.0.0.1:1"].is_object(), "{keys}");
    assert!(keys["failures"].get(&b.server_name).is_none(), "{keys}");
    // Claimed through B: one one-time key, then the other.
    let ask = json!({ &bob.user_id: { &bob.device_id: "signed_curve25519" } });
    let first = claim(&a, &alice, ask.clone()).await;
    let second = claim(&a, &alice, ask).await;
    let key_ids = |reply: &Value| -> Vec<String> {
        reply["one_time_keys"][&bob.user_id][&bob.device_id]
            .as_object()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        (key_ids(&first), key_ids(&second)),
        (vec!["signed_curve25519:A0".to_owned()], vec!["signed_curve25519:A1".to_owned()]),
        "{first}"
    );

    // Bob's new device: B tells A (m.device_list_update), alice's sync says bob changed, and a
    // new query shows both devices.
    let bob_phone = b.login("bob", "pw").await;
    Device::new(&bob_phone).publish(&b, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = sync(&a, &alice, &[("since", &since), ("timeout", "1000")]).await;
        if changed(&reply).contains(&bob.user_id) {
            break;
        }
        assert!(Instant::now() < deadline, "bob's device change never reached alice\nB: {}", b.log());
    }
    let keys = query(&a, &alice, json!({ &bob.user_id: [] })).await;
    let mut devices: Vec<&String> = keys["device_keys"][&bob.user_id].as_object().unwrap().keys().collect();
    devices.sort();
    let mut expected = vec![&bob.device_id, &bob_phone.device_id];
    expected.sort();
    assert_eq!(devices, expected);
}

#[tokio::test]
async fn device_list_positions_and_key_counts_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    shared_room(&server, &alice, &[&bob]).await;
    let since = sync_token(&server, &alice).await;
    let phone = Device::new(&bob);
    phone.upload(&server, json!({ "device_keys": phone.device_keys(), "one_time_keys": phone.one_time_keys("A", 4), "fallback_keys": phone.fallback_key("F") })).await;
    server.terminate();
    server.restart();
    let reply = sync(&server, &alice, &[("since", &since)]).await;
    assert_eq!(changed(&reply), [bob.user_id.as_str()], "{reply}");
    let reply = sync(&server, &bob, &[]).await;
    assert_eq!(reply["device_one_time_keys_count"], json!({ "signed_curve25519": 4 }));
    assert_eq!(reply["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    // A sync after the restart with a token from after it sees nothing old again.
    let after = next_batch(&sync(&server, &alice, &[("since", &since)]).await);
    assert_eq!(changed(&sync(&server, &alice, &[("since", &after)]).await), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Cross-signing

/// A user's cross-signing keys, made and signed as a client does.
struct CrossSigning {
    master: SigningKey,
    self_signing: SigningKey,
    user_signing: SigningKey,
}

impl CrossSigning {
    fn new() -> Self {
        Self { master: SigningKey::new(None), self_signing: SigningKey::new(None), user_signing: SigningKey::new(None) }
    }

    fn key(user: &User, usage: &str, key: &SigningKey) -> Value {
        json!({ "user_id": user.user_id, "usage": [usage], "keys": { key.id(): key.public } })
    }

    fn upload_body(&self, user: &User) -> Value {
        json!({
            "master_key": Self::key(user, "master", &self.master),
            "self_signing_key": self.master.sign(&user.user_id, Self::key(user, "self_signing", &self.self_signing)),
            "user_signing_key": self.master.sign(&user.user_id, Self::key(user, "user_signing", &self.user_signing)),
        })
    }
}

async fn upload_cross_signing(server: &TestServer, user: &User, body: Value) -> (reqwest::StatusCode, Value) {
    server.post(&format!("{V3}/keys/device_signing/upload"), user.tok(), body).await
}

#[tokio::test]
async fn cross_signing_keys_upload_without_auth_first_then_replacing_needs_the_password() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    shared_room(&server, &alice, &[&bob]).await;
    let bob_since = sync_token(&server, &bob).await;
    let keys = CrossSigning::new();

    // A self-signing key not signed by the master key, or keys of someone else: refused.
    let mut bad = keys.upload_body(&alice);
    bad["self_signing_key"] = CrossSigning::key(&alice, "self_signing", &keys.self_signing);
    assert_error(&upload_cross_signing(&server, &alice, bad).await, 400, "M_INVALID_SIGNATURE");
    assert_error(&upload_cross_signing(&server, &alice, keys.upload_body(&bob)).await, 400, "M_INVALID_PARAM");
    let no_master = json!({ "self_signing_key": keys.upload_body(&alice)["self_signing_key"] });
    assert_error(&upload_cross_signing(&server, &alice, no_master).await, 400, "M_MISSING_PARAM");

    // The first upload needs no password, and is a device-list change.
    let (status, reply) = upload_cross_signing(&server, &alice, keys.upload_body(&alice)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(changed(&sync(&server, &bob, &[("since", &bob_since)]).await), [alice.user_id.as_str()]);
    // Others see the master and self-signing keys; only alice her user-signing key.
    let seen = query(&server, &bob, json!({ &alice.user_id: [] })).await;
    assert_eq!(seen["master_keys"][&alice.user_id]["keys"][keys.master.id()], keys.master.public);
    assert_eq!(seen["self_signing_keys"][&alice.user_id]["usage"], json!(["self_signing"]));
    assert_eq!(seen["user_signing_keys"], json!({}));
    let own = query(&server, &alice, json!({ &alice.user_id: [] })).await;
    assert_eq!(own["user_signing_keys"][&alice.user_id]["keys"][keys.user_signing.id()], keys.user_signing.public);

    // The same keys again need no password; new ones do (UIA with the password).
    assert_eq!(upload_cross_signing(&server, &alice, keys.upload_body(&alice)).await.0, 200);
    let replacement = CrossSigning::new();
    let (status, challenge) = upload_cross_signing(&server, &alice, replacement.upload_body(&alice)).await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]));
    let mut body = replacement.upload_body(&alice);
    body["auth"] = alice.password_auth();
    body["auth"]["session"] = challenge["session"].clone();
    let (status, reply) = upload_cross_signing(&server, &alice, body).await;
    assert_eq!(status, 200, "{reply}");
    let seen = query(&server, &bob, json!({ &alice.user_id: [] })).await;
    assert_eq!(seen["master_keys"][&alice.user_id]["keys"][replacement.master.id()], replacement.master.public);
}

#[tokio::test]
async fn signatures_of_devices_and_master_keys_are_stored_and_shown_to_whom_they_concern() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let laptop = Device::new(&alice);
    laptop.publish(&server, 0).await;
    let (alice_keys, bob_keys) = (CrossSigning::new(), CrossSigning::new());
    assert_eq!(upload_cross_signing(&server, &alice, alice_keys.upload_body(&alice)).await.0, 200);
    assert_eq!(upload_cross_signing(&server, &bob, bob_keys.upload_body(&bob)).await.0, 200);
    let bob_since = sync_token(&server, &bob).await;
    let alice_since = sync_token(&server, &alice).await;

    let stored = query(&server, &alice, json!({ &alice.user_id: [], &bob.user_id: [] })).await;
    let mut device = stored["device_keys"][&alice.user_id][&alice.device_id].clone();
    device.as_object_mut().unwrap().remove("unsigned");
    let own_master = stored["master_keys"][&alice.user_id].clone();
    let bob_master = stored["master_keys"][&bob.user_id].clone();

    let signed_device = alice_keys.self_signing.sign(&alice.user_id, device.clone());
    let signed_master = laptop.key.sign(&alice.user_id, own_master.clone());
    let signed_bob = alice_keys.user_signing.sign(&alice.user_id, bob_master.clone());
    let forged = SigningKey::new(None);
    let mut forged_device = forged.sign(&alice.user_id, device.clone());
    let forged_id = forged.id();
    let forged_sig = forged_device["signatures"][&alice.user_id][&forged_id].take();
    forged_device["signatures"][&alice.user_id][alice_keys.self_signing.id()] = forged_sig;
    let body = json!({
        &alice.user_id: {
            &alice.device_id: signed_device,
            &alice_keys.master.public: signed_master,
            "NOPE": signed_device,
        },
        &bob.user_id: { &bob_keys.master.public: signed_bob },
    });
    let (status, reply) = server.post(&format!("{V3}/keys/signatures/upload"), alice.tok(), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["failures"][&alice.user_id]["NOPE"]["errcode"], "M_NOT_FOUND", "{reply}");
    assert_eq!(reply["failures"].as_object().unwrap().len(), 1, "{reply}");
    let body = json!({ &alice.user_id: { &alice.device_id: forged_device } });
    let (_, reply) = server.post(&format!("{V3}/keys/signatures/upload"), alice.tok(), body).await;
    assert_eq!(reply["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE", "{reply}");

    // Everyone sees alice's signatures of her own keys; only alice her signature of bob's key.
    let seen = query(&server, &carol, json!({ &alice.user_id: [], &bob.user_id: [] })).await;
    let device_sigs = &seen["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(device_sigs[alice_keys.self_signing.id()].is_string(), "{seen}");
    assert!(device_sigs[laptop.key.id()].is_string(), "the device's own signature stays");
    assert!(seen["master_keys"][&alice.user_id]["signatures"][&alice.user_id][laptop.key.id()].is_string());
    assert!(seen["master_keys"][&bob.user_id]["signatures"].get(&alice.user_id).is_none(), "{seen}");
    let mine = query(&server, &alice, json!({ &bob.user_id: [] })).await;
    assert!(mine["master_keys"][&bob.user_id]["signatures"][&alice.user_id][alice_keys.user_signing.id()].is_string());
    // Alice's own change reaches bob; the signature of bob's key only alice.
    assert_eq!(changed(&sync(&server, &bob, &[("since", &bob_since)]).await), Vec::<String>::new());
    let alice_sees = changed(&sync(&server, &alice, &[("since", &alice_since)]).await);
    assert!(alice_sees.contains(&bob.user_id) && alice_sees.contains(&alice.user_id), "{alice_sees:?}");
}

// ---------------------------------------------------------------------------------------------
// Key backup

#[tokio::test]
async fn key_backup_versions_and_keys_at_every_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let version_path = format!("{V3}/room_keys/version");
    assert_error(&server.get(&version_path, alice.tok()).await, 404, "M_NOT_FOUND");

    let create = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "abc" } });
    let (status, reply) = server.post(&version_path, alice.tok(), create.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let version = reply["version"].as_str().unwrap().to_owned();
    let (_, info) = server.get(&version_path, alice.tok()).await;
    assert_eq!(
        (&info["version"], &info["count"], &info["auth_data"]["public_key"]),
        (&json!(version), &json!(0), &json!("abc"))
    );
    assert_error(&server.get(&version_path, bob.tok()).await, 404, "M_NOT_FOUND");

    let data = |index: u64, verified: bool| json!({ "first_message_index": index, "forwarded_count": 0, "is_verified": verified, "session_data": { "ciphertext": format!("c{index}") } });
    let keys = |rest: &str| format!("{V3}/room_keys/keys{rest}?version={version}");
    let room = "!room:test.local";
    let (status, reply) = server.put(&keys(&format!("/{}/s1", enc(room))), alice.tok(), data(5, false)).await;
    assert_eq!((status.as_u16(), &reply["count"]), (200, &json!(1)), "{reply}");
    let etag = reply["etag"].clone();
    // A worse key does not replace it (the etag stays); a better one does.
    let (_, reply) = server.put(&keys(&format!("/{}/s1", enc(room))), alice.tok(), data(6, false)).await;
    assert_eq!(reply["etag"], etag);
    let body = json!({ "sessions": { "s1": data(3, false), "s2": data(1, true) } });
    let (_, reply) = server.put(&keys(&format!("/{}", enc(room))), alice.tok(), body).await;
    assert_eq!(reply["count"], 2);
    assert_ne!(reply["etag"], etag);
    let body = json!({ "rooms": { "!other:test.local": { "sessions": { "s3": data(0, false) } } } });
    assert_eq!(server.put(&keys(""), alice.tok(), body).await.1["count"], 3);

    let (_, one) = server.get(&keys(&format!("/{}/s1", enc(room))), alice.tok()).await;
    assert_eq!(one["first_message_index"], 3);
    let (_, in_room) = server.get(&keys(&format!("/{}", enc(room))), alice.tok()).await;
    assert_eq!(in_room["sessions"].as_object().unwrap().len(), 2);
    let (_, all) = server.get(&keys(""), alice.tok()).await;
    assert_eq!(all["rooms"]["!other:test.local"]["sessions"]["s3"]["session_data"]["ciphertext"], "c0");
    assert_error(&server.get(&keys(&format!("/{}/nope", enc(room))), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.get(&keys("/!empty:test.local"), alice.tok()).await.1, json!({ "sessions": {} }));
    assert_error(
        &server.put(&keys(&format!("/{}/s9", enc(room))), alice.tok(), json!({ "x": 1 })).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(&server.get(&format!("{V3}/room_keys/keys"), alice.tok()).await, 400, "M_MISSING_PARAM");

    // Deleting one session, then a room.
    let (status, reply) = server.request(Method::DELETE, &keys(&format!("/{}/s2", enc(room))), alice.tok(), None).await;
    assert_eq!((status.as_u16(), &reply["count"]), (200, &json!(2)), "{reply}");
    let (_, reply) = server.request(Method::DELETE, &keys(&format!("/{}", enc(room))), alice.tok(), None).await;
    assert_eq!(reply["count"], 1);

    // A new version becomes current: the old one takes no more keys.
    let (_, reply) = server.post(&version_path, alice.tok(), create.clone()).await;
    let newer = reply["version"].as_str().unwrap().to_owned();
    assert_ne!(newer, version);
    let (status, reply) = server.put(&keys(&format!("/{}/s1", enc(room))), alice.tok(), data(1, false)).await;
    assert_eq!(
        (status.as_u16(), &reply["errcode"], &reply["current_version"]),
        (403, &json!("M_WRONG_ROOM_KEYS_VERSION"), &json!(newer))
    );
    assert_eq!(server.get(&version_path, alice.tok()).await.1["version"], newer);

    // Updating: new auth data, same algorithm; a different one is refused.
    let old_path = format!("{version_path}/{version}");
    let update = json!({ "algorithm": create["algorithm"], "auth_data": { "public_key": "def" } });
    assert_eq!(server.put(&old_path, alice.tok(), update).await.0, 200);
    assert_eq!(server.get(&old_path, alice.tok()).await.1["auth_data"]["public_key"], "def");
    let update = json!({ "algorithm": "other", "auth_data": {} });
    assert_error(&server.put(&old_path, alice.tok(), update).await, 400, "M_INVALID_PARAM");
    // Deleting a version: gone with its keys.
    assert_eq!(server.request(Method::DELETE, &old_path, alice.tok(), None).await.0, 200);
    assert_error(&server.get(&old_path, alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&keys(""), alice.tok()).await, 404, "M_NOT_FOUND");
    assert_error(&server.request(Method::DELETE, &old_path, alice.tok(), None).await, 404, "M_NOT_FOUND");
}
