//! The Python `etcd3` client (0.12): one scripted session (`python/etcd3_session.py`:
//! KV, txn, watch, leases, lock, errors) runs against real etcd and against Concord;
//! each must succeed, and the two transcripts must be equal line for line.

use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::Server;
use concord_compat_tests::python;
use concord_compat_tests::transcripts::compare_with_etcd;

/// The session waits up to 10 s for a watch and 10 s for a lease to expire.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

async fn run_session(server: &Server) -> Result<String> {
    let stdout = python::session(
        "etcd3_session.py",
        &[server.endpoint()],
        &[("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")],
        SESSION_TIMEOUT,
        server.backend().name(),
    )
    .await?;
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
