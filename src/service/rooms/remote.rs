//! Events from other servers entering a room: the checks on receipt that need the room
//! (authorization against the event's own auth events, against the state before it, against the
//! current state), then the same staging as local events ([`Rooms::stage_at`]). Rooms joined
//! through another server (send_join's state and auth chain) and invites of local users to rooms
//! we are not in are stored here too.
//!
//! The network side (signatures, hashes, fetching what is missing) is in
//! `service::federation::inbound`: by the time an event gets here, its signatures were checked, its
//! auth events are stored, and either its prev events have states or the state before it was
//! fetched.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, UserId,
    events::{StateEventType, TimelineEventType},
};
use serde_json::{Value, value::RawValue};

use super::{
    Appended, Pdu, Placement, RoomHandle, Rooms, StateAt, StateMap,
    pdu::{self, Built},
    state::EMPTY,
};
use crate::{
    error::{Error, Result},
    storage::{Batch, EventStatus, MembershipRecord, RemoteInvite, RoomRecord, Sequence, StoredEvent},
};

/// What became of a remote event.
#[derive(Debug)]
pub enum Accepted {
    /// In the timeline, like a local event.
    Timeline(Appended),
    /// Allowed by its auth events and the state before it, not by the current state: stored,
    /// never shown nor built upon.
    SoftFailed,
    /// Failed the auth checks (the reason): stored as rejected.
    Rejected(String),
    /// Known already.
    Known,
}

/// Where the state before a remote event comes from.
#[derive(Debug)]
pub enum StateBefore {
    /// The states after its prev events (resolved when they differ); each must have one.
    PrevEvents,
    /// The states after its prev events, as event IDs (fetched from another server, stored as
    /// outliers already): resolved when they differ.
    Given(Vec<Vec<OwnedEventId>>),
}

impl RoomHandle {
    /// A handle for staging outliers of a room that may not exist here yet (nothing of the room
    /// record is written).
    fn for_outliers(room_id: &RoomId, version: &RoomVersionId) -> Result<Self> {
        let record = RoomRecord {
            short_id: 0,
            version: version.clone(),
            created_ts: 0,
            state: EMPTY,
            extremities: Vec::new(),
            depth: 0,
            backfill_from: Vec::new(),
        };
        Ok(Self::new(room_id.to_owned(), record, pdu::rules_of(version)?, Arc::default(), None))
    }
}

impl Rooms {
    /// How an event is known here, if it is.
    pub fn event_status(&self, event_id: &EventId) -> Result<Option<EventStatus>> {
        Ok(self.storage.event_by_id(event_id)?.map(|stored| stored.status))
    }

