//! The Maintenance service: Status, Alarm, Hash, HashKV, Defragment and Snapshot.

use std::pin::Pin;

use concord_kernel::types::{Alarm, AlarmKind};
use concord_kernel::{Kernel, MembershipChange};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, maintenance_server::Maintenance};
use crate::status::to_status;

/// Bytes per Snapshot stream message.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct MaintenanceService {
    kernel: Kernel,
}

impl MaintenanceService {
    pub fn new(kernel: Kernel) -> Self {
        MaintenanceService { kernel }
    }

    fn not_supported(what: &str) -> Status {
        Status::unimplemented(format!(
            "concord: Maintenance.{what} is not supported by a one-member cluster"
        ))
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

fn alarm_type(kind: AlarmKind) -> pb::AlarmType {
    match kind {
        AlarmKind::NoSpace => pb::AlarmType::Nospace,
        AlarmKind::Corrupt => pb::AlarmType::Corrupt,
    }
}

fn alarm_kind(alarm: pb::AlarmType) -> Option<AlarmKind> {
    match alarm {
        pb::AlarmType::Nospace => Some(AlarmKind::NoSpace),
        pb::AlarmType::Corrupt => Some(AlarmKind::Corrupt),
        pb::AlarmType::None => None,
    }
}

fn alarm_members(alarms: Vec<Alarm>) -> Vec<pb::AlarmMember> {
    alarms
        .into_iter()
        .map(|a| pb::AlarmMember {
            member_id: a.member_id,
            alarm: alarm_type(a.kind) as i32,
        })
        .collect()
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let req = request.into_inner();
        let header = convert::header(
            self.kernel
                .header(self.kernel.revision().map_err(|e| to_status(&e))?),
        );
        let action = AlarmAction::try_from(req.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        let kind = pb::AlarmType::try_from(req.alarm).ok().and_then(alarm_kind);
        let alarms = match (action, kind) {
            (AlarmAction::Get, _) => self.kernel.alarms(),
            // etcd answers an activate/deactivate of alarm NONE with the current list.
            (_, None) => self.kernel.alarms(),
            (AlarmAction::Activate | AlarmAction::Deactivate, Some(kind)) => {
                let alarm = Alarm {
                    member_id: req.member_id,
                    kind,
                };
                let active = action == AlarmAction::Activate;
                let known = self.kernel.alarms().contains(&alarm);
                if !active && !known {
                    Vec::new()
                } else {
                    self.kernel
                        .set_alarm(alarm, active)
                        .await
                        .map_err(|e| to_status(&e))?;
                    vec![alarm]
                }
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header,
            alarms: alarm_members(alarms),
        }))
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
        let header = self.kernel.defragment().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::DefragmentResponse {
            header: convert::header(header),
        }))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (header, hash) = self.kernel.hash().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::HashResponse {
            header: convert::header(header),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let resp = self
            .kernel
            .hash_kv(request.into_inner().revision)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: convert::header(resp.header),
            hash: resp.hash,
            compact_revision: resp.compact_revision,
            hash_revision: resp.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let scratch = self.kernel.scratch_dir();
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        let path = scratch.join(format!(
            "snapshot-{}-{}.tmp",
            std::process::id(),
            self.kernel.revision().unwrap_or_default()
        ));
        let info = self
            .kernel
            .snapshot_to_file(path.clone())
            .await
            .map_err(|e| to_status(&e))?;
        let header = convert::header(self.kernel.header(info.revision));
        let (out, responses) = mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(status) = stream_file(&path, info.bytes, header, &out).await {
                let _ = out.send(Err(status)).await;
            }
            if let Err(e) = tokio::fs::remove_file(&path).await {
                tracing::warn!(path = %path.display(), "cannot remove snapshot scratch file: {e}");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.kernel
            .change_membership(MembershipChange::MoveLeader(target))
            .await
            .map_err(|e| to_status(&e))?;
        let revision = self.kernel.revision().map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: convert::header(self.kernel.header(revision)),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Self::not_supported("Downgrade"))
    }
}

/// Sends a snapshot file in chunks, each saying how many bytes remain, logging progress.
async fn stream_file(
    path: &std::path::Path,
    total: u64,
    header: Option<pb::ResponseHeader>,
    out: &mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> Result<(), Status> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
    let mut remaining = total;
    let mut last_logged_percent = 0;
    loop {
        let mut blob = vec![0u8; SNAPSHOT_CHUNK];
        let n = file
            .read(&mut blob)
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        if n == 0 {
            break;
        }
        blob.truncate(n);
        remaining = remaining.saturating_sub(n as u64);
        let message = pb::SnapshotResponse {
            header,
            remaining_bytes: remaining,
            blob,
            version: concord_kernel::ETCD_VERSION.to_string(),
        };
        if out.send(Ok(message)).await.is_err() {
            tracing::info!("snapshot receiver went away");
            return Ok(());
        }
        let percent = (total - remaining) * 100 / total.max(1);
        if percent >= last_logged_percent + 25 {
            last_logged_percent = percent;
            tracing::info!(percent, total, "sending snapshot");
        }
    }
    tracing::info!(total, "snapshot sent");
    Ok(())
}
