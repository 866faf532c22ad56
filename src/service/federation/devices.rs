//! End-to-end encryption across servers.
//!
//! - **Asking.** `/keys/query` and `/keys/claim` for users of other servers go to their servers
//!   (`/user/keys/query`, `/user/keys/claim`), all at once, each within the client's `timeout`;
//!   a server that fails or is too slow is named in `failures` (as Synapse: `status`, `message`).
//!   What comes back is kept only for users of the server that answered.
//! - **Telling.** [`Services::run_device_list_updates`] follows the local device-list changes
//!   (`DeviceLists::subscribe`/`local_changes`) and queues an `m.device_list_update` EDU per
//!   changed device (`m.signing_key_update` for cross-signing keys) for the servers sharing a room
//!   with the user. The position reached is kept in `Meta`, so changes committed just before a
//!   restart still go out after it. `prev_id` is left empty: a receiver that cannot tell whether
//!   it missed something refetches the list (`/user/devices`), which we serve.
//! - **Hearing.** An inbound `m.device_list_update` or `m.signing_key_update` about a user of the
//!   origin is written as a change of that user's device list, so the syncs of local users sharing
//!   a room with them report the user in `device_lists.changed`; their clients then query the keys
//!   again, which goes to the user's server.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::client::Signing;
use crate::{
    error::{Error, RemoteError, Result},
    service::Services,
    storage::Batch,
};

/// How long a client waits for other servers when it names no `timeout` (the spec's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where `Meta` keeps the position of the last local device-list change sent to other servers.
const SENT_META: &str = "device_lists_federated";

/// Requests grouped by the server of their users.
fn by_server<T: Clone>(request: &BTreeMap<OwnedUserId, T>) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut grouped: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in request {
        grouped.entry(user.server_name().to_owned()).or_default().insert(user.clone(), value.clone());
    }
    grouped
}

/// A server's failure as `failures` shows it.
fn failure(error: &Error) -> Value {
    match error {
        Error::Remote(remote) => json!({ "status": remote.status.unwrap_or(503), "message": remote.message }),
        other => json!({ "status": 503, "message": other.to_string() }),
    }
}

/// Copies the entries of `reply[field]` about users of `server` into `answer[field]`.
fn merge_users(answer: &mut Value, reply: &Value, field: &str, server: &OwnedServerName) {
    let Some(entries) = reply.get(field).and_then(Value::as_object) else { return };
    let Some(target) = answer.get_mut(field).and_then(Value::as_object_mut) else { return };
    for (user, value) in entries {
        if UserId::parse(user).is_ok_and(|u| u.server_name() == server) {
            target.insert(user.clone(), value.clone());
        }
    }
}

