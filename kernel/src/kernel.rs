//! The kernel handle: the one public API that every adapter (built-in or plugin) uses.
//!
//! It opens the two RocksDB instances, starts the Raft node (bootstrapping a one-member
//! group on an empty data dir), and offers reads (linearizable through read-index, or
//! serializable from local state) and writes (proposed through Raft).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::consensus::{Command, CommandReply, Raft, SingleMemberNetwork};
use crate::error::{KernelError, KernelResult};
use crate::log_store::{LogStore, open_log_db, read_local_meta, write_local_meta};
use crate::mvcc::{self, ReadView};
use crate::state_machine::{StateMachine, open_state_db};
use crate::types::{
    CompactRequest, DeleteRangeRequest, DeleteRangeResponse, Member, NodeStatus, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use crate::validate;

/// The etcd server version Concord reports (see ARCHITECTURE.md: clients switch features
/// on it).
pub const ETCD_VERSION: &str = "3.5.17";
/// The etcd cluster version reported beside it.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// How long shutdown waits for Raft's tasks to release storage.
const SHUTDOWN_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// On-disk format version, checked at open.
const DATA_VERSION: u32 = 1;
const META_IDENTITY: &[u8] = b"identity";

/// Everything the kernel needs to start. Built and validated by the config crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// URL peers would use to reach this member (reported by the Cluster API).
    pub peer_url: String,
    /// URLs clients use to reach this member.
    pub client_urls: Vec<String>,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_every_entries: u64,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            name: "default".into(),
            data_dir: PathBuf::from("concord-data"),
            peer_url: "http://127.0.0.1:2380".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_every_entries: 10_000,
        }
    }
}

/// Who this member is, fixed when its data dir is first created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    data_version: u32,
    name: String,
    member_id: u64,
    cluster_id: u64,
}

/// FNV-1a: a stable hash for deriving ids (the same inputs give the same id everywhere).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(b"\0") {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash.max(1)
}

impl Identity {
    fn load_or_create(db: &DB, config: &KernelConfig) -> KernelResult<Identity> {
        if let Some(raw) = read_local_meta(db, META_IDENTITY)? {
            let identity: Identity = postcard::from_bytes(&raw)
                .map_err(|e| KernelError::Storage(format!("unreadable member identity: {e}")))?;
            if identity.data_version != DATA_VERSION {
                return Err(KernelError::Storage(format!(
                    "data dir {} has format version {}, this build reads version {DATA_VERSION}",
                    config.data_dir.display(),
                    identity.data_version
                )));
            }
            if identity.name != config.name {
                return Err(KernelError::Storage(format!(
                    "data dir {} belongs to member {:?}, refusing to start it as {:?}",
                    config.data_dir.display(),
                    identity.name,
                    config.name
                )));
            }
            return Ok(identity);
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let member_id = fnv1a(&[
            config.name.as_bytes(),
            config.peer_url.as_bytes(),
            &created.to_be_bytes(),
        ]);
        let identity = Identity {
            data_version: DATA_VERSION,
            name: config.name.clone(),
            member_id,
            cluster_id: fnv1a(&[&member_id.to_be_bytes(), b"concord-cluster"]),
        };
        let raw =
            postcard::to_allocvec(&identity).map_err(|e| KernelError::Storage(e.to_string()))?;
        write_local_meta(db, META_IDENTITY, &raw)?;
        Ok(identity)
    }
}

struct Inner {
    raft: Raft,
    state_db: Arc<DB>,
    log_db: Arc<DB>,
    identity: Identity,
    config: KernelConfig,
}

/// A cheap, cloneable handle to the running kernel.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.inner.identity.name)
            .field("member_id", &self.inner.identity.member_id)
            .finish()
    }
}

fn map_write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> KernelError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => KernelError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            KernelError::Storage(e.to_string())
        }
        RaftError::Fatal(_) => KernelError::Shutdown,
    }
}

