//! The public room directory.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Rooms;
use crate::{
    error::{Error, Result},
    storage::Batch,
};

/// Largest page of the directory.
const MAX_LIMIT: usize = 500;

#[derive(Clone, Debug, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<usize>,
    /// `next_batch` or `prev_batch` of a previous page.
    pub since: Option<String>,
    pub search: Option<String>,
    /// Only rooms of these types (`None` in the list: rooms without a type).
    pub room_types: Option<Vec<Option<String>>>,
}

/// A directory entry, in the spec's `PublishedRoomsChunk` shape.
pub type PublicRoom = Map<String, Value>;

pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoom>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: usize,
}

impl Rooms {
    pub fn public_rooms(&self, query: &PublicRoomsQuery) -> Result<PublicRoomsPage> {
        let search = query.search.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut rooms = Vec::new();
        for room_id in self.storage.public_rooms()? {
            let Some(entry) = self.room_summary(&room_id)? else { continue };
            if let Some(search) = &search {
                let matches = ["name", "topic", "canonical_alias"]
                    .iter()
                    .filter_map(|field| entry.get(*field).and_then(Value::as_str))
                    .any(|text| text.to_lowercase().contains(search.as_str()));
                if !matches {
                    continue;
                }
            }
            if let Some(types) = &query.room_types {
                let room_type = entry.get("room_type").and_then(Value::as_str).map(str::to_owned);
                if !types.contains(&room_type) {
                    continue;
                }
            }
            rooms.push(entry);
        }
        let members = |room: &PublicRoom| room.get("num_joined_members").and_then(Value::as_u64).unwrap_or(0);
        rooms.sort_by(|a, b| {
            members(b).cmp(&members(a)).then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
        });

        let total = rooms.len();
        let offset = match &query.since {
            Some(token) => token
                .strip_prefix('o')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?,
            None => 0,
        };
        let limit = query.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
        let chunk: Vec<PublicRoom> = rooms.into_iter().skip(offset).take(limit).collect();
        let next_batch = (offset + chunk.len() < total).then(|| format!("o{}", offset + chunk.len()));
        let prev_batch = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
        Ok(PublicRoomsPage { chunk, next_batch, prev_batch, total })
    }

    /// A room as the directory shows it, from its current state.
    pub(super) fn room_summary(&self, room_id: &RoomId) -> Result<Option<PublicRoom>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        let text = |kind: &str, field: &str| -> Result<Option<Value>> {
            Ok(self
                .state_content(&state, kind, "")?
                .and_then(|c| c.get(field).cloned())
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty())))
        };
        let joined = self.storage.members(room.short_id)?.iter().filter(|(_, m)| m == "join").count();
        let mut entry = Map::new();
        entry.insert("room_id".into(), json!(room_id));
        entry.insert("num_joined_members".into(), json!(joined));
        entry.insert("world_readable".into(), json!(self.history_visibility(&state)? == "world_readable"));
        let guest_access = text("m.room.guest_access", "guest_access")?;
        entry.insert("guest_can_join".into(), json!(guest_access.as_ref().and_then(Value::as_str) == Some("can_join")));
        for (key, kind, field) in [
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
            ("join_rule", "m.room.join_rules", "join_rule"),
            ("room_type", "m.room.create", "type"),
        ] {
            if let Some(value) = text(kind, field)? {
                entry.insert(key.into(), value);
            }
        }
        Ok(Some(entry))
    }

    /// Whether the room is published; `M_NOT_FOUND` for an unknown room.
    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        self.room_exists(room_id)?;
        Ok(self.storage.is_public(room_id)?)
    }

    /// Publishes or hides a room; those allowed to change its canonical alias may.
    pub async fn set_published(&self, room_id: &RoomId, user: &UserId, public: bool) -> Result<()> {
        let room = self.room_exists(room_id)?;
        if !self.can_send_state(&*self.current_state(&room)?, &room.version, user, "m.room.canonical_alias")? {
            return Err(Error::forbidden("You may not change this room's directory listing"));
        }
        self.publish(room_id, public).await
    }

    /// Lists or unlists a room without a permission check: an application service lists the
    /// rooms of its bridged network (`/directory/list/appservice/{networkId}/{roomId}`), as
    /// Synapse lets it. One directory holds every network's rooms.
    pub async fn publish(&self, room_id: &RoomId, public: bool) -> Result<()> {
        self.room_exists(room_id)?;
        let mut batch = Batch::new();
        batch.set_public(room_id, public);
        self.storage.commit(batch).await?;
        Ok(())
    }
}
