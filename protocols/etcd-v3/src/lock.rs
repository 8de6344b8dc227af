//! The Lock service (`v3lockpb`, what `etcdctl lock` uses): a fair mutex per name, held
//! by a lease, on the queue of [`crate::concurrency`].

use concord_kernel::Kernel;
use concord_kernel::types::DeleteRangeRequest;
use tonic::{Request, Response, Status};

use crate::concurrency;
use crate::convert;
use crate::pb::v3lockpb::{self as pb, lock_server::Lock};
use crate::status::to_unknown_status;

#[derive(Debug, Clone)]
pub struct LockService {
    kernel: Kernel,
}

impl LockService {
    pub fn new(kernel: Kernel) -> Self {
        LockService { kernel }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let req = request.into_inner();
        let prefix = concurrency::queue_prefix(&req.name);
        let entry = concurrency::join(&self.kernel, &prefix, req.lease, Vec::new())
            .await
            .map_err(|e| to_unknown_status(&e))?;
        let header = concurrency::wait_turn(&self.kernel, &prefix, &entry)
            .await
            .map_err(|e| to_unknown_status(&e))?;
        Ok(Response::new(pb::LockResponse {
            header: convert::header(header),
            key: entry.key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let deleted = self
            .kernel
            .delete_range(DeleteRangeRequest {
                key: request.into_inner().key,
                range_end: Vec::new(),
                prev_kv: false,
            })
            .await
            .map_err(|e| to_unknown_status(&e))?;
        Ok(Response::new(pb::UnlockResponse {
            header: convert::header(deleted.header),
        }))
    }
}
