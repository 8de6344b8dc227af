//! The Raft log: entries in segment files of their own (`wal.rs`), the vote, the
//! committed and purged log ids in a small RocksDB instance, with group commit.
//!
//! `append` writes the entries' records into the active segment at once (readable, not
//! yet durable). A member that leads others hands openraft's completion callback to the
//! flusher thread, so that its own fsync overlaps the replication openraft starts next;
//! the flusher takes every callback that is waiting, fsyncs each segment they wrote once,
//! and only then tells openraft the entries are persisted. Any other member (alone, or a
//! follower) syncs in `append` itself and reports at once, saving two thread hand-offs
//! per entry. Either way nothing is acknowledged before it is on disk. An in-memory
//! index maps each entry to its record; it is rebuilt at start-up by reading the
//! segments, which stops at the first record that is torn, damaged or out of sequence
//! and zeroes everything after it (never acknowledged, since it was not synced before
//! it).

// openraft's storage traits fix `StorageError` (a large type) as the error type.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, OptionalSend, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteOptions};

use crate::consensus::{LogId, StorageError, TypeConfig};
use crate::error::{KernelError, KernelResult};
use crate::mvcc::cf;
use crate::wal::{self, Parsed, RECORD_HEADER, SEGMENT_BYTES};

/// Entries written by versions before the segment files; moved out at start-up.
const CF_LOG: &str = "log";
const CF_RAFT_META: &str = "raft_meta";
pub(crate) const LOG_COLUMN_FAMILIES: [&str; 2] = [CF_LOG, CF_RAFT_META];
const META_VOTE: &[u8] = b"vote";
const META_LAST_PURGED: &[u8] = b"last_purged";
const META_COMMITTED: &[u8] = b"committed";
/// The data dir's RocksDB instance for the log's metadata (vote, committed, purge mark,
/// identity).
pub(crate) const LOG_DB_DIR: &str = "raft-log";
/// The directory of the segment files, beside [`LOG_DB_DIR`] in the data dir.
pub(crate) const WAL_DIR: &str = "raft-wal";

fn io_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Opens (creating if needed) the log's metadata database.
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

fn read_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let raw = read_local_meta(db, key).map_err(read_err)?;
    raw.map(|bytes| postcard::from_bytes(&bytes).map_err(read_err))
        .transpose()
}

/// One segment file, named after its first entry's index.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    file: File,
}

/// Where one entry's record is.
#[derive(Debug, Clone)]
struct Location {
    segment: Arc<Segment>,
    offset: u64,
    payload_len: u32,
    log_id: LogId,
}

impl Location {
    fn end(&self) -> u64 {
        self.offset + RECORD_HEADER as u64 + u64::from(self.payload_len)
    }
}

/// The entries in the log, by index, shared by the writer and the readers.
#[derive(Debug, Default)]
struct EntryIndex {
    /// Index of `locations[0]` (the next index to append when the log is empty).
    first: u64,
    locations: VecDeque<Location>,
    last_purged: Option<LogId>,
}

impl EntryIndex {
    fn next_index(&self) -> u64 {
        self.first + self.locations.len() as u64
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.locations
            .back()
            .map(|location| location.log_id)
            .or(self.last_purged)
    }

    /// Forgets the entries up to and including `upto`.
    fn purge(&mut self, upto: LogId) {
        let dropped = (upto.index + 1).saturating_sub(self.first);
        let dropped = usize::try_from(dropped).unwrap_or(usize::MAX);
        self.locations.drain(..dropped.min(self.locations.len()));
        self.first = self.first.max(upto.index + 1);
        self.last_purged = Some(upto);
    }
}

type SharedIndex = Arc<RwLock<EntryIndex>>;

fn lock_err() -> io::Error {
    io::Error::other("raft log index lock poisoned")
}

#[derive(Debug, Clone)]
pub struct LogReader {
    db: Arc<DB>,
    index: SharedIndex,
}

impl LogReader {
    fn read_index(&self) -> io::Result<RwLockReadGuard<'_, EntryIndex>> {
        self.index.read().map_err(|_| lock_err())
    }

    fn locations(&self, start: u64, end: u64) -> io::Result<Vec<Location>> {
        let index = self.read_index()?;
        let start = start.max(index.first);
        let end = end.min(index.next_index());
        Ok((start..end)
            .filter_map(|i| {
                let at = usize::try_from(i - index.first).ok()?;
                index.locations.get(at).cloned()
            })
            .collect())
    }
}

