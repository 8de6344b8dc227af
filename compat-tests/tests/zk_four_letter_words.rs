//! Four-letter words on the ZooKeeper client port, on real ZooKeeper 3.8 and on Concord
//! (both started with every word whitelisted): each word answers in ZooKeeper's shape,
//! and the counters they report follow what happened. Concord with its default
//! whitelist (`srvr` only, as ZooKeeper) refuses the others in ZooKeeper's words.

use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::server::{Backend, Server};
use concord_compat_tests::zookeeper::{ZkServer, four_letter_word, on_each_zk_backend};
use zookeeper_client as zk;

const STEP: Duration = Duration::from_secs(10);

async fn words(server: &ZkServer) -> Result<()> {
    ensure!(server.four_letter_word("ruok").await? == "imok", "ruok");
    ensure!(server.four_letter_word("isro").await? == "rw", "isro");
    let client = tokio::time::timeout(
        STEP,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&server.zk_endpoint()),
    )
    .await??;
    let nodes_before = node_count(&server.four_letter_word("srvr").await?)?;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    tokio::time::timeout(STEP, client.create("/fl", b"x", &open)).await??;
    let (_, _, watcher) = tokio::time::timeout(STEP, client.get_and_watch_data("/fl")).await??;

    let srvr = server.four_letter_word("srvr").await?;
    for line in [
        "Zookeeper version: 3.8.0",
        "Latency min/avg/max: ",
        "Received: ",
        "Sent: ",
        // The session's and this one.
        "Connections: 2\n",
        "Outstanding: 0\n",
        "Zxid: 0x",
        "Mode: standalone\n",
        "Node count: ",
    ] {
        ensure!(srvr.contains(line), "srvr lacks {line:?}:\n{srvr}");
    }
    let nodes = node_count(&srvr)?;
    ensure!(
        nodes == nodes_before + 1,
        "node count {nodes_before} -> {nodes}"
    );
    let stat = server.four_letter_word("stat").await?;
    ensure!(
        stat.contains("Clients:\n /127.0.0.1:")
            && stat.contains("[0](queued=0,recved=1,sent=0)\n")
            && stat.contains(&format!("Node count: {nodes}\n")),
        "stat:\n{stat}"
    );
    let mntr = server.four_letter_word("mntr").await?;
    for line in [
        "zk_server_state\tstandalone\n",
        "zk_watch_count\t1\n",
        "zk_num_alive_connections\t2\n",
    ] {
        ensure!(mntr.contains(line), "mntr lacks {line:?}:\n{mntr}");
    }
    ensure!(
        mntr.contains(&format!("zk_znode_count\t{nodes}\n")),
        "mntr node count:\n{mntr}"
    );
    let wchs = server.four_letter_word("wchs").await?;
    ensure!(
        wchs == "1 connections watching 1 paths\nTotal watches:1\n",
        "wchs: {wchs:?}"
    );
    let conf = server.four_letter_word("conf").await?;
    let port = server
        .zk_endpoint()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        conf.contains(&format!("clientPort={port}\n")) && conf.contains("tickTime=2000\n"),
        "conf:\n{conf}"
    );
    let cons = server.four_letter_word("cons").await?;
    ensure!(cons.contains(" /127.0.0.1:"), "cons:\n{cons}");
    let envi = server.four_letter_word("envi").await?;
    ensure!(
        envi.starts_with("Environment:\n") && envi.contains("zookeeper.version=3.8.0"),
        "envi:\n{envi}"
    );
    drop(watcher);
    Ok(())
}

/// The `Node count` of a `srvr` answer.
fn node_count(srvr: &str) -> Result<i64> {
    srvr.lines()
        .find_map(|line| line.strip_prefix("Node count: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no node count in {srvr:?}"))
}

#[tokio::test]
async fn four_letter_words_answer_like_zookeeper() -> Result<()> {
    on_each_zk_backend(words).await
}

#[tokio::test]
async fn only_whitelisted_words_are_answered() -> Result<()> {
    // Concord's defaults: only `srvr`, as ZooKeeper's `4lw.commands.whitelist`.
    let server = Server::start(Backend::Concord).await?;
    let endpoint = server.zk_endpoint();
    let srvr = four_letter_word(&endpoint, "srvr").await?;
    ensure!(srvr.contains("Mode: standalone\n"), "srvr: {srvr}");
    for word in ["ruok", "mntr", "wchs"] {
        let answer = four_letter_word(&endpoint, word).await?;
        ensure!(
            answer == format!("{word} is not executed because it is not in the whitelist.\n"),
            "{word}: {answer:?}"
        );
    }
    Ok(())
}
