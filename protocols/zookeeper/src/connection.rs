//! One client connection. The handshake answers a four-letter word, or starts, resumes
//! or refuses a session (sessions are kernel leases; the password is derived from the
//! session id and the cluster id). Then a reader task decodes requests and turns them
//! into jobs in arrival order: writes are checked and queued in the kernel at once (so
//! a session's writes pipeline and apply in order), reads wait for the writes before
//! them, and a write after a read waits for that read. The responder answers the jobs
//! in order, putting due watch notifications before each reply.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use concord_kernel::Kernel;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::server::TlsStream;

use crate::acl::{self, Identity};
use crate::codes::ErrorCode;
use crate::frame::{FrameBuffer, FrameSplitter, four_letter_word};
use crate::message::{Request, Response, decode_connect_request, decode_header, decode_request};
use crate::ops::{self, PendingWrite, Planned, ReadContext, Reply, SessionView, WriteShape};
use crate::records::{ConnectRequest, ConnectResponse, ReplyHeader, WatcherEvent};
use crate::server::{ConnectionInfo, Shared};
use crate::watches::ConnectionWatches;

/// Jobs queued between the reader and the responder, at most (then the reader waits,
/// which stops reading from the socket: backpressure).
const MAX_QUEUED_JOBS: usize = 1024;
/// How long a new connection may take to send its connect request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD_LEN: usize = 16;
/// Per-connection buffers stay small so that idle connections cost little; a larger
/// frame is assembled across reads.
const READ_CHUNK: usize = 4096;
const WRITE_BUFFER: usize = 4096;

/// The password of session `id`: any member can check it without shared state.
fn session_password(cluster_id: u64, id: i64) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"concord zookeeper session");
    hasher.update(cluster_id.to_be_bytes());
    hasher.update(id.to_be_bytes());
    hasher.finalize()[..PASSWORD_LEN].to_vec()
}

/// Whole seconds of lease TTL for a session timeout in ms.
fn lease_ttl(timeout_ms: i32) -> i64 {
    (i64::from(timeout_ms.max(1)) + 999) / 1000
}

/// A client connection's byte stream (plain TCP, or TLS on the secure port), split into
/// a reader and a writer for the connection's two tasks.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Reader: RequestReader;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// The read half of a connection, which can have TCP acknowledge what it read at once.
///
/// A client that leaves Nagle's algorithm on (the `zookeeper-client` crate, kazoo) holds
/// its next small requests back until its last segment is acknowledged, and Linux delays
/// that ACK to carry it on the reply, which for a write comes a Raft round later. So
/// when what it read waits for a write, the reader asks for a quick ACK (`TCP_QUICKACK`
/// is not sticky, so each time).
pub trait RequestReader: AsyncRead + Unpin + Send + 'static {
    fn acknowledge_now(&self);
}

#[cfg(target_os = "linux")]
fn quick_ack(socket: socket2::SockRef<'_>) {
    if let Err(e) = socket.set_tcp_quickack(true) {
        tracing::trace!(error = %e, "TCP_QUICKACK refused");
    }
}

/// Elsewhere ACKs follow the system's own policy.
#[cfg(not(target_os = "linux"))]
fn quick_ack(_socket: socket2::SockRef<'_>) {}

/// Plain TCP splits into owned halves, without a lock between them.
impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl RequestReader for OwnedReadHalf {
    fn acknowledge_now(&self) {
        quick_ack(socket2::SockRef::from(self.as_ref()));
    }
}

/// A TLS session is one state machine for both directions: tokio's split shares it, so
/// the read half keeps a duplicate of the socket's descriptor for its ACKs.
impl Transport for TlsStream<TcpStream> {
    type Reader = TlsReader;
    type Writer = tokio::io::WriteHalf<Self>;
    fn split(self) -> (TlsReader, Self::Writer) {
        let socket = self
            .get_ref()
            .0
            .as_fd()
            .try_clone_to_owned()
            .map(socket2::Socket::from)
            .ok();
        let (half, writer) = tokio::io::split(self);
        (TlsReader { half, socket }, writer)
    }
}

/// The read half of a TLS connection, with its own handle on the socket for ACKs.
pub struct TlsReader {
    half: tokio::io::ReadHalf<TlsStream<TcpStream>>,
    /// `None` if the descriptor could not be duplicated: then ACKs stay delayed.
    socket: Option<socket2::Socket>,
}

impl AsyncRead for TlsReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.half).poll_read(cx, buf)
    }
}

