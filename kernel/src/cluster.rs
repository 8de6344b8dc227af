//! Clustering, the kernel's side: what members ask each other on the peer port besides
//! Raft's RPCs (forwarded writes, read-index, lease renewals, membership changes, leader
//! transfer), the handler that answers them, and the follower's side of each: any member
//! serves any client, and a follower hands the leader what only the leader can do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use crate::consensus::{Command, CommandOutcome, MemberNode, Raft, RaftRpc};
use crate::error::{KernelError, KernelResult};
use crate::kernel::{Inner, Kernel, member_id_for};
use crate::peer::{Answer, PeerError, PeerHandler, decode, encode, peer_addr};
use crate::types::{LeaseId, LeaseKeepAliveResponse, LeaseTimeToLiveResponse, Member};

/// How long a follower waits for its leader to answer a forwarded request.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// A learner is promoted only once it holds this share of the leader's log (etcd's
/// `readyPercent`).
const PROMOTE_READY_SHARE: f64 = 0.9;

/// A request from one member to another on the peer port.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Raft(RaftRpc),
    /// A write for the leader to propose; answered `(outcome, log index)`.
    Forward(Command),
    /// The leader's read index, after it confirmed its leadership with a quorum.
    ReadIndex,
    LeaseKeepAlive(LeaseId),
    LeaseTimeToLive {
        id: LeaseId,
        with_keys: bool,
    },
    Membership(MembershipChange),
    /// Start an election now (the target of a leader transfer).
    Elect,
    /// Start no election of one's own for this long (the other voters during a leader
    /// transfer; bounded, so a leader that dies meanwhile is replaced all the same).
    HoldElections {
        millis: u64,
    },
}

/// A membership change, carried out by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Promote(u64),
    Remove(u64),
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// A member tells the group its name and client URLs once it runs.
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// Hand leadership to the member.
    MoveLeader(u64),
}

/// The result of a membership change: the member concerned and every member after it.
pub type MembershipOutcome = KernelResult<(Option<Member>, Vec<Member>)>;

/// What the peer port needs to answer: set once Raft (then the kernel) exists; until
/// then requests are answered with nothing, which the asking member treats as a
/// network error and retries.
#[derive(Default)]
pub(crate) struct PeerState {
    pub(crate) raft: OnceLock<Raft>,
    pub(crate) kernel: OnceLock<Weak<Inner>>,
}

impl PeerState {
    fn kernel(&self) -> Option<Kernel> {
        self.kernel
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Kernel { inner })
    }
}

fn answer<T: Serialize + Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Answer {
    Box::pin(async move { encode(&work.await).unwrap_or_default() })
}

impl PeerHandler for PeerState {
    fn handle(&self, body: Vec<u8>) -> Answer {
        let request: PeerRequest = match decode(&body) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("undecodable peer request: {e}");
                return Box::pin(async { Vec::new() });
            }
        };
        if let PeerRequest::Raft(rpc) = request {
            let Some(raft) = self.raft.get().cloned() else {
                return Box::pin(async { Vec::new() });
            };
            return match rpc {
                RaftRpc::AppendEntries(rpc) => {
                    answer(async move { raft.append_entries(rpc).await })
                }
                RaftRpc::InstallSnapshot(rpc) => {
                    answer(async move { raft.install_snapshot(rpc).await })
                }
                RaftRpc::Vote(rpc) => answer(async move { raft.vote(rpc).await }),
            };
        }
        let Some(kernel) = self.kernel() else {
            return Box::pin(async { Vec::new() });
        };
        match request {
            PeerRequest::Raft(_) => Box::pin(async { Vec::new() }),
            PeerRequest::Forward(command) => {
                // Queued before this returns: forwarded writes are proposed in the order
                // they arrived on the connection.
                let queued = kernel.submit_local(command);
                answer(async move {
                    match queued {
                        Ok(outcome) => outcome
                            .await
                            .unwrap_or((Err(KernelError::LeaderChanged), 0)),
                        Err(e) => (Err(e), 0),
                    }
                })
            }
            PeerRequest::ReadIndex => answer(async move {
                // Shared with this leader's own reads; a member that does not lead says so
                // rather than asking another.
                match kernel.leader_elsewhere() {
                    None => kernel.read_index().await,
                    Some(_) => Err(KernelError::LeaderChanged),
                }
            }),
            PeerRequest::LeaseKeepAlive(id) => {
                answer(async move { kernel.lease_keep_alive(id).await })
            }
            PeerRequest::LeaseTimeToLive { id, with_keys } => {
                answer(async move { kernel.lease_time_to_live(id, with_keys).await })
            }
            PeerRequest::Membership(change) => {
                answer(async move { kernel.change_membership_here(change).await })
            }
            PeerRequest::HoldElections { millis } => {
                let raft = kernel.inner.raft.clone();
                raft.runtime_config().elect(false);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    raft.runtime_config().elect(true);
                });
                answer(async { true })
            }
            PeerRequest::Elect => answer(async move {
                match kernel.inner.raft.trigger().elect().await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(KernelError::Shutdown),
                }
            }),
        }
    }
}

