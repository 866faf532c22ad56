//! Room service tests over a real database: concurrency and the shape of the event graph.

use std::sync::Arc;

use ruma::OwnedUserId;
use serde_json::json;

use super::{CreateRoom, EventDraft, MembershipChange, canonical_content};
use crate::{
    config::Config,
    service::{Services, accounts::NewAccount},
    storage::Storage,
};

async fn services(dir: &std::path::Path) -> Arc<Services> {
    let config = Config::load(
        None,
        [
            ("MYELIN_SERVER_NAME".to_owned(), "example.org".to_owned()),
            ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().unwrap().to_owned()),
        ],
    )
    .unwrap();
    let storage = Storage::open(&config.database).unwrap();
    Services::new(config, storage).await.unwrap()
}

/// Accounts without passwords: no hashing, so tests stay fast.
async fn user(services: &Services, name: &str) -> OwnedUserId {
    let user_id = services.accounts.user_id_for_registration(name).unwrap();
    services.accounts.register(NewAccount { user_id: Some(user_id.clone()), ..Default::default() }).await.unwrap();
    user_id
}

fn message(body: &str) -> EventDraft {
    EventDraft::new(
        "m.room.message",
        canonical_content(json!({ "msgtype": "m.text", "body": body }).as_object().unwrap().clone()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_room_form_a_single_chain() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        users.push(user(&services, name).await);
    }
    let room_id = services
        .rooms
        .create_room(&users[0], CreateRoom { preset: Some("public_chat".into()), ..Default::default() })
        .await
        .unwrap();
    for user in &users[1..] {
        let join = MembershipChange::Join { reason: None, extra: Default::default() };
        services.rooms.change_membership(&room_id, user, join).await.unwrap();
    }

    let tasks: Vec<_> = users
        .iter()
        .flat_map(|user| (0..25).map(move |i| (user.clone(), i)))
        .map(|(user, i)| {
            let (services, room_id) = (services.clone(), room_id.clone());
            tokio::spawn(async move {
                services.rooms.send(&room_id, &user, message(&format!("{user} {i}")), None).await.unwrap()
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap().pdu.event_id.clone());
    }

    // Every event is in the timeline once, and each points at the one before it: no forks.
    let room = services.rooms.room_exists(&room_id).unwrap();
    let timeline = services.storage.timeline(room.short_id, 0, u64::MAX).unwrap();
    let events: Vec<_> = timeline.iter().map(|(_, short)| services.rooms.event(*short).unwrap().unwrap()).collect();
    for id in &sent {
        assert_eq!(events.iter().filter(|e| &e.event_id == id).count(), 1, "{id} stored once");
    }
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_events, vec![pair[0].event_id.clone()], "a linear graph");
        assert_eq!(pair[1].depth, pair[0].depth + 1);
    }
    assert_eq!(room.extremities, vec![events.last().unwrap().event_id.clone()]);
    let positions: Vec<u64> = timeline.iter().map(|(p, _)| *p).collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "stream positions follow the graph");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let mallory = user(&services, "mallory").await;
    let room_id = services
        .rooms
        .create_room(&alice, CreateRoom { preset: Some("private_chat".into()), ..Default::default() })
        .await
        .unwrap();
    let room = services.rooms.room_exists(&room_id).unwrap();
    let before = services.storage.timeline(room.short_id, 0, u64::MAX).unwrap();

    // Not a member: refused by the auth rules.
    let error = services.rooms.send(&room_id, &mallory, message("let me in"), None).await.unwrap_err();
    assert_eq!(error.kind(), Some(&crate::error::ErrorKind::Forbidden));
    let join = MembershipChange::Join { reason: None, extra: Default::default() };
    assert!(services.rooms.change_membership(&room_id, &mallory, join).await.is_err());

    let after = services.rooms.room_exists(&room_id).unwrap();
    assert_eq!(services.storage.timeline(room.short_id, 0, u64::MAX).unwrap(), before);
    assert_eq!((after.state, after.extremities), (room.state, room.extremities));
    assert!(services.storage.membership(&mallory, &room_id).unwrap().is_none());
}
