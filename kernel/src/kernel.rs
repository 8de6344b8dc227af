//! The kernel handle: the one public API that every adapter (built-in or plugin) uses.
//!
//! It opens the two RocksDB instances, starts the Raft node (bootstrapping a one-member
//! group on an empty data dir), and offers reads (linearizable through read-index, or
//! serializable from local state) and writes (proposed through Raft).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::alarm::Alarms;
use crate::backup::{self, SnapshotInfo};
use crate::cluster::PeerState;
use crate::consensus::{Command, CommandOutcome, CommandReply, MemberNode, PeerNetwork, Raft};
use crate::error::{KernelError, KernelResult};
use crate::lease::{Lessor, MAX_LEASE_TTL};
use crate::log_store::{LogStore, open_log_db, read_local_meta, write_local_meta};
use crate::mvcc::{self, ReadView};
use crate::node_cache::NodeCache;
use crate::read_index::{ReadIndexWaiter, run_read_index};
use crate::state_machine::{StateMachine, open_state_db};
use crate::types::{
    Acl, Alarm, AlarmKind, CompactRequest, DeleteRangeRequest, DeleteRangeResponse, HashKvResponse,
    LeaseGrantResponse, LeaseId, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseTimeToLiveResponse, Member, NodeStatus, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ReapableNode, RequestOp, ResponseHeader, ResponseOp, Revision, TreeNode, TreeOp,
    TreeRead, TreeTxnResponse, TxnRequest, TxnResponse, V2Subtree, WatchRequest, ZnodeStat,
};
use crate::validate;
use crate::watch::{WatchHub, Watcher};

/// The etcd server version Concord reports (see ARCHITECTURE.md: clients switch features
/// on it).
pub const ETCD_VERSION: &str = "3.5.17";
/// The etcd cluster version reported beside it.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// How long shutdown waits for Raft's tasks to release storage.
const SHUTDOWN_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// On-disk format version, checked at open (2: members carry name and URLs).
const DATA_VERSION: u32 = 2;
const META_IDENTITY: &[u8] = b"identity";

/// Everything the kernel needs to start. Built and validated by the config crate.
#[derive(Debug, Clone)]
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
    /// How often the leader replicates the leases' remaining TTLs, so a restart resumes
    /// them.
    pub lease_checkpoint_interval: Duration,
    /// Storage size past which the NOSPACE alarm is raised (etcd's
    /// `quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Memory for the tree nodes cached in front of the state (0: no cache).
    pub node_cache_bytes: usize,
    /// The members an empty data dir bootstraps with, `(name, peer URL)`; empty or
    /// this member alone: a one-member group.
    pub initial_members: Vec<(String, String)>,
    /// An empty data dir waits to be replicated to by a running cluster's leader (this
    /// member was added with MemberAdd) instead of bootstrapping.
    pub join_existing: bool,
    /// Member and cluster ids derive from it.
    pub cluster_token: String,
    /// Where the peer port binds (`None`: no peer port, for a node alone).
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Mutual TLS on the peer port, for serving and dialing (`None`: plaintext).
    pub peer_tls: Option<crate::PeerTls>,
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
            lease_checkpoint_interval: Duration::from_secs(5),
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            node_cache_bytes: 256 * 1024 * 1024,
            initial_members: Vec::new(),
            join_existing: false,
            cluster_token: "concord-cluster".into(),
            peer_listen: None,
            peer_tls: None,
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
        // Derived, as etcd derives them, from the token and the peer URL: every member
        // computes the same ids for the initial cluster, and MemberAdd the joiner's.
        let identity = Identity {
            data_version: DATA_VERSION,
            name: config.name.clone(),
            member_id: member_id_for(&config.cluster_token, &config.peer_url),
            cluster_id: fnv1a(&[config.cluster_token.as_bytes(), b"concord-cluster-id"]),
        };
        let raw =
            postcard::to_allocvec(&identity).map_err(|e| KernelError::Storage(e.to_string()))?;
        write_local_meta(db, META_IDENTITY, &raw)?;
        Ok(identity)
    }
}

/// The id of the member whose first peer URL is `peer_url`, in the cluster of `token`.
pub(crate) fn member_id_for(token: &str, peer_url: &str) -> u64 {
    fnv1a(&[token.as_bytes(), peer_url.as_bytes()])
}

