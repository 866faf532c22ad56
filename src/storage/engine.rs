//! The narrow interface between `Storage` and a key-value engine. RocksDB is the one engine today;
//! another (an in-memory one, say) only has to implement [`Engine`].

use super::{Batch, Column, StorageError};

/// A key and its value, as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

pub trait Engine: Send + Sync + 'static {
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Entries whose key starts with `prefix`, in key order.
    fn scan_prefix<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a>;

    /// Entries whose key starts with `prefix`, from `start` (inclusive) on, in key order.
    fn scan_from<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a>;

    /// Entries whose key starts with `prefix` and is below `before` (all of them when `None`), in
    /// reverse key order.
    fn scan_prefix_rev<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
        before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a>;

    /// Applies every batch in one atomic write. With `durable`, the write is on disk (WAL synced)
    /// before this returns; without, it survives a crash of the process but not of the machine.
    fn write(&self, batches: &[Batch], durable: bool) -> Result<(), StorageError>;

    /// Flushes memory to disk so the next open does not replay the log; called at shutdown.
    fn flush(&self) -> Result<(), StorageError>;
}
