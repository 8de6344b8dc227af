//! The kernel's consensus module: the openraft type configuration, the commands that go
//! through the Raft log, and the peer network. Nothing here leaks into the public API.

use std::io::Cursor;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::error::KernelError;
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
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;

/// Peer network of a one-member group: there is no peer to reach, so every RPC reports
/// the target unreachable. Multi-member clusters replace this with the peer transport.
#[derive(Debug, Clone, Default)]
pub struct SingleMemberNetwork;

#[derive(Debug)]
pub struct NoPeer {
    target: u64,
}

impl NoPeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        let why = std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!(
                "member {} is not reachable: this node runs a one-member group",
                self.target
            ),
        );
        RPCError::Unreachable(Unreachable::new(&why))
    }
}

impl RaftNetworkFactory<TypeConfig> for SingleMemberNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
