//! The server side of a TLS handshake, as every TCP adapter runs it: on the accepted
//! connection's own task, bounded in time, with a refusal (a plaintext client, a client
//! without the certificate mutual TLS asks for, an untrusted one) logged with rustls's
//! reason. A refused connection is closed; nothing falls back to plaintext.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the handshake on `stream`; `port` names the listener in the log line
/// (e.g. "the etcd client port"). `None`: refused or timed out, and logged.
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    port: &str,
) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!(?peer, error = %e, "TLS handshake refused on {port}");
            None
        }
        Err(_) => {
            tracing::warn!(?peer, "TLS handshake timed out on {port}");
            None
        }
    }
}
