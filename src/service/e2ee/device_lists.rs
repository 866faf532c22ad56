//! Device lists: who must refetch whose keys.
//!
//! Every change of a local user's devices (keys uploaded or changed, a device renamed or deleted,
//! cross-signing keys, signatures) is written in the change's own batch to `DeviceListChanges` at
//! a stream position (`Batch::put_device_list_change`), so sync tokens cover it and it survives
//! restarts. After the commit, [`DeviceLists::committed`] wakes the syncs of the user and of
//! everyone sharing a room with them.
//!
//! A sync (and `/keys/changes`) between two positions reports as `changed` the users sharing a
//! room whose devices changed, the user themselves, and users who newly share a room; as `left`,
//! users who no longer share any room.
//!
//! Federation: [`DeviceLists::subscribe`] and [`DeviceLists::local_changes`] are the hook for the
//! sender of `m.device_list_update` EDUs (`federation::devices`): wait for the position to move,
//! read the public changes after the last one sent (a user's newer change replaces their older
//! entry, so a remote server may see only the latest device and resync the rest), and queue an EDU
//! per change with its position as `stream_id`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use ruma::{DeviceId, OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::watch;

use crate::{
    error::Result,
    service::{notifier::Notifier, rooms::Rooms},
    storage::{Batch, DeviceListChange, Storage},
};

pub struct DeviceLists {
    storage: Arc<Storage>,
    notifier: Arc<Notifier>,
    /// The stream position after the latest committed change of a local user's devices.
    latest: watch::Sender<u64>,
}

impl DeviceLists {
    pub fn new(storage: Arc<Storage>, notifier: Arc<Notifier>) -> Self {
        let latest = watch::channel(storage.stream_position()).0;
        Self { storage, notifier, latest }
    }

    /// Stages a change of `user`'s device list that everyone sharing a room with them sees.
    pub fn stage(&self, batch: &mut Batch, user: &UserId, device: Option<&DeviceId>, deleted: bool) -> Result<()> {
        let replaces = self.storage.device_list_latest(user)?;
        let change =
            DeviceListChange { user: user.to_owned(), device: device.map(ToOwned::to_owned), deleted, only_for: None };
        batch.put_device_list_change(change, replaces);
        Ok(())
    }

    /// Stages a change only `signer` sees: their signature of `target`'s master key.
    pub fn stage_private(&self, batch: &mut Batch, target: &UserId, signer: &UserId) {
        let change = DeviceListChange {
            user: target.to_owned(),
            device: None,
            deleted: false,
            only_for: Some(signer.to_owned()),
        };
        batch.put_device_list_change(change, None);
    }

