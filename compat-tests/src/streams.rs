//! Helpers for the streaming APIs (Watch and LeaseKeepAlive): bounded reads of watch
//! responses, a comparable view of watch events, and a raw LeaseKeepAlive stream that,
//! unlike etcd-client's `keep_alive`, lets a test send any lease id on one stream and
//! see the server's exact answer (etcd-client refuses a first answer with TTL 0).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use etcd_client::{Event, EventType, KeyValue, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// The longest a test waits for one expected stream message.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the responses read while collecting events, so that no loop depends
/// on the server stopping by itself.
pub const MAX_RESPONSES: usize = 10_000;

/// The next watch response, waited for at most [`STREAM_TIMEOUT`]; an error if the
/// stream ends or fails.
pub async fn next_response(stream: &mut WatchStream) -> Result<WatchResponse> {
    next_response_within(stream, STREAM_TIMEOUT).await
}

/// The next watch response, waited for at most `timeout`.
pub async fn next_response_within(
    stream: &mut WatchStream,
    timeout: Duration,
) -> Result<WatchResponse> {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(resp))) => Ok(resp),
        Ok(Ok(None)) => bail!("the watch stream ended"),
        Ok(Err(e)) => bail!("the watch stream failed: {e}"),
        Err(_) => bail!("no watch response within {timeout:?}"),
    }
}

/// Checks that no watch response arrives within `window`.
pub async fn expect_no_response(stream: &mut WatchStream, window: Duration) -> Result<()> {
    match tokio::time::timeout(window, stream.message()).await {
        Err(_) => Ok(()),
        Ok(Ok(Some(resp))) => bail!("expected no watch response, got {resp:?}"),
        Ok(Ok(None)) => bail!("the watch stream ended"),
        Ok(Err(e)) => bail!("the watch stream failed: {e}"),
    }
}

/// Reads responses until `n` events have arrived; returns each event with the watch id
/// and header revision of the response that carried it. Fails on a created or canceled
/// response, or when an event takes longer than [`STREAM_TIMEOUT`].
pub async fn collect_events(stream: &mut WatchStream, n: usize) -> Result<Vec<Delivered>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..MAX_RESPONSES {
        if out.len() >= n {
            return Ok(out);
        }
        let resp = next_response(stream)
            .await
            .with_context(|| format!("after {} of {n} events: {out:?}", out.len()))?;
        if resp.created() || resp.canceled() {
            bail!("expected events, got {resp:?}");
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(-1);
        for event in resp.events() {
            out.push(Delivered {
                watch_id: resp.watch_id(),
                header_revision: revision,
                event: EventView::of(event),
            });
        }
    }
    bail!("more than {MAX_RESPONSES} responses without {n} events")
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The watch the response was for.
    pub watch_id: i64,
    /// The response header's revision.
    pub header_revision: i64,
    /// The event.
    pub event: EventView,
}