impl RequestReader for TlsReader {
    fn acknowledge_now(&self) {
        if let Some(socket) = &self.socket {
            quick_ack(socket2::SockRef::from(socket));
        }
    }
}

/// One unit of work for the responder, in request order.
enum Job {
    Reply(Reply),
    Ping {
        xid: i32,
    },
    Write {
        xid: i32,
        shape: WriteShape,
        op_count: usize,
        pending: PendingWrite,
        received: Instant,
    },
    Read {
        xid: i32,
        request: Request,
        done: oneshot::Sender<()>,
        received: Instant,
    },
    CloseSession {
        xid: i32,
    },
    /// Send what is queued, then close (after an error ZooKeeper closes on).
    Close,
}

/// Serves one accepted connection (past its TLS handshake, if any) until it closes.
pub async fn serve<S: Transport>(shared: Arc<Shared>, mut stream: S, peer: SocketAddr) {
    let mut first = Vec::with_capacity(64);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while first.len() < 4 {
            if stream.read_buf(&mut first).await? == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
        }
        Ok(true)
    })
    .await;
    if !matches!(handshake, Ok(Ok(true))) {
        return;
    }
    if let Some(word) = four_letter_word(&first) {
        let answer = crate::four_letter::answer(&shared, word, peer).await;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let mut frames = FrameBuffer::new(FrameSplitter::new(shared.options.max_frame_bytes));
    frames.extend(&first);
    let request = match read_connect(&mut stream, &mut frames).await {
        Ok(r) => r,
        Err(why) => {
            tracing::info!(%peer, why, "zookeeper connection closed during handshake");
            return;
        }
    };
    let (connection_id, info) = shared.add_connection(peer);
    let session_id = match establish(&shared, &mut stream, &request, &info).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            shared.remove_connection(connection_id, 0);
            return;
        }
        Err(why) => {
            tracing::info!(%peer, why, "zookeeper session refused");
            shared.remove_connection(connection_id, 0);
            return;
        }
    };
    shared.bind_session(connection_id, session_id);
    run_session(
        &shared,
        stream,
        frames,
        connection_id,
        &info,
        session_id,
        peer,
    )
    .await;
    shared.remove_connection(connection_id, session_id);
}

