//! End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and the
//! signatures of keys, the device-list change stream, and server-side key backups.

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Batch, Column, Storage, StorageError, decode, key, sequence::decode_u64};

/// A JSON object as stored: keys and signatures are kept exactly as uploaded.
pub type JsonObject = Map<String, Value>;

/// A device's fallback key of one algorithm.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FallbackKeyRecord {
    pub key_id: String,
    pub key: Value,
    /// Handed out by `/keys/claim` since it was uploaded.
    #[serde(default)]
    pub used: bool,
}

/// A stored one-time key.
#[derive(Clone, Debug, PartialEq)]
pub struct OneTimeKey {
    pub algorithm: String,
    /// The device's upload it came in: keys are claimed in upload order.
    pub upload: u64,
    pub key_id: String,
    pub key: Value,
}

/// A change of a user's device list: a device's keys uploaded or changed, a device renamed or
/// deleted, cross-signing keys or signatures uploaded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceListChange {
    pub user: OwnedUserId,
    /// The device that changed; `None` for cross-signing keys and signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<OwnedDeviceId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Set when only this user is to be told: `user` is the owner of a key that `only_for` signed
    /// with their user-signing key, which nobody else sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_for: Option<OwnedUserId>,
}

/// A server-side key backup version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVersionRecord {
    pub algorithm: String,
    pub auth_data: Value,
    /// Changes whenever the backed-up keys change.
    pub etag: u64,
}

impl Storage {
    // ----- device keys -----

    pub fn device_keys(&self, user: &UserId, device: &DeviceId) -> Result<Option<Map<String, Value>>, StorageError> {
        self.get_json(Column::DeviceKeys, &key::user_device(user, device))
    }

    /// The identity keys of every device of a user that uploaded some, by device ID.
    pub fn all_device_keys(&self, user: &UserId) -> Result<Vec<(OwnedDeviceId, JsonObject)>, StorageError> {
        self.scan_json(Column::DeviceKeys, &key::user_prefix(user))?
            .into_iter()
            .map(|(k, keys)| Ok((key::device_of(&k)?.into(), keys)))
            .collect()
    }

    /// A device's one-time keys, by algorithm then upload.
    pub fn one_time_keys(&self, user: &UserId, device: &DeviceId) -> Result<Vec<OneTimeKey>, StorageError> {
        self.scan_json::<Value>(Column::OneTimeKeys, &key::user_device(user, device))?
            .into_iter()
            .map(|(k, value)| {
                let (algorithm, upload, key_id) = key::one_time_key_parts(&k)?;
                Ok(OneTimeKey { algorithm: algorithm.to_owned(), upload, key_id: key_id.to_owned(), key: value })
            })
            .collect()
    }