    /// The events among `ids` that are not stored here.
    pub fn unknown_events<'a>(&self, ids: impl IntoIterator<Item = &'a OwnedEventId>) -> Result<Vec<OwnedEventId>> {
        let mut unknown = Vec::new();
        for id in ids {
            if self.storage.short_event_id(id)?.is_none() {
                unknown.push(id.clone());
            }
        }
        Ok(unknown)
    }

    /// The prev events of an event that have no state here (unknown, outliers or rejected), so
    /// that the state before it cannot be computed from them.
    pub fn prev_events_without_state(&self, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
        let mut missing = Vec::new();
        for prev in &pdu.prev_events {
            let has_state = match self.storage.short_event_id(prev)? {
                Some(short) => self.storage.event_state(short)?.is_some(),
                None => false,
            };
            if !has_state {
                missing.push(prev.clone());
            }
        }
        Ok(missing)
    }

    /// The state after an event that has one here, as event IDs (for `/state_ids` answers and
    /// state fetched around gaps).
    pub fn state_ids_after(&self, event_id: &EventId) -> Result<Option<Vec<OwnedEventId>>> {
        let Some(short) = self.storage.short_event_id(event_id)? else { return Ok(None) };
        let Some((_, after)) = self.storage.event_state(short)? else { return Ok(None) };
        let state = self.state.full(after)?;
        Ok(Some(self.state_events(&state)?.iter().map(|pdu| pdu.event_id.clone()).collect()))
    }

    /// Stores events of a room as outliers (auth chains, state fetched from another server),
    /// each checked against its own auth events in the order given: callers sort them so that
    /// auth events come first (by depth). Those that fail are stored as rejected, and returned
    /// with the reason. Events known already are left as they are.
    pub async fn store_outliers(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        events: Vec<Built>,
    ) -> Result<Vec<(OwnedEventId, String)>> {
        let mut room = RoomHandle::for_outliers(room_id, version)?;
        let mut batch = Batch::new();
        let rejected = self.stage_outliers(&mut batch, &mut room, events)?;
        self.storage.commit(batch).await?;
        for pending in room.pending.into_values() {
            self.cache_outlier(pending.short, pending.pdu);
        }
        Ok(rejected)
    }

    fn stage_outliers(
        &self,
        batch: &mut Batch,
        room: &mut RoomHandle,
        events: Vec<Built>,
    ) -> Result<Vec<(OwnedEventId, String)>> {
        let mut rejected = Vec::new();
        for built in events {
            let id = built.pdu.event_id.clone();
            if room.pending.contains_key(&id) || self.storage.short_event_id(&id)?.is_some() {
                continue;
            }
            let status = match self.authorize_by_own_auth_events(room, &built.pdu) {
                Ok(()) => EventStatus::Outlier,
                Err(e) => {
                    tracing::info!(event = %id, room = %room.room_id, error = %e, "rejected an event of an auth chain or state");
                    rejected.push((id, e.to_string()));
                    EventStatus::Rejected
                }
            };
            self.stage_outside_timeline(batch, room, built, status);
        }
        Ok(rejected)
    }

    /// Stages an outlier or a rejected event: its record and ID, no state, no timeline entry.
    fn stage_outside_timeline(&self, batch: &mut Batch, room: &mut RoomHandle, built: Built, status: EventStatus) {
        let mut pdu = built.pdu;
        pdu.rejected = status == EventStatus::Rejected;
        let short = self.storage.allocate(batch, Sequence::ShortEventId);
        let stored = StoredEvent {
            event_id: pdu.event_id.clone(),
            room_id: room.room_id.clone(),
            position: 0,
            pdu: RawValue::from_string(serde_json::to_string(&built.json).expect("canonical JSON serializes"))
                .expect("valid JSON"),
            unsigned: Default::default(),
            transaction: None,
            status,
        };
        batch.put_event_outside_timeline(short, &stored, None);
        room.pending
            .insert(pdu.event_id.clone(), super::Pending { short, pdu: Arc::new(pdu), json: built.json, after: None });
    }

    /// The authorization rules against the event's own auth events: the state-independent ones,
    /// then the others with the auth events as the state.
    fn authorize_by_own_auth_events(&self, room: &RoomHandle, pdu: &Pdu) -> Result<()> {
        self.authorize_by_auth_events(room, pdu)?;
        let mut auth: HashMap<(String, String), Arc<Pdu>> = HashMap::new();
        let mut ids: Vec<OwnedEventId> = pdu.auth_events.clone();
        // Room version 12 leaves the create event out of auth events: the room is named after it.
        if room.rules.authorization.room_create_event_id_as_room_id
            && pdu.kind != TimelineEventType::RoomCreate
            && let Ok(create) = EventId::parse(format!("${}", &room.room_id.as_str()[1..]))
        {
            ids.push(create);
        }
        for id in &ids {
            if let Some(event) = self.handle_event(room, id)?
                && let Some(state_key) = &event.state_key
            {
                auth.insert((event.kind.to_string(), state_key.clone()), event);
            }
        }
        let fetch_state =
            |kind: &StateEventType, state_key: &str| auth.get(&(kind.to_string(), state_key.to_owned())).cloned();
        ruma::state_res::check_state_dependent_auth_rules(&room.rules.authorization, pdu, fetch_state)
            .map_err(|reason| Error::forbidden(format!("Event not allowed by its auth events: {reason}")))
    }

    /// A remote event whose signatures were checked and whose auth events are stored: checked
    /// against its auth events, the state before it and the current state, then stored like a
    /// local event (or as soft-failed, or rejected). Under the room's lock.
    ///
    /// `forward`: the event came to us to be sent on (send_join, send_leave, send_knock): it is
    /// queued for the other servers in the room but the one it came from.
    pub async fn accept_remote(
        &self,
        built: Built,
        before: StateBefore,
        forward: Option<&ServerName>,
    ) -> Result<Accepted> {
        let room_id = built.pdu.room_id.clone();
        let (_guard, mut room) = self.lock(&room_id).await?;
        if let Some(status) = self.event_status(&built.pdu.event_id)?
            && status != EventStatus::Outlier
        {
            return Ok(Accepted::Known);
        }
        let mut batch = Batch::new();
        if built.pdu.prev_events.is_empty() {
            // Only a create event has none, and a room has its own already.
            let error = Error::forbidden("An event without prev events cannot join an existing room");
            return self.reject(batch, room, built, error).await;
        }
        if let Err(e) = self.authorize_by_own_auth_events(&room, &built.pdu) {
            return self.reject(batch, room, built, e).await;
        }
        let before = self.state_before(&mut batch, &room, &built.pdu, before).await?;
        if let Err(e) = self.authorize_against(&room, &built.pdu, &before.state) {
            return self.reject(batch, room, built, e).await;
        }
        let placement = match self.authorize_against(&room, &built.pdu, &room.state) {
            Ok(()) => Placement::Timeline,
            Err(e) => {
                tracing::info!(event = %built.pdu.event_id, room = %room_id, error = %e, "soft-failed a remote event");
                Placement::SoftFailed
            }
        };
        let redacted = match placement {
            Placement::Timeline => self.redaction_target(&room, &built.pdu)?,
            _ => None,
        };
        let rules = room.rules.clone();
        let state_before = (before.id, before.state.clone());
        let staged = self.stage_at(&mut batch, &mut room, built, None, before, placement).await?;
        if let Some((short_target, target)) = &redacted {
            self.prune_redacted(&mut batch, &rules, *short_target, target, &staged.pdu)?;
        }
        let queued = match forward {
            Some(origin) if placement == Placement::Timeline => self.queue_outbound(
                &mut batch,
                &room,
                (state_before.0, &state_before.1),
                &staged.pdu,
                staged.short_event,
                Some(origin),
            )?,
            _ => Default::default(),
        };
        let appended = self.commit(batch, vec![staged]).await?.pop().expect("one event committed");
        self.sender.wake(&queued);
        if let Some((short_target, target)) = redacted {
            self.forget_cached(short_target, &target);
        }
        Ok(match placement {
            Placement::Timeline => Accepted::Timeline(appended),
            _ => Accepted::SoftFailed,
        })
    }

    /// An event older than the room's timeline, fetched with `/backfill` (signatures checked,
    /// auth events stored): checked against its auth events and the state before it, and stored
    /// with its states but outside the timeline; `index_backfilled` places it in the room's
    /// history. Returns its short ID and depth, `None` when known already or rejected.
    pub async fn accept_backfilled(&self, built: Built, before: StateBefore) -> Result<Option<(u64, u64)>> {
        let room_id = built.pdu.room_id.clone();
        let (_guard, mut room) = self.lock(&room_id).await?;
        if let Some(status) = self.event_status(&built.pdu.event_id)?
            && status != EventStatus::Outlier
        {
            return Ok(None);
        }
        let mut batch = Batch::new();
        if let Err(e) = self.authorize_by_own_auth_events(&room, &built.pdu) {
            self.reject(batch, room, built, e).await?;
            return Ok(None);
        }
        let before = self.state_before(&mut batch, &room, &built.pdu, before).await?;
        if let Err(e) = self.authorize_against(&room, &built.pdu, &before.state) {
            self.reject(batch, room, built, e).await?;
            return Ok(None);
        }
        let depth = built.pdu.depth;
        let staged = self.stage_at(&mut batch, &mut room, built, None, before, Placement::Backfilled).await?;
        let short = staged.short_event;
        self.commit(batch, vec![staged]).await?;
        Ok(Some((short, depth)))
    }

    /// Places backfilled events in the room's history, newest first (by depth), after what was
    /// backfilled before; `backfill_from` becomes the events whose prev events are still not here.
    pub async fn index_backfilled(&self, room_id: &RoomId, mut events: Vec<(u64, u64)>) -> Result<()> {
        let (_guard, room) = self.lock(room_id).await?;
        let mut record = room.record;
        events.sort_by_key(|(short, depth)| (std::cmp::Reverse(*depth), std::cmp::Reverse(*short)));
        let mut batch = Batch::new();
        let mut number = self.storage.backfill_last(record.short_id)?;
        let mut frontier = std::mem::take(&mut record.backfill_from);
        for (short, _) in &events {
            number += 1;
            batch.put_backfill(record.short_id, number, *short);
            if let Some(pdu) = self.event(*short)? {
                frontier.push(pdu.event_id.clone());
            }
        }
        let mut still = Vec::new();
        for id in frontier {
            let Some((_, pdu)) = self.event_by_id(&id)? else { continue };
            if !self.prev_events_without_state(&pdu)?.is_empty() && !still.contains(&id) {
                still.push(id);
            }
        }
        record.backfill_from = still;
        batch.put_room(room_id, &record);
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// The state before a remote event, from its prev events or from states fetched for it.
    async fn state_before(
        &self,
        batch: &mut Batch,
        room: &RoomHandle,
        pdu: &Pdu,
        before: StateBefore,
    ) -> Result<StateAt> {
        Ok(match before {
            StateBefore::PrevEvents => self.state_before_prev_events(batch, room, pdu)?,
            StateBefore::Given(lists) => {
                let mut maps = Vec::with_capacity(lists.len());
                for ids in &lists {
                    maps.push(self.state_of_events(room, ids).await?);
                }
                let resolved = match maps.first() {
                    Some(first) if maps.iter().all(|m| m == first) => first.clone(),
                    Some(_) => self.resolve_states(room, &maps.iter().collect::<Vec<_>>())?,
                    None => return Err(Error::bad_json("An event without prev events cannot join a room's graph")),
                };
                let (id, layers, state) = self.state.derive(batch, EMPTY, &resolved, None, &[])?;
                self.state.remember(id, state.clone());
                StateAt { id, state, layers: Some(layers) }
            }
        })
    }

    async fn reject(&self, mut batch: Batch, mut room: RoomHandle, built: Built, error: Error) -> Result<Accepted> {
        tracing::info!(event = %built.pdu.event_id, room = %room.room_id, error = %error, "rejected a remote event");
        if self.storage.short_event_id(&built.pdu.event_id)?.is_none() {
            self.stage_outside_timeline(&mut batch, &mut room, built, EventStatus::Rejected);
            self.storage.commit(batch).await?;
        }
        Ok(Accepted::Rejected(match error {
            Error::Matrix { message, .. } => message.to_string(),
            other => other.to_string(),
        }))
    }

    /// The event a redaction redacts, when it is here, in the room, and the redaction may apply
    /// (its sender may redact others' events, or is of the target's server).
    fn redaction_target(&self, room: &RoomHandle, pdu: &Pdu) -> Result<Option<(u64, Arc<Pdu>)>> {
        if pdu.kind != TimelineEventType::RoomRedaction {
            return Ok(None);
        }
        let Some(target) = &pdu.redacts else { return Ok(None) };
        let Some((short, target)) = self.event_by_id(target)? else { return Ok(None) };
        if target.room_id != room.room_id {
            return Ok(None);
        }
        let same_server = target.sender.server_name() == pdu.sender.server_name();
        let power = self.power_levels(&room.state, &room.record.version)?;
        Ok((same_server || power.user_can_redact_event_of_other(&pdu.sender)).then_some((short, target)))
    }

    /// The state before an event from the states after its prev events, resolved when they
    /// differ.
    fn state_before_prev_events(&self, batch: &mut Batch, room: &RoomHandle, pdu: &Pdu) -> Result<StateAt> {
        let mut states: Vec<StateAt> = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            let after = self
                .storage
                .short_event_id(prev)?
                .map(|short| self.storage.event_state(short))
                .transpose()?
                .flatten()
                .map(|(_, after)| after)
                .ok_or_else(|| Error::internal(format!("prev event {prev} has no state here")))?;
            states.push(StateAt { id: after, state: self.state.full(after)?, layers: self.state.layers(after)? });
        }
        // The create event: before it, nothing.
        let Some(first) = states.first().cloned() else {
            return Ok(StateAt { id: EMPTY, state: Arc::default(), layers: None });
        };
        if states.iter().all(|s| s.id == first.id || s.state == first.state) {
            return Ok(first);
        }
        let maps: Vec<&StateMap> = states.iter().map(|s| &*s.state).collect();
        let resolved = self.resolve_states(room, &maps)?;
        if let Some(same) = states.iter().find(|s| *s.state == resolved) {
            return Ok(same.clone());
        }
        let (id, layers, state) = self.state.derive(batch, EMPTY, &resolved, None, &[])?;
        self.state.remember(id, state.clone());
        Ok(StateAt { id, state, layers: Some(layers) })
    }

    /// A state from its events (stored or staged; rejected ones left out); later events replace
    /// earlier ones of the same type and state key.
    async fn state_of_events(&self, room: &RoomHandle, ids: &[OwnedEventId]) -> Result<StateMap> {
        let mut state = StateMap::with_capacity(ids.len());
        for id in ids {
            let (short, pdu) = match room.pending.get(id) {
                Some(pending) => (pending.short, pending.pdu.clone()),
                None => self.event_by_id(id)?.ok_or_else(|| Error::internal(format!("state event {id} is missing")))?,
            };
            let Some(state_key) = &pdu.state_key else { continue };
            if pdu.rejected {
                continue;
            }
            let short_key = self.short_state_key_or_create(&pdu.kind.to_string(), state_key).await?;
            state.insert(short_key, short);
        }
        Ok(state)
    }

    /// Stores a room joined through another server, in one write: send_join's auth chain and
    /// state as outliers (each checked against its auth events), the room (created, or brought
    /// up to date if we had left it), and our join event on that state. The join must pass the
    /// auth rules against the state it is placed on.
    pub async fn store_remote_join(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        mut events: Vec<Built>,
        state_ids: &[OwnedEventId],
        join: Built,
    ) -> Result<Appended> {
        let _guard = self.locks.lock(&room_id.to_owned()).await;
        let mut batch = Batch::new();
        let (record, current) = match self.room(room_id)? {
            Some(record) => {
                let state = self.state.full(record.state)?;
                let layers = self.state.layers(record.state)?;
                (record, (state, layers))
            }
            None => {
                let record = RoomRecord {
                    short_id: self.storage.allocate(&mut batch, Sequence::ShortRoomId),
                    version: version.clone(),
                    created_ts: crate::service::now_ms(),
                    state: EMPTY,
                    extremities: Vec::new(),
                    depth: 0,
                    backfill_from: Vec::new(),
                };
                (record, (Arc::default(), None))
            }
        };
        let mut room = RoomHandle::new(room_id.to_owned(), record, pdu::rules_of(version)?, current.0, current.1);
        events.sort_by_key(|built| built.pdu.depth);
        let rejected = self.stage_outliers(&mut batch, &mut room, events)?;
        if let Some((id, reason)) = rejected.iter().find(|(id, _)| state_ids.contains(id)) {
            tracing::info!(room = %room_id, event = %id, %reason, "a state event of the room we join is rejected");
        }
        let state = self.state_of_events(&room, state_ids).await?;
        let (id, layers, state) = self.state.derive(&mut batch, EMPTY, &state, None, &[])?;
        let before = StateAt { id, state, layers: Some(layers) };
        if self.state_event_staged(&room, &before.state, "m.room.create", "")?.is_none() {
            return Err(Error::forbidden("The room's state has no create event"));
        }
        self.authorize_by_own_auth_events(&room, &join.pdu)?;
        self.authorize_against(&room, &join.pdu, &before.state)?;
        // What we knew of the room's graph is superseded: the join is its new head, and older
        // history is to be fetched from before it.
        room.record.extremities.clear();
        if !join.pdu.prev_events.is_empty() {
            room.record.backfill_from = vec![join.pdu.event_id.clone()];
        }
        batch.delete_remote_invite(&join.pdu.sender, room_id);
        let staged = self.stage_at(&mut batch, &mut room, join, None, before, Placement::Timeline).await?;
        let outliers: Vec<(u64, Arc<Pdu>)> =
            room.pending.values().filter(|p| p.short != staged.short_event).map(|p| (p.short, p.pdu.clone())).collect();
        let appended = self.commit(batch, vec![staged]).await?.pop().expect("one event committed");
        for (short, pdu) in outliers {
            self.cache_outlier(short, pdu);
        }
        tracing::info!(room = %room_id, %version, event = %appended.pdu.event_id, "joined a room through another server");
        Ok(appended)
    }

    /// Stores a local user's leave of a room through another server (send_leave, for a room
    /// where no local user is joined any more, or an invite declined): placed on the room's
    /// current state when we have the room, a membership change only otherwise.
    pub async fn store_remote_leave(&self, room_id: &RoomId, user: &UserId, leave: Built) -> Result<u64> {
        let _guard = self.locks.lock(&room_id.to_owned()).await;
        let mut batch = Batch::new();
        match self.room(room_id)? {
            Some(record) => {
                let rules = pdu::rules_of(&record.version)?;
                let state = self.state.full(record.state)?;
                let layers = self.state.layers(record.state)?;
                let mut room = RoomHandle::new(room_id.to_owned(), record, rules, state, layers);
                let before = room.current();
                room.record.extremities.clear();
                let staged = self.stage_at(&mut batch, &mut room, leave, None, before, Placement::Timeline).await?;
                batch.delete_remote_invite(user, room_id);
                let appended = self.commit(batch, vec![staged]).await?.pop().expect("one event committed");
                Ok(appended.position)
            }
            None => {
                let version = self
                    .storage
                    .remote_invite(user, room_id)?
                    .map(|invite| invite.room_version)
                    .unwrap_or(RoomVersionId::V10);
                let mut room = RoomHandle::for_outliers(room_id, &version)?;
                let event_id = leave.pdu.event_id.clone();
                if self.storage.short_event_id(&event_id)?.is_none() {
                    self.stage_outside_timeline(&mut batch, &mut room, leave, EventStatus::Outlier);
                }
                let previous = self.storage.membership(user, room_id)?;
                let record = MembershipRecord {
                    membership: "leave".into(),
                    event_id,
                    position: 0,
                    last_join: previous.and_then(|p| p.last_join),
                    forgotten: false,
                };
                batch.put_remote_membership(user, room_id, record, None);
                let positions = self.storage.commit(batch).await?;
                self.notifier.notify(user);
                Ok(positions.first().copied().unwrap_or_default())
            }
        }
    }

    /// Stores an invite of a local user that another server sent (signed by both servers), with
    /// the stripped state to show: the invite event as an outlier, the user's membership at a
    /// new stream position. Their syncs wake.
    pub async fn store_remote_invite(
        &self,
        user: &UserId,
        version: &RoomVersionId,
        invite: Built,
        invite_state: Vec<Value>,
    ) -> Result<()> {
        self.store_remote_membership(user, version, invite, invite_state, "invite").await
    }

    /// Stores a local user's invite or knock in a room we are not in, with the stripped state to
    /// show until it is settled.
    pub async fn store_remote_membership(
        &self,
        user: &UserId,
        version: &RoomVersionId,
        invite: Built,
        invite_state: Vec<Value>,
        membership: &str,
    ) -> Result<()> {
        let room_id: OwnedRoomId = invite.pdu.room_id.clone();
        let _guard = self.locks.lock(&room_id).await;
        let mut batch = Batch::new();
        let mut room = RoomHandle::for_outliers(&room_id, version)?;
        let event_id = invite.pdu.event_id.clone();
        if self.storage.short_event_id(&event_id)?.is_none() {
            self.stage_outside_timeline(&mut batch, &mut room, invite, EventStatus::Outlier);
        }
        let previous = self.storage.membership(user, &room_id)?;
        let record = MembershipRecord {
            membership: membership.into(),
            event_id: event_id.clone(),
            position: 0,
            last_join: previous.and_then(|p| p.last_join),
            forgotten: false,
        };
        let invite = RemoteInvite { event_id, room_version: version.clone(), invite_state };
        batch.put_remote_membership(user, &room_id, record, Some(invite));
        self.storage.commit(batch).await?;
        for pending in room.pending.into_values() {
            self.cache_outlier(pending.short, pending.pdu);
        }
        self.notifier.notify(user);
        Ok(())
    }
}
