//! What reading rooms keeps in memory: parsed events with what the client format adds to them,
//! the state snapshots around each event and at stream positions, the relations pointing at an
//! event, users' unread counts between syncs, and each room's head (latest timeline position and
//! where its state last changed) so that syncs can skip what did not change.
//!
//! Reads fill the caches on a miss; writes that change what a read saw (a redaction, a new
//! relation, an outlier placed in the timeline, a receipt) invalidate after their commit. A read that raced such a write must not put back what
//! it read before the commit, so every fill names the epoch it started in and is dropped when an
//! invalidation happened since.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{Pdu, receipts::UnreadMemo};
use crate::storage::{RelationRecord, StoredEvent};

/// Parsed events expected per MiB of the event cache, to size its index.
const EVENTS_PER_MIB: usize = 800;
/// Events whose state snapshots are kept (24 bytes each).
const SNAPSHOT_ENTRIES: usize = 100_000;
/// Events whose relations (often none) are kept.
const RELATION_ENTRIES: usize = 20_000;
/// Users' unread counts in rooms kept between syncs.
const UNREAD_ENTRIES: usize = 20_000;

/// An event as reads need it: parsed, with its server-side `unsigned` extras and the transaction
/// it was sent with (a stored event less its signed JSON).
#[derive(Debug)]
pub struct CachedEvent {
    pub pdu: Arc<Pdu>,
    pub unsigned: Map<String, Value>,
    pub transaction: Option<(OwnedDeviceId, String)>,
    /// Its stream position (0 outside the timeline).
    pub position: u64,
}

impl CachedEvent {
    /// Copies only the small parts (`unsigned`, the transaction), so an event read for once need
    /// not be cloned whole.
    pub fn from_stored(stored: &StoredEvent) -> crate::error::Result<Self> {
        let pdu = Arc::new(Pdu::from_stored(stored)?);
        let (unsigned, transaction) = (stored.unsigned.clone(), stored.transaction.clone());
        Ok(Self { pdu, unsigned, transaction, position: stored.position })
    }
}

#[derive(Clone)]
struct EventWeigher;

impl quick_cache::Weighter<u64, Arc<CachedEvent>> for EventWeigher {
    fn weight(&self, _key: &u64, event: &Arc<CachedEvent>) -> u64 {
        // Its content, and the DAG references (an allocation each); a parsed event's IDs,
        // hashes, signatures and maps take about 1 KiB besides (a heap profile showed the cache
        // at twice its weight when this was counted as 256 bytes).
        let pdu = &event.pdu;
        let references = (pdu.prev_events.len() + pdu.auth_events.len()) as u64 * 64;
        1024 + pdu.content.get().len() as u64 + references
    }
}

pub type Relations = Arc<Vec<(u64, RelationRecord)>>;

pub(super) struct RoomCaches {
    events: quick_cache::sync::Cache<u64, Arc<CachedEvent>, EventWeigher>,
    snapshots: quick_cache::sync::Cache<u64, (u64, u64)>,
    relations: quick_cache::sync::Cache<OwnedEventId, Relations>,
    unread: quick_cache::sync::Cache<(OwnedRoomId, OwnedUserId), UnreadMemo>,
    /// The snapshot after a room's latest event at or before a stream position, by `(short
    /// room, position)`: syncs ask for the same few positions over and over.
    positions: quick_cache::sync::Cache<(u64, u64), Option<u64>>,
    /// Per room (short ID): the position and snapshot of its latest timeline event, and the last
    /// position at which the snapshot changed, for rooms with events since the start.
    heads: Mutex<HashMap<u64, Head>>,
    /// The stream position when the server started.
    started_at: u64,
    /// Counts invalidations; see the module's comment.
    epoch: AtomicU64,
    /// Held while checking the epoch and filling, and while invalidating.
    fill: Mutex<()>,
}

#[derive(Clone, Copy, Default)]
struct Head {
    /// Position of the room's latest timeline event.
    position: u64,
    snapshot: u64,
    changed_at: u64,
    /// Commits under way: their positions are not known yet, but readers may already see them in
    /// the stream.
    moving: u32,
    /// ... of which change the snapshot.
    pending: u32,
}

impl RoomCaches {
    /// `event_bytes`: memory for parsed events, weighed by their sizes (roughly what they take).
    pub(super) fn new(started_at: u64, event_bytes: u64) -> Self {
        let estimated_events = (event_bytes as usize >> 20).max(1) * EVENTS_PER_MIB;
        Self {
            heads: Mutex::new(HashMap::new()),
            started_at,
            events: quick_cache::sync::Cache::with_weighter(estimated_events, event_bytes, EventWeigher),
            snapshots: quick_cache::sync::Cache::new(SNAPSHOT_ENTRIES),
            relations: quick_cache::sync::Cache::new(RELATION_ENTRIES),
            unread: quick_cache::sync::Cache::new(UNREAD_ENTRIES),
            positions: quick_cache::sync::Cache::new(SNAPSHOT_ENTRIES),
            epoch: AtomicU64::new(0),
            fill: Mutex::new(()),
        }
    }

