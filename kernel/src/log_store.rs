//! The Raft log and vote, in a RocksDB instance of their own, with group commit.
//!
//! `append` writes entries to RocksDB at once (visible to readers, not yet durable) and
//! hands the completion callback to the flusher thread. The flusher takes every callback
//! that is waiting, makes the WAL durable with one fsync, and only then tells openraft the
//! entries are persisted: concurrent writes share an fsync, and nothing is acknowledged
//! before it is on disk.

// openraft's storage traits fix `StorageError` (a large type) as the error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, OptionalSend, StorageIOError, Vote};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::consensus::{LogId, StorageError, TypeConfig};
use crate::error::{KernelError, KernelResult};
use crate::mvcc::cf;

const CF_LOG: &str = "log";
const CF_RAFT_META: &str = "raft_meta";
pub(crate) const LOG_COLUMN_FAMILIES: [&str; 2] = [CF_LOG, CF_RAFT_META];
const META_VOTE: &[u8] = b"vote";
const META_LAST_PURGED: &[u8] = b"last_purged";
const META_COMMITTED: &[u8] = b"committed";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

/// Opens (creating if needed) the log database.
pub fn open_log_db(path: &Path) -> KernelResult<Arc<DB>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = LOG_COLUMN_FAMILIES
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

/// Node-local metadata kept beside the log (never replicated).
pub fn read_local_meta(db: &DB, key: &[u8]) -> KernelResult<Option<Vec<u8>>> {
    Ok(db.get_cf(cf(db, CF_RAFT_META)?, key)?)
}

pub fn write_local_meta(db: &DB, key: &[u8], value: &[u8]) -> KernelResult<()> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    Ok(db.put_cf_opt(cf(db, CF_RAFT_META)?, key, value, &opts)?)
}

#[derive(Debug, Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

impl LogReader {
    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = read_local_meta(&self.db, key).map_err(read_err)?;
        raw.map(|bytes| postcard::from_bytes(&bytes).map_err(read_err))
            .transpose()
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StorageError> {
        let cf_log = cf(&self.db, CF_LOG).map_err(read_err)?;
        match self.db.iterator_cf(cf_log, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                Ok(Some(postcard::from_bytes(&value).map_err(read_err)?))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(i) => *i,
            std::ops::Bound::Excluded(i) => i + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let cf_log = cf(&self.db, CF_LOG).map_err(read_err)?;
        let iter = self.db.iterator_cf(
            cf_log,
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| read_err(KernelError::Storage("corrupt log index".into())))?,
            );
            if !range.contains(&index) {
                break;
            }
            entries.push(postcard::from_bytes(&value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

/// The Raft log storage handed to openraft.
#[derive(Debug)]
pub struct LogStore {
    reader: LogReader,
    /// `None` only while dropping.
    flusher: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    flusher_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    /// Stops the flusher and waits for it, so that its handle on the database is gone
    /// when the log store is: a RocksDB instance still open in a stray thread when the
    /// process exits aborts it.
    fn drop(&mut self) {
        self.flusher.take();
        if let Some(thread) = self.flusher_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the raft log flusher panicked");
        }
    }
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> KernelResult<LogStore> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || run_flusher(&flush_db, &rx))
            .map_err(|e| KernelError::Storage(format!("cannot start log flusher: {e}")))?;
        Ok(LogStore {
            reader: LogReader { db },
            flusher: Some(tx),
            flusher_thread: Some(thread),
        })
    }

    fn db(&self) -> &DB {
        &self.reader.db
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(value).map_err(io_err)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let cf_meta = cf(self.db(), CF_RAFT_META).map_err(io_err)?;
        self.db()
            .put_cf_opt(cf_meta, key, bytes, &opts)
            .map_err(io_err)
    }
}

/// Group commit: wait for one pending append, take all others that queued meanwhile,
/// fsync once, then release them all. Ends when the log store is dropped.
fn run_flusher(db: &DB, pending: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let result = db.flush_wal(true);
        for callback in batch {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.reader.meta(META_LAST_PURGED)?;
        let last_log_id = match self.reader.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(META_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.reader.meta(META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(META_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.reader.meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf_log = cf(self.db(), CF_LOG).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(io_err)?;
            batch.put_cf(cf_log, index_key(entry.log_id.index), bytes);
        }
        self.db().write(batch).map_err(io_err)?;
        self.flusher
            .as_ref()
            .and_then(|flusher| flusher.send(callback).ok())
            .ok_or_else(|| io_err(KernelError::Storage("log flusher stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf_log = cf(self.db(), CF_LOG).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf_log, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf_log, index_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db().write_opt(batch, &opts).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf_log = cf(self.db(), CF_LOG).map_err(io_err)?;
        let cf_meta = cf(self.db(), CF_RAFT_META).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf_meta,
            META_LAST_PURGED,
            postcard::to_allocvec(&log_id).map_err(io_err)?,
        );
        batch.delete_range_cf(cf_log, index_key(0), index_key(log_id.index + 1));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db().write_opt(batch, &opts).map_err(io_err)
    }
}
