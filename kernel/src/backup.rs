//! Whole-state operations: hashes for consistency checks, snapshot files for backups,
//! and restoring a new member's data dir from such a file.
//!
//! A snapshot file is Concord's own format (not etcd's bbolt file): a magic line, then
//! one record per stored entry of every state column family taken from one RocksDB
//! snapshot (column family index u8, key length u32 BE, key, value length u32 BE,
//! value), then an end marker (0xFF), zero padding to a multiple of 512 bytes, and the
//! SHA-256 of everything before it. That trailer is what etcd's snapshot stream ends
//! with and what `etcdctl snapshot save` checks for; restore verifies it, so truncation
//! and corruption are detected. Raft bookkeeping (applied log id, membership) is not
//! included: a restored member starts a new one-member cluster on the same keyspace, as
//! `etcdctl snapshot restore` does.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{DB, IteratorMode, WriteBatch};
use sha2::{Digest, Sha256};

use crate::encoding::{HistoryEntry, keyrev_key, split_keyrev_key};
use crate::error::{KernelError, KernelResult};
use crate::mvcc::{CF_KV_KEYREV, CF_META, ReadView, STATE_COLUMN_FAMILIES, cf};
use crate::state_machine::{RAFT_META_KEYS, open_state_db};
use crate::types::Revision;

const MAGIC: &[u8] = b"CONCORD-SNAPSHOT-1\n";
const END_OF_RECORDS: u8 = 0xFF;
/// The data before the checksum is padded to a multiple of this (etcd's sector size).
const PADDING_UNIT: u64 = 512;
const CHECKSUM_LEN: u64 = 32;
/// Records between two progress log lines.
const PROGRESS_EVERY: u64 = 100_000;

/// FNV-1a (64 bits, folded to 32 for etcd's hash fields): a small, stable hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The 64-bit hash folded to 32 bits, for the etcd hash fields.
    pub(crate) fn finish32(self) -> u32 {
        ((self.0 >> 32) ^ self.0) as u32
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> KernelError {
    KernelError::Storage(format!("{what} {}: {e}", path.display()))
}

/// Hash of the keyspace's history up to `revision` (etcd's HashKV): every key version
/// with a revision at or below it that compaction kept.
pub(crate) fn hash_kv(view: &ReadView<'_>, db: &DB, revision: Revision) -> KernelResult<u32> {
    let mut hash = Fnv64::default();
    for item in db.iterator_cf_opt(cf(db, CF_KV_KEYREV)?, view.options(), IteratorMode::Start) {
        let (raw_key, raw_value) = item?;
        let (key, rev) = split_keyrev_key(&raw_key)
            .ok_or_else(|| KernelError::Storage("corrupt keyrev record".into()))?;
        if rev > revision {
            continue;
        }
        hash.update(&keyrev_key(&key, rev));
        if let Some(HistoryEntry::Put(kv)) = HistoryEntry::decode(&raw_value) {
            hash.update(&kv.encode());
        }
    }
    Ok(hash.finish32())
}

/// Hash of every stored record of the state machine except Raft bookkeeping.
pub(crate) fn hash_all(view: &ReadView<'_>, db: &DB) -> KernelResult<u32> {
    let mut hash = Fnv64::default();
    for_each_record(view, db, |index, key, value| {
        hash.update(&[index]);
        hash.update(key);
        hash.update(value);
        Ok(())
    })?;
    Ok(hash.finish32())
}

fn for_each_record(
    view: &ReadView<'_>,
    db: &DB,
    mut f: impl FnMut(u8, &[u8], &[u8]) -> KernelResult<()>,
) -> KernelResult<()> {
    for (index, name) in STATE_COLUMN_FAMILIES.iter().enumerate() {
        let index = u8::try_from(index).map_err(|_| KernelError::Storage("too many CFs".into()))?;
        for item in db.iterator_cf_opt(cf(db, name)?, view.options(), IteratorMode::Start) {
            let (key, value) = item?;
            if *name == CF_META && RAFT_META_KEYS.contains(&key.as_ref()) {
                continue;
            }
            f(index, &key, &value)?;
        }
    }
    Ok(())
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: Revision,
    pub records: u64,
    pub bytes: u64,
}

/// Writes a point-in-time copy of the state machine to `path` (synced to disk).
pub(crate) fn write_snapshot(db: &DB, path: &Path) -> KernelResult<SnapshotInfo> {
    write_snapshot_of(&ReadView::snapshot(db), db, path)
}

/// Writes the state `view` sees to `path` (synced to disk); Raft snapshots are these
/// files too, sent to a lagging member in chunks.
pub(crate) fn write_snapshot_of(
    view: &ReadView<'_>,
    db: &DB,
    path: &Path,
) -> KernelResult<SnapshotInfo> {
    let revision = view.revision()?;
    let file = File::create(path).map_err(|e| io_error("cannot create", path, e))?;
    let mut out = ChecksummedWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let write = |out: &mut ChecksummedWriter, bytes: &[u8]| {
        out.write_all(bytes)
            .map_err(|e| io_error("cannot write", path, e))
    };
    write(&mut out, MAGIC)?;
    let mut records = 0u64;
    for_each_record(view, db, |index, key, value| {
        let key_len = u32::try_from(key.len()).map_err(|_| KernelError::RequestTooLarge)?;
        let value_len = u32::try_from(value.len()).map_err(|_| KernelError::RequestTooLarge)?;
        write(&mut out, &[index])?;
        write(&mut out, &key_len.to_be_bytes())?;
        write(&mut out, key)?;
        write(&mut out, &value_len.to_be_bytes())?;
        write(&mut out, value)?;
        records += 1;
        if records.is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(records, bytes = out.bytes, "writing snapshot");
        }
        Ok(())
    })?;
    write(&mut out, &[END_OF_RECORDS])?;
    let padding = (PADDING_UNIT - out.bytes % PADDING_UNIT) % PADDING_UNIT;
    write(&mut out, &vec![0u8; padding as usize])?;
    let checksum = out.hash.finalize_reset();
    out.inner
        .write_all(&checksum)
        .map_err(|e| io_error("cannot write", path, e))?;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_error("cannot write", path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| io_error("cannot sync", path, e))?;
    let info = SnapshotInfo {
        revision,
        records,
        bytes: out.bytes + CHECKSUM_LEN,
    };
    tracing::info!(?info, path = %path.display(), "snapshot written");
    Ok(info)
}

