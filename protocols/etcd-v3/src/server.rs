//! The etcd v3 adapter: binds the client port and serves the gRPC services on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord_plugin_api::{Adapter, AdapterContext, AdapterError, RunningAdapter, StartFuture};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::client_stream::ClientStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
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

/// How long a new connection may take to show whether it speaks HTTP/2.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the client port sends connections that are not HTTP/2 (etcd serves its v2
/// HTTP/1.1 API on the same port as gRPC).
#[derive(Clone)]
pub struct Http1Handoff(pub Arc<dyn Fn(ClientStream) + Send + Sync>);

impl std::fmt::Debug for Http1Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http1Handoff")
    }
}

/// The etcd v3 gRPC dialect.
#[derive(Debug, Clone)]
pub struct EtcdV3Adapter {
    pub listen: SocketAddr,
    pub max_request_bytes: usize,
    /// Serves HTTP/1.1 connections on the same port, if set.
    pub http1: Option<Http1Handoff>,
    /// TLS on the port (its ALPN list offers `h2` and `http/1.1`), if set.
    pub tls: Option<Arc<ServerConfig>>,
}

/// Whether a connection opens with HTTP/2's client preface (gRPC always does); waits
/// for its first bytes. `None`: it closed or said nothing in time.
async fn speaks_http2(stream: &TcpStream) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut seen = [0u8; 14];
    let sniff = async {
        loop {
            let n = stream.peek(&mut seen).await.ok()?;
            if n == 0 {
                return None;
            }
            if seen[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(SNIFF_TIMEOUT, sniff)
        .await
        .ok()
        .flatten()
}

/// Where an accepted connection goes.
#[derive(Clone)]
struct Routes {
    http1: Option<Http1Handoff>,
    tls: Option<TlsAcceptor>,
    grpc: mpsc::Sender<std::io::Result<ClientStream>>,
}

impl Routes {
    /// Plain: HTTP/1.1 if it does not open with HTTP/2's preface. TLS: after the
    /// handshake, by the protocol the client chose with ALPN (`h2` is gRPC). A failed
    /// handshake (a plaintext client, a client without the certificate mutual TLS
    /// asks for) is logged with its reason and the connection closed.
    async fn route(self, stream: TcpStream) {
        let Some(acceptor) = self.tls else {
            match (&self.http1, speaks_http2(&stream).await) {
                (Some(handoff), Some(false)) => (handoff.0)(ClientStream::plain(stream)),
                (_, None) => {}
                _ => {
                    let _ = self.grpc.send(Ok(ClientStream::plain(stream))).await;
                }
            }
            return;
        };
        let Some(tls) =
            concord_plugin_api::tls::accept(&acceptor, stream, "the etcd client port").await
        else {
            return;
        };
        let http1 = tls.get_ref().1.alpn_protocol() == Some(b"http/1.1".as_slice());
        match (&self.http1, http1) {
            (Some(handoff), true) => (handoff.0)(ClientStream::tls(tls)),
            _ => {
                let _ = self.grpc.send(Ok(ClientStream::tls(tls))).await;
            }
        }
    }
}

/// Accepts connections and routes each on a task of its own (see [`Routes::route`]).
async fn accept_loop(listener: TcpListener, routes: Routes) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = routes.grpc.closed() => return,
        };
        let stream = match accepted.and_then(|(stream, _)| {
            // Without it, small responses wait for the client's delayed ACK (~40 ms).
            stream.set_nodelay(true)?;
            Ok(stream)
        }) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "etcd client port accept failed");
                continue;
            }
        };
        if routes.http1.is_none() && routes.tls.is_none() {
            if routes
                .grpc
                .send(Ok(ClientStream::plain(stream)))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        tokio::spawn(routes.clone().route(stream));
    }
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
            let (grpc, incoming) = mpsc::channel(64);
            let routes = Routes {
                http1: self.http1.clone(),
                tls: self.tls.clone().map(TlsAcceptor::from),
                grpc,
            };
            tokio::spawn(accept_loop(listener, routes));
            let incoming = ReceiverStream::new(incoming);
            let task = tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown.wait())
                    .await
                    .map_err(|e| AdapterError::Failed {
                        adapter: "etcd".into(),
                        message: e.to_string(),
                    })
            });
            tracing::info!(%local, tls = self.tls.is_some(), "etcd v3 gRPC listening");
            Ok(RunningAdapter {
                name: "etcd".into(),
                listening_on: vec![local],
                task,
            })
        })
    }
}
