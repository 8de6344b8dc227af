//! A lean etcd v3 KV client for the load generators (`bench`, `cluster_bench`): unary
//! `KV/Put` and `KV/Range` calls over one HTTP/2 connection (the `h2` crate), each
//! request's HEADERS and DATA frames queued together so that they leave in one TCP
//! write, as grpc-go clients (etcdctl, etcd's own benchmark tool) send them.
//!
//! Why not the `etcd-client` crate here: tonic's client hands a request body to a task
//! of its own that waits until the connection has granted it flow-control capacity, so
//! HEADERS and DATA leave in two writes. On loopback a write also pays for the
//! receiver's TCP processing, and the load generator shares the machine's cores with the
//! server it measures: under the `bench` Put load it made 2.2 `writev` calls per request
//! and spent 27-32 µs of CPU per request, about as much as the server. Every reply is
//! still checked (HTTP status, `grpc-status`, the response message's fields), so a
//! refused or empty answer counts as an error, never as an operation.
//!
//! The messages are encoded and read by hand (the few protobuf fields the load needs),
//! unit-tested against the protobuf wire format.

use std::future::poll_fn;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::tls::{ClientPortTls, rustls_client_config};

const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// One HTTP/2 connection to a server's etcd client port; clones share it (each clone
/// may have one call in flight).
#[derive(Clone, Debug)]
pub struct KvConnection {
    sender: SendRequest<Bytes>,
    put_uri: Uri,
    range_uri: Uri,
}

