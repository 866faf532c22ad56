//! Storage: owns the database. Nothing outside this module sees RocksDB, column families or key
//! bytes; services read through typed methods on [`Storage`] and write by filling a [`Batch`]
//! (typed methods too) and committing it, which is atomic and durable.
//!
//! Reads are direct, synchronous point lookups and short scans: they hit the block cache and take
//! microseconds. Durable writes go through one writer thread with group commit (`writer`), so an
//! async task never blocks on an fsync.

mod account_data;
mod accounts;
mod batch;
mod e2ee;
mod engine;
mod ephemeral;
mod filters;
pub mod key;
mod media;
mod outbound;
mod profiles;
mod pushers;
mod relations;
mod rocks;
mod rooms;
mod schema;
mod sequence;
mod server_keys;
mod writer;

use std::sync::Arc;

pub use account_data::*;
pub use accounts::*;
pub use batch::Batch;
pub use e2ee::*;
pub use engine::Engine;
pub use ephemeral::*;
pub use media::{MediaRecord, ThumbnailRecord};
pub use outbound::{QueuedEdu, QueuedPdu};
pub use pushers::{Pusher, PusherRecord};
pub use relations::*;
pub use rooms::*;
pub use schema::Column;
pub use sequence::Sequence;
use serde::de::DeserializeOwned;
pub use server_keys::StoredServerKey;
pub use writer::{Committed, WriteStats};

use crate::config::DatabaseConfig;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Engine(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the database is closed")]
    Closed,
}

pub struct Storage {
    engine: Arc<dyn Engine>,
    writer: writer::GroupCommit,
    sequences: Arc<sequence::Sequences>,
}

impl Storage {
    /// Opens the RocksDB database at `config.path`.
    pub fn open(config: &DatabaseConfig) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&config.path)
            .map_err(|e| StorageError::Engine(format!("cannot create {}: {e}", config.path.display())))?;
        let engine = rocks::RocksEngine::open(config)?;
        Self::with_engine(Arc::new(engine))
    }

    pub fn with_engine(engine: Arc<dyn Engine>) -> Result<Self, StorageError> {
        let sequences = Arc::new(sequence::Sequences::load(&*engine)?);
        let writer = writer::GroupCommit::start(engine.clone(), sequences.clone());
        Ok(Self { engine, writer, sequences })
    }

    /// Applies the batch atomically and returns once it is on disk, with the stream position it
    /// was given if it asked for one. Concurrent commits share one fsync.
    pub async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.commit(batch).await
    }

    /// The highest stream position committed: everything at or below it is on disk.
    pub fn stream_position(&self) -> u64 {
        self.sequences.position.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The next number of a short-ID sequence, recorded in `batch` so that the writer persists
    /// the counter with it.
    pub fn allocate(&self, batch: &mut Batch, sequence: Sequence) -> u64 {
        let value = self.sequences.next(sequence);
        batch.uses(sequence, value);
        value
    }

    /// How many durable writes (fsyncs) the writer made, and how many batches they carried.
    pub fn write_stats(&self) -> &WriteStats {
        self.writer.stats()
    }

    /// Applies the batch atomically without waiting for the disk: for bookkeeping that may be lost
    /// in a power cut (when a device was last seen), never for anything acknowledged to a client.
    pub fn commit_relaxed(&self, batch: Batch) -> Result<(), StorageError> {
        self.engine.write(std::slice::from_ref(&batch), false)
    }

    /// A named server-wide value (`Meta`).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.engine.get(Column::Meta, &key::meta(name))
    }

    fn get_json<T: DeserializeOwned>(&self, column: Column, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.engine.get(column, key)?.map(|bytes| decode(column, &bytes)).transpose()
    }

    fn exists(&self, column: Column, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.engine.get(column, key)?.is_some())
    }

    /// Every entry under `prefix`, with its value decoded.
    fn scan_json<T: DeserializeOwned>(&self, column: Column, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, StorageError> {
        self.engine
            .scan_prefix(column, prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key, decode(column, &value)?))
            })
            .collect()
    }
}

#[cfg(test)]
impl Storage {
    /// Whether any key or value in any column contains `needle` (to prove secrets are not stored).
    pub(crate) fn contains_bytes(&self, needle: &[u8]) -> bool {
        Column::ALL.iter().any(|&column| {
            self.engine.scan_prefix(column, b"").filter_map(Result::ok).any(|(key, value)| {
                key.windows(needle.len()).any(|w| w == needle) || value.windows(needle.len()).any(|w| w == needle)
            })
        })
    }
}

impl Drop for Storage {
    /// Closing: write what is queued, then flush memory to disk so the next start does not have to
    /// replay the log (the log alone would be enough for safety).
    fn drop(&mut self) {
        self.writer.close();
        match self.engine.flush() {
            Ok(()) => tracing::info!("database closed cleanly"),
            Err(e) => tracing::error!(error = %e, "flushing the database at close failed"),
        }
    }
}

pub(super) fn decode<T: DeserializeOwned>(column: Column, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(format!("{}: {e}", column.name())))
}

#[cfg(test)]
mod tests;
