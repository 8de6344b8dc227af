//! The MVCC keyspace on RocksDB: reads at the current or an old revision, the
//! deterministic execution of write transactions, and compaction.
//!
//! Writers (the Raft apply step) are single-threaded; readers take a RocksDB snapshot so
//! the revision they report and the data they return belong together.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, Snapshot, WriteBatch};

use crate::encoding::{
    HistoryEntry, StoredKv, hist_key, keyrev_key, split_hist_key, split_keyrev_key,
};
use crate::error::{KernelError, KernelResult};
use crate::lease::{LeaseRecord, attached_key, attachment_key, lease_key};
use crate::tree::TreeMeta;
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    Revision, SortOrder, SortTarget, TreeNode, TxnRequest, TxnResponse,
};

pub const CF_KV_LATEST: &str = "kv_latest";
pub const CF_KV_KEYREV: &str = "kv_keyrev";
pub const CF_KV_HIST: &str = "kv_hist";
pub const CF_META: &str = "meta";
pub const CF_LEASE: &str = "lease";
pub const CF_LEASE_KEY: &str = "lease_key";
pub const CF_TREE_META: &str = "tree_meta";
/// Path → () for every container and TTL node: what the reaper looks at.
pub const CF_TREE_EXPIRING: &str = "tree_expiring";
pub const STATE_COLUMN_FAMILIES: [&str; 8] = [
    CF_KV_LATEST,
    CF_KV_KEYREV,
    CF_KV_HIST,
    CF_META,
    CF_LEASE,
    CF_LEASE_KEY,
    CF_TREE_META,
    CF_TREE_EXPIRING,
];

pub const META_REVISION: &[u8] = b"revision";
pub const META_COMPACT_REVISION: &[u8] = b"compact_revision";

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> KernelResult<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| KernelError::Storage(format!("missing column family {name}")))
}

fn corrupt(what: &str) -> KernelError {
    KernelError::Storage(format!("corrupt {what} record"))
}

/// Does `key` fall in the etcd-style range starting at `start`?
fn in_range(key: &[u8], range_end: &[u8]) -> bool {
    range_end == [0] || key < range_end
}

/// A consistent read view of the keyspace (a RocksDB snapshot, or the live DB for the
/// single writer).
pub struct ReadView<'a> {
    db: &'a DB,
    snapshot: Option<Snapshot<'a>>,
    /// Writes staged but not yet written, seen on top of the live DB (see [`Pending`]).
    pending: Option<&'a Pending>,
}

/// What the commands of a shared apply batch have staged but not written yet: the
/// latest state of the keys they changed, the tree metadata they wrote or removed, and
/// the revision they reached. Reads made while applying the next command see these on
/// top of the live DB. Only point reads are covered; a scan while something is staged is
/// refused and remembered ([`Pending::take_refusal`]), so the command can run alone.
#[derive(Debug)]
pub(crate) struct Pending {
    latest: HashMap<Vec<u8>, Option<StoredKv>>,
    tree_metas: HashMap<Vec<u8>, Option<TreeMeta>>,
    revision: Revision,
    compact_revision: Revision,
    refused: Cell<bool>,
}

impl Pending {
    /// Nothing staged yet, on top of the stored state of `db`.
    pub(crate) fn over(db: &DB) -> KernelResult<Self> {
        let view = ReadView::live(db);
        Ok(Pending {
            latest: HashMap::new(),
            tree_metas: HashMap::new(),
            revision: view.revision()?,
            compact_revision: view.compact_revision()?,
            refused: Cell::new(false),
        })
    }

    /// The revision the staged writes reached.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// Records `changes`, staged at `revision`.
    pub(crate) fn record(&mut self, revision: Revision, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.revision = revision;
        for change in changes {
            self.latest.insert(change.key.clone(), change.kv.clone());
        }
    }

    /// The tree nodes whose record and metadata are both staged, as they stand.
    pub(crate) fn into_written_nodes(mut self) -> Vec<(Vec<u8>, TreeNode)> {
        self.latest
            .into_iter()
            .filter_map(|(path, kv)| {
                let meta = self.tree_metas.remove(&path)??;
                let node = crate::tree::node_of(&path, kv?, meta)?;
                Some((path, node))
            })
            .collect()
    }

    /// Records tree metadata staged (`Some`) or removed (`None`).
    pub(crate) fn record_metas(
        &mut self,
        metas: impl IntoIterator<Item = (Vec<u8>, Option<TreeMeta>)>,
    ) {
        self.tree_metas.extend(metas);
    }

