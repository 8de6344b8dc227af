//! The replicated state machine: applies committed commands to the MVCC keyspace, writing
//! each entry's changes and the applied log id in one RocksDB WriteBatch, and builds or
//! installs snapshots of the whole state.

// openraft's storage traits fix `StorageError` (a large type) as the error type.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, FlushOptions, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use serde::Serialize;

use crate::alarm::{Alarms, META_ALARMS};
use crate::consensus::MemberNode;
use crate::consensus::{Command, CommandOutcome, CommandReply, LogId, StorageError, TypeConfig};
use crate::error::{KernelError, KernelResult};
use crate::lease::{LeaseRecord, Lessor, lease_key};
use crate::mvcc::{
    CF_KV_LATEST, CF_LEASE, CF_META, CF_TREE_META, Change, MvccWriter, Pending, ReadView,
    STATE_COLUMN_FAMILIES, cf, is_point_txn,
};
use crate::node_cache::NodeCache;
use crate::tree::{TreeExecutor, TreeMeta};
use crate::types::{
    Alarm, DeleteRangeRequest, RequestOp, Revision, TreeError, TreeNode, TreeOp, TreeOpResult,
    TxnRequest,
};
use crate::watch::WatchHub;

const META_APPLIED: &[u8] = b"applied";
const META_MEMBERSHIP: &[u8] = b"membership";
/// How far the state machine got inside a batch entry: (log id, index of the last
/// command applied). Written with each command of a batch, so that a crash in the middle
/// of one resumes after the commands already applied instead of applying them twice.
const META_BATCH_PROGRESS: &[u8] = b"batch_progress";

/// Set (synced) while a received snapshot replaces the state, cleared in the same
/// write that completes it: found at start-up, the state is a mix of old and new.
const META_INSTALLING: &[u8] = b"installing_snapshot";
/// Raft's own records in the `meta` column family (not part of the keyspace's state).
pub(crate) const RAFT_META_KEYS: [&[u8]; 4] = [
    META_APPLIED,
    META_MEMBERSHIP,
    META_BATCH_PROGRESS,
    META_INSTALLING,
];

type Membership = StoredMembership<u64, MemberNode>;
type Meta = SnapshotMeta<u64, MemberNode>;
/// The last snapshot built or installed (its file in the snapshot dir), shared with the
/// snapshot builder.
type SharedSnapshot = Arc<Mutex<Option<(Meta, PathBuf)>>>;

/// Where Raft snapshot files live: `snapshots/` beside the state store.
fn snapshot_dir(db: &DB) -> PathBuf {
    db.path()
        .parent()
        .map_or_else(|| PathBuf::from("snapshots"), |p| p.join("snapshots"))
}

/// A name no other file in the snapshot dir has.
fn fresh_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{nanos}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes `file` the current snapshot and deletes the snapshot files before it.
fn set_current(shared: &SharedSnapshot, meta: Meta, file: PathBuf) {
    let previous = match shared.lock() {
        Ok(mut current) => current.replace((meta, file)),
        Err(_) => None,
    };
    if let Some((_, old)) = previous {
        let _ = std::fs::remove_file(old);
    }
}

fn sm_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// The data dir's RocksDB instance for the state machine.
pub(crate) const STATE_DB_DIR: &str = "state";

/// Memtable size of each state column family. With RocksDB's default (64 MiB) every
/// apply-time insert and lookup walks a skiplist far larger than the CPU caches: under
/// the `bench` Put load those walks took 18% of the server's CPU samples. At 4 MiB they
/// take 7%, and all RocksDB code together (flushes and compactions included) fell from
/// 22% to 13%; at 1 MiB the extra flushes cost more than the shorter walks saved.
const STATE_MEMTABLE_BYTES: usize = 4 << 20;

/// The block cache all state column families share (RocksDB's default is a separate
/// 32 MiB cache per column family).
const STATE_BLOCK_CACHE_BYTES: usize = 128 << 20;

/// The column families read by key on every write (a Put reads the key's latest record,
/// a ZooKeeper write its node's metadata): their SST files carry bloom filters, so a
/// lookup skips the files that cannot hold the key instead of searching each one.
const POINT_LOOKUP_COLUMN_FAMILIES: [&str; 4] = [CF_KV_LATEST, CF_TREE_META, CF_LEASE, CF_META];

/// Opens (creating if needed) the state machine's database. Its writes skip RocksDB's
/// WAL (see [`apply_write_options`]); `atomic_flush` makes every memtable flush cover all
/// column families at once, so what survives a crash is always one consistent applied
/// prefix of the log.
pub fn open_state_db(path: &Path) -> KernelResult<Arc<DB>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_atomic_flush(true);
    let cache = Cache::new_lru_cache(STATE_BLOCK_CACHE_BYTES);
    let cfs = STATE_COLUMN_FAMILIES.into_iter().map(|name| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        if POINT_LOOKUP_COLUMN_FAMILIES.contains(&name) {
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        }
        let mut cf_opts = Options::default();
        cf_opts.set_write_buffer_size(STATE_MEMTABLE_BYTES);
        cf_opts.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(name, cf_opts)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

/// How applied entries are written: without RocksDB's WAL. The Raft log is the state
/// machine's write-ahead log: it is fsync'd before anything is acknowledged, and after a
/// crash openraft re-applies every entry after the last applied mark that reached an SST
/// file. Log entries are purged only behind a Raft snapshot, and building one first
/// flushes the memtables (see `SnapshotBuilder`), so no purged entry is missing from
/// durable state.
fn apply_write_options() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    opts
}

