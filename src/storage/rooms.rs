//! Rooms and their events: short IDs, events, state snapshots, timelines, memberships, aliases,
//! the public directory and transaction IDs.

use ruma::{
    DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, value::RawValue};

use super::{Batch, Column, Sequence, Storage, StorageError, key, sequence::decode_u64};

/// A room and where its graph ends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomRecord {
    pub short_id: u64,
    pub version: RoomVersionId,
    pub created_ts: u64,
    /// Snapshot of the current state (the state after the forward extremities).
    pub state: u64,
    /// Events without children yet: the `prev_events` of the next event.
    pub extremities: Vec<OwnedEventId>,
    /// The highest depth in the room.
    pub depth: u64,
    /// Events here whose prev events are not (joins through another server, backfilled
    /// events): where to ask other servers for older history (`/backfill`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfill_from: Vec<OwnedEventId>,
}

/// An event as stored: the signed PDU and what the server knows about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// Stream position: the event's place in the timeline and in sync.
    pub position: u64,
    /// The signed PDU as sent over federation; pruned in place once redacted.
    pub pdu: Box<RawValue>,
    /// Server-side `unsigned` extras: `prev_content`, `replaces_state`, `redacted_because`, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub unsigned: Map<String, Value>,
    /// The device and transaction ID it was sent with, shown to that device only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<(OwnedDeviceId, String)>,
    /// Where the event stands in its room's graph (absent: in the timeline).
    #[serde(default, skip_serializing_if = "EventStatus::is_timeline")]
    pub status: EventStatus,
}

/// How an event takes part in its room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// In the timeline, with its state before and after: every local event, and remote events
    /// that passed every check.
    #[default]
    Timeline,
    /// Known without its place in the graph (auth chains, state fetched from other servers):
    /// no state, no timeline entry, never shown in a timeline.
    Outlier,
    /// Authorized by its own auth events and by the state before it but not by the room's
    /// current state: stored with its state, never shown to clients nor built upon.
    SoftFailed,
    /// Failed the auth checks: kept so it is not fetched again, and so that events citing it
    /// are rejected too.
    Rejected,
}

impl EventStatus {
    pub fn is_timeline(&self) -> bool {
        *self == EventStatus::Timeline
    }
}

/// An invite of a local user to a room this server is not in, as another server sent it: what
/// the user's sync shows until they join or decline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteInvite {
    /// The invite event (signed by both servers).
    pub event_id: OwnedEventId,
    pub room_version: RoomVersionId,
    /// The stripped state events the inviting server sent (`invite_room_state`), the invite's
    /// own stripped form included.
    pub invite_state: Vec<Value>,
}

/// A user's membership in a room, as the room's current state has it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    pub event_id: OwnedEventId,
    pub position: u64,
    /// Position of the user's latest join, which history visibility `shared` needs.
    #[serde(default)]
    pub last_join: Option<u64>,
    /// The user forgot the room (after leaving it).
    #[serde(default)]
    pub forgotten: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

/// A state snapshot: the entries added and removed relative to a parent, so that a new event's
/// state costs the size of its change. Entries map short state keys to short event IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub parent: Option<u64>,
    /// How many snapshots lead to this one from a full base (0 for a base).
    pub layers: u32,
    pub added: Vec<(u64, u64)>,
    pub removed: Vec<u64>,
}

