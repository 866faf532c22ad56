//! The sender with the real federation client, against a small HTTPS receiver on 127.0.0.1 that
//! plays another homeserver: it checks the X-Matrix signature of every transaction against our
//! key, records what arrives, and can be down (not listening yet) or answer errors.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{OriginalUri, State},
    http::{HeaderMap, StatusCode},
};
use ruma::{OwnedServerName, UserId, serde::Base64, signatures::PublicKeyMap};
use serde_json::{Value, json};

use super::tests::{body, room_with, send, timeline, user, wait_until};
use crate::{
    config::Config,
    service::{Services, presence},
    storage::Storage,
};

/// A CA, and a certificate it signed for 127.0.0.1, as PEM: (ca, cert, key).
fn test_tls() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    (ca_pem, leaf.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Myelin over `dir`, trusting the test CA written there, allowed to reach 127.0.0.1, retrying
/// fast; its sender resumed as at start.
async fn services(dir: &Path) -> Arc<Services> {
    let env = [
        ("MYELIN_SERVER_NAME", "myelin.test".to_owned()),
        ("MYELIN_DATABASE__PATH", dir.join("db").to_str().unwrap().to_owned()),
        ("MYELIN_FEDERATION__TLS_CA_FILE", dir.join("ca.pem").to_str().unwrap().to_owned()),
        ("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "127.0.0.1".to_owned()),
        ("MYELIN_FEDERATION__RETRY_MIN_MS", "100".to_owned()),
        ("MYELIN_FEDERATION__RETRY_MAX_SECS", "1".to_owned()),
    ];
    let config = Config::load(None, env.into_iter().map(|(k, v)| (k.to_owned(), v))).unwrap();
    let storage = Storage::open(&config.database).unwrap();
    let services = Services::new(config, storage).await.unwrap();
    services.federation.sender.resume().unwrap();
    services
}

/// What the receiver got.
#[derive(Clone, Debug)]
struct Received {
    txn: String,
    body: Value,
    accepted: bool,
}

#[derive(Clone)]
struct ReceiverState {
    name: OwnedServerName,
    origin: OwnedServerName,
    keys: Arc<PublicKeyMap>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests whose signature did not verify.
    forged: Arc<AtomicUsize>,
    /// Answer this many more transactions with a 500.
    fail: Arc<AtomicUsize>,
}

impl ReceiverState {
    fn new(port: u16, services: &Services) -> Self {
        let key = Base64::new(services.keys.public_key().to_vec());
        let origin = services.config.server_name.clone();
        let keys = [(origin.to_string(), [(services.keys.key_id(), key)].into())].into();
        Self {
            name: OwnedServerName::try_from(format!("127.0.0.1:{port}")).unwrap(),
            origin,
            keys: Arc::new(keys),
            received: Arc::default(),
            forged: Arc::default(),
            fail: Arc::default(),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// PDUs of the transactions it accepted.
    fn pdus(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.accepted)
            .flat_map(|r| r.body["pdus"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn edus(&self) -> Vec<Value> {
        self.received().into_iter().flat_map(|r| r.body["edus"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// Starts answering on its port, over TLS with a certificate of the CA in `dir`.
    async fn listen(&self, dir: &Path) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new()
            .route("/_matrix/federation/v1/send/{txn}", axum::routing::put(receive))
            .with_state(self.clone());
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let tls = crate::tls::server_config(&cert, &key).unwrap();
        let port = self.name.port().unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let listener = crate::tls::TlsListener::new(tcp, tls).unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        })
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    axum::extract::Path(txn): axum::extract::Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let verified = (|| {
        let header = headers.get("authorization")?.to_str().ok()?;
        let x_matrix = ruma::api::federation::authentication::XMatrix::parse(header).ok()?;
        if x_matrix.origin != state.origin || x_matrix.destination.as_ref() != Some(&state.name) {
            return None;
        }
        let mut request = http::Request::new(&body[..]);
        *request.method_mut() = http::Method::PUT;
        *request.uri_mut() = uri.path_and_query()?.as_str().parse().ok()?;
        x_matrix.verify_http_request(&request, &state.name, &state.keys).ok()
    })();
    if verified.is_none() {
        state.forged.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "errcode": "M_UNAUTHORIZED", "error": "bad" })));
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let fail = state.fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    state.received.lock().unwrap().push(Received { txn, body, accepted: !fail });
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "errcode": "M_UNKNOWN", "error": "boom" })));
    }
    (StatusCode::OK, axum::Json(json!({ "pdus": {} })))
}

