//! Room history: `/messages` (pagination in both directions) and `/context`.
//!
//! Tokens are stream positions (the sync tokens' format): a token `t` stands between the events at
//! position `t` and `t + 1`. Paging back from `t` reads positions `<= t`; paging forward reads
//! positions `> t`. A user who left reads up to their departure and no further.

use std::collections::BTreeSet;

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ClientEvent, Rooms, SeeMemo, read::Viewer};
use crate::{
    error::{Error, Result},
    service::{filters::RoomEventFilter, sync::SyncToken},
};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

/// Which way to page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

#[derive(Clone)]
pub struct MessagesQuery {
    pub from: Option<SyncToken>,
    pub to: Option<SyncToken>,
    pub dir: Direction,
    pub limit: Option<usize>,
    pub filter: RoomEventFilter,
}

/// A `/messages` response.
#[derive(Serialize)]
pub struct Messages {
    pub chunk: Vec<ClientEvent>,
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Members of the chunk's senders, with lazy-loading.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<Value>,
}

/// The events a reading user may see from a room's timeline, in a position range.
pub(super) struct Page {
    pub(super) events: Vec<(u64, ClientEvent)>,
    /// Whether the range was cut by the limit (more may follow).
    more: bool,
}

impl Rooms {
    /// The highest position the user may read up to: now while they are in the room (or it is
    /// world-readable), their departure once they have left. Refused for strangers.
    fn readable_until(&self, user: &UserId, room_id: &RoomId) -> Result<u64> {
        let forbidden = || Error::forbidden("You are not allowed to read this room");
        let room = self.room(room_id)?.ok_or_else(forbidden)?;
        let now = self.storage.stream_position();
        match self.storage.membership(user, room_id)? {
            Some(record) if record.forgotten => Err(forbidden()),
            Some(record) if record.membership == "join" || record.membership == "invite" => Ok(now),
            Some(record) if record.last_join.is_some() => Ok(record.position.min(now)),
            _ if self.history_visibility(&*self.current_state(&room)?)? == "world_readable" => Ok(now),
            _ => Err(forbidden()),
        }
    }

    /// Refuses (403) a user who may not read the room's timeline, as `messages` would.
    pub fn check_history_readable(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        self.readable_until(user, room_id).map(|_| ())
    }

    pub fn messages(&self, viewer: Viewer<'_>, room_id: &RoomId, query: &MessagesQuery) -> Result<Messages> {
        let until = self.readable_until(viewer.user, room_id)?;
        let room = self.room_exists(room_id)?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let from = query.from.map(|t| t.position);
        let to = query.to.map(|t| t.position);
        let (page, start, end) = match query.dir {
            Direction::Backward => {
                let from = from.unwrap_or(until).min(until);
                let page = self.page(viewer, room_id, room.short_id, to.unwrap_or(0), from, limit, query)?;
                let end = page.events.last().map(|(p, ..)| p - 1);
                (page, from, end)
            }
            Direction::Forward => {
                let from = from.unwrap_or(0);
                let page =
                    self.page(viewer, room_id, room.short_id, from, to.unwrap_or(until).min(until), limit, query)?;
                let end = page.events.last().map(|(p, ..)| *p);
                (page, from, end)
            }
        };
        let state = if query.filter.lazy_load_members {
            self.members_of(room_id, &senders_of(&page.events), until)?
        } else {
            Vec::new()
        };
        // Backwards, `end` comes whenever the chunk is not empty, even at the start of the room, as
        // Synapse does: clients and Complement page until a chunk comes without it, and the
        // request from this `end` just returns an empty chunk without one.
        let backward = matches!(query.dir, Direction::Backward);
        let end = end.filter(|_| page.more || backward).map(|end| SyncToken::new(end, 0).to_string());
        Ok(Messages {
            chunk: page.events.into_iter().map(|(_, event)| event).collect(),
            start: SyncToken::new(start, 0).to_string(),
            end,
            state,
        })
    }