impl Snapshot {
    /// Binary layout: `parent (u64, 0 for none) ++ layers (u32) ++ count added (u32) ++ count
    /// removed (u32) ++ added (key u64, event u64)* ++ removed (key u64)*`, all big-endian.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.added.len() * 16 + self.removed.len() * 8);
        out.extend_from_slice(&self.parent.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.layers.to_be_bytes());
        out.extend_from_slice(&(self.added.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.removed.len() as u32).to_be_bytes());
        for (state_key, event) in &self.added {
            out.extend_from_slice(&state_key.to_be_bytes());
            out.extend_from_slice(&event.to_be_bytes());
        }
        for state_key in &self.removed {
            out.extend_from_slice(&state_key.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = || StorageError::Corrupt("state snapshot: truncated".into());
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], StorageError> {
            let (head, tail) = rest.split_at_checked(n).ok_or_else(corrupt)?;
            rest = tail;
            Ok(head)
        };
        let u64_of = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let u32_of = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
        let parent = u64_of(take(8)?);
        let layers = u32_of(take(4)?);
        let added_len = u32_of(take(4)?) as usize;
        let removed_len = u32_of(take(4)?) as usize;
        let mut added = Vec::with_capacity(added_len);
        for _ in 0..added_len {
            added.push((u64_of(take(8)?), u64_of(take(8)?)));
        }
        let mut removed = Vec::with_capacity(removed_len);
        for _ in 0..removed_len {
            removed.push(u64_of(take(8)?));
        }
        if !rest.is_empty() {
            return Err(StorageError::Corrupt("state snapshot: trailing bytes".into()));
        }
        Ok(Self { parent: (parent != 0).then_some(parent), layers, added, removed })
    }
}

impl Storage {
    // ----- short IDs -----

    pub fn short_event_id(&self, event_id: &EventId) -> Result<Option<u64>, StorageError> {
        self.engine.get(Column::EventIds, &key::event_id(event_id))?.map(|b| decode_u64(&b)).transpose()
    }

    pub fn short_state_key(&self, kind: &str, state_key: &str) -> Result<Option<u64>, StorageError> {
        self.engine.get(Column::StateKeys, &key::state_key(kind, state_key))?.map(|b| decode_u64(&b)).transpose()
    }

    /// The `(type, state_key)` pair of a short state key.
    pub fn state_key_pair(&self, short: u64) -> Result<Option<(String, String)>, StorageError> {
        self.get_json(Column::ShortStateKeys, &key::short(short))
    }

    // ----- events -----

    pub fn event(&self, short: u64) -> Result<Option<StoredEvent>, StorageError> {
        self.get_json(Column::Events, &key::short(short))
    }

    pub fn event_by_id(&self, event_id: &EventId) -> Result<Option<StoredEvent>, StorageError> {
        match self.short_event_id(event_id)? {
            Some(short) => self.event(short),
            None => Ok(None),
        }
    }

    /// The state snapshots before and after an event.
    pub fn event_state(&self, short: u64) -> Result<Option<(u64, u64)>, StorageError> {
        let Some(bytes) = self.engine.get(Column::EventState, &key::short(short))? else { return Ok(None) };
        let (before, after) =
            bytes.split_at_checked(8).ok_or_else(|| StorageError::Corrupt("event state: truncated".into()))?;
        Ok(Some((decode_u64(before)?, decode_u64(after)?)))
    }

    pub fn snapshot(&self, id: u64) -> Result<Option<Snapshot>, StorageError> {
        self.engine.get(Column::StateSnapshots, &key::short(id))?.map(|b| Snapshot::decode(&b)).transpose()
    }