fn write_tls(dir: &Path) {
    let (ca, cert, key) = test_tls();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_comes_up_late_gets_everything_in_order_signed() {
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path());
    let services = services(dir.path()).await;
    let port = free_port();
    let receiver = ReceiverState::new(port, &services);
    let alice = user(&services, "alice").await;
    let bob = UserId::parse(format!("@bob:127.0.0.1:{port}")).unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    for i in 0..60 {
        send(&services, &room_id, &alice, &format!("message {i}")).await;
    }
    // Down: nothing listens yet, and tries fail. Then up, but failing twice more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    receiver.fail.store(2, Ordering::SeqCst);
    let _server = receiver.listen(dir.path()).await;
    wait_until("every event arrived", || receiver.pdus().len() == 61).await;

    let received = receiver.received();
    assert_eq!(receiver.forged.load(Ordering::SeqCst), 0, "every transaction is signed by us for the receiver");
    assert!(received.iter().all(|r| r.body["pdus"].as_array().unwrap().len() <= 50));
    assert!(received.iter().all(|r| r.body["origin"] == "myelin.test"));
    // The first transaction three times (two 500s), unchanged: a retry is the same transaction.
    assert!(!received[0].accepted && !received[1].accepted && received[2].accepted);
    assert_eq!(received[0].txn, received[1].txn);
    assert_eq!(received[1].txn, received[2].txn);
    assert_eq!(received[0].body, received[2].body);
    assert!(received[3..].iter().all(|r| r.accepted && r.txn != received[2].txn));
    let accepted = receiver.pdus();
    let stored = timeline(&services, &room_id);
    let from_join = stored.iter().position(|pdu| pdu["state_key"] == bob.as_str()).unwrap();
    assert_eq!(accepted, stored[from_join..]);
    assert_eq!(body(accepted.last().unwrap()), "message 59");

    // Typing, presence and a public receipt follow.
    services.federate_typing(&room_id, &alice, true);
    services.presence.set(&alice, presence::State::Unavailable, Some("lunch".into()));
    services.notify_peers(&alice);
    let last = send(&services, &room_id, &alice, "read this").await;
    services.rooms.set_receipt(&room_id, &alice, "m.read", &last, None).await.unwrap();
    wait_until("the EDUs arrived", || {
        let kinds: Vec<Value> = receiver.edus().iter().map(|e| e["edu_type"].clone()).collect();
        ["m.typing", "m.presence", "m.receipt"].iter().all(|k| kinds.contains(&json!(k)))
    })
    .await;
    let edus = receiver.edus();
    let typing = edus.iter().find(|e| e["edu_type"] == "m.typing").unwrap();
    assert_eq!(typing["content"], json!({ "room_id": room_id, "user_id": alice, "typing": true }));
    let presence = edus.iter().find(|e| e["edu_type"] == "m.presence").unwrap();
    assert_eq!(presence["content"]["push"][0]["presence"], "unavailable");
    assert_eq!(presence["content"]["push"][0]["status_msg"], "lunch");
    let receipt = edus.iter().find(|e| e["edu_type"] == "m.receipt").unwrap();
    assert_eq!(receipt["content"][room_id.as_str()]["m.read"][alice.as_str()]["event_ids"], json!([last]));
    assert_eq!(receiver.forged.load(Ordering::SeqCst), 0);
    services.federation.sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_before_a_restart_are_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path());
    let port = free_port();
    let services = services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse(format!("@bob:127.0.0.1:{port}")).unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    for i in 0..5 {
        send(&services, &room_id, &alice, &format!("before the restart {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    services.federation.sender.shutdown().await;
    drop(services);

    let restarted = self::services(dir.path()).await;
    let services = restarted;
    let receiver = ReceiverState::new(port, &services);
    let _server = receiver.listen(dir.path()).await;
    wait_until("the queued events arrived", || receiver.pdus().len() == 6).await;
    let stored = timeline(&services, &room_id);
    assert_eq!(receiver.pdus(), stored[stored.len() - 6..]);
    assert_eq!(body(receiver.pdus().last().unwrap()), "before the restart 4");
    wait_until("the queue is empty", || services.storage.outbound_destinations().unwrap().is_empty()).await;
    assert_eq!(receiver.forged.load(Ordering::SeqCst), 0);
    services.federation.sender.shutdown().await;
}