async fn read_connect(
    stream: &mut (impl AsyncRead + Unpin),
    frames: &mut FrameBuffer,
) -> Result<ConnectRequest, String> {
    let body = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some(body) = frames.next_frame().map_err(|e| e.to_string())? {
                return Ok(body);
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err("closed".to_string()),
                Ok(n) => frames.extend(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no connect request in time".to_string())??;
    decode_connect_request(&body).map_err(|e| format!("malformed connect request: {e}"))
}

/// Starts or resumes the session the connect request asks for and answers it.
/// `Ok(None)`: the session had expired (answered so; the connection closes).
async fn establish(
    shared: &Shared,
    stream: &mut (impl AsyncWrite + Unpin),
    request: &ConnectRequest,
    info: &ConnectionInfo,
) -> Result<Option<i64>, String> {
    let kernel = &shared.kernel;
    let revision = kernel.revision().map_err(|e| e.to_string())?;
    if request.last_zxid_seen > revision {
        return Err(format!(
            "client has seen zxid {:#x}, ours is only {revision:#x}",
            request.last_zxid_seen
        ));
    }
    let options = &shared.options;
    let timeout = request.time_out.clamp(
        i32::try_from(options.min_session_timeout_ms).unwrap_or(i32::MAX),
        i32::try_from(options.max_session_timeout_ms).unwrap_or(i32::MAX),
    );
    let cluster = kernel.cluster_id();
    let session_id = if request.session_id == 0 {
        let granted = kernel
            .lease_grant(0, lease_ttl(timeout))
            .await
            .map_err(|e| format!("cannot start a session: {e}"))?;
        granted.id
    } else {
        let known = request.passwd == session_password(cluster, request.session_id)
            && match kernel.lease_keep_alive(request.session_id).await {
                Ok(renewed) => renewed.ttl > 0,
                // During an election nobody can tell whether the session lives: close
                // without an answer, so the client tries again (as ZooKeeper makes it
                // do while there is no quorum) instead of hearing "expired".
                Err(e) if e.is_retryable() => {
                    return Err(format!("cannot resume session now: {e}"));
                }
                Err(_) => false,
            };
        if !known {
            tracing::info!(
                session = %format!("{:#x}", request.session_id),
                "session expired or unknown: answering expired"
            );
            let expired = ConnectResponse {
                protocol_version: 0,
                time_out: 0,
                session_id: 0,
                passwd: vec![0; PASSWORD_LEN],
                read_only: None,
            }
            .answering(request, false);
            let _ = stream
                .write_all(&crate::message::encode_connect_response(&expired))
                .await;
            return Ok(None);
        }
        request.session_id
    };
    shared.ensure_system_nodes().await;
    let response = ConnectResponse {
        protocol_version: 0,
        time_out: timeout,
        session_id,
        passwd: session_password(cluster, session_id),
        read_only: None,
    }
    .answering(request, false);
    stream
        .write_all(&crate::message::encode_connect_response(&response))
        .await
        .map_err(|e| e.to_string())?;
    info.session_id.store(session_id as u64, Ordering::Relaxed);
    info.timeout_ms
        .store(u64::try_from(timeout).unwrap_or(0), Ordering::Relaxed);
    Ok(Some(session_id))
}

/// The session as both tasks of a connection see it.
struct SessionState {
    id: i64,
    timeout: Duration,
    /// Replaced whole when an auth adds one, so each request takes a cheap copy.
    identities: RwLock<Arc<Vec<Identity>>>,
    extended_types: bool,
}

impl SessionState {
    fn view(&self) -> SessionView {
        SessionView {
            id: self.id,
            identities: self
                .identities
                .read()
                .map(|ids| ids.clone())
                .unwrap_or_default(),
            extended_types: self.extended_types,
        }
    }
}

async fn run_session<S: Transport>(
    shared: &Arc<Shared>,
    stream: S,
    frames: FrameBuffer,
    connection_id: u64,
    info: &Arc<ConnectionInfo>,
    session_id: i64,
    peer: SocketAddr,
) {
    let timeout_ms = info.timeout_ms.load(Ordering::Relaxed);
    let session = Arc::new(SessionState {
        id: session_id,
        timeout: Duration::from_millis(timeout_ms.max(1)),
        identities: RwLock::new(Arc::new(vec![Identity {
            scheme: "ip".into(),
            id: peer.ip().to_string(),
        }])),
        extended_types: shared.options.extended_types,
    });
    let (reader, writer) = stream.split();
    let (jobs_tx, jobs) = mpsc::channel(MAX_QUEUED_JOBS);
    let reader_task = tokio::spawn(read_requests(
        shared.clone(),
        session.clone(),
        info.clone(),
        reader,
        frames,
        jobs_tx,
    ));
    let (notify_tx, notify_rx) = mpsc::unbounded_channel();
    let watches = Arc::new(ConnectionWatches::new(notify_tx));
    let mut responder = Responder {
        shared: shared.clone(),
        session,
        info: info.clone(),
        connection_id,
        watches,
        registered: false,
        notifications: notify_rx,
        out: BufWriter::with_capacity(WRITE_BUFFER, writer),
    };
    responder.run(jobs).await;
    reader_task.abort();
}

/// Keeps the session's lease alive at most every third of its timeout while the client
/// is active; closes the connection if the lease turns out to be gone.
struct Toucher {
    last: Instant,
}

impl Toucher {
    fn touch(&mut self, kernel: &Kernel, session: &SessionState, info: &Arc<ConnectionInfo>) {
        if self.last.elapsed() < session.timeout / 3 {
            return;
        }
        self.last = Instant::now();
        let kernel = kernel.clone();
        let id = session.id;
        let info = info.clone();
        tokio::spawn(async move {
            if let Ok(r) = kernel.lease_keep_alive(id).await
                && r.ttl == 0
            {
                tracing::info!(session = %format!("{id:#x}"), "zookeeper session expired");
                info.close.notify_one();
            }
        });
    }
}

/// Whether bytes just read need an ACK now rather than on their replies: a write is
/// waiting for its reply (what was read is a write or queued behind one), or part of a
/// request is still to come.
fn needs_quick_ack(writes_unanswered: usize, partial_request: &[u8]) -> bool {
    writes_unanswered > 0 || !partial_request.is_empty()
}

async fn read_requests(
    shared: Arc<Shared>,
    session: Arc<SessionState>,
    info: Arc<ConnectionInfo>,
    mut reader: impl RequestReader,
    mut frames: FrameBuffer,
    jobs: mpsc::Sender<Job>,
) {
    let kernel = &shared.kernel;
    let mut toucher = Toucher {
        last: Instant::now(),
    };
    // Done when the last read before now has been answered.
    let mut read_barrier: Option<oneshot::Receiver<()>> = None;
    // Bytes were read and not acknowledged yet.
    let mut ack_owed = false;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let body = match frames.next_frame() {
            Ok(Some(body)) => body,
            Ok(None) => {
                // Every whole request read has been handed on. Their replies carry the
                // ACK unless one waits for a write (a write, or a read behind one), or
                // the client has more of a request to send: then acknowledge now.
                let writes = info.writes_unanswered.load(Ordering::Acquire);
                if std::mem::take(&mut ack_owed) && needs_quick_ack(writes, frames.buffered()) {
                    reader.acknowledge_now();
                }
                match tokio::time::timeout(session.timeout, reader.read(&mut chunk)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        ack_owed = true;
                        frames.extend(&chunk[..n]);
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %info.peer, error = %e, "zookeeper read failed");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(peer = %info.peer, "zookeeper client silent past its session timeout; closing");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(peer = %info.peer, error = %e, "zookeeper frame refused; closing the connection");
                break;
            }
        };
        let received = Instant::now();
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        info.received.fetch_add(1, Ordering::Relaxed);
        toucher.touch(kernel, &session, &info);
        let current = || kernel.revision().unwrap_or_default();
        let (header, request) = match decode_request(&body) {
            Ok(decoded) => decoded,
            Err(e) => match decode_header(&body) {
                // A body that does not decode under a readable header: MARSHALLINGERROR,
                // and the session goes on, as ZooKeeper does.
                Ok(header) => {
                    tracing::info!(peer = %info.peer, error = %e, "undecodable zookeeper request");
                    let reply = Reply::error(header.xid, current(), ErrorCode::MarshallingError);
                    if jobs.send(Job::Reply(reply)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    tracing::warn!(peer = %info.peer, error = %e, "malformed zookeeper request header; closing the connection");
                    break;
                }
            },
        };
        let job = match request {
            Request::Ping => Job::Ping { xid: header.xid },
            Request::Auth(packet) => {
                let granted =
                    acl::authenticate(&packet.scheme, packet.auth.as_deref().unwrap_or_default());
                let Some(identity) = granted else {
                    let failed = Reply::error(header.xid, 0, ErrorCode::AuthFailed);
                    let _ = jobs.send(Job::Reply(failed)).await;
                    let _ = jobs.send(Job::Close).await;
                    break;
                };
                if let Ok(mut ids) = session.identities.write()
                    && !ids.contains(&identity)
                {
                    Arc::make_mut(&mut ids).push(identity);
                }
                // ZooKeeper answers auth with the request's xid (-4 from the Java client
                // and kazoo, an ordinary xid from others) and zxid 0.
                Job::Reply(Reply::ok(header.xid, 0, Response::Empty))
            }
            Request::CloseSession => {
                if let Some(barrier) = read_barrier.take() {
                    let _ = barrier.await;
                }
                let _ = jobs.send(Job::CloseSession { xid: header.xid }).await;
                break;
            }
            Request::Unknown(op) => {
                tracing::info!(peer = %info.peer, op, "unknown zookeeper opcode; closing the connection");
                let reply = Reply::error(header.xid, -1, ErrorCode::Unimplemented);
                let _ = jobs.send(Job::Reply(reply)).await;
                let _ = jobs.send(Job::Close).await;
                break;
            }
            request => match ops::plan_write(kernel, &session.view(), &request) {
                Some(planned) => {
                    if let Some(barrier) = read_barrier.take() {
                        let _ = barrier.await;
                    }
                    match planned {
                        Planned::Write(tree_ops, shape) => match ops::submit(kernel, tree_ops) {
                            Ok(pending) => {
                                info.writes_unanswered.fetch_add(1, Ordering::AcqRel);
                                Job::Write {
                                    xid: header.xid,
                                    shape,
                                    op_count: ops::op_count(&request),
                                    pending,
                                    received,
                                }
                            }
                            Err(e) => Job::Reply(Reply::error(header.xid, current(), e)),
                        },
                        Planned::Failed(e) => Job::Reply(Reply::error(header.xid, current(), e)),
                        Planned::MultiFailed(index, e, len) => Job::Reply(Reply::ok(
                            header.xid,
                            current(),
                            ops::failed_multi(index, e, len),
                        )),
                    }
                }
                None => {
                    let (done, barrier) = oneshot::channel();
                    read_barrier = Some(barrier);
                    Job::Read {
                        xid: header.xid,
                        request,
                        done,
                        received,
                    }
                }
            },
        };
        if jobs.send(job).await.is_err() {
            break;
        }
    }
}

/// Awaits `work`; if it cannot finish at once, first flushes the replies already in
/// `out`, so that they do not wait for it (the replies of one Raft round would otherwise
/// sit in the buffer until a later round answers the job behind them).
async fn flushed_before_waiting<W: AsyncWrite + Unpin, T>(
    out: &mut BufWriter<W>,
    work: impl Future<Output = T>,
) -> T {
    let mut work = pin!(work);
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first_poll {
        return done;
    }
    if !out.buffer().is_empty() {
        // A failed flush fails the next write too, which ends the connection.
        let _ = out.flush().await;
    }
    work.await
}

struct Responder<W> {
    shared: Arc<Shared>,
    session: Arc<SessionState>,
    info: Arc<ConnectionInfo>,
    connection_id: u64,
    watches: Arc<ConnectionWatches>,
    /// Whether the dispatcher delivers to this connection (from its first watch on).
    registered: bool,
    notifications: mpsc::UnboundedReceiver<WatcherEvent>,
    out: BufWriter<W>,
}

/// Whether a read may leave a watch behind.
fn sets_watch(request: &Request) -> bool {
    match request {
        Request::Exists(r)
        | Request::GetData(r)
        | Request::GetChildren(r)
        | Request::GetChildren2(r) => r.watch,
        Request::SetWatches(_) | Request::SetWatches2(_) | Request::AddWatch(_) => true,
        _ => false,
    }
}

impl<W: AsyncWrite + Unpin> Responder<W> {
    async fn run(&mut self, mut jobs: mpsc::Receiver<Job>) {
        loop {
            let keep_going = tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => self.handle(job).await,
                    None => false,
                },
                Some(event) = self.notifications.recv() => self.notify(&event).await,
                _ = self.info.close.notified() => false,
            };
            if !keep_going {
                break;
            }
            if jobs.is_empty() {
                // Let the reader queue what the client sent meanwhile, so that its
                // replies leave in this write rather than each in one of their own.
                tokio::task::yield_now().await;
                if jobs.is_empty() && self.out.flush().await.is_err() {
                    break;
                }
            }
        }
        let _ = self.out.flush().await;
        let _ = self.out.shutdown().await;
    }

    async fn write_frame(&mut self, frame: &[u8]) -> bool {
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.info.sent.fetch_add(1, Ordering::Relaxed);
        self.out.write_all(frame).await.is_ok()
    }

    async fn notify(&mut self, event: &WatcherEvent) -> bool {
        self.write_frame(&crate::message::encode_notification(event))
            .await
    }

    /// Sends `reply` after every notification due up to its zxid.
    async fn send(&mut self, reply: Reply) -> bool {
        if self.registered {
            let synced = self.shared.dispatcher.synced_to(reply.zxid);
            flushed_before_waiting(&mut self.out, synced).await;
        }
        while let Ok(event) = self.notifications.try_recv() {
            if !self.notify(&event).await {
                return false;
            }
        }
        let header = ReplyHeader {
            xid: reply.xid,
            zxid: reply.zxid,
            err: reply.err,
        };
        let frame = crate::message::encode_reply(&header, &reply.body);
        self.write_frame(&frame).await
    }

    fn current(&self) -> i64 {
        self.shared.kernel.revision().unwrap_or_default()
    }

    async fn handle(&mut self, job: Job) -> bool {
        match job {
            Job::Reply(reply) => self.send(reply).await,
            Job::Ping { xid } => {
                let zxid = self.current();
                self.send(Reply::ok(xid, zxid, Response::Empty)).await
            }
            Job::Close => false,
            Job::CloseSession { xid } => {
                let zxid = match self.shared.kernel.lease_revoke(self.session.id).await {
                    Ok(header) => header.revision,
                    Err(_) => self.current(),
                };
                self.send(Reply::ok(xid, zxid, Response::Empty)).await;
                false
            }
            Job::Write {
                xid,
                shape,
                op_count,
                pending,
                received,
            } => {
                let outcome = flushed_before_waiting(&mut self.out, pending).await;
                let reply = ops::write_reply(xid, shape, op_count, outcome, self.current());
                self.shared.counters.record_latency(received.elapsed());
                let sent = self.send(reply).await;
                self.info.writes_unanswered.fetch_sub(1, Ordering::AcqRel);
                sent
            }
            Job::Read {
                xid,
                request,
                done,
                received,
            } => {
                // Registered before the read, so no change after it can slip past a
                // watch it sets.
                if !self.registered && sets_watch(&request) {
                    self.shared
                        .dispatcher
                        .register(self.connection_id, self.watches.clone());
                    self.registered = true;
                }
                let session = self.session.view();
                let ctx = ReadContext::new(&self.shared.kernel, &session, &self.watches);
                let outcome = flushed_before_waiting(&mut self.out, ctx.run(&request)).await;
                let _ = done.send(());
                let zxid = ctx.observed().unwrap_or_else(|| self.current());
                let reply = match outcome {
                    Ok(body) => Reply::ok(xid, zxid, body),
                    Err(e) => Reply::error(xid, zxid, e),
                };
                self.shared.counters.record_latency(received.elapsed());
                self.send(reply).await
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn reads_answered_at_once_carry_their_ack_on_the_reply() {
        assert!(!needs_quick_ack(0, &[]));
        assert!(needs_quick_ack(1, &[]), "a write waits a Raft round");
        assert!(needs_quick_ack(0, &[0, 0]), "the client has more to send");
    }

    /// `acknowledge_now` puts the socket back in quick-ACK mode, even when TCP had switched
    /// to delayed ACKs (as it does once a connection looks like request and reply).
    #[tokio::test]
    async fn the_reader_asks_for_an_immediate_ack() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (accepted, _client) =
            tokio::try_join!(listener.accept(), TcpStream::connect(address)).unwrap();
        let (reader, _writer) = Transport::split(accepted.0);
        let socket = socket2::SockRef::from(reader.as_ref());
        socket.set_tcp_quickack(false).unwrap();
        assert!(!socket.tcp_quickack().unwrap());
        reader.acknowledge_now();
        assert!(socket.tcp_quickack().unwrap());
    }
}
