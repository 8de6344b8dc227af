//! The `zk_bench` load generator's lean ZooKeeper client (`zk_load`) against real
//! ZooKeeper and Concord: its create, setData and getData succeed where the
//! `zookeeper-client` crate's do and see the same data, many tasks pipeline on one
//! session, and a refused request is an error, never an operation.

use std::time::Duration;

use anyhow::{Context, Result};
use concord_compat_tests::ensure_eq;
use concord_compat_tests::zk_load::ZkLoadSession;
use concord_compat_tests::zookeeper::{ZkServer, on_each_zk_backend};
use zookeeper_client as zk;

const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds each test (both backends): a reply that never comes fails it.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn crate_client(server: &ZkServer) -> Result<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .connect(&server.zk_endpoint())
        .await
        .context("zookeeper-client session")
}

async fn agrees_with_the_crate(server: &ZkServer) -> Result<()> {
    let lean = ZkLoadSession::connect(&server.zk_endpoint(), SESSION_TIMEOUT).await?;
    let client = crate_client(server).await?;
    ensure_eq!(lean.create("/lean", b"root").await?, true);
    ensure_eq!(lean.create("/lean", b"again").await?, false, "NODEEXISTS");
    let (data, stat) = client.get_data("/lean").await?;
    ensure_eq!(data, b"root".to_vec());
    ensure_eq!(stat.version, 0);

    lean.set_data("/lean", b"changed").await?;
    let (data, stat) = client.get_data("/lean").await?;
    ensure_eq!(data, b"changed".to_vec());
    ensure_eq!(stat.version, 1);

    client.set_data("/lean", b"by the crate", None).await?;
    ensure_eq!(lean.get_data("/lean").await?.as_ref(), b"by the crate");
    lean.ping().await?;

    // Clones share the session; their requests pipeline and each gets its own reply.
    let mut tasks = Vec::new();
    for task in 0..16u8 {
        let lean = lean.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/lean/t{task}");
            lean.create(&path, &[task; 300]).await?;
            lean.set_data(&path, &[task; 200]).await?;
            let data = lean.get_data(&path).await?;
            ensure_eq!(data.as_ref(), &[task; 200][..]);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("a client task panicked")??;
    }
    let (children, _) = client.get_children("/lean").await?;
    ensure_eq!(children.len(), 16);
    ensure_eq!(
        lean.session_id() != client.session_id().0,
        true,
        "two sessions, two ids"
    );
    Ok(())
}

/// Runs `scenario` on each backend within [`TEST_TIMEOUT`].
async fn on_each_backend_in_time(scenario: impl AsyncFn(&ZkServer) -> Result<()>) -> Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, on_each_zk_backend(scenario))
        .await
        .context("timed out")?
}

#[tokio::test]
async fn lean_requests_agree_with_the_zookeeper_client_crate() -> Result<()> {
    on_each_backend_in_time(agrees_with_the_crate).await
}

async fn refusals_are_errors(server: &ZkServer) -> Result<()> {
    let lean = ZkLoadSession::connect(&server.zk_endpoint(), SESSION_TIMEOUT).await?;
    let missing = lean.get_data("/missing").await;
    let error = missing
        .err()
        .context("a getData of a missing node succeeded")?;
    ensure_eq!(error.to_string(), "ZooKeeper error -101");
    let orphan = lean.create("/no/parent", b"").await;
    let error = orphan
        .err()
        .context("a create without its parent succeeded")?;
    ensure_eq!(error.to_string(), "create /no/parent: ZooKeeper error -101");
    let missing = lean.set_data("/missing", b"x").await;
    ensure_eq!(missing.is_err(), true);
    // The session is still usable after the refusals, then ends on request.
    ensure_eq!(lean.create("/after", b"").await?, true);
    lean.close().await?;
    let closed = lean.get_data("/after").await;
    ensure_eq!(closed.is_err(), true, "a request after closeSession");
    Ok(())
}

#[tokio::test]
async fn lean_refusals_are_errors_and_the_session_goes_on() -> Result<()> {
    on_each_backend_in_time(refusals_are_errors).await
}
