//! A lean ZooKeeper client for the `zk_bench` load generator: one session per TCP
//! connection, requests from many tasks pipelined on it, and only the operations the
//! load needs (create, setData, getData; ping and closeSession around them).
//!
//! Why not the `zookeeper-client` crate here: the load generator shares the machine's
//! two cores with the server it measures, so what it spends per request is taken from
//! the server and counts the same against either server. Here the requests queued
//! while the connection's writer was busy leave in one TCP write, and the replies that
//! arrived together are read in one. Every reply is still checked: its xid against the
//! request's (replies come in request order), its error code, and what the caller
//! asks of the body (a getData's data length), so a refused or wrong answer counts as an
//! error, never as an operation.
//!
//! The ZooKeeper records (jute: big-endian integers, length-prefixed strings and
//! buffers) are written and read by hand here, independently of Concord's own codec,
//! and unit-tested against bytes of the wire format.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

const OP_CREATE: i32 = 1;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_PING: i32 = 11;
const OP_CLOSE: i32 = -11;
const PING_XID: i32 = -2;
/// The length of a Stat record on the wire.
const STAT_LEN: usize = 68;
/// Largest reply frame accepted (ZooKeeper's default jute.maxbuffer).
const MAX_FRAME: usize = 1024 * 1024;
/// Bounds the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A reply: its error code (0: ok) and body.
#[derive(Debug)]
struct Reply {
    err: i32,
    body: BytesMut,
}

/// A request on its way to the writer: the opcode and the body after the header.
#[derive(Debug)]
struct Outgoing {
    op: i32,
    body: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// The requests written and not yet answered, in order, and whether the connection
/// is gone (then new requests are dropped, which fails them, instead of waiting).
#[derive(Default)]
struct InFlightState {
    waiting: VecDeque<(i32, oneshot::Sender<Reply>)>,
    closed: bool,
}

type InFlight = Arc<Mutex<InFlightState>>;

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, InFlightState> {
    in_flight.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One ZooKeeper session; clones share it and may each have requests in flight.
#[derive(Clone, Debug)]
pub struct ZkLoadSession {
    requests: mpsc::UnboundedSender<Outgoing>,
    session_id: i64,
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
    out.put_slice(bytes);
}

/// ConnectRequest for a new session: protocol 0, no zxid seen, `timeout_ms`, session
/// 0, a zeroed 16-byte password, not read-only.
fn connect_request(timeout_ms: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(48);
    body.put_i32(0);
    body.put_i64(0);
    body.put_i32(timeout_ms);
    body.put_i64(0);
    put_string(&mut body, &[0; 16]);
    body.put_u8(0);
    framed(&body)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + body.len());
    put_string(&mut frame, body);
    frame
}

/// create(path, data, world:anyone ALL, persistent).
fn create_body(path: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(path.len() + data.len() + 40);
    put_string(&mut body, path.as_bytes());
    put_string(&mut body, data);
    body.put_i32(1);
    body.put_i32(31);
    put_string(&mut body, b"world");
    put_string(&mut body, b"anyone");
    body.put_i32(0);
    body
}

/// setData(path, data, any version).
fn set_data_body(path: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(path.len() + data.len() + 12);
    put_string(&mut body, path.as_bytes());
    put_string(&mut body, data);
    body.put_i32(-1);
    body
}

/// getData(path, no watch).
fn get_data_body(path: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(path.len() + 5);
    put_string(&mut body, path.as_bytes());
    body.put_u8(0);
    body
}

/// Splits the first whole frame off `buffer`, if there is one.
fn next_frame(buffer: &mut BytesMut) -> Result<Option<BytesMut>> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    let len = usize::try_from(len).context("negative frame length")?;
    ensure!(len <= MAX_FRAME, "reply frame of {len} bytes");
    if buffer.len() < 4 + len {
        return Ok(None);
    }
    buffer.advance(4);
    Ok(Some(buffer.split_to(len)))
}

