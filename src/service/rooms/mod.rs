//! Rooms: the signed event graph, its state, memberships, aliases and the public directory.
//!
//! Every local event goes through [`Rooms::append`] under the room's lock: it is placed after the
//! room's forward extremities, given the auth events the room version asks for, hashed and
//! signed, checked against the room version's authorization rules (through ruma's state-res), and
//! stored with its state snapshot, timeline entry and membership changes in one atomic write. A
//! refused event leaves nothing behind. Different rooms have different locks and proceed in
//! parallel.

mod aliases;
pub mod backfill;
mod cache;
pub mod client_event;
mod create;
mod directory;
pub mod hierarchy;
pub mod history;
mod membership;
pub mod pdu;
mod power;
pub mod read;
mod receipts;
pub use receipts::{Counts, Notification, UnreadCounts, notification};
mod redaction;
pub mod relations;
pub mod remote;
mod resolve;
pub mod search;
pub mod serve;
mod servers;
mod state;
mod upgrade;
pub mod user_directory;
mod visibility;

use std::{collections::HashMap, sync::Arc};

pub use cache::CachedEvent;
use cache::RoomCaches;
pub use client_event::ClientEvent;
pub use create::CreateRoom;
pub use directory::{PublicRoom, PublicRoomsPage, PublicRoomsQuery};
pub use membership::{MembershipChange, PreparedMembership};
pub use pdu::{EventDraft, Pdu, canonical_content};
use relations::relation_of;
use ruma::{
    EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules},
};
use serde_json::{Map, Value, value::RawValue};
pub use state::StateMap;
use state::StateStore;
pub use visibility::SeeMemo;

use super::{federation::sender::Sender, keys::ServerKeys, locks::KeyedLocks, notifier::Notifier, now_ms};
use crate::{
    config::Config,
    error::{Error, Result},
    storage::{Batch, EventStatus, MembershipRecord, RoomRecord, Sequence, Storage, StoredEvent},
};

pub struct Rooms {
    config: Arc<Config>,
    storage: Arc<Storage>,
    keys: Arc<ServerKeys>,
    locks: KeyedLocks<OwnedRoomId>,
    state: StateStore,
    caches: RoomCaches,
    /// Serializes the creation of short state keys, which are global.
    state_key_lock: tokio::sync::Mutex<()>,
    /// Serializes alias changes, so that two cannot claim one alias.
    alias_lock: tokio::sync::Mutex<()>,
    notifier: Arc<Notifier>,
    /// Where new events are queued for the other servers in their rooms.
    sender: Arc<Sender>,
    /// Timeline events are queued for the application services they concern.
    appservices: Arc<crate::service::appservice::AppServices>,
    /// Committed timeline events are offered for pushing.
    pushers: Arc<crate::service::pushers::Pushers>,
    /// Joined members per server, by state snapshot (`servers`).
    server_counts: quick_cache::sync::Cache<u64, Arc<servers::ServerCounts>>,
}

/// A room as the write path holds it, under its lock.
struct RoomHandle {
    room_id: OwnedRoomId,
    record: RoomRecord,
    rules: RoomVersionRules,
    state: Arc<StateMap>,
    /// Layers of the current state's snapshot (see `state`), `None` for the empty state.
    state_layers: Option<u32>,
    /// Events staged in the open batch but not committed yet, which later events of the same
    /// batch refer to (room creation writes a dozen at once).
    pending: HashMap<OwnedEventId, Pending>,
}

struct Pending {
    short: u64,
    pdu: Arc<Pdu>,
    json: ruma::CanonicalJsonObject,
    /// The state after the event (`None` for outliers).
    after: Option<StateAt>,
}

/// A state snapshot with its decoded state: where an event is placed.
#[derive(Clone)]
pub(crate) struct StateAt {
    pub id: u64,
    pub state: Arc<StateMap>,
    /// Layers of the snapshot, `None` for the empty state.
    pub layers: Option<u32>,
}

impl RoomHandle {
    fn new(
        room_id: OwnedRoomId,
        record: RoomRecord,
        rules: RoomVersionRules,
        state: Arc<StateMap>,
        state_layers: Option<u32>,
    ) -> Self {
        Self { room_id, record, rules, state, state_layers, pending: HashMap::new() }
    }

    /// The room's current state.
    fn current(&self) -> StateAt {
        StateAt { id: self.record.state, state: self.state.clone(), layers: self.state_layers }
    }

