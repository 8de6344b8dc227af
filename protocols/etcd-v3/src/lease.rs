//! The Lease service: grant, revoke, keep-alive (a stream), time-to-live, list.

use std::pin::Pin;

use concord_kernel::Kernel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, lease_server::Lease};
use crate::status::to_status;

/// Keep-alive answers buffered before the stream waits for the client to read.
const KEEP_ALIVE_BUFFER: usize = 64;

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct LeaseService {
    kernel: Kernel,
}

impl LeaseService {
    pub fn new(kernel: Kernel) -> Self {
        LeaseService { kernel }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let granted = self
            .kernel
            .lease_grant(req.id, req.ttl)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: convert::header(granted.header),
            id: granted.id,
            ttl: granted.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let header = self
            .kernel
            .lease_revoke(request.into_inner().id)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: convert::header(header),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, responses) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let kernel = self.kernel.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let answer = match kernel.lease_keep_alive(req.id).await {
                    Ok(renewed) => Ok(pb::LeaseKeepAliveResponse {
                        header: convert::header(renewed.header),
                        id: renewed.id,
                        ttl: renewed.ttl,
                    }),
                    Err(e) => Err(to_status(&e)),
                };
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let ttl = self
            .kernel
            .lease_time_to_live(req.id, req.keys)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: convert::header(ttl.header),
            id: ttl.id,
            ttl: ttl.ttl,
            granted_ttl: ttl.granted_ttl,
            keys: ttl.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self
            .kernel
            .lease_leases()
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: convert::header(leases.header),
            leases: leases
                .leases
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