/// Reads a length-prefixed buffer (-1: null, read as empty).
fn take_buffer(body: &mut BytesMut) -> Result<BytesMut> {
    ensure!(body.len() >= 4, "truncated buffer length");
    let len = body.get_i32();
    if len < 0 {
        return Ok(BytesMut::new());
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    ensure!(body.len() >= len, "truncated buffer");
    Ok(body.split_to(len))
}

/// Splits a reply frame into its header's xid and the reply.
fn parse_reply(mut frame: BytesMut) -> Result<(i32, Reply)> {
    ensure!(frame.len() >= 16, "reply shorter than its header");
    let xid = frame.get_i32();
    let _zxid = frame.get_i64();
    let err = frame.get_i32();
    Ok((xid, Reply { err, body: frame }))
}

impl ZkLoadSession {
    /// Opens a session on `endpoint` (`HOST:PORT`) asking for `timeout`.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self> {
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint))
            .await
            .with_context(|| format!("connecting to {endpoint} timed out"))?
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let mut response = tokio::time::timeout(CONNECT_TIMEOUT, async {
            tcp.write_all(&connect_request(timeout_ms)).await?;
            loop {
                if let Some(frame) = next_frame(&mut buffer)? {
                    return anyhow::Ok(frame);
                }
                if tcp.read_buf(&mut buffer).await? == 0 {
                    bail!("{endpoint} closed the connection during the handshake");
                }
            }
        })
        .await
        .with_context(|| format!("no session from {endpoint} in time"))??;
        ensure!(response.len() >= 16, "short ConnectResponse");
        let _protocol = response.get_i32();
        let negotiated = response.get_i32();
        let session_id = response.get_i64();
        ensure!(
            negotiated > 0 && session_id != 0,
            "{endpoint} refused the session"
        );
        let (reader, writer) = tcp.into_split();
        let in_flight = InFlight::default();
        let (requests, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_requests(writer, queued, in_flight.clone()));
        tokio::spawn(read_replies(reader, buffer, in_flight));
        Ok(ZkLoadSession {
            requests,
            session_id,
        })
    }

    /// The session's id, as the server gave it.
    pub fn session_id(&self) -> i64 {
        self.session_id
    }

    async fn call(&self, op: i32, body: Vec<u8>) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Outgoing { op, body, reply })
            .map_err(|_| anyhow::anyhow!("the session's connection is closed"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the connection closed before the reply"))
    }

    async fn call_ok(&self, op: i32, body: Vec<u8>) -> Result<BytesMut> {
        let reply = self.call(op, body).await?;
        ensure!(reply.err == 0, "ZooKeeper error {}", reply.err);
        Ok(reply.body)
    }

    /// Creates a persistent node open to anyone; `Ok(false)` if it already existed.
    pub async fn create(&self, path: &str, data: &[u8]) -> Result<bool> {
        let reply = self.call(OP_CREATE, create_body(path, data)).await?;
        match reply.err {
            0 => {
                let mut body = reply.body;
                let created = take_buffer(&mut body)?;
                ensure!(created.as_ref() == path.as_bytes(), "created {created:?}");
                Ok(true)
            }
            -110 => Ok(false),
            err => bail!("create {path}: ZooKeeper error {err}"),
        }
    }

    /// Overwrites `path`'s data (any version); checks the Stat's data length.
    pub async fn set_data(&self, path: &str, data: &[u8]) -> Result<()> {
        let body = self.call_ok(OP_SET_DATA, set_data_body(path, data)).await?;
        ensure!(
            body.len() == STAT_LEN,
            "setData reply of {} bytes",
            body.len()
        );
        let data_length = i32::from_be_bytes([body[52], body[53], body[54], body[55]]);
        ensure!(
            usize::try_from(data_length).ok() == Some(data.len()),
            "setData {path}: Stat says {data_length} bytes"
        );
        Ok(())
    }

    /// Reads `path`'s data (with its Stat).
    pub async fn get_data(&self, path: &str) -> Result<BytesMut> {
        let mut body = self.call_ok(OP_GET_DATA, get_data_body(path)).await?;
        let data = take_buffer(&mut body)?;
        ensure!(
            body.len() == STAT_LEN,
            "getData reply's Stat of {} bytes",
            body.len()
        );
        Ok(data)
    }

    /// Pings the server.
    pub async fn ping(&self) -> Result<()> {
        self.call_ok(OP_PING, Vec::new()).await.map(drop)
    }

    /// Ends the session; the connection closes after the reply.
    pub async fn close(&self) -> Result<()> {
        self.call_ok(OP_CLOSE, Vec::new()).await.map(drop)
    }
}