fn peer_error(e: PeerError) -> KernelError {
    match e {
        // Nothing reached the leader: it is as if there were none.
        PeerError::Unreachable { .. } => KernelError::NoLeader,
        PeerError::Lost { .. } => KernelError::LeaderChanged,
        PeerError::Timeout { .. } => KernelError::Timeout,
        PeerError::Codec(detail) => KernelError::Storage(format!("peer message: {detail}")),
    }
}

fn change_error(e: RaftError<u64, ClientWriteError<u64, MemberNode>>) -> KernelError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => KernelError::LeaderChanged,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
            ChangeMembershipError::LearnerNotFound(_) => KernelError::MemberNotFound,
            other => KernelError::Reconfiguration(other.to_string()),
        },
        RaftError::Fatal(_) => KernelError::Shutdown,
    }
}

impl Kernel {
    /// The leader now, waiting (up to two election timeouts) while an election runs.
    pub(crate) async fn current_leader(&self) -> KernelResult<(u64, MemberNode)> {
        let wait = self.inner.config.election_timeout * 2;
        let metrics = self
            .inner
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| KernelError::NoLeader)?;
        let leader = metrics.current_leader.ok_or(KernelError::NoLeader)?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        Ok((leader, node.unwrap_or_default()))
    }

    /// Sends `request` to the leader, which must not be this member.
    pub(crate) async fn ask_leader<Reply: serde::de::DeserializeOwned>(
        &self,
        request: PeerRequest,
    ) -> KernelResult<Reply> {
        let (_, node) = self.current_leader().await?;
        let addr = node.peer_addr().ok_or(KernelError::NoLeader)?;
        self.inner
            .network
            .client(addr)
            .send(&request, FORWARD_TIMEOUT)
            .await
            .map_err(peer_error)
    }

    /// Whether this member should hand its requests to another (a leader is known, and
    /// it is not this member).
    pub(crate) fn leader_elsewhere(&self) -> Option<u64> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        match leader {
            Some(id) if id != self.member_id() => Some(id),
            None if !self.inner.single_member() => Some(0),
            _ => None,
        }
    }

    /// Forwards a write to the leader; once it is applied there, waits until this member
    /// has applied it too, so the client reads its own write here.
    pub(crate) fn forward(
        &self,
        command: Command,
    ) -> impl Future<Output = CommandOutcome> + Send + 'static {
        let kernel = self.clone();
        let metrics = self.inner.raft.metrics().borrow().clone();
        // Queue on the leader's connection now, in submission order, when it is known.
        let queued = metrics.current_leader.and_then(|leader| {
            let addr = metrics
                .membership_config
                .membership()
                .get_node(&leader)?
                .peer_addr()?;
            let request = PeerRequest::Forward(command.clone());
            Some(
                self.inner
                    .network
                    .client(addr)
                    .send::<_, (CommandOutcome, u64)>(&request, FORWARD_TIMEOUT),
            )
        });
        async move {
            let (outcome, index) = match queued {
                Some(call) => call.await.map_err(peer_error)?,
                None => kernel.ask_leader(PeerRequest::Forward(command)).await?,
            };
            if index > 0 {
                kernel.wait_applied(index, FORWARD_TIMEOUT).await?;
            }
            outcome
        }
    }

    /// Waits until this member has applied the log up to `index`.
    pub(crate) async fn wait_applied(&self, index: u64, timeout: Duration) -> KernelResult<()> {
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "forwarded write applied here")
            .await
            .map(|_| ())
            .map_err(|_| KernelError::Timeout)
    }

    /// The read index, answered by the leader: it confirms its leadership with a quorum
    /// and gives the log index a linearizable read must wait for.
    pub(crate) async fn local_read_index(&self) -> KernelResult<u64> {
        let (read, _) = self
            .inner
            .raft
            .get_read_log_id()
            .await
            .map_err(|e| match e {
                RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_)) => {
                    KernelError::LeaderChanged
                }
                RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)) => {
                    KernelError::NoLeader
                }
                RaftError::Fatal(_) => KernelError::Shutdown,
            })?;
        Ok(read.map_or(0, |id| id.index))
    }

    pub(crate) async fn forward_keep_alive(
        &self,
        id: LeaseId,
    ) -> KernelResult<LeaseKeepAliveResponse> {
        self.ask_leader::<KernelResult<_>>(PeerRequest::LeaseKeepAlive(id))
            .await?
    }

    pub(crate) async fn forward_time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
    ) -> KernelResult<LeaseTimeToLiveResponse> {
        self.ask_leader::<KernelResult<_>>(PeerRequest::LeaseTimeToLive { id, with_keys })
            .await?
    }

    /// Carries out a membership change at the leader (forwarding it there from a
    /// follower).
    pub async fn change_membership(&self, change: MembershipChange) -> MembershipOutcome {
        if self.leader_elsewhere().is_some() {
            return self
                .ask_leader::<MembershipOutcome>(PeerRequest::Membership(change))
                .await?;
        }
        self.change_membership_here(change).await
    }

    async fn change_membership_here(&self, change: MembershipChange) -> MembershipOutcome {
        let raft = &self.inner.raft;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.member_id()) {
            return Err(KernelError::LeaderChanged);
        }
        let membership = metrics.membership_config.membership();
        let nodes: BTreeMap<u64, MemberNode> = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let find = |id: u64| nodes.get(&id).cloned().ok_or(KernelError::MemberNotFound);
        let mut concerned = None;
        match change {
            MembershipChange::Add { peer_urls, learner } => {
                let first = checked_peer_urls(&peer_urls)?;
                refuse_taken_urls(&nodes, &peer_urls, None)?;
                let id = member_id_for(&self.inner.config.cluster_token, &first);
                let node = MemberNode {
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                raft.add_learner(id, node, false)
                    .await
                    .map_err(change_error)?;
                if !learner {
                    raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                        .await
                        .map_err(change_error)?;
                }
                concerned = Some(id);
            }
            MembershipChange::Promote(id) => {
                find(id)?;
                if voters.contains(&id) {
                    return Err(KernelError::NotLearner);
                }
                let last = metrics.last_log_index.unwrap_or(0);
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map_or(0, |log_id| log_id.index);
                if (matched as f64) < (last as f64) * PROMOTE_READY_SHARE {
                    return Err(KernelError::LearnerNotReady);
                }
                raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
                    .map_err(change_error)?;
                concerned = Some(id);
            }
            MembershipChange::Remove(id) => {
                find(id)?;
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(KernelError::Reconfiguration(
                            "cannot remove the last voting member".into(),
                        ));
                    }
                    raft.change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                        .await
                        .map_err(change_error)?;
                } else {
                    raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                        .await
                        .map_err(change_error)?;
                }
            }
            MembershipChange::Update { id, peer_urls } => {
                checked_peer_urls(&peer_urls)?;
                refuse_taken_urls(&nodes, &peer_urls, Some(id))?;
                let node = MemberNode {
                    peer_urls,
                    ..find(id)?
                };
                raft.change_membership(ChangeMembers::SetNodes([(id, node)].into()), false)
                    .await
                    .map_err(change_error)?;
                concerned = Some(id);
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let current = find(id)?;
                if current.name != name || current.client_urls != client_urls {
                    let node = MemberNode {
                        name,
                        client_urls,
                        ..current
                    };
                    raft.change_membership(ChangeMembers::SetNodes([(id, node)].into()), false)
                        .await
                        .map_err(change_error)?;
                }
                concerned = Some(id);
            }
            MembershipChange::MoveLeader(target) => {
                find(target)?;
                if !voters.contains(&target) {
                    return Err(KernelError::Reconfiguration(
                        "a learner cannot become leader".into(),
                    ));
                }
                if target != self.member_id() {
                    self.transfer_leadership(target, &nodes, &voters).await?;
                }
                concerned = Some(target);
            }
        }
        let members = self.members();
        let member = concerned.and_then(|id| members.iter().find(|m| m.id == id).cloned());
        Ok((member, members))
    }

    /// Hands leadership to `target`: this leader stops sending heartbeats so that the
    /// followers' leader leases run out, then asks `target` to stand for election (its
    /// log is as long as any, so it wins). Heartbeats resume whatever happens.
    async fn transfer_leadership(
        &self,
        target: u64,
        nodes: &BTreeMap<u64, MemberNode>,
        voters: &BTreeSet<u64>,
    ) -> KernelResult<()> {
        let raft = &self.inner.raft;
        let peer = |id: u64| {
            nodes
                .get(&id)
                .and_then(MemberNode::peer_addr)
                .map(|addr| self.inner.network.client(addr))
        };
        let client = peer(target).ok_or(KernelError::MemberNotFound)?;
        let lease = self.inner.config.election_timeout * 2;
        let hold = PeerRequest::HoldElections {
            millis: u64::try_from((lease * 4).as_millis()).unwrap_or(u64::MAX),
        };
        let others = voters
            .iter()
            .filter(|id| **id != target && **id != self.member_id())
            .filter_map(|id| peer(*id));
        for other in others {
            // A voter that cannot be told may still win; the transfer then times out.
            let _ = other.send::<_, bool>(&hold, FORWARD_TIMEOUT).await;
        }
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);
        let deadline = tokio::time::Instant::now() + lease * 4;
        let mut outcome = Err(KernelError::Timeout);
        tokio::time::sleep(lease).await;
        while tokio::time::Instant::now() < deadline {
            let asked: Result<KernelResult<()>, PeerError> =
                client.send(&PeerRequest::Elect, FORWARD_TIMEOUT).await;
            if let Err(e) | Ok(Err(e)) = asked.map_err(peer_error) {
                outcome = Err(e);
                break;
            }
            let elected = raft
                .wait(Some(self.inner.config.election_timeout))
                .metrics(|m| m.current_leader == Some(target), "the new leader")
                .await;
            if elected.is_ok() {
                outcome = Ok(());
                break;
            }
        }
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        outcome
    }

    /// Resolves once this member, having been one, is no longer in the group's
    /// membership (MemberRemove), as etcd's removed members stop; never for a member
    /// still waiting to be added.
    pub async fn removed_from_cluster(&self) {
        // Server metrics change with membership, not with every entry applied: the
        // binary awaits this on its main thread, which each change would wake.
        let mut metrics = self.inner.raft.server_metrics();
        let mut was_member = false;
        loop {
            let member = metrics
                .borrow()
                .membership_config
                .membership()
                .get_node(&self.member_id())
                .is_some();
            if was_member && !member {
                return;
            }
            was_member |= member;
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Tells the group this member's name and client URLs once a leader is known (a
    /// member added by MemberAdd has neither until it runs), retrying until it holds.
    /// Holds the kernel only while it tries, not while it waits between tries, so that a
    /// kernel shut down meanwhile closes its databases when its last handle goes.
    pub(crate) async fn publish_attributes(kernel: Weak<Inner>) {
        let mut delay = Duration::from_millis(200);
        for _ in 0..100 {
            let Some(inner) = kernel.upgrade() else {
                return;
            };
            let published = Kernel { inner }.try_publish_attributes().await;
            if published {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::warn!("gave up publishing this member's name and client URLs");
    }

    /// One try of [`Kernel::publish_attributes`]: whether there is nothing left to do.
    async fn try_publish_attributes(&self) -> bool {
        let listed = self
            .inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.member_id())
            .cloned();
        if listed.as_ref().is_some_and(|node| {
            node.name == self.name() && node.client_urls == self.inner.config.client_urls
        }) {
            return true;
        }
        if listed.is_some() {
            let change = MembershipChange::Publish {
                id: self.member_id(),
                name: self.name().to_string(),
                client_urls: self.inner.config.client_urls.clone(),
            };
            match self.change_membership(change).await {
                Ok(_) | Err(KernelError::Shutdown) => return true,
                Err(e) => tracing::debug!("cannot publish member attributes yet: {e}"),
            }
        }
        false
    }
}

/// "Peer URLs already exists" if a member other than `except` has one of `urls`.
fn refuse_taken_urls(
    nodes: &BTreeMap<u64, MemberNode>,
    urls: &[String],
    except: Option<u64>,
) -> KernelResult<()> {
    let taken = nodes
        .iter()
        .filter(|(id, _)| Some(**id) != except)
        .flat_map(|(_, node)| &node.peer_urls)
        .any(|url| urls.contains(url));
    if taken {
        return Err(KernelError::PeerUrlExists);
    }
    Ok(())
}

/// The first of `urls`, once each is `http(s)://IP:PORT`.
fn checked_peer_urls(urls: &[String]) -> KernelResult<String> {
    if let Some(bad) = urls.iter().find(|url| peer_addr(url).is_none()) {
        return Err(KernelError::BadPeerUrl(bad.clone()));
    }
    urls.first()
        .cloned()
        .ok_or_else(|| KernelError::BadPeerUrl(String::new()))
}
