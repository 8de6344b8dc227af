//! The etcd v3 gRPC dialect: KV, Cluster and Maintenance services over the kernel API.

mod cluster;
mod convert;
mod kv;
mod maintenance;
mod server;
mod status;

pub use server::EtcdV3Adapter;
pub use status::to_status;
