//! The peer transport: how members talk to each other on the peer port (2380 by
//! default) — Raft's RPCs (votes, log replication, snapshot chunks) and the requests a
//! follower sends its leader (forwarded writes, read-index, lease renewals, membership
//! changes).
//!
//! One TCP connection per peer carries many requests at once. A frame is a big-endian
//! `u32` length, a `u64` request id and a postcard body; replies carry the id of their
//! request and may come back in any order. Requests on one connection are handed to the
//! handler in the order they arrived (forwarded writes rely on it: a ZooKeeper session's
//! pipelined writes stay in order), and each is answered as soon as it is done.
//!
//! With [`PeerTls`] every connection is mutual TLS: a member accepts only peers whose
//! certificate the profile's CA signed and checks the certificate of the peer it dials
//! against the IP address of its peer URL. A handshake that fails is logged with why and
//! the connection dropped; there is no fallback to plaintext.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Largest frame accepted (Raft's append-entries batches and snapshot chunks included).
pub(crate) const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer of a peer connection: the frames that arrived together (replication,
/// forwarded writes and their answers come in bursts) are taken in one system call
/// rather than three each (length, id, body).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long an accepted connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Mutual TLS on the peer port: the configuration this member serves with (it must
/// require client certificates) and the one it dials with (it must present one).
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// The two halves of a peer connection: plain TCP keeps tokio's lock-free
/// `into_split`, TLS (one state machine for both directions) uses `tokio::io::split`.
type Halves = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

fn tcp_halves(stream: TcpStream) -> Halves {
    let (reader, writer) = stream.into_split();
    (Box::new(reader), Box::new(writer))
}

fn tls_halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Halves {
    let (reader, writer) = tokio::io::split(stream);
    (Box::new(reader), Box::new(writer))
}

/// Why a peer request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("peer {addr} is unreachable: {why}")]
    Unreachable { addr: SocketAddr, why: String },
    #[error("connection to peer {addr} was lost before it answered")]
    Lost { addr: SocketAddr },
    #[error("peer {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("peer message cannot be encoded or decoded: {0}")]
    Codec(String),
}

