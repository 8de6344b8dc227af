//! The Election service (`v3electionpb`): campaign, proclaim, leader, observe, resign,
//! with the semantics of etcd's election server, on the queue of
//! [`crate::concurrency`]. The leader is the campaigner whose key has the oldest create
//! revision under `name/`.

use std::pin::Pin;

use concord_kernel::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyValue, PutRequest,
    RequestOp, Revision, TxnRequest, WatchRequest,
};
use concord_kernel::{Kernel, KernelError, WatchEnd};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::concurrency::{self, prefix_end};
use crate::convert;
use crate::pb::v3electionpb::{self as pb, election_server::Election};
use crate::status::to_unknown_status;

pub const NOT_LEADER: &str = "election: not leader";
pub const NO_LEADER: &str = "election: no leader";
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderResponse, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct ElectionService {
    kernel: Kernel,
}

impl ElectionService {
    pub fn new(kernel: Kernel) -> Self {
        ElectionService { kernel }
    }
}

/// Sets the leader's value, only while it still holds its key.
fn proclaim_txn(leader: &pb::LeaderKey, value: Vec<u8>) -> TxnRequest {
    while_leader(
        leader,
        RequestOp::Put(PutRequest {
            key: leader.key.clone(),
            value,
            lease: leader.lease,
            ..Default::default()
        }),
    )
}

/// A write that happens only while `leader` still holds its key.
fn while_leader(leader: &pb::LeaderKey, then: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(leader.rev),
            key: leader.key.clone(),
            range_end: Vec::new(),
        }],
        success: vec![then],
        failure: Vec::new(),
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let req = request.into_inner();
        let prefix = concurrency::queue_prefix(&req.name);
        let entry = concurrency::join(&self.kernel, &prefix, req.lease, req.value.clone())
            .await
            .map_err(|e| to_unknown_status(&e))?;
        let leader = pb::LeaderKey {
            name: req.name,
            key: entry.key.clone(),
            rev: entry.create_revision,
            lease: req.lease,
        };
        if entry
            .existing
            .as_ref()
            .is_some_and(|kv| kv.value != req.value)
        {
            self.kernel
                .txn(proclaim_txn(&leader, req.value))
                .await
                .map_err(|e| to_unknown_status(&e))?;
        }
        let header = concurrency::wait_turn(&self.kernel, &prefix, &entry)
            .await
            .map_err(|e| to_unknown_status(&e))?;
        Ok(Response::new(pb::CampaignResponse {
            header: convert::header(header),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER_KEY))?;
        let resp = self
            .kernel
            .txn(proclaim_txn(&leader, req.value))
            .await
            .map_err(|e| to_unknown_status(&e))?;
        if !resp.succeeded {
            return Err(Status::new(Code::Unknown, NOT_LEADER));
        }
        Ok(Response::new(pb::ProclaimResponse {
            header: convert::header(resp.header),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let prefix = concurrency::queue_prefix(&request.into_inner().name);
        let revision = self.kernel.revision().map_err(|e| to_unknown_status(&e))?;
        match concurrency::first(&self.kernel, &prefix)
            .await
            .map_err(|e| to_unknown_status(&e))?
        {
            Some(kv) => Ok(Response::new(pb::LeaderResponse {
                header: convert::header(self.kernel.header(revision)),
                kv: Some(convert::key_value(kv)),
            })),
            None => Err(Status::new(Code::Unknown, NO_LEADER)),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = concurrency::queue_prefix(&request.into_inner().name);
        let (out, responses) = mpsc::channel(16);
        let kernel = self.kernel.clone();
        tokio::spawn(async move {
            if let Err(e) = observe(&kernel, &prefix, &out).await {
                let _ = out.send(Err(to_unknown_status(&e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER_KEY))?;
        let resp = self
            .kernel
            .txn(while_leader(
                &leader,
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: leader.key.clone(),
                    range_end: Vec::new(),
                    prev_kv: false,
                }),
            ))
            .await
            .map_err(|e| to_unknown_status(&e))?;
        Ok(Response::new(pb::ResignResponse {
            header: convert::header(resp.header),
        }))
    }
}

type ObserveSender = mpsc::Sender<Result<pb::LeaderResponse, Status>>;

/// Sends the leader, then every new value it proclaims, then the next leader when it
/// goes, until the client hangs up.
async fn observe(kernel: &Kernel, prefix: &[u8], out: &ObserveSender) -> Result<(), KernelError> {
    loop {
        let revision = kernel.revision()?;
        let (mut leader, at) = match concurrency::first(kernel, prefix).await? {
            Some(kv) => (kv, revision),
            None => match first_put(kernel, prefix, revision + 1).await? {
                Some(found) => found,
                None => return Ok(()),
            },
        };
        if !send(kernel, out, at, leader.clone()).await {
            return Ok(());
        }
        let mut watcher = kernel.watch(WatchRequest {
            key: leader.key.clone(),
            start_revision: at + 1,
            ..Default::default()
        })?;
        'held: loop {
            let batch = match watcher.next().await {
                Ok(batch) => batch,
                Err(WatchEnd::Compacted { .. }) => break 'held,
                Err(WatchEnd::Closed) => return Err(KernelError::Shutdown),
                Err(WatchEnd::Failed(e)) => return Err(e),
            };
            for event in batch.events {
                if event.kind == EventKind::Delete {
                    break 'held;
                }
                leader = event.kv;
                if !send(kernel, out, batch.revision, leader.clone()).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits for the first put under `prefix` from `from` on: (the key, its revision).
async fn first_put(
    kernel: &Kernel,
    prefix: &[u8],
    from: Revision,
) -> Result<Option<(KeyValue, Revision)>, KernelError> {
    let mut watcher = kernel.watch(WatchRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        start_revision: from,
        no_delete: true,
        ..Default::default()
    })?;
    loop {
        match watcher.next().await {
            Ok(batch) => {
                if let Some(event) = batch.events.into_iter().next() {
                    let revision = event.kv.mod_revision;
                    return Ok(Some((event.kv, revision)));
                }
            }
            Err(WatchEnd::Compacted { .. }) => return Ok(None),
            Err(WatchEnd::Closed) => return Err(KernelError::Shutdown),
            Err(WatchEnd::Failed(e)) => return Err(e),
        }
    }
}

async fn send(kernel: &Kernel, out: &ObserveSender, revision: Revision, kv: KeyValue) -> bool {
    out.send(Ok(pb::LeaderResponse {
        header: convert::header(kernel.header(revision)),
        kv: Some(convert::key_value(kv)),
    }))
    .await
    .is_ok()
}
