//! Room aliases and the canonical alias.

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{EventDraft, Rooms, canonical_content};
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{AliasRecord, Batch},
};

impl Rooms {
    /// Creates a local alias for a room the user is in.
    pub async fn create_alias(&self, alias: &RoomAliasId, room_id: &RoomId, user: &UserId) -> Result<()> {
        if alias.server_name() != self.config.server_name {
            return Err(Error::invalid_param("Aliases of other servers cannot be created here"));
        }
        let room = self.room_exists(room_id)?;
        if self.membership_in(&*self.current_state(&room)?, user)?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        let _guard = self.alias_lock.lock().await;
        if self.storage.alias(alias)?.is_some() {
            return Err(Error::new(ErrorKind::AliasInUse, "The room alias already exists"));
        }
        let mut batch = Batch::new();
        batch.put_alias(alias, &AliasRecord { room_id: room_id.to_owned(), creator: user.to_owned() });
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// The room an alias points to, and the servers to join it through.
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<String>)> {
        let record = self.storage.alias(alias)?.ok_or_else(|| Error::not_found("Unknown room alias"))?;
        Ok((record.room_id, vec![self.config.server_name.to_string()]))
    }

    /// Deletes an alias: its creator may, and so may anyone allowed to change the room's
    /// canonical alias. A canonical alias that named it is updated (when the user may).
    pub async fn delete_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let record = self.storage.alias(alias)?.ok_or_else(|| Error::not_found("Unknown room alias"))?;
        let room = self.room(&record.room_id)?;
        if record.creator != user {
            let allowed = match &room {
                Some(room) => {
                    self.can_send_state(&*self.current_state(room)?, &room.version, user, "m.room.canonical_alias")?
                }
                None => false,
            };
            if !allowed {
                return Err(Error::forbidden("Only the alias's creator or a room moderator may delete it"));
            }
        }
        let mut batch = Batch::new();
        batch.delete_alias(alias, &record.room_id);
        self.storage.commit(batch).await?;
        if let Err(e) = self.drop_from_canonical_alias(&record.room_id, alias, user).await {
            tracing::debug!(room = %record.room_id, error = %e, "canonical alias left as it was");
        }
        Ok(())
    }

    async fn drop_from_canonical_alias(&self, room_id: &RoomId, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let Some(current) = self.current_state_event(room_id, "m.room.canonical_alias", "")? else { return Ok(()) };
        let mut content = current.content_map();
        let mut changed = false;
        if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            content.remove("alias");
            changed = true;
        }
        if let Some(Value::Array(alt)) = content.get_mut("alt_aliases") {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
            if alt.is_empty() {
                content.remove("alt_aliases");
            }
        }
        if changed {
            self.send(
                room_id,
                user,
                EventDraft::state("m.room.canonical_alias", "", canonical_content(content)?),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// The room's local aliases, for its members (or anyone, if it is world-readable).
    pub fn aliases_of(&self, user: &UserId, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        self.readable_state(user, room_id)?;
        Ok(self.storage.room_aliases(room_id)?)
    }

    /// A canonical alias event may only name aliases that exist and point to this room.
    pub fn check_canonical_alias(&self, room_id: &RoomId, content: &Map<String, Value>) -> Result<()> {
        let mut named: Vec<&Value> = content.get("alias").filter(|a| !a.is_null()).into_iter().collect();
        match content.get("alt_aliases") {
            Some(Value::Array(alt)) => named.extend(alt),
            Some(Value::Null) | None => {}
            Some(_) => return Err(Error::invalid_param("`alt_aliases` must be a list of aliases")),
        }
        for value in named {
            let alias = value
                .as_str()
                .and_then(|a| RoomAliasId::parse(a).ok())
                .ok_or_else(|| Error::invalid_param(format!("{value} is not a valid room alias")))?;
            if alias.server_name() != self.config.server_name {
                continue;
            }
            if self.storage.alias(&alias)?.is_none_or(|record| record.room_id != room_id) {
                return Err(Error::new(ErrorKind::BadAlias, format!("{alias} does not point to this room")));
            }
        }
        Ok(())
    }

    /// Points the room's local aliases to another room (after an upgrade).
    pub(super) async fn move_aliases(&self, from: &RoomId, to: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        let _guard = self.alias_lock.lock().await;
        let aliases = self.storage.room_aliases(from)?;
        let mut batch = Batch::new();
        for alias in &aliases {
            if let Some(record) = self.storage.alias(alias)? {
                batch.delete_alias(alias, from);
                batch.put_alias(alias, &AliasRecord { room_id: to.to_owned(), creator: record.creator });
            }
        }
        self.storage.commit(batch).await?;
        Ok(aliases)
    }
}
