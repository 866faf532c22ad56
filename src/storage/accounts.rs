//! Accounts, devices and tokens.

use std::collections::HashMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{Batch, Column, Storage, StorageError, key};

/// A local account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserRecord {
    /// argon2id PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub guest: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// The user asked for their content to be erased when deactivating.
    #[serde(default)]
    pub erased: bool,
}

/// SHA-256 of a token; tokens themselves are never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(Self(bytes))
    }
}

/// A device of a local user and the tokens that belong to it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub access_token: Option<TokenHash>,
    pub refresh_token: Option<TokenHash>,
    /// The refresh token that the current one replaced; it stays valid until the new tokens are
    /// first used, so a client that lost the refresh response can repeat it.
    #[serde(default)]
    pub previous_refresh_token: Option<TokenHash>,
}

impl DeviceRecord {
    fn tokens(&self) -> impl Iterator<Item = (Column, TokenHash)> {
        let access = self.access_token.map(|t| (Column::AccessTokens, t));
        let refresh =
            [self.refresh_token, self.previous_refresh_token].into_iter().flatten().map(|t| (Column::RefreshTokens, t));
        access.into_iter().chain(refresh)
    }
}

/// When and from where a device was last used.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LastSeen {
    pub ts: u64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Milliseconds since the epoch; `None` for tokens that do not expire.
    pub expires_ts: Option<u64>,
    /// Set on a token minted by `/refresh`: its first use revokes the refresh token it replaced.
    #[serde(default)]
    pub revokes_on_use: Option<TokenHash>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

impl Storage {
    pub fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>, StorageError> {
        self.get_json(Column::Users, &key::user(user_id))
    }

    pub fn user_exists(&self, user_id: &UserId) -> Result<bool, StorageError> {
        self.exists(Column::Users, &key::user(user_id))
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StorageError> {
        self.get_json(Column::Devices, &key::user_device(user_id, device_id))
    }

    /// Every device of a user, ordered by device ID.
    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>, StorageError> {
        self.scan_json(Column::Devices, &key::user_prefix(user_id))?
            .into_iter()
            .map(|(k, record)| Ok((key::device_of(&k)?.into(), record)))
            .collect()
    }

    pub fn last_seen(&self, user_id: &UserId) -> Result<HashMap<OwnedDeviceId, LastSeen>, StorageError> {
        self.scan_json(Column::DeviceLastSeen, &key::user_prefix(user_id))?
            .into_iter()
            .map(|(k, seen)| Ok((key::device_of(&k)?.into(), seen)))
            .collect()
    }

    pub fn access_token(&self, hash: &TokenHash) -> Result<Option<AccessTokenRecord>, StorageError> {
        self.get_json(Column::AccessTokens, &key::token(&hash.0))
    }

    pub fn refresh_token(&self, hash: &TokenHash) -> Result<Option<RefreshTokenRecord>, StorageError> {
        self.get_json(Column::RefreshTokens, &key::token(&hash.0))
    }
}

impl Batch {
    pub fn put_user(&mut self, user_id: &UserId, record: &UserRecord) {
        self.put_json(Column::Users, key::user(user_id), record);
    }

    pub fn put_device(&mut self, user_id: &UserId, device_id: &DeviceId, record: &DeviceRecord) {
        self.put_json(Column::Devices, key::user_device(user_id, device_id), record);
    }

    /// Deletes a device with everything hanging off it: its tokens and its last-seen entry.
    pub fn delete_device(&mut self, user_id: &UserId, device_id: &DeviceId, record: &DeviceRecord) {
        for (column, token) in record.tokens() {
            self.delete(column, key::token(&token.0));
        }
        self.delete(Column::DeviceLastSeen, key::user_device(user_id, device_id));
        self.delete(Column::Devices, key::user_device(user_id, device_id));
    }

    pub fn put_last_seen(&mut self, user_id: &UserId, device_id: &DeviceId, seen: &LastSeen) {
        self.put_json(Column::DeviceLastSeen, key::user_device(user_id, device_id), seen);
    }

    pub fn put_access_token(&mut self, hash: &TokenHash, record: &AccessTokenRecord) {
        self.put_json(Column::AccessTokens, key::token(&hash.0), record);
    }

    pub fn delete_access_token(&mut self, hash: &TokenHash) {
        self.delete(Column::AccessTokens, key::token(&hash.0));
    }

    pub fn put_refresh_token(&mut self, hash: &TokenHash, record: &RefreshTokenRecord) {
        self.put_json(Column::RefreshTokens, key::token(&hash.0), record);
    }

    pub fn delete_refresh_token(&mut self, hash: &TokenHash) {
        self.delete(Column::RefreshTokens, key::token(&hash.0));
    }
}
