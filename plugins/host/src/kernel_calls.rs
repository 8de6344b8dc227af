//! Carrying out a plugin's kernel calls: the etcd v3 messages it sends are converted
//! with the etcd adapter's `convert` module, run on the kernel's public API, and
//! answered with etcd's own responses, or with the gRPC code and message etcd would send.

use concord_etcd_v3::convert;
use concord_etcd_v3::pb::etcdserverpb as pb;
use concord_etcd_v3::to_status;
use concord_kernel::{Kernel, KernelError, WatchEnd};

use crate::envelope::{KernelError as ErrorReply, kernel_call::Request, kernel_reply::Reply};

fn error_reply(error: &KernelError) -> Reply {
    let status = to_status(error);
    Reply::Error(ErrorReply {
        code: status.code() as u32,
        message: status.message().to_string(),
    })
}

/// Runs one call that has a single reply (everything but watches).
pub async fn unary(kernel: &Kernel, request: Request) -> Reply {
    let outcome = match request {
        Request::Range(r) => kernel
            .range(convert::range_request(r))
            .await
            .map(|r| Reply::Range(convert::range_response(r))),
        Request::Put(r) => kernel
            .put(convert::put_request(r))
            .await
            .map(|r| Reply::Put(convert::put_response(r))),
        Request::DeleteRange(r) => kernel
            .delete_range(convert::delete_request(r))
            .await
            .map(|r| Reply::DeleteRange(convert::delete_response(r))),
        Request::Txn(r) => kernel
            .txn(convert::txn_request(r))
            .await
            .map(|r| Reply::Txn(convert::txn_response(r))),
        Request::LeaseGrant(r) => kernel.lease_grant(r.id, r.ttl).await.map(|granted| {
            Reply::LeaseGrant(pb::LeaseGrantResponse {
                header: convert::header(granted.header),
                id: granted.id,
                ttl: granted.ttl,
                error: String::new(),
            })
        }),
        Request::LeaseRevoke(r) => kernel.lease_revoke(r.id).await.map(|header| {
            Reply::LeaseRevoke(pb::LeaseRevokeResponse {
                header: convert::header(header),
            })
        }),
        Request::Watch(_) | Request::WatchCancel(_) => {
            return Reply::Error(ErrorReply {
                code: tonic::Code::InvalidArgument as u32,
                message: "watches are not unary calls".into(),
            });
        }
    };
    outcome.unwrap_or_else(|e| error_reply(&e))
}

/// A watch's replies: `created`, then one response per revision, until the kernel ends
/// it (compaction: `canceled` with the compact revision) or the caller stops it.
/// `deliver` returns false once nobody is listening.
pub async fn watch(
    kernel: Kernel,
    create: pb::WatchCreateRequest,
    mut deliver: impl AsyncFnMut(Reply) -> bool,
) {
    let mut watcher = match kernel.watch(convert::watch_request(create)) {
        Ok(watcher) => watcher,
        Err(e) => {
            deliver(error_reply(&e)).await;
            return;
        }
    };
    let revision = kernel.revision().unwrap_or_default();
    let created = pb::WatchResponse {
        header: convert::header(kernel.header(revision)),
        created: true,
        ..Default::default()
    };
    if !deliver(Reply::Watch(created)).await {
        return;
    }
    loop {
        let response = match watcher.next().await {
            Ok(batch) => pb::WatchResponse {
                header: convert::header(kernel.header(batch.revision)),
                events: batch.events.into_iter().map(convert::event).collect(),
                ..Default::default()
            },
            Err(WatchEnd::Compacted { compact_revision }) => pb::WatchResponse {
                header: convert::header(kernel.header(0)),
                canceled: true,
                compact_revision,
                ..Default::default()
            },
            Err(WatchEnd::Closed) => return,
            Err(WatchEnd::Failed(e)) => pb::WatchResponse {
                header: convert::header(kernel.header(0)),
                canceled: true,
                cancel_reason: to_status(&e).message().to_string(),
                ..Default::default()
            },
        };
        let last = response.canceled;
        if !deliver(Reply::Watch(response)).await || last {
            return;
        }
    }
}

/// The reply to a `WatchCancel`.
pub fn canceled(kernel: &Kernel) -> Reply {
    let revision = kernel.revision().unwrap_or_default();
    Reply::Watch(pb::WatchResponse {
        header: convert::header(kernel.header(revision)),
        canceled: true,
        ..Default::default()
    })
}
