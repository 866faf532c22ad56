//! Who may see what: history visibility (client-server spec, "Room History Visibility").
//!
//! Whether a user may see an event depends on the room's state at that event:
//! 1. `world_readable`: everyone;
//! 2. the user was joined then;
//! 3. `shared` (the default): the user joined at some point after the event;
//! 4. `invited`: the user was invited then;
//! 5. otherwise not.
//!
//! A user also sees a `m.room.history_visibility` event if the visibility before *or* after it
//! allows, and their own member events if their membership before or after allows.

use std::collections::HashMap;

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::Value;

use super::{Pdu, Rooms, StateMap};
use crate::{
    error::{Error, Result},
    storage::MembershipRecord,
};

/// What `can_see` and `unsigned.membership` read from state snapshots, kept for one request of
/// one viewer: consecutive events mostly share their snapshots' history visibility and the
/// viewer's membership, so each snapshot is looked at once.
#[derive(Default)]
pub struct SeeMemo {
    /// Snapshot ID -> (history visibility, the viewer's membership).
    snapshots: HashMap<u64, (String, Option<String>)>,
    /// The viewer's membership record (read once, when `shared` asks for a later join).
    record: Option<Option<MembershipRecord>>,
}

impl Rooms {
    /// Whether `user` may see the event with this short ID and stream position.
    pub fn can_see(&self, user: &UserId, room_id: &RoomId, short: u64, pdu: &Pdu, position: u64) -> Result<bool> {
        let snapshots = self.event_snapshots(short)?;
        self.can_see_in(&mut SeeMemo::default(), user, room_id, snapshots, pdu, position)
    }

    /// The IDs of the state snapshots before and after an event.
    pub fn event_snapshots(&self, short_event: u64) -> Result<(u64, u64)> {
        if let Some(snapshots) = self.caches.snapshots(short_event) {
            return Ok(snapshots);
        }
        let snapshots = self
            .storage
            .event_state(short_event)?
            .ok_or_else(|| Error::internal(format!("no state recorded for event {short_event}")))?;
        self.caches.fill_snapshots(short_event, snapshots);
        Ok(snapshots)
    }

    /// A snapshot's history visibility and the user's membership in it, through the memo.
    pub fn snapshot_facts(&self, memo: &mut SeeMemo, user: &UserId, snapshot: u64) -> Result<(String, Option<String>)> {
        if let Some(facts) = memo.snapshots.get(&snapshot) {
            return Ok(facts.clone());
        }
        let state = self.state.full(snapshot)?;
        let facts = (self.history_visibility(&state)?, self.membership_in(&state, user)?);
        memo.snapshots.insert(snapshot, facts.clone());
        Ok(facts)
    }

    /// `can_see` for an event whose snapshots (before, after) are known, through a memo that
    /// belongs to `user`.
    pub fn can_see_in(
        &self,
        memo: &mut SeeMemo,
        user: &UserId,
        room_id: &RoomId,
        (before, after): (u64, u64),
        pdu: &Pdu,
        position: u64,
    ) -> Result<bool> {
        let allowed_in = |memo: &mut SeeMemo, snapshot: u64| -> Result<bool> {
            let (visibility, membership) = self.snapshot_facts(memo, user, snapshot)?;
            if visibility == "world_readable" {
                return Ok(true);
            }
            Ok(match membership.as_deref() {
                Some("join") => true,
                Some("invite") if visibility == "invited" => true,
                _ if visibility != "shared" => false,
                _ => {
                    if memo.record.is_none() {
                        memo.record = Some(self.storage.membership(user, room_id)?);
                    }
                    memo.record
                        .as_ref()
                        .and_then(Option::as_ref)
                        .is_some_and(|m| m.membership == "join" || m.last_join.is_some_and(|joined| joined > position))
                }
            })
        };
        let own_member_event =
            pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
        if pdu.kind == TimelineEventType::RoomHistoryVisibility || own_member_event {
            return Ok(allowed_in(memo, before)? || allowed_in(memo, after)?);
        }
        allowed_in(memo, before)
    }

    /// `m.room.history_visibility` in a state; `shared` when unset or unknown.
    pub fn history_visibility(&self, state: &StateMap) -> Result<String> {
        let visibility = self
            .state_content(state, "m.room.history_visibility", "")?
            .and_then(|c| c.get("history_visibility").and_then(Value::as_str).map(str::to_owned));
        Ok(match visibility.as_deref() {
            Some(v @ ("world_readable" | "shared" | "invited" | "joined")) => v.to_owned(),
            _ => "shared".to_owned(),
        })
    }

    /// A user's membership in a state.
    pub fn membership_in(&self, state: &StateMap, user: &UserId) -> Result<Option<String>> {
        Ok(self.state_event(state, "m.room.member", user.as_str())?.and_then(|pdu| pdu.content_str("membership")))
    }
}