impl KvConnection {
    /// Connects to `endpoint` (`HOST:PORT`), over TLS when `tls` is given (trusting the
    /// test CA, presenting the client certificate for mutual TLS).
    pub async fn connect(endpoint: &str, tls: Option<&ClientPortTls>) -> Result<Self> {
        let tcp = TcpStream::connect(endpoint)
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, scheme) = match tls {
            None => (handshake(tcp).await?, "http"),
            Some(tls) => {
                let client = tls.mutual.then_some(tls.dir.as_path());
                let config = rustls_client_config(&[&tls.dir], client, &[b"h2"])?;
                let connector = TlsConnector::from(Arc::new(config));
                let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
                let name = ServerName::try_from(host.to_string())
                    .with_context(|| format!("bad host in {endpoint}"))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {endpoint}"))?;
                (handshake(stream).await?, "https")
            }
        };
        let uri = |path: &str| -> Result<Uri> {
            format!("{scheme}://{endpoint}{path}")
                .parse()
                .with_context(|| format!("bad endpoint {endpoint}"))
        };
        Ok(Self {
            sender,
            put_uri: uri(PUT_PATH)?,
            range_uri: uri(RANGE_PATH)?,
        })
    }

    /// `Put(key, value)`; the reply must carry a response header with a revision.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let reply = self
            .call(self.put_uri.clone(), put_request(key, value))
            .await?;
        ensure!(header_revision(&reply)? > 0, "Put reply without a revision");
        Ok(())
    }

    /// A linearizable `Range` of one key that must exist: the reply must hold one
    /// key-value pair and a count of 1.
    pub async fn get(&mut self, key: &[u8]) -> Result<()> {
        let reply = self
            .call(self.range_uri.clone(), range_request(key))
            .await?;
        let (kvs, count) = range_kvs_and_count(&reply)?;
        ensure!(
            kvs == 1 && count == 1,
            "Range reply with {kvs} pairs, count {count}"
        );
        Ok(())
    }

    /// One unary call: the request's frames are queued before the connection task runs
    /// again, so they go out in one write; the reply's message is returned after its
    /// `grpc-status` was found to be 0.
    async fn call(&mut self, uri: Uri, message: Bytes) -> Result<Bytes> {
        poll_fn(|cx| self.sender.poll_ready(cx))
            .await
            .context("connection closed")?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        let (response, mut body_out) = self.sender.send_request(request, false)?;
        body_out.send_data(message, true)?;
        let response = response.await.context("no response")?;
        ensure!(
            response.status() == 200,
            "HTTP status {}",
            response.status()
        );
        if response.headers().contains_key("grpc-status") {
            // A trailers-only reply: an error (a success carries a message).
            grpc_ok(response.headers())?;
            bail!("a reply without a message");
        }
        let mut body = response.into_body();
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.context("reading the reply")?;
            body.flow_control()
                .release_capacity(chunk.len())
                .context("releasing flow-control capacity")?;
            received.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .context("reading the trailers")?
            .context("a reply without trailers")?;
        grpc_ok(&trailers)?;
        unframe(received.freeze())
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::handshake(stream)
        .await
        .context("HTTP/2 handshake")?;
    // Ends when every clone of the sender is dropped and the last stream is done.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Fails with the server's `grpc-status` and `grpc-message` unless the status is 0.
fn grpc_ok(headers: &HeaderMap) -> Result<()> {
    let status = headers
        .get("grpc-status")
        .context("no grpc-status")?
        .to_str()
        .unwrap_or("?");
    if status != "0" {
        let message = headers
            .get("grpc-message")
            .map(|m| percent_decoded(m.as_bytes()))
            .unwrap_or_default();
        bail!("grpc-status {status}: {message}");
    }
    Ok(())
}

/// A `grpc-message` as sent: percent-encoded (tonic encodes spaces too, grpc-go only
/// what is not printable ASCII).
fn percent_decoded(encoded: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = tail
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(value)) => {
                decoded.push(value);
                rest = &tail[2..];
            }
            _ => {
                decoded.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A gRPC length-prefixed message (uncompressed) around `message`.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The one message of a unary reply's body.
fn unframe(body: Bytes) -> Result<Bytes> {
    ensure!(body.len() >= 5, "a reply body of {} bytes", body.len());
    ensure!(body[0] == 0, "a compressed reply");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    ensure!(
        body.len() == 5 + length,
        "a reply frame of {length} bytes in {} bytes",
        body.len()
    );
    Ok(body.slice(5..))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field (wire type 2).
fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `PutRequest { key, value }`, framed.
fn put_request(key: &[u8], value: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(key.len() + value.len() + 8);
    put_bytes_field(&mut message, 1, key);
    put_bytes_field(&mut message, 2, value);
    frame(&message)
}

/// `RangeRequest { key }` (linearizable, no options), framed.
fn range_request(key: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(key.len() + 4);
    put_bytes_field(&mut message, 1, key);
    frame(&message)
}

/// A protobuf field's value, as far as these replies need it.
#[derive(Debug, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn take_varint(input: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().context("a truncated varint")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("a varint over 64 bits")
}

/// The top-level fields of a protobuf message, in order.
fn fields(mut input: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut fields = Vec::new();
    while !input.is_empty() {
        let tag = take_varint(&mut input)?;
        let value = match tag & 7 {
            0 => Field::Varint(take_varint(&mut input)?),
            2 => {
                let length = usize::try_from(take_varint(&mut input)?)?;
                ensure!(length <= input.len(), "a truncated field");
                let (bytes, rest) = input.split_at(length);
                input = rest;
                Field::Bytes(bytes)
            }
            wire @ (1 | 5) => {
                let width = if wire == 1 { 8 } else { 4 };
                ensure!(width <= input.len(), "a truncated field");
                input = &input[width..];
                Field::Fixed
            }
            wire => bail!("wire type {wire}"),
        };
        fields.push((tag >> 3, value));
    }
    Ok(fields)
}

/// `ResponseHeader.revision` of a Put or Range reply (field 1, its field 3).
fn header_revision(reply: &[u8]) -> Result<i64> {
    for (number, value) in fields(reply)? {
        if let (1, Field::Bytes(header)) = (number, value) {
            for (number, value) in fields(header)? {
                if let (3, Field::Varint(revision)) = (number, value) {
                    return Ok(revision as i64);
                }
            }
        }
    }
    Ok(0)
}

/// How many `kvs` (field 2) a `RangeResponse` holds, and its `count` (field 4).
fn range_kvs_and_count(reply: &[u8]) -> Result<(usize, u64)> {
    let (mut kvs, mut count) = (0, 0);
    for (number, value) in fields(reply)? {
        match (number, value) {
            (2, Field::Bytes(_)) => kvs += 1,
            (4, Field::Varint(n)) => count = n,
            _ => {}
        }
    }
    Ok((kvs, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_protobuf() {
        // PutRequest { key: "k1", value: "vv" } as prost encodes it.
        let put = put_request(b"k1", b"vv");
        assert_eq!(
            &put[..],
            &[0, 0, 0, 0, 8, 0x0a, 2, b'k', b'1', 0x12, 2, b'v', b'v']
        );
        let range = range_request(b"key");
        assert_eq!(&range[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'k', b'e', b'y']);
        let long = put_request(b"k", &[b'x'; 300]);
        // 300 = 0b10_0101100: varint bytes 0xac 0x02.
        assert_eq!(&long[5..10], &[0x0a, 1, b'k', 0x12, 0xac]);
        assert_eq!(long[10], 0x02);
        assert_eq!(unframe(long.clone()).unwrap().len(), long.len() - 5);
    }

    #[test]
    fn replies_are_read_by_their_fields() {
        // PutResponse { header: { cluster_id: 7, revision: 300 } }
        let header = [0x08, 7, 0x18, 0xac, 0x02];
        let mut put_reply = vec![0x0a, header.len() as u8];
        put_reply.extend_from_slice(&header);
        assert_eq!(header_revision(&put_reply).unwrap(), 300);
        assert_eq!(header_revision(&[]).unwrap(), 0);

        // RangeResponse { header, kvs: [ { key: "k" } ], count: 1 }
        let mut range_reply = put_reply.clone();
        range_reply.extend_from_slice(&[0x12, 3, 0x0a, 1, b'k', 0x20, 1]);
        assert_eq!(range_kvs_and_count(&range_reply).unwrap(), (1, 1));
        assert_eq!(range_kvs_and_count(&put_reply).unwrap(), (0, 0));

        assert!(fields(&[0x0a, 5, 1]).is_err(), "a truncated field");
        assert!(fields(&[0x08]).is_err(), "a truncated varint");
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(unframe(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn a_nonzero_grpc_status_is_an_error_with_its_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(grpc_ok(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver: key is not provided"),
        );
        let error = grpc_ok(&headers).unwrap_err().to_string();
        assert_eq!(error, "grpc-status 3: etcdserver: key is not provided");
        headers.insert("grpc-message", HeaderValue::from_static("a%20b%2"));
        let error = grpc_ok(&headers).unwrap_err().to_string();
        assert_eq!(error, "grpc-status 3: a b%2");
        assert!(grpc_ok(&HeaderMap::new()).is_err());
    }
}
