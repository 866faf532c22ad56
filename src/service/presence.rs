//! Presence: online, unavailable (idle), offline, with a status message.
//!
//! Kept in memory (after a restart everyone is offline until they come back). Syncing keeps a user
//! online; what they do (sending, typing, reading) marks them active. With no activity for
//! `idle_after_secs` they become unavailable; with no sync open and none for `offline_after_secs`,
//! offline. A sync counts while it is parked, so a long-polling client never flickers offline. A
//! periodic sweep applies those transitions. Every change bumps the ephemeral serial so that
//! syncs send it once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{now_ms, typing::EphemeralSerial};
use crate::config::PresenceConfig;

/// Activity within this long counts as `currently_active`.
const CURRENTLY_ACTIVE_MS: u64 = 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Online,
    Unavailable,
    Offline,
}

impl State {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(Self::Online),
            "unavailable" => Some(Self::Unavailable),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

#[derive(Clone, Debug)]
struct Record {
    state: State,
    status_msg: Option<String>,
    last_active: u64,
    last_sync: u64,
    /// Syncs (and WebSockets) open now.
    open_syncs: u32,
    serial: u64,
    /// A user of another server: their server says when they change, the sweep leaves them be.
    remote: bool,
}

pub struct Presence {
    serial: Arc<EphemeralSerial>,
    config: PresenceConfig,
    users: Mutex<HashMap<OwnedUserId, Record>>,
}

/// An open sync: the user counts as syncing until it is dropped.
pub struct Syncing<'a> {
    presence: &'a Presence,
    user: OwnedUserId,
}

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.presence.update(&self.user, |record, now| {
            record.open_syncs = record.open_syncs.saturating_sub(1);
            record.last_sync = now;
        });
    }
}

impl Presence {
    pub fn new(serial: Arc<EphemeralSerial>, config: PresenceConfig) -> Self {
        Self { serial, config, users: Mutex::new(HashMap::new()) }
    }

    fn update(&self, user: &UserId, change: impl FnOnce(&mut Record, u64)) -> bool {
        if !self.config.enabled {
            return false;
        }
        let now = now_ms();
        let mut users = self.users.lock().expect("presence lock");
        let record = users.entry(user.to_owned()).or_insert_with(|| Record {
            state: State::Offline,
            status_msg: None,
            last_active: 0,
            last_sync: 0,
            open_syncs: 0,
            serial: 0,
            remote: false,
        });
        let before = (record.state, record.status_msg.clone());
        change(record, now);
        let changed = (record.state, record.status_msg.clone()) != before;
        if changed {
            record.serial = self.serial.next();
        }
        changed
    }

    /// A sync (or WebSocket) opens; the user counts as syncing until the guard is dropped. Also
    /// says whether the user's presence changed.
    pub fn open_sync(&self, user: &UserId, set_presence: Option<State>) -> (Syncing<'_>, bool) {
        let changed = self.update(user, |record, _| record.open_syncs += 1);
        let changed = self.on_sync(user, set_presence) || changed;
        (Syncing { presence: self, user: user.to_owned() }, changed)
    }

    /// The client still syncs; `set_presence` is what it asked (`online` when absent). Returns
    /// whether the user's presence changed.
    pub fn on_sync(&self, user: &UserId, set_presence: Option<State>) -> bool {
        self.update(user, |record, now| {
            record.last_sync = now;
            match set_presence.unwrap_or(State::Online) {
                State::Offline => {}
                State::Unavailable => record.state = State::Unavailable,
                State::Online if record.state == State::Offline => {
                    record.state = State::Online;
                    record.last_active = now;
                }
                State::Online => {}
            }
        })
    }

    /// The user did something: they are active (and online again if idle).
    pub fn on_activity(&self, user: &UserId) -> bool {
        self.update(user, |record, now| {
            record.last_active = now;
            record.last_sync = record.last_sync.max(now);
            if record.state != State::Online {
                record.state = State::Online;
            }
        })
    }

    /// An explicit presence from `PUT /presence/{userId}/status`.
    pub fn set(&self, user: &UserId, state: State, status_msg: Option<String>) -> bool {
        self.update(user, |record, now| {
            record.state = state;
            record.status_msg = status_msg;
            if state == State::Online {
                record.last_active = now;
                record.last_sync = now;
            }
        })
    }

    /// Presence of a user of another server, as their server sent it (`m.presence`). Returns
    /// whether it changed.
    pub fn set_remote(
        &self,
        user: &UserId,
        state: State,
        status_msg: Option<String>,
        last_active_ago: u64,
        currently_active: bool,
    ) -> bool {
        self.update(user, |record, now| {
            record.remote = true;
            record.state = state;
            record.status_msg = status_msg;
            record.last_active =
                if currently_active { now } else { now.saturating_sub(last_active_ago.max(CURRENTLY_ACTIVE_MS)) };
            record.last_sync = now;
        })
    }

