//! The etcd v2 dialect in the shared namespace (Concord only: real etcd has no
//! ZooKeeper port, and its v2 store is apart from its v3 keys): a v2 set is a v3 key
//! and a znode; v3 and ZooKeeper writes wake v2 waiters; in-order POSTs and ZooKeeper
//! sequential creates share a parent without colliding. Also the v2 bad input that
//! needs many writes or exact timing: a `waitIndex` older than the 1000-event history,
//! one in the future, and oversize bodies.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::connect;
use concord_compat_tests::v2::{call, request};
use concord_compat_tests::zookeeper::{ZkBackend, ZkServer, zk_backends};
use zookeeper_client as zk;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const OPEN: zk::Acls<'static> = zk::Acls::anyone_all();

async fn concord() -> Result<Option<(ZkServer, String, zk::Client, etcd_client::Client)>> {
    if !zk_backends()?.contains(&ZkBackend::Concord) {
        println!("Concord not selected: cross-dialect test skipped");
        return Ok(None);
    }
    let server = ZkServer::start(ZkBackend::Concord).await?;
    let endpoint = server.etcd_endpoint().context("Concord has an etcd port")?;
    let zk = tokio::time::timeout(
        STEP_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&server.zk_endpoint()),
    )
    .await
    .context("ZooKeeper connect timed out")??;
    let etcd = connect(&endpoint).await?;
    Ok(Some((server, endpoint, zk, etcd)))
}

/// Starts a v2 long poll in the background.
fn wait(endpoint: &str, path: &str) -> tokio::task::JoinHandle<Result<serde_json::Value>> {
    let endpoint = endpoint.to_string();
    let path = path.to_string();
    tokio::spawn(async move {
        request(&endpoint, "GET", &path, &[], Duration::from_secs(15))
            .await?
            .json()
    })
}