/// Writes the requests queued, all that are waiting in one write, numbering them.
async fn write_requests(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    in_flight: InFlight,
) {
    let mut next_xid = 1i32;
    let mut batch = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(64 * 1024);
    while queued.recv_many(&mut batch, 256).await > 0 {
        out.clear();
        {
            let mut state = lock(&in_flight);
            if state.closed {
                break;
            }
            for request in batch.drain(..) {
                let xid = if request.op == OP_PING {
                    PING_XID
                } else {
                    next_xid = next_xid.wrapping_add(1).max(1);
                    next_xid
                };
                let len = i32::try_from(8 + request.body.len()).unwrap_or(i32::MAX);
                out.put_i32(len);
                out.put_i32(xid);
                out.put_i32(request.op);
                out.put_slice(&request.body);
                state.waiting.push_back((xid, request.reply));
            }
        }
        if writer.write_all(&out).await.is_err() {
            break;
        }
    }
    close(&in_flight);
}

/// Fails every request in flight and every later one (their senders are dropped).
fn close(in_flight: &InFlight) {
    let mut state = lock(in_flight);
    state.closed = true;
    state.waiting.clear();
}

/// Reads replies and hands each to the oldest request in flight, after checking that
/// their xids agree; stops (failing every request in flight) at the first surprise.
async fn read_replies(mut reader: OwnedReadHalf, mut buffer: BytesMut, in_flight: InFlight) {
    let outcome: Result<()> = async {
        loop {
            while let Some(frame) = next_frame(&mut buffer)? {
                let (xid, reply) = parse_reply(frame)?;
                if xid == -1 {
                    // A watch notification: the load sets no watches.
                    continue;
                }
                let waiting = lock(&in_flight).waiting.pop_front();
                let Some((expected, sender)) = waiting else {
                    bail!("a reply (xid {xid}) to no request");
                };
                ensure!(xid == expected, "reply xid {xid}, expected {expected}");
                let _ = sender.send(reply);
            }
            if buffer.capacity() - buffer.len() < 16 * 1024 {
                buffer.reserve(64 * 1024);
            }
            if reader.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = outcome {
        eprintln!("zk_load: session connection failed: {e:#}");
    }
    close(&in_flight);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_jute_records() {
        assert_eq!(
            get_data_body("/a"),
            [0, 0, 0, 2, b'/', b'a', 0].to_vec(),
            "path string, watch false"
        );
        assert_eq!(
            set_data_body("/a", b"xy"),
            [
                0, 0, 0, 2, b'/', b'a', 0, 0, 0, 2, b'x', b'y', 255, 255, 255, 255
            ]
            .to_vec()
        );
        let create = create_body("/a", b"");
        let mut expected = vec![0, 0, 0, 2, b'/', b'a', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 31];
        expected.extend([0, 0, 0, 5]);
        expected.extend(b"world");
        expected.extend([0, 0, 0, 6]);
        expected.extend(b"anyone");
        expected.extend([0, 0, 0, 0]);
        assert_eq!(create, expected);
        let connect = connect_request(30_000);
        assert_eq!(connect.len(), 4 + 4 + 8 + 4 + 8 + 4 + 16 + 1);
        assert_eq!(&connect[..4], &[0, 0, 0, 45]);
        assert_eq!(&connect[16..20], &30_000i32.to_be_bytes());
    }

    #[test]
    fn replies_are_split_into_frames_and_headers() {
        let mut wire = BytesMut::new();
        // getData reply, xid 7, zxid 9, ok, data "hi", a zeroed Stat.
        let mut body = Vec::new();
        body.put_i32(7);
        body.put_i64(9);
        body.put_i32(0);
        put_string(&mut body, b"hi");
        body.extend([0; STAT_LEN]);
        wire.extend_from_slice(&framed(&body));
        // The next frame, cut short.
        wire.extend_from_slice(&[0, 0, 0, 16, 0, 0]);
        let frame = next_frame(&mut wire).unwrap().unwrap();
        let (xid, mut reply) = parse_reply(frame).unwrap();
        assert_eq!((xid, reply.err), (7, 0));
        assert_eq!(take_buffer(&mut reply.body).unwrap().as_ref(), b"hi");
        assert_eq!(reply.body.len(), STAT_LEN);
        assert!(
            next_frame(&mut wire).unwrap().is_none(),
            "half a frame waits"
        );
        let mut oversize = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(next_frame(&mut oversize).is_err());
    }
}
