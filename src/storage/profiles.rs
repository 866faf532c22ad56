//! Profile fields of local users.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, key};

impl Storage {
    /// The whole profile, by field name.
    pub fn profile(&self, user_id: &UserId) -> Result<BTreeMap<String, Value>, StorageError> {
        self.scan_json(Column::Profiles, &key::user_prefix(user_id))?
            .into_iter()
            .map(|(k, value)| Ok((key::field_of(&k)?.to_owned(), value)))
            .collect()
    }

    pub fn profile_field(&self, user_id: &UserId, field: &str) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::Profiles, &key::profile_field(user_id, field))
    }
}

impl Batch {
    pub fn put_profile_field(&mut self, user_id: &UserId, field: &str, value: &Value) {
        self.put_json(Column::Profiles, key::profile_field(user_id, field), value);
    }

    pub fn delete_profile_field(&mut self, user_id: &UserId, field: &str) {
        self.delete(Column::Profiles, key::profile_field(user_id, field));
    }
}
