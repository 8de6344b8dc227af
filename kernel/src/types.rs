//! The kernel's public request and response types: what adapters send and receive.
//!
//! These mirror the etcd v3 data model (the richest of the three dialects); the v2 and
//! ZooKeeper adapters express their operations with the same types. They carry no
//! protobuf, RocksDB or openraft types, so adapters depend on nothing else.

use serde::{Deserialize, Serialize};

/// Global MVCC revision: rises by one per committed write transaction.
pub type Revision = i64;

/// One key's state at some revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// What every response carries: which cluster and member answered, at which revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: Revision,
    pub raft_term: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of one key (`range_end` empty), a half-open range `[key, range_end)`, or every
/// key from `key` on (`range_end == [0]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub limit: i64,
    /// 0 reads the current revision.
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Read this node's state without a quorum round.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Keys in the range at that revision, before limit and revision filters.
    pub count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// The field a compare looks at, with the operand to compare it against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(Revision),
    Mod(Revision),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    pub revision: Revision,
    /// Answer only once the removed history is gone from storage (always true here:
    /// compaction runs inside the apply step).
    pub physical: bool,
}

/// One member of the Raft group, as the Cluster API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What `Maintenance.Status` reports about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub header: ResponseHeader,
    pub version: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

/// A lease's id; 0 in a request means "choose one".
pub type LeaseId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. A delete's `kv` holds only the key and the delete's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's previous version, when the watch asked for it and it still exists.
    pub prev_kv: Option<KeyValue>,
}

/// What a watcher follows: one key, `[key, range_end)`, or every key from `key` on
/// (`range_end == [0]`), from `start_revision` (0 = from the next revision).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub start_revision: Revision,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchRequest {
    /// Whether `key` is in the watched range.
    pub fn covers(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else {
            key >= self.key.as_slice() && (self.range_end == [0] || key < self.range_end.as_slice())
        }
    }

    /// Whether the watcher delivers `event` (range and filters).
    pub fn wants(&self, event: &Event) -> bool {
        self.covers(&event.kv.key)
            && match event.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }
}

/// The matching events of one revision, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// The TTL granted (the request's, raised to the minimum).
    pub ttl: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// The renewed TTL; 0 when the lease does not exist (etcd answers so, not an error).
    pub ttl: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// Seconds left; -1 when the lease does not exist.
    pub ttl: i64,
    pub granted_ttl: i64,
    /// The attached keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseLeasesResponse {
    pub header: ResponseHeader,
    pub leases: Vec<LeaseId>,
}

/// A condition a member raises that changes what the cluster accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    /// Storage passed its quota: writes that add data are refused until it is disarmed.
    NoSpace,
    /// Members disagree on their data.
    Corrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: AlarmKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashKvResponse {
    pub header: ResponseHeader,
    pub hash: u32,
    pub compact_revision: Revision,
    /// The revision the hash covers.
    pub hash_revision: Revision,
}

/// One ACL entry of a tree node (ZooKeeper's `ACL`: permission bits, scheme, id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub scheme: String,
    pub id: String,
}

/// What kind of node a tree create makes (beyond ephemeral and sequential).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZnodeKind {
    #[default]
    Persistent,
    /// Removed by the server once it had children and has none left.
    Container,
    /// Removed by the server when unmodified and childless for this many milliseconds.
    Ttl(i64),
    /// An etcd v2 directory: a node that holds children and no value of its own (to
    /// ZooKeeper, a persistent node with empty data).
    Directory,
}

impl ZnodeKind {
    /// Whether the server removes nodes of this kind by itself (containers, TTL nodes).
    pub fn expires(self) -> bool {
        matches!(self, ZnodeKind::Container | ZnodeKind::Ttl(_))
    }
}

/// ZooKeeper's Stat of a tree node; zxids are kernel revisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZnodeStat {
    pub czxid: Revision,
    pub mzxid: Revision,
    pub ctime: i64,
    pub mtime: i64,
    /// Data version: the MVCC version minus one.
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    /// The lease (session) of an ephemeral node, else 0.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: Revision,
}

/// A tree node as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub data: Vec<u8>,
    /// ZooKeeper's null data (as opposed to empty): written as null and still empty.
    pub null_data: bool,
    pub stat: ZnodeStat,
    pub acl: Vec<Acl>,
    pub kind: ZnodeKind,
}

/// A tree node as read, with its children's names (in byte order, when asked for) and the revision of
/// the state it was read from; `node` is `None` if there is no such node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRead {
    pub revision: Revision,
    pub node: Option<TreeNode>,
    pub children: Vec<String>,
}