    /// The epoch to name when filling after a read of storage that starts now.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(super) fn event(&self, short: u64) -> Option<Arc<CachedEvent>> {
        self.events.get(&short)
    }

    /// Keeps an event read from storage in epoch `epoch`, unless it was invalidated since.
    pub(super) fn fill_event(&self, epoch: u64, short: u64, event: Arc<CachedEvent>) {
        self.fill_if_current(epoch, || self.events.insert(short, event));
    }

    /// Keeps a newly committed event (nothing can have invalidated it yet).
    pub(super) fn committed_event(&self, short: u64, event: Arc<CachedEvent>) {
        self.events.insert(short, event);
    }

    pub(super) fn snapshots(&self, short: u64) -> Option<(u64, u64)> {
        self.snapshots.get(&short)
    }

    /// An event's snapshots never change once recorded, so they need no epoch.
    pub(super) fn fill_snapshots(&self, short: u64, snapshots: (u64, u64)) {
        self.snapshots.insert(short, snapshots);
    }

    pub(super) fn snapshot_at(&self, short_room: u64, position: u64) -> Option<Option<u64>> {
        self.positions.get(&(short_room, position))
    }

    /// Only for positions already reached by the stream: later events come after them, so the
    /// answer never changes.
    pub(super) fn fill_snapshot_at(&self, short_room: u64, position: u64, snapshot: Option<u64>) {
        self.positions.insert((short_room, position), snapshot);
    }

    /// Before committing a room's timeline event: marks its state as changing if the event
    /// leaves another snapshot than the head's (or the head is unknown).
    pub(super) fn timeline_moving(&self, short_room: u64, snapshot: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        let head = heads.entry(short_room).or_default();
        head.moving += 1;
        // An unknown head (changed_at 0) counts as a change.
        if snapshot != head.snapshot || head.changed_at == 0 {
            head.pending += 1;
        }
    }

    /// After a failed commit: nothing moved.
    pub(super) fn timeline_stayed(&self, short_room: u64, snapshot: u64) {
        if let Some(head) = self.heads.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&short_room) {
            head.moving = head.moving.saturating_sub(1);
            if snapshot != head.snapshot || head.changed_at == 0 {
                head.pending = head.pending.saturating_sub(1);
            }
        }
    }

    /// Records a room's new latest timeline event once committed (commits of a room are
    /// serialized and their positions increase, so each call moves the head forward).
    pub(super) fn timeline_moved(&self, short_room: u64, position: u64, snapshot: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        let head = heads.entry(short_room).or_default();
        head.moving = head.moving.saturating_sub(1);
        if head.snapshot != snapshot || head.changed_at == 0 {
            head.pending = head.pending.saturating_sub(1);
            head.snapshot = snapshot;
            head.changed_at = position;
        }
        head.position = head.position.max(position);
    }

    /// Whether the room's state at every position after `since` is its state at `since` (no
    /// timeline event since changed it). `false` when unknown (before the server started).
    pub(super) fn state_unchanged_since(&self, short_room: u64, since: u64) -> bool {
        match self.heads.lock().unwrap_or_else(|e| e.into_inner()).get(&short_room) {
            Some(head) => head.pending == 0 && head.changed_at <= since,
            None => since >= self.started_at,
        }
    }

    /// Whether the room has timeline events in `(since, until]`, when the heads know it.
    pub(super) fn has_events_between(&self, short_room: u64, since: u64, until: u64) -> Option<bool> {
        match self.heads.lock().unwrap_or_else(|e| e.into_inner()).get(&short_room) {
            Some(head) if head.moving > 0 => None,
            Some(head) if head.position <= since => Some(false),
            Some(head) if head.position <= until => Some(true),
            Some(_) => None,
            None => (since >= self.started_at).then_some(false),
        }
    }

    pub(super) fn relations(&self, target: &EventId) -> Option<Relations> {
        self.relations.get(target)
    }

    pub(super) fn fill_relations(&self, epoch: u64, target: &EventId, relations: Relations) {
        self.fill_if_current(epoch, || self.relations.insert(target.to_owned(), relations));
    }

    pub(super) fn unread(&self, key: &(OwnedRoomId, OwnedUserId)) -> Option<UnreadMemo> {
        self.unread.get(key)
    }

    pub(super) fn fill_unread(&self, epoch: u64, key: (OwnedRoomId, OwnedUserId), memo: UnreadMemo) {
        self.fill_if_current(epoch, || self.unread.insert(key, memo));
    }

    /// Drops a user's unread counts in a room, after a receipt or a change of their membership.
    pub(super) fn forget_unread(&self, room_id: &RoomId, user: &UserId) {
        let _fill = self.fill.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.unread.remove(&(room_id.to_owned(), user.to_owned()));
    }

    /// Drops what committed writes changed: rewritten events, and the relations of events that
    /// gained or lost one.
    pub(super) fn invalidate<'a>(&self, events: &[u64], relation_targets: impl IntoIterator<Item = &'a EventId>) {
        let _fill = self.fill.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for short in events {
            self.events.remove(short);
        }
        for target in relation_targets {
            self.relations.remove(target);
        }
    }

    fn fill_if_current(&self, epoch: u64, fill: impl FnOnce()) {
        let _fill = self.fill.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::Acquire) == epoch {
            fill();
        }
    }
}
