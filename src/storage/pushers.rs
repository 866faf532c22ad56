//! Pushers: where a user's notifications go (`service::pushers`).

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Batch, Column, Storage, StorageError, key};

/// A pusher as stored; its user, app ID and pushkey are the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PusherRecord {
    /// `http` (the only kind stored for now).
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The client's `data`, `url` and `format` included.
    pub data: Map<String, Value>,
    /// The device whose session created it; it goes with the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<OwnedDeviceId>,
    /// When it was created or last updated (ms), sent to the gateway as `pushkey_ts`.
    pub pushkey_ts: u64,
}

/// A pusher with its key.
#[derive(Clone, Debug)]
pub struct Pusher {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    pub record: PusherRecord,
}

impl Storage {
    /// A user's pushers.
    pub fn pushers(&self, user_id: &UserId) -> Result<Vec<Pusher>, StorageError> {
        self.pushers_under(&key::user_prefix(user_id))
    }

    /// Every pusher of every user (a short list: one per device at most, for those with apps).
    pub fn all_pushers(&self) -> Result<Vec<Pusher>, StorageError> {
        self.pushers_under(b"")
    }

    fn pushers_under(&self, prefix: &[u8]) -> Result<Vec<Pusher>, StorageError> {
        self.scan_json(Column::Pushers, prefix)?
            .into_iter()
            .map(|(k, record)| {
                let (user, app_id, pushkey) = key::pusher_parts(&k)?;
                let user_id = UserId::parse(user).map_err(|e| StorageError::Corrupt(format!("pusher key: {e}")))?;
                Ok(Pusher { user_id, app_id: app_id.to_owned(), pushkey: pushkey.to_owned(), record })
            })
            .collect()
    }

    /// Stages the deletion of the pushers a device created.
    pub fn delete_device_pushers(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<(), StorageError> {
        for pusher in self.pushers(user_id)? {
            if pusher.record.device_id.as_deref() == Some(device_id) {
                batch.delete_pusher(user_id, &pusher.app_id, &pusher.pushkey);
            }
        }
        Ok(())
    }
}

impl Batch {
    pub fn put_pusher(&mut self, user_id: &UserId, app_id: &str, pushkey: &str, record: &PusherRecord) {
        self.put_json(Column::Pushers, key::pusher(user_id, app_id, pushkey), record);
    }

    pub fn delete_pusher(&mut self, user_id: &UserId, app_id: &str, pushkey: &str) {
        self.delete(Column::Pushers, key::pusher(user_id, app_id, pushkey));
    }
}
