//! The tree view of the keyspace, for the dialects whose keys are paths (ZooKeeper, etcd
//! v2): a key `/a/b` is the node `b` under `/a`, and `/` is the root, which always
//! exists. The node's data is the key's value; ZooKeeper's extras that the MVCC record
//! lacks (ctime, mtime, cversion, aversion, pzxid, ACL, container/TTL kind) live in the
//! `tree_meta` column family beside it.
//!
//! Tree operations ([`TreeOp`]) are evaluated at apply time against the state and the
//! operation's own earlier changes (parents must exist, deletes need no children,
//! version checks, sequential names from the parent's count of child creates), all or nothing, and
//! become ordinary MVCC changes at one revision, so etcd readers and watchers see them.
//! Every create or delete of a path key — from any dialect, or a lease running out —
//! bumps the parent's cversion and pzxid in the same WriteBatch ([`stage_meta`]).

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::encoding::StoredKv;
use crate::error::{KernelError, KernelResult};
use crate::mvcc::{CF_KV_LATEST, CF_META, CF_TREE_EXPIRING, CF_TREE_META, Change, ReadView, cf};
use crate::types::{
    Acl, ReapableNode, Revision, TreeError, TreeNode, TreeOp, TreeOpResult, V2Delete, V2Node,
    V2Subtree, V2Write, ZnodeKind, ZnodeStat,
};

/// What ZooKeeper keeps about a node beyond its data and MVCC revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TreeMeta {
    pub ctime: i64,
    pub mtime: i64,
    pub cversion: i32,
    pub aversion: i32,
    /// Revision of the last child created or deleted (0: none yet).
    pub pzxid: Revision,
    pub acl: Vec<Acl>,
    pub kind: ZnodeKind,
    /// Children ever created: the next sequential suffix. ZooKeeper's cversion counts
    /// deletes too, but its sequence numbers count creates only.
    pub child_creates: i32,
    /// The data was last written as null (read back as null while it stays empty).
    pub null_data: bool,
    /// Direct children now, kept by [`stage_meta`] so a Stat needs no scan; -1 when
    /// unknown (records written before it existed), then counted by a scan.
    pub num_children: i32,
}

/// The layout before `child_creates` existed, still read from older data dirs.
#[derive(Deserialize)]
struct TreeMetaV1 {
    ctime: i64,
    mtime: i64,
    cversion: i32,
    aversion: i32,
    pzxid: Revision,
    acl: Vec<Acl>,
    kind: ZnodeKind,
}

impl TreeMeta {
    fn decode(raw: &[u8]) -> KernelResult<TreeMeta> {
        postcard::from_bytes(raw)
            .or_else(|_| {
                postcard::from_bytes::<TreeMetaV1>(raw).map(|old| TreeMeta {
                    ctime: old.ctime,
                    mtime: old.mtime,
                    cversion: old.cversion,
                    aversion: old.aversion,
                    pzxid: old.pzxid,
                    acl: old.acl,
                    kind: old.kind,
                    child_creates: old.cversion,
                    null_data: false,
                    num_children: -1,
                })
            })
            .map_err(|e| KernelError::Storage(format!("corrupt tree meta: {e}")))
    }

    fn encode(&self) -> KernelResult<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| KernelError::Storage(e.to_string()))
    }
}

/// The nodes every ZooKeeper server starts with. ZooKeeper builds them outside any
/// transaction, so their parents' cversion, pzxid and sequence counter do not count
/// them; Concord creates them on first use and keeps those counters the same way.
const SYSTEM_NODES: [&[u8]; 3] = [b"/zookeeper", b"/zookeeper/config", b"/zookeeper/quota"];

/// Whether creating or deleting `key` counts as a child change of its parent.
fn counts_as_child_change(key: &[u8]) -> bool {
    !SYSTEM_NODES.contains(&key)
}

/// The parent path of a path key (`/a/b` → `/a`, `/a` → `/`); `None` for the root and
/// for keys that are not paths.
pub(crate) fn parent_of(key: &[u8]) -> Option<&[u8]> {
    if key.len() < 2 || key[0] != b'/' {
        return None;
    }
    let cut = key.iter().rposition(|b| *b == b'/')?;
    Some(if cut == 0 { &key[..1] } else { &key[..cut] })
}

/// The key range holding every descendant of `path`.
pub(crate) fn descendants(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = path.to_vec();
    if start != b"/" {
        start.push(b'/');
    }
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1; // '/' + 1 = '0'
    }
    (start, end)
}

/// Checks a ZooKeeper path: absolute, no empty, `.` or `..` segment, no trailing slash,
/// no NUL.
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