    /// The staged metadata of `path`: `None` if nothing was staged for it.
    pub(crate) fn tree_meta(&self, path: &[u8]) -> Option<&Option<TreeMeta>> {
        self.tree_metas.get(path)
    }

    /// Whether a read was refused since the last call (and forgets it).
    pub(crate) fn take_refusal(&self) -> bool {
        self.refused.replace(false)
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty() && self.tree_metas.is_empty()
    }
}

/// Whether `txn` reads only single keys at the current revision: every compare and every
/// op names one key (no range end), no Range asks for an old revision, nested txns alike.
/// Such a txn reads nothing but `kv_latest` entries, leases and the revision marks, so it
/// can run on top of a [`Pending`] set of staged writes.
pub(crate) fn is_point_txn(txn: &TxnRequest) -> bool {
    let point_op = |op: &RequestOp| match op {
        RequestOp::Range(r) => r.range_end.is_empty() && r.revision == 0,
        RequestOp::Put(_) => true,
        RequestOp::DeleteRange(d) => d.range_end.is_empty(),
        RequestOp::Txn(nested) => is_point_txn(nested),
    };
    txn.compare.iter().all(|c| c.range_end.is_empty())
        && txn.success.iter().all(point_op)
        && txn.failure.iter().all(point_op)
}

impl<'a> ReadView<'a> {
    pub fn snapshot(db: &'a DB) -> Self {
        ReadView {
            db,
            snapshot: Some(db.snapshot()),
            pending: None,
        }
    }

    pub fn live(db: &'a DB) -> Self {
        ReadView {
            db,
            snapshot: None,
            pending: None,
        }
    }

    /// The live DB with `pending` staged writes on top.
    pub(crate) fn over_pending(db: &'a DB, pending: &'a Pending) -> Self {
        ReadView {
            db,
            snapshot: None,
            pending: Some(pending),
        }
    }

    /// Refuses a read that [`Pending`] does not cover while writes are staged (it would
    /// read a stale state); the refusal is remembered in the [`Pending`].
    pub(crate) fn check_uncovered_read(&self, what: &str) -> KernelResult<()> {
        match self.pending {
            Some(pending) if !pending.is_empty() => {
                pending.refused.set(true);
                Err(KernelError::Storage(format!(
                    "{what} read while writes are staged"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The tree metadata of `path` staged in the [`Pending`] under this view, if any.
    pub(crate) fn staged_tree_meta(&self, path: &[u8]) -> Option<&Option<TreeMeta>> {
        self.pending.and_then(|p| p.tree_meta(path))
    }

    pub(crate) fn options(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        if let Some(s) = &self.snapshot {
            opts.set_snapshot(s);
        }
        opts
    }

    pub(crate) fn get(&self, cf_name: &str, key: &[u8]) -> KernelResult<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf_opt(cf(self.db, cf_name)?, key, &self.options())?)
    }

    fn meta_i64(&self, name: &[u8], absent: i64) -> KernelResult<i64> {
        match self.get(CF_META, name)? {
            None => Ok(absent),
            Some(v) => Ok(i64::from_be_bytes(
                v.as_slice().try_into().map_err(|_| corrupt("meta"))?,
            )),
        }
    }

    /// The current revision; an empty keyspace is at revision 1, as in etcd.
    pub fn revision(&self) -> KernelResult<Revision> {
        match self.pending {
            Some(pending) => Ok(pending.revision),
            None => self.meta_i64(META_REVISION, 1),
        }
    }

    pub fn compact_revision(&self) -> KernelResult<Revision> {
        match self.pending {
            Some(pending) => Ok(pending.compact_revision),
            None => self.meta_i64(META_COMPACT_REVISION, 0),
        }
    }

    /// The stored lease `id`, if it exists.
    pub(crate) fn lease(&self, id: i64) -> KernelResult<Option<LeaseRecord>> {
        match self.get(CF_LEASE, &lease_key(id))? {
            None => Ok(None),
            Some(v) => LeaseRecord::decode(&v)
                .map(Some)
                .ok_or_else(|| corrupt("lease")),
        }
    }

    /// Every stored lease, in id order.
    pub(crate) fn leases(&self) -> KernelResult<Vec<(i64, LeaseRecord)>> {
        let mut out = Vec::new();
        for item in
            self.db
                .iterator_cf_opt(cf(self.db, CF_LEASE)?, self.options(), IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = i64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt("lease"))?);
            out.push((id, LeaseRecord::decode(&v).ok_or_else(|| corrupt("lease"))?));
        }
        Ok(out)
    }

    /// The keys attached to lease `id`, in key order.
    pub(crate) fn lease_keys(&self, id: i64) -> KernelResult<Vec<Vec<u8>>> {
        let prefix = lease_key(id);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_LEASE_KEY)?,
            self.options(),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            match attached_key(id, &k) {
                Some(key) => out.push(key.to_vec()),
                None => break,
            }
        }
        Ok(out)
    }

