//! The Cluster service: membership as etcd's tools see it.

use concord_kernel::Kernel;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, cluster_server::Cluster};

#[derive(Debug, Clone)]
pub struct ClusterService {
    kernel: Kernel,
}

impl ClusterService {
    pub fn new(kernel: Kernel) -> Self {
        ClusterService { kernel }
    }

    fn single_member_only(what: &str) -> Status {
        Status::unimplemented(format!(
            "concord: {what} needs a multi-member cluster, which this build does not run yet"
        ))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(Self::single_member_only("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(Self::single_member_only("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Self::single_member_only("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self.kernel.members();
        Ok(Response::new(pb::MemberListResponse {
            header: convert::header(self.kernel.header(0)),
            members: members.into_iter().map(convert::member).collect(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(Self::single_member_only("MemberPromote"))
    }
}
