//! Lazy-loaded members already sent to each device, so that incremental syncs do not repeat them
//! (the spec lets a server assume clients remember them; `include_redundant_members` asks for
//! them all the same).
//!
//! Kept in memory, per device: for each room and member, the member event sent and the position of
//! the answer that carried it. As with send-to-device messages, an answer counts as received only
//! once the client syncs from its token or a later one, so a sync retried from an older token (its
//! answer lost) gets the members again. After a restart, an initial sync, or once a device's record
//! grows past `MAX_PER_DEVICE`, members are simply sent again, which the spec allows.
//!
//! Members and event IDs are kept as 64-bit hashes under a key chosen at random when the server
//! starts: 24 bytes an entry instead of two strings, and no one can aim for a collision.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};

/// Members remembered per device before its record is dropped.
const MAX_PER_DEVICE: usize = 20_000;

#[derive(Default)]
struct Device {
    /// Room → hash of member → (hash of member event ID, position of the answer that carried it).
    rooms: HashMap<OwnedRoomId, HashMap<u64, (u64, u64)>>,
    entries: usize,
}

#[derive(Default)]
pub struct SentMembers {
    devices: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), Device>>,
    hasher: RandomState,
}

impl SentMembers {
    /// Whether the device has this member event: sent in an answer at or before `since`.
    pub fn known(
        &self,
        user: &UserId,
        device: &DeviceId,
        room: &RoomId,
        member: &str,
        event_id: &str,
        since: u64,
    ) -> bool {
        let (member, event_id) = (self.hash(member), self.hash(event_id));
        let devices = self.devices.lock().expect("lazy members lock");
        devices
            .get(&(user.to_owned(), device.to_owned()))
            .and_then(|d| d.rooms.get(room))
            .and_then(|members| members.get(&member))
            .is_some_and(|&(sent, at)| sent == event_id && at <= since)
    }

    /// Records member events (member, event ID) sent in an answer at `position`.
    pub fn record<'a>(
        &self,
        user: &UserId,
        device: &DeviceId,
        room: &RoomId,
        sent: impl IntoIterator<Item = (&'a str, &'a str)>,
        position: u64,
    ) {
        let mut devices = self.devices.lock().expect("lazy members lock");
        let record = devices.entry((user.to_owned(), device.to_owned())).or_default();
        let members = record.rooms.entry(room.to_owned()).or_default();
        for (member, event_id) in sent {
            let (member, event_id) = (self.hash(member), self.hash(event_id));
            match members.get_mut(&member) {
                // Sent before: the earliest answer that carried it is what counts.
                Some((known, _)) if *known == event_id => {}
                Some(entry) => *entry = (event_id, position),
                None => {
                    members.insert(member, (event_id, position));
                    record.entries += 1;
                }
            }
        }
        if record.entries > MAX_PER_DEVICE {
            *record = Device::default();
        }
    }

    fn hash(&self, value: &str) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Forgets what a device was sent (it starts again with an initial sync).
    pub fn reset(&self, user: &UserId, device: &DeviceId) {
        self.devices.lock().expect("lazy members lock").remove(&(user.to_owned(), device.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, room_id, user_id};

    use super::SentMembers;

    #[test]
    fn members_count_as_known_once_their_answer_is_acknowledged() {
        let sent = SentMembers::default();
        let (user, device, room) = (user_id!("@a:x"), device_id!("D"), room_id!("!r:x"));
        sent.record(user, device, room, [("@b:x", "$join")], 10);
        assert!(!sent.known(user, device, room, "@b:x", "$join", 9), "a retry from before the answer");
        assert!(sent.known(user, device, room, "@b:x", "$join", 10));
        assert!(!sent.known(user, device, room, "@b:x", "$rename", 10), "another member event");
        assert!(!sent.known(user, device_id!("E"), room, "@b:x", "$join", 10), "another device");
        // Sent again later: still known from the first answer.
        sent.record(user, device, room, [("@b:x", "$join")], 20);
        assert!(sent.known(user, device, room, "@b:x", "$join", 15));
        sent.reset(user, device);
        assert!(!sent.known(user, device, room, "@b:x", "$join", 30));
    }
}
