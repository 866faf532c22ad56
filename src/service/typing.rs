//! Typing notifications: in memory only, with a timeout after which a user stops typing.
//!
//! Each change bumps the ephemeral serial (the second half of a sync token), which starts from the
//! clock at process start so that it keeps growing across restarts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

/// Longest a client may claim to be typing without saying so again.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts in-memory changes (typing, presence) for sync tokens.
pub struct EphemeralSerial(AtomicU64);

impl Default for EphemeralSerial {
    fn default() -> Self {
        Self(AtomicU64::new(super::now_ms().saturating_mul(1000)))
    }
}

impl EphemeralSerial {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }
}

#[derive(Default)]
struct RoomTyping {
    until: HashMap<OwnedUserId, Instant>,
    /// Serial of the last change.
    serial: u64,
}

pub struct Typing {
    serial: Arc<EphemeralSerial>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

impl Typing {
    pub fn new(serial: Arc<EphemeralSerial>) -> Self {
        Self { serial, rooms: Mutex::new(HashMap::new()) }
    }

    /// Starts or stops a user typing. Returns when the typing runs out, for the caller to expire
    /// it then (`expire`).
    pub fn set(&self, room: &RoomId, user: &UserId, typing: bool, timeout: Duration) -> Option<Instant> {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let entry = rooms.entry(room.to_owned()).or_default();
        let until = typing.then(|| Instant::now() + timeout.min(MAX_TIMEOUT));
        let changed = match until {
            Some(until) => entry.until.insert(user.to_owned(), until).is_none(),
            None => entry.until.remove(user).is_some(),
        };
        if changed {
            entry.serial = self.serial.next();
        }
        until
    }

    /// Drops typing that has run out; returns who stopped (for clients and other servers to
    /// hear of it).
    pub fn expire(&self, room: &RoomId) -> Vec<OwnedUserId> {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let Some(entry) = rooms.get_mut(room) else { return Vec::new() };
        let now = Instant::now();
        let expired: Vec<OwnedUserId> =
            entry.until.iter().filter(|(_, until)| **until <= now).map(|(user, _)| user.clone()).collect();
        entry.until.retain(|_, until| *until > now);
        if !expired.is_empty() {
            entry.serial = self.serial.next();
        }
        if entry.until.is_empty() && expired.is_empty() {
            rooms.remove(room);
        }
        expired
    }

    /// Who is typing in a room, and the serial of the last change.
    pub fn in_room(&self, room: &RoomId) -> (Vec<OwnedUserId>, u64) {
        let rooms = self.rooms.lock().expect("typing lock");
        let Some(entry) = rooms.get(room) else { return (Vec::new(), 0) };
        let now = Instant::now();
        let mut users: Vec<OwnedUserId> =
            entry.until.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect();
        users.sort();
        (users, entry.serial)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use ruma::{room_id, user_id};

    use super::*;

    #[test]
    fn typing_starts_stops_and_runs_out() {
        let serial = Arc::new(EphemeralSerial::default());
        let typing = Typing::new(serial.clone());
        let room = room_id!("!r:x");
        let start = serial.current();
        typing.set(room, user_id!("@a:x"), true, Duration::from_secs(30));
        let (users, changed) = typing.in_room(room);
        assert_eq!(users, vec![user_id!("@a:x").to_owned()]);
        assert!(changed > start);
        typing.set(room, user_id!("@a:x"), false, Duration::ZERO);
        assert!(typing.in_room(room).0.is_empty());

        typing.set(room, user_id!("@b:x"), true, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(typing.in_room(room).0.is_empty(), "ran out");
        assert!(!typing.expire(room).is_empty(), "expiring is a change clients must hear of");
    }
}