fn map_read_error(e: RaftError<u64, CheckIsLeaderError<u64, BasicNode>>) -> KernelError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => KernelError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => KernelError::NoLeader,
        RaftError::Fatal(_) => KernelError::Shutdown,
    }
}

impl Kernel {
    /// Opens the data dir and starts the Raft node; returns once this member leads its
    /// one-member group (or `timeout` passes).
    pub async fn open(config: KernelConfig, timeout: Duration) -> KernelResult<Kernel> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            KernelError::Storage(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let log_db = open_log_db(&config.data_dir.join("raft-log"))?;
        let state_db = open_state_db(&config.data_dir.join("state"))?;
        let identity = Identity::load_or_create(&log_db, &config)?;
        let raft_config = Config {
            cluster_name: "concord".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: config.election_timeout.as_millis() as u64 * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| KernelError::Storage(format!("raft config: {e}")))?;
        let raft = Raft::new(
            identity.member_id,
            Arc::new(raft_config),
            SingleMemberNetwork,
            LogStore::new(log_db.clone())?,
            StateMachine::new(state_db.clone()),
        )
        .await
        .map_err(|e| KernelError::Storage(format!("cannot start raft: {e}")))?;
        if !raft
            .is_initialized()
            .await
            .map_err(|_| KernelError::Shutdown)?
        {
            let mut members = BTreeMap::new();
            members.insert(identity.member_id, BasicNode::new(config.peer_url.clone()));
            raft.initialize(members)
                .await
                .map_err(|e| KernelError::Storage(format!("cannot bootstrap: {e}")))?;
            tracing::info!(member_id = %format!("{:x}", identity.member_id), "bootstrapped a one-member cluster");
        }
        raft.wait(Some(timeout))
            .metrics(
                |m| m.current_leader == Some(identity.member_id),
                "become leader",
            )
            .await
            .map_err(|_| KernelError::NoLeader)?;
        Ok(Kernel {
            inner: Arc::new(Inner {
                raft,
                state_db,
                log_db,
                identity,
                config,
            }),
        })
    }

    /// Stops the Raft node and waits (boundedly) until its storage tasks have let go of
    /// the databases, so that dropping the last handle closes them and the data dir can
    /// be opened again.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_RELEASE_TIMEOUT;
        while Arc::strong_count(&self.inner.log_db) > 1
            || Arc::strong_count(&self.inner.state_db) > 1
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("storage still in use {SHUTDOWN_RELEASE_TIMEOUT:?} after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn member_id(&self) -> u64 {
        self.inner.identity.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.identity.cluster_id
    }

    pub fn name(&self) -> &str {
        &self.inner.identity.name
    }