    fn set_current(&mut self, state: StateAt) {
        self.record.state = state.id;
        self.state = state.state;
        self.state_layers = state.layers;
    }
}

/// The transaction a client sent an event with. A transaction ID is scoped to a device and to the
/// request's path: the same ID for another room, type or redacted event is a new request.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub device_id: OwnedDeviceId,
    pub txn_id: String,
    /// The path without the transaction ID, e.g. `send/!room/m.room.message`.
    pub scope: String,
}

/// A stored event, as `append` returns it.
#[derive(Clone, Debug)]
pub struct Appended {
    pub pdu: Arc<Pdu>,
    /// Its stream position (0 for an event kept out of the timeline: soft-failed).
    pub position: u64,
}

impl Rooms {
    pub fn new(
        config: Arc<Config>,
        storage: Arc<Storage>,
        keys: Arc<ServerKeys>,
        notifier: Arc<Notifier>,
        sender: Arc<Sender>,
        appservices: Arc<crate::service::appservice::AppServices>,
        pushers: Arc<crate::service::pushers::Pushers>,
    ) -> Self {
        let started_at = storage.stream_position();
        let event_cache_bytes = config.rooms.event_cache_mb << 20;
        Self {
            config,
            state: StateStore::new(storage.clone()),
            storage,
            keys,
            locks: KeyedLocks::default(),
            caches: RoomCaches::new(started_at, event_cache_bytes),
            state_key_lock: tokio::sync::Mutex::new(()),
            alias_lock: tokio::sync::Mutex::new(()),
            notifier,
            sender,
            appservices,
            pushers,
            server_counts: quick_cache::sync::Cache::new(servers::CACHE_CAPACITY),
        }
    }

    fn server_name(&self) -> &str {
        self.config.server_name.as_str()
    }

