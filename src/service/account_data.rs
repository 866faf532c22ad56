//! Account data: per-user JSON objects that clients keep on the server (`m.direct`,
//! `m.ignored_user_list`, settings), global or per room (`m.tag`, `m.fully_read`). Each change is
//! indexed by stream position so that sync sends it once.

use std::sync::Arc;

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{
    locks::{KeyedGuard, KeyedLocks},
    notifier::Notifier,
};
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{Batch, Storage},
};

/// Types only the server writes through this API's endpoints; clients use dedicated ones.
fn server_managed(room: Option<&RoomId>, kind: &str) -> bool {
    match room {
        None => kind == "m.push_rules",
        Some(_) => kind == "m.fully_read",
    }
}

pub struct AccountData {
    storage: Arc<Storage>,
    notifier: Arc<Notifier>,
    locks: KeyedLocks<OwnedUserId>,
}

impl AccountData {
    pub fn new(storage: Arc<Storage>, notifier: Arc<Notifier>) -> Self {
        Self { storage, notifier, locks: KeyedLocks::default() }
    }

    pub fn get(&self, user_id: &UserId, room_id: Option<&RoomId>, kind: &str) -> Result<Value> {
        Ok(self
            .storage
            .account_data(user_id, room_id, kind)?
            .ok_or_else(|| Error::not_found("No account data of this type"))?
            .content)
    }

    /// Sets account data from a client, refusing the types the server manages.
    pub async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<()> {
        if server_managed(room_id, kind) {
            return Err(Error::new(
                ErrorKind::ManagedByServer,
                format!("{kind} is managed by the server and cannot be set here"),
            ));
        }
        if kind.is_empty() {
            return Err(Error::invalid_param("The account data type must not be empty"));
        }
        self.put(user_id, room_id, kind, Value::Object(content)).await
    }

    /// Sets account data, whatever its type (the server's own writes, e.g. `m.fully_read`).
    pub async fn put(&self, user_id: &UserId, room_id: Option<&RoomId>, kind: &str, content: Value) -> Result<()> {
        let _guard = self.lock(user_id).await;
        self.put_locked(user_id, room_id, kind, content).await
    }

    /// Serialises writes of one user's account data (a read-modify-write holds it throughout).
    pub(super) async fn lock(&self, user_id: &UserId) -> KeyedGuard<'_, OwnedUserId> {
        self.locks.lock(&user_id.to_owned()).await
    }

    /// `put` for a caller that holds the user's lock.
    pub(super) async fn put_locked(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        let replaces = self.storage.account_data(user_id, room_id, kind)?.map(|record| record.position);
        let mut batch = Batch::new();
        batch.put_account_data(user_id, room_id, kind, content, replaces);
        self.storage.commit(batch).await?;
        self.notifier.notify(user_id);
        Ok(())
    }
}