pub(crate) fn read_meta(view: &ReadView<'_>, path: &[u8]) -> KernelResult<Option<TreeMeta>> {
    if let Some(staged) = view.staged_tree_meta(path) {
        return Ok(staged.clone());
    }
    view.get(CF_TREE_META, path)?
        .map(|raw| TreeMeta::decode(&raw))
        .transpose()
}

/// Every key under `path` in `view`, with its record, in key order.
fn subtree_records(
    db: &DB,
    view: &ReadView<'_>,
    path: &[u8],
) -> KernelResult<Vec<(Vec<u8>, StoredKv)>> {
    let (start, end) = descendants(path);
    let mut out = Vec::new();
    let iter = db.iterator_cf_opt(
        cf(db, CF_KV_LATEST)?,
        view.options(),
        IteratorMode::From(&start, Direction::Forward),
    );
    for item in iter {
        let (key, raw) = item?;
        if key.as_ref() >= end.as_slice() {
            break;
        }
        let kv = StoredKv::decode(&raw)
            .ok_or_else(|| KernelError::Storage("corrupt kv record".into()))?;
        out.push((key.to_vec(), kv));
    }
    Ok(out)
}

/// The direct children of `path` in the current state, in key order.
pub(crate) fn children(db: &DB, view: &ReadView<'_>, path: &[u8]) -> KernelResult<Vec<Vec<u8>>> {
    view.check_uncovered_read("children")?;
    let (start, end) = descendants(path);
    let mut names = Vec::new();
    let iter = db.iterator_cf_opt(
        cf(db, CF_KV_LATEST)?,
        view.options(),
        IteratorMode::From(&start, Direction::Forward),
    );
    for item in iter {
        let (key, _) = item?;
        if key.as_ref() >= end.as_slice() {
            break;
        }
        let rest = &key[start.len()..];
        if !rest.is_empty() && !rest.contains(&b'/') {
            names.push(rest.to_vec());
        }
    }
    Ok(names)
}

/// `meta`'s child count, made known by a scan if the record predates the counter.
fn known_children(
    db: &DB,
    view: &ReadView<'_>,
    path: &[u8],
    meta: &mut TreeMeta,
) -> KernelResult<usize> {
    if meta.num_children < 0 {
        meta.num_children = i32::try_from(children(db, view, path)?.len()).unwrap_or(i32::MAX);
    }
    Ok(usize::try_from(meta.num_children).unwrap_or_default())
}

fn stat_of(kv: &StoredKv, meta: &TreeMeta, num_children: usize) -> ZnodeStat {
    ZnodeStat {
        czxid: kv.create_revision,
        mzxid: kv.mod_revision,
        ctime: meta.ctime,
        mtime: meta.mtime,
        version: i32::try_from(kv.version - 1).unwrap_or(i32::MAX),
        cversion: meta.cversion,
        aversion: meta.aversion,
        ephemeral_owner: kv.lease,
        data_length: i32::try_from(kv.value.len()).unwrap_or(i32::MAX),
        num_children: i32::try_from(num_children).unwrap_or(i32::MAX),
        pzxid: if meta.pzxid == 0 {
            kv.create_revision
        } else {
            meta.pzxid
        },
    }
}

/// The root's record: it always exists, has no data and was never written.
fn root_kv() -> StoredKv {
    StoredKv {
        version: 1,
        ..Default::default()
    }
}

/// A node as it is now (data, Stat, ACL) and, if `with_children`, the names of its
/// children; the root always exists.
pub(crate) fn node(
    db: &DB,
    view: &ReadView<'_>,
    path: &[u8],
    with_children: bool,
) -> KernelResult<Option<(TreeNode, Vec<Vec<u8>>)>> {
    let kv = if path == b"/" {
        root_kv()
    } else {
        match view.latest(path)? {
            Some(kv) => kv,
            None => return Ok(None),
        }
    };
    let mut meta = read_meta(view, path)?.unwrap_or_default();
    let names = if with_children {
        children(db, view, path)?
    } else {
        Vec::new()
    };
    let count = if with_children {
        names.len()
    } else {
        known_children(db, view, path, &mut meta)?
    };
    Ok(Some((assemble(kv, meta, count), names)))
}

fn assemble(kv: StoredKv, meta: TreeMeta, num_children: usize) -> TreeNode {
    TreeNode {
        stat: stat_of(&kv, &meta, num_children),
        null_data: meta.null_data && kv.value.is_empty(),
        acl: meta.acl,
        kind: meta.kind,
        data: kv.value,
    }
}

