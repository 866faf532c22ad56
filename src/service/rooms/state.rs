//! Room state as layered snapshots.
//!
//! A snapshot is a delta (entries added and removed) on a parent, so a state event costs the size
//! of its change. Chains are cut at `MAX_LAYERS`: the next snapshot is then a full base. Reading a
//! state therefore touches at most `MAX_LAYERS` snapshots whatever the room's history, and decoded
//! states are cached. Entries map short state keys to short event IDs.

use std::{collections::HashMap, sync::Arc};

use crate::error::{Error, Result};
use crate::storage::{Batch, Sequence, Snapshot, Storage};

/// A whole state: short state key → short event ID.
pub type StateMap = HashMap<u64, u64>;

/// Snapshots in a chain before a new full base.
const MAX_LAYERS: u32 = 12;
/// Total state entries kept decoded in the cache.
const CACHE_ENTRIES: u64 = 500_000;

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<u64, Arc<StateMap>> for Weigher {
    fn weight(&self, _key: &u64, state: &Arc<StateMap>) -> u64 {
        state.len() as u64 + 1
    }
}

pub struct StateStore {
    storage: Arc<Storage>,
    cache: quick_cache::sync::Cache<u64, Arc<StateMap>, Weigher>,
}

/// The snapshot ID of the empty state (before a room's create event).
pub const EMPTY: u64 = 0;

impl StateStore {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, cache: quick_cache::sync::Cache::with_weighter(10_000, CACHE_ENTRIES, Weigher) }
    }

    /// The full state of a snapshot.
    pub fn full(&self, id: u64) -> Result<Arc<StateMap>> {
        if id == EMPTY {
            return Ok(Arc::default());
        }
        if let Some(state) = self.cache.get(&id) {
            return Ok(state);
        }
        let mut chain = Vec::new();
        let mut base: Option<Arc<StateMap>> = None;
        let mut next = Some(id);
        while let Some(current) = next {
            if current != id
                && let Some(cached) = self.cache.get(&current)
            {
                base = Some(cached);
                break;
            }
            let snapshot = self
                .storage
                .snapshot(current)?
                .ok_or_else(|| Error::internal(format!("state snapshot {current} is missing")))?;
            next = snapshot.parent;
            chain.push(snapshot);
        }
        let mut state = base.map(|b| (*b).clone()).unwrap_or_default();
        for snapshot in chain.iter().rev() {
            for key in &snapshot.removed {
                state.remove(key);
            }
            state.extend(snapshot.added.iter().copied());
        }
        let state = Arc::new(state);
        self.cache.insert(id, state.clone());
        Ok(state)
    }

    /// How many layers lead to a snapshot (`None` for the empty state).
    pub fn layers(&self, id: u64) -> Result<Option<u32>> {
        Ok(match id {
            EMPTY => None,
            id => Some(self.storage.snapshot(id)?.map_or(MAX_LAYERS, |s| s.layers)),
        })
    }

    /// Stages the snapshot of `parent` (whose full state and layers the caller knows, as it may
    /// not be committed yet) with `changes` applied; returns its ID, layers and full state. The
    /// caller calls [`Self::remember`] once the batch is committed.
    pub fn derive(
        &self,
        batch: &mut Batch,
        parent: u64,
        parent_state: &StateMap,
        parent_layers: Option<u32>,
        changes: &[(u64, u64)],
    ) -> Result<(u64, u32, Arc<StateMap>)> {
        let mut state = parent_state.clone();
        state.extend(changes.iter().copied());
        let snapshot = match parent_layers {
            Some(layers) if layers < MAX_LAYERS => {
                Snapshot { parent: Some(parent), layers: layers + 1, added: changes.to_vec(), removed: Vec::new() }
            }
            _ => {
                let mut added: Vec<(u64, u64)> = state.iter().map(|(k, v)| (*k, *v)).collect();
                added.sort_unstable();
                Snapshot { parent: None, layers: 0, added, removed: Vec::new() }
            }
        };
        let id = self.storage.allocate(batch, Sequence::StateSnapshot);
        batch.put_snapshot(id, &snapshot);
        Ok((id, snapshot.layers, Arc::new(state)))
    }

    pub fn remember(&self, id: u64, state: Arc<StateMap>) {
        self.cache.insert(id, state);
    }
}