/// Flushes every state column family's memtable to disk, atomically (one consistent
/// point for data and applied mark). `DB::flush` alone covers only the default column
/// family.
pub(crate) fn flush_state(db: &DB) -> KernelResult<()> {
    let handles = STATE_COLUMN_FAMILIES
        .iter()
        .map(|name| cf(db, name))
        .collect::<KernelResult<Vec<_>>>()?;
    db.flush_cfs_opt(&handles, &FlushOptions::default())?;
    Ok(())
}

/// Point transactions of one batch entry staged together (see
/// [`StateMachine::apply_batch`]): their writes, what reads must see of them, and the
/// changes to publish once written.
#[derive(Default)]
struct SharedBatch {
    batch: WriteBatch,
    /// Set by the first point txn staged, from the stored state.
    pending: Option<Pending>,
    published: Vec<(Revision, Vec<Change>)>,
    /// The index in the entry of the last command covered.
    last_index: Option<usize>,
}

/// What a command does beyond its WriteBatch, carried out once the batch is written.
#[derive(Debug, Default)]
struct Effects {
    /// The revision a command wrote and its changes, for the watch hub.
    changed: Option<(Revision, Vec<Change>)>,
    granted: Option<(i64, i64)>,
    revoked: Option<i64>,
    alarms: Option<Vec<Alarm>>,
}

#[derive(Debug)]
pub struct StateMachine {
    db: Arc<DB>,
    writer: MvccWriter,
    hub: WatchHub,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    current_snapshot: SharedSnapshot,
    /// The file a snapshot from the leader is being received into.
    receiving: Arc<Mutex<Option<PathBuf>>>,
    /// Told of every state write before its revision is published.
    node_cache: Arc<NodeCache>,
}

impl StateMachine {
    pub(crate) fn new(
        db: Arc<DB>,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        alarms: Arc<Alarms>,
        node_cache: Arc<NodeCache>,
    ) -> Self {
        // Snapshot files of an earlier run are not referred to by anything any more.
        let dir = snapshot_dir(&db);
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("cannot create snapshot dir {}: {e}", dir.display());
        }
        StateMachine {
            writer: MvccWriter::new(db.clone()),
            db,
            hub,
            lessor,
            alarms,
            current_snapshot: Arc::default(),
            receiving: Arc::default(),
            node_cache,
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &DB,
        opts: ReadOptions,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let cf_meta = cf(db, CF_META).map_err(sm_err)?;
        match db.get_cf_opt(cf_meta, key, &opts).map_err(sm_err)? {
            None => Ok(None),
            Some(raw) => Ok(Some(postcard::from_bytes(&raw).map_err(sm_err)?)),
        }
    }