/// A key-value as text, every field kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvView {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl KvView {
    /// The view of `kv`.
    pub fn of(kv: &KeyValue) -> Self {
        KvView {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    /// A live key: (key, value, create, mod, version), no lease.
    pub fn put(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Self {
        KvView {
            key: key.to_string(),
            value: value.to_string(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    /// What a DELETE event's kv holds: only the key and the mod revision.
    pub fn tombstone(key: &str, modified: i64) -> Self {
        KvView {
            key: key.to_string(),
            value: String::new(),
            create_revision: 0,
            mod_revision: modified,
            version: 0,
            lease: 0,
        }
    }
}

/// An event with its kv and prev_kv as [`KvView`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    /// `PUT` or `DELETE`.
    pub kind: &'static str,
    pub kv: Option<KvView>,
    pub prev_kv: Option<KvView>,
}

impl EventView {
    /// The view of `event`.
    pub fn of(event: &Event) -> Self {
        EventView {
            kind: match event.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            },
            kv: event.kv().map(KvView::of),
            prev_kv: event.prev_kv().map(KvView::of),
        }
    }

    /// A PUT event without prev_kv.
    pub fn put(kv: KvView) -> Self {
        EventView {
            kind: "PUT",
            kv: Some(kv),
            prev_kv: None,
        }
    }

    /// A DELETE event of `key` at `revision`, without prev_kv.
    pub fn delete(key: &str, revision: i64) -> Self {
        EventView {
            kind: "DELETE",
            kv: Some(KvView::tombstone(key, revision)),
            prev_kv: None,
        }
    }

    /// The same event with `prev` as its prev_kv.
    pub fn with_prev(mut self, prev: KvView) -> Self {
        self.prev_kv = Some(prev);
        self
    }
}

/// A codec that sends and receives gRPC message bodies as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One LeaseKeepAliveResponse, decoded by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAliveAnswer {
    /// `ID`.
    pub id: i64,
    /// `TTL`: the lease's TTL after the refresh; 0 when the lease does not exist.
    pub ttl: i64,
    /// `header.revision`.
    pub revision: i64,
    /// Whether the answer had a header.
    pub has_header: bool,
}

/// A `Lease/LeaseKeepAlive` stream spoken with hand-encoded protobuf.
#[derive(Debug)]
pub struct RawKeepAlive {
    requests: mpsc::Sender<Bytes>,
    answers: Streaming<Bytes>,
}

impl RawKeepAlive {
    /// Opens the stream to `endpoint` (`127.0.0.1:PORT`) with a first keep-alive for
    /// `first_id` (a server may send its response headers only with its first answer),
    /// and returns the stream and that answer.
    pub async fn open(endpoint: &str, first_id: i64) -> Result<(Self, KeepAliveAnswer)> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let (requests, receiver) = mpsc::channel(16);
        requests
            .send(keep_alive_request(first_id))
            .await
            .context("cannot queue the first keep-alive")?;
        let response = tokio::time::timeout(
            STREAM_TIMEOUT,
            grpc.streaming(
                tonic::Request::new(ReceiverStream::new(receiver)),
                PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive"),
                RawCodec,
            ),
        )
        .await
        .context("LeaseKeepAlive did not open in time")??;
        let mut stream = RawKeepAlive {
            requests,
            answers: response.into_inner(),
        };
        let first = stream.answer().await?;
        Ok((stream, first))
    }

    /// Sends a keep-alive for `id` and returns the answer, waited for at most
    /// [`STREAM_TIMEOUT`].
    pub async fn keep_alive(&mut self, id: i64) -> Result<KeepAliveAnswer> {
        self.requests
            .send(keep_alive_request(id))
            .await
            .context("the keep-alive request stream is closed")?;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<KeepAliveAnswer> {
        let message = tokio::time::timeout(STREAM_TIMEOUT, self.answers.message())
            .await
            .context("no keep-alive answer in time")?
            .context("the keep-alive stream failed")?
            .context("the keep-alive stream ended")?;
        decode_keep_alive(&message)
    }
}

/// LeaseKeepAliveRequest { int64 ID = 1 }; an int64 is a varint of its two's complement.
fn keep_alive_request(id: i64) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(0x08);
    put_varint(&mut body, id as u64);
    body.freeze()
}

fn put_varint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8(((n & 0x7f) as u8) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = buf.split_first() else {
            bail!("truncated varint");
        };
        *buf = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(n);
        }
    }
    bail!("varint too long")
}

/// One protobuf field: (field number, wire type, varint value, length-delimited bytes).
type Field = (u64, u64, u64, Vec<u8>);

/// The fields of a message, fixed-width ones skipped.
fn fields(mut buf: &[u8]) -> Result<Vec<Field>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = get_varint(&mut buf)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((field, wire, get_varint(&mut buf)?, Vec::new())),
            2 => {
                let len = usize::try_from(get_varint(&mut buf)?)?;
                if len > buf.len() {
                    bail!("truncated field {field}");
                }
                out.push((field, wire, 0, buf[..len].to_vec()));
                buf = &buf[len..];
            }
            1 if buf.len() >= 8 => buf = &buf[8..],
            5 if buf.len() >= 4 => buf = &buf[4..],
            _ => bail!("bad wire type {wire} for field {field}"),
        }
    }
    Ok(out)
}

/// Decodes LeaseKeepAliveResponse { ResponseHeader header = 1; int64 ID = 2; int64 TTL
/// = 3 } (ResponseHeader: revision is field 3).
fn decode_keep_alive(body: &[u8]) -> Result<KeepAliveAnswer> {
    let mut answer = KeepAliveAnswer::default();
    for (field, wire, number, bytes) in fields(body)? {
        match (field, wire) {
            (1, 2) => {
                answer.has_header = true;
                for (hfield, hwire, hnumber, _) in fields(&bytes)? {
                    if (hfield, hwire) == (3, 0) {
                        answer.revision = hnumber as i64;
                    }
                }
            }
            (2, 0) => answer.id = number as i64,
            (3, 0) => answer.ttl = number as i64,
            _ => {}
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_answer_decodes() {
        // header { cluster_id: 1, revision: 300 }, ID: -1, TTL: 7
        let mut body = BytesMut::new();
        body.put_slice(&[0x0a, 0x05, 0x08, 0x01, 0x18, 0xac, 0x02]);
        body.put_u8(0x10);
        put_varint(&mut body, u64::MAX);
        body.put_slice(&[0x18, 0x07]);
        let answer = decode_keep_alive(&body).unwrap();
        assert_eq!(
            answer,
            KeepAliveAnswer {
                id: -1,
                ttl: 7,
                revision: 300,
                has_header: true
            }
        );
    }
}
