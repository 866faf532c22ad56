//! The checks on receipt of a PDU, over a real database: a fake remote server (`remote.test`)
//! whose key the services know signs events of its users, which go through `receive_pdu` as a
//! transaction's would.

use std::{path::Path, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId,
    ServerName, UserId, events::StateEventType,
};
use serde_json::{Value, json, value::RawValue};

use crate::{
    config::Config,
    error::Result,
    service::{
        Services,
        accounts::NewAccount,
        keys::ServerKeys,
        now_ms,
        rooms::{
            CreateRoom, EventDraft, MembershipChange, canonical_content,
            pdu::{self, Placement, Reference},
        },
    },
    storage::{EventStatus, Storage},
};

const OURS: &str = "myelin.test";
const THEIRS: &str = "remote.test";

async fn services(dir: &Path) -> Arc<Services> {
    let env = vec![
        ("MYELIN_SERVER_NAME".to_owned(), OURS.to_owned()),
        ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().unwrap().to_owned()),
    ];
    let config = Config::load(None, env).unwrap();
    let storage = Storage::open(&config.database).unwrap();
    let services = Services::new(config, storage).await.unwrap();
    // Nothing here is delivered anywhere.
    services.federation.sender.shutdown().await;
    services
}

async fn local_user(services: &Services, name: &str) -> OwnedUserId {
    let user_id = services.accounts.user_id_for_registration(name).unwrap();
    services.accounts.register(NewAccount { user_id: Some(user_id.clone()), ..Default::default() }).await.unwrap();
    user_id
}

fn content(value: Value) -> CanonicalJsonObject {
    canonical_content(value.as_object().unwrap().clone()).unwrap()
}

fn message(body: &str) -> EventDraft {
    EventDraft::new("m.room.message", content(json!({ "msgtype": "m.text", "body": body })))
}

/// The other server: its signing key is known to the services (as if fetched).
struct Remote {
    keys: ServerKeys,
    name: OwnedServerName,
}

impl Remote {
    async fn new(services: &Services) -> Self {
        let keys = ServerKeys::from_seed("r1", &[7; 32]).unwrap();
        let name = OwnedServerName::try_from(THEIRS).unwrap();
        let response = keys.signed_key_response(THEIRS, now_ms() + 3_600_000).unwrap();
        services.federation.keys.remember(&name, response).await.unwrap();
        Self { keys, name }
    }

    fn user(&self, localpart: &str) -> OwnedUserId {
        UserId::parse(format!("@{localpart}:{THEIRS}")).unwrap()
    }

    /// An event of `sender` after the room's forward extremities, with the auth events the
    /// current state gives, signed by this server.
    fn event(&self, services: &Services, room_id: &RoomId, sender: &UserId, draft: EventDraft) -> CanonicalJsonObject {
        let room = services.rooms.room(room_id).unwrap().unwrap();
        let prev = room.extremities.clone();
        let auth = self.auth_events(services, room_id, sender, &draft);
        self.event_at(services, room_id, sender, draft, prev, auth, room.depth + 1)
    }