/// The node at `path` as its record and metadata make it, when they tell all of it:
/// not the root (whose record is implied) nor a node whose metadata predates the child
/// counter.
pub(crate) fn node_of(path: &[u8], kv: StoredKv, meta: TreeMeta) -> Option<TreeNode> {
    let count = usize::try_from(meta.num_children).ok()?;
    (path != b"/").then(|| assemble(kv, meta, count))
}

/// Executes a list of tree operations against the live state plus their own earlier
/// changes; on success returns the per-op results, the MVCC changes and the metadata of
/// the nodes they create or modify. Nothing is staged here.
pub(crate) struct TreeExecutor<'a> {
    db: &'a DB,
    view: ReadView<'a>,
    revision: Revision,
    now_ms: i64,
    /// Nodes created (`Some`) or deleted (`None`) by earlier ops.
    pending: BTreeMap<Vec<u8>, Option<StoredKv>>,
    /// Metadata of nodes created or changed by earlier ops.
    pub metas: BTreeMap<Vec<u8>, TreeMeta>,
    /// Children created by earlier ops, per parent (for sequential names).
    creates: BTreeMap<Vec<u8>, i32>,
    pub changes: Vec<Change>,
}

impl<'a> TreeExecutor<'a> {
    pub(crate) fn new(db: &'a DB, view: ReadView<'a>, now_ms: i64) -> KernelResult<Self> {
        let revision = view.revision()? + 1;
        Ok(TreeExecutor {
            db,
            view,
            revision,
            now_ms,
            pending: BTreeMap::new(),
            metas: BTreeMap::new(),
            creates: BTreeMap::new(),
            changes: Vec::new(),
        })
    }

