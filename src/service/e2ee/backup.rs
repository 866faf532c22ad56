//! Server-side key backups (`/room_keys/*`): versions with their algorithm and auth data, and the
//! encrypted room keys of each, which the server stores without reading them.
//!
//! Versions are numbers, counted per user; the latest is the current one, and keys can only be
//! added to it (`M_WRONG_ROOM_KEYS_VERSION` otherwise). A session's key is replaced only by a
//! better one: verified over unverified, then a lower first message index, then a lower forward
//! count (Synapse's rules). Each change of a version's keys moves its `etag`.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, ErrorKind, Result},
    service::locks::KeyedLocks,
    storage::{BackupVersionRecord, Batch, Storage},
};

/// The fields of a backed-up session the server compares (the rest is opaque).
#[derive(Deserialize)]
struct KeyBackupData {
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    /// Checked to be there; the server never reads it.
    #[serde(rename = "session_data")]
    _session_data: Map<String, Value>,
}

/// Room keys to store: `{room: {session: data}}`.
pub type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Value>>;

pub struct KeyBackup {
    storage: Arc<Storage>,
    /// Changes to one user's backups one at a time.
    locks: KeyedLocks<OwnedUserId>,
}

impl KeyBackup {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, locks: KeyedLocks::default() }
    }

    /// Creates a new version, which becomes the current one. Returns its number.
    pub async fn create_version(&self, user: &UserId, algorithm: String, auth_data: Value) -> Result<String> {
        check_auth_data(&auth_data)?;
        let _guard = self.locks.lock(&user.to_owned()).await;
        let version = self.storage.backup_versions(user)?.last().map_or(0, |(v, _)| *v) + 1;
        let mut batch = Batch::new();
        batch.put_backup_version(user, version, &BackupVersionRecord { algorithm, auth_data, etag: 0 });
        self.storage.commit(batch).await?;
        Ok(version.to_string())
    }

    /// A version (the current one for `None`) as `GET /room_keys/version` shows it.
    pub fn version_info(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let (version, record) = match version {
            Some(version) => {
                let number = parse_version(version)?;
                (number, self.storage.backup_version(user, number)?.ok_or_else(unknown_version)?)
            }
            None => self
                .storage
                .backup_versions(user)?
                .pop()
                .ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        Ok(json!({
            "version": version.to_string(),
            "algorithm": record.algorithm,
            "auth_data": record.auth_data,
            "count": self.storage.backup_key_count(user, version)?,
            "etag": record.etag.to_string(),
        }))
    }

    /// Replaces a version's auth data; the algorithm cannot change, and a `version` in the body
    /// must be the one in the path.
    pub async fn update_version(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: Value,
        body_version: Option<&str>,
    ) -> Result<()> {
        check_auth_data(&auth_data)?;
        if body_version.is_some_and(|v| v != version) {
            return Err(Error::invalid_param("The version in the body does not match the one in the path"));
        }
        let number = parse_version(version)?;
        let _guard = self.locks.lock(&user.to_owned()).await;
        let mut record = self.storage.backup_version(user, number)?.ok_or_else(unknown_version)?;
        if record.algorithm != algorithm {
            return Err(Error::invalid_param("The algorithm of a backup version cannot change"));
        }
        record.auth_data = auth_data;
        let mut batch = Batch::new();
        batch.put_backup_version(user, number, &record);
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// Deletes a version and its keys.
    pub async fn delete_version(&self, user: &UserId, version: &str) -> Result<()> {
        let number = parse_version(version)?;
        let _guard = self.locks.lock(&user.to_owned()).await;
        self.storage.backup_version(user, number)?.ok_or_else(unknown_version)?;
        let mut batch = Batch::new();
        self.storage.delete_backup_version(&mut batch, user, number)?;
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// Stores room keys in the current version, each only if better than the one it would
    /// replace. Returns `{etag, count}`.
    pub async fn put_keys(&self, user: &UserId, version: &str, keys: RoomKeys) -> Result<Value> {
        let mut parsed = Vec::new();
        for (room, sessions) in keys {
            for (session, data) in sessions {
                let fields: KeyBackupData = serde_json::from_value(data.clone())
                    .map_err(|e| Error::bad_json(format!("Invalid key data for session {session}: {e}")))?;
                parsed.push((room.clone(), session, data, fields));
            }
        }
        let number = parse_version(version)?;
        let _guard = self.locks.lock(&user.to_owned()).await;
        let (number, mut record) = self.current(user, number)?;
        let mut batch = Batch::new();
        let mut changed = false;
        for (room, session, data, new) in parsed {
            let old = self.storage.backup_key(user, number, &room, &session)?;
            let old = old.and_then(|old| serde_json::from_value::<KeyBackupData>(old).ok());
            if old.is_none_or(|old| better(&new, &old)) {
                batch.put_backup_key(user, number, &room, &session, &data);
                changed = true;
            }
        }
        if changed {
            record.etag += 1;
            batch.put_backup_version(user, number, &record);
            self.storage.commit(batch).await?;
        }
        Ok(json!({ "etag": record.etag.to_string(), "count": self.storage.backup_key_count(user, number)? }))
    }

    /// The keys of a version: all, one room's or one session's.
    pub fn get_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<Value> {
        let number = parse_version(version)?;
        self.storage.backup_version(user, number)?.ok_or_else(unknown_version)?;
        if let (Some(room), Some(session)) = (room, session) {
            return self
                .storage
                .backup_key(user, number, room, session)?
                .ok_or_else(|| Error::not_found("No key backed up for this session"));
        }
        let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (room, session, data) in self.storage.backup_keys(user, number, room)? {
            rooms.entry(room.to_string()).or_default().insert(session, data);
        }
        match room {
            Some(room) => Ok(json!({ "sessions": rooms.remove(room.as_str()).unwrap_or_default() })),
            None => {
                let rooms: Map<String, Value> =
                    rooms.into_iter().map(|(room, sessions)| (room, json!({ "sessions": sessions }))).collect();
                Ok(json!({ "rooms": rooms }))
            }
        }
    }

    /// Deletes keys of a version: all, one room's or one session's. Returns `{etag, count}`.
    pub async fn delete_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<Value> {
        let number = parse_version(version)?;
        let _guard = self.locks.lock(&user.to_owned()).await;
        let mut record = self.storage.backup_version(user, number)?.ok_or_else(unknown_version)?;
        let mut batch = Batch::new();
        for (key_room, key_session, _) in self.storage.backup_keys(user, number, room)? {
            if session.is_none_or(|s| s == key_session) {
                batch.delete_backup_key(user, number, &key_room, &key_session);
            }
        }
        if !batch.is_empty() {
            record.etag += 1;
            batch.put_backup_version(user, number, &record);
            self.storage.commit(batch).await?;
        }
        Ok(json!({ "etag": record.etag.to_string(), "count": self.storage.backup_key_count(user, number)? }))
    }

    /// The version if it is the current one; `M_WRONG_ROOM_KEYS_VERSION` (with the current one)
    /// if it is an older one, `M_NOT_FOUND` if it does not exist.
    fn current(&self, user: &UserId, number: u64) -> Result<(u64, BackupVersionRecord)> {
        let versions = self.storage.backup_versions(user)?;
        let current = versions.last().map(|(v, _)| *v);
        match versions.into_iter().find(|(v, _)| *v == number) {
            Some(found) if Some(number) == current => Ok(found),
            Some(_) => Err(Error::new(
                ErrorKind::WrongRoomKeysVersion { current_version: current.map(|v| v.to_string()) },
                "That is not the current backup version",
            )),
            None => Err(unknown_version()),
        }
    }
}

/// Whether a new session key should replace the backed-up one.
fn better(new: &KeyBackupData, old: &KeyBackupData) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

fn parse_version(version: &str) -> Result<u64> {
    version.parse().map_err(|_| unknown_version())
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

fn check_auth_data(auth_data: &Value) -> Result<()> {
    if auth_data.is_object() { Ok(()) } else { Err(Error::bad_json("auth_data must be an object")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> KeyBackupData {
        KeyBackupData { first_message_index, forwarded_count, is_verified, _session_data: Map::new() }
    }

    #[test]
    fn a_key_is_replaced_only_by_a_better_one() {
        let old = data(false, 10, 5);
        assert!(better(&data(true, 11, 6), &old));
        assert!(better(&data(false, 9, 9), &old));
        assert!(better(&data(false, 10, 4), &old));
        assert!(!better(&data(false, 11, 5), &old));
        assert!(!better(&data(false, 10, 6), &old));
        assert!(!better(&data(false, 10, 5), &old));
        let verified = data(true, 10, 5);
        assert!(!better(&data(false, 1, 0), &verified));
        assert!(!better(&data(true, 11, 5), &verified));
    }
}
