//! The Python `python-etcd` client (etcd v2 API): one scripted session
//! (`python/etcd2_session.py`: writes, reads, directories, in-order keys, TTL and
//! refresh, compare-and-swap/delete, errors, watches, members and stats) runs against
//! real etcd (`--enable-v2`) and against Concord; the transcripts must be equal.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::Server;
use concord_compat_tests::transcripts::compare_with_etcd;

const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

/// This crate's directory as `cargo test` gives it to the running test.
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

async fn run_session(server: &Server) -> Result<String> {
    let script = crate_dir().join("python/etcd2_session.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(server.endpoint())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run python3 (scripts/install-deps.sh --test installs python-etcd)")?;
    let output = tokio::time::timeout(SESSION_TIMEOUT, child.wait_with_output())
        .await
        .context("the python-etcd session did not finish in time")??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "python-etcd session on {} failed ({}):\n{stdout}\n{}",
            server.backend(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    ensure!(
        stdout.lines().count() >= 30,
        "transcript too short:\n{stdout}"
    );
    Ok(stdout)
}

#[tokio::test]
async fn python_etcd_v2_session_matches_real_etcd() -> Result<()> {
    let expected = compare_with_etcd("python-etcd", run_session).await?;
    println!("{expected}");
    Ok(())
}
