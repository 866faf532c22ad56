//! Send-to-device messages: stored until the target device syncs past them.

use std::sync::Arc;

use std::collections::BTreeMap;

use ruma::{
    DeviceId, OwnedDeviceId, OwnedServerName, TransactionId, UserId,
    api::federation::transactions::edu::{DirectDeviceContent, DirectDeviceMessages, Edu},
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::{Map, Value};

use super::{
    federation::sender::{Queued, Sender},
    notifier::Notifier,
};
use crate::{
    error::{Error, Result},
    storage::{Batch, Storage, ToDeviceMessage},
};

/// Messages a sync delivers at most; the rest come with the next one.
pub const MAX_PER_SYNC: usize = 100;

pub struct ToDevice {
    storage: Arc<Storage>,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
    sender: Arc<Sender>,
}

impl ToDevice {
    pub fn new(
        storage: Arc<Storage>,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
        sender: Arc<Sender>,
    ) -> Self {
        Self { storage, notifier, server_name, sender }
    }

    /// Queues `messages` (`{user: {device or "*": content}}`) for local devices, once per
    /// transaction ID of the sending device. Messages for users of other servers are queued in
    /// the same write as one `m.direct_to_device` EDU per server.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        kind: &str,
        messages: Map<String, Value>,
    ) -> Result<()> {
        let scope = format!("sendToDevice/{kind}");
        if self.storage.transaction(sender, sender_device, &scope, txn_id)?.is_some() {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put_transaction(sender, sender_device, &scope, txn_id, &Value::Object(Map::new()));
        let mut targets = Vec::new();
        let mut remote: BTreeMap<OwnedServerName, DirectDeviceMessages> = BTreeMap::new();
        for (user, devices) in messages {
            let user = UserId::parse(&user).map_err(|e| Error::bad_json(format!("Invalid user ID {user}: {e}")))?;
            let devices = devices.as_object().ok_or_else(|| Error::bad_json("Each user maps devices to contents"))?;
            if user.server_name() != self.server_name {
                let server = remote.entry(user.server_name().to_owned()).or_default();
                for (device, content) in devices {
                    if !content.is_object() {
                        return Err(Error::bad_json("A to-device message's content is an object"));
                    }
                    let device = DeviceIdOrAllDevices::try_from(device.as_str())
                        .map_err(|e| Error::bad_json(format!("Invalid device ID {device}: {e}")))?;
                    let content = serde_json::value::to_raw_value(content).expect("JSON values serialize");
                    server.entry(user.clone()).or_default().insert(device, Raw::from_json(content));
                }
                continue;
            }
            let known: Vec<OwnedDeviceId> = self.storage.devices(&user)?.into_iter().map(|(id, _)| id).collect();
            for (device, content) in devices {
                if !content.is_object() {
                    return Err(Error::bad_json("A to-device message's content is an object"));
                }
                let chosen: Vec<&OwnedDeviceId> = if device == "*" {
                    known.iter().collect()
                } else {
                    known.iter().filter(|d| d.as_str() == device).collect()
                };
                for device in chosen {
                    let message =
                        ToDeviceMessage { sender: sender.to_owned(), kind: kind.to_owned(), content: content.clone() };
                    batch.put_to_device(&user, device, message);
                }
            }
            targets.push(user);
        }
        let mut queued = Queued::default();
        for (server, messages) in remote {
            let mut content = DirectDeviceContent::new(sender.to_owned(), kind.into(), TransactionId::new());
            content.messages = messages;
            queued.extend(self.sender.queue_edu(&mut batch, [&*server], &Edu::DirectToDevice(content))?);
        }
        self.storage.commit(batch).await?;
        self.notifier.notify_all(targets.iter().map(|u| &**u));
        self.sender.wake(&queued);
        Ok(())
    }

    /// Messages a user of another server sent local users (`m.direct_to_device`), once per
    /// message ID.
    pub async fn receive_remote(
        &self,
        sender: &UserId,
        message_id: &str,
        kind: &str,
        messages: Map<String, Value>,
    ) -> Result<()> {
        let message_id =
            if message_id.is_empty() { crate::service::secrets::random_string(16) } else { message_id.to_owned() };
        self.send(sender, "_federation".into(), &message_id, kind, messages).await
    }

    /// Messages for a device up to a position, deleting those up to `acknowledged` (its previous
    /// sync). Returns the messages and the position of the last delivered if they were cut short.
    pub async fn take(
        &self,
        user: &UserId,
        device: &DeviceId,
        acknowledged: u64,
        until: u64,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        let all = self.storage.to_device_messages(user, device, until)?;
        let (done, pending): (Vec<_>, Vec<_>) = all.into_iter().partition(|(position, _)| *position <= acknowledged);
        if !done.is_empty() {
            let mut batch = Batch::new();
            batch.delete_to_device(user, device, done.into_iter().map(|(position, _)| position));
            self.storage.commit(batch).await?;
        }
        let cut = (pending.len() > MAX_PER_SYNC).then(|| pending[MAX_PER_SYNC - 1].0);
        let events = pending
            .into_iter()
            .take(MAX_PER_SYNC)
            .map(|(_, m)| serde_json::json!({ "sender": m.sender, "type": m.kind, "content": m.content }))
            .collect();
        Ok((events, cut))
    }
}
