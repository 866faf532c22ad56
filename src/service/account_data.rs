//! Account data: per-user JSON objects that clients keep on the server (`m.direct`,
//! `m.ignored_user_list`, client settings), global or per room.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::{Map, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    storage::{Batch, Storage},
};

/// Types the server manages itself; clients use their own endpoints for them.
const SERVER_MANAGED: [&str; 2] = ["m.push_rules", "m.fully_read"];

pub struct AccountData {
    storage: Arc<Storage>,
}

impl AccountData {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }

    pub fn get(&self, user_id: &UserId, room_id: Option<&RoomId>, kind: &str) -> Result<Value> {
        self.storage
            .account_data(user_id, room_id, kind)?
            .ok_or_else(|| Error::not_found("No account data of this type"))
    }

    pub async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<()> {
        if SERVER_MANAGED.contains(&kind) {
            return Err(Error::new(
                ErrorKind::ManagedByServer,
                format!("{kind} is managed by the server and cannot be set here"),
            ));
        }
        if kind.is_empty() {
            return Err(Error::invalid_param("The account data type must not be empty"));
        }
        let mut batch = Batch::new();
        batch.put_account_data(user_id, room_id, kind, &Value::Object(content));
        self.storage.commit(batch).await?;
        Ok(())
    }
}
