//! Bad input on the ZooKeeper port, over raw TCP (frames built by hand in jute): an
//! oversize frame, garbage, truncated frames, an unknown opcode, a body that does not
//! decode. Each scenario runs on real ZooKeeper 3.8 (checking that the expectations are
//! ZooKeeper's behaviour) and on Concord, and checks that a session connected before
//! the bad input keeps working and the server keeps running.
//!
//! What real ZooKeeper 3.8 does, and these tests expect:
//! * a length prefix over jute.maxbuffer (1 MiB), negative, or too short for a request
//!   header: the connection is closed without a reply, before or after the handshake;
//! * an unknown opcode (999, or 0): a reply header with the request's xid, zxid −1 and
//!   error −6 (UNIMPLEMENTED), then the connection is closed;
//! * a request body that does not decode: a reply with error −5 (MARSHALLINGERROR) and
//!   the session goes on;
//! * a truncated frame: no reply and the connection stays open, waiting for the rest;
//!   the server closes it when the client shuts its side.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::zookeeper::{ZkServer, on_each_zk_backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a test waits for a reply or for the server to close a connection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test listens to check that nothing comes.
const SILENCE: Duration = Duration::from_secs(1);

const OP_EXISTS: i32 = 3;
const OP_GET_DATA: i32 = 4;
const UNIMPLEMENTED: i32 = -6;
const MARSHALLING_ERROR: i32 = -5;
const NO_NODE: i32 = -101;

fn jute_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The ConnectRequest: protocolVersion 0, lastZxidSeen 0, timeout, sessionId 0, a
/// 16-byte zero password, readOnly false.
fn connect_request(timeout_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&timeout_ms.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0u8; 16]);
    body.push(0);
    frame(&body)
}

fn request(xid: i32, op: i32, payload: &[u8]) -> Vec<u8> {
    let mut body = xid.to_be_bytes().to_vec();
    body.extend_from_slice(&op.to_be_bytes());
    body.extend_from_slice(payload);
    frame(&body)
}

/// exists(path, watch=false).
fn exists(xid: i32, path: &str) -> Vec<u8> {
    let mut payload = jute_string(path);
    payload.push(0);
    request(xid, OP_EXISTS, &payload)
}

async fn tcp(server: &ZkServer) -> Result<TcpStream> {
    let endpoint = server.zk_endpoint();
    tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(&endpoint))
        .await
        .with_context(|| format!("connect to {endpoint} timed out"))?
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// One frame's body, or `None` if the server closed the connection first.
async fn read_frame(stream: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    tokio::time::timeout(REPLY_TIMEOUT, async {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_be_bytes(len);
        ensure!(
            (0..=16 << 20).contains(&len),
            "the server sent a frame of length {len}"
        );
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok(Some(body))
    })
    .await
    .context("no frame and no close within the reply timeout")?
}

/// A new session: connects, handshakes and checks the ConnectResponse.
async fn session(server: &ZkServer) -> Result<TcpStream> {
    let mut stream = tcp(server).await?;
    stream.write_all(&connect_request(10_000)).await?;
    let body = read_frame(&mut stream)
        .await?
        .context("the server closed the connection instead of answering the handshake")?;
    ensure!(body.len() >= 36, "short ConnectResponse: {body:02x?}");
    let protocol = i32::from_be_bytes(body[0..4].try_into()?);
    let timeout = i32::from_be_bytes(body[4..8].try_into()?);
    let session_id = i64::from_be_bytes(body[8..16].try_into()?);
    let password_len = i32::from_be_bytes(body[16..20].try_into()?);
    ensure!(
        protocol == 0 && timeout > 0 && session_id != 0 && password_len == 16,
        "unexpected ConnectResponse: protocol {protocol}, timeout {timeout}, \
         session {session_id:#x}, password length {password_len}"
    );
    Ok(stream)
}

/// The reply header (xid, zxid, err) and the rest of the reply.
fn reply_header(body: &[u8]) -> Result<(i32, i64, i32, &[u8])> {
    ensure!(body.len() >= 16, "short reply: {body:02x?}");
    Ok((
        i32::from_be_bytes(body[0..4].try_into()?),
        i64::from_be_bytes(body[4..12].try_into()?),
        i32::from_be_bytes(body[12..16].try_into()?),
        &body[16..],
    ))
}