    /// After a staged change is committed: wakes the syncs of `user` and of everyone sharing a
    /// room with them, and the federation hook.
    pub fn committed(&self, user: &UserId) {
        let mut users = match self.peers(user) {
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(%user, error = %e, "cannot find who shares a room with a user");
                BTreeSet::new()
            }
        };
        users.insert(user.to_owned());
        self.notifier.notify_all(users.iter().map(|u| &**u));
        self.latest.send_replace(self.storage.stream_position());
    }

    /// After a private change is committed: wakes the signer's syncs.
    pub fn committed_private(&self, signer: &UserId) {
        self.notifier.notify(signer);
    }

    /// For the federation sender: changes the position after the latest committed change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// For the federation sender: the public changes of local users' devices with positions in
    /// `(after, until]`, oldest first (the position is the EDU's `stream_id`).
    pub fn local_changes(&self, after: u64, until: u64) -> Result<Vec<(u64, DeviceListChange)>> {
        let mut changes = self.storage.device_list_changes(after, until)?;
        changes.retain(|(_, change)| change.only_for.is_none());
        Ok(changes)
    }

    /// Users joined to a room `user` is joined to, `user` excepted.
    fn peers(&self, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
        let mut peers = BTreeSet::new();
        for (room_id, record) in self.storage.memberships(user)? {
            if record.membership != "join" {
                continue;
            }
            let Some(room) = self.storage.room(&room_id)? else { continue };
            peers.extend(self.storage.members(room.short_id)?.into_iter().filter(|(_, m)| m == "join").map(|(u, _)| u));
        }
        peers.remove(user);
        Ok(peers)
    }

    /// `device_lists` between two stream positions for `user`: `(changed, left)`.
    pub fn changes(
        &self,
        rooms: &Rooms,
        user: &UserId,
        since: u64,
        until: u64,
    ) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>)> {
        let (mut changed, mut left) = (BTreeSet::new(), BTreeSet::new());
        if since >= until {
            return Ok((changed, left));
        }
        let memberships = self.storage.memberships(user)?;
        let mine: BTreeSet<OwnedRoomId> =
            memberships.iter().filter(|(_, r)| r.membership == "join").map(|(room, _)| room.clone()).collect();
        let mut shares = SharedRooms { storage: &self.storage, mine: &mine, known: HashMap::new() };

        let mut own_change = false;
        for (_, change) in self.storage.device_list_changes(since, until)? {
            match &change.only_for {
                Some(only) if only == user => {
                    changed.insert(change.user);
                }
                Some(_) => {}
                None if change.user == user => own_change = true,
                None if shares.with(&change.user)? => {
                    changed.insert(change.user);
                }
                None => {}
            }
        }

        // Memberships: users who joined a room with us or whose room we joined are new to the
        // client's tracking; users who left (or whose room we left) may be gone from it.
        let mut gone = BTreeSet::new();
        for (room_id, record) in &memberships {
            if record.position <= since && record.membership != "join" {
                continue;
            }
            let Some(room) = self.storage.room(room_id)? else { continue };
            if rooms.state_unchanged_since(room.short_id, since)
                || !rooms.has_events_between(room.short_id, since, until)?
            {
                continue;
            }
            let at_since = rooms.state_at_position(room_id, since)?;
            let at_until = rooms.state_at_position(room_id, until)?;
            if Arc::ptr_eq(&at_since, &at_until) {
                // Only messages since: the same state snapshot (from the cache).
                continue;
            }
            let joined = |state| -> Result<bool> { Ok(rooms.membership_in(state, user)?.as_deref() == Some("join")) };
            match (joined(&at_since)?, joined(&at_until)?) {
                (false, true) => changed.extend(self.joined_members(room.short_id)?),
                (true, false) => gone.extend(self.joined_members(room.short_id)?),
                (true, true) => {
                    for (short_key, short_event) in at_until.iter() {
                        if at_since.get(short_key) == Some(short_event) {
                            continue;
                        }
                        let Some((kind, member)) = self.storage.state_key_pair(*short_key)? else { continue };
                        if kind != "m.room.member" {
                            continue;
                        }
                        let Ok(member) = UserId::parse(member) else { continue };
                        let before = rooms.membership_in(&at_since, &member)?;
                        let after = rooms.event(*short_event)?.and_then(|pdu| pdu.content_str("membership"));
                        match (before.as_deref() == Some("join"), after.as_deref() == Some("join")) {
                            (false, true) => {
                                changed.insert(member);
                            }
                            (true, false) => {
                                gone.insert(member);
                            }
                            _ => {}
                        }
                    }
                }
                (false, false) => {}
            }
        }
        changed.remove(user);
        for member in gone {
            if member != user && !changed.contains(&member) && !shares.with(&member)? {
                left.insert(member);
            }
        }
        // Our own devices' changes are news to our other devices.
        if own_change {
            changed.insert(user.to_owned());
        }
        Ok((changed, left))
    }

    /// The users joined to a room now.
    fn joined_members(&self, short_room: u64) -> Result<Vec<OwnedUserId>> {
        Ok(self.storage.members(short_room)?.into_iter().filter(|(_, m)| m == "join").map(|(u, _)| u).collect())
    }
}

/// Whether other users share a joined room with the syncing user, remembered per user.
struct SharedRooms<'a> {
    storage: &'a Storage,
    mine: &'a BTreeSet<OwnedRoomId>,
    known: HashMap<OwnedUserId, bool>,
}

impl SharedRooms<'_> {
    fn with(&mut self, other: &UserId) -> Result<bool> {
        if let Some(&shares) = self.known.get(other) {
            return Ok(shares);
        }
        let shares = self
            .storage
            .memberships(other)?
            .iter()
            .any(|(room, record)| record.membership == "join" && self.mine.contains(room));
        self.known.insert(other.to_owned(), shares);
        Ok(shares)
    }
}