    /// The device's oldest one-time key of an algorithm.
    pub fn first_one_time_key(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<OneTimeKey>, StorageError> {
        let Some(entry) =
            self.engine.scan_prefix(Column::OneTimeKeys, &key::device_algorithm(user, device, algorithm)).next()
        else {
            return Ok(None);
        };
        let (k, v) = entry?;
        let (algorithm, upload, key_id) = key::one_time_key_parts(&k)?;
        Ok(Some(OneTimeKey {
            algorithm: algorithm.to_owned(),
            upload,
            key_id: key_id.to_owned(),
            key: decode(Column::OneTimeKeys, &v)?,
        }))
    }

    /// How many one-time keys a device has, by algorithm.
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>, StorageError> {
        let mut counts = BTreeMap::new();
        for entry in self.engine.scan_prefix(Column::OneTimeKeys, &key::user_device(user, device)) {
            let (k, _) = entry?;
            let (algorithm, _, _) = key::one_time_key_parts(&k)?;
            *counts.entry(algorithm.to_owned()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// A device's fallback keys, by algorithm.
    pub fn fallback_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<(String, FallbackKeyRecord)>, StorageError> {
        self.scan_json(Column::FallbackKeys, &key::user_device(user, device))?
            .into_iter()
            .map(|(k, record)| Ok((key::algorithm_of(&k)?.to_owned(), record)))
            .collect()
    }

    pub fn fallback_key(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<FallbackKeyRecord>, StorageError> {
        self.get_json(Column::FallbackKeys, &key::device_algorithm(user, device, algorithm))
    }

    // ----- cross-signing -----

    /// A user's cross-signing key of one usage (`master`, `self_signing`, `user_signing`).
    pub fn cross_signing_key(&self, user: &UserId, usage: &str) -> Result<Option<Map<String, Value>>, StorageError> {
        self.get_json(Column::CrossSigningKeys, &key::cross_signing_key(user, usage))
    }

    /// The signatures of one key (`target_key`: a device ID or a master key's ID), by signer.
    pub fn key_signatures(
        &self,
        target: &UserId,
        target_key: &str,
    ) -> Result<Vec<(OwnedUserId, JsonObject)>, StorageError> {
        self.scan_json(Column::KeySignatures, &key::key_signatures_of(target, target_key))?
            .into_iter()
            .map(|(k, signatures)| {
                let signer = UserId::parse(key::signer_of(&k)?)
                    .map_err(|e| StorageError::Corrupt(format!("key_signatures: {e}")))?;
                Ok((signer, signatures))
            })
            .collect()
    }

    // ----- device-list changes -----

    /// Device-list changes with positions in `(after, until]`, oldest first.
    pub fn device_list_changes(&self, after: u64, until: u64) -> Result<Vec<(u64, DeviceListChange)>, StorageError> {
        let mut changes = Vec::new();
        let start = key::short(after.saturating_add(1));
        for entry in self.engine.scan_from(Column::DeviceListChanges, &[], &start) {
            let (k, v) = entry?;
            let position = key::short_of(&k)?;
            if position > until {
                break;
            }
            changes.push((position, decode(Column::DeviceListChanges, &v)?));
        }
        Ok(changes)
    }

    /// The position of a user's latest public device-list change.
    pub fn device_list_latest(&self, user: &UserId) -> Result<Option<u64>, StorageError> {
        self.engine.get(Column::DeviceListLatest, &key::user(user))?.map(|b| decode_u64(&b)).transpose()
    }

    // ----- key backup -----

    /// A user's backup versions, oldest first.
    pub fn backup_versions(&self, user: &UserId) -> Result<Vec<(u64, BackupVersionRecord)>, StorageError> {
        self.scan_json(Column::BackupVersions, &key::user_prefix(user))?
            .into_iter()
            .map(|(k, record)| Ok((key::version_of(&k)?, record)))
            .collect()
    }

    pub fn backup_version(&self, user: &UserId, version: u64) -> Result<Option<BackupVersionRecord>, StorageError> {
        self.get_json(Column::BackupVersions, &key::backup_version(user, version))
    }

    /// The backed-up sessions of a version, of one room when given, as `(room, session, data)`.
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: u64,
        room: Option<&RoomId>,
    ) -> Result<Vec<(OwnedRoomId, String, Value)>, StorageError> {
        let prefix = match room {
            Some(room) => key::backup_room(user, version, room),
            None => key::backup_version(user, version),
        };
        self.scan_json::<Value>(Column::BackupKeys, &prefix)?
            .into_iter()
            .map(|(k, data)| {
                let (room, session) = key::backup_key_parts(&k)?;
                let room = RoomId::parse(room).map_err(|e| StorageError::Corrupt(format!("backup_keys: {e}")))?;
                Ok((room, session.to_owned(), data))
            })
            .collect()
    }

    pub fn backup_key(
        &self,
        user: &UserId,
        version: u64,
        room: &RoomId,
        session: &str,
    ) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::BackupKeys, &key::backup_key(user, version, room, session))
    }

    /// How many sessions a backup version holds.
    pub fn backup_key_count(&self, user: &UserId, version: u64) -> Result<u64, StorageError> {
        let mut count = 0;
        for entry in self.engine.scan_prefix(Column::BackupKeys, &key::backup_version(user, version)) {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    /// Stages the deletion of everything end-to-end encryption holds for a device: its identity
    /// keys, one-time and fallback keys, and the signatures of its keys.
    pub fn delete_device_keys(&self, batch: &mut Batch, user: &UserId, device: &DeviceId) -> Result<(), StorageError> {
        batch.delete(Column::DeviceKeys, key::user_device(user, device));
        for column in [Column::OneTimeKeys, Column::FallbackKeys] {
            for entry in self.engine.scan_prefix(column, &key::user_device(user, device)) {
                batch.delete(column, entry?.0);
            }
        }
        for entry in self.engine.scan_prefix(Column::KeySignatures, &key::key_signatures_of(user, device.as_str())) {
            batch.delete(Column::KeySignatures, entry?.0);
        }
        Ok(())
    }

    /// Stages the deletion of a backup version and its keys.
    pub fn delete_backup_version(&self, batch: &mut Batch, user: &UserId, version: u64) -> Result<(), StorageError> {
        for entry in self.engine.scan_prefix(Column::BackupKeys, &key::backup_version(user, version)) {
            batch.delete(Column::BackupKeys, entry?.0);
        }
        batch.delete(Column::BackupVersions, key::backup_version(user, version));
        Ok(())
    }
}

impl Batch {
    pub fn put_device_keys(&mut self, user: &UserId, device: &DeviceId, keys: &Map<String, Value>) {
        self.put_json(Column::DeviceKeys, key::user_device(user, device), keys);
    }

    pub fn put_one_time_key(&mut self, user: &UserId, device: &DeviceId, otk: &OneTimeKey) {
        let k = key::one_time_key(user, device, &otk.algorithm, otk.upload, &otk.key_id);
        self.put_json(Column::OneTimeKeys, k, &otk.key);
    }

    pub fn delete_one_time_key(&mut self, user: &UserId, device: &DeviceId, otk: &OneTimeKey) {
        self.delete(Column::OneTimeKeys, key::one_time_key(user, device, &otk.algorithm, otk.upload, &otk.key_id));
    }

    pub fn put_fallback_key(&mut self, user: &UserId, device: &DeviceId, algorithm: &str, record: &FallbackKeyRecord) {
        self.put_json(Column::FallbackKeys, key::device_algorithm(user, device, algorithm), record);
    }

    pub fn put_cross_signing_key(&mut self, user: &UserId, usage: &str, key: &Map<String, Value>) {
        self.put_json(Column::CrossSigningKeys, key::cross_signing_key(user, usage), key);
    }

    /// Sets the signatures `signer` made of one key, replacing those it made before.
    pub fn put_key_signatures(
        &mut self,
        target: &UserId,
        target_key: &str,
        signer: &UserId,
        sigs: &Map<String, Value>,
    ) {
        self.put_json(Column::KeySignatures, key::key_signature(target, target_key, signer), sigs);
    }

    pub fn delete_key_signatures(&mut self, target: &UserId, target_key: &str, signer: &UserId) {
        self.delete(Column::KeySignatures, key::key_signature(target, target_key, signer));
    }

    /// Records a device-list change at this batch's stream position. A public change replaces
    /// the user's previous one (`replaces`, from `Storage::device_list_latest`): a reader after
    /// it sees the newer one anyway.
    pub fn put_device_list_change(&mut self, change: DeviceListChange, replaces: Option<u64>) {
        let public = change.only_for.is_none();
        if public && let Some(old) = replaces {
            self.delete(Column::DeviceListChanges, key::short(old));
        }
        self.at_position(move |position, batch| {
            if public {
                batch.put(Column::DeviceListLatest, key::user(&change.user), position.to_be_bytes().to_vec());
            }
            batch.put_json(Column::DeviceListChanges, key::short(position), &change);
        });
    }

    pub fn put_backup_version(&mut self, user: &UserId, version: u64, record: &BackupVersionRecord) {
        self.put_json(Column::BackupVersions, key::backup_version(user, version), record);
    }

    pub fn put_backup_key(&mut self, user: &UserId, version: u64, room: &RoomId, session: &str, data: &Value) {
        self.put_json(Column::BackupKeys, key::backup_key(user, version, room, session), data);
    }

    pub fn delete_backup_key(&mut self, user: &UserId, version: u64, room: &RoomId, session: &str) {
        self.delete(Column::BackupKeys, key::backup_key(user, version, room, session));
    }
}
