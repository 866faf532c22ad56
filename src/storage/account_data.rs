//! Account data: per-user JSON objects, global or per room, and an index of their changes by
//! stream position for sync.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, key};

/// An account data event as stored: its content and the stream position of its last change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountDataRecord {
    pub position: u64,
    pub content: Value,
}

/// One change in the index: which event changed, global (`room: None`) or in a room.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountDataChange {
    pub room: Option<OwnedRoomId>,
    pub kind: String,
}

impl Storage {
    pub fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<AccountDataRecord>, StorageError> {
        self.get_json(Column::AccountData, &key::account_data(user_id, room_id, kind))
    }

    /// Every account data event of a user, global or in one room, as `(type, record)`.
    pub fn all_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
    ) -> Result<Vec<(String, AccountDataRecord)>, StorageError> {
        self.scan_json(Column::AccountData, &key::account_data_prefix(user_id, room_id))?
            .into_iter()
            .map(|(k, record)| Ok((key::account_data_type_of(&k)?.to_owned(), record)))
            .collect()
    }

    /// Account data changes of a user with positions in `(after, until]`, oldest first.
    pub fn account_data_changes(
        &self,
        user_id: &UserId,
        after: u64,
        until: u64,
    ) -> Result<Vec<AccountDataChange>, StorageError> {
        let mut changes = Vec::new();
        let start = key::user_position(user_id, after.saturating_add(1));
        for entry in self.engine.scan_from(Column::AccountDataChanges, &key::user_prefix(user_id), &start) {
            let (k, v) = entry?;
            if key::position_of_user_position(&k)? > until {
                break;
            }
            changes.push(super::decode(Column::AccountDataChanges, &v)?);
        }
        Ok(changes)
    }
}

impl Batch {
    /// Sets an account data event; `replaces` is the position of the change it supersedes, whose
    /// index entry goes. The new change is indexed at the batch's stream position.
    pub fn put_account_data(
        &mut self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Value,
        replaces: Option<u64>,
    ) {
        if let Some(old) = replaces {
            self.delete(Column::AccountDataChanges, key::user_position(user_id, old));
        }
        let record_key = key::account_data(user_id, room_id, kind);
        let change = AccountDataChange { room: room_id.map(ToOwned::to_owned), kind: kind.to_owned() };
        let user = user_id.to_owned();
        self.at_position(move |position, batch| {
            batch.put_json(Column::AccountData, record_key, &AccountDataRecord { position, content });
            batch.put_json(Column::AccountDataChanges, key::user_position(&user, position), &change);
        });
    }
}