struct ChecksummedWriter {
    inner: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

impl Write for ChecksummedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the data part of a snapshot file (everything before the checksum), hashing
/// what it reads.
struct ChecksummedReader {
    inner: BufReader<std::io::Take<File>>,
    hash: Sha256,
}

impl ChecksummedReader {
    fn exact(&mut self, len: usize, path: &Path) -> KernelResult<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf).map_err(|e| {
            KernelError::Storage(format!(
                "snapshot {} is truncated or unreadable: {e}",
                path.display()
            ))
        })?;
        self.hash.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self, path: &Path) -> KernelResult<usize> {
        let raw = self.exact(4, path)?;
        let bytes: [u8; 4] = raw
            .try_into()
            .map_err(|_| KernelError::Storage("short read".into()))?;
        Ok(u32::from_be_bytes(bytes) as usize)
    }
}

fn corrupt_snapshot(path: &Path, what: &str) -> KernelError {
    KernelError::Storage(format!("snapshot {} is corrupt: {what}", path.display()))
}

/// Reads every record of a snapshot file, in order, handing each to `record`; checks
/// the magic line, the framing and the SHA-256 trailer (an error after some records
/// were handed over means the file is bad: callers verify first, then apply).
pub(crate) fn read_snapshot_records(
    mut file: File,
    path: &Path,
    mut record: impl FnMut(u8, Vec<u8>, Vec<u8>) -> KernelResult<()>,
) -> KernelResult<u64> {
    use std::io::{Seek, SeekFrom};
    let bytes = file
        .metadata()
        .map_err(|e| io_error("cannot read", path, e))?
        .len();
    if bytes % PADDING_UNIT != CHECKSUM_LEN || bytes < PADDING_UNIT + CHECKSUM_LEN {
        return Err(corrupt_snapshot(
            path,
            &format!("{bytes} bytes is not a whole snapshot (truncated?)"),
        ));
    }
    let data_len = bytes - CHECKSUM_LEN;
    let mut trailer = [0u8; CHECKSUM_LEN as usize];
    file.seek(SeekFrom::Start(data_len))
        .and_then(|_| file.read_exact(&mut trailer))
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .map_err(|e| io_error("cannot read", path, e))?;
    let mut input = ChecksummedReader {
        inner: BufReader::new(file.take(data_len)),
        hash: Sha256::new(),
    };
    if input.exact(MAGIC.len(), path)? != MAGIC {
        return Err(KernelError::Storage(format!(
            "{} is not a Concord snapshot file",
            path.display()
        )));
    }
    let mut records = 0u64;
    loop {
        let index = input.exact(1, path)?[0];
        if index == END_OF_RECORDS {
            break;
        }
        if usize::from(index) >= STATE_COLUMN_FAMILIES.len() {
            return Err(corrupt_snapshot(
                path,
                &format!("unknown record type {index}"),
            ));
        }
        let key_len = input.u32(path)?;
        let key = input.exact(key_len, path)?;
        let value_len = input.u32(path)?;
        let value = input.exact(value_len, path)?;
        record(index, key, value)?;
        records += 1;
        if records.is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(records, "reading snapshot");
        }
    }
    let mut padding = Vec::new();
    input
        .inner
        .read_to_end(&mut padding)
        .map_err(|e| io_error("cannot read", path, e))?;
    input.hash.update(&padding);
    if padding.iter().any(|b| *b != 0) {
        return Err(corrupt_snapshot(path, "data after the last record"));
    }
    if input.hash.finalize().as_slice() != trailer {
        return Err(corrupt_snapshot(path, "SHA-256 checksum mismatch"));
    }
    Ok(records)
}

