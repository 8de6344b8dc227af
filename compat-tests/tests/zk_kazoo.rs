//! The Python kazoo client (2.11): one scripted session (`python/kazoo_session.py`:
//! CRUD, sequential and ephemeral nodes, multi, ACLs, watches including persistent
//! ones, sessions resumed, closed and expired, containers, TTL nodes and kazoo's
//! recipes) runs against real ZooKeeper 3.8 and against Concord; each must exit 0, and
//! the two transcripts must be equal line for line.

use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::python;
use concord_compat_tests::zookeeper::{ZkServer, compare_with_zookeeper};

/// The session takes about 25 s on real ZooKeeper (a session expiry, container and
/// TTL reaping); each of its waits is bounded by 10-30 s.
const SESSION_TIMEOUT: Duration = Duration::from_secs(240);

async fn run_session(server: &ZkServer) -> Result<String> {
    let stdout = python::session(
        "kazoo_session.py",
        &[server.zk_endpoint()],
        &[],
        SESSION_TIMEOUT,
        server.backend().name(),
    )
    .await?;
    ensure!(
        stdout.lines().count() >= 150 && stdout.ends_with("done\n"),
        "transcript too short:\n{stdout}"
    );
    Ok(stdout)
}

#[tokio::test]
async fn kazoo_session_matches_real_zookeeper() -> Result<()> {
    let expected = compare_with_zookeeper("kazoo", run_session).await?;
    println!("{expected}");
    Ok(())
}
