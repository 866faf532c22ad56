//! Reading rooms on behalf of a user: events, state and members, each only as far as the user
//! may see. Events leave in the client format.

use std::sync::Arc;

use ruma::{DeviceId, EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{CachedEvent, Rooms, StateMap, age_of, client_event::ClientEvent, visibility::SeeMemo};
use crate::{
    error::{Error, Result},
    storage::StoredEvent,
};

/// Who is reading: the user, and their device (which sees its own transaction IDs).
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    pub user: &'a UserId,
    pub device: Option<&'a DeviceId>,
}

impl Rooms {
    /// An event in the client format, with its bundled aggregations (edits, threads, references).
    pub fn client_event(&self, stored: &StoredEvent, viewer: Option<Viewer<'_>>) -> Result<Value> {
        self.client_event_cached(&Arc::new(CachedEvent::from_stored(stored)?), viewer)
    }

    /// `client_event` for a cached event.
    pub fn client_event_cached(&self, event: &Arc<CachedEvent>, viewer: Option<Viewer<'_>>) -> Result<Value> {
        self.render(event, viewer, true)?.into_value()
    }

    /// An event in the client format without aggregations (as aggregations nest events).
    pub fn client_event_plain(&self, event: &Arc<CachedEvent>, viewer: Option<Viewer<'_>>) -> Result<Value> {
        self.render(event, viewer, false)?.into_value()
    }

    /// The client format: the fields a client sees (hashes, signatures and the DAG are left
    /// out), the server's `unsigned` extras, and the bundled aggregations if asked for.
    fn render(
        &self,
        event: &Arc<CachedEvent>,
        viewer: Option<Viewer<'_>>,
        with_aggregations: bool,
    ) -> Result<ClientEvent> {
        let pdu = &event.pdu;
        let mut rendered = ClientEvent::new(event.clone(), age_of(pdu));
        if let Some(replaced) =
            event.unsigned.get("replaces_state").and_then(Value::as_str).and_then(|id| EventId::parse(id).ok())
        {
            rendered.prev_content = self.event_by_id(&replaced)?.map(|(_, previous)| previous);
        }
        rendered.own_transaction = matches!(
            (viewer, &event.transaction),
            (Some(viewer), Some((device, _))) if viewer.user == pdu.sender && viewer.device == Some(device)
        );
        if with_aggregations {
            let redacted = event.unsigned.contains_key("redacted_because");
            rendered.relations = self.aggregations(pdu, redacted, viewer)?;
        }
        Ok(rendered)
    }

    /// A timeline event in the client format, with the viewer's membership at that event in
    /// `unsigned.membership` (MSC4115), as clients use to tell what they could see.
    pub fn timeline_event(&self, stored: &StoredEvent, viewer: Viewer<'_>) -> Result<ClientEvent> {
        if let Some(short) = self.storage.short_event_id(&stored.event_id)?
            && let Some(event) = self.cached_event(short)?
        {
            let (_, after) = self.event_snapshots(short)?;
            return self.timeline_event_in(&mut SeeMemo::default(), &event, after, viewer);
        }
        self.render(&Arc::new(CachedEvent::from_stored(stored)?), Some(viewer), true)
    }

    /// `timeline_event` for a cached event whose state snapshot after it is known, through a
    /// memo that belongs to the viewer.
    pub fn timeline_event_in(
        &self,
        memo: &mut SeeMemo,
        event: &Arc<CachedEvent>,
        after: u64,
        viewer: Viewer<'_>,
    ) -> Result<ClientEvent> {
        let mut rendered = self.render(event, Some(viewer), true)?;
        let (_, membership) = self.snapshot_facts(memo, viewer.user, after)?;
        rendered.membership = Some(membership.unwrap_or_else(|| "leave".to_owned()));
        Ok(rendered)
    }

    /// An event the user may see, in the client format; `M_NOT_FOUND` otherwise (not revealing
    /// whether it exists).
    pub fn visible_event(&self, viewer: Viewer<'_>, room_id: &RoomId, event_id: &EventId) -> Result<Value> {
        let not_found = || Error::not_found("Event not found");
        let short = self.storage.short_event_id(event_id)?.ok_or_else(not_found)?;
        let event = self.cached_event(short)?.ok_or_else(not_found)?;
        if event.pdu.room_id != room_id {
            return Err(not_found());
        }
        if !self.can_see(viewer.user, room_id, short, &event.pdu, event.position)? {
            return Err(not_found());
        }
        self.client_event_cached(&event, Some(viewer))
    }

