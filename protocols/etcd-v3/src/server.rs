//! The etcd v3 adapter: binds the client port and serves the gRPC services on it.

use std::net::SocketAddr;

use concord_plugin_api::{Adapter, AdapterContext, AdapterError, RunningAdapter, StartFuture};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::cluster::ClusterService;
use crate::election::ElectionService;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::lock::LockService;
use crate::maintenance::MaintenanceService;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::watch::WatchService;

/// etcd accepts gRPC messages this much larger than its request limit (framing and the
/// rest of the request), and rejects the remainder itself with "request is too large".
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The etcd v3 gRPC dialect.
#[derive(Debug, Clone)]
pub struct EtcdV3Adapter {
    pub listen: SocketAddr,
    pub max_request_bytes: usize,
}

impl Adapter for EtcdV3Adapter {
    fn name(&self) -> &str {
        "etcd"
    }

    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .map_err(|source| AdapterError::Bind {
                    adapter: self.name().to_string(),
                    addr: self.listen,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| AdapterError::Bind {
                adapter: self.name().to_string(),
                addr: self.listen,
                source,
            })?;
            let max_message = self.max_request_bytes + GRPC_OVERHEAD_BYTES;
            let kernel = context.kernel.clone();
            let router = Server::builder()
                .add_service(
                    KvServer::new(KvService::new(kernel.clone()))
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(usize::MAX),
                )
                .add_service(
                    WatchServer::new(WatchService::new(kernel.clone(), self.max_request_bytes))
                        .max_decoding_message_size(max_message),
                )
                .add_service(
                    LeaseServer::new(LeaseService::new(kernel.clone()))
                        .max_decoding_message_size(max_message),
                )
                .add_service(LockServer::new(LockService::new(kernel.clone())))
                .add_service(ElectionServer::new(ElectionService::new(kernel.clone())))
                .add_service(ClusterServer::new(ClusterService::new(kernel.clone())))
                .add_service(MaintenanceServer::new(MaintenanceService::new(kernel)));
            let shutdown = context.shutdown.clone();
            // `Server::tcp_nodelay` applies only to listeners tonic binds itself; without
            // it, small responses wait for the client's delayed ACK (~40 ms each).
            let incoming = TcpListenerStream::new(listener).map(|accepted| {
                accepted.and_then(|stream| {
                    stream.set_nodelay(true)?;
                    Ok(stream)
                })
            });
            let task = tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown.wait())
                    .await
                    .map_err(|e| AdapterError::Failed {
                        adapter: "etcd".into(),
                        message: e.to_string(),
                    })
            });
            tracing::info!(%local, "etcd v3 gRPC listening");
            Ok(RunningAdapter {
                name: "etcd".into(),
                listening_on: vec![local],
                task,
            })
        })
    }
}