    /// The revision the changes will get.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    fn current(&self, path: &[u8]) -> KernelResult<Option<StoredKv>> {
        if path == b"/" {
            return Ok(Some(root_kv()));
        }
        match self.pending.get(path) {
            Some(state) => Ok(state.clone()),
            None => self.view.latest(path),
        }
    }

    fn meta(&self, path: &[u8]) -> KernelResult<TreeMeta> {
        match self.metas.get(path) {
            Some(meta) => Ok(meta.clone()),
            None => Ok(read_meta(&self.view, path)?.unwrap_or_default()),
        }
    }

    fn has_children(&self, path: &[u8]) -> KernelResult<bool> {
        let (start, end) = descendants(path);
        let inside = |k: &[u8]| k >= start.as_slice() && k < end.as_slice();
        if self
            .pending
            .iter()
            .any(|(k, state)| state.is_some() && inside(k))
        {
            return Ok(true);
        }
        self.view.check_uncovered_read("children")?;
        let iter = self.db.iterator_cf_opt(
            cf(self.db, CF_KV_LATEST)?,
            self.view.options(),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            if !inside(&key) {
                break;
            }
            if !matches!(self.pending.get(key.as_ref()), Some(None)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn check_version(kv: &StoredKv, expected: i32) -> Result<(), TreeError> {
        if expected == -1 || i64::from(expected) == kv.version - 1 {
            Ok(())
        } else {
            Err(TreeError::BadVersion)
        }
    }

    fn record(&mut self, key: Vec<u8>, kv: Option<StoredKv>, prev: Option<StoredKv>) {
        if let Some(parent) = parent_of(&key)
            && kv.is_some()
            && prev.is_none()
            && counts_as_child_change(&key)
        {
            *self.creates.entry(parent.to_vec()).or_default() += 1;
        }
        self.pending.insert(key.clone(), kv.clone());
        self.changes.push(Change { key, kv, prev });
    }

    /// Runs one operation; an error leaves the executor unusable (the whole list fails).
    pub(crate) fn run(&mut self, op: &TreeOp) -> KernelResult<Result<TreeOpResult, TreeError>> {
        // A sequential create may name its parent with a trailing `/` (an empty prefix):
        // the path is checked with the suffix it will get.
        let checked = match op {
            TreeOp::Create {
                path,
                sequential: true,
                ..
            } => format!("{path}0"),
            TreeOp::V2Write(V2Write {
                path, unique: true, ..
            }) => format!("{}/0", path.trim_end_matches('/')),
            other => other.path().to_string(),
        };
        if !valid_path(&checked) {
            return Ok(Err(TreeError::BadArguments));
        }
        Ok(match op {
            TreeOp::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                sequential,
                kind,
            } => self.create(path, data, acl, *ephemeral_owner, *sequential, *kind)?,
            TreeOp::Delete { path, version } => self.delete(path.as_bytes(), *version)?,
            TreeOp::SetData {
                path,
                data,
                version,
            } => self.set_data(path.as_bytes(), data, *version)?,
            TreeOp::Check { path, version } => match self.current(path.as_bytes())? {
                None => Err(TreeError::NoNode),
                Some(kv) => Self::check_version(&kv, *version).map(|()| TreeOpResult::Checked),
            },
            TreeOp::SetAcl { path, acl, version } => {
                self.set_acl(path.as_bytes(), acl, *version)?
            }
            TreeOp::V2Write(write) => self.v2_write(write)?,
            TreeOp::V2Delete(delete) => self.v2_delete(delete)?,
        })
    }

    /// Whether v2 sees `path` (which exists) as a directory: the root, a node made as
    /// one, or any node with children.
    fn is_dir(&self, path: &[u8]) -> KernelResult<bool> {
        Ok(path == b"/"
            || self.meta(path)?.kind == ZnodeKind::Directory
            || self.has_children(path)?)
    }

    /// Records a new node at `path` (a v2 file, or a directory when `value` is `None`).
    fn v2_create(
        &mut self,
        path: &[u8],
        value: &Option<Vec<u8>>,
        lease: i64,
    ) -> KernelResult<StoredKv> {
        let kv = StoredKv {
            create_revision: self.revision,
            mod_revision: self.revision,
            version: 1,
            lease,
            value: value.clone().unwrap_or_default(),
        };
        let mut orphans = self.meta(path)?;
        let meta = TreeMeta {
            ctime: self.now_ms,
            mtime: self.now_ms,
            kind: v2_kind(value),
            num_children: i32::try_from(known_children(self.db, &self.view, path, &mut orphans)?)
                .unwrap_or(i32::MAX),
            ..Default::default()
        };
        self.metas.insert(path.to_vec(), meta);
        Ok(kv)
    }

    /// Checks `prevValue` / `prevIndex` of a v2 compare-and-swap or compare-and-delete.
    fn v2_compare(kv: &StoredKv, prev_value: &Option<Vec<u8>>, prev_index: Revision) -> bool {
        prev_value.as_ref().is_none_or(|v| *v == kv.value)
            && (prev_index == 0 || prev_index == kv.mod_revision)
    }

    fn v2_write(&mut self, w: &V2Write) -> KernelResult<Result<TreeOpResult, TreeError>> {
        let path = if w.unique {
            format!("{}/{:020}", w.path.trim_end_matches('/'), self.revision)
        } else {
            w.path.clone()
        };
        let key = path.as_bytes();
        if key == b"/" {
            return Ok(Err(TreeError::RootReadOnly));
        }
        if w.lease != 0 && self.view.lease(w.lease)?.is_none() {
            return Ok(Err(TreeError::SessionExpired));
        }
        // Ancestors: directories, made as needed.
        for cut in ancestor_cuts(key) {
            let ancestor = &key[..cut];
            if self.current(ancestor)?.is_some() {
                if !self.is_dir(ancestor)? {
                    return Ok(Err(TreeError::NotDir));
                }
            } else {
                let kv = self.v2_create(ancestor, &None, 0)?;
                self.record(ancestor.to_vec(), Some(kv), None);
            }
        }
        let current = self.current(key)?;
        let current_dir = match &current {
            Some(_) => self.is_dir(key)?,
            None => false,
        };
        let conditional = w.prev_value.is_some() || w.prev_index != 0;
        let Some(prev) = current else {
            if w.prev_exist == Some(true) || conditional || w.refresh {
                return Ok(Err(TreeError::NoNode));
            }
            let kv = self.v2_create(key, &w.value, w.lease)?;
            let node = V2Node {
                kv: kv.clone().into_key_value(key.to_vec()),
                dir: w.value.is_none(),
            };
            self.record(key.to_vec(), Some(kv), None);
            return Ok(Ok(TreeOpResult::V2Written { node, prev: None }));
        };
        if w.prev_exist == Some(false) {
            return Ok(Err(TreeError::NodeExists));
        }
        // Only an update without a value (a TTL change) may touch a directory.
        let updating = w.prev_exist == Some(true) && !conditional;
        if current_dir && !(updating && w.value.as_ref().is_none_or(Vec::is_empty)) {
            return Ok(Err(TreeError::NotFile));
        }
        if conditional && !Self::v2_compare(&prev, &w.prev_value, w.prev_index) {
            return Ok(Err(TreeError::CompareFailed));
        }
        // A plain set replaces the node (a new one, as etcd v2 makes, and a directory if
        // asked); update and compare-and-swap keep it and its kind.
        let replace = w.prev_exist.is_none() && !conditional && !w.refresh;
        let dir = if replace {
            w.value.is_none()
        } else {
            current_dir
        };
        let value = if !replace && (w.refresh || dir) {
            prev.value.clone()
        } else {
            w.value.clone().unwrap_or_default()
        };
        let kv = StoredKv {
            create_revision: if replace {
                self.revision
            } else {
                prev.create_revision
            },
            mod_revision: self.revision,
            version: if replace { 1 } else { prev.version + 1 },
            lease: w.lease,
            value,
        };
        let mut meta = self.meta(key)?;
        meta.mtime = self.now_ms;
        meta.null_data = false;
        if replace {
            meta.kind = v2_kind(&w.value);
        }
        known_children(self.db, &self.view, key, &mut meta)?;
        self.metas.insert(key.to_vec(), meta);
        let prev_node = V2Node {
            kv: prev.clone().into_key_value(key.to_vec()),
            dir: current_dir,
        };
        let node = V2Node {
            kv: kv.clone().into_key_value(key.to_vec()),
            dir,
        };
        self.record(key.to_vec(), Some(kv), Some(prev));
        Ok(Ok(TreeOpResult::V2Written {
            node,
            prev: Some(prev_node),
        }))
    }

    fn v2_delete(&mut self, d: &V2Delete) -> KernelResult<Result<TreeOpResult, TreeError>> {
        let key = d.path.as_bytes();
        if key == b"/" {
            return Ok(Err(TreeError::RootReadOnly));
        }
        let Some(kv) = self.current(key)? else {
            return Ok(Err(TreeError::NoNode));
        };
        let dir = self.is_dir(key)?;
        if d.prev_value.is_some() || d.prev_index != 0 {
            if dir {
                return Ok(Err(TreeError::NotFile));
            }
            if !Self::v2_compare(&kv, &d.prev_value, d.prev_index) {
                return Ok(Err(TreeError::CompareFailed));
            }
        } else if dir && !(d.dir || d.recursive) {
            return Ok(Err(TreeError::NotFile));
        }
        let descendants = self.live_descendants(key)?;
        if !descendants.is_empty() && !d.recursive {
            return Ok(Err(TreeError::NotEmpty));
        }
        for (child, child_kv) in descendants {
            self.metas.remove(&child);
            self.record(child, None, Some(child_kv));
        }
        self.metas.remove(key);
        let prev = V2Node {
            kv: kv.clone().into_key_value(key.to_vec()),
            dir,
        };
        self.record(key.to_vec(), None, Some(kv));
        Ok(Ok(TreeOpResult::V2Deleted { prev }))
    }

    /// Every key under `path` now (the live state plus this list's own changes).
    fn live_descendants(&self, path: &[u8]) -> KernelResult<Vec<(Vec<u8>, StoredKv)>> {
        let (start, end) = descendants(path);
        let mut found: BTreeMap<Vec<u8>, StoredKv> = subtree_records(self.db, &self.view, path)?
            .into_iter()
            .collect();
        for (key, state) in self.pending.range(start..end) {
            match state {
                Some(kv) => found.insert(key.clone(), kv.clone()),
                None => found.remove(key),
            };
        }
        Ok(found.into_iter().collect())
    }

    fn create(
        &mut self,
        path: &str,
        data: &Option<Vec<u8>>,
        acl: &[Acl],
        ephemeral_owner: i64,
        sequential: bool,
        kind: ZnodeKind,
    ) -> KernelResult<Result<TreeOpResult, TreeError>> {
        if path == "/" {
            return Ok(Err(TreeError::NodeExists));
        }
        let Some(parent) = parent_of(path.as_bytes()).map(<[u8]>::to_vec) else {
            return Ok(Err(TreeError::BadArguments));
        };
        let Some(parent_kv) = self.current(&parent)? else {
            return Ok(Err(TreeError::NoNode));
        };
        if parent_kv.lease != 0 {
            return Ok(Err(TreeError::NoChildrenForEphemerals));
        }
        if ephemeral_owner != 0 && self.view.lease(ephemeral_owner)?.is_none() {
            return Ok(Err(TreeError::SessionExpired));
        }
        let parent_meta = self.meta(&parent)?;
        let name = if sequential {
            let counter =
                parent_meta.child_creates + self.creates.get(&parent).copied().unwrap_or(0);
            format!("{path}{counter:010}")
        } else {
            path.to_string()
        };
        if self.current(name.as_bytes())?.is_some() {
            return Ok(Err(TreeError::NodeExists));
        }
        let kv = StoredKv {
            create_revision: self.revision,
            mod_revision: self.revision,
            version: 1,
            lease: ephemeral_owner,
            value: data.clone().unwrap_or_default(),
        };
        // Keys written through etcd below a path that was not a node are its children
        // already (their count was kept in a record for the path).
        let mut orphans = self.meta(name.as_bytes())?;
        let meta = TreeMeta {
            ctime: self.now_ms,
            mtime: self.now_ms,
            acl: acl.to_vec(),
            kind,
            null_data: data.is_none(),
            num_children: i32::try_from(known_children(
                self.db,
                &self.view,
                name.as_bytes(),
                &mut orphans,
            )?)
            .unwrap_or(i32::MAX),
            ..Default::default()
        };
        let stat = stat_of(&kv, &meta, usize::try_from(meta.num_children).unwrap_or(0));
        self.metas.insert(name.as_bytes().to_vec(), meta);
        self.record(name.as_bytes().to_vec(), Some(kv), None);
        Ok(Ok(TreeOpResult::Created { path: name, stat }))
    }

    fn delete(
        &mut self,
        path: &[u8],
        version: i32,
    ) -> KernelResult<Result<TreeOpResult, TreeError>> {
        if path == b"/" {
            return Ok(Err(TreeError::BadArguments));
        }
        let Some(kv) = self.current(path)? else {
            return Ok(Err(TreeError::NoNode));
        };
        if let Err(e) = Self::check_version(&kv, version) {
            return Ok(Err(e));
        }
        if self.has_children(path)? {
            return Ok(Err(TreeError::NotEmpty));
        }
        self.metas.remove(path);
        self.record(path.to_vec(), None, Some(kv));
        Ok(Ok(TreeOpResult::Deleted))
    }

    fn set_acl(
        &mut self,
        path: &[u8],
        acl: &[Acl],
        version: i32,
    ) -> KernelResult<Result<TreeOpResult, TreeError>> {
        let Some(kv) = self.current(path)? else {
            return Ok(Err(TreeError::NoNode));
        };
        let mut meta = self.meta(path)?;
        if version != -1 && version != meta.aversion {
            return Ok(Err(TreeError::BadVersion));
        }
        meta.aversion += 1;
        meta.acl = acl.to_vec();
        let num_children = known_children(self.db, &self.view, path, &mut meta)?;
        let stat = stat_of(&kv, &meta, num_children);
        self.metas.insert(path.to_vec(), meta);
        Ok(Ok(TreeOpResult::AclSet { stat }))
    }

    fn set_data(
        &mut self,
        path: &[u8],
        data: &Option<Vec<u8>>,
        version: i32,
    ) -> KernelResult<Result<TreeOpResult, TreeError>> {
        if path == b"/" {
            return Ok(Err(TreeError::BadArguments));
        }
        let Some(prev) = self.current(path)? else {
            return Ok(Err(TreeError::NoNode));
        };
        if let Err(e) = Self::check_version(&prev, version) {
            return Ok(Err(e));
        }
        let kv = StoredKv {
            mod_revision: self.revision,
            version: prev.version + 1,
            value: data.clone().unwrap_or_default(),
            ..prev.clone()
        };
        let mut meta = self.meta(path)?;
        meta.mtime = self.now_ms;
        meta.null_data = data.is_none();
        let num_children = known_children(self.db, &self.view, path, &mut meta)?;
        let stat = stat_of(&kv, &meta, num_children);
        self.metas.insert(path.to_vec(), meta);
        self.record(path.to_vec(), Some(kv), Some(prev));
        Ok(Ok(TreeOpResult::DataSet { stat }))
    }
}

/// The parent node whose metadata `change` alters: the parent of a node it creates or
/// removes. Other changes (updates, keys outside the `/` tree) leave tree metadata alone.
fn reshaped_parent(change: &Change) -> Option<&[u8]> {
    let created = change.prev.is_none() && change.kv.is_some();
    let removed = change.kv.is_none();
    if created || removed {
        parent_of(&change.key)
    } else {
        None
    }
}

/// Stages the tree metadata that goes with `changes` at `revision`: the metas given
/// (nodes created or modified by tree operations), a cversion/pzxid bump of the parent
/// of every path key created or deleted, and the removal of deleted nodes' metadata.
/// Parents' metadata is read through `view`. Returns what it staged (`None`: removed).
pub(crate) fn stage_meta(
    db: &DB,
    view: &ReadView<'_>,
    revision: Revision,
    changes: &[Change],
    mut metas: BTreeMap<Vec<u8>, TreeMeta>,
    batch: &mut WriteBatch,
) -> KernelResult<Vec<(Vec<u8>, Option<TreeMeta>)>> {
    let mut deleted: BTreeSet<Vec<u8>> = BTreeSet::new();
    for change in changes {
        let created = change.prev.is_none() && change.kv.is_some();
        let removed = change.kv.is_none();
        let Some(parent) = reshaped_parent(change) else {
            continue;
        };
        if removed {
            metas.remove(&change.key);
            deleted.insert(change.key.clone());
        } else {
            deleted.remove(&change.key);
        }
        if deleted.contains(parent) {
            continue;
        }
        if !metas.contains_key(parent) {
            let stored = read_meta(view, parent)?.unwrap_or_default();
            metas.insert(parent.to_vec(), stored);
        }
        if let Some(meta) = metas.get_mut(parent) {
            // Counted before this revision's changes, which are then applied in order.
            known_children(db, view, parent, meta)?;
            meta.num_children += if created { 1 } else { -1 };
            if counts_as_child_change(&change.key) {
                meta.cversion += 1;
                meta.pzxid = revision;
                if created {
                    meta.child_creates += 1;
                }
            }
        }
    }
    let tree_meta = cf(db, CF_TREE_META)?;
    let expiring = cf(db, CF_TREE_EXPIRING)?;
    let mut staged = Vec::with_capacity(deleted.len() + metas.len());
    for key in &deleted {
        batch.delete_cf(tree_meta, key);
        batch.delete_cf(expiring, key);
    }
    for (key, meta) in metas {
        if !deleted.contains(&key) {
            batch.put_cf(tree_meta, &key, meta.encode()?);
            if meta.kind.expires() {
                batch.put_cf(expiring, &key, []);
            }
            staged.push((key, Some(meta)));
        }
    }
    staged.extend(deleted.into_iter().map(|key| (key, None)));
    Ok(staged)
}

/// The node kind of a v2 write: a directory when it has no value.
fn v2_kind(value: &Option<Vec<u8>>) -> ZnodeKind {
    if value.is_some() {
        ZnodeKind::Persistent
    } else {
        ZnodeKind::Directory
    }
}

/// The lengths of `path`'s proper ancestors other than the root (`/a/b/c` → `/a`,
/// `/a/b`).
fn ancestor_cuts(path: &[u8]) -> impl Iterator<Item = usize> + '_ {
    path.iter()
        .enumerate()
        .skip(1)
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i)
}

