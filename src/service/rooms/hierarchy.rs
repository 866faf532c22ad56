//! Space hierarchies (`/rooms/{roomId}/hierarchy`): a depth-first walk of `m.space.child` links
//! from a space, showing each room the user may see (joined or invited, public, knockable,
//! world-readable, or restricted to a room they are in) and stopping at those they may not.
//! Rooms only known to other servers are left out until federation can ask them.

use std::collections::HashSet;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{Pdu, Rooms, StateMap};
use crate::error::{Error, Result};

/// Rooms per page when the client does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// The most rooms per page.
pub const MAX_LIMIT: usize = 100;
/// Rooms visited in one request at most, whatever the page: a bound on the work of a walk.
const MAX_ROOMS_WALKED: usize = 2000;

pub struct HierarchyQuery {
    pub suggested_only: bool,
    pub max_depth: Option<usize>,
    pub limit: Option<usize>,
    /// `next_batch` of a previous page: how many rooms it and the pages before showed.
    pub from: Option<String>,
}

pub struct HierarchyPage {
    pub rooms: Vec<Map<String, Value>>,
    pub next_batch: Option<String>,
}

impl Rooms {
    pub fn hierarchy(&self, user: &UserId, root: &RoomId, query: &HierarchyQuery) -> Result<HierarchyPage> {
        let skip = match &query.from {
            None => 0,
            Some(token) => token
                .strip_prefix('h')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?,
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        if !self.accessible(user, root)? {
            return Err(Error::forbidden("You may not see this room's hierarchy"));
        }

        let mut rooms = Vec::new();
        let mut shown = 0;
        let mut seen = HashSet::new();
        // Rooms to visit with their depth; the last is visited first, so children go on reversed.
        let mut stack = vec![(root.to_owned(), 0)];
        while let Some((room_id, depth)) = stack.pop() {
            if !seen.insert(room_id.clone()) || seen.len() > MAX_ROOMS_WALKED {
                continue;
            }
            if room_id != root && !self.accessible(user, &room_id)? {
                continue;
            }
            let Some(room) = self.room(&room_id)? else { continue };
            let state = self.current_state(&room)?;
            let Some(mut summary) = self.room_summary(&room_id)? else { continue };
            let is_space = summary.get("room_type").and_then(Value::as_str) == Some("m.space");
            let children = if is_space { self.space_children(&state, query.suggested_only)? } else { Vec::new() };
            if query.max_depth.is_none_or(|max| depth < max) {
                for child in children.iter().rev() {
                    if let Some(Ok(child_id)) = child.state_key.as_deref().map(RoomId::parse) {
                        stack.push((child_id, depth + 1));
                    }
                }
            }
            shown += 1;
            if shown <= skip {
                continue;
            }
            let children_state: Vec<Value> = children.iter().map(|child| stripped(child)).collect();
            summary.insert("children_state".into(), json!(children_state));
            rooms.push(summary);
            if rooms.len() == limit {
                break;
            }
        }
        // Another page when the walk stopped at the limit with rooms left to visit.
        let more = rooms.len() == limit && stack.iter().any(|(room, _)| !seen.contains(room));
        Ok(HierarchyPage { rooms, next_batch: more.then(|| format!("h{}", skip + limit)) })
    }

    /// The room's valid `m.space.child` events (with a non-empty `via`), in the spec's order:
    /// by `order` (those with one first), then by when the link was made, then by room ID.
    fn space_children(&self, state: &StateMap, suggested_only: bool) -> Result<Vec<std::sync::Arc<Pdu>>> {
        let mut children: Vec<_> = self
            .state_events(state)?
            .into_iter()
            .filter(|pdu| pdu.kind.to_string() == "m.space.child")
            .filter(|pdu| {
                let content = pdu.content_map();
                let has_via = content.get("via").and_then(Value::as_array).is_some_and(|via| !via.is_empty());
                has_via && (!suggested_only || content.get("suggested").and_then(Value::as_bool) == Some(true))
            })
            .collect();
        let order = |pdu: &Pdu| {
            pdu.content_map()
                .get("order")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .filter(|order| order.len() <= 50 && order.chars().all(|c| (' '..='~').contains(&c)))
        };
        children.sort_by(|a, b| {
            let (order_a, order_b) = (order(a), order(b));
            // Rooms with an order come before those without.
            (order_a.is_none(), order_a, a.origin_server_ts, &a.state_key).cmp(&(
                order_b.is_none(),
                order_b,
                b.origin_server_ts,
                &b.state_key,
            ))
        });
        Ok(children)
    }

    /// Whether the user may see a room's summary in a hierarchy.
    fn accessible(&self, user: &UserId, room_id: &RoomId) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        let state = self.current_state(&room)?;
        if matches!(self.membership_in(&state, user)?.as_deref(), Some("join" | "invite")) {
            return Ok(true);
        }
        if self.history_visibility(&state)? == "world_readable" {
            return Ok(true);
        }
        let join_rules = self.state_content(&state, "m.room.join_rules", "")?.unwrap_or_default();
        match join_rules.get("join_rule").and_then(Value::as_str) {
            Some("public" | "knock") => Ok(true),
            Some("restricted" | "knock_restricted") => {
                let allowed: Vec<OwnedRoomId> = join_rules
                    .get("allow")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|rule| rule["type"] == "m.room_membership")
                    .filter_map(|rule| rule["room_id"].as_str().and_then(|id| RoomId::parse(id).ok()))
                    .collect();
                let joined = self.joined_rooms(user)?;
                Ok(allowed.iter().any(|room| joined.contains(room)))
            }
            _ => Ok(false),
        }
    }
}

/// A space-child event as the hierarchy shows it (stripped state with sender and time).
fn stripped(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key,
        "content": pdu.content_map(),
        "sender": pdu.sender,
        "origin_server_ts": pdu.origin_server_ts,
    })
}
