//! The servers in a room: those with at least one joined member in its state. A room's events and
//! EDUs go to them; joins, backfill and state requests can ask them.
//!
//! Counts of joined members per server are cached by state snapshot (a snapshot never changes), so
//! an event that does not change the membership costs a cache hit; a member event derives its
//! counts from those before it.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{OwnedServerName, RoomId, ServerName, UserId, events::TimelineEventType};

use super::{Pdu, RoomHandle, Rooms, StateMap, state::EMPTY};
use crate::{error::Result, service::federation::sender::Queued, storage::Batch};

/// Joined members per server.
pub type ServerCounts = std::collections::BTreeMap<OwnedServerName, usize>;

/// Snapshots whose counts are kept.
pub(super) const CACHE_CAPACITY: usize = 10_000;

impl Rooms {
    /// The servers with a joined member in the room's current state, ours included when one of
    /// our users is joined; empty for a room we do not know.
    pub fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let state = self.current_state(&room)?;
        Ok(self.server_counts(room.state, &state, &|short| self.event(short))?.keys().cloned().collect())
    }

    /// [`Self::servers_in_room`] without our own server: where the room's traffic goes.
    pub fn remote_servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers = self.servers_in_room(room_id)?;
        servers.retain(|server| *server != self.config.server_name);
        Ok(servers)
    }

    /// Other servers sharing at least one room with `user` (whom their presence concerns).
    pub fn remote_servers_sharing_rooms(&self, user: &UserId) -> Result<BTreeSet<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for room_id in self.joined_rooms(user)? {
            servers.extend(self.remote_servers_in_room(&room_id)?);
        }
        Ok(servers)
    }

    /// Joined members per server in the state of snapshot `id` (whose full state is `state`);
    /// `event` finds an event by short ID (staged events included, on the write path).
    fn server_counts(
        &self,
        id: u64,
        state: &StateMap,
        event: &dyn Fn(u64) -> Result<Option<Arc<Pdu>>>,
    ) -> Result<Arc<ServerCounts>> {
        if id == EMPTY {
            return Ok(Arc::default());
        }
        if let Some(counts) = self.server_counts.get(&id) {
            return Ok(counts);
        }
        let mut counts = ServerCounts::new();
        for (short_key, short_event) in state {
            let Some((kind, state_key)) = self.storage.state_key_pair(*short_key)? else { continue };
            if kind != "m.room.member" {
                continue;
            }
            let Ok(user) = UserId::parse(state_key.as_str()) else { continue };
            if event(*short_event)?.is_some_and(|pdu| pdu.content_str("membership").as_deref() == Some("join")) {
                *counts.entry(user.server_name().to_owned()).or_default() += 1;
            }
        }
        let counts = Arc::new(counts);
        self.server_counts.insert(id, counts.clone());
        Ok(counts)
    }

    /// Queues a new local event, staged in `batch`, for every other server in the room before or
    /// after it (so a kicked or leaving server hears of its departure). `before` is the state
    /// the event was placed on; the handle holds the state after it. `except` leaves a server
    /// out (the one a remote join came from, which has the event). Returns what to wake once the
    /// batch is committed.
    pub(super) fn queue_outbound(
        &self,
        batch: &mut Batch,
        room: &RoomHandle,
        before: (u64, &StateMap),
        pdu: &Pdu,
        short_event: u64,
        except: Option<&ServerName>,
    ) -> Result<Queued> {
        let event = |short: u64| match room.pending.values().find(|p| p.short == short) {
            Some(pending) => Ok(Some(pending.pdu.clone())),
            None => self.event(short),
        };
        let counts_before = self.server_counts(before.0, before.1, &event)?;
        let after = room.record.state;
        let counts_after = match self.server_counts.get(&after) {
            _ if after == before.0 => counts_before.clone(),
            Some(cached) => cached,
            None => {
                let counts = match (&pdu.kind, pdu.state_key.as_deref().map(UserId::parse)) {
                    (TimelineEventType::RoomMember, Some(Ok(target))) => {
                        let previous = match self.storage.short_state_key("m.room.member", target.as_str())? {
                            Some(short_key) => match before.1.get(&short_key) {
                                Some(short) => event(*short)?,
                                None => None,
                            },
                            None => None,
                        };
                        let joined = |pdu: &Pdu| pdu.content_str("membership").as_deref() == Some("join");
                        let mut counts = (*counts_before).clone();
                        let server = target.server_name().to_owned();
                        match (previous.is_some_and(|p| joined(&p)), joined(pdu)) {
                            (false, true) => *counts.entry(server).or_default() += 1,
                            (true, false) => {
                                if let Some(count) = counts.get_mut(&server) {
                                    *count -= 1;
                                    if *count == 0 {
                                        counts.remove(&server);
                                    }
                                }
                            }
                            _ => {}
                        }
                        Arc::new(counts)
                    }
                    // Other state events leave the memberships as they were.
                    _ => counts_before.clone(),
                };
                self.server_counts.insert(after, counts.clone());
                counts
            }
        };
        let destinations: BTreeSet<&OwnedServerName> = counts_before.keys().chain(counts_after.keys()).collect();
        let destinations = destinations.into_iter().filter(|server| Some(&***server) != except);
        Ok(self.sender.queue_pdu(batch, destinations.map(|d| &**d), short_event))
    }
}