/// Whether `path` was made as a v2 directory.
pub(crate) fn is_directory(view: &ReadView<'_>, path: &[u8]) -> KernelResult<bool> {
    Ok(read_meta(view, path)?.is_some_and(|meta| meta.kind == ZnodeKind::Directory))
}

/// Whether v2 sees the existing node `path` as a directory (see `TreeExecutor::is_dir`).
fn is_v2_dir(db: &DB, view: &ReadView<'_>, path: &[u8]) -> KernelResult<bool> {
    if path == b"/" {
        return Ok(true);
    }
    let mut meta = read_meta(view, path)?.unwrap_or_default();
    Ok(meta.kind == ZnodeKind::Directory || known_children(db, view, path, &mut meta)? > 0)
}

/// A node and its descendants as the v2 dialect reads them (etcd's walk: every ancestor
/// must exist and be a directory).
pub(crate) fn v2_subtree(
    db: &DB,
    view: &ReadView<'_>,
    path: &[u8],
    recursive: bool,
) -> KernelResult<V2Subtree> {
    let mut out = V2Subtree {
        revision: view.revision()?,
        ..Default::default()
    };
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    for cut in ancestor_cuts(path) {
        let ancestor = &path[..cut];
        if view.latest(ancestor)?.is_none() {
            out.missing = Some(lossy(ancestor));
            return Ok(out);
        }
        if !is_v2_dir(db, view, ancestor)? {
            out.not_dir = Some(lossy(ancestor));
            return Ok(out);
        }
    }
    let kv = if path == b"/" {
        root_kv()
    } else {
        match view.latest(path)? {
            Some(kv) => kv,
            None => {
                out.missing = Some(lossy(path));
                return Ok(out);
            }
        }
    };
    let dir = is_v2_dir(db, view, path)?;
    out.node = Some(V2Node {
        kv: kv.into_key_value(path.to_vec()),
        dir,
    });
    if !dir {
        return Ok(out);
    }
    let depth_start = descendants(path).0.len();
    for (key, kv) in subtree_records(db, view, path)? {
        if !recursive && key[depth_start..].contains(&b'/') {
            continue;
        }
        out.descendants.push(V2Node {
            dir: is_v2_dir(db, view, &key)?,
            kv: kv.into_key_value(key),
        });
    }
    Ok(out)
}

