//! An atomic write: everything in a batch lands together or not at all.

use super::{Column, sequence::Sequence};

/// Operations that need the batch's stream position, known only when the writer writes it.
type Positioned = Box<dyn FnOnce(u64, &mut Batch) + Send>;

/// Operations to apply atomically. Services fill one through the typed methods that each storage
/// module adds (`put_user`, `delete_device`, ...), then hand it to `Storage::commit`.
#[derive(Default)]
pub struct Batch {
    pub(super) ops: Vec<Op>,
    /// The highest number of each sequence this batch uses, for the writer to persist.
    pub(super) sequence_max: [u64; Sequence::ALL.len()],
    pub(super) positioned: Vec<Positioned>,
}

#[derive(Debug)]
pub(super) enum Op {
    Put { column: Column, key: Vec<u8>, value: Vec<u8> },
    Delete { column: Column, key: Vec<u8> },
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("ops", &self.ops.len()).field("positioned", &self.positioned.len()).finish()
    }
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.positioned.is_empty()
    }

    pub(super) fn put(&mut self, column: Column, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(Op::Put { column, key, value });
    }

    pub(super) fn put_json(&mut self, column: Column, key: Vec<u8>, value: &impl serde::Serialize) {
        let value = serde_json::to_vec(value).expect("records always serialize");
        self.put(column, key, value);
    }

    pub(super) fn delete(&mut self, column: Column, key: Vec<u8>) {
        self.ops.push(Op::Delete { column, key });
    }

    /// Sets a named server-wide value (`Meta`).
    pub fn put_meta(&mut self, name: &str, value: Vec<u8>) {
        self.put(Column::Meta, super::key::meta(name), value);
    }

    pub(super) fn uses(&mut self, sequence: Sequence, value: u64) {
        let max = &mut self.sequence_max[sequence.index()];
        *max = (*max).max(value);
    }

    /// Adds operations that need a stream position of their own; the writer assigns positions
    /// when it writes the batch, consecutive and in the order they were added, so positions follow
    /// commit order.
    pub(super) fn at_position(&mut self, build: impl FnOnce(u64, &mut Batch) + Send + 'static) {
        self.positioned.push(Box::new(build));
    }

    /// Appends another batch's operations, keeping their order.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        for (mine, theirs) in self.sequence_max.iter_mut().zip(other.sequence_max) {
            *mine = (*mine).max(theirs);
        }
        self.positioned.extend(other.positioned);
    }
}
