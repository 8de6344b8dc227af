//! The load generators' lean gRPC client (`grpc_kv`) against real etcd and Concord: its
//! Put and Range succeed where etcd-client's do and see the same data, and a refused
//! request, an empty answer or a dropped connection is an error, never an operation.

use anyhow::{Context, Result};
use concord_compat_tests::grpc_kv::KvConnection;
use concord_compat_tests::{Session, ensure_eq, on_each_backend};

async fn put_and_get(s: Session) -> Result<()> {
    let mut lean = KvConnection::connect(&s.endpoint, None).await?;
    lean.put(b"bench/a", b"value-a").await.context("lean put")?;
    let mut client = s.client;
    let seen = client.get("bench/a", None).await?;
    ensure_eq!(
        seen.kvs().first().map(|kv| kv.value()),
        Some(&b"value-a"[..])
    );

    client.put("bench/b", "value-b", None).await?;
    lean.get(b"bench/b")
        .await
        .context("lean get of a key etcd-client put")?;

    // Clones share the connection, each with its own call in flight.
    let mut calls = Vec::new();
    for task in 0..8u8 {
        let mut clone = lean.clone();
        calls.push(tokio::spawn(async move {
            let key = format!("bench/c{task}");
            clone.put(key.as_bytes(), &[task; 300]).await?;
            clone.get(key.as_bytes()).await
        }));
    }
    for call in calls {
        call.await.context("a client task panicked")??;
    }
    let count = client
        .get(
            "bench/c",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?
        .count();
    ensure_eq!(count, 8);
    Ok(())
}

#[tokio::test]
async fn lean_put_and_get_agree_with_etcd_client() -> Result<()> {
    on_each_backend(put_and_get).await
}

async fn refusals_are_errors(s: Session) -> Result<()> {
    let mut lean = KvConnection::connect(&s.endpoint, None).await?;
    let missing = lean.get(b"bench/missing").await;
    let error = missing.err().context("a get of a missing key succeeded")?;
    ensure_eq!(error.to_string(), "Range reply with 0 pairs, count 0");
    let empty_key = lean.put(b"", b"x").await;
    let error = empty_key.err().context("a put without a key succeeded")?;
    ensure_eq!(
        error.to_string(),
        "grpc-status 3: etcdserver: key is not provided"
    );
    // The connection stays usable after a refusal.
    lean.put(b"bench/after", b"ok")
        .await
        .context("put after a refusal")?;
    Ok(())
}

#[tokio::test]
async fn refused_and_empty_replies_are_errors() -> Result<()> {
    on_each_backend(refusals_are_errors).await
}