    /// Visible, filtered events with positions in `(after, until]`, in the query's direction,
    /// at most `limit`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn page(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        short_room: u64,
        after: u64,
        until: u64,
        limit: usize,
        query: &MessagesQuery,
    ) -> Result<Page> {
        let mut events = Vec::new();
        let mut memo = SeeMemo::default();
        let (mut low, mut high) = (after, until);
        // No more than the limit needs (one more tells whether more follow), at first.
        let chunk_size = (limit + 1).min(64);
        loop {
            let chunk = match query.dir {
                Direction::Backward => {
                    self.storage.timeline_rev(short_room, low, high.saturating_add(1), chunk_size)?
                }
                Direction::Forward => self.storage.timeline_fwd(short_room, low, high, chunk_size)?,
            };
            let Some(&(edge, _)) = chunk.last() else { return Ok(Page { events, more: false }) };
            for (position, short) in chunk {
                let Some(cached) = self.cached_event(short)? else { continue };
                let pdu = &cached.pdu;
                if !query.filter.allows_pdu(pdu, room_id) {
                    continue;
                }
                let snapshots = self.event_snapshots(short)?;
                if !self.can_see_in(&mut memo, viewer.user, room_id, snapshots, pdu, position)? {
                    continue;
                }
                if events.len() == limit {
                    return Ok(Page { events, more: true });
                }
                events.push((position, self.timeline_event_in(&mut memo, &cached, snapshots.1, viewer)?));
            }
            match query.dir {
                Direction::Backward => high = edge - 1,
                Direction::Forward => low = edge,
            }
        }
    }

    /// The member events, at a position, of the given users (lazy-loading).
    fn members_of(&self, room_id: &RoomId, users: &BTreeSet<OwnedUserId>, position: u64) -> Result<Vec<Value>> {
        let state = self.state_at_position(room_id, position)?;
        let mut members = Vec::new();
        for user in users {
            if let Ok(event) = self.state_event_in_client_format(&state, "m.room.member", user.as_str()) {
                members.push(event);
            }
        }
        Ok(members)
    }

    /// `/context/{eventId}`: the event, some before and after it, and the state at the end.
    pub fn context(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        event_id: &EventId,
        limit: Option<usize>,
        filter: &RoomEventFilter,
    ) -> Result<Value> {
        let until = self.readable_until(viewer.user, room_id).map_err(|_| Error::not_found("Event not found"))?;
        let event = self.visible_event(viewer, room_id, event_id)?;
        let position = self
            .storage
            .event_by_id(event_id)?
            .map(|e| e.position)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let room = self.room_exists(room_id)?;
        // The limit is for both sides together; the odd one goes after (as Synapse does).
        let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let side = |dir, after, until, limit| -> Result<Page> {
            if limit == 0 {
                return Ok(Page { events: Vec::new(), more: false });
            }
            let query = MessagesQuery { from: None, to: None, dir, limit: None, filter: filter.clone() };
            self.page(viewer, room_id, room.short_id, after, until, limit, &query)
        };
        let before = side(Direction::Backward, 0, position.saturating_sub(1), limit / 2)?;
        let after = side(Direction::Forward, position, until, limit - limit / 2)?;
        let start = before.events.last().map_or(position.saturating_sub(1), |(p, ..)| p - 1);
        let end = after.events.last().map_or(position, |(p, ..)| *p);
        let state = self.state_at_position(room_id, end)?;
        let state = if filter.lazy_load_members {
            let mut senders = senders_of(&before.events);
            senders.extend(senders_of(&after.events));
            senders.insert(
                event["sender"].as_str().and_then(|s| UserId::parse(s).ok()).unwrap_or_else(|| viewer.user.to_owned()),
            );
            self.members_of(room_id, &senders, end)?
        } else {
            self.state_in_client_format(&state)?
        };
        let values = |page: Page| page.events.into_iter().map(|(_, e)| e.into_value()).collect::<Result<Vec<_>>>();
        Ok(json!({
            "event": event,
            "events_before": values(before)?,
            "events_after": values(after)?,
            "start": SyncToken::new(start, 0).to_string(),
            "end": SyncToken::new(end, 0).to_string(),
            "state": state,
        }))
    }
}

/// The senders of a page's events.
fn senders_of(events: &[(u64, ClientEvent)]) -> BTreeSet<OwnedUserId> {
    events.iter().map(|(_, event)| event.pdu().sender.clone()).collect()
}
