//! Filters clients upload.

use ruma::UserId;
use serde_json::Value;

use super::{Batch, Column, Storage, StorageError, key};

impl Storage {
    pub fn filter(&self, user_id: &UserId, id: &str) -> Result<Option<Value>, StorageError> {
        self.get_json(Column::Filters, &key::filter(user_id, id))
    }
}

impl Batch {
    pub fn put_filter(&mut self, user_id: &UserId, id: &str, filter: &Value) {
        self.put_json(Column::Filters, key::filter(user_id, id), filter);
    }
}