    fn auth_events(
        &self,
        services: &Services,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Vec<OwnedEventId> {
        let room = services.rooms.room(room_id).unwrap().unwrap();
        let rules = pdu::rules_of(&room.version).unwrap();
        let raw = RawValue::from_string(serde_json::to_string(&draft.content).unwrap()).unwrap();
        let state = services.rooms.current_state(&room).unwrap();
        ruma::state_res::auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &raw,
            &rules.authorization,
        )
        .unwrap()
        .into_iter()
        .filter(|(kind, _)| *kind != StateEventType::RoomCreate || rules.event_format.allow_room_create_in_auth_events)
        .filter_map(|(kind, key)| services.rooms.state_event(&state, &kind.to_string(), &key).unwrap())
        .map(|pdu| pdu.event_id.clone())
        .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn event_at(
        &self,
        services: &Services,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        prev: Vec<OwnedEventId>,
        auth: Vec<OwnedEventId>,
        depth: u64,
    ) -> CanonicalJsonObject {
        let room = services.rooms.room(room_id).unwrap().unwrap();
        let refs = |ids: Vec<OwnedEventId>| {
            ids.into_iter().map(|event_id| Reference { event_id, sha256: None }).collect::<Vec<_>>()
        };
        let (prev, auth) = (refs(prev), refs(auth));
        pdu::build(
            &self.keys,
            THEIRS,
            &room.version,
            sender,
            draft,
            Placement { room_id: Some(room_id), prev_events: &prev, auth_events: &auth, depth },
        )
        .unwrap()
        .json
    }

    async fn send(&self, services: &Services, event: &CanonicalJsonObject) -> (Option<OwnedEventId>, Result<()>) {
        let raw = RawValue::from_string(serde_json::to_string(event).unwrap()).unwrap();
        services.receive_pdu(&self.name, &raw).await
    }

    /// Sends an event that must be accepted; returns its ID.
    async fn accepted(&self, services: &Services, event: &CanonicalJsonObject) -> OwnedEventId {
        let (id, outcome) = self.send(services, event).await;
        outcome.unwrap_or_else(|e| panic!("refused: {e}"));
        id.unwrap()
    }

    /// A remote user joins the public room.
    async fn join(&self, services: &Services, room_id: &RoomId, user: &UserId) -> OwnedEventId {
        let draft = EventDraft::state("m.room.member", user.as_str(), content(json!({ "membership": "join" })));
        let event = self.event(services, room_id, user, draft);
        self.accepted(services, &event).await
    }
}

async fn public_room(services: &Services, creator: &UserId) -> OwnedRoomId {
    services
        .rooms
        .create_room(creator, CreateRoom { preset: Some("public_chat".into()), ..Default::default() })
        .await
        .unwrap()
}

fn timeline_ids(services: &Services, room_id: &RoomId) -> Vec<OwnedEventId> {
    let room = services.rooms.room(room_id).unwrap().unwrap();
    services
        .storage
        .timeline(room.short_id, 0, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, short)| services.rooms.event(short).unwrap().unwrap().event_id.clone())
        .collect()
}

fn membership(services: &Services, room_id: &RoomId, user: &UserId) -> Option<String> {
    services
        .rooms
        .current_state_event(room_id, "m.room.member", user.as_str())
        .unwrap()
        .and_then(|p| p.content_str("membership"))
}

#[tokio::test]
async fn a_signed_remote_event_joins_the_timeline_like_a_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");

    let join = remote.join(&services, &room_id, &bob).await;
    assert_eq!(membership(&services, &room_id, &bob).as_deref(), Some("join"));
    assert_eq!(services.storage.membership(&bob, &room_id).unwrap().unwrap().event_id, join);
    let hello = remote.accepted(&services, &remote.event(&services, &room_id, &bob, message("hello"))).await;
    let timeline = timeline_ids(&services, &room_id);
    assert_eq!(&timeline[timeline.len() - 2..], [join, hello.clone()]);
    assert_eq!(services.rooms.room(&room_id).unwrap().unwrap().extremities, std::slice::from_ref(&hello));

    // Again: nothing changes.
    let event = services.rooms.pdu_json(&hello).unwrap().unwrap();
    let again = remote.send(&services, &serde_json::from_str(event.get()).unwrap()).await;
    assert!(again.1.is_ok());
    assert_eq!(timeline_ids(&services, &room_id).len(), timeline.len());
}