    /// The `m.presence` content for a user.
    pub fn content(&self, user: &UserId) -> Value {
        if !self.config.enabled {
            return json!({ "presence": "offline" });
        }
        let users = self.users.lock().expect("presence lock");
        match users.get(user) {
            Some(record) => content_of(record),
            None => json!({ "presence": "offline" }),
        }
    }

    /// The `m.presence` content for a user the server has a presence for (one who ever synced,
    /// set a presence or, for a remote user, whose server sent one).
    pub fn known(&self, user: &UserId) -> Option<Value> {
        if !self.config.enabled {
            return None;
        }
        self.users.lock().expect("presence lock").get(user).map(content_of)
    }

    /// Users whose presence changed after `serial`, with their content.
    pub fn changed_since(&self, serial: u64) -> Vec<(OwnedUserId, Value)> {
        let users = self.users.lock().expect("presence lock");
        users
            .iter()
            .filter(|(_, r)| r.serial > serial)
            .map(|(user, record)| (user.clone(), content_of(record)))
            .collect()
    }

    /// Applies idle and silence transitions; returns who changed.
    pub fn sweep(&self) -> Vec<OwnedUserId> {
        let now = now_ms();
        let (idle_ms, offline_ms) = (self.config.idle_after_secs * 1000, self.config.offline_after_secs * 1000);
        let mut users = self.users.lock().expect("presence lock");
        let mut changed = Vec::new();
        for (user, record) in users.iter_mut().filter(|(_, record)| !record.remote) {
            let silent = record.open_syncs == 0 && now.saturating_sub(record.last_sync) > offline_ms;
            let state = match record.state {
                State::Online | State::Unavailable if silent => State::Offline,
                State::Online if now.saturating_sub(record.last_active) > idle_ms => State::Unavailable,
                other => other,
            };
            if state != record.state {
                record.state = state;
                record.serial = self.serial.next();
                changed.push(user.clone());
            }
        }
        changed
    }
}

fn content_of(record: &Record) -> Value {
    let now = now_ms();
    let mut content = json!({
        "presence": record.state.as_str(),
        "currently_active": record.state == State::Online && now.saturating_sub(record.last_active) < CURRENTLY_ACTIVE_MS,
    });
    if record.last_active > 0 {
        content["last_active_ago"] = json!(now.saturating_sub(record.last_active));
    }
    if let Some(status) = &record.status_msg {
        content["status_msg"] = json!(status);
    }
    content
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn syncing_goes_online_silence_goes_offline() {
        let presence = Presence::new(Arc::new(EphemeralSerial::default()), PresenceConfig::default());
        let alice = user_id!("@a:x");
        assert_eq!(presence.content(alice)["presence"], "offline");
        assert!(presence.on_sync(alice, None));
        assert_eq!(presence.content(alice)["presence"], "online");
        assert!(!presence.on_sync(alice, None), "staying online is no change");
        assert!(!presence.on_sync(alice, Some(State::Offline)));
        assert!(presence.set(alice, State::Unavailable, Some("away".into())));
        assert_eq!(presence.content(alice)["status_msg"], "away");

        // Silence: pretend the last sync was long ago.
        presence.users.lock().unwrap().get_mut(alice).unwrap().last_sync = 0;
        assert_eq!(presence.sweep(), vec![alice.to_owned()]);
        assert_eq!(presence.content(alice)["presence"], "offline");
        assert!(presence.changed_since(0).iter().any(|(u, _)| u == alice));
    }

    #[test]
    fn an_open_sync_is_never_silent() {
        let presence = Presence::new(Arc::new(EphemeralSerial::default()), PresenceConfig::default());
        let alice = user_id!("@a:x");
        let (syncing, changed) = presence.open_sync(alice, None);
        assert!(changed);
        presence.users.lock().unwrap().get_mut(alice).unwrap().last_sync = 0;
        assert!(presence.sweep().is_empty(), "a parked sync keeps the user online");
        drop(syncing);
        assert!(presence.sweep().is_empty(), "the sync just ended");
        presence.users.lock().unwrap().get_mut(alice).unwrap().last_sync = 0;
        assert_eq!(presence.sweep(), vec![alice.to_owned()]);
    }

    #[test]
    fn disabled_presence_is_always_offline() {
        let config = PresenceConfig { enabled: false, ..PresenceConfig::default() };
        let presence = Presence::new(Arc::new(EphemeralSerial::default()), config);
        let alice = user_id!("@a:x");
        assert!(!presence.open_sync(alice, None).1);
        assert!(!presence.set(alice, State::Online, Some("here".into())));
        assert_eq!(presence.content(alice), json!({ "presence": "offline" }));
        assert!(presence.changed_since(0).is_empty());
    }
}
