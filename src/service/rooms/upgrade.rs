//! Room upgrades: a new room of the new version with the old room's important state, a tombstone
//! in the old room pointing to it, aliases and directory listing moved over, and the old room
//! quietened so conversation moves on.

use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::{CreateRoom, EventDraft, Rooms, canonical_content, pdu};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, ErrorKind, Result},
};

/// State carried into the new room as it is.
const COPIED_STATE: [&str; 9] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.pinned_events",
];

impl Rooms {
    pub async fn upgrade(&self, room_id: &RoomId, user: &UserId, new_version: RoomVersionId) -> Result<OwnedRoomId> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&new_version) {
            return Err(Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!("Room version {new_version} is not supported"),
            ));
        }
        let old = self.room_exists(room_id)?;
        let old_state = self.current_state(&old)?;
        if self.membership_in(&old_state, user)?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        if !self.can_send_state(&old_state, &old.version, user, "m.room.tombstone")? {
            return Err(Error::forbidden("You may not upgrade this room"));
        }
        let new_rules = pdu::rules_of(&new_version)?;

        // The new room: its create event names the old one, and carries its type.
        let old_create = self.state_content(&old_state, "m.room.create", "")?.unwrap_or_default();
        let mut creation_content = Map::new();
        if let Some(room_type) = old_create.get("type") {
            creation_content.insert("type".into(), room_type.clone());
        }
        let mut predecessor = json!({ "room_id": room_id });
        // Before room version 12 the predecessor also names the last event seen in the old room.
        if !new_rules.authorization.room_create_event_id_as_room_id
            && let Some(last) = old.extremities.first()
        {
            predecessor["event_id"] = json!(last);
        }
        creation_content.insert("predecessor".into(), predecessor);

        let mut initial_state = Vec::new();
        for kind in COPIED_STATE {
            if let Some(content) = self.state_content(&old_state, kind, "")? {
                initial_state.push((kind.to_owned(), String::new(), content));
            }
        }
        // Power levels: as they were, with the upgrader at the top (in room version 12 creators
        // hold that power without being listed).
        let mut power = self.state_content(&old_state, "m.room.power_levels", "")?.unwrap_or_default();
        let mut users = power.get("users").and_then(Value::as_object).cloned().unwrap_or_default();
        if new_rules.authorization.explicitly_privilege_room_creators {
            users.remove(user.as_str());
        } else {
            let top = self.power_levels(&old_state, &old.version)?.max();
            let top = i64::from(top).clamp(100, 9_007_199_254_740_991);
            users.insert(user.to_string(), json!(top));
        }
        power.insert("users".into(), Value::Object(users));
        initial_state.push(("m.room.power_levels".to_owned(), String::new(), power));

        let join_rule = self
            .state_content(&old_state, "m.room.join_rules", "")?
            .and_then(|c| c.get("join_rule").and_then(Value::as_str).map(str::to_owned));
        let new_room = self
            .create_room(
                user,
                CreateRoom {
                    preset: Some(
                        if join_rule.as_deref() == Some("public") { "public_chat" } else { "private_chat" }.into(),
                    ),
                    public: false,
                    initial_state,
                    creation_content: Some(creation_content),
                    room_version: Some(new_version.clone()),
                    ..Default::default()
                },
            )
            .await?;

        // The tombstone, then everything that follows the conversation.
        let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
        self.send(room_id, user, EventDraft::state("m.room.tombstone", "", canonical_content(map(tombstone))?), None)
            .await?;
        self.move_aliases(room_id, &new_room).await?;
        if let Some(canonical) = self.state_content(&old_state, "m.room.canonical_alias", "")?
            && !canonical.is_empty()
        {
            let moved = EventDraft::state("m.room.canonical_alias", "", canonical_content(canonical)?);
            if let Err(e) = self.send(&new_room, user, moved, None).await {
                tracing::warn!(room = %new_room, error = %e, "could not set the canonical alias after an upgrade");
            }
            let cleared = EventDraft::state("m.room.canonical_alias", "", canonical_content(Map::new())?);
            if let Err(e) = self.send(room_id, user, cleared, None).await {
                tracing::warn!(room = %room_id, error = %e, "could not clear the old room's canonical alias");
            }
        }
        if self.storage.is_public(room_id)? {
            self.set_published(&new_room, user, true).await?;
            self.set_published(room_id, user, false).await?;
        }
        self.quieten(room_id, user, &old_state, &old.version).await;
        tracing::info!(old = %room_id, new = %new_room, version = %new_version, "room upgraded");
        Ok(new_room)
    }

    /// Raises the old room's levels for talking and inviting, so people follow the tombstone.
    async fn quieten(&self, room_id: &RoomId, user: &UserId, state: &super::StateMap, version: &RoomVersionId) {
        let result: Result<()> = async {
            let mut power = self.state_content(state, "m.room.power_levels", "")?.unwrap_or_default();
            let users_default = power.get("users_default").and_then(Value::as_i64).unwrap_or(0);
            let restricted = (users_default + 1).max(50);
            let mut changed = false;
            for key in ["events_default", "invite"] {
                if power.get(key).and_then(Value::as_i64).unwrap_or(0) < restricted {
                    power.insert(key.into(), json!(restricted));
                    changed = true;
                }
            }
            if changed && self.can_send_state(state, version, user, "m.room.power_levels")? {
                self.send(room_id, user, EventDraft::state("m.room.power_levels", "", canonical_content(power)?), None)
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(room = %room_id, error = %e, "could not restrict the old room after an upgrade");
        }
    }
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
