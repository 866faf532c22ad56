//! What other servers may read of a room: events (`/event`), states and auth chains (`/state`,
//! `/state_ids`, `/event_auth`), history (`/backfill`, `/get_missing_events`), and membership
//! templates (`make_join`, `make_leave`, `make_knock`). Each event is shown only if the asking
//! server may see it (history visibility for servers).

use std::{
    collections::{BTreeSet, BinaryHeap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId, events::TimelineEventType,
};
use serde_json::{Map, Value, json, value::RawValue};

use super::{EventDraft, Pdu, Rooms, StateMap, canonical_content, pdu, resolve::auth_chain};
use crate::{
    error::{Error, Result},
    storage::EventStatus,
};

/// Most events a `/backfill` or `/get_missing_events` answer carries.
pub const MAX_HISTORY_EVENTS: usize = 100;

/// A room's state at an event, for `/state` and `/state_ids`: the state events and the auth
/// chain they need.
pub struct StateAndAuth {
    pub state: Vec<Arc<Pdu>>,
    pub auth_chain: Vec<OwnedEventId>,
}

impl Rooms {
    /// The signed PDU of an event as stored, in the federation format.
    pub fn pdu_json(&self, event_id: &EventId) -> Result<Option<Box<RawValue>>> {
        Ok(self.storage.event_by_id(event_id)?.map(|stored| stored.pdu))
    }

    /// Whether `server` may see an event: by the room's history visibility at the event, as
    /// Synapse judges servers: `world_readable` and `shared` let any server in the room see
    /// everything; `invited` and `joined` need one of its users invited or joined then. Events
    /// without a state here (outliers) are judged on the current state.
    pub fn server_can_see(&self, server: &ServerName, event_id: &EventId) -> Result<bool> {
        let Some(short) = self.storage.short_event_id(event_id)? else { return Ok(false) };
        let Some(stored) = self.storage.event(short)? else { return Ok(false) };
        if stored.status == EventStatus::Rejected {
            return Ok(false);
        }
        let state = match self.storage.event_state(short)? {
            Some((before, _)) => self.state.full(before)?,
            None => match self.room(&stored.room_id)? {
                Some(room) => self.current_state(&room)?,
                None => return Ok(false),
            },
        };
        let visibility = self.history_visibility(&state)?;
        if visibility == "world_readable" {
            return Ok(true);
        }
        let memberships = self.server_memberships(&state, server)?;
        Ok(match visibility.as_str() {
            "invited" => memberships.iter().any(|m| m == "join" || m == "invite"),
            "joined" => memberships.iter().any(|m| m == "join"),
            // `shared`: any server that has been in the room (or is in it now).
            _ => !memberships.is_empty() || self.server_in_room_now(&stored.room_id, server)?,
        })
    }

    /// The memberships of a server's users in a state.
    fn server_memberships(&self, state: &StateMap, server: &ServerName) -> Result<Vec<String>> {
        let mut memberships = Vec::new();
        for pdu in self.state_events(state)? {
            if pdu.kind == TimelineEventType::RoomMember
                && let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
                && user.server_name() == server
                && let Some(membership) = pdu.content_str("membership")
            {
                memberships.push(membership);
            }
        }
        Ok(memberships)
    }

    /// Whether one of a server's users is joined to the room now.
    fn server_in_room_now(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        Ok(self
            .storage
            .members(room.short_id)?
            .iter()
            .any(|(user, membership)| membership == "join" && user.server_name() == server))
    }

    /// Refuses (403) a server that has no user in the room (joined, or invited for invite-time
    /// reads) and cannot see the room's history either: the check of the state endpoints.
    pub fn check_server_in_room(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let state = self.current_state(&room)?;
        if self.history_visibility(&state)? == "world_readable"
            || self.server_memberships(&state, server)?.iter().any(|m| m == "join" || m == "invite")
        {
            return Ok(());
        }
        Err(Error::forbidden(format!("Server {server} is not in room {room_id}")))
    }

    /// The state before an event of the room (or the current state without one) and its auth
    /// chain.
    pub fn state_for_server(&self, room_id: &RoomId, event_id: Option<&EventId>) -> Result<StateAndAuth> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let state = match event_id {
            Some(event_id) => {
                let short = self
                    .storage
                    .short_event_id(event_id)?
                    .filter(|short| self.storage.event(*short).ok().flatten().is_some_and(|e| e.room_id == room_id))
                    .ok_or_else(|| Error::not_found("Unknown event"))?;
                let (before, _) = self
                    .storage
                    .event_state(short)?
                    .ok_or_else(|| Error::not_found("No state is known at this event"))?;
                self.state.full(before)?
            }
            None => self.current_state(&room)?,
        };
        let state = self.state_events(&state)?;
        let auth_chain = self.auth_chain_of(state.iter().map(|pdu| pdu.event_id.clone()))?;
        Ok(StateAndAuth { state, auth_chain })
    }

    /// The auth chain of some events (the events themselves excluded unless one leads to
    /// another), oldest first.
    pub fn auth_chain_of(&self, events: impl Iterator<Item = OwnedEventId>) -> Result<Vec<OwnedEventId>> {
        let fetch = |id: &EventId| self.event_by_id(id).ok().flatten().map(|(_, pdu)| pdu);
        let chain = auth_chain(events, &fetch);
        let mut chain: Vec<(u64, OwnedEventId)> =
            chain.into_iter().map(|id| (fetch(&id).map_or(0, |pdu| pdu.depth), id)).collect();
        chain.sort();
        Ok(chain.into_iter().map(|(_, id)| id).collect())
    }

    /// `/backfill`: events before (and including) `from`, walking prev events back, most recent
    /// first, at most `limit`, only those `server` may see.
    pub fn backfill(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<OwnedEventId>> {
        let limit = limit.min(MAX_HISTORY_EVENTS);
        let mut queue: BinaryHeap<(u64, OwnedEventId)> = BinaryHeap::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        for id in from {
            if let Some((_, pdu)) = self.event_by_id(id)?
                && pdu.room_id == room_id
                && seen.insert(id.clone())
            {
                queue.push((pdu.depth, id.clone()));
            }
        }
        let mut events = Vec::new();
        while let Some((_, id)) = queue.pop() {
            if events.len() >= limit {
                break;
            }
            let Some((_, pdu)) = self.event_by_id(&id)? else { continue };
            if self.server_can_see(server, &id)? {
                events.push(id.clone());
            }
            for prev in &pdu.prev_events {
                if seen.insert(prev.clone())
                    && let Some((_, prev_pdu)) = self.event_by_id(prev)?
                {
                    queue.push((prev_pdu.depth, prev.clone()));
                }
            }
        }
        Ok(events)
    }

    /// `/get_missing_events`: the events between `earliest` and `latest` (walking prev events
    /// back from `latest`, stopping at `earliest` and below `min_depth`), oldest first, at most
    /// `limit`, only those `server` may see. `latest` themselves are not included.
    pub fn missing_events(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<OwnedEventId>> {
        let limit = limit.min(MAX_HISTORY_EVENTS);
        let stop: HashSet<&OwnedEventId> = earliest.iter().collect();
        let mut seen: HashSet<OwnedEventId> = latest.iter().cloned().collect();
        let mut queue: Vec<OwnedEventId> = Vec::new();
        for id in latest {
            if let Some((_, pdu)) = self.event_by_id(id)?
                && pdu.room_id == room_id
            {
                queue.extend(pdu.prev_events.iter().cloned());
            }
        }
        let mut found: Vec<(u64, OwnedEventId)> = Vec::new();
        // Breadth first, so that the events closest to `latest` come first when cut by `limit`.
        let mut next = 0;
        while next < queue.len() && found.len() < limit {
            let id = queue[next].clone();
            next += 1;
            if stop.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some((_, pdu)) = self.event_by_id(&id)? else { continue };
            if pdu.room_id != room_id || pdu.depth < min_depth {
                continue;
            }
            if self.server_can_see(server, &id)? {
                found.push((pdu.depth, id.clone()));
            }
            queue.extend(pdu.prev_events.iter().cloned());
        }
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    /// A membership event template for `user` (`make_join`, `make_leave`, `make_knock`): the
    /// room's version and the event's fields for their server to sign, refused when the auth
    /// rules would refuse it.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let (_guard, room) = self.lock(room_id).await?;
        let mut content = Map::new();
        content.insert("membership".into(), json!(membership));
        if membership == "join"
            && let Some(authoriser) = self.join_authoriser(&room, user)?
        {
            content.insert("join_authorised_via_users_server".into(), json!(authoriser));
        }
        if membership == "knock" && !room.rules.authorization.knocking {
            return Err(Error::new(
                crate::error::ErrorKind::IncompatibleRoomVersion { room_version: room.record.version.to_string() },
                format!("Room version {} does not allow knocking", room.record.version),
            ));
        }
        let draft = EventDraft::state("m.room.member", user.as_str(), canonical_content(content)?);
        let auth_events = self.auth_events_for(&room, user, &draft)?;
        let prev_events = self.references(&room, &room.record.extremities)?;
        let template = pdu::template(
            &room.record.version,
            user,
            draft,
            &pdu::Placement {
                room_id: Some(room_id),
                prev_events: &prev_events,
                auth_events: &auth_events,
                depth: room.record.depth + 1,
            },
        )?;
        // Would the auth rules allow it? Judged on the template with a stand-in ID.
        let raw = RawValue::from_string(serde_json::to_string(&template).expect("canonical JSON serializes"))
            .expect("valid JSON");
        let stand_in = EventId::parse("$template:stand.in").expect("a valid event ID");
        let candidate = Pdu::parse(stand_in, room_id.to_owned(), &raw)?;
        self.authorize(&room, &candidate)?;
        Ok((room.record.version.clone(), template))
    }

    /// The servers with a joined member in the room, for send_join's `servers_in_room`.
    pub fn joined_servers(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let servers: BTreeSet<String> = self
            .storage
            .members(room.short_id)?
            .into_iter()
            .filter(|(_, membership)| membership == "join")
            .map(|(user, _)| user.server_name().to_string())
            .collect();
        Ok(servers.into_iter().collect())
    }

    /// The stripped state a remote invitee or knocker is shown of a room (as our own syncs show
    /// invites): a few state events in their stripped form.
    pub fn stripped_state(&self, room_id: &RoomId) -> Result<Vec<Value>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        let mut events = Vec::new();
        for kind in STRIPPED_STATE {
            if let Some(pdu) = self.state_event(&state, kind, "")? {
                events.push(stripped(&pdu));
            }
        }
        Ok(events)
    }
}

/// State events shown for a room one is invited to or knocks on (Synapse's default).
pub const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.name",
    "m.room.encryption",
    "m.room.topic",
];

/// An event in the stripped form of invite and knock state.
pub fn stripped(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key,
        "content": serde_json::from_str::<Value>(pdu.content.get()).unwrap_or_default(),
        "sender": pdu.sender,
    })
}
