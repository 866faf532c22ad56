//! `PUT /send/{txnId}`: transactions from other servers. Each PDU goes through the checks on
//! receipt (`inbound`), one at a time and independently: a bad PDU gets its error in the answer
//! and never stops the rest. EDUs feed the same in-memory and stored ephemeral state local users
//! create (typing, receipts, presence, to-device messages), so local clients see them in sync.
//!
//! A transaction is processed once: its answer is stored by origin and ID, and a retry gets it
//! again; transactions of one origin are processed one at a time.

use std::{sync::Arc, time::Duration};

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json, value::RawValue};

use crate::{
    error::{Error, Result},
    service::{Services, presence},
    storage::Batch,
};

/// The spec's limits on one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// How long a remote user counts as typing after their server said so (Synapse's federation
/// timeout for typing).
const REMOTE_TYPING: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
pub struct Transaction {
    #[serde(default)]
    pub pdus: Vec<Box<RawValue>>,
    #[serde(default)]
    pub edus: Vec<Value>,
}

impl Services {
    /// Processes a transaction (once), returning the per-PDU results: `{"pdus": {event_id: {}
    /// or {"error": ...}}}`.
    pub async fn receive_transaction(
        self: &Arc<Self>,
        origin: &ServerName,
        txn_id: &str,
        transaction: Transaction,
    ) -> Result<Value> {
        if transaction.pdus.len() > MAX_PDUS || transaction.edus.len() > MAX_EDUS {
            return Err(Error::bad_json(format!("At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")));
        }
        let _one_at_a_time = self.inbound.transactions.lock(&origin.to_owned()).await;
        if let Some(done) = self.storage.federation_transaction(origin.as_str(), txn_id)? {
            return Ok(done);
        }
        let mut results = Map::new();
        for raw in &transaction.pdus {
            let (event_id, outcome) = self.receive_pdu(origin, raw).await;
            let result = match &outcome {
                Ok(()) => json!({}),
                Err(e) => json!({ "error": error_text(e) }),
            };
            match event_id {
                Some(event_id) => {
                    results.insert(event_id.to_string(), result);
                }
                None => tracing::info!(%origin, error = %result["error"], "dropped an unreadable PDU"),
            }
        }
        for edu in &transaction.edus {
            if let Err(e) = self.receive_edu(origin, edu).await {
                tracing::debug!(%origin, edu_type = %edu["edu_type"], error = %e, "ignored an EDU");
            }
        }
        let answer = json!({ "pdus": results });
        let mut batch = Batch::new();
        batch.put_federation_transaction(origin.as_str(), txn_id, &answer);
        // Without waiting for an fsync (what the PDUs and EDUs changed is durable already): an
        // answer lost in a power cut only has a retry processed again, which changes nothing
        // (events by ID, to-device messages by message ID, typing and receipts by value), while
        // the origin's next transaction waits for this answer.
        self.storage.commit_relaxed(batch)?;
        Ok(answer)
    }

    async fn receive_edu(self: &Arc<Self>, origin: &ServerName, edu: &Value) -> Result<()> {
        let content = edu.get("content").cloned().unwrap_or(Value::Null);
        match edu.get("edu_type").and_then(Value::as_str).unwrap_or_default() {
            "m.typing" => self.receive_typing(origin, &content),
            "m.receipt" => self.receive_receipts(origin, &content).await,
            "m.presence" => {
                self.receive_presence(origin, &content);
                Ok(())
            }
            "m.direct_to_device" => self.receive_to_device(origin, &content).await,
            "m.device_list_update" | "m.signing_key_update" => self.receive_device_list_update(origin, &content).await,
            _ => Ok(()),
        }
    }

    /// A user of `origin`, joined to the room, with the room's ACL allowing `origin`.
    fn remote_member(&self, origin: &ServerName, room_id: &RoomId, user: &UserId) -> Result<()> {
        if user.server_name() != origin {
            return Err(Error::forbidden(format!("{user} is not a user of {origin}")));
        }
        self.check_server_acl(room_id, origin)?;
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if self.rooms.membership_in(&*self.rooms.current_state(&room)?, user)?.as_deref() != Some("join") {
            return Err(Error::forbidden(format!("{user} is not in {room_id}")));
        }
        Ok(())
    }

