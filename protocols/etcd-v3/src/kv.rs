//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use concord_kernel::Kernel;
use concord_kernel::types::CompactRequest;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, kv_server::Kv};
use crate::status::to_status;

#[derive(Debug, Clone)]
pub struct KvService {
    kernel: Kernel,
}

impl KvService {
    pub fn new(kernel: Kernel) -> Self {
        KvService { kernel }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = convert::range_request(request.into_inner());
        let resp = self.kernel.range(req).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::range_response(resp)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = convert::put_request(request.into_inner());
        let resp = self.kernel.put(req).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::put_response(resp)))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = convert::delete_request(request.into_inner());
        let resp = self
            .kernel
            .delete_range(req)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::delete_response(resp)))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = convert::txn_request(request.into_inner());
        let resp = self.kernel.txn(req).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::txn_response(resp)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = request.into_inner();
        let header = self
            .kernel
            .compact(CompactRequest {
                revision: req.revision,
                physical: req.physical,
            })
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::CompactionResponse {
            header: convert::header(header),
        }))
    }
}