    pub(crate) fn latest(&self, key: &[u8]) -> KernelResult<Option<StoredKv>> {
        if let Some(staged) = self.pending.and_then(|p| p.latest.get(key)) {
            return Ok(staged.clone());
        }
        match self.get(CF_KV_LATEST, key)? {
            None => Ok(None),
            Some(v) => StoredKv::decode(&v).map(Some).ok_or_else(|| corrupt("kv")),
        }
    }

    /// Live keys in `[key, range_end)` (or just `key`) at the current revision.
    fn scan_latest(&self, key: &[u8], range_end: &[u8]) -> KernelResult<Vec<KeyValue>> {
        if range_end.is_empty() {
            return Ok(self
                .latest(key)?
                .map(|kv| kv.into_key_value(key.to_vec()))
                .into_iter()
                .collect());
        }
        self.check_uncovered_read("range")?;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_KV_LATEST)?,
            self.options(),
            IteratorMode::From(key, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !in_range(&k, range_end) {
                break;
            }
            let kv = StoredKv::decode(&v).ok_or_else(|| corrupt("kv"))?;
            out.push(kv.into_key_value(k.to_vec()));
        }
        Ok(out)
    }

    /// Keys in `[key, range_end)` (or just `key`) as they were at `revision`.
    fn scan_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: Revision,
    ) -> KernelResult<Vec<KeyValue>> {
        self.check_uncovered_read("history")?;
        let mut out = Vec::new();
        let start = keyrev_key(key, 0);
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_KV_KEYREV)?,
            self.options(),
            IteratorMode::From(&start, Direction::Forward),
        );
        // The newest entry at or below `revision` for the key being walked.
        let mut current: Option<(Vec<u8>, HistoryEntry)> = None;
        let flush = |current: &mut Option<(Vec<u8>, HistoryEntry)>, out: &mut Vec<KeyValue>| {
            if let Some((k, HistoryEntry::Put(kv))) = current.take() {
                out.push(kv.into_key_value(k));
            }
        };
        for item in iter {
            let (raw_key, raw_value) = item?;
            let (k, rev) = split_keyrev_key(&raw_key).ok_or_else(|| corrupt("keyrev"))?;
            let past_end = if range_end.is_empty() {
                k != key
            } else {
                !in_range(&k, range_end)
            };
            if past_end {
                break;
            }
            if current.as_ref().is_some_and(|(ck, _)| *ck != k) {
                flush(&mut current, &mut out);
            }
            if rev <= revision {
                let entry = HistoryEntry::decode(&raw_value).ok_or_else(|| corrupt("history"))?;
                current = Some((k, entry));
            }
        }
        flush(&mut current, &mut out);
        Ok(out)
    }
}

