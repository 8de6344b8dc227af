//! The Python kazoo client (2.11): one scripted session (`python/kazoo_session.py`:
//! CRUD, sequential and ephemeral nodes, multi, ACLs, watches including persistent
//! ones, sessions resumed, closed and expired, containers, TTL nodes and kazoo's
//! recipes) runs against real ZooKeeper 3.8 and against Concord; each must exit 0, and
//! the two transcripts must be equal line for line.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use concord_compat_tests::zookeeper::{ZkServer, compare_with_zookeeper, run_bounded};

/// The session takes about 25 s on real ZooKeeper (a session expiry, container and
/// TTL reaping); each of its waits is bounded by 10-30 s.
const SESSION_TIMEOUT: Duration = Duration::from_secs(240);

/// This crate's directory as `cargo test` gives it to the running test; the compile-time
/// value goes stale when a shared target dir is reused from another checkout path.
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

async fn run_session(server: &ZkServer) -> Result<String> {
    let script = crate_dir().join("python/kazoo_session.py");
    let mut command = tokio::process::Command::new("python3");
    command.arg(&script).arg(server.zk_endpoint());
    let output = run_bounded(command, None, SESSION_TIMEOUT).await?;
    if !output.status.success() {
        bail!(
            "kazoo session on {} failed ({}):\n{}\n{}",
            server.backend(),
            output.status,
            output.stdout,
            output.stderr
        );
    }
    ensure!(
        output.stdout.lines().count() >= 150 && output.stdout.ends_with("done\n"),
        "transcript too short:\n{}",
        output.stdout
    );
    Ok(output.stdout)
}

#[tokio::test]
async fn kazoo_session_matches_real_zookeeper() -> Result<()> {
    let expected = compare_with_zookeeper("kazoo", run_session).await?;
    println!("{expected}");
    Ok(())
}
