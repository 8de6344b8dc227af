//! The etcd v3 gRPC dialect: KV, Watch, Lease, Lock, Election, Cluster and Maintenance
//! services over the kernel API.

/// Generated etcd v3 protobuf messages and tonic services, one module per proto package.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

mod client_stream;
mod cluster;
mod concurrency;
pub mod convert;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod server;
mod status;
mod watch;

pub use client_stream::ClientStream;
pub use server::{EtcdV3Adapter, Http1Handoff};
pub use status::to_status;