    fn receive_typing(self: &Arc<Self>, origin: &ServerName, content: &Value) -> Result<()> {
        #[derive(Deserialize)]
        struct Typing {
            room_id: OwnedRoomId,
            user_id: OwnedUserId,
            #[serde(default)]
            typing: bool,
        }
        let typing: Typing = serde_json::from_value(content.clone()).map_err(|e| Error::bad_json(e.to_string()))?;
        self.remote_member(origin, &typing.room_id, &typing.user_id)?;
        let until = self.typing.set(&typing.room_id, &typing.user_id, typing.typing, REMOTE_TYPING);
        self.rooms.notify_members(&typing.room_id, std::iter::empty());
        if let Some(until) = until {
            let (services, room_id) = (Arc::downgrade(self), typing.room_id);
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                if let Some(services) = services.upgrade()
                    && !services.typing.expire(&room_id).is_empty()
                {
                    services.rooms.notify_members(&room_id, std::iter::empty());
                }
            });
        }
        Ok(())
    }

    /// `m.receipt`: `{room_id: {"m.read": {user_id: {"event_ids": [..], "data": {"ts", "thread_id"}}}}}`.
    async fn receive_receipts(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let rooms = content.as_object().ok_or_else(|| Error::bad_json("m.receipt content is not an object"))?;
        for (room_id, by_type) in rooms {
            let Ok(room_id) = RoomId::parse(room_id) else { continue };
            let Some(read) = by_type.get("m.read").and_then(Value::as_object) else { continue };
            for (user, receipt) in read {
                let Ok(user) = UserId::parse(user) else { continue };
                if let Err(e) = self.remote_member(origin, &room_id, &user) {
                    tracing::debug!(%origin, room = %room_id, error = %e, "ignored a receipt");
                    continue;
                }
                let thread = receipt.get("data").and_then(|d| d.get("thread_id")).and_then(Value::as_str);
                let event_ids = receipt.get("event_ids").and_then(Value::as_array).into_iter().flatten();
                for event_id in event_ids.filter_map(Value::as_str).filter_map(|id| EventId::parse(id).ok()) {
                    if let Err(e) = self.rooms.set_receipt(&room_id, &user, "m.read", &event_id, thread).await {
                        tracing::debug!(%origin, room = %room_id, event = %event_id, error = %e, "ignored a receipt");
                    }
                }
            }
        }
        Ok(())
    }

    /// `m.presence`: `{"push": [{user_id, presence, status_msg, last_active_ago, currently_active}]}`,
    /// for users of `origin` only.
    fn receive_presence(&self, origin: &ServerName, content: &Value) {
        for update in content.get("push").and_then(Value::as_array).into_iter().flatten() {
            let Some(user) = update.get("user_id").and_then(Value::as_str).and_then(|u| UserId::parse(u).ok()) else {
                continue;
            };
            if user.server_name() != origin {
                continue;
            }
            let Some(state) = update.get("presence").and_then(Value::as_str).and_then(presence::State::parse) else {
                continue;
            };
            let status_msg = update.get("status_msg").and_then(Value::as_str).map(str::to_owned);
            let last_active_ago = update.get("last_active_ago").and_then(Value::as_u64).unwrap_or(0);
            let currently_active = update.get("currently_active").and_then(Value::as_bool).unwrap_or(false);
            if self.presence.set_remote(&user, state, status_msg, last_active_ago, currently_active) {
                // Local members sharing a room with the user hear of it (federate_presence
                // leaves remote users alone).
                self.notify_peers(&user);
            }
        }
    }

    /// `m.direct_to_device`: messages from a user of `origin` for local devices.
    async fn receive_to_device(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let sender = content
            .get("sender")
            .and_then(Value::as_str)
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| Error::bad_json("m.direct_to_device without a sender"))?;
        if sender.server_name() != origin {
            return Err(Error::forbidden("The sender is not a user of the origin"));
        }
        let kind = content.get("type").and_then(Value::as_str).ok_or_else(|| Error::bad_json("no type"))?;
        let message_id = content.get("message_id").and_then(Value::as_str).unwrap_or_default();
        let messages = content.get("messages").and_then(Value::as_object).cloned().unwrap_or_default();
        let local: Map<String, Value> = messages
            .into_iter()
            .filter(|(user, _)| UserId::parse(user).is_ok_and(|u| u.server_name() == self.config.server_name))
            .collect();
        if local.is_empty() {
            return Ok(());
        }
        self.to_device.receive_remote(&sender, message_id, kind, local).await
    }
}

/// The message of an error, as a transaction's answer gives it.
fn error_text(error: &Error) -> String {
    match error {
        Error::Matrix { message, .. } => message.to_string(),
        other => other.to_string(),
    }
}
