//! The outbound queues over a real database.
//!
//! Most tests stop the services' own sender and drive a second one over the same database with a
//! fake transport that records transactions and fails on demand: the rooms service still queues
//! what it writes, and the test decides when the sender starts (`resume`). The last tests use the
//! real client against a small HTTPS receiver on 127.0.0.1 that checks our X-Matrix signatures.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId,
    api::federation::transactions::edu::Edu,
};
use serde_json::{Value, json};

use super::{Backoff, BoxFuture, MAX_EDUS, MAX_PDUS, PduResults, Sender, Transaction, Transport};
use crate::{
    config::Config,
    error::{Error, Result},
    service::{
        Services,
        accounts::NewAccount,
        rooms::{CreateRoom, EventDraft, MembershipChange, canonical_content},
    },
    storage::{Batch, Storage},
};

const OURS: &str = "myelin.test";

async fn services(dir: &Path, settings: &[(&str, &str)]) -> Arc<Services> {
    let mut env = vec![
        ("MYELIN_SERVER_NAME".to_owned(), OURS.to_owned()),
        ("MYELIN_DATABASE__PATH".to_owned(), dir.to_str().unwrap().to_owned()),
    ];
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::load(None, env).unwrap();
    let storage = Storage::open(&config.database).unwrap();
    Services::new(config, storage).await.unwrap()
}

/// Services whose own sender is stopped, so that only the test's sender delivers.
async fn quiet_services(dir: &Path) -> Arc<Services> {
    let services = services(dir, &[]).await;
    services.federation.sender.shutdown().await;
    services
}

pub(super) async fn user(services: &Services, name: &str) -> OwnedUserId {
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

fn join() -> MembershipChange {
    MembershipChange::Join { reason: None, extra: Default::default() }
}

/// A public room of `alice`'s which `remote` (a user of another server) joined. The join is
/// written through the local write path, as if the receiving side had accepted it.
pub(super) async fn room_with(services: &Services, alice: &UserId, remote: &[&UserId]) -> OwnedRoomId {
    let room_id = services
        .rooms
        .create_room(alice, CreateRoom { preset: Some("public_chat".into()), ..Default::default() })
        .await
        .unwrap();
    for user in remote {
        services.rooms.change_membership(&room_id, user, join()).await.unwrap();
    }
    room_id
}

pub(super) async fn send(services: &Services, room_id: &RoomId, user: &UserId, body: &str) -> OwnedEventId {
    services.rooms.send(room_id, user, message(body), None).await.unwrap().pdu.event_id.clone()
}

/// The room's timeline, as the PDUs stored.
pub(super) fn timeline(services: &Services, room_id: &RoomId) -> Vec<Value> {
    let room = services.rooms.room_exists(room_id).unwrap();
    services
        .storage
        .timeline(room.short_id, 0, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, short)| serde_json::from_str(services.storage.event(short).unwrap().unwrap().pdu.get()).unwrap())
        .collect()
}

pub(super) fn body(pdu: &Value) -> &str {
    pdu["content"]["body"].as_str().unwrap_or_default()
}

pub(super) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A transaction as a destination saw it.
#[derive(Clone, Debug)]
struct Attempt {
    destination: OwnedServerName,
    txn: String,
    pdus: Vec<Value>,
    edus: Vec<Value>,
    accepted: bool,
}