/// Reads the records at `locations` (consecutive records of one segment in one read) and
/// decodes their entries.
fn read_entries(locations: &[Location]) -> io::Result<Vec<Entry<TypeConfig>>> {
    let mut entries = Vec::with_capacity(locations.len());
    let mut rest = locations;
    while let Some(first) = rest.first() {
        let span = 1 + rest
            .windows(2)
            .take_while(|pair| {
                Arc::ptr_eq(&pair[0].segment, &pair[1].segment) && pair[0].end() == pair[1].offset
            })
            .count();
        let (run, after) = rest.split_at(span);
        let start = first.offset;
        let end = run.last().map_or(start, Location::end);
        let len = usize::try_from(end - start).map_err(io::Error::other)?;
        let mut bytes = vec![0u8; len];
        first.segment.file.read_exact_at(&mut bytes, start)?;
        for location in run {
            let at = usize::try_from(location.offset - start).map_err(io::Error::other)?;
            match wal::parse_record(&bytes, at) {
                Parsed::Record { index, payload, .. } if index == location.log_id.index => {
                    entries.push(postcard::from_bytes(payload).map_err(io::Error::other)?);
                }
                _ => {
                    return Err(corrupt(format!(
                        "raft log record of entry {} unreadable in {}",
                        location.log_id.index,
                        first.segment.path.display()
                    )));
                }
            }
        }
        rest = after;
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let locations = self.locations(start, end).map_err(read_err)?;
        read_entries(&locations).map_err(read_err)
    }
}

/// What start-up found in the segment directory.
struct Recovered {
    segments: Vec<Arc<Segment>>,
    locations: VecDeque<Location>,
    /// Where the next record goes in the last segment.
    write_at: u64,
}

/// Reads every segment in index order, keeping the entries after `last_purged`; stops at
/// the first record that is not a valid, in-sequence one and discards what follows it.
fn recover(dir: &Path, last_purged: Option<LogId>) -> io::Result<Recovered> {
    let purged_upto = last_purged.map(|id| id.index);
    let mut recovered = Recovered {
        segments: Vec::new(),
        locations: VecDeque::new(),
        write_at: 0,
    };
    let mut expected: Option<u64> = None;
    let mut damaged = false;
    for (first_index, path) in wal::list_segments(dir)? {
        if damaged || expected.is_some_and(|next| next != first_index) {
            if !damaged {
                tracing::warn!(
                    "raft log segment {} out of sequence: dropped",
                    path.display()
                );
            }
            damaged = true;
            std::fs::remove_file(&path)?;
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let segment = Arc::new(Segment {
            first_index,
            file: wal::open_segment(&path)?,
            path,
        });
        let (mut pos, mut next) = (0usize, first_index);
        loop {
            match wal::parse_record(&bytes, pos) {
                Parsed::Record {
                    index,
                    payload,
                    next: after,
                } if index == next => {
                    let entry: Entry<TypeConfig> =
                        postcard::from_bytes(payload).map_err(io::Error::other)?;
                    if purged_upto.is_none_or(|upto| index > upto) {
                        recovered.locations.push_back(Location {
                            segment: segment.clone(),
                            offset: pos as u64,
                            payload_len: payload.len() as u32,
                            log_id: entry.log_id,
                        });
                    }
                    (pos, next) = (after, next + 1);
                }
                Parsed::End => break,
                _ => {
                    tracing::warn!(
                        "raft log {}: unfinished or damaged record at byte {pos} (entry {next}); \
                         it and what follows were never acknowledged and are discarded",
                        segment.path.display()
                    );
                    damaged = true;
                    break;
                }
            }
        }
        // Bytes after the last good record are a crashed run's unacknowledged writes
        // (possibly whole records behind a lost header): zeroed, so that none can be
        // read as the continuation of the entries written there next.
        if bytes[pos..].iter().any(|b| *b != 0) {
            wal::zero_range(&segment.file, pos as u64, bytes.len() as u64)?;
            segment.file.sync_data()?;
        }
        expected = Some(next);
        recovered.write_at = pos as u64;
        recovered.segments.push(segment);
    }
    if damaged {
        wal::sync_dir(dir)?;
    }
    Ok(recovered)
}

/// The Raft log storage handed to openraft.
#[derive(Debug)]
pub struct LogStore {
    reader: LogReader,
    dir: PathBuf,
    /// In index order; the last one is written to.
    segments: Vec<Arc<Segment>>,
    /// Where the next record goes in the last segment.
    write_at: u64,
    /// The next segment, being zero-filled in the background.
    spare: Option<JoinHandle<io::Result<File>>>,
    /// `None` only while dropping.
    flusher: Option<mpsc::Sender<Flush>>,
    flusher_thread: Option<JoinHandle<()>>,
    /// Appends handed to the flusher and not yet reported.
    flusher_queued: Arc<AtomicUsize>,
    /// Whether `append` syncs itself (see the module comment); set by the kernel.
    sync_in_append: Arc<AtomicBool>,
}

/// An append waiting to be durable: openraft's callback and the segment written.
type Flush = (LogFlushed<TypeConfig>, Arc<Segment>);

impl Drop for LogStore {
    /// Stops the flusher and the spare's preparation and waits for them, so that no
    /// thread still holds the log's files or database when the log store is gone.
    fn drop(&mut self) {
        self.flusher.take();
        if let Some(thread) = self.flusher_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the raft log flusher panicked");
        }
        if let Some(spare) = self.spare.take()
            && spare.join().is_err()
        {
            tracing::error!("the raft log's spare segment preparation panicked");
        }
    }
}