pub(crate) struct Inner {
    pub(crate) raft: Raft,
    state_db: Arc<DB>,
    log_db: Arc<DB>,
    identity: Identity,
    pub(crate) config: KernelConfig,
    hub: WatchHub,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    /// Tree nodes read or written lately, for [`Kernel::tree_read`] without children.
    node_cache: Arc<NodeCache>,
    /// The current Raft term, kept by [`follow_term`] (every response header carries
    /// it; reading openraft's metrics for each one costs a lock).
    term: Arc<AtomicU64>,
    /// Commands waiting for [`run_proposer`].
    proposals: mpsc::UnboundedSender<Proposal>,
    /// Low bits of generated lease ids.
    lease_counter: AtomicU64,
    /// Connections to the other members.
    pub(crate) network: PeerNetwork,
    /// The peer port's accept loop, stopped at shutdown.
    peer_server: Option<tokio::task::JoinHandle<()>>,
    /// Reads waiting for a shared read-index round ([`crate::read_index`]).
    pub(crate) read_index_waiters: mpsc::UnboundedSender<ReadIndexWaiter>,
    /// Where the Raft core, the state machine worker and the proposer run when this
    /// member started alone (else on the caller's runtime); stopped with the last handle.
    _consensus: Option<ConsensusThread>,
}

/// A thread with a single-threaded tokio runtime of its own, for the Raft core, the
/// state machine worker and the proposer of a member that starts alone in its group.
/// Their work is the serial path of every write round (proposal, log append and fsync,
/// apply, outcome); on the shared runtime each hop between them waited behind the client
/// connections' tasks (see ARCHITECTURE.md, Batched proposals). With peers, replication
/// and read-index rounds need more than one thread, so the shared runtime is used.
///
/// Dropping it stops the runtime (its tasks are dropped, so they let go of the
/// databases) and waits for the thread: the process must not exit while that thread
/// still uses RocksDB (it crashed in RocksDB's teardown when an adapter failed to start).
struct ConsensusThread {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread's runtime.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConsensusThread {
    fn start() -> KernelResult<ConsensusThread> {
        let failed = |e: std::io::Error| {
            KernelError::Storage(format!("cannot start the consensus thread: {e}"))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Blocking tasks (a snapshot being built) get this long to finish.
                runtime.shutdown_timeout(SHUTDOWN_RELEASE_TIMEOUT);
            })
            .map_err(failed)?;
        Ok(ConsensusThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ConsensusThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        // The last kernel handle could go on the thread itself; it cannot wait for itself.
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
            && thread.join().is_err()
        {
            tracing::error!("the consensus thread panicked");
        }
    }
}

impl Inner {
    /// Whether the group is this member alone (then there is nobody to forward to).
    pub(crate) fn single_member(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let mut voters = metrics.membership_config.membership().voter_ids();
        voters.next() == Some(self.identity.member_id) && voters.next().is_none()
    }
}

/// A write's outcome and the index of the log entry that carried it (0: none).
pub(crate) type Applied = (CommandOutcome, u64);

/// Commands proposed together in one log entry, at most.
const MAX_BATCH_COMMANDS: usize = 512;
/// Encoded bytes of the commands in one log entry, at most (a single command may be up
/// to `max_request_bytes` on its own).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// A command waiting to be proposed, and where its outcome goes.
struct Proposal {
    command: Command,
    size: usize,
    reply: oneshot::Sender<Applied>,
}

/// Proposes queued commands until every kernel handle is gone: one command alone as
/// itself, several as one [`Command::Batch`] entry, one entry at a time (in this task,
/// which saves a task hand-off per round), so that under load many writes share one
/// Raft round and one fsync.
async fn run_proposer(raft: Raft, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = queue.try_recv() else {
                break;
            };
            if bytes + next.size > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.size;
            batch.push(next);
        }
        propose_entry(&raft, batch).await;
    }
}

async fn propose_entry(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(single) = batch.pop() {
            let applied = match raft.client_write(single.command).await {
                Ok(resp) => (resp.data, resp.log_id.index),
                Err(e) => (Err(map_write_error(e)), 0),
            };
            let _ = single.reply.send(applied);
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<Applied>>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = replies.len();
    match raft.client_write(Command::Batch(commands)).await {
        Ok(resp) => match resp.data {
            Ok(CommandReply::Batch(outcomes)) if outcomes.len() == count => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send((outcome, resp.log_id.index));
                }
            }
            other => {
                let error = match other {
                    Err(e) => e,
                    Ok(_) => KernelError::Storage("batch produced no batch reply".into()),
                };
                for reply in replies {
                    let _ = reply.send((Err(error.clone()), resp.log_id.index));
                }
            }
        },
        Err(e) => {
            let error = map_write_error(e);
            for reply in replies {
                let _ = reply.send((Err(error.clone()), 0));
            }
        }
    }
}

/// A command on its way through Raft.
type PendingCommand = std::pin::Pin<Box<dyn Future<Output = CommandOutcome> + Send>>;

/// The command's encoded size, if it is within `limit` (etcd's "request is too large").
fn checked_size(command: &Command, limit: usize) -> KernelResult<usize> {
    let size = postcard::experimental::serialized_size(command)
        .map_err(|e| KernelError::Storage(e.to_string()))?;
    if size > limit {
        return Err(KernelError::RequestTooLarge);
    }
    Ok(size)
}