impl Services {
    /// Asks each server, at once, within `timeout`; the answers by server.
    async fn ask_servers<T: serde::Serialize + Send + 'static>(
        self: &Arc<Self>,
        path: &'static str,
        field: &'static str,
        request: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>,
        timeout: Duration,
    ) -> Vec<(OwnedServerName, Result<Value>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (server, users) in request {
            let services = self.clone();
            asks.spawn(async move {
                let body = json!({ field: users });
                let client = &services.federation.client;
                let reply = client.request_json(&server, http::Method::POST, path, Some(&body), Signing::Signed);
                let reply = match tokio::time::timeout(timeout, reply).await {
                    Ok(reply) => reply,
                    Err(_) => Err(Error::Remote(Box::new(RemoteError {
                        destination: server.to_string(),
                        status: Some(504),
                        errcode: None,
                        message: "Timed out waiting for the server".to_owned(),
                    }))),
                };
                (server, reply)
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = asks.join_next().await {
            match answer {
                Ok(answer) => answers.push(answer),
                Err(e) => tracing::error!(error = %e, "a request to another server panicked"),
            }
        }
        answers
    }

    /// `/keys/query` for a local user: local users' keys from `E2ee::query`, other servers'
    /// users' keys from their servers.
    pub async fn query_keys(
        self: &Arc<Self>,
        requester: &UserId,
        request: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> Result<Value> {
        let mut grouped = by_server(request);
        let local = grouped.remove(&self.config.server_name).unwrap_or_default();
        let mut answer = self.e2ee.query(Some(requester), &local)?;
        let path = "/_matrix/federation/v1/user/keys/query";
        for (server, reply) in self.ask_servers(path, "device_keys", grouped, timeout).await {
            match reply {
                Ok(reply) => {
                    for field in ["device_keys", "master_keys", "self_signing_keys"] {
                        merge_users(&mut answer, &reply, field, &server);
                    }
                }
                Err(e) => {
                    tracing::info!(%server, error = %e, "a server did not answer a key query");
                    answer["failures"][server.as_str()] = failure(&e);
                }
            }
        }
        Ok(answer)
    }

    /// `/keys/claim` for a local user: one-time keys of local devices from `E2ee::claim`, of other
    /// servers' devices from their servers.
    pub async fn claim_keys(
        self: &Arc<Self>,
        request: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
        timeout: Duration,
    ) -> Result<Value> {
        let mut grouped = by_server(request);
        let local = grouped.remove(&self.config.server_name).unwrap_or_default();
        let mut answer = self.e2ee.claim(&local).await?;
        let path = "/_matrix/federation/v1/user/keys/claim";
        for (server, reply) in self.ask_servers(path, "one_time_keys", grouped, timeout).await {
            match reply {
                Ok(reply) => merge_users(&mut answer, &reply, "one_time_keys", &server),
                Err(e) => {
                    tracing::info!(%server, error = %e, "a server did not answer a key claim");
                    answer["failures"][server.as_str()] = failure(&e);
                }
            }
        }
        Ok(answer)
    }

    /// `/user/keys/query` from another server: our users' keys (others are left out), with only
    /// their owners' signatures.
    pub fn serve_key_query(&self, request: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>) -> Result<Value> {
        let local: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>> = request
            .iter()
            .filter(|(user, _)| user.server_name() == self.config.server_name)
            .map(|(user, devices)| (user.clone(), devices.clone()))
            .collect();
        let mut answer = self.e2ee.query(None, &local)?;
        if let Some(answer) = answer.as_object_mut() {
            answer.remove("failures");
            answer.remove("user_signing_keys");
        }
        Ok(answer)
    }

    /// `/user/keys/claim` from another server: one-time keys of our users' devices.
    pub async fn serve_key_claim(
        &self,
        request: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<Value> {
        let local: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>> = request
            .iter()
            .filter(|(user, _)| user.server_name() == self.config.server_name)
            .map(|(user, devices)| (user.clone(), devices.clone()))
            .collect();
        let mut answer = self.e2ee.claim(&local).await?;
        if let Some(answer) = answer.as_object_mut() {
            answer.remove("failures");
        }
        Ok(answer)
    }

    /// `m.device_list_update` and `m.signing_key_update` from `origin`: a change of one of its
    /// users' device lists, for the local users sharing a room with them.
    pub async fn receive_device_list_update(&self, origin: &ruma::ServerName, content: &Value) -> Result<()> {
        let user = content
            .get("user_id")
            .and_then(Value::as_str)
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| Error::bad_json("A device-list update without a user"))?;
        if user.server_name() != origin {
            return Err(Error::forbidden("The user is not a user of the origin"));
        }
        let shares_a_room = self.storage.memberships(&user)?.iter().any(|(_, record)| record.membership == "join");
        if !shares_a_room {
            return Ok(());
        }
        let device = content.get("device_id").and_then(Value::as_str).map(OwnedDeviceId::from);
        let deleted = content.get("deleted").and_then(Value::as_bool).unwrap_or(false);
        let mut batch = Batch::new();
        self.device_lists.stage(&mut batch, &user, device.as_deref(), deleted)?;
        self.storage.commit(batch).await?;
        self.device_lists.committed(&user);
        Ok(())
    }

    /// Sends local device-list changes to the servers sharing a room with their users, from the
    /// last position sent, until shutdown. Holds the services weakly.
    pub async fn run_device_list_updates(services: Weak<Self>) {
        let (mut changed, mut sent) = match services.upgrade() {
            Some(services) => {
                let sent = match services.storage.meta(SENT_META) {
                    Ok(Some(bytes)) if bytes.len() == 8 => u64::from_be_bytes(bytes.try_into().expect("8 bytes")),
                    // First start: changes from before it concerned nobody elsewhere.
                    _ => services.storage.stream_position(),
                };
                (services.device_lists.subscribe(), sent)
            }
            None => return,
        };
        loop {
            let Some(services) = services.upgrade() else { return };
            let until = *changed.borrow_and_update();
            if until > sent {
                match services.send_device_list_changes(sent, until).await {
                    Ok(()) => sent = until,
                    Err(e) => tracing::warn!(error = %e, "cannot send device-list changes to other servers"),
                }
            }
            let mut shutdown = services.shutdown.subscribe();
            drop(services);
            tokio::select! {
                changed = changed.changed() => if changed.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Queues the EDUs of the local changes in `(after, until]` and records `until` as sent, in
    /// one batch.
    async fn send_device_list_changes(&self, after: u64, until: u64) -> Result<()> {
        let mut batch = Batch::new();
        let mut queued = super::sender::Queued::default();
        let mut servers_of: HashMap<OwnedUserId, Vec<OwnedServerName>> = HashMap::new();
        for (position, change) in self.device_lists.local_changes(after, until)? {
            if change.user.server_name() != self.config.server_name {
                continue;
            }
            if !servers_of.contains_key(&change.user) {
                let servers = self.rooms.remote_servers_sharing_rooms(&change.user)?.into_iter().collect();
                servers_of.insert(change.user.clone(), servers);
            }
            let servers = &servers_of[&change.user];
            if servers.is_empty() {
                continue;
            }
            let edu = match &change.device {
                Some(device) => {
                    let mut content = Map::new();
                    content.insert("user_id".into(), json!(change.user));
                    content.insert("device_id".into(), json!(device));
                    content.insert("stream_id".into(), json!(position));
                    content.insert("prev_id".into(), json!([]));
                    if change.deleted {
                        content.insert("deleted".into(), json!(true));
                    } else {
                        if let Some(keys) = self.storage.device_keys(&change.user, device)? {
                            content.insert("keys".into(), Value::Object(keys));
                        }
                        if let Some(record) = self.storage.device(&change.user, device)?
                            && let Some(name) = record.display_name
                        {
                            content.insert("device_display_name".into(), json!(name));
                        }
                    }
                    json!({ "edu_type": "m.device_list_update", "content": content })
                }
                None => {
                    let devices = self.e2ee.user_devices(&change.user)?;
                    let mut content = json!({ "user_id": change.user });
                    for field in ["master_key", "self_signing_key"] {
                        if let Some(key) = devices.get(field) {
                            content[field] = key.clone();
                        }
                    }
                    json!({ "edu_type": "m.signing_key_update", "content": content })
                }
            };
            queued.extend(self.federation.sender.queue_edu(&mut batch, servers.iter().map(|s| &**s), &edu)?);
        }
        batch.put_meta(SENT_META, until.to_be_bytes().to_vec());
        self.storage.commit(batch).await?;
        self.federation.sender.wake(&queued);
        Ok(())
    }
}
