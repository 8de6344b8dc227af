//! The Maintenance service: Status and Alarm for now (`etcdctl endpoint status`).

use std::pin::Pin;

use concord_kernel::Kernel;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, maintenance_server::Maintenance};
use crate::status::to_status;

#[derive(Debug, Clone)]
pub struct MaintenanceService {
    kernel: Kernel,
}

impl MaintenanceService {
    pub fn new(kernel: Kernel) -> Self {
        MaintenanceService { kernel }
    }

    fn not_yet(what: &str) -> Status {
        Status::unimplemented(format!(
            "concord: Maintenance.{what} is not available in this build yet"
        ))
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        match AlarmAction::try_from(request.into_inner().action) {
            // No alarm is ever raised until storage quotas exist, so the list is empty.
            Ok(AlarmAction::Get) => Ok(Response::new(pb::AlarmResponse {
                header: convert::header(self.kernel.header(0)),
                alarms: Vec::new(),
            })),
            _ => Err(Self::not_yet("Alarm (activate/deactivate)")),
        }
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.kernel.status().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::StatusResponse {
            header: convert::header(s.header),
            version: s.version,
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: s.errors,
            db_size_in_use: s.db_size_in_use,
            is_learner: s.is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Self::not_yet("Defragment"))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(Self::not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Err(Self::not_yet("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(Self::not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Self::not_yet("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Self::not_yet("Downgrade"))
    }
}
