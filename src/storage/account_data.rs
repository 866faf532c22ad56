//! Account data: per-user JSON objects, global or per room.

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, key};

impl Storage {
    pub fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::AccountData, &key::account_data(user_id, room_id, kind))
    }

    /// Every account data event of a user, global or in one room, as `(type, content)`.
    pub fn all_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
    ) -> Result<Vec<(String, Value)>, StorageError> {
        self.scan_json(Column::AccountData, &key::account_data_prefix(user_id, room_id))?
            .into_iter()
            .map(|(k, content)| Ok((key::account_data_type_of(&k)?.to_owned(), content)))
            .collect()
    }
}

impl Batch {
    pub fn put_account_data(&mut self, user_id: &UserId, room_id: Option<&RoomId>, kind: &str, content: &Value) {
        self.put_json(Column::AccountData, key::account_data(user_id, room_id, kind), content);
    }
}