fn prepare_spare_in_background(dir: &Path) -> io::Result<JoinHandle<io::Result<File>>> {
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("raft-log-spare".into())
        .spawn(move || wal::prepare_spare(&dir))
}

impl LogStore {
    /// Opens the log whose metadata is in `db` and whose entries are in segment files
    /// under `dir`, moving entries of an earlier version out of `db` first.
    pub fn new(db: Arc<DB>, dir: &Path) -> KernelResult<LogStore> {
        let storage = |what: &str, e: io::Error| {
            KernelError::Storage(format!("raft log {}: {what}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| storage("cannot create", e))?;
        let last_purged: Option<LogId> = read_meta(&db, META_LAST_PURGED)
            .map_err(|e| KernelError::Storage(format!("raft log metadata: {e}")))?;
        let recovered = recover(dir, last_purged).map_err(|e| storage("cannot read", e))?;
        let first = match recovered.locations.front() {
            Some(location) => location.log_id.index,
            None => last_purged.map_or(0, |id| id.index + 1),
        };
        let index = Arc::new(RwLock::new(EntryIndex {
            first,
            locations: recovered.locations,
            last_purged,
        }));
        let (tx, rx) = mpsc::channel::<Flush>();
        let flusher_queued = Arc::new(AtomicUsize::new(0));
        let queued = Arc::clone(&flusher_queued);
        let flusher_thread = std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || run_flusher(&rx, &queued))
            .map_err(|e| storage("cannot start the flusher", e))?;
        let mut store = LogStore {
            reader: LogReader { db, index },
            dir: dir.to_path_buf(),
            segments: recovered.segments,
            write_at: recovered.write_at,
            spare: Some(prepare_spare_in_background(dir).map_err(|e| storage("spare", e))?),
            flusher: Some(tx),
            flusher_thread: Some(flusher_thread),
            flusher_queued,
            sync_in_append: Arc::new(AtomicBool::new(true)),
        };
        store
            .drop_purged_segments()
            .map_err(|e| storage("cannot remove purged segments", e))?;
        store.move_entries_out_of_db()?;
        Ok(store)
    }

    fn db(&self) -> &DB {
        &self.reader.db
    }

    /// The switch between syncing in `append` (`true`, the default) and on the flusher
    /// thread (`false`), for the kernel to flip as this member's role changes.
    pub fn sync_in_append(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.sync_in_append)
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

    /// Entries a version before the segment files kept in the `log` column family go
    /// into segments (synced), then leave the database.
    fn move_entries_out_of_db(&mut self) -> KernelResult<()> {
        let db = self.reader.db.clone();
        let cf_log = cf(&db, CF_LOG)?;
        let mut entries = Vec::new();
        for item in db.iterator_cf(cf_log, IteratorMode::Start) {
            let (_, value) = item?;
            let entry: Entry<TypeConfig> = postcard::from_bytes(&value)
                .map_err(|e| KernelError::Storage(format!("raft log entry: {e}")))?;
            entries.push(entry);
        }
        let Some(last) = entries.last().map(|entry| entry.log_id.index) else {
            return Ok(());
        };
        let moving = |e: io::Error| KernelError::Storage(format!("moving raft log entries: {e}"));
        let next = self.read_index().map_err(moving)?.next_index();
        entries.retain(|entry| entry.log_id.index >= next);
        if !entries.is_empty() {
            let segment = self.write_entries(entries).map_err(moving)?;
            segment.file.sync_data().map_err(moving)?;
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        db.delete_range_cf_opt(cf_log, 0u64.to_be_bytes(), (last + 1).to_be_bytes(), &opts)?;
        tracing::info!("moved the raft log up to entry {last} into segment files");
        Ok(())
    }

    fn read_index(&self) -> io::Result<RwLockReadGuard<'_, EntryIndex>> {
        self.reader.read_index()
    }

    fn write_index(&self) -> io::Result<RwLockWriteGuard<'_, EntryIndex>> {
        self.reader.index.write().map_err(|_| lock_err())
    }

    /// Writes `entries` (which must continue the log) as records into the active
    /// segment, starting a new one if they do not fit; returns the segment written, to
    /// be synced. The entries are readable when this returns.
    fn write_entries<I>(&mut self, entries: I) -> io::Result<Arc<Segment>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut entries = entries.into_iter().peekable();
        let next = {
            let index = self.read_index()?;
            match entries.peek() {
                // An empty log (new, or purged up to its end) starts where it is told.
                Some(first) if index.locations.is_empty() => first.log_id.index,
                _ => index.next_index(),
            }
        };
        let mut bytes = Vec::new();
        let mut placed = Vec::new();
        for entry in entries {
            let expected = next + placed.len() as u64;
            if entry.log_id.index != expected {
                return Err(io::Error::other(format!(
                    "raft log append of entry {} where {expected} is next",
                    entry.log_id.index
                )));
            }
            let payload = postcard::to_allocvec(&entry).map_err(io::Error::other)?;
            placed.push((bytes.len() as u64, payload.len() as u32, entry.log_id));
            wal::encode_record(&mut bytes, entry.log_id.index, &payload)?;
        }
        if self.needs_new_segment(next, bytes.len() as u64) {
            self.start_segment(next)?;
        }
        let segment = self
            .segments
            .last()
            .cloned()
            .ok_or_else(|| io::Error::other("raft log without a segment"))?;
        segment.file.write_all_at(&bytes, self.write_at)?;
        let mut index = self.write_index()?;
        if index.locations.is_empty() {
            index.first = next;
        }
        for (at, payload_len, log_id) in placed {
            index.locations.push_back(Location {
                segment: segment.clone(),
                offset: self.write_at + at,
                payload_len,
                log_id,
            });
        }
        drop(index);
        self.write_at += bytes.len() as u64;
        Ok(segment)
    }