/// The `host:port` of a `http://IP:PORT` (or `https://`) peer URL.
pub(crate) fn peer_addr(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?
        .trim_end_matches('/')
        .parse()
        .ok()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PeerError> {
    postcard::to_allocvec(value).map_err(|e| PeerError::Codec(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PeerError> {
    postcard::from_bytes(bytes).map_err(|e| PeerError::Codec(e.to_string()))
}

type ReplySender = oneshot::Sender<Result<Vec<u8>, PeerError>>;

struct Outgoing {
    body: Vec<u8>,
    reply: ReplySender,
}

/// A connection to one peer, opened on first use and again after it breaks. Cloning
/// shares the connection.
#[derive(Clone, Debug)]
pub(crate) struct PeerClient {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Outgoing>,
}

impl PeerClient {
    pub(crate) fn new(addr: SocketAddr, tls: Option<TlsConnector>) -> PeerClient {
        let (queue, outgoing) = mpsc::unbounded_channel();
        tokio::spawn(run_client_connection(addr, tls, outgoing));
        PeerClient { addr, queue }
    }

    /// Queues `request` now (requests queued one after another are sent, and handed to
    /// the peer's handler, in that order); the returned future waits for its answer.
    pub(crate) fn send<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        request: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Rep, PeerError>> + Send + 'static + use<Req, Rep> {
        let addr = self.addr;
        let queued = encode(request).and_then(|body| {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(Outgoing { body, reply })
                .map_err(|_| PeerError::Lost { addr })?;
            Ok(answer)
        });
        async move {
            let answer = queued?;
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(PeerError::Timeout {
                    addr,
                    after: timeout,
                }),
                Ok(Err(_)) => Err(PeerError::Lost { addr }),
                Ok(Ok(reply)) => decode(&reply?),
            }
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, ReplySender>>>;

fn lock_pending(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, ReplySender>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to `addr`, with the TLS handshake done when `tls` is set.
async fn connect(addr: SocketAddr, tls: Option<&TlsConnector>) -> Result<Halves, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(tcp_halves(stream)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(tls_halves(stream))
        }
    }
}

/// Sends queued requests to `addr`, (re)connecting when there is something to send;
/// when a connection breaks, every request waiting on it is answered `Lost`.
async fn run_client_connection(
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut next_id: u64 = 0;
    while let Some(first) = outgoing.recv().await {
        let (reader, writer) =
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, tls.as_ref())).await {
                Ok(Ok(halves)) => halves,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e,
                        _ => format!("no connection within {CONNECT_TIMEOUT:?}"),
                    };
                    if why.starts_with("TLS") {
                        tracing::warn!(peer = %addr, "{why}");
                    }
                    let unreachable = PeerError::Unreachable { addr, why };
                    let _ = first.reply.send(Err(unreachable.clone()));
                    while let Ok(queued) = outgoing.try_recv() {
                        let _ = queued.reply.send(Err(unreachable.clone()));
                    }
                    continue;
                }
            };
        let mut writer = BufWriter::new(writer);
        let pending: Pending = Arc::default();
        let mut reading = {
            let pending = pending.clone();
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
            tokio::spawn(async move {
                while let Ok((id, body)) = read_frame(&mut reader).await {
                    if let Some(reply) = lock_pending(&pending).remove(&id) {
                        let _ = reply.send(Ok(body));
                    }
                }
            })
        };
        let mut next = Some(first);
        'connected: while let Some(request) = next.take() {
            // Write everything queued, then flush once.
            let mut request = request;
            loop {
                next_id += 1;
                lock_pending(&pending).insert(next_id, request.reply);
                if write_frame(&mut writer, next_id, &request.body)
                    .await
                    .is_err()
                {
                    break 'connected;
                }
                match outgoing.try_recv() {
                    Ok(more) => request = more,
                    Err(_) => break,
                }
            }
            if writer.flush().await.is_err() {
                break;
            }
            tokio::select! {
                more = outgoing.recv() => match more {
                    Some(more) => next = Some(more),
                    None => break,
                },
                _ = &mut reading => break,
            }
        }
        reading.abort();
        for (_, reply) in lock_pending(&pending).drain() {
            let _ = reply.send(Err(PeerError::Lost { addr }));
        }
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> std::io::Result<(u64, Vec<u8>)> {
    let len = reader.read_u32().await? as usize;
    if !(8..=MAX_FRAME_BYTES).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes (at most {MAX_FRAME_BYTES})"),
        ));
    }
    let id = reader.read_u64().await?;
    let mut body = vec![0; len - 8];
    reader.read_exact(&mut body).await?;
    Ok((id, body))
}

async fn write_frame<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    id: u64,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len() + 8)
        .ok()
        .filter(|len| *len as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("peer frame of {} bytes is too large", body.len()),
            )
        })?;
    writer.write_u32(len).await?;
    writer.write_u64(id).await?;
    writer.write_all(body).await
}

/// An answer being worked out; what runs before the future is first polled has run by
/// the time `handle` returns (so a handler can queue work in arrival order).
pub(crate) type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// What the peer port does with a request body.
pub(crate) trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, body: Vec<u8>) -> Answer;
}

/// Serves the peer port on `listener` until the task is aborted; with `tls`, only to
/// peers that complete its handshake.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<dyn PeerHandler>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("peer port accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let Some(acceptor) = tls.clone() else {
            tokio::spawn(serve_connection(tcp_halves(stream), from, handler));
            continue;
        };
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(tls_halves(stream), from, handler).await,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %from, "refusing peer connection: TLS handshake failed: {e}")
                }
                Err(_) => tracing::warn!(
                    peer = %from,
                    "refusing peer connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                ),
            }
        });
    }
}