    /// The state a user may read: the current state while they are in the room (or when it is
    /// world-readable), the state when they left once they have left; refused otherwise.
    pub fn readable_state(&self, user: &UserId, room_id: &RoomId) -> Result<Arc<StateMap>> {
        let room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let current = self.current_state(&room)?;
        let membership = self.membership_in(&current, user)?;
        if membership.as_deref() == Some("join") || self.history_visibility(&current)? == "world_readable" {
            return Ok(current);
        }
        if matches!(membership.as_deref(), Some("leave" | "ban"))
            && let Some(member) = self.state_event(&current, "m.room.member", user.as_str())?
            && let Some(record) = self.storage.membership(user, room_id)?
            && record.last_join.is_some()
            && let Some(short) = self.storage.short_event_id(&member.event_id)?
        {
            // The state as it was when they left, their departure included.
            return Ok(self.event_states(short)?.1);
        }
        Err(Error::forbidden("You are not in this room"))
    }

    /// Every state event in the client format.
    pub fn state_in_client_format(&self, state: &StateMap) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(state.len());
        for short in state.values() {
            if let Some(event) = self.cached_event(*short)? {
                events.push(self.client_event_cached(&event, None)?);
            }
        }
        Ok(events)
    }

    /// One state event in the client format, or `M_NOT_FOUND`.
    pub fn state_event_in_client_format(&self, state: &StateMap, kind: &str, state_key: &str) -> Result<Value> {
        let not_found = || Error::not_found("No such state event");
        let short_key = self.storage.short_state_key(kind, state_key)?.ok_or_else(not_found)?;
        let short = state.get(&short_key).ok_or_else(not_found)?;
        let event = self.cached_event(*short)?.ok_or_else(not_found)?;
        self.client_event_cached(&event, None)
    }

    /// The state after the room's latest event at or before a stream position.
    pub fn state_at_position(&self, room_id: &RoomId, position: u64) -> Result<Arc<StateMap>> {
        let room = self.room_exists(room_id)?;
        match self.snapshot_at_position(room.short_id, position)? {
            Some(snapshot) => self.state.full(snapshot),
            None => Ok(Arc::default()),
        }
    }

    /// Whether the room's state is the same at every position after `since` (no timeline event
    /// since changed it); `false` when that is not known.
    pub fn state_unchanged_since(&self, short_room: u64, since: u64) -> bool {
        self.caches.state_unchanged_since(short_room, since)
    }

    /// Whether the room has timeline events with positions in `(since, until]`.
    pub fn has_events_between(&self, short_room: u64, since: u64, until: u64) -> Result<bool> {
        match self.caches.has_events_between(short_room, since, until) {
            Some(known) => Ok(known),
            None => Ok(self.storage.timeline_at(short_room, until)?.is_some_and(|(position, _)| position > since)),
        }
    }

    /// The snapshot after the room's latest event at or before a stream position (`None` before
    /// its first event).
    pub fn snapshot_at_position(&self, short_room: u64, position: u64) -> Result<Option<u64>> {
        if let Some(snapshot) = self.caches.snapshot_at(short_room, position) {
            return Ok(snapshot);
        }
        // Read before the timeline: only events committed by then are surely in what it reads.
        let reached = self.storage.stream_position();
        let snapshot = match self.storage.timeline_at(short_room, position)? {
            Some((_, short)) => Some(self.event_snapshots(short)?.1),
            None => None,
        };
        if position <= reached {
            self.caches.fill_snapshot_at(short_room, position, snapshot);
        }
        Ok(snapshot)
    }

    /// Members with their display name and avatar, for `/joined_members`.
    pub fn joined_members(&self, user: &UserId, room_id: &RoomId) -> Result<Map<String, Value>> {
        let room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let state = self.current_state(&room)?;
        if self.membership_in(&state, user)?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        let mut joined = Map::new();
        for (member, membership) in self.storage.members(room.short_id)? {
            if membership != "join" {
                continue;
            }
            let content = self.state_content(&state, "m.room.member", member.as_str())?.unwrap_or_default();
            // Both keys, `null` when unset, as Synapse answers and Complement (sytest) expects
            // (the spec's schema would leave them out); never anything but a string or `null`,
            // whatever the member event carries.
            let field = |name: &str| content.get(name).filter(|v| v.is_string()).cloned().unwrap_or(Value::Null);
            joined.insert(
                member.to_string(),
                json!({ "display_name": field("displayname"), "avatar_url": field("avatar_url") }),
            );
        }
        Ok(joined)
    }

    /// Rooms in which the user is joined, invited or has knocked, and not forgotten.
    pub fn rooms_of(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, String)>> {
        Ok(self
            .storage
            .memberships(user)?
            .into_iter()
            .filter(|(_, record)| !record.forgotten)
            .map(|(room, record)| (room, record.membership))
            .collect())
    }
}