/// Checks a requested read revision against the compaction mark and the current revision.
fn check_read_revision(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> KernelResult<Revision> {
    if requested > current {
        return Err(KernelError::FutureRevision);
    }
    if requested <= 0 {
        return Ok(current);
    }
    if requested < compacted {
        return Err(KernelError::Compacted {
            compact_revision: compacted,
        });
    }
    Ok(requested)
}

/// Applies limit, revision filters, sorting, keys_only and count_only to a full range
/// result, as etcd does: `count` is the whole range, `more` says the limit cut it.
fn shape_range(req: &RangeRequest, mut kvs: Vec<KeyValue>) -> (Vec<KeyValue>, i64, bool) {
    let count = kvs.len() as i64;
    if req.count_only {
        return (Vec::new(), count, false);
    }
    kvs.retain(|kv| {
        (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
    });
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let ord = match req.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    (kvs, count, more)
}

/// A read-only Range outside any transaction.
pub fn range(view: &ReadView<'_>, req: &RangeRequest) -> KernelResult<RangeResponse> {
    let current = view.revision()?;
    let at = check_read_revision(req.revision, current, view.compact_revision()?)?;
    let kvs = if at == current {
        view.scan_latest(&req.key, &req.range_end)?
    } else {
        view.scan_at(&req.key, &req.range_end, at)?
    };
    let (kvs, count, more) = shape_range(req, kvs);
    Ok(RangeResponse {
        header: ResponseHeader {
            revision: current,
            ..Default::default()
        },
        kvs,
        more,
        count,
    })
}

/// One key changed by a transaction, in sub-revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The new state, `None` for a delete.
    pub kv: Option<StoredKv>,
    pub prev: Option<StoredKv>,
}

/// The outcome of applying one write command: the response and what it changed.
#[derive(Debug)]
pub struct Applied {
    pub response: TxnResponse,
    pub revision: Revision,
    pub changes: Vec<Change>,
}

/// Executes one transaction against the live state plus its own pending writes.
struct TxnExecutor<'a> {
    view: ReadView<'a>,
    begin: Revision,
    compacted: Revision,
    pending: BTreeMap<Vec<u8>, Option<StoredKv>>,
    changes: Vec<Change>,
}

impl<'a> TxnExecutor<'a> {
    fn write_revision(&self) -> Revision {
        self.begin + 1
    }

