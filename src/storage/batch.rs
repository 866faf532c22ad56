//! An atomic write: everything in a batch lands together or not at all.

use super::Column;

/// Operations to apply atomically. Services fill one through the typed methods that each storage
/// module adds (`put_user`, `delete_device`, ...), then hand it to `Storage::commit`.
#[derive(Default, Debug)]
pub struct Batch {
    pub(super) ops: Vec<Op>,
}

#[derive(Debug)]
pub(super) enum Op {
    Put { column: Column, key: Vec<u8>, value: Vec<u8> },
    Delete { column: Column, key: Vec<u8> },
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
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

    /// Appends another batch's operations, keeping their order.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}
