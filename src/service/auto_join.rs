//! Auto-join at registration (`registration.auto_join_rooms`, Synapse's `auto_join_rooms`): every
//! new account joins these rooms, so a new user lands somewhere with people in it. A missing local
//! alias's room is created on first use when `autocreate_auto_join_rooms` is on, as a public room
//! with that alias, published in the directory, its first member the user who triggered it.

use ruma::{RoomOrAliasId, UserId};

use super::{Services, rooms::CreateRoom};
use crate::error::{ErrorKind, Result};

impl Services {
    /// Joins a newly registered user to every auto-join room. A room that cannot be joined is
    /// logged and skipped: registration has succeeded and must not fail for it.
    pub async fn auto_join(&self, user: &UserId) {
        for target in self.config.registration.auto_join_targets(&self.config.server_name) {
            if let Err(e) = self.auto_join_one(user, &target).await {
                tracing::warn!(user = %user, room = %target, error = %e, "auto-join failed");
            }
        }
    }

    async fn auto_join_one(&self, user: &UserId, target: &RoomOrAliasId) -> Result<()> {
        let resolved = match self.resolve_room(target.as_str()).await {
            Err(e) if e.kind() == Some(&ErrorKind::NotFound) => None,
            other => Some(other?),
        };
        let (room_id, servers) = match resolved {
            Some(found) => found,
            None => {
                let Ok(alias) = ruma::RoomAliasId::parse(target.as_str()) else { return Ok(()) };
                if alias.server_name() != self.config.server_name
                    || !self.config.registration.autocreate_auto_join_rooms
                {
                    return Err(crate::error::Error::not_found(format!("Room alias {alias} not found")));
                }
                // One creation at a time: a second registration waiting here finds the room.
                let _creating = self.auto_join_creation.lock().await;
                match self.rooms.resolve_alias(&alias) {
                    Ok((room_id, _)) => (room_id, Vec::new()),
                    Err(_) => return self.create_auto_join_room(user, alias.alias()).await,
                }
            }
        };
        self.join_room(user, &room_id, servers, None, Default::default()).await?;
        Ok(())
    }

    /// A public room named after its alias, with the alias as canonical alias and in the public
    /// directory, as Synapse creates them.
    async fn create_auto_join_room(&self, creator: &UserId, localpart: &str) -> Result<()> {
        let request = CreateRoom {
            preset: Some("public_chat".to_owned()),
            public: true,
            name: Some(localpart.to_owned()),
            alias_localpart: Some(localpart.to_owned()),
            ..Default::default()
        };
        let room_id = self.rooms.create_room(creator, request).await?;
        tracing::info!(room = %room_id, alias = localpart, "created an auto-join room");
        Ok(())
    }
}