    fn execute(
        &self,
        command: &Command,
        batch: &mut WriteBatch,
        effects: &mut Effects,
    ) -> CommandOutcome {
        match command {
            Command::Txn(txn) => {
                let applied = self.writer.txn(txn, batch)?;
                effects.changed = Some((applied.revision, applied.changes));
                Ok(CommandReply::Txn(applied.response))
            }
            Command::Compact(revision) => {
                let removed = self.writer.compact(*revision, batch)?;
                tracing::info!(revision, removed, "compacted history");
                Ok(CommandReply::Compacted {
                    revision: *revision,
                })
            }
            Command::LeaseGrant { id, ttl } => {
                let view = ReadView::live(&self.db);
                if view.lease(*id)?.is_some() {
                    return Err(KernelError::LeaseExists);
                }
                let record = LeaseRecord {
                    ttl: *ttl,
                    remaining: 0,
                };
                batch.put_cf(cf(&self.db, CF_LEASE)?, lease_key(*id), record.encode());
                effects.granted = Some((*id, *ttl));
                Ok(CommandReply::LeaseGranted {
                    revision: view.revision()?,
                })
            }
            Command::LeaseRevoke(id) => {
                let view = ReadView::live(&self.db);
                if view.lease(*id)?.is_none() {
                    return Err(KernelError::LeaseNotFound);
                }
                // The attached keys go in one transaction: one revision for all. A v2
                // directory that expires takes everything under it along.
                let mut success = Vec::new();
                for key in view.lease_keys(*id)? {
                    if crate::tree::is_directory(&view, &key)? {
                        let (start, end) = crate::tree::descendants(&key);
                        success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                            key: start,
                            range_end: end,
                            prev_kv: false,
                        }));
                    }
                    success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                        key,
                        range_end: Vec::new(),
                        prev_kv: false,
                    }));
                }
                let deletes = TxnRequest {
                    compare: Vec::new(),
                    success,
                    failure: Vec::new(),
                };
                let applied = self.writer.txn(&deletes, batch)?;
                batch.delete_cf(cf(&self.db, CF_LEASE)?, lease_key(*id));
                effects.changed = Some((applied.revision, applied.changes));
                effects.revoked = Some(*id);
                Ok(CommandReply::LeaseRevoked {
                    revision: applied.revision,
                })
            }
            Command::LeaseCheckpoint(remaining) => {
                let view = ReadView::live(&self.db);
                let leases = cf(&self.db, CF_LEASE)?;
                for (id, left) in remaining {
                    if let Some(mut record) = view.lease(*id)? {
                        record.remaining = (*left).clamp(1, record.ttl.max(1));
                        batch.put_cf(leases, lease_key(*id), record.encode());
                    }
                }
                Ok(CommandReply::Internal)
            }
            Command::Batch(_) => Err(KernelError::Storage(
                "a command batch is applied by apply_batch".into(),
            )),
            Command::Tree { ops, now_ms } => {
                let exec = TreeExecutor::new(&self.db, ReadView::live(&self.db), *now_ms)?;
                let run = TreeRun::of(exec, ops)?;
                let revision = run.reply_revision();
                if run.changes.is_empty() {
                    // Metadata alone (setACL) changes no key and takes no revision.
                    let view = ReadView::live(&self.db);
                    crate::tree::stage_meta(&self.db, &view, revision, &[], run.metas, batch)?;
                } else {
                    self.writer
                        .stage_changes(revision, &run.changes, run.metas, batch)?;
                    effects.changed = Some((revision, run.changes));
                }
                Ok(CommandReply::Tree {
                    revision,
                    outcome: run.outcome,
                })
            }
            Command::SetAlarm { alarm, active } => {
                let mut alarms = stored_alarms(&self.db)?;
                alarms.retain(|a| a != alarm);
                if *active {
                    alarms.push(*alarm);
                    tracing::warn!(?alarm, "alarm raised");
                } else {
                    tracing::info!(?alarm, "alarm disarmed");
                }
                alarms.sort_unstable();
                let encoded = postcard::to_allocvec(&alarms)
                    .map_err(|e| KernelError::Storage(e.to_string()))?;
                batch.put_cf(cf(&self.db, CF_META)?, META_ALARMS, encoded);
                effects.alarms = Some(alarms);
                Ok(CommandReply::Internal)
            }
        }
    }

    /// Executes one command into `batch`; a failed command leaves `batch` and `effects`
    /// empty (it changes nothing but the applied mark).
    fn execute_one(
        &self,
        command: &Command,
        batch: &mut WriteBatch,
        effects: &mut Effects,
    ) -> CommandOutcome {
        let outcome = self.execute(command, batch, effects);
        if outcome.is_err() {
            *batch = WriteBatch::default();
            *effects = Effects::default();
        }
        outcome
    }

    /// Applies a batch entry command by command, each seeing the ones before it. Point
    /// transactions (the common Put, Get and single-key Txn) are staged together into one
    /// shared WriteBatch, read back through [`Pending`]; any other command first writes
    /// what is staged, then runs alone with its own WriteBatch. Every write carries the
    /// batch progress mark (the index of the last command it covers), the last one also
    /// the applied log id. After a crash in the middle, the commands up to the progress
    /// mark are skipped (their clients were never answered).
    fn apply_batch(
        &self,
        log_id: LogId,
        commands: &[Command],
    ) -> Result<CommandReply, StorageError> {
        let cf_meta = cf(&self.db, CF_META).map_err(sm_err)?;
        let done: Option<(LogId, usize)> =
            Self::read_meta(&self.db, ReadOptions::default(), META_BATCH_PROGRESS)?;
        let resume_after = done.filter(|(id, _)| *id == log_id).map(|(_, index)| index);
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut shared = SharedBatch::default();
        let mut applied_written = false;
        for (index, command) in commands.iter().enumerate() {
            if resume_after.is_some_and(|last| index <= last) {
                outcomes.push(Err(KernelError::Storage(
                    "applied before a restart; outcome unknown".into(),
                )));
                continue;
            }
            let last = index + 1 == commands.len();
            if let Some(outcome) = self.stage_shared(&mut shared, index, command)? {
                outcomes.push(outcome);
                if last {
                    self.write_shared(&mut shared, log_id, true)?;
                    applied_written = true;
                }
                continue;
            }
            self.write_shared(&mut shared, log_id, false)?;
            let mut batch = WriteBatch::default();
            let mut effects = Effects::default();
            let outcome = if matches!(command, Command::Batch(_)) {
                Err(KernelError::Storage("nested command batch".into()))
            } else {
                self.execute_one(command, &mut batch, &mut effects)
            };
            stage_progress(&mut batch, cf_meta, log_id, index, last)?;
            applied_written |= last;
            self.write(batch)?;
            self.carry_out(effects);
            outcomes.push(outcome);
        }
        if !applied_written {
            // An empty batch (or nothing left to re-apply) still moves the applied mark.
            let mut batch = WriteBatch::default();
            stage_applied(&mut batch, cf_meta, log_id)?;
            self.write(batch)?;
        }
        Ok(CommandReply::Batch(outcomes))
    }

    /// Runs command `index` of a batch on top of what `shared` has staged and stages its
    /// changes there. `None` when it must run alone instead: it is not a point txn nor a
    /// tree write of creates, setData and checks, or it needed a read that [`Pending`]
    /// does not cover (nothing of it is staged then).
    fn stage_shared(
        &self,
        shared: &mut SharedBatch,
        index: usize,
        command: &Command,
    ) -> Result<Option<CommandOutcome>, StorageError> {
        let (pending, run) = match command {
            Command::Txn(txn) if is_point_txn(txn) => {
                let pending = pending_over(&mut shared.pending, &self.db)?;
                let run = self.writer.txn_over_pending(txn, pending).map(|applied| {
                    let reply = CommandReply::Txn(applied.response);
                    (applied.revision, applied.changes, BTreeMap::new(), reply)
                });
                (pending, run)
            }
            Command::Tree { ops, now_ms } if ops.iter().all(joins_shared_batch) => {
                let pending = pending_over(&mut shared.pending, &self.db)?;
                let view = ReadView::over_pending(&self.db, pending);
                let run = TreeExecutor::new(&self.db, view, *now_ms)
                    .and_then(|exec| TreeRun::of(exec, ops))
                    .map(|run| {
                        let reply = CommandReply::Tree {
                            revision: run.reply_revision(),
                            outcome: run.outcome,
                        };
                        (run.revision, run.changes, run.metas, reply)
                    });
                (pending, run)
            }
            _ => return Ok(None),
        };
        if pending.take_refusal() {
            return Ok(None);
        }
        let (revision, changes, metas, reply) = match run {
            Ok(run) => run,
            Err(error) => {
                shared.last_index = Some(index);
                return Ok(Some(Err(error)));
            }
        };
        if !changes.is_empty() {
            let staged = {
                let view = ReadView::over_pending(&self.db, pending);
                crate::tree::stage_meta(
                    &self.db,
                    &view,
                    revision,
                    &changes,
                    metas,
                    &mut shared.batch,
                )
            };
            let staged_metas = match staged {
                Ok(staged) => staged,
                Err(_) if pending.take_refusal() => return Ok(None),
                Err(error) => {
                    // Nothing was staged: stage_meta reads before it writes.
                    shared.last_index = Some(index);
                    return Ok(Some(Err(error)));
                }
            };
            self.writer
                .stage_key_changes(revision, &changes, &mut shared.batch)
                .map_err(sm_err)?;
            pending.record(revision, &changes);
            pending.record_metas(staged_metas);
            shared.published.push((revision, changes));
        }
        shared.last_index = Some(index);
        Ok(Some(Ok(reply)))
    }

    /// Writes what `shared` has staged (if anything) with the revision and progress
    /// marks, and the applied log id when `entry_done`; then publishes the changes.
    fn write_shared(
        &self,
        shared: &mut SharedBatch,
        log_id: LogId,
        entry_done: bool,
    ) -> Result<(), StorageError> {
        // Taken whole, so that nothing read from the stored state before a command that
        // runs alone outlives it (a point txn that ran alone left `pending` set).
        let SharedBatch {
            mut batch,
            pending,
            published,
            last_index,
        } = std::mem::take(shared);
        let (Some(index), Some(pending)) = (last_index, pending) else {
            return Ok(());
        };
        if !published.is_empty() {
            self.writer
                .stage_revision(pending.revision(), &mut batch)
                .map_err(sm_err)?;
        }
        let cf_meta = cf(&self.db, CF_META).map_err(sm_err)?;
        stage_progress(&mut batch, cf_meta, log_id, index, entry_done)?;
        let revision = pending.revision();
        self.write_nodes(batch, pending.into_written_nodes(), revision)?;
        for (revision, changes) in published {
            self.hub.publish(revision, &changes);
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write_nodes(batch, Vec::new(), 0)
    }

    /// Writes `batch` to the state, then tells the node cache which keys it touched and
    /// which tree nodes it left as they are in `written` (at `revision`).
    fn write_nodes(
        &self,
        batch: WriteBatch,
        written: Vec<(Vec<u8>, TreeNode)>,
        revision: Revision,
    ) -> Result<(), StorageError> {
        let touched = self.node_cache.keys_of(&batch);
        self.db
            .write_opt(batch, &apply_write_options())
            .map_err(sm_err)?;
        self.node_cache.after_write(&touched, written, revision);
        Ok(())
    }

    /// Restarts the lease clocks from storage (at start-up and after a snapshot install).
    pub(crate) fn restore_lease_clocks(
        db: &DB,
        lessor: &Lessor,
        extend: std::time::Duration,
    ) -> KernelResult<()> {
        lessor.restore(ReadView::live(db).leases()?, extend);
        Ok(())
    }

    /// Reloads the in-memory alarm list from storage.
    pub(crate) fn restore_alarms(db: &DB, alarms: &Alarms) -> KernelResult<()> {
        alarms.replace(stored_alarms(db)?);
        Ok(())
    }

    fn carry_out(&self, effects: Effects) {
        if let Some(alarms) = effects.alarms {
            self.alarms.replace(alarms);
        }
        if let Some((id, ttl)) = effects.granted {
            self.lessor.granted(id, ttl);
        }
        if let Some(id) = effects.revoked {
            self.lessor.revoked(id);
        }
        if let Some((revision, changes)) = effects.changed {
            self.hub.publish(revision, &changes);
        }
    }
}