/// Records transactions; fails them while `down` is set; refuses the events in `refused`.
#[derive(Default)]
struct Fake {
    attempts: Mutex<Vec<Attempt>>,
    down: AtomicBool,
    refused: Mutex<Vec<OwnedEventId>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Fake {
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Attempt> {
        self.attempts().into_iter().filter(|a| a.accepted).collect()
    }

    fn delivered_pdus(&self) -> Vec<Value> {
        self.delivered().into_iter().flat_map(|a| a.pdus).collect()
    }

    fn delivered_edus(&self) -> Vec<Value> {
        self.delivered().into_iter().flat_map(|a| a.edus).collect()
    }
}

impl Transport for Fake {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<PduResults>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            let accepted = !self.down.load(Ordering::SeqCst);
            self.attempts.lock().unwrap().push(Attempt {
                destination: destination.to_owned(),
                txn: transaction.id.to_string(),
                pdus: transaction.pdus.iter().map(|p| serde_json::from_str(p.get()).unwrap()).collect(),
                edus: transaction.edus.iter().map(|e| serde_json::from_str(e.json().get()).unwrap()).collect(),
                accepted,
            });
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if !accepted {
                return Err(Error::unreachable(destination, "down"));
            }
            let refused = self.refused.lock().unwrap().clone();
            Ok(refused.into_iter().map(|id| (id, Err("refused".to_owned()))).collect())
        })
    }
}

fn fake_sender(services: &Services, fake: &Arc<Fake>, backoff: Backoff) -> Sender {
    Sender::new(services.storage.clone(), fake.clone(), services.config.server_name.clone(), backoff)
}

const FAST: Backoff = Backoff {
    min: Duration::from_millis(20),
    max: Duration::from_millis(200),
    catch_up_after: Duration::from_secs(3600),
};

fn queued(services: &Services, destination: &str) -> (usize, usize) {
    (
        services.storage.outbound_pdus(destination, 0, usize::MAX).unwrap().len(),
        services.storage.outbound_edus(destination, 0, usize::MAX).unwrap().len(),
    )
}

