//! The Python `etcd3` client (0.12): one scripted session (`python/etcd3_session.py`:
//! KV, txn, watch, leases, lock, errors) runs against real etcd and against Concord;
//! each must succeed, and the two transcripts must be equal line for line.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::Server;
use concord_compat_tests::transcripts::compare_with_etcd;

/// The session waits up to 10 s for a watch and 10 s for a lease to expire.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

/// This crate's directory as `cargo test` gives it to the running test; the compile-time
/// value goes stale when a shared target dir is reused from another checkout path.
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

async fn run_session(server: &Server) -> Result<String> {
    let script = crate_dir().join("python/etcd3_session.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(server.endpoint())
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run python3 (scripts/install-deps.sh --test installs etcd3)")?;
    let output = tokio::time::timeout(SESSION_TIMEOUT, child.wait_with_output())
        .await
        .context("the etcd3 session did not finish in time")??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "etcd3 session on {} failed ({}):\n{stdout}\n{}",
            server.backend(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    ensure!(
        stdout.lines().count() >= 15,
        "transcript too short:\n{stdout}"
    );
    Ok(stdout)
}

#[tokio::test]
async fn python_etcd3_session_matches_real_etcd() -> Result<()> {
    let expected = compare_with_etcd("python-etcd3", run_session).await?;
    println!("{expected}");
    Ok(())
}