/// The staged writes of a shared batch, begun over the stored state on first use.
fn pending_over<'p>(
    slot: &'p mut Option<Pending>,
    db: &DB,
) -> Result<&'p mut Pending, StorageError> {
    match slot {
        Some(pending) => Ok(pending),
        unset => Ok(unset.insert(Pending::over(db).map_err(sm_err)?)),
    }
}

/// Whether a tree operation may run in a shared batch: creates, setData and checks read
/// single nodes and their parents' metadata, which [`Pending`] covers.
fn joins_shared_batch(op: &TreeOp) -> bool {
    matches!(
        op,
        TreeOp::Create { .. } | TreeOp::SetData { .. } | TreeOp::Check { .. }
    )
}

/// Tree operations run all or nothing: the per-op results (or the first failure), and
/// the changes and metadata to stage (none if an op failed).
struct TreeRun {
    /// The revision the changes get.
    revision: Revision,
    outcome: Result<Vec<TreeOpResult>, (usize, TreeError)>,
    changes: Vec<Change>,
    metas: BTreeMap<Vec<u8>, TreeMeta>,
}

impl TreeRun {
    fn of(mut exec: TreeExecutor<'_>, ops: &[TreeOp]) -> KernelResult<TreeRun> {
        let revision = exec.revision();
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            match exec.run(op)? {
                Ok(result) => results.push(result),
                Err(error) => {
                    return Ok(TreeRun {
                        revision,
                        outcome: Err((index, error)),
                        changes: Vec::new(),
                        metas: BTreeMap::new(),
                    });
                }
            }
        }
        Ok(TreeRun {
            revision,
            outcome: Ok(results),
            changes: std::mem::take(&mut exec.changes),
            metas: std::mem::take(&mut exec.metas),
        })
    }

    /// The revision the reply reports: the changes' own, or the current one when no key
    /// changed (a failure, a check, a setACL).
    fn reply_revision(&self) -> Revision {
        if self.changes.is_empty() {
            self.revision - 1
        } else {
            self.revision
        }
    }
}