/// Containers that had children and have none left, and TTL nodes unmodified for
/// their TTL at `now_ms` and childless: what the server should delete now.
pub(crate) fn reapable(
    db: &DB,
    view: &ReadView<'_>,
    now_ms: i64,
) -> KernelResult<Vec<ReapableNode>> {
    let mut due = Vec::new();
    let iter = db.iterator_cf_opt(
        cf(db, CF_TREE_EXPIRING)?,
        view.options(),
        IteratorMode::Start,
    );
    for item in iter {
        let (path, _) = item?;
        let Some(meta) = read_meta(view, &path)? else {
            continue;
        };
        let expired = match meta.kind {
            ZnodeKind::Persistent | ZnodeKind::Directory => false,
            ZnodeKind::Container => meta.cversion > 0,
            ZnodeKind::Ttl(ttl) => meta.mtime.saturating_add(ttl) < now_ms,
        };
        if !expired || !children(db, view, &path)?.is_empty() {
            continue;
        }
        if let Some(kv) = view.latest(&path)? {
            due.push(ReapableNode {
                path: String::from_utf8_lossy(&path).into_owned(),
                version: i32::try_from(kv.version - 1).unwrap_or(i32::MAX),
            });
        }
    }
    Ok(due)
}

/// Marks in `meta` that `tree_expiring` lists every container and TTL node.
const META_EXPIRING_INDEXED: &[u8] = b"tree_expiring_indexed";

