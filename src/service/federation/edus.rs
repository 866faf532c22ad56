//! What local ephemeral activity sends to other servers, through the [`Sender`](super::sender):
//!
//! - typing (`m.typing`) to the other servers in the room, in memory;
//! - presence (`m.presence`) to the servers sharing a room with the user, in memory;
//! - public read receipts (`m.receipt`, never `m.read.private`) to the other servers in the room,
//!   queued in the receipt's own batch (`Rooms::set_receipt`);
//! - to-device messages for users of other servers (`m.direct_to_device`), one EDU per server,
//!   queued in the messages' own batch (`ToDevice::send`);
//! - device-list updates (`m.device_list_update`, `m.signing_key_update`): see `devices`.

use std::collections::BTreeMap;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedUserId, RoomId, ServerName, UInt, UserId,
    api::federation::transactions::edu::{Edu, PresenceUpdate, ReceiptContent, ReceiptData, ReceiptMap},
    events::receipt::{Receipt, ReceiptThread},
    presence::PresenceState,
};
use serde_json::Value;

use crate::service::Services;

impl Services {
    /// Tells the other servers in a room that a local user started or stopped typing.
    pub fn federate_typing(&self, room_id: &RoomId, user: &UserId, typing: bool) {
        if user.server_name() != self.config.server_name {
            return;
        }
        match self.rooms.remote_servers_in_room(room_id) {
            Ok(servers) => self.federation.sender.queue_typing(servers.iter().map(|s| &**s), room_id, user, typing),
            Err(e) => tracing::warn!(room = %room_id, error = %e, "cannot find the servers in a room"),
        }
    }

    /// Tells the servers sharing a room with a local user about their presence now.
    pub fn federate_presence(&self, user: &UserId) {
        if user.server_name() != self.config.server_name || !self.config.presence.enabled {
            return;
        }
        let servers = match self.rooms.remote_servers_sharing_rooms(user) {
            Ok(servers) if servers.is_empty() => return,
            Ok(servers) => servers,
            Err(e) => {
                tracing::warn!(%user, error = %e, "cannot find the servers sharing a room with a user");
                return;
            }
        };
        if let Some(update) = presence_update(user, &self.presence.content(user)) {
            self.federation.sender.queue_presence(servers.iter().map(|s| &**s), &update);
        }
    }

    /// Tells a server that just joined a room the presence of the room's local members (their
    /// changes reach it from now on; this is what it missed).
    pub fn federate_presence_to(&self, room_id: &RoomId, server: &ServerName) {
        if server == self.config.server_name || !self.config.presence.enabled {
            return;
        }
        let members = match self.storage.room(room_id) {
            Ok(Some(room)) => self.storage.members(room.short_id).unwrap_or_default(),
            _ => return,
        };
        for (user, membership) in members {
            if membership != "join" || user.server_name() != self.config.server_name {
                continue;
            }
            let content = self.presence.content(&user);
            // Nothing to tell of a user who never showed up.
            if content.get("presence").and_then(Value::as_str) == Some("offline") && content.get("status_msg").is_none()
            {
                continue;
            }
            if let Some(update) = presence_update(&user, &content) {
                self.federation.sender.queue_presence([server], &update);
            }
        }
    }
}

/// The `m.presence` update of a user from the content `Presence::content` gives.
pub fn presence_update(user: &UserId, content: &Value) -> Option<PresenceUpdate> {
    let state = match content.get("presence")?.as_str()? {
        "online" => PresenceState::Online,
        "unavailable" => PresenceState::Unavailable,
        _ => PresenceState::Offline,
    };
    let last_active_ago = content.get("last_active_ago").and_then(Value::as_u64).unwrap_or_default();
    let mut update = PresenceUpdate::new(user.to_owned(), state, UInt::new_saturating(last_active_ago));
    update.currently_active = content.get("currently_active").and_then(Value::as_bool).unwrap_or_default();
    update.status_msg = content.get("status_msg").and_then(Value::as_str).map(str::to_owned);
    Some(update)
}

/// The `m.receipt` EDU of one public read receipt; `thread` is empty for an unthreaded one.
pub fn receipt(room_id: &RoomId, user: &UserId, event_id: &EventId, ts: u64, thread: &str) -> Edu {
    let mut data = Receipt::new(MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)));
    data.thread = ReceiptThread::try_from((!thread.is_empty()).then_some(thread)).unwrap_or_default();
    let read: BTreeMap<OwnedUserId, ReceiptData> =
        [(user.to_owned(), ReceiptData::new(data, vec![event_id.to_owned()]))].into();
    Edu::Receipt(ReceiptContent::new([(room_id.to_owned(), ReceiptMap::new(read))].into()))
}