/// The membership an empty data dir bootstraps: the initial members (this one alone if
/// none are given), with the names and peer URLs configured. Every initial member
/// writes this same entry, so it holds nothing one member knows and the others do not:
/// client URLs are published once the members run.
fn initial_membership(config: &KernelConfig, own_id: u64) -> BTreeMap<u64, MemberNode> {
    let mut members: BTreeMap<u64, MemberNode> = config
        .initial_members
        .iter()
        .map(|(name, peer_url)| {
            let node = MemberNode {
                name: name.clone(),
                peer_urls: vec![peer_url.clone()],
                client_urls: Vec::new(),
            };
            (member_id_for(&config.cluster_token, peer_url), node)
        })
        .collect();
    members.entry(own_id).or_insert_with(|| MemberNode {
        name: config.name.clone(),
        peer_urls: vec![config.peer_url.clone()],
        client_urls: Vec::new(),
    });
    members
}

/// Until the kernel is gone, keeps `term` equal to openraft's current term and has the
/// log store sync on its flusher thread exactly while this member leads others (its
/// fsync then overlaps their replication; anywhere else syncing inline saves two thread
/// hand-offs per entry).
///
/// It follows openraft's server metrics (vote, role, leader, membership), which change
/// only with those; the full metrics change with every log index applied, and waking
/// for each cost a task wake-up per Raft loop turn.
async fn follow_metrics(
    mut metrics: tokio::sync::watch::Receiver<
        openraft::metrics::RaftServerMetrics<u64, MemberNode>,
    >,
    term: Weak<AtomicU64>,
    sync_in_append: Arc<AtomicBool>,
) {
    loop {
        let Some(term) = term.upgrade() else {
            return;
        };
        {
            let metrics = metrics.borrow_and_update();
            term.store(metrics.vote.leader_id().get_term(), Ordering::Relaxed);
            let leads_others = metrics.state == openraft::ServerState::Leader
                && metrics.membership_config.nodes().count() > 1;
            sync_in_append.store(!leads_others, Ordering::Release);
        }
        drop(term);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How often the leader looks for leases that ran out.
const LEASE_TICK: Duration = Duration::from_millis(100);

/// A cheap, cloneable handle to the running kernel.
#[derive(Clone)]
pub struct Kernel {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.inner.identity.name)
            .field("member_id", &self.inner.identity.member_id)
            .finish()
    }
}