/// Fills `tree_expiring` from `tree_meta` once, for a state written before that index
/// existed (a data dir, backup or snapshot of an earlier version); a no-op after.
pub(crate) fn index_expiring_nodes(db: &DB) -> KernelResult<()> {
    let cf_meta = cf(db, CF_META)?;
    if db.get_cf(cf_meta, META_EXPIRING_INDEXED)?.is_some() {
        return Ok(());
    }
    let expiring = cf(db, CF_TREE_EXPIRING)?;
    let mut batch = WriteBatch::default();
    for item in db.iterator_cf(cf(db, CF_TREE_META)?, IteratorMode::Start) {
        let (path, raw) = item?;
        if TreeMeta::decode(&raw)?.kind.expires() {
            batch.put_cf(expiring, path, []);
        }
    }
    let listed = batch.len();
    batch.put_cf(cf_meta, META_EXPIRING_INDEXED, []);
    db.write(batch)?;
    tracing::info!(
        nodes = listed,
        "listed the container and TTL nodes for the reaper"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_parents() {
        assert_eq!(parent_of(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(parent_of(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent_of(b"/"), None);
        assert_eq!(parent_of(b"plain"), None);
        for good in ["/", "/a", "/a/b-1", "/zookeeper/quota"] {
            assert!(valid_path(good), "{good}");
        }
        for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\0"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert_eq!(descendants(b"/"), (b"/".to_vec(), b"0".to_vec()));
        assert_eq!(descendants(b"/a"), (b"/a/".to_vec(), b"/a0".to_vec()));
    }

    #[test]
    fn a_state_without_the_expiring_index_gets_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state_machine::open_state_db(dir.path()).unwrap();
        let meta_of = |kind| TreeMeta {
            kind,
            ..TreeMeta::default()
        };
        let tree_meta = cf(&db, CF_TREE_META).unwrap();
        for (path, kind) in [
            ("/box", ZnodeKind::Container),
            ("/plain", ZnodeKind::Persistent),
            ("/ttl", ZnodeKind::Ttl(5)),
        ] {
            let raw = meta_of(kind).encode().unwrap();
            db.put_cf(tree_meta, path, raw).unwrap();
        }
        let listed = |db: &DB| {
            db.iterator_cf(cf(db, CF_TREE_EXPIRING).unwrap(), IteratorMode::Start)
                .map(|item| item.unwrap().0.to_vec())
                .collect::<Vec<_>>()
        };
        index_expiring_nodes(&db).unwrap();
        assert_eq!(listed(&db), vec![b"/box".to_vec(), b"/ttl".to_vec()]);
        // Once marked it scans no more: from then on `stage_meta` keeps the index.
        db.delete_cf(cf(&db, CF_TREE_EXPIRING).unwrap(), "/box")
            .unwrap();
        index_expiring_nodes(&db).unwrap();
        assert_eq!(listed(&db), vec![b"/ttl".to_vec()]);
    }
}