    // ----- reading events and state -----

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.storage.room(room_id)?)
    }

    pub fn room_exists(&self, room_id: &RoomId) -> Result<RoomRecord> {
        self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))
    }

    /// An event by short ID, parsed and cached.
    pub fn event(&self, short: u64) -> Result<Option<Arc<Pdu>>> {
        Ok(self.cached_event(short)?.map(|event| event.pdu.clone()))
    }

    /// An event by short ID with what the client format needs besides the PDU, cached.
    pub fn cached_event(&self, short: u64) -> Result<Option<Arc<CachedEvent>>> {
        if let Some(event) = self.caches.event(short) {
            return Ok(Some(event));
        }
        let epoch = self.caches.epoch();
        let Some(stored) = self.storage.event(short)? else { return Ok(None) };
        let event = Arc::new(CachedEvent::from_stored(&stored)?);
        self.caches.fill_event(epoch, short, event.clone());
        Ok(Some(event))
    }

    pub fn event_by_id(&self, event_id: &EventId) -> Result<Option<(u64, Arc<Pdu>)>> {
        let Some(short) = self.storage.short_event_id(event_id)? else { return Ok(None) };
        Ok(self.event(short)?.map(|pdu| (short, pdu)))
    }

    /// The event holding `(kind, state_key)` in a state.
    pub fn state_event(&self, state: &StateMap, kind: &str, state_key: &str) -> Result<Option<Arc<Pdu>>> {
        let Some(short_key) = self.storage.short_state_key(kind, state_key)? else { return Ok(None) };
        match state.get(&short_key) {
            Some(short_event) => self.event(*short_event),
            None => Ok(None),
        }
    }

    /// The content of `(kind, state_key)` in a state, as JSON.
    pub fn state_content(&self, state: &StateMap, kind: &str, state_key: &str) -> Result<Option<Map<String, Value>>> {
        Ok(self.state_event(state, kind, state_key)?.map(|pdu| pdu.content_map()))
    }

    pub fn current_state(&self, room: &RoomRecord) -> Result<Arc<StateMap>> {
        self.state.full(room.state)
    }

    pub fn current_state_event(&self, room_id: &RoomId, kind: &str, state_key: &str) -> Result<Option<Arc<Pdu>>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        self.state_event(&*self.current_state(&room)?, kind, state_key)
    }

    /// The state before and after an event.
    pub fn event_states(&self, short_event: u64) -> Result<(Arc<StateMap>, Arc<StateMap>)> {
        let (before, after) = self.event_snapshots(short_event)?;
        Ok((self.state.full(before)?, self.state.full(after)?))
    }

    /// Every event of a state, parsed.
    pub fn state_events(&self, state: &StateMap) -> Result<Vec<Arc<Pdu>>> {
        let mut events = Vec::with_capacity(state.len());
        for short in state.values() {
            if let Some(pdu) = self.event(*short)? {
                events.push(pdu);
            }
        }
        Ok(events)
    }

    // ----- writing -----

    /// Locks a room and loads what the write path needs.
    async fn lock(&self, room_id: &RoomId) -> Result<(crate::service::locks::KeyedGuard<'_, OwnedRoomId>, RoomHandle)> {
        let guard = self.locks.lock(&room_id.to_owned()).await;
        let record = self.room_exists(room_id)?;
        let rules = pdu::rules_of(&record.version)?;
        let state = self.state.full(record.state)?;
        let layers = self.state.layers(record.state)?;
        Ok((guard, RoomHandle::new(room_id.to_owned(), record, rules, state, layers)))
    }

    /// An event by ID as the write path sees it: staged in the handle, or stored.
    fn handle_event(&self, room: &RoomHandle, event_id: &EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(pending) = room.pending.get(event_id) {
            return Ok(Some(pending.pdu.clone()));
        }
        Ok(self.event_by_id(event_id)?.map(|(_, pdu)| pdu))
    }

    /// A state entry of the handle's current state, staged events included.
    fn handle_state_event(&self, room: &RoomHandle, kind: &str, state_key: &str) -> Result<Option<Arc<Pdu>>> {
        self.state_event_staged(room, &room.state, kind, state_key)
    }

    /// A state entry of any state, staged events of the handle included.
    fn state_event_staged(
        &self,
        room: &RoomHandle,
        state: &StateMap,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let Some(short_key) = self.storage.short_state_key(kind, state_key)? else { return Ok(None) };
        let Some(short_event) = state.get(&short_key) else { return Ok(None) };
        self.event_staged(room, *short_event)
    }

    /// An event by short ID, staged events of the handle included.
    fn event_staged(&self, room: &RoomHandle, short: u64) -> Result<Option<Arc<Pdu>>> {
        if let Some(pending) = room.pending.values().find(|p| p.short == short) {
            return Ok(Some(pending.pdu.clone()));
        }
        self.event(short)
    }

    /// Sends one event to a room: the path of `/send`, `/state` and everything else that is not
    /// membership or redaction.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        transaction: Option<Transaction>,
    ) -> Result<Appended> {
        let (_guard, mut room) = self.lock(room_id).await?;
        if let Some(txn) = &transaction
            && let Some(event_id) = self.transaction_result(sender, txn)?
        {
            return self.appended(&event_id);
        }
        if let Some(state_key) = &draft.state_key
            && let Some(same) = self.unchanged_state(&room, sender, &draft, state_key)?
        {
            return Ok(same);
        }
        self.append(&mut room, sender, draft, transaction).await
    }

    /// A state event from a client. Checks what the auth rules leave to the server: canonical
    /// aliases must exist, room version 12's creators cannot be given a level, and a room's create
    /// event is never replaced.
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        state_key: &str,
        content: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        match kind {
            "m.room.create" => return Err(Error::bad_json("A room's create event cannot be replaced")),
            "m.room.canonical_alias" => self.check_canonical_alias(room_id, &content)?,
            "m.room.power_levels" => {
                let room = self.room_exists(room_id)?;
                let rules = pdu::rules_of(&room.version)?;
                if rules.authorization.explicitly_privilege_room_creators {
                    let creators = self.creators(&*self.current_state(&room)?)?;
                    let users = content.get("users").and_then(Value::as_object);
                    if creators.iter().any(|c| users.is_some_and(|u| u.contains_key(c.as_str()))) {
                        return Err(Error::bad_json("Room creators cannot be given a power level"));
                    }
                }
            }
            _ => {}
        }
        let draft = EventDraft::state(kind, state_key, canonical_content(content)?);
        Ok(self.send(room_id, sender, draft, None).await?.pdu.event_id.clone())
    }

    /// A state event identical to the current one (same sender, same content) is not sent again;
    /// the current event is the answer, as Synapse does.
    fn unchanged_state(
        &self,
        room: &RoomHandle,
        sender: &UserId,
        draft: &EventDraft,
        state_key: &str,
    ) -> Result<Option<Appended>> {
        let Some(current) = self.state_event(&room.state, &draft.kind.to_string(), state_key)? else {
            return Ok(None);
        };
        let same_content =
            serde_json::to_value(&draft.content).ok() == serde_json::from_str(current.content.get()).ok();
        if current.sender != sender || !same_content {
            return Ok(None);
        }
        self.appended(&current.event_id).map(Some)
    }

    fn transaction_result(&self, sender: &UserId, txn: &Transaction) -> Result<Option<OwnedEventId>> {
        let stored = self.storage.transaction(sender, &txn.device_id, &txn.scope, &txn.txn_id)?;
        Ok(stored.and_then(|v| v.get("event_id").and_then(Value::as_str).and_then(|id| EventId::parse(id).ok())))
    }

    fn appended(&self, event_id: &EventId) -> Result<Appended> {
        let (short, pdu) = self.event_by_id(event_id)?.ok_or_else(|| Error::internal("a remembered event is gone"))?;
        let position = self.storage.event(short)?.map_or(0, |e| e.position);
        Ok(Appended { pdu, position })
    }

    /// Builds, authorizes and stores a new local event. The caller holds the room's lock.
    async fn append(
        &self,
        room: &mut RoomHandle,
        sender: &UserId,
        draft: EventDraft,
        transaction: Option<Transaction>,
    ) -> Result<Appended> {
        self.append_with(room, sender, draft, transaction, |_, _| Ok(())).await
    }

    /// `append`, with `also` staging more writes into the same atomic batch once the event is
    /// built and authorized (a redaction prunes its target this way).
    async fn append_with(
        &self,
        room: &mut RoomHandle,
        sender: &UserId,
        draft: EventDraft,
        transaction: Option<Transaction>,
        also: impl FnOnce(&mut Batch, &Pdu) -> Result<()>,
    ) -> Result<Appended> {
        let built = self.build_authorized(room, sender, draft)?;
        self.append_built(room, built, transaction, also).await
    }

    /// A new local event placed after the room's forward extremities, hashed, signed and
    /// authorized against its auth events and the current state.
    fn build_authorized(&self, room: &RoomHandle, sender: &UserId, draft: EventDraft) -> Result<pdu::Built> {
        let auth_events = self.auth_events_for(room, sender, &draft)?;
        let prev_events = self.references(room, &room.record.extremities)?;
        let built = pdu::build(
            &self.keys,
            self.server_name(),
            &room.record.version,
            sender,
            draft,
            pdu::Placement {
                room_id: Some(&room.room_id),
                prev_events: &prev_events,
                auth_events: &auth_events,
                depth: room.record.depth + 1,
            },
        )?;
        self.authorize(room, &built.pdu)?;
        Ok(built)
    }

    /// Stores a new local event built by `build_authorized` and queues it for the other servers
    /// in the room, in one atomic write with what `also` stages.
    async fn append_built(
        &self,
        room: &mut RoomHandle,
        built: pdu::Built,
        transaction: Option<Transaction>,
        also: impl FnOnce(&mut Batch, &Pdu) -> Result<()>,
    ) -> Result<Appended> {
        let mut batch = Batch::new();
        also(&mut batch, &built.pdu)?;
        let before = (room.record.state, room.state.clone());
        let staged = self.stage(&mut batch, room, built, transaction).await?;
        let queued =
            self.queue_outbound(&mut batch, room, (before.0, &before.1), &staged.pdu, staged.short_event, None)?;
        let mut appended = self.commit(batch, vec![staged]).await?;
        self.sender.wake(&queued);
        Ok(appended.pop().expect("one event committed"))
    }

    /// The auth events the room version asks for, from the current state.
    fn auth_events_for(&self, room: &RoomHandle, sender: &UserId, draft: &EventDraft) -> Result<Vec<pdu::Reference>> {
        let content = RawValue::from_string(serde_json::to_string(&draft.content).expect("serializable"))
            .expect("serialized JSON is valid");
        let types = ruma::state_res::auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &content,
            &room.rules.authorization,
        )
        .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
        let mut ids = Vec::new();
        for (kind, state_key) in types {
            if kind == StateEventType::RoomCreate && !room.rules.event_format.allow_room_create_in_auth_events {
                continue;
            }
            if let Some(pdu) = self.handle_state_event(room, &kind.to_string(), &state_key)? {
                ids.push(pdu.event_id.clone());
            }
        }
        self.references(room, &ids)
    }

    /// References to events, with their reference hashes in room versions 1 and 2.
    fn references(&self, room: &RoomHandle, ids: &[OwnedEventId]) -> Result<Vec<pdu::Reference>> {
        let with_hashes = room.rules.events_reference_format == EventsReferenceFormatVersion::V1;
        ids.iter()
            .map(|event_id| {
                let sha256 = if with_hashes {
                    let json = match room.pending.get(event_id) {
                        Some(pending) => pending.json.clone(),
                        None => {
                            let stored = self
                                .storage
                                .event_by_id(event_id)?
                                .ok_or_else(|| Error::internal(format!("referenced event {event_id} is missing")))?;
                            serde_json::from_str(stored.pdu.get())
                                .map_err(|e| Error::internal(format!("stored PDU: {e}")))?
                        }
                    };
                    Some(pdu::reference_hash(&json, &room.rules)?)
                } else {
                    None
                };
                Ok(pdu::Reference { event_id: event_id.clone(), sha256 })
            })
            .collect()
    }

    /// The room version's authorization rules, against the event's auth events and the current
    /// state.
    fn authorize(&self, room: &RoomHandle, pdu: &Pdu) -> Result<()> {
        self.authorize_by_auth_events(room, pdu)?;
        self.authorize_against(room, pdu, &room.state)
    }

    /// The rules that depend on nothing but the event and its auth events.
    fn authorize_by_auth_events(&self, room: &RoomHandle, pdu: &Pdu) -> Result<()> {
        let rules = &room.rules.authorization;
        let fetch_event = |id: &EventId| self.handle_event(room, id).ok().flatten();
        ruma::state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)
            .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))
    }

    /// The rules that depend on a state: the state before an event, or the current state.
    fn authorize_against(&self, room: &RoomHandle, pdu: &Pdu, state: &StateMap) -> Result<()> {
        let fetch_state = |kind: &StateEventType, state_key: &str| {
            self.state_event_staged(room, state, &kind.to_string(), state_key).ok().flatten()
        };
        ruma::state_res::check_state_dependent_auth_rules(&room.rules.authorization, pdu, fetch_state)
            .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))
    }

    /// Stages a new local event, authorized, on the room's current state: see [`Self::stage_at`].
    async fn stage(
        &self,
        batch: &mut Batch,
        room: &mut RoomHandle,
        built: pdu::Built,
        transaction: Option<Transaction>,
    ) -> Result<Staged> {
        let before = room.current();
        self.stage_at(batch, room, built, transaction, before, Placement::Timeline).await
    }

    /// Stages an authorized event, local or remote, placed on the state `before` it: its record,
    /// its state, its timeline entry, membership changes and the room's new head, all in `batch`.
    /// This is the one path by which events enter a room's graph.
    ///
    /// The event replaces the forward extremities it cites; the room's current state becomes the
    /// state after it when it is the only extremity left, or the resolution (ruma's state
    /// resolution) of the states after every extremity otherwise. Memberships follow the current
    /// state. A soft-failed event is stored with its states but changes nothing else.
    ///
    /// The handle moves on to the new head, so that several events can be staged in one batch
    /// (room creation, joins); if the batch is not committed, drop the handle.
    async fn stage_at(
        &self,
        batch: &mut Batch,
        room: &mut RoomHandle,
        built: pdu::Built,
        transaction: Option<Transaction>,
        before: StateAt,
        placement: Placement,
    ) -> Result<Staged> {
        let pdu = built.pdu;
        // An outlier entering the timeline keeps its short ID, and is rewritten: caches must drop
        // what they hold of it.
        let (short_event, rewritten) = match self.storage.short_event_id(&pdu.event_id)? {
            Some(short) => (short, true),
            None => (self.storage.allocate(batch, Sequence::ShortEventId), false),
        };
        let mut unsigned = Map::new();
        let mut remember = Vec::new();
        let mut change = None;
        let after = match &pdu.state_key {
            Some(state_key) => {
                let kind = pdu.kind.to_string();
                let short_key = self.short_state_key_or_create(&kind, state_key).await?;
                // `prev_content` is read from the replaced event when served, so that a later
                // redaction of it shows there too.
                if let Some(previous) = self.state_event_staged(room, &before.state, &kind, state_key)? {
                    unsigned.insert("replaces_state".into(), previous.event_id.to_string().into());
                    unsigned.insert("prev_sender".into(), previous.sender.to_string().into());
                }
                let (id, layers, state) =
                    self.state.derive(batch, before.id, &before.state, before.layers, &[(short_key, short_event)])?;
                remember.push((id, state.clone()));
                change = Some(short_event);
                StateAt { id, state, layers: Some(layers) }
            }
            None => before.clone(),
        };

        let mut stored = StoredEvent {
            event_id: pdu.event_id.clone(),
            room_id: room.room_id.clone(),
            position: 0,
            pdu: RawValue::from_string(serde_json::to_string(&built.json).expect("canonical JSON serializes"))
                .expect("valid JSON"),
            unsigned,
            transaction: transaction.as_ref().map(|t| (t.device_id.clone(), t.txn_id.clone())),
            status: EventStatus::Timeline,
        };
        if let Some(txn) = &transaction {
            let result = serde_json::json!({ "event_id": pdu.event_id });
            batch.put_transaction(&pdu.sender, &txn.device_id, &txn.scope, &txn.txn_id, &result);
        }
        let pdu = Arc::new(pdu);
        let pending = |after: StateAt| Pending {
            short: short_event,
            pdu: pdu.clone(),
            json: built.json.clone(),
            after: Some(after),
        };
        if placement != Placement::Timeline {
            // Soft-failed events are never shown; backfilled ones are, from the `backfill` index
            // their caller writes. Neither changes the room's head, state or memberships.
            if placement == Placement::SoftFailed {
                stored.status = EventStatus::SoftFailed;
            }
            batch.put_event_outside_timeline(short_event, &stored, Some((before.id, after.id)));
            let snapshots = (before.id, after.id);
            room.pending.insert(pdu.event_id.clone(), pending(after));
            return Ok(Staged {
                pdu,
                short_event,
                short_room: room.record.short_id,
                rewritten,
                unsigned: stored.unsigned,
                transaction: stored.transaction,
                snapshots,
                remember,
                woken: Vec::new(),
                in_timeline: false,
            });
        }

        // The room's new head: the event replaces the extremities it cites.
        let old_current = room.current();
        room.record.extremities.retain(|id| !pdu.prev_events.contains(id));
        room.record.extremities.push(pdu.event_id.clone());
        room.record.depth = room.record.depth.max(pdu.depth);
        room.pending.insert(pdu.event_id.clone(), pending(after.clone()));
        let current = if room.record.extremities.len() == 1 {
            after.clone()
        } else {
            let resolved = self.resolve_extremities(batch, room)?;
            if resolved.id != after.id {
                remember.push((resolved.id, resolved.state.clone()));
            }
            resolved
        };
        room.set_current(current.clone());

        // Memberships follow the current state.
        let changed: Vec<u64> = if old_current.id == before.id && current.id == after.id {
            change.into_iter().collect()
        } else {
            current.state.iter().filter(|(k, v)| old_current.state.get(k) != Some(v)).map(|(_, v)| *v).collect()
        };
        let mut memberships = Vec::new();
        for short_member in changed {
            let member =
                if short_member == short_event { Some(pdu.clone()) } else { self.event_staged(room, short_member)? };
            if let Some(member) = member
                && let Some(membership) = self.membership_change(&room.room_id, &member)?
            {
                memberships.push(membership);
            }
        }
        let woken: Vec<OwnedUserId> = memberships.iter().map(|(user, _)| user.clone()).collect();

        let room_id = room.room_id.clone();
        let short_room = room.record.short_id;
        let relation = self.stage_relation(&pdu, short_event, short_room)?;
        let (unsigned, transaction) = (stored.unsigned.clone(), stored.transaction.clone());
        batch.put_event(short_event, short_room, stored, (before.id, after.id), move |position, batch| {
            if let Some(relation) = relation {
                relation(position, batch);
            }
            for (user, mut record) in memberships {
                record.position = position;
                if record.membership == "join" {
                    record.last_join = Some(position);
                }
                batch.put_membership(&user, &room_id, short_room, &record);
            }
        });
        batch.put_room(&room.room_id, &room.record);
        let snapshots = (before.id, after.id);
        Ok(Staged {
            pdu,
            short_event,
            short_room,
            rewritten,
            unsigned,
            transaction,
            snapshots,
            remember,
            woken,
            in_timeline: true,
        })
    }

    /// The room's current state as the resolution of the states after each of its forward
    /// extremities (staged ones included); a new snapshot when it is none of them.
    fn resolve_extremities(&self, batch: &mut Batch, room: &RoomHandle) -> Result<StateAt> {
        let mut states: Vec<StateAt> = Vec::with_capacity(room.record.extremities.len());
        for id in &room.record.extremities {
            let after = match room.pending.get(id) {
                Some(pending) => pending.after.clone(),
                None => match self.storage.short_event_id(id)?.map(|s| self.storage.event_state(s)).transpose()? {
                    Some(Some((_, after))) => {
                        Some(StateAt { id: after, state: self.state.full(after)?, layers: self.state.layers(after)? })
                    }
                    _ => None,
                },
            };
            match after {
                Some(after) => states.push(after),
                None => tracing::warn!(room = %room.room_id, extremity = %id, "a forward extremity has no state"),
            }
        }
        let Some(first) = states.first().cloned() else {
            return Err(Error::internal(format!("no state for the extremities of {}", room.room_id)));
        };
        if states.iter().all(|s| s.id == first.id || s.state == first.state) {
            return Ok(first);
        }
        let maps: Vec<&StateMap> = states.iter().map(|s| &*s.state).collect();
        let resolved = self.resolve_states(room, &maps)?;
        if let Some(same) = states.iter().find(|s| *s.state == resolved) {
            return Ok(same.clone());
        }
        let (id, layers, state) = self.state.derive(batch, state::EMPTY, &resolved, None, &[])?;
        Ok(StateAt { id, state, layers: Some(layers) })
    }

    /// A member event changes the target's membership record.
    fn membership_change(&self, room_id: &RoomId, pdu: &Pdu) -> Result<Option<(ruma::OwnedUserId, MembershipRecord)>> {
        if pdu.kind != TimelineEventType::RoomMember {
            return Ok(None);
        }
        let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else { return Ok(None) };
        let membership = pdu.content_str("membership").unwrap_or_else(|| "leave".into());
        let previous = self.storage.membership(&user, room_id)?;
        Ok(Some((
            user,
            MembershipRecord {
                membership,
                event_id: pdu.event_id.clone(),
                position: 0,
                last_join: previous.and_then(|p| p.last_join),
                forgotten: false,
            },
        )))
    }

    /// Commits staged events (in one write), updates the caches and wakes the members' syncs.
    async fn commit(&self, mut batch: Batch, staged: Vec<Staged>) -> Result<Vec<Appended>> {
        let mut for_appservices = Vec::new();
        for staged in staged.iter().filter(|s| s.in_timeline) {
            for_appservices.extend(self.appservices.queue(&mut batch, &staged.pdu, staged.short_event)?);
        }
        // Readers may see the new positions before this returns: a state about to change is
        // marked first.
        for staged in staged.iter().filter(|s| s.in_timeline) {
            self.caches.timeline_moving(staged.short_room, staged.snapshots.1);
        }
        let positions = match self.storage.commit(batch).await {
            Ok(positions) => positions,
            Err(e) => {
                for staged in staged.iter().filter(|s| s.in_timeline) {
                    self.caches.timeline_stayed(staged.short_room, staged.snapshots.1);
                }
                return Err(e.into());
            }
        };
        self.appservices.wake(&for_appservices);
        let in_timeline = staged.iter().filter(|s| s.in_timeline).count();
        assert_eq!(positions.len(), in_timeline, "one position per staged timeline event");
        if let Some(first) = staged.first() {
            self.notify_members(&first.pdu.room_id, staged.iter().flat_map(|s| s.woken.iter().map(|u| u.as_str())));
        }
        // Reads that raced this commit must not cache what they saw before it: an outlier that
        // is now in the timeline, the relations of events that gained one. Most commits change
        // neither, and leave the caches' epoch alone (a new epoch drops fills in flight).
        let shorts: Vec<u64> = staged.iter().filter(|s| s.rewritten).map(|s| s.short_event).collect();
        let targets: Vec<OwnedEventId> = staged.iter().filter_map(|s| relation_of(&s.pdu)).map(|(t, _)| t).collect();
        if !shorts.is_empty() || !targets.is_empty() {
            self.caches.invalidate(&shorts, targets.iter().map(|t| &**t));
        }
        // A member event changes its user's display name (mentions) or join (unread from).
        for staged in &staged {
            if staged.pdu.kind == TimelineEventType::RoomMember
                && let Some(user) = staged.pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            {
                self.caches.forget_unread(&staged.pdu.room_id, &user);
            }
        }
        let mut positions = positions.into_iter();
        Ok(staged
            .into_iter()
            .map(|staged| {
                let position = if staged.in_timeline { positions.next().unwrap_or_default() } else { 0 };
                for (id, state) in staged.remember {
                    self.state.remember(id, state);
                }
                self.caches.fill_snapshots(staged.short_event, staged.snapshots);
                if staged.in_timeline {
                    self.caches.timeline_moved(staged.short_room, position, staged.snapshots.1);
                }
                let cached = CachedEvent {
                    pdu: staged.pdu.clone(),
                    unsigned: staged.unsigned,
                    transaction: staged.transaction,
                    position,
                };
                self.caches.committed_event(staged.short_event, Arc::new(cached));
                if staged.in_timeline {
                    self.pushers.enqueue(staged.pdu.clone());
                }
                tracing::debug!(room = %staged.pdu.room_id, event = %staged.pdu.event_id, kind = %staged.pdu.kind, position, "event stored");
                Appended { pdu: staged.pdu, position }
            })
            .collect())
    }

    /// The short ID of a `(type, state_key)` pair, created (and committed) on first use.
    async fn short_state_key_or_create(&self, kind: &str, state_key: &str) -> Result<u64> {
        if let Some(short) = self.storage.short_state_key(kind, state_key)? {
            return Ok(short);
        }
        let _guard = self.state_key_lock.lock().await;
        if let Some(short) = self.storage.short_state_key(kind, state_key)? {
            return Ok(short);
        }
        let mut batch = Batch::new();
        let short = self.storage.allocate(&mut batch, Sequence::ShortStateKey);
        batch.put_state_key(short, kind, state_key);
        self.storage.commit(batch).await?;
        Ok(short)
    }

    /// Wakes the syncs of everyone in the room (joined, invited, knocking) and of the users named
    /// by state keys (a member event's target, who may just have left).
    pub fn notify_members<'a>(&self, room_id: &RoomId, state_keys: impl Iterator<Item = &'a str>) {
        let Ok(Some(room)) = self.room(room_id) else { return };
        let members = self.storage.members(room.short_id).unwrap_or_default();
        let mut users: Vec<ruma::OwnedUserId> = members
            .into_iter()
            .filter(|(_, membership)| matches!(membership.as_str(), "join" | "invite" | "knock"))
            .map(|(user, _)| user)
            .collect();
        users.extend(state_keys.filter_map(|key| UserId::parse(key).ok()));
        self.notifier.notify_all(users.iter().map(|u| &**u));
    }

    /// Keeps a newly committed outlier (no timeline position, no extras) in the cache.
    fn cache_outlier(&self, short: u64, pdu: Arc<Pdu>) {
        let event = CachedEvent { pdu, unsigned: Map::new(), transaction: None, position: 0 };
        self.caches.committed_event(short, Arc::new(event));
    }

    /// Drops a cached event once it was rewritten (redacted), with the relations of the event it
    /// related to (which no longer counts it).
    fn forget_cached(&self, short: u64, pdu: &Pdu) {
        let target = relation_of(pdu).map(|(target, _)| target);
        self.caches.invalidate(&[short], target.as_deref());
    }

    fn default_version(&self) -> RoomVersionId {
        self.config.rooms.default_version.clone()
    }
}

/// An event staged for commit.
struct Staged {
    pdu: Arc<Pdu>,
    short_event: u64,
    short_room: u64,
    /// Whether the event was stored before (an outlier), so that caches may hold it.
    rewritten: bool,
    /// What the stored event adds to the PDU, for the cache.
    unsigned: Map<String, Value>,
    transaction: Option<(OwnedDeviceId, String)>,
    /// The state snapshots before and after it.
    snapshots: (u64, u64),
    /// New state snapshots, for the cache once committed.
    remember: Vec<(u64, Arc<StateMap>)>,
    /// Users whose membership changed.
    woken: Vec<OwnedUserId>,
    /// Whether the event went into the timeline (and so gets a stream position).
    in_timeline: bool,
}

/// Where a staged event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Timeline,
    SoftFailed,
    /// Older than the timeline, fetched from another server: in the `backfill` index.
    Backfilled,
}

/// Milliseconds since an event was sent, for `unsigned.age`.
fn age_of(pdu: &Pdu) -> u64 {
    now_ms().saturating_sub(pdu.origin_server_ts.get().into())
}

#[cfg(test)]
mod tests;