/// Stages the batch progress mark (command `index` of entry `log_id` is covered) and,
/// when `entry_done`, the applied log id.
fn stage_progress(
    batch: &mut WriteBatch,
    cf_meta: &rocksdb::ColumnFamily,
    log_id: LogId,
    index: usize,
    entry_done: bool,
) -> Result<(), StorageError> {
    batch.put_cf(
        cf_meta,
        META_BATCH_PROGRESS,
        postcard::to_allocvec(&(log_id, index)).map_err(sm_err)?,
    );
    if entry_done {
        stage_applied(batch, cf_meta, log_id)?;
    }
    Ok(())
}

/// Stages the applied log id: the last write of every entry carries it.
fn stage_applied(
    batch: &mut WriteBatch,
    cf_meta: &rocksdb::ColumnFamily,
    log_id: LogId,
) -> Result<(), StorageError> {
    batch.put_cf(
        cf_meta,
        META_APPLIED,
        postcard::to_allocvec(&Some(log_id)).map_err(sm_err)?,
    );
    Ok(())
}

fn stored_alarms(db: &DB) -> KernelResult<Vec<Alarm>> {
    match db.get_cf(cf(db, CF_META)?, META_ALARMS)? {
        None => Ok(Vec::new()),
        Some(raw) => postcard::from_bytes(&raw)
            .map_err(|e| KernelError::Storage(format!("corrupt alarm record: {e}"))),
    }
}