/// One operation on the tree view, checked at apply time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeOp {
    /// Create `path` (with a 10-digit suffix from the parent's count of child creates
    /// when `sequential`); `ephemeral_owner` is a lease id, or 0; `data` `None` is
    /// ZooKeeper's null (stored empty, read back as null).
    Create {
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        sequential: bool,
        kind: ZnodeKind,
    },
    /// Delete `path` if its version is `version` (-1: any) and it has no children.
    Delete { path: String, version: i32 },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    /// Succeeds if `path` exists with `version` (-1: any).
    Check { path: String, version: i32 },
    /// Replace the ACL of `path` if its ACL version is `version` (-1: any).
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// etcd v2's set/create/update/compareAndSwap: write a file (`value`) or a directory
    /// (`value` `None`) at `path`, creating missing ancestors as directories.
    V2Write(V2Write),
    /// etcd v2's delete/compareAndDelete.
    V2Delete(V2Delete),
}

/// A v2 write, checked at apply time as etcd's v2 store checks it. Ancestors must be
/// directories (`NotDir`); an existing directory is not overwritten (`NotFile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Write {
    /// The key; with `unique`, the directory the new key goes in.
    pub path: String,
    /// The file's value, or `None` for a directory.
    pub value: Option<Vec<u8>>,
    /// The lease carrying the node's TTL (0: permanent).
    pub lease: i64,
    /// `Some(true)`: the node must exist (update); `Some(false)`: it must not (create).
    pub prev_exist: Option<bool>,
    /// Compare-and-swap conditions on the existing file.
    pub prev_value: Option<Vec<u8>>,
    /// 0: no condition.
    pub prev_index: Revision,
    /// Keep the value, change only the TTL.
    pub refresh: bool,
    /// Create a new key in `path` named by the write's revision (20 digits).
    pub unique: bool,
}

/// A v2 delete: a file, or a directory with `dir` (empty) or `recursive` (everything
/// under it, in the same revision).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Delete {
    pub path: String,
    pub dir: bool,
    pub recursive: bool,
    pub prev_value: Option<Vec<u8>>,
    pub prev_index: Revision,
}

/// A node as the v2 dialect shows it: its record and whether it is a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Node {
    pub kv: KeyValue,
    pub dir: bool,
}

/// A node and what lies under it, as one snapshot read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Subtree {
    pub revision: Revision,
    /// `None`: no such node (`missing` then names the first path prefix not found, or
    /// `not_dir` the first ancestor that is a file).
    pub node: Option<V2Node>,
    /// Descendants in key order: direct children only, or all with `recursive`.
    pub descendants: Vec<V2Node>,
    pub missing: Option<String>,
    pub not_dir: Option<String>,
}

impl TreeOp {
    /// The path the operation names.
    pub fn path(&self) -> &str {
        match self {
            TreeOp::Create { path, .. }
            | TreeOp::Delete { path, .. }
            | TreeOp::SetData { path, .. }
            | TreeOp::Check { path, .. }
            | TreeOp::SetAcl { path, .. }
            | TreeOp::V2Write(V2Write { path, .. })
            | TreeOp::V2Delete(V2Delete { path, .. }) => path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeOpResult {
    Created {
        path: String,
        stat: ZnodeStat,
    },
    Deleted,
    DataSet {
        stat: ZnodeStat,
    },
    Checked,
    AclSet {
        stat: ZnodeStat,
    },
    /// A v2 write: the node as written and the one it replaced.
    V2Written {
        node: V2Node,
        prev: Option<V2Node>,
    },
    /// A v2 delete: the node removed (its record before the delete).
    V2Deleted {
        prev: V2Node,
    },
}

/// Why a tree operation failed (ZooKeeper's error codes for these cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TreeError {
    #[error("no node")]
    NoNode,
    #[error("node exists")]
    NodeExists,
    #[error("bad version")]
    BadVersion,
    #[error("directory not empty")]
    NotEmpty,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    #[error("bad arguments")]
    BadArguments,
    /// An ephemeral create named a session (lease) that no longer exists.
    #[error("session expired")]
    SessionExpired,
    /// v2: the node is a directory where a file is required.
    #[error("not a file")]
    NotFile,
    /// v2: an ancestor is a file where a directory is required.
    #[error("not a directory")]
    NotDir,
    /// v2: prevValue or prevIndex did not match.
    #[error("compare failed")]
    CompareFailed,
    /// v2: the root cannot be written or deleted.
    #[error("root is read only")]
    RootReadOnly,
}

/// A tree node the server removes on its own when it is due: an empty container that
/// once had children, or a TTL node unmodified for its TTL and childless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapableNode {
    pub path: String,
    /// The data version it had when found, so that a delete guarded by it loses to any
    /// change made since.
    pub version: i32,
}

/// The outcome of a list of tree operations: every result, or the index and error of
/// the first one that failed (then nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeTxnResponse {
    pub header: ResponseHeader,
    pub outcome: Result<Vec<TreeOpResult>, (usize, TreeError)>,
}