#[test]
fn backoff_doubles_from_the_minimum_up_to_the_cap() {
    let backoff = Backoff { min: Duration::from_secs(5), max: Duration::from_secs(3600), ..FAST };
    let waits: Vec<u64> = (1..=12).map(|n| backoff.delay(n).as_secs()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
    assert_eq!(backoff.delay(0), Duration::from_secs(5));
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(3600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_in_a_room_are_those_of_its_joined_members() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let (bob, carol) = (UserId::parse("@bob:remote.test").unwrap(), UserId::parse("@carol:other.test").unwrap());
    let room_id = room_with(&services, &alice, &[&bob, &carol]).await;
    let names = |servers: Vec<OwnedServerName>| servers.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(names(services.rooms.servers_in_room(&room_id).unwrap()), [OURS, "other.test", "remote.test"]);
    assert_eq!(names(services.rooms.remote_servers_in_room(&room_id).unwrap()), ["other.test", "remote.test"]);

    // Bob leaves: his server hears of it (it was in the room before), then no more.
    let leave = MembershipChange::Leave { reason: None };
    services.rooms.change_membership(&room_id, &bob, leave).await.unwrap();
    assert_eq!(names(services.rooms.remote_servers_in_room(&room_id).unwrap()), ["other.test"]);
    send(&services, &room_id, &alice, "after bob left").await;
    let to_remote = services.storage.outbound_pdus("remote.test", 0, usize::MAX).unwrap();
    let last = services.storage.event(to_remote.last().unwrap().short_event).unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(last.pdu.get()).unwrap()["content"]["membership"], "leave");
    // remote.test: bob's join, carol's, bob's leave; other.test: carol's join, bob's leave, the
    // message.
    assert_eq!((queued(&services, "remote.test").0, queued(&services, "other.test").0), (3, 3));

    // The same from a cold cache (the counts are rebuilt from the state).
    drop(services);
    let services = quiet_services(dir.path()).await;
    assert_eq!(names(services.rooms.servers_in_room(&room_id).unwrap()), [OURS, "other.test"]);
    assert_eq!(
        names(services.rooms.remote_servers_sharing_rooms(&alice).unwrap().into_iter().collect()),
        ["other.test"]
    );
    // A room of our users only queues nothing.
    let lonely = room_with(&services, &alice, &[]).await;
    send(&services, &lonely, &alice, "hello?").await;
    let all: BTreeSet<String> = services.storage.outbound_destinations().unwrap().into_iter().collect();
    assert_eq!(all, ["other.test".to_owned(), "remote.test".to_owned()].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_in_order_at_most_fifty_per_transaction_one_transaction_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    for i in 0..120 {
        send(&services, &room_id, &alice, &format!("message {i}")).await;
    }
    assert_eq!(queued(&services, "remote.test"), (121, 0), "bob's join and the messages");

    let fake = Arc::new(Fake::default());
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("everything is delivered", || fake.delivered_pdus().len() == 121).await;
    wait_until("the task ends", || sender.active_destinations().is_empty()).await;

    let attempts = fake.attempts();
    assert!(attempts.iter().all(|a| a.destination == "remote.test" && a.pdus.len() <= MAX_PDUS));
    assert_eq!(attempts.iter().map(|a| a.pdus.len()).collect::<Vec<_>>(), [50, 50, 21]);
    let ids: BTreeSet<&str> = attempts.iter().map(|a| a.txn.as_str()).collect();
    assert_eq!(ids.len(), 3, "a new ID for each transaction");
    assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 1);
    // In the timeline's order, from bob's join on.
    let stored = timeline(&services, &room_id);
    let from_join = stored.iter().position(|pdu| pdu["state_key"] == bob.as_str()).unwrap();
    assert_eq!(fake.delivered_pdus(), stored[from_join..]);
    assert_eq!(queued(&services, "remote.test"), (0, 0), "removed once delivered");

    // Later events start the task again.
    send(&services, &room_id, &alice, "one more").await;
    sender.resume().unwrap();
    wait_until("the new event is delivered", || fake.delivered_pdus().len() == 122).await;
    assert_eq!(body(fake.delivered_pdus().last().unwrap()), "one more");
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_is_retried_unchanged_and_leaves_the_queue_only_once_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    send(&services, &room_id, &alice, "first").await;

    let fake = Arc::new(Fake { down: AtomicBool::new(true), ..Fake::default() });
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("three tries failed", || fake.attempts().len() >= 3).await;
    // What comes meanwhile waits for the next transaction.
    send(&services, &room_id, &alice, "second").await;
    sender.resume().unwrap();
    wait_until("two more tries failed", || fake.attempts().len() >= 5).await;
    assert_eq!(queued(&services, "remote.test"), (3, 0), "nothing leaves the queue while the destination is down");

    fake.down.store(false, Ordering::SeqCst);
    wait_until("everything is delivered", || fake.delivered_pdus().len() == 3).await;
    let attempts = fake.attempts();
    let first = &attempts[0];
    let retries: Vec<&Attempt> = attempts.iter().take_while(|a| a.txn == first.txn).collect();
    assert!(retries.len() >= 6, "the same transaction until it was accepted: {attempts:#?}");
    assert!(retries.iter().all(|a| a.pdus == first.pdus && a.edus == first.edus), "unchanged");
    assert!(retries.last().unwrap().accepted);
    assert_eq!(first.pdus.len(), 2, "the join and the first message");
    let next = &attempts[retries.len()];
    assert_ne!(next.txn, first.txn);
    assert_eq!(next.pdus.iter().map(body).collect::<Vec<_>>(), ["second"]);
    wait_until("the queue is empty", || queued(&services, "remote.test") == (0, 0)).await;
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_destination_refuses_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    let refused = send(&services, &room_id, &alice, "refused").await;
    let fake = Arc::new(Fake { refused: Mutex::new(vec![refused]), ..Fake::default() });
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("the task ends", || !fake.attempts().is_empty() && sender.active_destinations().is_empty()).await;
    assert_eq!(fake.attempts().len(), 1);
    assert_eq!(queued(&services, "remote.test"), (0, 0));
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_of_life_ends_the_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    room_with(&services, &alice, &[&bob]).await;
    let fake = Arc::new(Fake { down: AtomicBool::new(true), ..Fake::default() });
    let hour = Duration::from_secs(3600);
    let sender = fake_sender(&services, &fake, Backoff { min: hour, max: hour, catch_up_after: hour });
    sender.resume().unwrap();
    wait_until("the first try failed", || fake.attempts().len() == 1).await;
    fake.down.store(false, Ordering::SeqCst);
    // Another server's life changes nothing.
    sender.destination_alive(ruma::server_name!("other.test"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.attempts().len(), 1);
    // (Said again until heard: it only counts once the task waits.)
    wait_until("the retry is delivered", || {
        sender.destination_alive(ruma::server_name!("remote.test"));
        fake.delivered().len() == 1
    })
    .await;
    assert_eq!(fake.attempts().len(), 2);
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_long_keeps_the_latest_event_of_each_room_and_the_newest_edus() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let (one, two) = (room_with(&services, &alice, &[&bob]).await, room_with(&services, &alice, &[&bob]).await);
    for i in 0..30 {
        send(&services, &one, &alice, &format!("one {i}")).await;
        send(&services, &two, &alice, &format!("two {i}")).await;
    }
    let destination = ruma::server_name!("remote.test");
    let edus = super::MAX_EDUS_KEPT + 20;
    let mut batch = Batch::new();
    for i in 0..edus {
        let edu: Edu =
            serde_json::from_value(json!({ "edu_type": "org.example.test", "content": { "i": i } })).unwrap();
        let _ = services.federation.sender.queue_edu(&mut batch, [destination], &edu).unwrap();
    }
    services.storage.commit(batch).await.unwrap();
    assert_eq!(queued(&services, "remote.test"), (62, edus));

    // Down for longer than `catch_up_after`: trimmed at the next failure.
    let fake = Arc::new(Fake { down: AtomicBool::new(true), ..Fake::default() });
    let backoff = Backoff { catch_up_after: Duration::from_millis(100), ..FAST };
    let sender = fake_sender(&services, &fake, backoff);
    sender.resume().unwrap();
    wait_until("the queues are trimmed", || queued(&services, "remote.test") == (2, super::MAX_EDUS_KEPT)).await;
    // More while it is down is trimmed again.
    send(&services, &one, &alice, "one more").await;
    wait_until("trimmed again", || queued(&services, "remote.test").0 == 2).await;

    // Back: the latest of each room and the newest EDUs arrive.
    fake.down.store(false, Ordering::SeqCst);
    wait_until("the rest is delivered", || queued(&services, "remote.test") == (0, 0)).await;
    let bodies: BTreeSet<String> = fake.delivered_pdus().iter().map(|pdu| body(pdu).to_owned()).collect();
    assert_eq!(bodies, ["one more".to_owned(), "two 29".to_owned()].into());
    let numbers: Vec<u64> = fake.delivered_edus().iter().map(|e| e["content"]["i"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (20..edus as u64).collect::<Vec<_>>());
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edus_go_at_most_a_hundred_per_transaction_in_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let destination = ruma::server_name!("remote.test");
    let mut batch = Batch::new();
    for i in 0..150 {
        let edu: Edu =
            serde_json::from_value(json!({ "edu_type": "org.example.test", "content": { "i": i } })).unwrap();
        // Never to ourselves.
        let queued = services
            .federation
            .sender
            .queue_edu(&mut batch, [destination, ruma::server_name!("myelin.test")], &edu)
            .unwrap();
        assert_eq!(queued.destinations().collect::<Vec<_>>(), [destination]);
    }
    services.storage.commit(batch).await.unwrap();
    assert_eq!(queued(&services, "remote.test"), (0, 150));
    assert_eq!(services.storage.outbound_destinations().unwrap(), ["remote.test"]);

    let fake = Arc::new(Fake::default());
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("everything is delivered", || fake.delivered_edus().len() == 150).await;
    let delivered = fake.delivered();
    assert_eq!(delivered.iter().map(|a| a.edus.len()).collect::<Vec<_>>(), [MAX_EDUS, 50]);
    let numbers: Vec<u64> = fake.delivered_edus().iter().map(|e| e["content"]["i"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..150).collect::<Vec<_>>(), "in the order they were queued");
    wait_until("the queue is empty", || queued(&services, "remote.test") == (0, 0)).await;
    sender.shutdown().await;
}

#[test]
fn typing_and_presence_keep_only_the_latest_and_respect_the_limit() {
    let mut ephemeral = super::Ephemeral::default();
    let (room, alice, bob) =
        (ruma::room_id!("!r:myelin.test"), ruma::user_id!("@alice:myelin.test"), ruma::user_id!("@bob:myelin.test"));
    ephemeral.typing.insert((room.to_owned(), alice.to_owned()), true);
    ephemeral.typing.insert((room.to_owned(), alice.to_owned()), false);
    ephemeral.typing.insert((room.to_owned(), bob.to_owned()), true);
    for (user, presence) in [(alice, "online"), (alice, "unavailable"), (bob, "online")] {
        let update = super::super::edus::presence_update(user, &json!({ "presence": presence })).unwrap();
        ephemeral.presence.insert(update.user_id.clone(), update);
    }
    let json = |edus: Vec<ruma::serde::Raw<Edu>>| -> Vec<Value> {
        edus.iter().map(|e| serde_json::from_str(e.json().get()).unwrap()).collect()
    };
    let first = json(ephemeral.take(1));
    assert_eq!(
        first,
        [json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": alice, "typing": false } })]
    );
    let rest = json(ephemeral.take(MAX_EDUS));
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0]["content"]["user_id"], bob.as_str());
    assert_eq!(rest[1]["edu_type"], "m.presence");
    let push = rest[1]["content"]["push"].as_array().unwrap();
    assert_eq!(push.len(), 2, "one update per user: {push:?}");
    assert_eq!(push[0]["presence"], "unavailable");
    assert!(ephemeral.take(MAX_EDUS).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_to_device_typing_and_presence_reach_the_servers_concerned() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    let event_id = send(&services, &room_id, &alice, "read me").await;

    services.rooms.set_receipt(&room_id, &alice, "m.read", &event_id, None).await.unwrap();
    services.rooms.set_receipt(&room_id, &alice, "m.read.private", &event_id, None).await.unwrap();
    let messages = json!({
        bob.as_str(): { "BOBDEVICE": { "secret": 1 } },
        "@dave:elsewhere.test": { "*": { "secret": 2 } },
    });
    let device = ruma::device_id!("ALICEDEVICE");
    services.to_device.send(&alice, device, "txn1", "m.test", messages.as_object().unwrap().clone()).await.unwrap();
    // The same transaction again is not sent twice.
    services.to_device.send(&alice, device, "txn1", "m.test", messages.as_object().unwrap().clone()).await.unwrap();
    assert_eq!(queued(&services, "remote.test").1, 2, "the public receipt and one to-device EDU");
    assert_eq!(queued(&services, "elsewhere.test"), (0, 1));

    let fake = Arc::new(Fake::default());
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("the EDUs are delivered", || fake.delivered_edus().len() == 3).await;
    let edus = |server: &str| -> Vec<Value> {
        fake.delivered().into_iter().filter(|a| a.destination == server).flat_map(|a| a.edus).collect()
    };
    let remote = edus("remote.test");
    assert_eq!(remote[0]["edu_type"], "m.receipt");
    let read = &remote[0]["content"][room_id.as_str()]["m.read"][alice.as_str()];
    assert_eq!(read["event_ids"], json!([event_id]));
    assert!(read["data"]["ts"].is_u64());
    assert_eq!(remote[1]["edu_type"], "m.direct_to_device");
    assert_eq!(remote[1]["content"]["sender"], alice.as_str());
    assert_eq!(remote[1]["content"]["type"], "m.test");
    assert_eq!(remote[1]["content"]["messages"], json!({ bob.as_str(): { "BOBDEVICE": { "secret": 1 } } }));
    assert!(remote[1]["content"]["message_id"].is_string());
    let elsewhere = edus("elsewhere.test");
    assert_eq!(elsewhere[0]["content"]["messages"], json!({ "@dave:elsewhere.test": { "*": { "secret": 2 } } }));
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_queued_is_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let alice = user(&services, "alice").await;
    let bob = UserId::parse("@bob:remote.test").unwrap();
    let room_id = room_with(&services, &alice, &[&bob]).await;
    for i in 0..3 {
        send(&services, &room_id, &alice, &format!("before the restart {i}")).await;
    }
    let fake = Arc::new(Fake { down: AtomicBool::new(true), ..Fake::default() });
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("a try failed", || !fake.attempts().is_empty()).await;
    sender.shutdown().await;
    let stored = timeline(&services, &room_id);
    drop(sender);
    drop(services);

    let services = quiet_services(dir.path()).await;
    assert_eq!(queued(&services, "remote.test"), (4, 0));
    let fake = Arc::new(Fake::default());
    let sender = fake_sender(&services, &fake, FAST);
    sender.resume().unwrap();
    wait_until("everything is delivered", || fake.delivered_pdus().len() == 4).await;
    assert_eq!(fake.delivered_pdus(), stored[stored.len() - 4..]);
    wait_until("the queue is empty", || queued(&services, "remote.test") == (0, 0)).await;
    sender.shutdown().await;
}

#[test]
fn scans_start_above_what_was_delivered_but_never_above_a_late_commit() {
    let mut floor = super::Floor::default();
    assert_eq!(floor.scan(), 0);
    floor.delivered(Some(49));
    assert_eq!(floor.scan(), 50);
    // Number 30 was allocated early but committed during the scan: it is woken, and the next
    // scan starts there although 99 was delivered.
    floor.woken(30);
    floor.delivered(Some(99));
    assert_eq!(floor.scan(), 30);
    // A wake above what is delivered does not hold the start back; an empty scan keeps it.
    floor.woken(120);
    floor.delivered(Some(99));
    assert_eq!(floor.scan(), 100);
    floor.delivered(None);
    assert_eq!(floor.scan(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_committed_after_later_ones_were_delivered_is_delivered_too() {
    let dir = tempfile::tempdir().unwrap();
    let services = quiet_services(dir.path()).await;
    let destination = ruma::server_name!("remote.test");
    let edu = |i: u64| -> Edu {
        serde_json::from_value(json!({ "edu_type": "org.example.test", "content": { "i": i } })).unwrap()
    };
    let fake = Arc::new(Fake::default());
    let sender = fake_sender(&services, &fake, FAST);
    // The first number goes to a batch that commits last.
    let mut late = Batch::new();
    let late_queued = sender.queue_edu(&mut late, [destination], &edu(1)).unwrap();
    for i in 2..=4 {
        let mut batch = Batch::new();
        let queued = sender.queue_edu(&mut batch, [destination], &edu(i)).unwrap();
        services.storage.commit(batch).await.unwrap();
        sender.wake(&queued);
        wait_until("it is delivered", || fake.delivered_edus().len() as u64 == i - 1).await;
    }
    services.storage.commit(late).await.unwrap();
    sender.wake(&late_queued);
    wait_until("the late one is delivered", || fake.delivered_edus().len() == 4).await;
    let order: Vec<u64> = fake.delivered_edus().iter().map(|e| e["content"]["i"].as_u64().unwrap()).collect();
    assert_eq!(order, [2, 3, 4, 1]);
    wait_until("the queue is empty", || queued(&services, "remote.test") == (0, 0)).await;
    sender.shutdown().await;
}
