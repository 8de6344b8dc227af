//! The Cluster service: membership as etcd's tools see it.

use concord_kernel::{Kernel, MembershipChange};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pb::etcdserverpb::{self as pb, cluster_server::Cluster};
use crate::status::to_status;

#[derive(Debug, Clone)]
pub struct ClusterService {
    kernel: Kernel,
}

impl ClusterService {
    pub fn new(kernel: Kernel) -> Self {
        ClusterService { kernel }
    }

    /// Runs a membership change (at the leader) and gives the member concerned and the
    /// members after it, in etcd's messages.
    async fn change(
        &self,
        change: MembershipChange,
    ) -> Result<
        (
            Option<pb::Member>,
            Option<pb::ResponseHeader>,
            Vec<pb::Member>,
        ),
        Status,
    > {
        let (member, members) = self
            .kernel
            .change_membership(change)
            .await
            .map_err(|e| to_status(&e))?;
        let revision = self.kernel.revision().map_err(|e| to_status(&e))?;
        Ok((
            member.map(convert::member),
            convert::header(self.kernel.header(revision)),
            members.into_iter().map(convert::member).collect(),
        ))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let (member, header, members) = self
            .change(MembershipChange::Add {
                peer_urls: request.peer_ur_ls,
                learner: request.is_learner,
            })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let (_, header, members) = self
            .change(MembershipChange::Remove(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let (_, header, members) = self
            .change(MembershipChange::Update {
                id: request.id,
                peer_urls: request.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse { header, members }))
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
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let (_, header, members) = self
            .change(MembershipChange::Promote(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}
