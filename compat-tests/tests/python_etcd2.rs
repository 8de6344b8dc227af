//! The Python `python-etcd` client (etcd v2 API): one scripted session
//! (`python/etcd2_session.py`: writes, reads, directories, in-order keys, TTL and
//! refresh, compare-and-swap/delete, errors, watches, members and stats) runs against
//! real etcd (`--enable-v2`) and against Concord; the transcripts must be equal.

use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::Server;
use concord_compat_tests::python;
use concord_compat_tests::transcripts::compare_with_etcd;

const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

async fn run_session(server: &Server) -> Result<String> {
    let stdout = python::session(
        "etcd2_session.py",
        &[server.endpoint()],
        &[],
        SESSION_TIMEOUT,
        server.backend().name(),
    )
    .await?;
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