/// How many members (voters and learners) the applied membership of the state in `db`
/// lists; 0 for a state that has applied none yet.
pub(crate) fn applied_member_count(db: &DB) -> KernelResult<usize> {
    let membership: Membership =
        StateMachine::read_meta(db, ReadOptions::default(), META_MEMBERSHIP)
            .map_err(|e| KernelError::Storage(e.to_string()))?
            .unwrap_or_default();
    Ok(membership.membership().nodes().count())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let applied = Self::read_meta(&self.db, ReadOptions::default(), META_APPLIED)?.flatten();
        let membership =
            Self::read_meta(&self.db, ReadOptions::default(), META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf_meta = cf(&self.db, CF_META).map_err(sm_err)?;
        let mut outcomes = Vec::new();
        for entry in entries {
            if let EntryPayload::Normal(Command::Batch(commands)) = &entry.payload {
                outcomes.push(Ok(self.apply_batch(entry.log_id, commands)?));
                continue;
            }
            let mut batch = WriteBatch::default();
            let mut effects = Effects::default();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Ok(CommandReply::Internal),
                EntryPayload::Normal(command) => {
                    self.execute_one(command, &mut batch, &mut effects)
                }
                EntryPayload::Membership(m) => {
                    let stored = Membership::new(Some(entry.log_id), m.clone());
                    batch.put_cf(
                        cf_meta,
                        META_MEMBERSHIP,
                        postcard::to_allocvec(&stored).map_err(sm_err)?,
                    );
                    Ok(CommandReply::Internal)
                }
            };
            stage_applied(&mut batch, cf_meta, entry.log_id)?;
            self.write(batch)?;
            self.carry_out(effects);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            current_snapshot: self.current_snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = snapshot_dir(&self.db).join(fresh_name("receiving"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(sm_err)?;
        if let Ok(mut receiving) = self.receiving.lock()
            && let Some(abandoned) = receiving.replace(path)
        {
            let _ = std::fs::remove_file(abandoned);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = self.receiving.lock().ok().and_then(|mut r| r.take());
        let path = snapshot_dir(&self.db).join(format!("snapshot-{}", meta.snapshot_id));
        let mut handed = snapshot.into_std().await;
        let target = path.clone();
        // Usually the handle is the file begun by `begin_receiving_snapshot`; anything
        // else (openraft may hand over another snapshot's file) is copied, streaming.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Seek;
            use std::os::unix::fs::MetadataExt;
            handed.sync_all()?;
            let identity = |m: std::fs::Metadata| (m.dev(), m.ino());
            let same = match &received {
                Some(received) => {
                    identity(std::fs::metadata(received)?) == identity(handed.metadata()?)
                }
                None => false,
            };
            if let (true, Some(received)) = (same, &received) {
                return std::fs::rename(received, &target);
            }
            handed.rewind()?;
            let mut copy = std::fs::File::create(&target)?;
            std::io::copy(&mut handed, &mut copy)?;
            copy.sync_all()?;
            if let Some(received) = received {
                let _ = std::fs::remove_file(received);
            }
            Ok(())
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)?;
        let db = self.db.clone();
        let installed = path.clone();
        let meta_for_install = meta.clone();
        tokio::task::spawn_blocking(move || replace_state(&db, &installed, &meta_for_install))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        self.node_cache.clear();
        self.hub
            .set_applied_revision(ReadView::live(&self.db).revision().map_err(sm_err)?);
        Self::restore_lease_clocks(&self.db, &self.lessor, std::time::Duration::ZERO)
            .map_err(sm_err)?;
        Self::restore_alarms(&self.db, &self.alarms).map_err(sm_err)?;
        set_current(&self.current_snapshot, meta.clone(), path);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.current_snapshot.lock().ok().and_then(|c| c.clone());
        let Some((meta, path)) = current else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path).await.map_err(sm_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Replaces the whole state with a received snapshot file: verify it, mark the state
/// as being replaced (synced), clear it and load the file in bounded write batches,
/// then record the snapshot's applied log id and membership and clear the mark in one
/// final write, and flush. Nothing of it is held in memory whole.
fn replace_state(db: &DB, path: &Path, meta: &Meta) -> KernelResult<()> {
    let records = crate::backup::verify_snapshot(path)?;
    tracing::info!(snapshot = %meta.snapshot_id, records, "installing a snapshot from the leader");
    let cf_meta = cf(db, CF_META)?;
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.put_cf_opt(cf_meta, META_INSTALLING, meta.snapshot_id.as_bytes(), &sync)?;
    for name in STATE_COLUMN_FAMILIES {
        let handle = cf(db, name)?;
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (key, _) = item?;
            if name == CF_META && key.as_ref() == META_INSTALLING {
                continue;
            }
            batch.delete_cf(handle, key);
            if batch.len() >= 10_000 {
                db.write_opt(std::mem::take(&mut batch), &apply_write_options())?;
            }
        }
        db.write_opt(batch, &apply_write_options())?;
    }
    crate::backup::load_snapshot_records(db, path, false)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf_meta, META_APPLIED, encode_meta(&meta.last_log_id)?);
    batch.put_cf(
        cf_meta,
        META_MEMBERSHIP,
        encode_meta(&meta.last_membership)?,
    );
    batch.delete_cf(cf_meta, META_INSTALLING);
    db.write_opt(batch, &apply_write_options())?;
    crate::tree::index_expiring_nodes(db)?;
    flush_state(db)?;
    tracing::info!(snapshot = %meta.snapshot_id, records, "snapshot installed");
    Ok(())
}

fn encode_meta<T: Serialize>(value: &T) -> KernelResult<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| KernelError::Storage(e.to_string()))
}

/// Refuses to open a state store whose snapshot install was cut short.
pub(crate) fn check_not_half_installed(db: &DB) -> KernelResult<()> {
    if let Some(id) = db.get_cf(cf(db, CF_META)?, META_INSTALLING)? {
        return Err(KernelError::Storage(format!(
            "the state store was being replaced by snapshot {} when the process stopped; \
             its contents are incomplete: remove this member's data dir and add it to the \
             cluster again (etcdctl member remove, then member add)",
            String::from_utf8_lossy(&id)
        )));
    }
    Ok(())
}