    /// The most recent Raft term this member has seen.
    pub fn raft_term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// A header stamped with this member's identity at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.member_id(),
            revision,
            raft_term: self.raft_term(),
        }
    }

    fn stamp(&self, header: &mut ResponseHeader) {
        *header = self.header(header.revision);
    }

    async fn read_barrier(&self, serializable: bool) -> KernelResult<()> {
        if !serializable {
            self.inner
                .raft
                .ensure_linearizable()
                .await
                .map_err(map_read_error)?;
        }
        Ok(())
    }

    pub async fn range(&self, req: RangeRequest) -> KernelResult<RangeResponse> {
        validate::range(&req)?;
        self.read_barrier(req.serializable).await?;
        let mut resp = mvcc::range(&ReadView::snapshot(&self.inner.state_db), &req)?;
        self.stamp(&mut resp.header);
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest) -> KernelResult<PutResponse> {
        validate::put(&req)?;
        let txn = self
            .write(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(req)],
                failure: vec![],
            })
            .await?;
        match txn.responses.into_iter().next() {
            Some(ResponseOp::Put(mut put)) => {
                put.header = txn.header;
                Ok(put)
            }
            _ => Err(KernelError::Storage("put produced no put response".into())),
        }
    }

    pub async fn delete_range(&self, req: DeleteRangeRequest) -> KernelResult<DeleteRangeResponse> {
        validate::delete_range(&req)?;
        let txn = self
            .write(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::DeleteRange(req)],
                failure: vec![],
            })
            .await?;
        match txn.responses.into_iter().next() {
            Some(ResponseOp::DeleteRange(mut del)) => {
                del.header = txn.header;
                Ok(del)
            }
            _ => Err(KernelError::Storage(
                "delete produced no delete response".into(),
            )),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> KernelResult<TxnResponse> {
        validate::txn(&req, self.inner.config.max_txn_ops)?;
        if has_writes(&req) {
            return self.write(req).await;
        }
        // A read-only txn needs no log entry: answer from a linearizable read.
        self.read_barrier(false).await?;
        let mut resp = mvcc::execute_txn(ReadView::snapshot(&self.inner.state_db), &req)?.response;
        self.stamp(&mut resp.header);
        Ok(resp)
    }

    pub async fn compact(&self, req: CompactRequest) -> KernelResult<ResponseHeader> {
        match self.propose(Command::Compact(req.revision)).await? {
            CommandReply::Compacted { .. } => {
                let revision = ReadView::snapshot(&self.inner.state_db).revision()?;
                Ok(self.header(revision))
            }
            _ => Err(KernelError::Storage("compaction produced no reply".into())),
        }
    }

    async fn write(&self, req: TxnRequest) -> KernelResult<TxnResponse> {
        match self.propose(Command::Txn(req)).await? {
            CommandReply::Txn(mut resp) => {
                self.stamp(&mut resp.header);
                Ok(resp)
            }
            _ => Err(KernelError::Storage("txn produced no txn reply".into())),
        }
    }

    async fn propose(&self, command: Command) -> KernelResult<CommandReply> {
        let size = postcard::experimental::serialized_size(&command)
            .map_err(|e| KernelError::Storage(e.to_string()))?;
        if size > self.inner.config.max_request_bytes {
            return Err(KernelError::RequestTooLarge);
        }
        let resp = self
            .inner
            .raft
            .client_write(command)
            .await
            .map_err(map_write_error)?;
        resp.data
    }

    /// The members of the group (one, until clustering lands).
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                name: if *id == self.member_id() {
                    self.name().to_string()
                } else {
                    String::new()
                },
                peer_urls: vec![node.addr.clone()],
                client_urls: if *id == self.member_id() {
                    self.inner.config.client_urls.clone()
                } else {
                    Vec::new()
                },
                is_learner: !metrics
                    .membership_config
                    .membership()
                    .get_joint_config()
                    .iter()
                    .any(|c| c.contains(id)),
            })
            .collect()
    }

    /// Storage size on disk and in use, summed over both RocksDB instances.
    fn storage_sizes(&self) -> (i64, i64) {
        let mut total = 0u64;
        let mut live = 0u64;
        for db in [&self.inner.state_db, &self.inner.log_db] {
            total += db
                .property_int_value("rocksdb.total-sst-files-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            total += db
                .property_int_value("rocksdb.size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0);
            live += db
                .property_int_value("rocksdb.estimate-live-data-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            live += db
                .property_int_value("rocksdb.cur-size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0);
        }
        (total as i64, live.min(total) as i64)
    }

    pub async fn status(&self) -> KernelResult<NodeStatus> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let revision = ReadView::snapshot(&self.inner.state_db).revision()?;
        let (db_size, db_size_in_use) = self.storage_sizes();
        Ok(NodeStatus {
            header: self.header(revision),
            version: ETCD_VERSION.to_string(),
            db_size,
            db_size_in_use,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            is_learner: false,
            errors: Vec::new(),
        })
    }
}

fn has_writes(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).any(|op| match op {
        RequestOp::Range(_) => false,
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
        RequestOp::Txn(t) => has_writes(t),
    })
}
