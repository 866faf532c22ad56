//! Receipts and send-to-device messages.

use ruma::{DeviceId, OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, decode, key};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub event_id: OwnedEventId,
    pub ts: u64,
    pub position: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptChange {
    pub user: OwnedUserId,
    pub kind: String,
    pub thread: String,
}

/// A receipt with whom and what it is about.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub user: OwnedUserId,
    pub kind: String,
    /// Empty for an unthreaded receipt.
    pub thread: String,
    pub record: ReceiptRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceMessage {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Value,
}

impl Storage {
    pub fn receipt(
        &self,
        short_room: u64,
        user: &UserId,
        kind: &str,
        thread: &str,
    ) -> Result<Option<ReceiptRecord>, StorageError> {
        self.get_json(Column::Receipts, &key::receipt(short_room, user, kind, thread))
    }

    /// Every receipt in a room.
    pub fn receipts(&self, short_room: u64) -> Result<Vec<Receipt>, StorageError> {
        self.scan_json::<ReceiptRecord>(Column::Receipts, &key::room_prefix(short_room))?
            .into_iter()
            .map(|(k, record)| {
                let (user, kind, thread) = key::receipt_parts(&k)?;
                let user = UserId::parse(user).map_err(|e| StorageError::Corrupt(format!("receipts: {e}")))?;
                Ok(Receipt { user, kind: kind.to_owned(), thread: thread.to_owned(), record })
            })
            .collect()
    }

    /// Receipt changes in a room with positions in `(after, until]`.
    pub fn receipt_changes(&self, short_room: u64, after: u64, until: u64) -> Result<Vec<ReceiptChange>, StorageError> {
        let mut changes = Vec::new();
        let start = key::timeline(short_room, after.saturating_add(1));
        for entry in self.engine.scan_from(Column::ReceiptChanges, &key::room_prefix(short_room), &start) {
            let (k, v) = entry?;
            if key::timeline_position_of(&k)? > until {
                break;
            }
            changes.push(decode(Column::ReceiptChanges, &v)?);
        }
        Ok(changes)
    }

    /// Messages waiting for a device with positions up to `until`, oldest first, with positions.
    pub fn to_device_messages(
        &self,
        user: &UserId,
        device: &DeviceId,
        until: u64,
    ) -> Result<Vec<(u64, ToDeviceMessage)>, StorageError> {
        let mut messages = Vec::new();
        for entry in self.engine.scan_prefix(Column::ToDevice, &key::to_device_prefix(user, device)) {
            let (k, v) = entry?;
            let position = key::position_of_to_device(&k)?;
            if position > until {
                break;
            }
            messages.push((position, decode(Column::ToDevice, &v)?));
        }
        Ok(messages)
    }
}

impl Batch {
    /// Sets a receipt, replacing the user's previous one of this type and thread. The record's
    /// position is the batch's stream position, whatever `receipt` says.
    pub fn put_receipt(&mut self, short_room: u64, receipt: Receipt, replaces: Option<u64>) {
        if let Some(old) = replaces {
            self.delete(Column::ReceiptChanges, key::timeline(short_room, old));
        }
        let record_key = key::receipt(short_room, &receipt.user, &receipt.kind, &receipt.thread);
        let change = ReceiptChange { user: receipt.user, kind: receipt.kind, thread: receipt.thread };
        let mut record = receipt.record;
        self.at_position(move |position, batch| {
            record.position = position;
            batch.put_json(Column::Receipts, record_key, &record);
            batch.put_json(Column::ReceiptChanges, key::timeline(short_room, position), &change);
        });
    }

    /// Queues a message for a device at this batch's stream position.
    pub fn put_to_device(&mut self, user: &UserId, device: &DeviceId, message: ToDeviceMessage) {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.at_position(move |position, batch| {
            batch.put_json(Column::ToDevice, key::to_device(&user, &device, position), &message);
        });
    }

    /// Deletes messages a device has received.
    pub fn delete_to_device(&mut self, user: &UserId, device: &DeviceId, positions: impl IntoIterator<Item = u64>) {
        for position in positions {
            self.delete(Column::ToDevice, key::to_device(user, device, position));
        }
    }
}
