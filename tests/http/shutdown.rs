//! Graceful shutdown and durability across restarts.

use std::time::Duration;

use serde_json::json;

use crate::server::{TestServer, signal};

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_closes_the_database() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.slow", alice.user_id);

    // A request whose body arrives slowly is in flight when SIGTERM comes.
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = tokio_stream_from(body);
    let request = reqwest::Client::new()
        .put(server.url(&path))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(request);
    chunks.send(Ok(b"{\"value\": ".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(server.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    chunks.send(Ok(b"\"finished\"}".to_vec())).await.unwrap();
    drop(chunks);
    let response = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), 200);

    let status = server.wait_for_exit();
    assert!(status.success(), "exit status {status}");
    assert!(server.log().contains("database closed cleanly"), "{}", server.log());

    server.restart();
    let (status, content) = server.get(&path, alice.tok()).await;
    assert_eq!((status.as_u16(), content), (200, json!({ "value": "finished" })));
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for i in 0..20 {
        let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.n{i}", alice.user_id);
        let (status, _) = server.put(&path, alice.tok(), json!({ "i": i })).await;
        assert_eq!(status, 200);
    }
    server.kill();
    server.restart();
    // The token, the account and every acknowledged write are still there.
    for i in 0..20 {
        let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.n{i}", alice.user_id);
        let (status, content) = server.get(&path, alice.tok()).await;
        assert_eq!((status.as_u16(), content), (200, json!({ "i": i })));
    }
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
