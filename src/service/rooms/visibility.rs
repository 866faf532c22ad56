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

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::Value;

use super::{Pdu, Rooms, StateMap};
use crate::error::Result;

impl Rooms {
    /// Whether `user` may see the event with this short ID and stream position.
    pub fn can_see(&self, user: &UserId, room_id: &RoomId, short: u64, pdu: &Pdu, position: u64) -> Result<bool> {
        let (before, after) = self.event_states(short)?;
        let later_join = || -> Result<bool> {
            Ok(self
                .storage
                .membership(user, room_id)?
                .is_some_and(|m| m.membership == "join" || m.last_join.is_some_and(|joined| joined > position)))
        };
        let allowed_in = |state: &StateMap| -> Result<bool> {
            let visibility = self.history_visibility(state)?;
            if visibility == "world_readable" {
                return Ok(true);
            }
            let membership = self.membership_in(state, user)?;
            Ok(match membership.as_deref() {
                Some("join") => true,
                Some("invite") if visibility == "invited" => true,
                _ => visibility == "shared" && later_join()?,
            })
        };
        let own_member_event =
            pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
        if pdu.kind == TimelineEventType::RoomHistoryVisibility || own_member_event {
            return Ok(allowed_in(&before)? || allowed_in(&after)?);
        }
        allowed_in(&before)
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