#[tokio::test]
async fn v2_v3_and_zookeeper_share_one_namespace() -> Result<()> {
    let Some((_server, endpoint, zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    // A v2 set is a v3 key and a znode (its directories too).
    let set = call(&endpoint, "PUT", "/v2/keys/x/y", &[("value", "from-v2")]).await?;
    ensure!(set.status == 201, "{set:?}");
    let got = etcd.get("/x/y", None).await?;
    ensure!(
        got.kvs().first().map(|kv| kv.value()) == Some(&b"from-v2"[..]),
        "v3 sees {:?}",
        got.kvs()
    );
    let (data, _) = zk.get_data("/x/y").await?;
    ensure!(data == b"from-v2", "ZooKeeper getData: {data:?}");
    let children = zk.list_children("/x").await?;
    ensure!(children == ["y"], "ZooKeeper children of /x: {children:?}");
    // A v3 put and a ZooKeeper write are seen by v2 reads and wake v2 waiters.
    let waiter = wait(&endpoint, "/v2/keys/x/y?wait=true");
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.put("/x/y", "from-v3", None).await?;
    let event = waiter.await??;
    ensure!(
        event["action"] == "set" && event["node"]["value"] == "from-v3",
        "v3 put woke {event}"
    );
    let waiter = wait(&endpoint, "/v2/keys/x?wait=true&recursive=true");
    tokio::time::sleep(Duration::from_millis(500)).await;
    zk.create(
        "/x/z",
        b"from-zk",
        &zk::CreateMode::Persistent.with_acls(OPEN),
    )
    .await?;
    let event = waiter.await??;
    ensure!(
        event["node"]["key"] == "/x/z" && event["node"]["value"] == "from-zk",
        "ZooKeeper create woke {event}"
    );
    let read = call(&endpoint, "GET", "/v2/keys/x?sorted=true", &[])
        .await?
        .json()?;
    let keys: Vec<&str> = read["node"]["nodes"]
        .as_array()
        .context("a listing")?
        .iter()
        .filter_map(|n| n["key"].as_str())
        .collect();
    ensure!(keys == ["/x/y", "/x/z"], "v2 listing of /x: {keys:?}");
    // A ZooKeeper delete is a v2 delete.
    let waiter = wait(&endpoint, "/v2/keys/x/z?wait=true");
    tokio::time::sleep(Duration::from_millis(500)).await;
    zk.delete("/x/z", None).await?;
    let event = waiter.await??;
    ensure!(event["action"] == "delete", "ZooKeeper delete woke {event}");
    // In-order keys and sequential znodes under one parent never collide.
    call(&endpoint, "PUT", "/v2/keys/jobs", &[("dir", "true")]).await?;
    let sequential = zk::CreateMode::PersistentSequential.with_acls(OPEN);
    let mut names = Vec::new();
    for round in 0..3 {
        let posted = call(&endpoint, "POST", "/v2/keys/jobs", &[("value", "v2")]).await?;
        ensure!(posted.status == 201, "POST {round}: {posted:?}");
        names.push(
            posted.json()?["node"]["key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let (_, seq) = zk.create("/jobs/", b"zk", &sequential).await?;
        names.push(format!("/jobs/{seq}"));
    }
    let mut listed: Vec<String> = zk
        .list_children("/jobs")
        .await?
        .into_iter()
        .map(|n| format!("/jobs/{n}"))
        .collect();
    listed.sort();
    names.sort();
    ensure!(
        listed == names && listed.len() == 6,
        "children {listed:?} vs made {names:?}"
    );
    Ok(())
}

#[tokio::test]
async fn v2_wait_index_history_and_future() -> Result<()> {
    let Some((_server, endpoint, _zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    let start = call(&endpoint, "PUT", "/v2/keys/h", &[("value", "0")])
        .await?
        .modified_index()?;
    for i in 0..1000 {
        etcd.put("/h", i.to_string(), None).await?;
    }
    // etcd v2 keeps 1000 events: the first write is out of reach now.
    let cleared = call(
        &endpoint,
        "GET",
        &format!("/v2/keys/h?wait=true&waitIndex={start}"),
        &[],
    )
    .await?;
    let body = cleared.json()?;
    ensure!(
        cleared.status == 400
            && body["errorCode"] == 401
            && body["message"] == "The event in requested index is outdated and cleared"
            && body["cause"]
                .as_str()
                .is_some_and(|c| c.starts_with("the requested history has been cleared [")),
        "{cleared:?}"
    );
    let recent = call(
        &endpoint,
        "GET",
        &format!("/v2/keys/h?wait=true&waitIndex={}", start + 5),
        &[],
    )
    .await?;
    ensure!(recent.json()?["node"]["value"] == "4", "{recent:?}");
    // History compacted away through etcd v3 is as gone.
    let compacted_at = start + 500;
    etcd.compact(compacted_at, None).await?;
    let gone = call(
        &endpoint,
        "GET",
        &format!("/v2/keys/h?wait=true&waitIndex={}", start + 5),
        &[],
    )
    .await?;
    ensure!(
        gone.status == 400
            && gone.json()?["errorCode"] == 401
            && gone.json()?["cause"]
                == format!(
                    "the requested history has been cleared [{}/{}]",
                    compacted_at + 1,
                    start + 5
                ),
        "{gone:?}"
    );
    // A future index waits for it, skipping the writes before.
    let now = recent
        .header("x-etcd-index")
        .context("index")?
        .parse::<i64>()?;
    let waiter = wait(
        &endpoint,
        &format!("/v2/keys/h?wait=true&waitIndex={}", now + 2),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.put("/h", "first", None).await?;
    etcd.put("/h", "second", None).await?;
    let event = waiter.await??;
    ensure!(
        event["node"]["value"] == "second",
        "future waitIndex woke with {event}"
    );
    Ok(())
}

#[tokio::test]
async fn v2_bad_bodies_change_nothing() -> Result<()> {
    let Some((_server, endpoint, _zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    // Over Go's 10 MiB form limit: etcd's "Invalid POST form".
    let huge = "x".repeat(11 << 20);
    let refused = call(&endpoint, "PUT", "/v2/keys/big", &[("value", &huge)]).await?;
    ensure!(
        refused.status == 400
            && refused.json()?["errorCode"] == 210
            && refused.json()?["cause"] == "http: POST too large",
        "{} {}",
        refused.status,
        refused.body
    );
    // Over the kernel's request limit: refused, nothing written.
    let big = "x".repeat(2 << 20);
    let refused = call(&endpoint, "PUT", "/v2/keys/big", &[("value", &big)]).await?;
    ensure!(
        refused.status == 500 && refused.json()?["errorCode"] == 300,
        "{refused:?}"
    );
    ensure!(
        etcd.get("/big", None).await?.kvs().is_empty(),
        "an oversize value was stored"
    );
    // The server still answers.
    let ok = call(&endpoint, "PUT", "/v2/keys/after", &[("value", "fine")]).await?;
    ensure!(ok.status == 201, "{ok:?}");
    Ok(())
}