    fn visible_revision(&self) -> Revision {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn get(&self, key: &[u8]) -> KernelResult<Option<StoredKv>> {
        match self.pending.get(key) {
            Some(state) => Ok(state.clone()),
            None => self.view.latest(key),
        }
    }

    /// The current range with this transaction's own writes merged in.
    fn scan(&self, key: &[u8], range_end: &[u8]) -> KernelResult<Vec<KeyValue>> {
        let base = self.view.scan_latest(key, range_end)?;
        if self.pending.is_empty() {
            return Ok(base);
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            base.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (k, state) in &self.pending {
            let inside = if range_end.is_empty() {
                k.as_slice() == key
            } else {
                k.as_slice() >= key && in_range(k, range_end)
            };
            if !inside {
                continue;
            }
            match state {
                Some(kv) => {
                    merged.insert(k.clone(), kv.clone().into_key_value(k.clone()));
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    fn compare(&self, c: &Compare) -> KernelResult<bool> {
        let kvs = self.scan(&c.key, &c.range_end)?;
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    /// Chooses the branch of this txn and of every nested txn on that branch, before any
    /// write happens (etcd evaluates all compares against the pre-transaction state).
    fn choose_path(&self, txn: &TxnRequest, path: &mut Vec<bool>) -> KernelResult<()> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let RequestOp::Txn(nested) = op {
                self.choose_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Apply-time checks of the chosen path (keys that must exist, readable revisions).
    fn check_path(&self, txn: &TxnRequest, path: &[bool], at: &mut usize) -> KernelResult<()> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            match op {
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::Range(r) => {
                    check_read_revision(r.revision, self.begin, self.compacted)?;
                }
                RequestOp::Txn(nested) => self.check_path(nested, path, at)?,
                RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn check_put(&self, p: &PutRequest) -> KernelResult<()> {
        if (p.ignore_value || p.ignore_lease) && self.get(&p.key)?.is_none() {
            return Err(KernelError::KeyNotFound);
        }
        if p.lease != 0 && !p.ignore_lease && self.view.lease(p.lease)?.is_none() {
            return Err(KernelError::LeaseNotFound);
        }
        Ok(())
    }

    fn run_txn(
        &mut self,
        txn: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> KernelResult<TxnResponse> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(nested) => ResponseOp::Txn(self.run_txn(nested, path, at)?),
            };
            responses.push(response);
        }
        Ok(TxnResponse {
            header: self.header(),
            succeeded,
            responses,
        })
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.visible_revision(),
            ..Default::default()
        }
    }

    fn range(&self, r: &RangeRequest) -> KernelResult<RangeResponse> {
        let visible = self.visible_revision();
        let at = check_read_revision(r.revision, visible, self.compacted)?;
        let kvs = if at == visible {
            self.scan(&r.key, &r.range_end)?
        } else {
            self.view.scan_at(&r.key, &r.range_end, at)?
        };
        let (kvs, count, more) = shape_range(r, kvs);
        Ok(RangeResponse {
            header: self.header(),
            kvs,
            more,
            count,
        })
    }

    fn put(&mut self, p: &PutRequest) -> KernelResult<PutResponse> {
        let rev = self.write_revision();
        let prev = self.get(&p.key)?;
        let (value, lease) = match &prev {
            Some(old) if p.ignore_value || p.ignore_lease => (
                if p.ignore_value {
                    old.value.clone()
                } else {
                    p.value.clone()
                },
                if p.ignore_lease { old.lease } else { p.lease },
            ),
            _ => (p.value.clone(), p.lease),
        };
        let kv = StoredKv {
            create_revision: prev.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |o| o.version + 1),
            lease,
            value,
        };
        self.record(p.key.clone(), Some(kv), prev.clone());
        Ok(PutResponse {
            header: self.header(),
            prev_kv: if p.prev_kv {
                prev.map(|kv| kv.into_key_value(p.key.clone()))
            } else {
                None
            },
        })
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> KernelResult<DeleteRangeResponse> {
        let doomed = self.scan(&d.key, &d.range_end)?;
        let deleted = doomed.len() as i64;
        for kv in &doomed {
            let prev = self.get(&kv.key)?;
            self.record(kv.key.clone(), None, prev);
        }
        Ok(DeleteRangeResponse {
            header: self.header(),
            deleted,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn record(&mut self, key: Vec<u8>, kv: Option<StoredKv>, prev: Option<StoredKv>) {
        self.pending.insert(key.clone(), kv.clone());
        self.changes.push(Change { key, kv, prev });
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// Runs a transaction against `view`, returning its response and the changes it makes
/// (not yet staged anywhere). A read-only txn may run on a snapshot view.
pub fn execute_txn(view: ReadView<'_>, txn: &TxnRequest) -> KernelResult<Applied> {
    let begin = view.revision()?;
    let compacted = view.compact_revision()?;
    let mut exec = TxnExecutor {
        view,
        begin,
        compacted,
        pending: BTreeMap::new(),
        changes: Vec::new(),
    };
    let mut path = Vec::new();
    exec.choose_path(txn, &mut path)?;
    exec.check_path(txn, &path, &mut 0)?;
    let response = exec.run_txn(txn, &path, &mut 0)?;
    Ok(Applied {
        response,
        revision: exec.visible_revision(),
        changes: exec.changes,
    })
}

/// The write side of the keyspace, used only by the Raft apply step.
#[derive(Debug, Clone)]
pub struct MvccWriter {
    db: Arc<DB>,
}

impl MvccWriter {
    pub fn new(db: Arc<DB>) -> Self {
        MvccWriter { db }
    }

    /// Executes `txn` and stages its writes into `batch`. A txn whose chosen path fails an
    /// apply-time check changes nothing and returns the error.
    pub fn txn(&self, txn: &TxnRequest, batch: &mut WriteBatch) -> KernelResult<Applied> {
        let applied = execute_txn(ReadView::live(&self.db), txn)?;
        if !applied.changes.is_empty() {
            self.stage_changes(applied.revision, &applied.changes, BTreeMap::new(), batch)?;
        }
        Ok(applied)
    }

    /// Stages `changes` at `revision`, with the tree metadata that goes with them
    /// (`tree_metas`: metadata of nodes a tree operation created or modified).
    pub(crate) fn stage_changes(
        &self,
        revision: Revision,
        changes: &[Change],
        tree_metas: BTreeMap<Vec<u8>, crate::tree::TreeMeta>,
        batch: &mut WriteBatch,
    ) -> KernelResult<()> {
        let view = ReadView::live(&self.db);
        crate::tree::stage_meta(&self.db, &view, revision, changes, tree_metas, batch)?;
        self.stage_key_changes(revision, changes, batch)?;
        self.stage_revision(revision, batch)
    }

    /// Runs a point txn (see [`is_point_txn`]) on top of the writes `pending` has staged.
    pub(crate) fn txn_over_pending(
        &self,
        txn: &TxnRequest,
        pending: &Pending,
    ) -> KernelResult<Applied> {
        execute_txn(ReadView::over_pending(&self.db, pending), txn)
    }

    /// Stages the revision mark.
    pub(crate) fn stage_revision(
        &self,
        revision: Revision,
        batch: &mut WriteBatch,
    ) -> KernelResult<()> {
        batch.put_cf(
            cf(&self.db, CF_META)?,
            META_REVISION,
            revision.to_be_bytes(),
        );
        Ok(())
    }

    /// Stages the key records of `changes` at `revision` (latest state, history, lease
    /// attachments), without tree metadata or the revision mark. Stages all of them or,
    /// if a column family is missing, none.
    pub(crate) fn stage_key_changes(
        &self,
        revision: Revision,
        changes: &[Change],
        batch: &mut WriteBatch,
    ) -> KernelResult<()> {
        let latest = cf(&self.db, CF_KV_LATEST)?;
        let keyrev = cf(&self.db, CF_KV_KEYREV)?;
        let hist = cf(&self.db, CF_KV_HIST)?;
        let lease_keys = cf(&self.db, CF_LEASE_KEY)?;
        for (sub, change) in changes.iter().enumerate() {
            let old_lease = change.prev.as_ref().map_or(0, |kv| kv.lease);
            let new_lease = change.kv.as_ref().map_or(0, |kv| kv.lease);
            if old_lease != new_lease && old_lease != 0 {
                batch.delete_cf(lease_keys, attachment_key(old_lease, &change.key));
            }
            if new_lease != 0 {
                batch.put_cf(lease_keys, attachment_key(new_lease, &change.key), []);
            }
            let entry = match &change.kv {
                Some(kv) => {
                    batch.put_cf(latest, &change.key, kv.encode());
                    HistoryEntry::Put(kv.clone())
                }
                None => {
                    batch.delete_cf(latest, &change.key);
                    HistoryEntry::Delete
                }
            };
            batch.put_cf(keyrev, keyrev_key(&change.key, revision), entry.encode());
            batch.put_cf(hist, hist_key(revision, sub as u32), &change.key);
        }
        Ok(())
    }

    /// Checks a compaction request against the current marks.
    pub fn check_compact(&self, revision: Revision) -> KernelResult<()> {
        let view = ReadView::live(&self.db);
        if revision <= view.compact_revision()? {
            return Err(KernelError::Compacted {
                compact_revision: view.compact_revision()?,
            });
        }
        if revision > view.revision()? {
            return Err(KernelError::FutureRevision);
        }
        Ok(())
    }

    /// Removes history below `revision`: every version older than the newest one at or
    /// below it, and deletes at or below it, so reads at `revision` and later still work.
    pub fn compact(&self, revision: Revision, batch: &mut WriteBatch) -> KernelResult<usize> {
        self.check_compact(revision)?;
        let view = ReadView::live(&self.db);
        let keyrev = cf(&self.db, CF_KV_KEYREV)?;
        let hist = cf(&self.db, CF_KV_HIST)?;
        let mut removed = 0;
        // Revisions at the compaction point are compacted too: only a put that is still
        // the newest version of its key there survives (a delete there is dropped).
        let end = hist_key(revision + 1, 0);
        let iter = self.db.iterator_cf(hist, IteratorMode::Start);
        for item in iter {
            let (raw_hist, key) = item?;
            if raw_hist.as_ref() >= end.as_slice() {
                break;
            }
            let (rev, _) = split_hist_key(&raw_hist).ok_or_else(|| corrupt("hist"))?;
            let this = keyrev_key(&key, rev);
            let newest_at_or_below = self.newest_keyrev_at_or_below(&view, &key, revision)?;
            let keep = newest_at_or_below.as_deref() == Some(this.as_slice())
                && matches!(
                    view.get(CF_KV_KEYREV, &this)?
                        .as_deref()
                        .and_then(HistoryEntry::decode),
                    Some(HistoryEntry::Put(_))
                );
            if !keep {
                batch.delete_cf(keyrev, &this);
                batch.delete_cf(hist, &raw_hist);
                removed += 1;
            }
        }
        batch.put_cf(
            cf(&self.db, CF_META)?,
            META_COMPACT_REVISION,
            revision.to_be_bytes(),
        );
        Ok(removed)
    }

    fn newest_keyrev_at_or_below(
        &self,
        view: &ReadView<'_>,
        key: &[u8],
        revision: Revision,
    ) -> KernelResult<Option<Vec<u8>>> {
        let upper = keyrev_key(key, revision);
        let mut iter = self.db.iterator_cf_opt(
            cf(&self.db, CF_KV_KEYREV)?,
            view.options(),
            IteratorMode::From(&upper, Direction::Reverse),
        );
        match iter.next() {
            Some(item) => {
                let (raw, _) = item?;
                match split_keyrev_key(&raw) {
                    Some((k, _)) if k == key => Ok(Some(raw.to_vec())),
                    _ => Ok(None),
                }
            }
            None => Ok(None),
        }
    }
}