/// Checks a snapshot file whole without keeping anything of it.
pub(crate) fn verify_snapshot(path: &Path) -> KernelResult<u64> {
    let file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    read_snapshot_records(file, path, |_, _, _| Ok(()))
}

/// Writes a verified snapshot file's records into `db`, in write batches of bounded
/// size (the file is never held in memory whole).
pub(crate) fn load_snapshot_records(db: &DB, path: &Path, sync: bool) -> KernelResult<u64> {
    let file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    let mut batch = WriteBatch::default();
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.disable_wal(!sync);
    let records = read_snapshot_records(file, path, |index, key, value| {
        batch.put_cf(
            cf(db, STATE_COLUMN_FAMILIES[usize::from(index)])?,
            key,
            value,
        );
        if batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            db.write_opt(std::mem::take(&mut batch), &write_options)?;
        }
        Ok(())
    })?;
    db.write_opt(batch, &write_options)?;
    Ok(records)
}

/// Bytes of records written to RocksDB at a time when loading a snapshot.
const LOAD_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Fills the (new, empty) state store under `data_dir` from a snapshot file. Returns
/// what it restored; refuses a data dir that already holds a state store.
pub fn restore_snapshot(snapshot: &Path, data_dir: &Path) -> KernelResult<SnapshotInfo> {
    let state_path = data_dir.join(crate::state_machine::STATE_DB_DIR);
    if state_path.exists()
        || data_dir.join(crate::log_store::LOG_DB_DIR).exists()
        || data_dir.join(crate::log_store::WAL_DIR).exists()
    {
        return Err(KernelError::Storage(format!(
            "data dir {} is not empty: restore needs a new one",
            data_dir.display()
        )));
    }
    let bytes = std::fs::metadata(snapshot)
        .map_err(|e| io_error("cannot open", snapshot, e))?
        .len();
    // Verify everything before touching the data dir.
    verify_snapshot(snapshot)?;
    std::fs::create_dir_all(data_dir).map_err(|e| io_error("cannot create", data_dir, e))?;
    let db = open_state_db(&state_path)?;
    let records = load_snapshot_records(&db, snapshot, true)?;
    db.flush_wal(true)?;
    let revision = ReadView::live(&db).revision()?;
    let info = SnapshotInfo {
        revision,
        records,
        bytes,
    };
    tracing::info!(?info, data_dir = %data_dir.display(), "snapshot restored");
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv64::default();
        h.update(b"a");
        assert_eq!(h.finish32(), 0xaf63_dc4c ^ 0x8601_ec8c);
    }

    #[test]
    fn files_end_with_etcds_checksum_trailer_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_state_db(&dir.path().join("source")).unwrap();
        let file = dir.path().join("snap");
        let info = write_snapshot(&db, &file).unwrap();
        assert_eq!(info.revision, 1);
        let full = std::fs::read(&file).unwrap();
        assert_eq!(full.len() as u64, info.bytes);
        // What `etcdctl snapshot save` checks: size % 512 == 32, SHA-256 at the end.
        assert_eq!(full.len() % 512, 32);
        let (data, checksum) = full.split_at(full.len() - 32);
        assert_eq!(Sha256::digest(data).as_slice(), checksum);
        std::fs::write(&file, &full[..full.len() - 3]).unwrap();
        let err = restore_snapshot(&file, &dir.path().join("a")).unwrap_err();
        assert!(err.to_string().contains("not a whole snapshot"), "{err}");
        let mut flipped = full.clone();
        flipped[MAGIC.len() + 2] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        let err = restore_snapshot(&file, &dir.path().join("b")).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let mut foreign = vec![0u8; 512 + 32];
        foreign[..4].copy_from_slice(b"PK\x03\x04");
        std::fs::write(&file, &foreign).unwrap();
        let err = restore_snapshot(&file, &dir.path().join("c")).unwrap_err();
        assert!(err.to_string().contains("not a Concord snapshot"), "{err}");
        std::fs::write(&file, &full).unwrap();
        let restored = restore_snapshot(&file, &dir.path().join("d")).unwrap();
        assert_eq!(restored.records, info.records);
    }
}
