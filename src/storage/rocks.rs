//! The RocksDB engine.

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::{
    Batch, Column, StorageError,
    batch::Op,
    engine::{Engine, Entry},
    schema::Access,
};
use crate::config::DatabaseConfig;

/// Memtables grow in blocks of this size. RocksDB's default (an eighth of a memtable) would give
/// every column that was written to at least that much, counted against the budget whether used or
/// not; with a few dozen columns, most of them small, small blocks keep the budget for real data.
/// At 128 KiB each block is a mapping of its own (see `main.rs`), returned to the system when its
/// memtable is flushed rather than left as a hole in the heap.
const ARENA_BLOCK: usize = 128 * 1024;

pub struct RocksEngine {
    db: DB,
}

impl RocksEngine {
    /// Opens (or creates) the database. RocksDB holds a lock file, so a second process opening the
    /// same directory fails here instead of corrupting it.
    pub fn open(config: &DatabaseConfig) -> Result<Self, StorageError> {
        let path = &config.path;
        let cache = Cache::new_lru_cache(config.cache_mb * 1024 * 1024).map_err(engine_error)?;
        let write_buffer = config.write_buffer_mb * 1024 * 1024;

        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // After a crash, replay the log up to the last intact record: a torn tail is dropped,
        // everything acknowledged before it (synced) is kept.
        db_options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        db_options.set_max_log_file_size(8 * 1024 * 1024);
        db_options.set_max_total_wal_size(64 * 1024 * 1024);
        // Memtables of all columns together stay under this (the largest is flushed when they
        // reach it); a column that fills its own share is flushed early. Without it each column
        // may hold up to 128 MiB of unflushed writes. Recent events are served from the rooms'
        // own cache, so memtables need not be large to keep reads fast.
        db_options.set_db_write_buffer_size(write_buffer);

        let descriptors = Column::ALL.iter().map(|&column| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            if column.access() == Access::Point {
                table.set_bloom_filter(10.0, false);
            }
            let mut options = Options::default();
            options.set_block_based_table_factory(&table);
            options.set_write_buffer_size(write_buffer / 4);
            options.set_arena_block_size(ARENA_BLOCK);
            options.set_compression_type(DBCompressionType::Lz4);
            options.set_bottommost_compression_type(DBCompressionType::Zstd);
            ColumnFamilyDescriptor::new(column.name(), options)
        });

        let db = DB::open_cf_descriptors(&db_options, path, descriptors).map_err(|e| {
            if e.to_string().contains("lock") {
                StorageError::Engine(format!(
                    "the database at {} is in use by another process (is the server running?)",
                    path.display()
                ))
            } else {
                engine_error(e)
            }
        })?;
        Ok(Self { db })
    }

    fn cf(&self, column: Column) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(column.name()).expect("every column family is created at open")
    }
}

fn engine_error(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.into_string())
}

impl Engine for RocksEngine {
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(column), key).map_err(engine_error)
    }

    fn scan_prefix<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a> {
        let mut options = ReadOptions::default();
        if let Some(upper) = prefix_upper_bound(prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let prefix = prefix.to_vec();
        let iter = self
            .db
            .iterator_cf_opt(self.cf(column), options, IteratorMode::From(&prefix, Direction::Forward))
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(engine_error));
        Box::new(iter)
    }

    fn scan_from<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a> {
        let mut options = ReadOptions::default();
        if let Some(upper) = prefix_upper_bound(prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let start = start.to_vec();
        let iter = self
            .db
            .iterator_cf_opt(self.cf(column), options, IteratorMode::From(&start, Direction::Forward))
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(engine_error));
        Box::new(iter)
    }

    fn scan_prefix_rev<'a>(
        &'a self,
        column: Column,
        prefix: &[u8],
        before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry, StorageError>> + 'a> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(prefix.to_vec());
        let upper = match before {
            Some(before) => Some(before.to_vec()),
            None => prefix_upper_bound(prefix),
        };
        let mode = match &upper {
            Some(upper) => {
                options.set_iterate_upper_bound(upper.clone());
                IteratorMode::From(upper.as_slice(), Direction::Reverse)
            }
            None => IteratorMode::End,
        };
        let iter = self
            .db
            .iterator_cf_opt(self.cf(column), options, mode)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(engine_error));
        Box::new(iter)
    }

    fn write(&self, batches: &[Batch], durable: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                Op::Put { column, key, value } => batch.put_cf(self.cf(*column), key, value),
                Op::Delete { column, key } => batch.delete_cf(self.cf(*column), key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(durable);
        self.db.write_opt(batch, &options).map_err(engine_error)
    }

    fn flush(&self) -> Result<(), StorageError> {
        for column in Column::ALL {
            self.db.flush_cf(self.cf(column)).map_err(engine_error)?;
        }
        self.db.flush_wal(true).map_err(engine_error)
    }
}

/// The smallest key greater than every key that starts with `prefix`, if there is one.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn upper_bound_of_a_prefix() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[b'a', 0xFF]), Some(vec![b'b']));
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_upper_bound(b""), None);
    }
}
