//! The Python `etcd3` client (0.12): one scripted session (`python/etcd3_session.py`:
//! KV, txn, watch, leases, lock, errors) runs against real etcd and against Concord;
//! each must succeed, and the two transcripts must be equal line for line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::{Backend, Server, backends};

/// The session waits up to 10 s for a watch and 10 s for a lease to expire.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

async fn run_session(backend: Backend) -> Result<String> {
    let server = Server::start(backend).await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/etcd3_session.py");
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
            "etcd3 session on {backend} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

#[tokio::test]
async fn python_etcd3_session_matches_real_etcd() -> Result<()> {
    let mut transcripts = Vec::new();
    for backend in backends()? {
        let transcript = run_session(backend).await?;
        println!("=== {backend}\n{transcript}");
        ensure!(
            transcript.lines().count() >= 15,
            "{backend}: transcript too short"
        );
        transcripts.push((backend, transcript));
    }
    if let [(_, etcd), (_, concord)] = transcripts.as_slice() {
        let diff = concord_compat_tests::diff::lines(etcd, concord);
        ensure!(
            diff.is_none(),
            "concord answered python etcd3 differently (- etcd, + concord):\n{}",
            diff.unwrap_or_default()
        );
    }
    Ok(())
}