#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<DB>,
    current_snapshot: SharedSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || build_snapshot_file(&db))
            .await
            .map_err(sm_err)??;
        set_current(&self.current_snapshot, meta.clone(), path.clone());
        let file = tokio::fs::File::open(&path).await.map_err(sm_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// Writes the state as of now to a snapshot file (the same format as `etcdctl snapshot
/// save` files) with the applied log id and membership it covers.
fn build_snapshot_file(db: &DB) -> Result<(Meta, PathBuf), StorageError> {
    // openraft purges the log behind a snapshot, and applied writes skip the WAL:
    // take the snapshot, then flush, so everything it covers is durable.
    let view = ReadView::snapshot(db);
    flush_state(db).map_err(sm_err)?;
    let applied: Option<LogId> =
        StateMachine::read_meta(db, view.options(), META_APPLIED)?.flatten();
    let membership: Membership =
        StateMachine::read_meta(db, view.options(), META_MEMBERSHIP)?.unwrap_or_default();
    let snapshot_id = format!(
        "{}-{}",
        applied.map(|id| id.leader_id.term).unwrap_or_default(),
        applied.map(|id| id.index).unwrap_or_default()
    );
    let dir = snapshot_dir(db);
    let building = dir.join(fresh_name("building"));
    let info = crate::backup::write_snapshot_of(&view, db, &building).map_err(sm_err)?;
    let path = dir.join(format!("snapshot-{snapshot_id}-{}", fresh_name("built")));
    std::fs::rename(&building, &path).map_err(sm_err)?;
    tracing::info!(
        snapshot_id,
        bytes = info.bytes,
        records = info.records,
        "built state machine snapshot"
    );
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    };
    Ok((meta, path))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry};

    use super::*;
    use crate::types::{
        Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, ResponseOp,
    };

    fn put(key: &str) -> Command {
        Command::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::Put(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })],
            failure: Vec::new(),
        })
    }

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn state_machine_in(dir: &Path) -> (Arc<DB>, StateMachine) {
        let db = open_state_db(dir).unwrap();
        let sm = StateMachine::new(
            db.clone(),
            WatchHub::new(),
            Default::default(),
            Default::default(),
            Arc::new(NodeCache::new(1 << 20)),
        );
        (db, sm)
    }

    fn revision_of(db: &DB, key: &str) -> Option<i64> {
        let resp = crate::mvcc::range(
            &ReadView::live(db),
            &RangeRequest {
                key: key.into(),
                ..Default::default()
            },
        )
        .unwrap();
        resp.kvs.first().map(|kv| kv.mod_revision)
    }

    #[tokio::test]
    async fn a_batch_gives_each_command_its_own_revision_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = state_machine_in(dir.path());
        let bad_lease = Command::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::Put(PutRequest {
                key: b"c".to_vec(),
                lease: 99,
                ..Default::default()
            })],
            failure: Vec::new(),
        });
        let outcomes = sm
            .apply([entry(
                1,
                Command::Batch(vec![put("a"), bad_lease, put("b")]),
            )])
            .await
            .unwrap();
        let Ok(CommandReply::Batch(inner)) = &outcomes[0] else {
            panic!("{outcomes:?}");
        };
        assert!(inner[0].is_ok() && inner[2].is_ok());
        assert_eq!(inner[1], Err(KernelError::LeaseNotFound));
        assert_eq!(
            (revision_of(&db, "a"), revision_of(&db, "b")),
            (Some(2), Some(3))
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|id| id.index), Some(1));
    }

    /// Point txns are staged together and read each other's staged writes; a range
    /// delete between them first writes what is staged and sees it; a tree node created
    /// by a point txn is staged with its parent's metadata.
    #[tokio::test]
    async fn point_txns_staged_together_see_each_other_and_the_commands_between() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = state_machine_in(dir.path());
        let a_at_version_2_then_put_b = Command::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(2),
                key: b"a".to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"b".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })],
            failure: Vec::new(),
        });
        let delete_a_to_c = Command::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                prev_kv: false,
            })],
            failure: Vec::new(),
        });
        let batch = vec![
            put("a"),
            put("a"),
            a_at_version_2_then_put_b,
            delete_a_to_c,
            put("a"),
            put("/dir"),
            put("/dir/x"),
            put("z"),
        ];
        let outcomes = sm.apply([entry(1, Command::Batch(batch))]).await.unwrap();
        let Ok(CommandReply::Batch(inner)) = &outcomes[0] else {
            panic!("{outcomes:?}");
        };
        let Ok(CommandReply::Txn(guarded)) = &inner[2] else {
            panic!("{inner:?}");
        };
        assert!(guarded.succeeded, "the staged second put of a is seen");
        let Ok(CommandReply::Txn(deleted)) = &inner[3] else {
            panic!("{inner:?}");
        };
        let Some(ResponseOp::DeleteRange(deleted)) = deleted.responses.first() else {
            panic!("{deleted:?}");
        };
        assert_eq!(
            deleted.deleted, 2,
            "the range delete sees the staged a and b"
        );
        let view = ReadView::live(&db);
        let a = view.latest(b"a").unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
        assert!(view.latest(b"b").unwrap().is_none());
        let x = view.latest(b"/dir/x").unwrap().unwrap();
        let z = view.latest(b"z").unwrap().unwrap();
        assert_eq!(
            (x.mod_revision, z.mod_revision),
            (8, 9),
            "point txns after a range delete start from its revision"
        );
        assert_eq!(view.revision().unwrap(), 9);
        let dir_meta = crate::tree::read_meta(&view, b"/dir")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(dir_meta.num_children, 1, "/dir/x counted under /dir");
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|id| id.index), Some(1));
    }
    fn tree(op: TreeOp) -> Command {
        Command::Tree {
            ops: vec![op],
            now_ms: 7,
        }
    }

    fn create(path: &str, sequential: bool) -> Command {
        tree(TreeOp::Create {
            path: path.into(),
            data: Some(b"d".to_vec()),
            acl: Vec::new(),
            ephemeral_owner: 0,
            sequential,
            kind: crate::types::ZnodeKind::Persistent,
        })
    }

    fn set_data(path: &str, version: i32) -> Command {
        tree(TreeOp::SetData {
            path: path.into(),
            data: Some(b"new".to_vec()),
            version,
        })
    }

    /// Creates and setData share the batch with point txns: each sees the nodes, the
    /// versions and the parent's sequence counter and child count staged before it; a
    /// delete then runs alone on top of all of them.
    #[tokio::test]
    async fn tree_writes_staged_together_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = state_machine_in(dir.path());
        let batch = vec![
            create("/p", false),
            create("/p/s-", true),
            create("/p/s-", true),
            set_data("/p/s-0000000000", 0),
            set_data("/p/s-0000000000", 0),
            put("/p/e"),
            create("/p/s-", true),
            tree(TreeOp::Delete {
                path: "/p/e".into(),
                version: -1,
            }),
        ];
        let outcomes = sm.apply([entry(1, Command::Batch(batch))]).await.unwrap();
        let Ok(CommandReply::Batch(inner)) = &outcomes[0] else {
            panic!("{outcomes:?}");
        };
        let tree_result = |index: usize| match &inner[index] {
            Ok(CommandReply::Tree { revision, outcome }) => (*revision, outcome.clone()),
            other => panic!("{other:?}"),
        };
        let created = |index: usize| match tree_result(index) {
            (revision, Ok(results)) => match results.first() {
                Some(TreeOpResult::Created { path, .. }) => (revision, path.clone()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(created(1), (3, "/p/s-0000000000".to_string()));
        assert_eq!(created(2), (4, "/p/s-0000000001".to_string()));
        let Ok(results) = tree_result(3).1 else {
            panic!("{inner:?}");
        };
        let Some(TreeOpResult::DataSet { stat }) = results.first() else {
            panic!("{results:?}");
        };
        assert_eq!((stat.version, stat.mzxid), (1, 5));
        assert_eq!(
            tree_result(4),
            (5, Err((0, TreeError::BadVersion))),
            "the staged setData is seen"
        );
        assert_eq!(
            created(6),
            (7, "/p/s-0000000003".to_string()),
            "the staged etcd put counts as a child create"
        );
        assert_eq!(tree_result(7), (8, Ok(vec![TreeOpResult::Deleted])));
        let view = ReadView::live(&db);
        let node = view.latest(b"/p/s-0000000000").unwrap().unwrap();
        assert_eq!((node.version, node.value.as_slice()), (2, &b"new"[..]));
        let parent = crate::tree::read_meta(&view, b"/p").unwrap().unwrap();
        assert_eq!(
            (
                parent.cversion,
                parent.num_children,
                parent.child_creates,
                parent.pzxid
            ),
            (5, 3, 4, 8)
        );
        assert_eq!(view.revision().unwrap(), 8);
    }

    #[tokio::test]
    async fn a_batch_interrupted_by_a_crash_resumes_after_what_it_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = state_machine_in(dir.path());
        // The state a crash leaves after the first two commands of entry 1 were written:
        // their data and the progress mark, but not the applied mark.
        sm.apply([entry(1, Command::Batch(vec![put("a"), put("b")]))])
            .await
            .unwrap();
        let mut rollback = WriteBatch::default();
        rollback.delete_cf(cf(&db, CF_META).unwrap(), META_APPLIED);
        db.write(rollback).unwrap();
        // openraft applies entry 1 again after the restart.
        let outcomes = sm
            .apply([entry(1, Command::Batch(vec![put("a"), put("b"), put("c")]))])
            .await
            .unwrap();
        let Ok(CommandReply::Batch(inner)) = &outcomes[0] else {
            panic!("{outcomes:?}");
        };
        assert!(
            inner[0].is_err() && inner[1].is_err(),
            "skipped, not re-applied"
        );
        assert!(inner[2].is_ok());
        assert_eq!(
            (
                revision_of(&db, "a"),
                revision_of(&db, "b"),
                revision_of(&db, "c")
            ),
            (Some(2), Some(3), Some(4))
        );
        assert_eq!(ReadView::live(&db).revision().unwrap(), 4);
    }
}
