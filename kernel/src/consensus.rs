//! The kernel's consensus module: the openraft type configuration, the commands that go
//! through the Raft log, and the peer network. Nothing here leaks into the public API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;

use crate::cluster::PeerRequest;
use crate::error::KernelError;
use crate::peer::{PeerClient, PeerError, PeerTls, peer_addr};
use crate::types::{
    Alarm, LeaseId, Revision, TreeError, TreeOp, TreeOpResult, TxnRequest, TxnResponse,
};

/// A replicated write. Everything non-deterministic is decided before proposing and
/// carried inside the command, so every member applies it identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Put, DeleteRange and Txn all travel as a transaction.
    Txn(TxnRequest),
    Compact(Revision),
    /// Create lease `id` (chosen by the proposer) with `ttl` seconds.
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    /// Delete the lease and, in one revision, every key attached to it.
    LeaseRevoke(LeaseId),
    /// Remember the remaining TTLs (seconds) the leader's clocks show.
    LeaseCheckpoint(Vec<(LeaseId, i64)>),
    /// Raise (`active`) or disarm an alarm.
    SetAlarm {
        alarm: Alarm,
        active: bool,
    },
    /// Tree operations (ZooKeeper's create/delete/setData/check and multi), all or
    /// nothing at one revision; `now_ms` is the leader's clock for ctime/mtime.
    Tree {
        ops: Vec<TreeOp>,
        now_ms: i64,
    },
    /// Several clients' commands proposed together as one log entry (one fsync, one
    /// Raft round), applied one after the other with their own outcomes.
    Batch(Vec<Command>),
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    Txn(TxnResponse),
    Compacted {
        revision: Revision,
    },
    LeaseGranted {
        revision: Revision,
    },
    /// `revision` is the revision after the attached keys were deleted.
    LeaseRevoked {
        revision: Revision,
    },
    Tree {
        revision: Revision,
        outcome: Result<Vec<TreeOpResult>, (usize, TreeError)>,
    },
    /// One outcome per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandOutcome>),
    /// Blank and membership entries.
    Internal,
}

pub type CommandOutcome = Result<CommandReply, KernelError>;

openraft::declare_raft_types!(
    /// Concord's Raft types: commands in, outcomes out, u64 member ids.
    pub TypeConfig:
        D = Command,
        R = CommandOutcome,
        NodeId = u64,
        Node = MemberNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;

/// What the group knows of a member: its name and URLs (etcd's member attributes).
/// A member added with MemberAdd has no name or client URLs until it starts and
/// publishes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl MemberNode {
    /// Where this member's peer port is: its first peer URL that is `http(s)://IP:PORT`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_urls.iter().find_map(|url| peer_addr(url))
    }
}

/// Raft's RPCs, as the peer port carries them.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
}

/// Peer connections, one per member address, shared by Raft and the kernel.
#[derive(Clone, Default)]
pub struct PeerNetwork {
    clients: Arc<Mutex<HashMap<SocketAddr, PeerClient>>>,
    /// Set: every connection is mutual TLS.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for PeerNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNetwork")
            .field("clients", &self.clients)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PeerNetwork {
    /// Connections that dial with `tls` when set.
    pub fn new(tls: Option<&PeerTls>) -> PeerNetwork {
        PeerNetwork {
            clients: Arc::default(),
            tls: tls.map(|tls| TlsConnector::from(tls.client.clone())),
        }
    }

    /// The (shared) connection to `addr`.
    pub fn client(&self, addr: SocketAddr) -> PeerClient {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(addr)
            .or_insert_with(|| PeerClient::new(addr, self.tls.clone()))
            .clone()
    }
}

/// Raft's view of one target member.
#[derive(Debug)]
pub struct PeerLink {
    target: u64,
    client: Result<PeerClient, String>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerLink {
        PeerLink {
            target,
            client: node
                .peer_addr()
                .map(|addr| self.client(addr))
                .ok_or_else(|| {
                    format!(
                        "member {target:x} has no usable peer URL: {:?}",
                        node.peer_urls
                    )
                }),
        }
    }
}

impl PeerLink {
    async fn call<Reply, E>(
        &self,
        rpc: RaftRpc,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<u64, MemberNode, RaftError<u64, E>>>
    where
        Reply: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        Result<Reply, RaftError<u64, E>>: serde::de::DeserializeOwned,
    {
        let client = self.client.as_ref().map_err(|why| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.clone())))
        })?;
        let answer: Result<Result<Reply, RaftError<u64, E>>, PeerError> = client
            .send(&PeerRequest::Raft(rpc), option.hard_ttl())
            .await;
        match answer {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e @ PeerError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        self.call(RaftRpc::AppendEntries(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MemberNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::InstallSnapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        self.call(RaftRpc::Vote(rpc), &option).await
    }
}
