//! Requests a server must refuse without falling over: an oversize put, a txn with too
//! many operations, reads at compacted and future revisions, an empty key, a body that
//! is not protobuf, and an unknown method. After each, the server must still answer a
//! normal get. Every scenario runs on real etcd and on Concord.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use concord_compat_tests::check::expect_status;
use concord_compat_tests::streams::RawCodec;
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

/// etcd's default `--max-request-bytes` is 1.5 MiB; this is over it but under the gRPC
/// message limit (max-request-bytes + 512 KiB), so the server's own check answers.
const OVERSIZE_VALUE: usize = 1_600 * 1024;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// Puts `probe` = `ok` and reads it back: the server still works.
async fn still_serves(c: &mut Client) -> Result<()> {
    c.put("probe", "ok", None)
        .await
        .context("put after bad input")?;
    let resp = c.get("probe", None).await.context("get after bad input")?;
    ensure_eq!(resp.kvs().first().map(|kv| kv.value()), Some(&b"ok"[..]));
    Ok(())
}

async fn oversize_put(s: Session) -> Result<()> {
    let mut c = s.client;
    let value = vec![b'x'; OVERSIZE_VALUE];
    let result = c.put("big", value, None).await;
    expect_status(
        result,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    )?;
    ensure_eq!(c.get("big", None).await?.count(), 0, "nothing was written");
    still_serves(&mut c).await
}

#[tokio::test]
async fn oversize_put_is_too_large() -> Result<()> {
    on_each_backend(oversize_put).await
}

async fn too_many_txn_ops(s: Session) -> Result<()> {
    let mut c = s.client;
    let puts = |n: usize| {
        (0..n)
            .map(|i| TxnOp::put(format!("t/{i:03}"), "v", None))
            .collect::<Vec<_>>()
    };
    let too_many = "etcdserver: too many operations in txn request";

    let result = c.txn(Txn::new().and_then(puts(MAX_TXN_OPS + 1))).await;
    expect_status(result, Code::InvalidArgument, too_many).context("129 puts")?;
    let result = c.txn(Txn::new().or_else(puts(MAX_TXN_OPS + 1))).await;
    expect_status(result, Code::InvalidArgument, too_many).context("129 else-ops")?;
    let compares: Vec<Compare> = (0..=MAX_TXN_OPS)
        .map(|i| Compare::version(format!("t/{i:03}"), CompareOp::Equal, 0))
        .collect();
    let result = c.txn(Txn::new().when(compares)).await;
    expect_status(result, Code::InvalidArgument, too_many).context("129 compares")?;
    let all = GetOptions::new().with_prefix();
    ensure_eq!(
        c.get("t/", Some(all.clone())).await?.count(),
        0,
        "nothing was written"
    );

    c.txn(Txn::new().and_then(puts(MAX_TXN_OPS)))
        .await
        .context("128 puts are allowed")?;
    ensure_eq!(c.get("t/", Some(all)).await?.count(), MAX_TXN_OPS as i64);
    still_serves(&mut c).await
}

#[tokio::test]
async fn txn_with_too_many_ops_is_refused() -> Result<()> {
    on_each_backend(too_many_txn_ops).await
}

async fn bad_revisions_and_keys(s: Session) -> Result<()> {
    let mut c = s.client;
    for i in 0..4 {
        c.put("r", format!("{i}"), None).await?; // revisions 2..=5
    }
    c.compact(4, None).await?;
    let at = |rev| Some(GetOptions::new().with_revision(rev));
    let result = c.get("r", at(3)).await;
    expect_status(
        result,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )?;
    let result = c.get("r", at(6)).await;
    expect_status(
        result,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )?;
    expect_status(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    )?;
    expect_status(
        c.put("", "v", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    )?;
    let compare_empty = Txn::new().when([Compare::version("", CompareOp::Equal, 0)]);
    expect_status(
        c.txn(compare_empty).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    )?;
    let backwards = c.get("b", Some(GetOptions::new().with_range("a"))).await?;
    ensure_eq!(
        backwards.count(),
        0,
        "a range whose end is before its start is empty"
    );
    still_serves(&mut c).await
}

#[tokio::test]
async fn bad_revisions_and_empty_keys_are_refused() -> Result<()> {
    on_each_backend(bad_revisions_and_keys).await
}

/// Calls `method` (`/package.Service/Method`) with `body` as the message, unparsed, and
/// returns the error status it must fail with.
async fn raw_call_error(
    endpoint: &str,
    method: &'static str,
    body: &'static [u8],
) -> Result<Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let response = grpc
        .unary(
            tonic::Request::new(Bytes::from_static(body)),
            PathAndQuery::from_static(method),
            RawCodec,
        )
        .await;
    match response {
        Ok(answer) => bail!(
            "{method} with body {body:?} was answered: {:?}",
            answer.into_inner()
        ),
        Err(status) => Ok(status),
    }
}

/// Not protobuf: field 1 with the reserved wire type 7, then a varint that never ends.
const GARBAGE: &[u8] = b"\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";

async fn malformed_body(s: Session) -> Result<()> {
    let mut c = s.client;
    let status = raw_call_error(&s.endpoint, "/etcdserverpb.KV/Range", GARBAGE).await?;
    println!("{}: garbage Range body -> {status:?}", s.backend);
    // etcd (grpc-go) says "grpc: error unmarshalling request: ..."; only the code is
    // part of the contract.
    ensure_eq!(status.code(), Code::Internal, "{status:?}");

    let status = raw_call_error(&s.endpoint, "/etcdserverpb.KV/NoSuchMethod", b"").await?;
    println!("{}: unknown method -> {status:?}", s.backend);
    ensure_eq!(status.code(), Code::Unimplemented, "{status:?}");
    still_serves(&mut c).await
}

#[tokio::test]
async fn malformed_grpc_body_is_an_internal_error() -> Result<()> {
    on_each_backend(malformed_body).await
}