/// Sends exists("/") and checks the answer: the session works.
async fn check_works(stream: &mut TcpStream, xid: i32, what: &str) -> Result<()> {
    stream.write_all(&exists(xid, "/")).await?;
    let body = read_frame(stream)
        .await?
        .with_context(|| format!("{what}: the working session was closed"))?;
    let (got_xid, zxid, err, stat) = reply_header(&body)?;
    ensure!(
        got_xid == xid && err == 0 && zxid >= 0 && stat.len() == 68,
        "{what}: exists(\"/\") answered xid {got_xid} zxid {zxid} err {err} with {} bytes",
        stat.len()
    );
    Ok(())
}

/// Expects the server to close the connection without sending anything.
async fn expect_closed(stream: &mut TcpStream, what: &str) -> Result<()> {
    let mut buf = [0u8; 256];
    let outcome = tokio::time::timeout(REPLY_TIMEOUT, async {
        let mut received = Vec::new();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(received),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(received),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match outcome {
        Err(_) => bail!("{what}: the connection is still open after {REPLY_TIMEOUT:?}"),
        Ok(Err(e)) => bail!("{what}: read failed: {e}"),
        Ok(Ok(received)) if !received.is_empty() => {
            bail!("{what}: expected a close without a reply, got {received:02x?}")
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// Expects nothing to arrive within [`SILENCE`] and the connection to stay open.
async fn expect_silence(stream: &mut TcpStream, what: &str) -> Result<()> {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(SILENCE, stream.read(&mut buf)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => bail!("{what}: the server closed the connection"),
        Ok(Ok(n)) => bail!("{what}: unexpected bytes {:02x?}", &buf[..n]),
        Ok(Err(e)) => bail!("{what}: read failed: {e}"),
    }
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection() -> Result<()> {
    on_each_zk_backend(async |server: &ZkServer| {
        let mut good = session(server).await?;
        check_works(&mut good, 1, "before").await?;

        let mut bad = session(server).await?;
        let mut oversize = 0x0020_0000i32.to_be_bytes().to_vec();
        oversize.extend_from_slice(&[b'x'; 1024]);
        bad.write_all(&oversize).await?;
        expect_closed(&mut bad, "2 MiB frame after the handshake").await?;
        check_works(&mut good, 2, "after an oversize frame on another session").await?;

        let mut fresh = tcp(server).await?;
        fresh.write_all(&oversize).await?;
        expect_closed(&mut fresh, "2 MiB frame as the first frame").await?;
        check_works(&mut good, 3, "after an oversize first frame").await?;

        let mut negative = session(server).await?;
        negative.write_all(&(-5i32).to_be_bytes()).await?;
        expect_closed(&mut negative, "negative frame length").await?;
        check_works(&mut good, 4, "after a negative frame length").await
    })
    .await
}

#[tokio::test]
async fn garbage_closes_only_that_connection() -> Result<()> {
    on_each_zk_backend(async |server: &ZkServer| {
        let mut good = session(server).await?;

        let mut http = tcp(server).await?;
        http.write_all(b"GET / HTTP/1.1\r\nHost: zk\r\n\r\n")
            .await?;
        expect_closed(&mut http, "an HTTP request").await?;
        check_works(&mut good, 1, "after an HTTP request").await?;

        let mut bad = session(server).await?;
        bad.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0xff, 0xfe])
            .await?;
        expect_closed(&mut bad, "garbage after the handshake").await?;
        check_works(&mut good, 2, "after garbage on another session").await?;

        // A frame too short to hold a request header (xid only).
        let mut short = session(server).await?;
        short.write_all(&frame(&7i32.to_be_bytes())).await?;
        expect_closed(&mut short, "a 4-byte request").await?;
        check_works(&mut good, 3, "after a 4-byte request").await
    })
    .await
}

#[tokio::test]
async fn truncated_frames_wait_and_others_go_on() -> Result<()> {
    on_each_zk_backend(async |server: &ZkServer| {
        let mut good = session(server).await?;

        // Half a length prefix before the handshake.
        let mut half = tcp(server).await?;
        half.write_all(&[0, 0]).await?;
        expect_silence(&mut half, "half a length prefix").await?;
        check_works(&mut good, 1, "while a length prefix is incomplete").await?;
        half.shutdown().await?;
        expect_closed(&mut half, "half a length prefix, then EOF").await?;

        // A ConnectRequest cut short.
        let mut cut = tcp(server).await?;
        let connect = connect_request(10_000);
        cut.write_all(&connect[..connect.len() / 2]).await?;
        expect_silence(&mut cut, "half a ConnectRequest").await?;
        check_works(&mut good, 2, "while a ConnectRequest is incomplete").await?;
        cut.shutdown().await?;
        expect_closed(&mut cut, "half a ConnectRequest, then EOF").await?;

        // A request cut short after the handshake: its header only.
        let mut partial = session(server).await?;
        let mut header = 12i32.to_be_bytes().to_vec();
        header.extend_from_slice(&7i32.to_be_bytes());
        header.extend_from_slice(&OP_GET_DATA.to_be_bytes());
        partial.write_all(&header).await?;
        expect_silence(&mut partial, "a request missing its body").await?;
        check_works(
            &mut good,
            3,
            "while another session's request is incomplete",
        )
        .await?;
        partial.shutdown().await?;
        expect_closed(&mut partial, "a truncated request, then EOF").await
    })
    .await
}

#[tokio::test]
async fn unknown_opcode_gets_unimplemented_then_close() -> Result<()> {
    on_each_zk_backend(async |server: &ZkServer| {
        let mut good = session(server).await?;
        for op in [999, 0, -3] {
            let mut bad = session(server).await?;
            bad.write_all(&request(5, op, &[])).await?;
            let body = read_frame(&mut bad)
                .await?
                .with_context(|| format!("opcode {op}: closed without a reply"))?;
            let (xid, zxid, err, rest) = reply_header(&body)?;
            ensure!(
                xid == 5 && zxid == -1 && err == UNIMPLEMENTED && rest.is_empty(),
                "opcode {op}: reply xid {xid} zxid {zxid} err {err} and {} more bytes; \
                 expected xid 5, zxid -1, err {UNIMPLEMENTED} (UNIMPLEMENTED), nothing more",
                rest.len()
            );
            expect_closed(&mut bad, &format!("after UNIMPLEMENTED for opcode {op}")).await?;
            check_works(
                &mut good,
                10 + op.rem_euclid(1000),
                "after an unknown opcode",
            )
            .await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn undecodable_body_gets_marshalling_error_and_session_goes_on() -> Result<()> {
    on_each_zk_backend(async |server: &ZkServer| {
        let mut stream = session(server).await?;
        // getData whose path claims 1000 bytes but carries 4.
        let mut payload = 1000i32.to_be_bytes().to_vec();
        payload.extend_from_slice(b"abcd");
        stream.write_all(&request(6, OP_GET_DATA, &payload)).await?;
        let body = read_frame(&mut stream)
            .await?
            .context("closed instead of answering an undecodable getData")?;
        let (xid, _zxid, err, rest) = reply_header(&body)?;
        ensure!(
            xid == 6 && err == MARSHALLING_ERROR && rest.is_empty(),
            "undecodable getData: reply xid {xid} err {err} and {} more bytes; expected xid 6, \
             err {MARSHALLING_ERROR} (MARSHALLINGERROR)",
            rest.len()
        );
        check_works(&mut stream, 7, "the same session after MARSHALLINGERROR").await?;

        // A path without a leading slash on a read: ZooKeeper answers NONODE.
        let mut payload = jute_string("noslash");
        payload.push(0);
        stream.write_all(&request(8, OP_GET_DATA, &payload)).await?;
        let body = read_frame(&mut stream)
            .await?
            .context("closed instead of answering getData(\"noslash\")")?;
        let (xid, _zxid, err, _) = reply_header(&body)?;
        ensure!(
            xid == 8 && err == NO_NODE,
            "getData(\"noslash\"): reply xid {xid} err {err}, expected err {NO_NODE} (NONODE)"
        );
        check_works(&mut stream, 9, "the same session after a bad path").await
    })
    .await
}
