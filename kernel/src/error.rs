//! Typed kernel errors. Adapters map each variant once, at their edge, to the dialect's
//! own error (etcd gRPC status, v2 errorCode, ZooKeeper err code).

use serde::{Deserialize, Serialize};

use crate::types::Revision;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KernelError {
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("request is too large")]
    RequestTooLarge,
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: Revision },
    #[error("required revision is a future revision")]
    FutureRevision,
    #[error("database space exceeded")]
    NoSpace,
    /// This node is not the leader; `leader` is the one it knows of, if any.
    #[error("not leader")]
    NotLeader { leader: Option<u64> },
    #[error("no leader")]
    NoLeader,
    #[error("request timed out")]
    Timeout,
    /// The leader changed (or its connection was lost) while the request was in flight:
    /// it may or may not have been applied.
    #[error("leader changed")]
    LeaderChanged,
    #[error("member not found")]
    MemberNotFound,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    /// A peer URL that is not `http(s)://IP:PORT`.
    #[error("invalid peer URL {0:?}")]
    BadPeerUrl(String),
    #[error("can only promote a learner member")]
    NotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The change would leave the cluster without a quorum of started members, or
    /// another change is still in progress.
    #[error("re-configuration failed: {0}")]
    Reconfiguration(String),
    #[error("kernel is shutting down")]
    Shutdown,
    #[error("storage failure: {0}")]
    Storage(String),
}

impl KernelError {
    /// Whether a client may safely send the same request again (after a short wait or to
    /// another member).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KernelError::NotLeader { .. }
                | KernelError::NoLeader
                | KernelError::Timeout
                | KernelError::LeaderChanged
        )
    }
}

impl From<rocksdb::Error> for KernelError {
    fn from(e: rocksdb::Error) -> Self {
        KernelError::Storage(e.to_string())
    }
}

pub type KernelResult<T> = Result<T, KernelError>;