#[tokio::test]
async fn a_bad_signature_is_dropped_and_a_bad_hash_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");
    remote.join(&services, &room_id, &bob).await;

    // Signed with another key under the same key ID: dropped, not stored.
    let impostor = Remote { keys: ServerKeys::from_seed("r1", &[9; 32]).unwrap(), name: remote.name.clone() };
    let forged = impostor.event(&services, &room_id, &bob, message("forged"));
    let (id, outcome) = remote.send(&services, &forged).await;
    assert!(outcome.unwrap_err().to_string().contains("signature"), "a bad signature is refused");
    assert!(id.is_none());
    let forged_id =
        pdu::from_federation(forged, &pdu::rules_of(&services.rooms.room(&room_id).unwrap().unwrap().version).unwrap())
            .unwrap()
            .pdu
            .event_id;
    assert_eq!(services.rooms.event_status(&forged_id).unwrap(), None);

    // Content changed after signing: the signature (over the redacted event) holds, the hash
    // does not: stored redacted.
    let mut tampered = remote.event(&services, &room_id, &bob, message("original"));
    let CanonicalJsonValue::Object(content) = tampered.get_mut("content").unwrap() else { panic!() };
    content.insert("body".into(), CanonicalJsonValue::String("tampered".into()));
    let id = remote.accepted(&services, &tampered).await;
    let (_, pdu) = services.rooms.event_by_id(&id).unwrap().unwrap();
    assert_eq!(pdu.content_map(), serde_json::Map::new(), "redacted content");
    assert!(timeline_ids(&services, &room_id).contains(&id));
}

#[tokio::test]
async fn an_event_its_auth_rules_refuse_is_rejected_and_stays_out() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");
    remote.join(&services, &room_id, &bob).await;

    // Bob (power level 0) gives himself power.
    let draft = EventDraft::state("m.room.power_levels", "", content(json!({ "users": { bob.as_str(): 100 } })));
    let grab = remote.event(&services, &room_id, &bob, draft);
    let (id, outcome) = remote.send(&services, &grab).await;
    assert!(outcome.is_err());
    let id = id.unwrap();
    assert_eq!(services.rooms.event_status(&id).unwrap(), Some(EventStatus::Rejected));
    assert!(!timeline_ids(&services, &room_id).contains(&id));
    let power = services.rooms.current_state_event(&room_id, "m.room.power_levels", "").unwrap().unwrap();
    assert_ne!(power.event_id, id);

    // A user of the remote server who never joined cannot speak.
    let carol = remote.user("carol");
    let (_, outcome) = remote.send(&services, &remote.event(&services, &room_id, &carol, message("hi"))).await;
    assert!(outcome.is_err());

    // Events of another server's users are not the origin's to send... (the signature check
    // wants the sender's server): one signed by remote.test for a user of ours fails.
    let spoof = remote.event(&services, &room_id, &alice, message("not alice"));
    let (_, outcome) = remote.send(&services, &spoof).await;
    assert!(outcome.is_err());
}

#[tokio::test]
async fn an_event_the_current_state_refuses_is_soft_failed() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");
    let join = remote.join(&services, &room_id, &bob).await;
    let depth = services.rooms.room(&room_id).unwrap().unwrap().depth;
    let auth = remote.auth_events(&services, &room_id, &bob, &message("x"));

    // Alice bans bob here; bob, not knowing yet, speaks after his join.
    services
        .rooms
        .change_membership(&room_id, &alice, MembershipChange::Ban { target: bob.clone(), reason: None })
        .await
        .unwrap();
    let late = remote.event_at(&services, &room_id, &bob, message("too late"), vec![join.clone()], auth, depth + 1);
    let (id, outcome) = remote.send(&services, &late).await;
    outcome.unwrap();
    let id = id.unwrap();
    assert_eq!(services.rooms.event_status(&id).unwrap(), Some(EventStatus::SoftFailed));
    assert!(!timeline_ids(&services, &room_id).contains(&id), "soft-failed events stay out of the timeline");
    let room = services.rooms.room(&room_id).unwrap().unwrap();
    assert!(!room.extremities.contains(&id), "nor are they built upon");
    assert_eq!(membership(&services, &room_id, &bob).as_deref(), Some("ban"));
}