async fn serve_connection(
    (reader, writer): Halves,
    from: SocketAddr,
    handler: Arc<dyn PeerHandler>,
) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (answers, mut to_write) = mpsc::unbounded_channel::<(u64, Vec<u8>)>();
    let writing = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some((id, body)) = to_write.recv().await {
            if write_frame(&mut writer, id, &body).await.is_err() {
                return;
            }
            while let Ok((id, body)) = to_write.try_recv() {
                if write_frame(&mut writer, id, &body).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
        match read_frame(&mut reader).await {
            Ok((id, body)) => {
                let answer = handler.handle(body);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let _ = answers.send((id, answer.await));
                });
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::warn!(peer = %from, "closing peer connection: {e}");
                }
                break;
            }
        }
    }
    drop(answers);
    let _ = writing.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Doubler;

    impl PeerHandler for Doubler {
        fn handle(&self, body: Vec<u8>) -> Answer {
            let n: u64 = decode(&body).unwrap_or_default();
            Box::pin(async move {
                // Later requests answer first: replies are matched by id, not order.
                tokio::time::sleep(Duration::from_millis(50u64.saturating_sub(n))).await;
                encode(&(n * 2)).unwrap_or_default()
            })
        }
    }

    #[tokio::test]
    async fn many_requests_share_a_connection_and_get_their_own_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Doubler), None));
        let client = PeerClient::new(addr, None);
        let calls: Vec<_> = (0..40u64)
            .map(|n| client.send::<u64, u64>(&n, Duration::from_secs(5)))
            .collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), n as u64 * 2);
        }
        server.abort();
    }

    #[tokio::test]
    async fn an_absent_peer_is_unreachable_and_a_later_one_is_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = PeerClient::new(addr, None);
        let err = client
            .send::<u64, u64>(&1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Unreachable { .. }), "{err}");
        let listener = TcpListener::bind(addr).await.unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Doubler), None));
        assert_eq!(
            client.send::<u64, u64>(&7, Duration::from_secs(5)).await,
            Ok(14)
        );
        server.abort();
    }

    /// A CA-signed certificate for 127.0.0.1 usable by both ends (no key usage limits).
    fn member_certificate(
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ) -> Arc<rustls::sign::CertifiedKey> {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        Arc::new(
            rustls::sign::CertifiedKey::from_der(vec![cert.der().clone()], private, &provider)
                .unwrap(),
        )
    }

    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    /// Mutual TLS as the binary builds it: a server requiring certificates from the CA,
    /// and a dialing side that trusts the CA and presents `client_cert` when given.
    fn mutual_tls(with_client_cert: bool) -> (TlsAcceptor, TlsConnector) {
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Fixed(member_certificate(&issuer))));
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client = if with_client_cert {
            client.with_client_cert_resolver(Arc::new(Fixed(member_certificate(&issuer))))
        } else {
            client.with_no_client_auth()
        };
        (
            TlsAcceptor::from(Arc::new(server)),
            TlsConnector::from(Arc::new(client)),
        )
    }

    #[tokio::test]
    async fn mutual_tls_serves_members_and_refuses_anonymous_and_plaintext_peers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, connector) = mutual_tls(true);
        let server = tokio::spawn(serve(listener, Arc::new(Doubler), Some(acceptor)));
        let member = PeerClient::new(addr, Some(connector));
        assert_eq!(
            member.send::<u64, u64>(&21, Duration::from_secs(5)).await,
            Ok(42)
        );
        // A peer without a certificate completes no exchange: the server ends the
        // handshake (TLS 1.3 reports it to the client at its first read, so the request
        // is lost rather than the peer unreachable).
        let (_, anonymous) = mutual_tls(false);
        let anonymous = PeerClient::new(addr, Some(anonymous));
        let refused = anonymous.send::<u64, u64>(&1, Duration::from_secs(5)).await;
        assert!(
            matches!(
                refused,
                Err(PeerError::Lost { .. } | PeerError::Unreachable { .. })
            ),
            "{refused:?}"
        );
        // A plaintext peer gets nothing either.
        let plaintext = PeerClient::new(addr, None);
        let refused = plaintext.send::<u64, u64>(&1, Duration::from_secs(5)).await;
        assert!(
            matches!(refused, Err(PeerError::Lost { .. })),
            "{refused:?}"
        );
        // A member's connection to a plaintext port fails its handshake.
        let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain_listener.local_addr().unwrap();
        let plain_server = tokio::spawn(serve(plain_listener, Arc::new(Doubler), None));
        let (_, connector) = mutual_tls(true);
        let refused = PeerClient::new(plain_addr, Some(connector))
            .send::<u64, u64>(&1, Duration::from_secs(5))
            .await;
        assert!(
            matches!(&refused, Err(PeerError::Unreachable { why, .. }) if why.starts_with("TLS")),
            "{refused:?}"
        );
        server.abort();
        plain_server.abort();
    }

    #[test]
    fn peer_urls_give_socket_addresses() {
        assert_eq!(
            peer_addr("http://127.0.0.1:2380"),
            Some(SocketAddr::from(([127, 0, 0, 1], 2380)))
        );
        assert_eq!(peer_addr("https://10.0.0.1:7/"), "10.0.0.1:7".parse().ok());
        assert_eq!(peer_addr("127.0.0.1:2380"), None);
        assert_eq!(peer_addr("http://example.com:2380"), None);
    }
}
