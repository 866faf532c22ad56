//! X-Matrix round trips: a request signed by one server's federation client, verified by another
//! server's extractor, and every way it can go wrong.

use std::sync::Arc;

use axum::http::{Method, Request, request::Parts};
use ruma::{ServerName, api::federation::authentication::XMatrix, server_name};

use super::{parse_x_matrix, verify};
use crate::{error::ErrorKind, service::Services};

/// The origin's name is an IP literal in a denied range: fetching a key it lacks fails at once.
const ORIGIN: &str = "10.1.1.1:8448";
const DESTINATION: &str = "destination.example";

async fn pair() -> (Arc<Services>, Arc<Services>, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let origin = crate::service::federation::keys::tests::services(dirs[0].path(), ORIGIN).await;
    let destination = crate::service::federation::keys::tests::services(dirs[1].path(), DESTINATION).await;
    // The destination knows the origin's key, as if it had fetched it.
    let key_response = origin.federation.keys.own_key_response().unwrap();
    destination.federation.keys.remember(&ServerName::parse(ORIGIN).unwrap(), key_response).await.unwrap();
    (origin, destination, dirs)
}

fn signed(origin: &Services, destination: &ServerName, method: Method, uri: &str, body: &str) -> (Parts, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri).body(body.as_bytes().to_vec()).unwrap();
    origin.federation.client.sign(destination, &mut request).unwrap();
    let (parts, body) = request.into_parts();
    (parts, body)
}

#[track_caller]
fn assert_unauthorized(result: crate::error::Result<ruma::OwnedServerName>) {
    match result {
        Err(error) => assert_eq!(error.kind(), Some(&ErrorKind::Unauthorized), "{error}"),
        Ok(origin) => panic!("accepted from {origin}"),
    }
}

#[tokio::test]
async fn a_signed_request_verifies_with_and_without_a_body() {
    let (origin, destination, _dirs) = pair().await;
    let (parts, body) = signed(
        &origin,
        server_name!("destination.example"),
        Method::PUT,
        "/_matrix/federation/v1/send/1",
        r#"{"pdus":[]}"#,
    );
    assert_eq!(verify(&destination, &parts, &body).await.unwrap(), ORIGIN);
    let uri = "/_matrix/federation/v1/query/profile?user_id=%40a%3Adestination.example&field=displayname";
    let (parts, body) = signed(&origin, server_name!("destination.example"), Method::GET, uri, "");
    assert_eq!(verify(&destination, &parts, &body).await.unwrap(), ORIGIN);
}

#[tokio::test]
async fn changing_anything_signed_breaks_the_signature() {
    let (origin, destination, _dirs) = pair().await;
    let uri = "/_matrix/federation/v1/send/1?a=b";
    let (parts, _) = signed(&origin, server_name!("destination.example"), Method::PUT, uri, r#"{"pdus":[]}"#);
    assert_unauthorized(verify(&destination, &parts, br#"{"pdus":[1]}"#).await);

    let (mut parts, body) = signed(&origin, server_name!("destination.example"), Method::PUT, uri, "{}");
    parts.method = Method::POST;
    assert_unauthorized(verify(&destination, &parts, &body).await);

    for other in
        ["/_matrix/federation/v1/send/2?a=b", "/_matrix/federation/v1/send/1?a=c", "/_matrix/federation/v1/send/1"]
    {
        let (mut parts, body) = signed(&origin, server_name!("destination.example"), Method::PUT, uri, "{}");
        parts.uri = other.parse().unwrap();
        assert_unauthorized(verify(&destination, &parts, &body).await);
    }
}

#[tokio::test]
async fn a_request_for_another_destination_or_from_an_unknown_key_is_refused() {
    let (origin, destination, _dirs) = pair().await;
    let (parts, body) = signed(&origin, server_name!("elsewhere.example"), Method::GET, "/_matrix/x", "");
    assert_unauthorized(verify(&destination, &parts, &body).await);

    // A header naming a key the origin does not have (fetching it fails): refused.
    let (mut parts, body) = signed(&origin, server_name!("destination.example"), Method::GET, "/_matrix/x", "");
    let header = parts.headers["authorization"].to_str().unwrap().replace("ed25519:", "ed25519:x");
    parts.headers.insert("authorization", header.parse().unwrap());
    assert_unauthorized(verify(&destination, &parts, &body).await);
}

#[tokio::test]
async fn missing_or_malformed_headers_are_refused() {
    let (_origin, destination, _dirs) = pair().await;
    let request = |header: Option<&str>| {
        let mut builder = Request::builder().method(Method::GET).uri("/_matrix/x");
        if let Some(header) = header {
            builder = builder.header("authorization", header);
        }
        builder.body(()).unwrap().into_parts().0
    };
    for header in [
        None,
        Some("Bearer abc"),
        Some("X-Matrix origin=a.example"),
        Some(r#"X-Matrix origin="bad name!",key="ed25519:a",sig="YWJj""#),
        Some(r#"X-Matrix origin=10.1.1.1:8448,key="ed25519:a",sig="not base64!""#),
    ] {
        assert_unauthorized(verify(&destination, &request(header), b"").await);
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_m_not_json() {
    let (origin, destination, _dirs) = pair().await;
    let (parts, _) = signed(&origin, server_name!("destination.example"), Method::PUT, "/_matrix/x", "{}");
    let error = verify(&destination, &parts, b"{nope").await.unwrap_err();
    assert_eq!(error.kind(), Some(&ErrorKind::NotJson));
}

#[test]
fn header_parsing_follows_the_spec_grammar() {
    // Quoted or not, any case of names, spaces around commas, colons unquoted, unknown names.
    let header = r#"X-Matrix origin=origin.hs.example.com , DESTINATION="destination.hs.example.com",key="ed25519:key1",sig="QUJDREVG",extra=1"#;
    let parsed = XMatrix::parse(header).unwrap();
    assert_eq!(parsed.origin, "origin.hs.example.com");
    assert_eq!(parsed.destination.as_deref().map(ServerName::as_str), Some("destination.hs.example.com"));
    assert_eq!(parsed.key, "ed25519:key1");
    assert_eq!(parsed.sig.as_bytes(), b"ABCDEF");
    // Synapse sends its origin unquoted, port and all.
    let with_port = parse_x_matrix(r#"X-Matrix origin=origin.example:8448,key="ed25519:k",sig="QUJD""#).unwrap();
    assert_eq!(with_port.origin, "origin.example:8448");
    assert_eq!(with_port.destination, None, "older servers send no destination");
    let synapse =
        parse_x_matrix(r#"X-Matrix origin=localhost:8481,key="ed25519:a_x",sig="QUJD",destination="127.0.0.1:8448""#)
            .unwrap();
    assert_eq!(synapse.origin, "localhost:8481");
    assert_eq!(synapse.destination.as_deref().map(ServerName::as_str), Some("127.0.0.1:8448"));
    let escaped = parse_x_matrix(r#"X-Matrix origin="a.example",key="ed25519:k",sig="QUJD",note="x\",y:z""#).unwrap();
    assert_eq!(escaped.origin, "a.example");
    assert!(parse_x_matrix(r#"Bearer origin=a.example:1"#).is_err());
    assert!(XMatrix::parse(r#"X-Matrix origin="a.example",origin="b.example",key="ed25519:k",sig="QUJD""#).is_err());
    assert!(XMatrix::parse(r#"X-Matrix key="ed25519:k",sig="QUJD""#).is_err());
}