#[tokio::test]
async fn concurrent_state_changes_are_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");
    // Bob may set the topic.
    let power = services.rooms.current_state_event(&room_id, "m.room.power_levels", "").unwrap().unwrap();
    let mut levels = power.content_map();
    levels["users"][bob.as_str()] = json!(50);
    services.rooms.send_state(&room_id, &alice, "m.room.power_levels", "", levels).await.unwrap();
    let join = remote.join(&services, &room_id, &bob).await;
    let depth = services.rooms.room(&room_id).unwrap().unwrap().depth;

    // Alice changes the topic here while bob changes it there, both after bob's join.
    services
        .rooms
        .send_state(&room_id, &alice, "m.room.topic", "", json!({ "topic": "alice's" }).as_object().unwrap().clone())
        .await
        .unwrap();
    let draft = EventDraft::state("m.room.topic", "", content(json!({ "topic": "bob's" })));
    let auth = remote.auth_events(&services, &room_id, &bob, &draft);
    let theirs = remote.event_at(&services, &room_id, &bob, draft, vec![join], auth, depth + 1);
    let id = remote.accepted(&services, &theirs).await;

    let room = services.rooms.room(&room_id).unwrap().unwrap();
    assert_eq!(room.extremities.len(), 2, "two forks");
    let topic = services.rooms.current_state_event(&room_id, "m.room.topic", "").unwrap().unwrap();
    assert!(topic.content_str("topic").is_some());
    assert!(timeline_ids(&services, &room_id).contains(&id));
    // The next local event joins the forks, on the resolved state.
    let next = services.rooms.send(&room_id, &alice, message("both seen"), None).await.unwrap();
    assert_eq!(next.pdu.prev_events.len(), 2);
    let topic_after = services.rooms.current_state_event(&room_id, "m.room.topic", "").unwrap().unwrap();
    assert_eq!(topic_after.event_id, topic.event_id);
}

#[tokio::test]
async fn a_transaction_is_processed_once_and_bad_pdus_do_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let alice = local_user(&services, "alice").await;
    let room_id = public_room(&services, &alice).await;
    let remote = Remote::new(&services).await;
    let bob = remote.user("bob");
    remote.join(&services, &room_id, &bob).await;

    let first = remote.event(&services, &room_id, &bob, message("one"));
    let carol = remote.user("carol");
    let refused = remote.event(&services, &room_id, &carol, message("not a member"));
    let raw = |event: &CanonicalJsonObject| RawValue::from_string(serde_json::to_string(event).unwrap()).unwrap();
    let transaction = || crate::service::federation::transactions::Transaction {
        pdus: vec![raw(&refused), raw(&first), RawValue::from_string("{\"nonsense\":true}".into()).unwrap()],
        edus: vec![
            json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": bob, "typing": true } }),
        ],
    };
    let answer = services.receive_transaction(&remote.name, "txn1", transaction()).await.unwrap();
    let results = answer["pdus"].as_object().unwrap();
    assert_eq!(results.len(), 2, "{answer}");
    assert_eq!(results.values().filter(|r| r.get("error").is_some()).count(), 1, "{answer}");
    assert_eq!(services.typing.in_room(&room_id).0, std::slice::from_ref(&bob));

    // A retry gets the same answer, and nothing twice.
    let before = timeline_ids(&services, &room_id).len();
    let again = services.receive_transaction(&remote.name, "txn1", transaction()).await.unwrap();
    assert_eq!(again, answer);
    assert_eq!(timeline_ids(&services, &room_id).len(), before);

    // Typing of a user of another server than the origin is ignored.
    let other: &ServerName = "other.test".try_into().unwrap();
    let stranger = UserId::parse("@eve:other.test").unwrap();
    let edu = json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": stranger, "typing": true } });
    let _ = services
        .receive_transaction(
            &remote.name,
            "txn2",
            crate::service::federation::transactions::Transaction { pdus: vec![], edus: vec![edu] },
        )
        .await
        .unwrap();
    assert!(!services.typing.in_room(&room_id).0.iter().any(|u| u.server_name() == other));
}