fn map_write_error(e: RaftError<u64, ClientWriteError<u64, MemberNode>>) -> KernelError {
    match e {
        // Leadership moved between queueing and proposing: the client may retry.
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => KernelError::LeaderChanged,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            KernelError::Storage(e.to_string())
        }
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
        let log_db = open_log_db(&config.data_dir.join(crate::log_store::LOG_DB_DIR))?;
        let state_db = open_state_db(&config.data_dir.join(crate::state_machine::STATE_DB_DIR))?;
        crate::state_machine::check_not_half_installed(&state_db)?;
        crate::tree::index_expiring_nodes(&state_db)?;
        let hub = WatchHub::new();
        hub.set_applied_revision(ReadView::live(&state_db).revision()?);
        let lessor = Arc::new(Lessor::default());
        let alarms = Arc::new(Alarms::default());
        let node_cache = Arc::new(NodeCache::new(config.node_cache_bytes));
        let identity = Identity::load_or_create(&log_db, &config)?;
        let raft_config = Config {
            cluster_name: "concord".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: config.election_timeout.as_millis() as u64 * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            // Entries kept behind a snapshot for members that lag a little; one that
            // lags more gets the snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_every_entries.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| KernelError::Storage(format!("raft config: {e}")))?;
        // Bound before Raft starts, so a port in use stops start-up with its address.
        let peer_listener = match config.peer_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                KernelError::Storage(format!("cannot listen on peer address {addr}: {e}"))
            })?),
            None => None,
        };
        let network = PeerNetwork::new(config.peer_tls.as_ref());
        let log_store = LogStore::new(
            log_db.clone(),
            &config.data_dir.join(crate::log_store::WAL_DIR),
        )?;
        let sync_in_append = log_store.sync_in_append();
        let initial = initial_membership(&config, identity.member_id);
        let alone = initial.len() == 1 && !config.join_existing;
        // A restarted member goes by the membership it applied last, not the config's.
        let started_alone = match crate::state_machine::applied_member_count(&state_db)? {
            0 => alone,
            members => members == 1,
        };
        let consensus = if started_alone {
            Some(ConsensusThread::start()?)
        } else {
            None
        };
        let start_raft = Raft::new(
            identity.member_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            StateMachine::new(
                state_db.clone(),
                hub.clone(),
                lessor.clone(),
                alarms.clone(),
                node_cache.clone(),
            ),
        );
        let started =
            match &consensus {
                Some(thread) => thread.handle.spawn(start_raft).await.map_err(|e| {
                    KernelError::Storage(format!("the consensus thread stopped: {e}"))
                })?,
                None => start_raft.await,
            };
        let raft = started.map_err(|e| KernelError::Storage(format!("cannot start raft: {e}")))?;
        let peer_state = Arc::new(PeerState::default());
        let _ = peer_state.raft.set(raft.clone());
        let peer_acceptor = config
            .peer_tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server.clone()));
        let peer_server = peer_listener
            .map(|l| tokio::spawn(crate::peer::serve(l, peer_state.clone(), peer_acceptor)));
        if !raft
            .is_initialized()
            .await
            .map_err(|_| KernelError::Shutdown)?
        {
            if config.join_existing {
                tracing::info!(
                    member_id = %format!("{:x}", identity.member_id),
                    "empty data dir: waiting for the cluster's leader to replicate to this member"
                );
            } else {
                let count = initial.len();
                match raft.initialize(initial).await {
                    Ok(()) => {
                        tracing::info!(member_id = %format!("{:x}", identity.member_id), members = count, "bootstrapped a new cluster");
                    }
                    // Another initial member bootstrapped first and has already asked
                    // this one for its vote: the leader brings the membership here.
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                        tracing::info!("the cluster was bootstrapped by another initial member");
                    }
                    Err(e) => return Err(KernelError::Storage(format!("cannot bootstrap: {e}"))),
                }
            }
        }
        if alone {
            raft.wait(Some(timeout))
                .metrics(
                    |m| m.current_leader == Some(identity.member_id),
                    "become leader",
                )
                .await
                .map_err(|_| KernelError::NoLeader)?;
        } else if raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .is_err()
        {
            // Serve anyway: serializable reads work, and writes get "no leader" until
            // a quorum is back.
            tracing::warn!("no leader after {timeout:?}; serving while the cluster forms");
        }
        // The state machine's own clock restore (after applying the log) does not
        // extend; leadership does, as etcd's promotion does.
        StateMachine::restore_lease_clocks(&state_db, &lessor, config.election_timeout)?;
        StateMachine::restore_alarms(&state_db, &alarms)?;
        let term = Arc::new(AtomicU64::new(raft.metrics().borrow().current_term));
        tokio::spawn(follow_metrics(
            raft.server_metrics(),
            Arc::downgrade(&term),
            sync_in_append,
        ));
        let (proposals, queue) = mpsc::unbounded_channel();
        let proposer = run_proposer(raft.clone(), queue);
        match &consensus {
            Some(thread) => drop(thread.handle.spawn(proposer)),
            None => drop(tokio::spawn(proposer)),
        }
        let (read_index_waiters, read_index_queue) = mpsc::unbounded_channel();
        let kernel = Kernel {
            inner: Arc::new(Inner {
                raft,
                state_db,
                log_db,
                identity,
                config,
                hub,
                lessor,
                alarms,
                node_cache,
                lease_counter: AtomicU64::new(0),
                term,
                proposals,
                network,
                peer_server,
                read_index_waiters,
                _consensus: consensus,
            }),
        };
        let _ = peer_state.kernel.set(Arc::downgrade(&kernel.inner));
        tokio::spawn(run_lessor(Arc::downgrade(&kernel.inner)));
        tokio::spawn(run_read_index(
            Arc::downgrade(&kernel.inner),
            read_index_queue,
        ));
        tokio::spawn(Kernel::publish_attributes(Arc::downgrade(&kernel.inner)));
        Ok(kernel)
    }

    /// Stops the Raft node and waits (boundedly) until its storage tasks have let go of
    /// the databases, so that dropping the last handle closes them and the data dir can
    /// be opened again.
    pub async fn shutdown(&self) {
        if let Some(server) = &self.inner.peer_server {
            server.abort();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        // Applied writes skip the WAL (the Raft log replays them); flushing now only
        // spares the next start that replay.
        if let Err(e) = crate::state_machine::flush_state(&self.inner.state_db) {
            tracing::warn!("cannot flush the state store at shutdown: {e}");
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
        self.inner.term.load(Ordering::Relaxed)
    }

    /// The index of the last Raft log entry this member applied.
    pub fn raft_applied_index(&self) -> u64 {
        self.inner
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |id| id.index)
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

    /// Waits until a read here is linearizable (unless `serializable`): a read index
    /// from the leader (shared with concurrent reads), then this member's state machine
    /// applied up to it.
    async fn read_barrier(&self, serializable: bool) -> KernelResult<()> {
        if serializable {
            return Ok(());
        }
        let index = self.read_index().await?;
        self.wait_applied(index, crate::cluster::FORWARD_TIMEOUT)
            .await
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
        if has_puts(&req) {
            self.refuse_if_no_space()?;
        }
        match self.propose(Command::Txn(req)).await? {
            CommandReply::Txn(mut resp) => {
                self.stamp(&mut resp.header);
                Ok(resp)
            }
            _ => Err(KernelError::Storage("txn produced no txn reply".into())),
        }
    }

    async fn propose(&self, command: Command) -> KernelResult<CommandReply> {
        self.submit(command)?.await
    }

    /// Queues a command for proposal: here when this member leads, on the leader's
    /// connection otherwise. Commands are proposed (and applied) in the order they were
    /// submitted. The future yields the outcome.
    fn submit(&self, command: Command) -> KernelResult<PendingCommand> {
        if self.leader_elsewhere().is_some() {
            checked_size(&command, self.inner.config.max_request_bytes)?;
            return Ok(Box::pin(self.forward(command)));
        }
        let applied = self.submit_local(command)?;
        Ok(Box::pin(async move {
            applied.await.map_err(|_| KernelError::Shutdown)?.0
        }))
    }

    /// Queues a command for this member's proposer (it fails with "leader changed" if
    /// this member does not lead by then).
    pub(crate) fn submit_local(
        &self,
        command: Command,
    ) -> KernelResult<oneshot::Receiver<Applied>> {
        let size = checked_size(&command, self.inner.config.max_request_bytes)?;
        let (reply, outcome) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal {
                command,
                size,
                reply,
            })
            .map_err(|_| KernelError::Shutdown)?;
        Ok(outcome)
    }

    /// The revision of the latest applied write on this member.
    pub fn revision(&self) -> KernelResult<Revision> {
        Ok(self.inner.hub.applied_revision())
    }

    /// The revision history was compacted at on this member (0: never); reads and
    /// watches below it are refused.
    pub fn compact_revision(&self) -> KernelResult<Revision> {
        ReadView::live(&self.inner.state_db).compact_revision()
    }

    /// Starts a watcher (see [`Watcher`]): events from `start_revision` (0: the next
    /// revision) on, in revision order.
    pub fn watch(&self, req: WatchRequest) -> KernelResult<Watcher> {
        Watcher::start(self.inner.state_db.clone(), self.inner.hub.clone(), req)
    }

    /// The smallest TTL a lease gets: one and a half election timeouts, in whole seconds
    /// (etcd's `minTTL`), so a lease cannot expire during a leader change.
    pub fn min_lease_ttl(&self) -> i64 {
        let millis = self.inner.config.election_timeout.as_millis() * 3 / 2;
        i64::try_from(millis.div_ceil(1000)).unwrap_or(1).max(1)
    }

    /// A lease id nobody has yet, probably: this member's id, the time, a counter.
    fn generate_lease_id(&self) -> LeaseId {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let count = self.inner.lease_counter.fetch_add(1, Ordering::Relaxed);
        let raw =
            ((self.member_id() & 0x7fff) << 48) | ((millis & 0xff_ffff_ffff) << 8) | (count & 0xff);
        (raw as LeaseId).max(1)
    }

    /// Grants a lease; `id` 0 lets the kernel choose one. The TTL is raised to
    /// [`Self::min_lease_ttl`].
    pub async fn lease_grant(&self, id: LeaseId, ttl: i64) -> KernelResult<LeaseGrantResponse> {
        if ttl > MAX_LEASE_TTL {
            return Err(KernelError::LeaseTtlTooLarge);
        }
        self.refuse_if_no_space()?;
        let ttl = ttl.max(self.min_lease_ttl());
        let id = if id == 0 {
            self.generate_lease_id()
        } else {
            id
        };
        match self.propose(Command::LeaseGrant { id, ttl }).await? {
            CommandReply::LeaseGranted { revision } => Ok(LeaseGrantResponse {
                header: self.header(revision),
                id,
                ttl,
            }),
            _ => Err(KernelError::Storage("lease grant produced no reply".into())),
        }
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub async fn lease_revoke(&self, id: LeaseId) -> KernelResult<ResponseHeader> {
        match self.propose(Command::LeaseRevoke(id)).await? {
            CommandReply::LeaseRevoked { revision } => Ok(self.header(revision)),
            _ => Err(KernelError::Storage(
                "lease revoke produced no reply".into(),
            )),
        }
    }

    /// Restarts a lease's clock at the leader. An unknown (or just expired) lease
    /// answers TTL 0, as etcd does.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> KernelResult<LeaseKeepAliveResponse> {
        if self.leader_elsewhere().is_some() {
            return self.forward_keep_alive(id).await;
        }
        self.read_barrier(false).await?;
        let ttl = self.inner.lessor.renew(id).unwrap_or(0);
        Ok(LeaseKeepAliveResponse {
            header: self.header(self.revision()?),
            id,
            ttl,
        })
    }

    /// A lease's remaining and granted TTL (and keys, if asked); TTL -1 when unknown.
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
    ) -> KernelResult<LeaseTimeToLiveResponse> {
        // The leader's clocks are the ones that count.
        if self.leader_elsewhere().is_some() {
            return self.forward_time_to_live(id, with_keys).await;
        }
        self.read_barrier(false).await?;
        let view = ReadView::snapshot(&self.inner.state_db);
        let header = self.header(view.revision()?);
        let Some(record) = view.lease(id)? else {
            return Ok(LeaseTimeToLiveResponse {
                header,
                id,
                ttl: -1,
                ..Default::default()
            });
        };
        Ok(LeaseTimeToLiveResponse {
            header,
            id,
            ttl: self.inner.lessor.remaining(id).unwrap_or(0),
            granted_ttl: record.ttl,
            keys: if with_keys {
                view.lease_keys(id)?
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease, in id order.
    pub async fn lease_leases(&self) -> KernelResult<LeaseLeasesResponse> {
        self.read_barrier(false).await?;
        let view = ReadView::snapshot(&self.inner.state_db);
        Ok(LeaseLeasesResponse {
            header: self.header(view.revision()?),
            leases: view.leases()?.into_iter().map(|(id, _)| id).collect(),
        })
    }

    /// Refuses writes that add data while the NOSPACE alarm is raised, as etcd does.
    fn refuse_if_no_space(&self) -> KernelResult<()> {
        if self.inner.alarms.no_space() {
            return Err(KernelError::NoSpace);
        }
        Ok(())
    }

    /// The alarms raised in the cluster.
    pub fn alarms(&self) -> Vec<Alarm> {
        self.inner.alarms.list()
    }

    /// Raises (`active`) or disarms an alarm. A disarmed NOSPACE alarm comes back at
    /// once if storage is still over its quota.
    pub async fn set_alarm(&self, alarm: Alarm, active: bool) -> KernelResult<Vec<Alarm>> {
        self.propose(Command::SetAlarm { alarm, active }).await?;
        Ok(self.alarms())
    }

    /// Hash of the whole stored state (etcd's Hash).
    pub async fn hash(&self) -> KernelResult<(ResponseHeader, u32)> {
        let db = self.inner.state_db.clone();
        let (revision, hash) = tokio::task::spawn_blocking(move || {
            let view = ReadView::snapshot(&db);
            Ok::<_, KernelError>((view.revision()?, backup::hash_all(&view, &db)?))
        })
        .await
        .map_err(|e| KernelError::Storage(e.to_string()))??;
        Ok((self.header(revision), hash))
    }

    /// Hash of the keyspace's history up to `revision` (0: the current one), etcd's
    /// HashKV: equal on members with equal data.
    pub async fn hash_kv(&self, revision: Revision) -> KernelResult<HashKvResponse> {
        let db = self.inner.state_db.clone();
        let (current, compacted, at, hash) = tokio::task::spawn_blocking(move || {
            let view = ReadView::snapshot(&db);
            let current = view.revision()?;
            let compacted = view.compact_revision()?;
            let at = if revision > 0 { revision } else { current };
            if at > current {
                return Err(KernelError::FutureRevision);
            }
            if at < compacted {
                return Err(KernelError::Compacted {
                    compact_revision: compacted,
                });
            }
            Ok((current, compacted, at, backup::hash_kv(&view, &db, at)?))
        })
        .await
        .map_err(|e| KernelError::Storage(e.to_string()))??;
        Ok(HashKvResponse {
            header: self.header(current),
            hash,
            compact_revision: compacted,
            hash_revision: at,
        })
    }

    /// Rewrites storage compactly, releasing the space of deleted and compacted data.
    pub async fn defragment(&self) -> KernelResult<ResponseHeader> {
        let state_db = self.inner.state_db.clone();
        let log_db = self.inner.log_db.clone();
        tokio::task::spawn_blocking(move || {
            for db in [&state_db, &log_db] {
                let names = db_column_families(db);
                let handles: Vec<_> = names.iter().filter_map(|n| db.cf_handle(n)).collect();
                db.flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
                for handle in handles {
                    db.compact_range_cf(handle, None::<&[u8]>, None::<&[u8]>);
                }
            }
            Ok::<_, KernelError>(())
        })
        .await
        .map_err(|e| KernelError::Storage(e.to_string()))??;
        tracing::info!("defragmented storage");
        Ok(self.header(self.revision()?))
    }

    /// Writes a point-in-time copy of the keyspace (and leases) to `path`; restore it
    /// with [`crate::restore_snapshot`].
    pub async fn snapshot_to_file(&self, path: PathBuf) -> KernelResult<SnapshotInfo> {
        let db = self.inner.state_db.clone();
        tokio::task::spawn_blocking(move || backup::write_snapshot(&db, &path))
            .await
            .map_err(|e| KernelError::Storage(e.to_string()))?
    }

    /// Where this member keeps temporary files (snapshots being sent).
    pub fn scratch_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("scratch")
    }

    /// Whether this member leads the group now (leader-only duties, such as reaping
    /// containers, run only where this is true).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.member_id())
    }

    /// Runs tree operations (ZooKeeper create/delete/setData/check/setACL, or a multi of
    /// them) all or nothing at one revision, with this leader's clock for ctime/mtime.
    pub async fn tree_txn(&self, ops: Vec<TreeOp>) -> KernelResult<TreeTxnResponse> {
        self.submit_tree_txn(ops)?.await
    }

    /// Like [`Self::tree_txn`], but queued for proposal before this returns: tree
    /// operations submitted one after another are applied in that order, so a session can
    /// pipeline its writes and still see them applied in the order it sent them.
    pub fn submit_tree_txn(
        &self,
        ops: Vec<TreeOp>,
    ) -> KernelResult<impl Future<Output = KernelResult<TreeTxnResponse>> + Send + 'static> {
        if ops.iter().any(|op| {
            matches!(
                op,
                TreeOp::Create { .. } | TreeOp::SetData { .. } | TreeOp::V2Write(_)
            )
        }) {
            self.refuse_if_no_space()?;
        }
        let outcome = self.submit(Command::Tree {
            ops,
            now_ms: unix_millis(),
        })?;
        let kernel = self.clone();
        Ok(async move {
            match outcome.await? {
                CommandReply::Tree { revision, outcome } => Ok(TreeTxnResponse {
                    header: kernel.header(revision),
                    outcome,
                }),
                _ => Err(KernelError::Storage(
                    "tree txn produced no tree reply".into(),
                )),
            }
        })
    }

    /// Empty containers and expired TTL nodes, by this member's clock; the caller
    /// deletes them (guarded by the version found) through [`Self::tree_txn`].
    pub fn tree_reapable(&self) -> KernelResult<Vec<ReapableNode>> {
        let db = &self.inner.state_db;
        crate::tree::reapable(db, &ReadView::snapshot(db), unix_millis())
    }

    /// A tree node (`/` always exists) and its children's names, as this member has
    /// them, with the revision of the state read (all from one snapshot).
    /// Children's names are listed only if `with_children` (the Stat's count needs no
    /// listing); without them the node may come from the node cache, and the revision
    /// is then the later of the one it was cached at and the latest applied.
    pub fn tree_read(&self, path: &str, with_children: bool) -> KernelResult<TreeRead> {
        let cache = &self.inner.node_cache;
        let key = path.as_bytes();
        if !with_children {
            // Published after the cache forgot what the writes up to it touched, so a
            // node still cached holds all of them (see `node_cache`).
            let published = self.inner.hub.applied_revision();
            if let Some((node, revision)) = cache.get(key) {
                return Ok(TreeRead {
                    revision: revision.max(published),
                    node: Some(node),
                    children: Vec::new(),
                });
            }
        }
        // Taken before the snapshot, for the fill below (see `NodeCache::fill`).
        let epoch = (!with_children).then(|| cache.epoch());
        let db = &self.inner.state_db;
        let view = ReadView::snapshot(db);
        let revision = view.revision()?;
        Ok(match crate::tree::node(db, &view, key, with_children)? {
            Some((node, children)) => {
                if let Some(epoch) = epoch {
                    cache.fill(epoch, key, &node, revision);
                }
                TreeRead {
                    revision,
                    node: Some(node),
                    children: children
                        .into_iter()
                        .map(|name| String::from_utf8_lossy(&name).into_owned())
                        .collect(),
                }
            }
            None => TreeRead {
                revision,
                node: None,
                children: Vec::new(),
            },
        })
    }

    /// A node as etcd v2 reads it, with its direct children (or, with `recursive`, all
    /// its descendants), from one snapshot; linearizable unless `serializable`.
    pub async fn v2_read(
        &self,
        path: &str,
        recursive: bool,
        serializable: bool,
    ) -> KernelResult<V2Subtree> {
        self.read_barrier(serializable).await?;
        let db = &self.inner.state_db;
        crate::tree::v2_subtree(db, &ReadView::snapshot(db), path.as_bytes(), recursive)
    }

    /// A tree node (`/` always exists) as this member has it: data, Stat, ACL.
    pub fn tree_node(&self, path: &str) -> KernelResult<Option<TreeNode>> {
        Ok(self.tree_read(path, false)?.node)
    }

    /// A tree node's own ACL, for access checks: `None` when it has none, because there
    /// is no such node or it was written through etcd (whose keys every session may
    /// use). One point read of the live state (the metadata record; a deleted node's
    /// record goes with it), without a snapshot: the check it serves races with writes
    /// anyway, and under the ZooKeeper setData load a second read (of the key, to tell
    /// the two apart) cost an eighth of the server's CPU.
    pub fn tree_acl(&self, path: &str) -> KernelResult<Option<Vec<Acl>>> {
        if let Some(acl) = self.inner.node_cache.acl(path.as_bytes()) {
            return Ok(Some(acl).filter(|acl| !acl.is_empty()));
        }
        let view = ReadView::live(&self.inner.state_db);
        Ok(crate::tree::read_meta(&view, path.as_bytes())?
            .map(|meta| meta.acl)
            .filter(|acl| !acl.is_empty()))
    }

    /// The names of a tree node's direct children, in byte order, with the node's
    /// Stat; `None` if the node does not exist.
    pub fn tree_children(&self, path: &str) -> KernelResult<Option<(Vec<String>, ZnodeStat)>> {
        let read = self.tree_read(path, true)?;
        Ok(read.node.map(|node| (read.children, node.stat)))
    }

    /// The members of the group, voters and learners, in id order.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| {
                // This member knows its own attributes before the group has them.
                let own = *id == self.member_id() && node.client_urls.is_empty();
                Member {
                    id: *id,
                    name: if own {
                        self.name().to_string()
                    } else {
                        node.name.clone()
                    },
                    peer_urls: node.peer_urls.clone(),
                    client_urls: if own {
                        self.inner.config.client_urls.clone()
                    } else {
                        node.client_urls.clone()
                    },
                    is_learner: !voters.contains(id),
                }
            })
            .collect()
    }

    /// Size of the state machine's storage (what etcd calls the backend: the Raft log
    /// is not counted, as etcd does not count its WAL), and the part of it in use.
    fn storage_sizes(&self) -> (i64, i64) {
        let db = &self.inner.state_db;
        let property = |name: &str, cf_name: &str| -> u64 {
            db.cf_handle(cf_name)
                .and_then(|handle| db.property_int_value_cf(handle, name).ok().flatten())
                .unwrap_or(0)
        };
        let mut total = 0u64;
        let mut live = 0u64;
        for cf_name in crate::mvcc::STATE_COLUMN_FAMILIES {
            total += property("rocksdb.total-sst-files-size", cf_name);
            total += property("rocksdb.size-all-mem-tables", cf_name);
            live += property("rocksdb.estimate-live-data-size", cf_name);
            live += property("rocksdb.cur-size-all-mem-tables", cf_name);
        }
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        (as_i64(total), as_i64(live.min(total)))
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
            is_learner: !metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == self.member_id()),
            errors: Vec::new(),
        })
    }
}