    /// The result of a federation transaction already processed, by its origin and ID.
    pub fn federation_transaction(&self, origin: &str, txn_id: &str) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::FederationTransactions, &key::federation_transaction(origin, txn_id))
    }

    /// The invite another server sent a local user for a room this server is not in.
    pub fn remote_invite(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<RemoteInvite>, StorageError> {
        self.get_json(Column::RemoteInvites, &key::user_room(user_id, room_id))
    }

    // ----- rooms and timelines -----

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>, StorageError> {
        self.get_json(Column::Rooms, &key::room(room_id))
    }

    /// Short event IDs of a room's timeline with positions in `(after, until]`, oldest first.
    pub fn timeline(&self, short_room: u64, after: u64, until: u64) -> Result<Vec<(u64, u64)>, StorageError> {
        let mut events = Vec::new();
        for entry in self.engine.scan_prefix(Column::Timeline, &key::room_prefix(short_room)) {
            let (k, v) = entry?;
            let position = key::timeline_position_of(&k)?;
            if position <= after {
                continue;
            }
            if position > until {
                break;
            }
            events.push((position, decode_u64(&v)?));
        }
        Ok(events)
    }

    /// Up to `limit` of the room's latest events with positions in `(after, before)`, newest
    /// first, as `(position, short event)`.
    pub fn timeline_rev(
        &self,
        short_room: u64,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        let upper = key::timeline(short_room, before);
        let mut events = Vec::new();
        for entry in self.engine.scan_prefix_rev(Column::Timeline, &key::room_prefix(short_room), Some(&upper)) {
            let (k, v) = entry?;
            let position = key::timeline_position_of(&k)?;
            if position <= after || events.len() >= limit {
                break;
            }
            events.push((position, decode_u64(&v)?));
        }
        Ok(events)
    }

    /// Up to `limit` of the room's events with positions in `(after, until]`, oldest first.
    pub fn timeline_fwd(
        &self,
        short_room: u64,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        let start = key::timeline(short_room, after.saturating_add(1));
        let mut events = Vec::new();
        for entry in self.engine.scan_from(Column::Timeline, &key::room_prefix(short_room), &start) {
            let (k, v) = entry?;
            let position = key::timeline_position_of(&k)?;
            if position > until || events.len() >= limit {
                break;
            }
            events.push((position, decode_u64(&v)?));
        }
        Ok(events)
    }

    /// The room's latest event at or before a stream position: `(position, short event)`.
    pub fn timeline_at(&self, short_room: u64, position: u64) -> Result<Option<(u64, u64)>, StorageError> {
        let before = key::timeline(short_room, position.saturating_add(1));
        match self.engine.scan_prefix_rev(Column::Timeline, &key::room_prefix(short_room), Some(&before)).next() {
            Some(entry) => {
                let (k, v) = entry?;
                Ok(Some((key::timeline_position_of(&k)?, decode_u64(&v)?)))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` backfilled events of a room after number `after` (older and older), as
    /// `(number, short event)`.
    pub fn backfill(&self, short_room: u64, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        let start = key::timeline(short_room, after.saturating_add(1));
        let mut events = Vec::new();
        for entry in self.engine.scan_from(Column::Backfill, &key::room_prefix(short_room), &start) {
            if events.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            events.push((key::timeline_position_of(&k)?, decode_u64(&v)?));
        }
        Ok(events)
    }

    /// The number of a room's oldest backfilled event, 0 without any.
    pub fn backfill_last(&self, short_room: u64) -> Result<u64, StorageError> {
        match self.engine.scan_prefix_rev(Column::Backfill, &key::room_prefix(short_room), None).next() {
            Some(entry) => key::timeline_position_of(&entry?.0),
            None => Ok(0),
        }
    }

    // ----- memberships -----

    pub fn membership(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<MembershipRecord>, StorageError> {
        self.get_json(Column::UserRooms, &key::user_room(user_id, room_id))
    }

    /// Every room a user has a membership in, with it.
    pub fn memberships(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>, StorageError> {
        self.scan_json(Column::UserRooms, &key::user_prefix(user_id))?
            .into_iter()
            .map(|(k, record)| {
                let room = key::room_of_user_room(&k)?;
                let room = RoomId::parse(room).map_err(|e| StorageError::Corrupt(format!("user_rooms: {e}")))?;
                Ok((room, record))
            })
            .collect()
    }

    /// Every member of a room with their membership.
    pub fn members(&self, short_room: u64) -> Result<Vec<(OwnedUserId, String)>, StorageError> {
        self.scan_json(Column::RoomMembers, &key::room_prefix(short_room))?
            .into_iter()
            .map(|(k, membership)| {
                let user = key::member_of(&k)?;
                let user = UserId::parse(user).map_err(|e| StorageError::Corrupt(format!("room_members: {e}")))?;
                Ok((user, membership))
            })
            .collect()
    }

    // ----- aliases and directory -----

    pub fn alias(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>, StorageError> {
        self.get_json(Column::Aliases, &key::alias(alias))
    }

    pub fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>, StorageError> {
        self.engine
            .scan_prefix(Column::RoomAliases, &key::room(room_id))
            .map(|entry| {
                let (k, _) = entry?;
                RoomAliasId::parse(key::alias_of(&k)?).map_err(|e| StorageError::Corrupt(format!("room_aliases: {e}")))
            })
            .collect()
    }

    pub fn is_public(&self, room_id: &RoomId) -> Result<bool, StorageError> {
        self.exists(Column::PublicRooms, &key::room(room_id))
    }

    /// Every room in the public directory.
    pub fn public_rooms(&self) -> Result<Vec<OwnedRoomId>, StorageError> {
        self.engine
            .scan_prefix(Column::PublicRooms, b"")
            .map(|entry| {
                let (k, _) = entry?;
                let mut reader = key::KeyReader::new(&k);
                RoomId::parse(reader.str()?).map_err(|e| StorageError::Corrupt(format!("public_rooms: {e}")))
            })
            .collect()
    }

    // ----- transaction IDs -----

    pub fn transaction(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        endpoint: &str,
        txn_id: &str,
    ) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::TransactionIds, &key::transaction(user_id, device_id, endpoint, txn_id))
    }
}

impl Batch {
    pub fn put_room(&mut self, room_id: &RoomId, record: &RoomRecord) {
        self.put_json(Column::Rooms, key::room(room_id), record);
    }

    /// Maps a new state key pair to its short ID, both ways.
    pub fn put_state_key(&mut self, short: u64, kind: &str, state_key: &str) {
        self.put(Column::StateKeys, key::state_key(kind, state_key), short.to_be_bytes().to_vec());
        self.put_json(Column::ShortStateKeys, key::short(short), &(kind, state_key));
        self.uses(Sequence::ShortStateKey, short);
    }

    pub fn put_snapshot(&mut self, id: u64, snapshot: &Snapshot) {
        self.put(Column::StateSnapshots, key::short(id), snapshot.encode());
        self.uses(Sequence::StateSnapshot, id);
    }

    /// Stores a new event of a room: its ID mapping, its states and, once the writer gives the
    /// batch its stream position, the event record and its timeline entry. `then` adds what else
    /// needs the position (memberships).
    pub fn put_event(
        &mut self,
        short: u64,
        short_room: u64,
        mut event: StoredEvent,
        states: (u64, u64),
        then: impl FnOnce(u64, &mut Batch) + Send + 'static,
    ) {
        self.put(Column::EventIds, key::event_id(&event.event_id), short.to_be_bytes().to_vec());
        let mut state = states.0.to_be_bytes().to_vec();
        state.extend_from_slice(&states.1.to_be_bytes());
        self.put(Column::EventState, key::short(short), state);
        self.uses(Sequence::ShortEventId, short);
        self.at_position(move |position, batch| {
            event.position = position;
            batch.put_json(Column::Events, key::short(short), &event);
            batch.put(Column::Timeline, key::timeline(short_room, position), short.to_be_bytes().to_vec());
            then(position, batch);
        });
    }

    /// Stores an event without a place in the timeline: an outlier or a rejected event (no
    /// state), or a soft-failed one (with its states).
    pub fn put_event_outside_timeline(&mut self, short: u64, event: &StoredEvent, states: Option<(u64, u64)>) {
        self.put(Column::EventIds, key::event_id(&event.event_id), short.to_be_bytes().to_vec());
        if let Some((before, after)) = states {
            let mut state = before.to_be_bytes().to_vec();
            state.extend_from_slice(&after.to_be_bytes());
            self.put(Column::EventState, key::short(short), state);
        }
        self.put_json(Column::Events, key::short(short), event);
        self.uses(Sequence::ShortEventId, short);
    }

    /// Remembers the result of a federation transaction, so that a retry gets it again.
    pub fn put_federation_transaction(&mut self, origin: &str, txn_id: &str, result: &Value) {
        self.put_json(Column::FederationTransactions, key::federation_transaction(origin, txn_id), result);
    }

    /// A local user's membership in a room this server is not in (an invite from another
    /// server, or its refusal), at a stream position of its own so that syncs see it; with the
    /// invite to show, or none (the invite goes).
    pub fn put_remote_membership(
        &mut self,
        user_id: &UserId,
        room_id: &RoomId,
        mut record: MembershipRecord,
        invite: Option<RemoteInvite>,
    ) {
        let key = key::user_room(user_id, room_id);
        match &invite {
            Some(invite) => self.put_json(Column::RemoteInvites, key.clone(), invite),
            None => self.delete(Column::RemoteInvites, key.clone()),
        }
        self.at_position(move |position, batch| {
            record.position = position;
            batch.put_json(Column::UserRooms, key, &record);
        });
    }

    /// Places a backfilled event in its room's history, at `number` (see `Backfill`).
    pub fn put_backfill(&mut self, short_room: u64, number: u64, short_event: u64) {
        self.put(Column::Backfill, key::timeline(short_room, number), short_event.to_be_bytes().to_vec());
    }

    /// Drops the invite another server sent a local user (they joined or declined).
    pub fn delete_remote_invite(&mut self, user_id: &UserId, room_id: &RoomId) {
        self.delete(Column::RemoteInvites, key::user_room(user_id, room_id));
    }

    /// Rewrites an event already stored (to redact it), keeping its position.
    pub fn replace_event(&mut self, short: u64, event: &StoredEvent) {
        self.put_json(Column::Events, key::short(short), event);
    }

    pub fn put_membership(&mut self, user_id: &UserId, room_id: &RoomId, short_room: u64, record: &MembershipRecord) {
        self.put_json(Column::UserRooms, key::user_room(user_id, room_id), record);
        self.put_json(Column::RoomMembers, key::room_member(short_room, user_id), &record.membership);
    }

    /// Marks a membership forgotten; the room disappears from the user's lists.
    pub fn forget_room(&mut self, user_id: &UserId, room_id: &RoomId, record: &MembershipRecord) {
        let record = MembershipRecord { forgotten: true, ..record.clone() };
        self.put_json(Column::UserRooms, key::user_room(user_id, room_id), &record);
    }

    pub fn put_alias(&mut self, alias: &RoomAliasId, record: &AliasRecord) {
        self.put_json(Column::Aliases, key::alias(alias), record);
        self.put(Column::RoomAliases, key::room_alias(&record.room_id, alias), Vec::new());
    }

    pub fn delete_alias(&mut self, alias: &RoomAliasId, room_id: &RoomId) {
        self.delete(Column::Aliases, key::alias(alias));
        self.delete(Column::RoomAliases, key::room_alias(room_id, alias));
    }

    pub fn set_public(&mut self, room_id: &RoomId, public: bool) {
        if public {
            self.put(Column::PublicRooms, key::room(room_id), Vec::new());
        } else {
            self.delete(Column::PublicRooms, key::room(room_id));
        }
    }

    pub fn put_transaction(
        &mut self,
        user_id: &UserId,
        device_id: &DeviceId,
        endpoint: &str,
        txn_id: &str,
        result: &Value,
    ) {
        self.put_json(Column::TransactionIds, key::transaction(user_id, device_id, endpoint, txn_id), result);
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn snapshots_round_trip() {
        for snapshot in [
            Snapshot::default(),
            Snapshot { parent: Some(7), layers: 3, added: vec![(1, 2), (u64::MAX, 9)], removed: vec![4, 5] },
        ] {
            assert_eq!(Snapshot::decode(&snapshot.encode()).unwrap(), snapshot);
        }
        assert!(Snapshot::decode(&[0; 10]).is_err());
    }
}
