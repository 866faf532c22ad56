//! Relations between events (edits, threads, references, annotations) and thread activity.

use ruma::{EventId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::{Batch, Column, Storage, StorageError, decode, key, sequence::decode_u64};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelationRecord {
    pub event: u64,
    pub rel_type: String,
    pub kind: String,
    pub sender: OwnedUserId,
}

impl Storage {
    /// Events relating to `target` with positions in `(after, before)`, oldest first, as
    /// `(position, record)`.
    pub fn relations(&self, target: &EventId) -> Result<Vec<(u64, RelationRecord)>, StorageError> {
        self.engine
            .scan_prefix(Column::Relations, &key::relations_of(target))
            .map(|entry| {
                let (k, v) = entry?;
                Ok((key::position_of_relation(&k)?, decode(Column::Relations, &v)?))
            })
            .collect()
    }

    /// Thread roots of a room, most recently active first, below position `before`, as
    /// `(latest activity, root short event)`.
    pub fn threads(&self, short_room: u64, before: u64, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        let upper = key::timeline(short_room, before);
        let mut threads = Vec::new();
        for entry in self.engine.scan_prefix_rev(Column::ThreadActivity, &key::room_prefix(short_room), Some(&upper)) {
            let (k, v) = entry?;
            if threads.len() == limit {
                break;
            }
            threads.push((key::timeline_position_of(&k)?, decode_u64(&v)?));
        }
        Ok(threads)
    }
}

impl Batch {
    pub fn put_relation(&mut self, target: &EventId, position: u64, record: &RelationRecord) {
        self.put_json(Column::Relations, key::relation(target, position), record);
    }

    pub fn delete_relation(&mut self, target: &EventId, position: u64) {
        self.delete(Column::Relations, key::relation(target, position));
    }

    /// Moves a thread root to its latest activity.
    pub fn touch_thread(&mut self, short_room: u64, root: u64, previous: Option<u64>, position: u64) {
        if let Some(previous) = previous {
            self.delete(Column::ThreadActivity, key::timeline(short_room, previous));
        }
        self.put(Column::ThreadActivity, key::timeline(short_room, position), root.to_be_bytes().to_vec());
    }
}