/// The leader's lease duties, until the kernel is dropped: revoke leases whose clock
/// ran out, checkpoint remaining TTLs, and extend every lease on becoming leader.
async fn run_lessor(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = true;
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let kernel = Kernel { inner };
        let leader = kernel.is_leader();
        if leader && !was_leader {
            kernel
                .inner
                .lessor
                .extend_all(kernel.inner.config.election_timeout);
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        for id in kernel.inner.lessor.take_expired() {
            match kernel.propose(Command::LeaseRevoke(id)).await {
                Ok(_) | Err(KernelError::LeaseNotFound) => {
                    tracing::debug!(lease = id, "lease expired and was revoked");
                }
                Err(KernelError::Shutdown) => return,
                Err(e) => tracing::warn!(lease = id, "cannot revoke expired lease: {e}"),
            }
        }
        let over_quota = u64::try_from(kernel.storage_sizes().0).unwrap_or(0)
            > kernel.inner.config.quota_backend_bytes;
        if over_quota && !kernel.inner.alarms.no_space() {
            let alarm = Alarm {
                member_id: kernel.member_id(),
                kind: AlarmKind::NoSpace,
            };
            if let Err(e) = kernel.set_alarm(alarm, true).await {
                tracing::warn!("cannot raise the NOSPACE alarm: {e}");
            }
        }
        if last_checkpoint.elapsed() >= kernel.inner.config.lease_checkpoint_interval {
            last_checkpoint = tokio::time::Instant::now();
            let remaining = kernel.inner.lessor.checkpoint();
            if !remaining.is_empty() {
                match kernel.propose(Command::LeaseCheckpoint(remaining)).await {
                    Ok(_) => {}
                    Err(KernelError::Shutdown) => return,
                    Err(e) => tracing::warn!("cannot checkpoint leases: {e}"),
                }
            }
        }
    }
}

fn db_column_families(db: &DB) -> Vec<String> {
    let mut names = vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()];
    names.extend(
        crate::mvcc::STATE_COLUMN_FAMILIES
            .iter()
            .chain(crate::log_store::LOG_COLUMN_FAMILIES.iter())
            .filter(|name| db.cf_handle(name).is_some())
            .map(|name| name.to_string()),
    );
    names
}

/// Whether any op of a txn, on either branch and in nested txns, satisfies `wanted`.
fn any_op(req: &TxnRequest, wanted: &impl Fn(&RequestOp) -> bool) -> bool {
    req.success.iter().chain(&req.failure).any(|op| match op {
        RequestOp::Txn(nested) => any_op(nested, wanted),
        op => wanted(op),
    })
}

/// Whether a txn may add data (a put anywhere in it).
fn has_puts(req: &TxnRequest) -> bool {
    any_op(req, &|op| matches!(op, RequestOp::Put(_)))
}

fn has_writes(req: &TxnRequest) -> bool {
    any_op(req, &|op| {
        matches!(op, RequestOp::Put(_) | RequestOp::DeleteRange(_))
    })
}

/// Milliseconds since the Unix epoch by this member's clock.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
