//! The federation listener: TLS, `/version`, our signed keys, the notary, and X-Matrix
//! authentication, against real processes on 127.0.0.1 (see `TestServer::start_federating`).

use std::sync::Arc;

use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, OwnedServerName, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, json};

use crate::server::{TestServer, free_port, test_tls};

/// A client that trusts the test CA, as another homeserver would.
fn tls_client() -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(test_tls().ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
}

async fn get(url: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = tls_client().get(url);
    if let Some(header) = authorization {
        request = request.header("Authorization", header);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    serde_json::from_value(value.clone()).unwrap()
}

/// The keys `verify_keys` lists.
fn verify_keys(response: &Value) -> PublicKeySet {
    response["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, key)| (id.clone(), Base64::parse(key["key"].as_str().unwrap()).unwrap()))
        .collect()
}

/// Checks the signatures of `entity` (only) on `object` with `keys`.
fn verify_signature(entity: &str, keys: PublicKeySet, object: &Value) {
    let mut only = object.clone();
    only["signatures"] = json!({ entity: object["signatures"][entity].clone() });
    let map: PublicKeyMap = [(entity.to_owned(), keys)].into();
    ruma::signatures::verify_json(&map, &canonical(&only)).unwrap_or_else(|e| panic!("{entity}: {e} in {object}"));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn keys_and_version_are_served_over_tls() {
    let server = TestServer::start_federating(&[]).await;
    let base = server.federation.clone().expect("federation listener");

    let (status, keys) = get(&format!("{base}/_matrix/key/v2/server"), None).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["server_name"], server.server_name);
    assert_eq!(keys["old_verify_keys"], json!({}));
    let valid_until = keys["valid_until_ts"].as_u64().unwrap();
    let week = 7 * 24 * 3600 * 1000;
    assert!(valid_until > now_ms() + week - 60_000 && valid_until <= now_ms() + week, "{keys}");
    let published = verify_keys(&keys);
    assert_eq!(published.len(), 1);
    verify_signature(&server.server_name, published, &keys);

    let (status, version) = get(&format!("{base}/_matrix/federation/v1/version"), None).await;
    assert_eq!(status, 200);
    assert_eq!(version["server"]["name"], "Myelin");
    assert!(version["server"]["version"].is_string());

    let (status, unknown) = get(&format!("{base}/_matrix/federation/v1/nonsense"), None).await;
    assert_eq!((status.as_u16(), unknown["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    // The client listener serves no federation.
    let (status, _) = server.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, 404);
    // And the federation listener speaks TLS only.
    let plain = reqwest::get(base.replace("https://", "http://") + "/_matrix/federation/v1/version").await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn without_federation_settings_nothing_but_the_client_api_listens() {
    let server = TestServer::start().await;
    assert!(server.federation.is_none());
    assert!(!server.log().contains("federation API listening"));
}

/// A signing identity the test plays: `127.0.0.1:PORT`, serving its keys over TLS there.
struct FakeOrigin {
    name: OwnedServerName,
    key: Ed25519KeyPair,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeOrigin {
    async fn start() -> Self {
        let port = free_port();
        let name = OwnedServerName::try_from(format!("127.0.0.1:{port}")).unwrap();
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "test".to_owned()).unwrap();
        let public: Base64 = Base64::new(key.public_key().to_vec());
        let mut response = canonical(&json!({
            "server_name": name,
            "verify_keys": { "ed25519:test": { "key": public.encode() } },
            "old_verify_keys": {},
            "valid_until_ts": now_ms() + 3_600_000,
        }));
        ruma::signatures::sign_json(name.as_str(), &key, &mut response).unwrap();
        let response = Arc::new(response);
        let app = axum::Router::new().route(
            "/_matrix/key/v2/server",
            axum::routing::get(move || {
                let response = response.clone();
                async move { axum::Json((*response).clone()) }
            }),
        );
        let dir = tempfile::tempdir().unwrap();
        let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &test_tls().cert_pem).unwrap();
        std::fs::write(&key_file, &test_tls().key_pem).unwrap();
        let tls = myelin::tls::server_config(&cert, &key_file).unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let listener = myelin::tls::TlsListener::new(tcp, tls).unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { name, key, _server: server }
    }

    /// The `Authorization` header for a request to `destination`.
    fn sign(&self, destination: &str, method: &str, uri: &str, body: Option<&Value>) -> String {
        let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let request = http::Request::builder().method(method).uri(uri).body(body).unwrap();
        let input = XMatrixSigningInput::new(self.name.clone(), ServerName::parse(destination).unwrap(), &self.key);
        let header = XMatrix::sign_http_request(&request, input).unwrap();
        http::HeaderValue::from(&header).to_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn signed_requests_are_verified_against_the_origins_published_key() {
    let server = TestServer::start_federating(&[]).await;
    let base = server.federation.clone().unwrap();
    let alice = server.register("alice", "password").await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            alice.tok(),
            json!({ "displayname": "Alice" }),
        )
        .await;
    assert_eq!(status, 200);
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        alice.user_id.replace('@', "%40").replace(':', "%3A")
    );
    let url = format!("{base}{uri}");

    // Unsigned.
    let (status, body) = get(&url, None).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");

    // Signed by an origin that serves its key: accepted, the key fetched from it over TLS.
    let origin = FakeOrigin::start().await;
    let (status, body) = get(&url, Some(&origin.sign(&server.server_name, "GET", &uri, None))).await;
    assert_eq!(status, 200, "{body}\n{}", server.log());
    assert_eq!(body["displayname"], "Alice");

    // Signed for another destination, or over another URI.
    let (status, body) = get(&url, Some(&origin.sign("elsewhere.example", "GET", &uri, None))).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");
    let other = origin.sign(&server.server_name, "GET", "/_matrix/federation/v1/query/profile", None);
    let (status, body) = get(&url, Some(&other)).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");

    // Signed with a key the origin does not publish.
    let impostor = FakeOrigin { name: origin.name.clone(), ..FakeOrigin::start().await };
    let (status, body) = get(&url, Some(&impostor.sign(&server.server_name, "GET", &uri, None))).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");

    // Claiming an origin that does not answer.
    let ghost = format!("127.0.0.1:{}", free_port());
    let forged = origin.sign(&server.server_name, "GET", &uri, None).replace(origin.name.as_str(), &ghost);
    let (status, body) = get(&url, Some(&forged)).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");
}

#[tokio::test]
async fn a_notary_serves_another_servers_keys_with_both_signatures() {
    let notary = TestServer::start_federating(&[]).await;
    let other = TestServer::start_federating(&[]).await;
    let (notary_base, other_base) = (notary.federation.clone().unwrap(), other.federation.clone().unwrap());
    let (_, notary_keys) = get(&format!("{notary_base}/_matrix/key/v2/server"), None).await;
    let (_, other_keys) = get(&format!("{other_base}/_matrix/key/v2/server"), None).await;

    let (status, answer) = get(&format!("{notary_base}/_matrix/key/v2/query/{}", other.server_name), None).await;
    assert_eq!(status, 200, "{answer}\n{}", notary.log());
    let responses = answer["server_keys"].as_array().unwrap();
    assert_eq!(responses.len(), 1, "{answer}");
    let response = &responses[0];
    assert_eq!(response["server_name"], other.server_name);
    assert_eq!(response["verify_keys"], other_keys["verify_keys"]);
    verify_signature(&other.server_name, verify_keys(&other_keys), response);
    verify_signature(&notary.server_name, verify_keys(&notary_keys), response);

    // The batch form, answered from the notary's cache, with a server it cannot reach left out.
    let body = json!({ "server_keys": {
        other.server_name.clone(): { "ed25519:whatever": { "minimum_valid_until_ts": now_ms() } },
        format!("127.0.0.1:{}", free_port()): {},
    } });
    let response = tls_client().post(format!("{notary_base}/_matrix/key/v2/query")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let servers: Vec<&str> =
        answer["server_keys"].as_array().unwrap().iter().map(|r| r["server_name"].as_str().unwrap()).collect();
    assert_eq!(servers, [other.server_name.as_str()]);
}

#[tokio::test]
async fn the_deny_list_stops_requests_to_loopback_unless_allowed() {
    let other = TestServer::start_federating(&[]).await;
    // The default deny list, loopback included.
    let strict = TestServer::start_federating(&[("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "")]).await;
    let base = strict.federation.clone().unwrap();
    let (status, answer) = get(&format!("{base}/_matrix/key/v2/query/{}", other.server_name), None).await;
    assert_eq!(status, 200);
    assert_eq!(answer["server_keys"], json!([]), "{answer}");
    assert!(strict.log().contains("denied address range"), "{}", strict.log());
}

#[tokio::test]
async fn a_server_that_does_not_trust_the_certificate_gets_no_keys() {
    let other = TestServer::start_federating(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let stranger_ca = dir.path().join("other-ca.pem");
    std::fs::write(&stranger_ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let distrustful =
        TestServer::start_federating(&[("MYELIN_FEDERATION__TLS_CA_FILE", stranger_ca.to_str().unwrap())]).await;
    let base = distrustful.federation.clone().unwrap();
    let (_, answer) = get(&format!("{base}/_matrix/key/v2/query/{}", other.server_name), None).await;
    assert_eq!(answer["server_keys"], json!([]), "{answer}");

    // Told to skip verification (tests only), it gets them, and says so loudly.
    let trusting = TestServer::start_federating(&[
        ("MYELIN_FEDERATION__TLS_CA_FILE", stranger_ca.to_str().unwrap()),
        ("MYELIN_FEDERATION__TLS_INSECURE_SKIP_VERIFY", "true"),
    ])
    .await;
    let base = trusting.federation.clone().unwrap();
    let (_, answer) = get(&format!("{base}/_matrix/key/v2/query/{}", other.server_name), None).await;
    assert_eq!(answer["server_keys"].as_array().map(Vec::len), Some(1), "{answer}");
    assert!(trusting.log().contains("tls_insecure_skip_verify is ON"));
}

#[tokio::test]
async fn concurrent_requests_of_one_origin_are_capped_then_refused() {
    // One request of a server at a time, one more waiting; beyond that 429.
    let server = TestServer::start_federating(&[
        ("MYELIN_FEDERATION__MAX_CONCURRENT_REQUESTS_PER_ORIGIN", "1"),
        ("MYELIN_FEDERATION__MAX_QUEUED_REQUESTS_PER_ORIGIN", "1"),
    ])
    .await;
    let base = server.federation.clone().unwrap();
    let alice = server.register("alice", "password").await;
    // A file created but not uploaded: a download of it waits `timeout_ms`, holding its turn.
    let (status, created) = server.post("/_matrix/media/v1/create", alice.tok(), json!({})).await;
    assert_eq!(status, 200, "{created}");
    let media_id = created["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let slow = format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms=3000");
    let quick = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id.replace('@', "%40"));

    let origin = Arc::new(FakeOrigin::start().await);
    let destination = server.server_name.clone();
    // The origin's key fetched once, so that the next requests verify at once.
    let (status, body) = get(&format!("{base}{quick}"), Some(&origin.sign(&destination, "GET", &quick, None))).await;
    assert_eq!(status, 200, "{body}");

    let spawn_slow = || {
        let (origin, base, slow, destination) = (origin.clone(), base.clone(), slow.clone(), destination.clone());
        tokio::spawn(async move {
            get(&format!("{base}{slow}"), Some(&origin.sign(&destination, "GET", &slow, None))).await
        })
    };
    let running = spawn_slow();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = spawn_slow();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // The third is refused at once.
    let (status, body) = get(&format!("{base}{quick}"), Some(&origin.sign(&destination, "GET", &quick, None))).await;
    assert_eq!((status.as_u16(), body["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{body}");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // Another server is not held up.
    let other = FakeOrigin::start().await;
    let (status, body) = get(&format!("{base}{quick}"), Some(&other.sign(&destination, "GET", &quick, None))).await;
    assert_eq!(status, 200, "{body}");

    // Both slow ones ran, one after the other (504: the file never came).
    for task in [running, waiting] {
        let (status, body) = task.await.unwrap();
        assert_eq!((status.as_u16(), body["errcode"].as_str()), (504, Some("M_NOT_YET_UPLOADED")), "{body}");
    }
    // With its turns given back, the origin is served again.
    let (status, body) = get(&format!("{base}{quick}"), Some(&origin.sign(&destination, "GET", &quick, None))).await;
    assert_eq!(status, 200, "{body}");
}