    fn needs_new_segment(&self, first_index: u64, len: u64) -> bool {
        match self.segments.last() {
            None => true,
            // Empty (after a truncation or purge) but named after another index.
            Some(active) if self.write_at == 0 => active.first_index != first_index,
            Some(_) => self.write_at + len > SEGMENT_BYTES,
        }
    }

    /// Makes the spare the active segment, named `first_index`, and starts the next spare.
    fn start_segment(&mut self, first_index: u64) -> io::Result<()> {
        if self.write_at == 0
            && let Some(empty) = self.segments.pop()
        {
            std::fs::remove_file(&empty.path)?;
        }
        let file = match self.spare.take() {
            Some(preparing) => preparing
                .join()
                .map_err(|_| io::Error::other("spare segment preparation panicked"))??,
            None => wal::prepare_spare(&self.dir)?,
        };
        let path = wal::take_spare(&self.dir, first_index)?;
        self.segments.push(Arc::new(Segment {
            first_index,
            path,
            file,
        }));
        self.write_at = 0;
        self.spare = Some(prepare_spare_in_background(&self.dir)?);
        Ok(())
    }

    /// Removes the segments that hold purged entries only.
    fn drop_purged_segments(&mut self) -> io::Result<()> {
        let keep_from = self
            .read_index()?
            .locations
            .front()
            .map(|location| location.segment.first_index);
        let before = self.segments.len();
        let mut removed = Vec::new();
        self.segments.retain(|segment| {
            let keep = keep_from.is_some_and(|first| segment.first_index >= first);
            if !keep {
                removed.push(segment.path.clone());
            }
            keep
        });
        if self.segments.is_empty() {
            self.write_at = 0;
        }
        for path in &removed {
            std::fs::remove_file(path)?;
        }
        if self.segments.len() != before {
            wal::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Removes the entries from `index` on: zeroes their records (synced), removes the
    /// later segments, and writes the next entries where the first removed one was.
    fn truncate_from(&mut self, index: u64) -> io::Result<()> {
        let mut entries = self.write_index()?;
        let index = index.max(entries.first);
        let Some(keep) = usize::try_from(index - entries.first)
            .ok()
            .filter(|keep| *keep < entries.locations.len())
        else {
            return Ok(());
        };
        let from = entries.locations[keep].clone();
        let end = entries
            .locations
            .iter()
            .rev()
            .find(|location| Arc::ptr_eq(&location.segment, &from.segment))
            .map_or(from.offset, Location::end);
        entries.locations.truncate(keep);
        drop(entries);
        let position = self
            .segments
            .iter()
            .position(|segment| Arc::ptr_eq(segment, &from.segment))
            .ok_or_else(|| io::Error::other("raft log entry in an unknown segment"))?;
        wal::zero_range(&from.segment.file, from.offset, end)?;
        from.segment.file.sync_data()?;
        let later: Vec<_> = self.segments.drain(position + 1..).collect();
        for segment in &later {
            std::fs::remove_file(&segment.path)?;
        }
        if !later.is_empty() {
            wal::sync_dir(&self.dir)?;
        }
        self.write_at = from.offset;
        Ok(())
    }
}

/// Group commit: wait for one pending append, take all others that queued meanwhile,
/// fsync each segment they wrote once, then release them all. Ends when the log store
/// is dropped.
fn run_flusher(pending: &mpsc::Receiver<Flush>, queued: &AtomicUsize) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let mut synced: Vec<&Arc<Segment>> = Vec::new();
        let mut result = Ok(());
        for (_, segment) in &batch {
            if synced.iter().any(|done| Arc::ptr_eq(done, segment)) {
                continue;
            }
            if let Err(e) = segment.file.sync_data() {
                result = Err(e.to_string());
            }
            synced.push(segment);
        }
        let count = batch.len();
        for (callback, _) in batch {
            callback.log_io_completed(result.clone().map_err(io::Error::other));
        }
        queued.fetch_sub(count, Ordering::AcqRel);
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
        let index = self.read_index().map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id: index.last_purged,
            last_log_id: index.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(META_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        read_meta(self.db(), META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(META_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(read_meta::<Option<LogId>>(self.db(), META_COMMITTED)?.flatten())
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
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let segment = self.write_entries(entries).map_err(io_err)?;
        // With earlier appends still at the flusher, this one follows them there, so that
        // openraft hears of flushes in log order.
        if self.sync_in_append.load(Ordering::Acquire)
            && self.flusher_queued.load(Ordering::Acquire) == 0
        {
            callback.log_io_completed(segment.file.sync_data());
            return Ok(());
        }
        self.flusher_queued.fetch_add(1, Ordering::AcqRel);
        self.flusher
            .as_ref()
            .and_then(|flusher| flusher.send((callback, segment)).ok())
            .ok_or_else(|| io_err(KernelError::Storage("log flusher stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_from(log_id.index).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(META_LAST_PURGED, &log_id, true)?;
        self.write_index().map_err(io_err)?.purge(log_id);
        self.drop_purged_segments().map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    struct Dirs {
        _root: tempfile::TempDir,
        db: PathBuf,
        wal: PathBuf,
    }

    fn dirs() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        Dirs {
            db: root.path().join(LOG_DB_DIR),
            wal: root.path().join(WAL_DIR),
            _root: root,
        }
    }

    fn open(dirs: &Dirs) -> LogStore {
        LogStore::new(open_log_db(&dirs.db).unwrap(), &dirs.wal).unwrap()
    }

    fn indexes(store: &LogStore) -> Vec<(u64, u64)> {
        let index = store.read_index().unwrap();
        let locations: Vec<_> = index.locations.iter().cloned().collect();
        read_entries(&locations)
            .unwrap()
            .into_iter()
            .map(|entry| (entry.log_id.leader_id.term, entry.log_id.index))
            .collect()
    }

    fn write(store: &mut LogStore, entries: impl IntoIterator<Item = Entry<TypeConfig>>) {
        let segment = store.write_entries(entries).unwrap();
        segment.file.sync_data().unwrap();
    }

    #[test]
    fn entries_survive_reopening_and_continue_in_sequence() {
        let dirs = dirs();
        let mut store = open(&dirs);
        write(&mut store, (0..5).map(|i| entry(1, i)));
        write(&mut store, [entry(2, 5)]);
        drop(store);
        let mut store = open(&dirs);
        assert_eq!(
            indexes(&store),
            [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]
        );
        assert!(
            store.write_entries([entry(2, 9)]).is_err(),
            "a gap is refused"
        );
        write(&mut store, [entry(2, 6)]);
        assert_eq!(indexes(&store).last(), Some(&(2, 6)));
    }

    #[test]
    fn entries_of_the_rocksdb_log_move_into_segments() {
        let dirs = dirs();
        {
            let db = open_log_db(&dirs.db).unwrap();
            let cf_log = cf(&db, CF_LOG).unwrap();
            for i in 3..7 {
                let bytes = postcard::to_allocvec(&entry(1, i)).unwrap();
                db.put_cf(cf_log, i.to_be_bytes(), bytes).unwrap();
            }
        }
        let store = open(&dirs);
        assert_eq!(indexes(&store), [(1, 3), (1, 4), (1, 5), (1, 6)]);
        let cf_log = cf(store.db(), CF_LOG).unwrap();
        assert!(
            store
                .db()
                .iterator_cf(cf_log, IteratorMode::Start)
                .next()
                .is_none()
        );
        drop(store);
        assert_eq!(indexes(&open(&dirs)).len(), 4);
    }

    #[test]
    fn a_torn_record_and_everything_after_it_are_discarded() {
        // Entry 4's record reached the disk only in part (its tail, or its header, is
        // missing); entry 5's, after it, whole.
        torn_entry_4(|torn| (torn.end() - 2, torn.end()));
        torn_entry_4(|torn| (torn.offset, torn.offset + RECORD_HEADER as u64));
    }

    fn torn_entry_4(lost: impl Fn(&Location) -> (u64, u64)) {
        let dirs = dirs();
        let mut store = open(&dirs);
        write(&mut store, (0..4).map(|i| entry(1, i)));
        write(&mut store, [entry(1, 4), entry(1, 5)]);
        let torn = store.read_index().unwrap().locations[4].clone();
        drop(store);
        let (from, to) = lost(&torn);
        wal::zero_range(&torn.segment.file, from, to).unwrap();
        let mut store = open(&dirs);
        assert_eq!(indexes(&store).len(), 4);
        // A new entry 4 of the same size: the old entry 5 behind it must stay gone.
        write(&mut store, [entry(1, 4)]);
        drop(store);
        let store = open(&dirs);
        assert_eq!(indexes(&store), [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]);
    }

    #[test]
    fn truncation_removes_entries_for_good() {
        let dirs = dirs();
        let mut store = open(&dirs);
        write(&mut store, (0..6).map(|i| entry(1, i)));
        store.truncate_from(3).unwrap();
        assert_eq!(indexes(&store).len(), 3);
        // Same sizes as the removed ones: a stale record must not come back after them.
        write(&mut store, [entry(2, 3)]);
        drop(store);
        let store = open(&dirs);
        assert_eq!(indexes(&store), [(1, 0), (1, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn full_segments_roll_over_and_purge_removes_old_ones() {
        let dirs = dirs();
        let mut store = open(&dirs);
        // Entries of about 64 KiB, in appends of 1 MiB: several segments.
        let big = |index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::LeaseCheckpoint(vec![(1, 1); 32 * 1024])),
        };
        let mut index = 0;
        while store.segments.len() < 3 {
            let mut batch = Vec::new();
            for _ in 0..16 {
                batch.push(big(index));
                index += 1;
            }
            write(&mut store, batch);
        }
        let firsts: Vec<u64> = store.segments.iter().map(|s| s.first_index).collect();
        assert_eq!(firsts[0], 0);
        let second = firsts[1];
        drop(store);
        let mut store = open(&dirs);
        assert_eq!(indexes(&store).len() as u64, index);
        let purge_to = LogId::new(CommittedLeaderId::new(1, 1), second);
        store.write_index().unwrap().purge(purge_to);
        store.drop_purged_segments().unwrap();
        assert_eq!(store.segments[0].first_index, second);
        assert!(!wal::segment_path(&dirs.wal, 0).exists());
        // Purging past the end empties the log; the next entry starts a new segment.
        let beyond = LogId::new(CommittedLeaderId::new(1, 1), index + 10);
        store.write_index().unwrap().purge(beyond);
        store.drop_purged_segments().unwrap();
        assert!(store.segments.is_empty());
        write(&mut store, [big(index + 11)]);
        assert_eq!(store.segments[0].first_index, index + 11);
    }
}
