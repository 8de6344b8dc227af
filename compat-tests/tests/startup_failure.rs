//! A start-up that fails once the kernel is up (Concord only): with the ZooKeeper port
//! already taken, `concord serve` must exit with status 1 and one line naming the
//! adapter and the address, every time, never killed by a signal. The kernel's consensus
//! thread used to outlive `main` then and crash in RocksDB's teardown now and again (1 or
//! 2 starts in 15), so the start is repeated.

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::tls::Concord;
use concord_compat_tests::{concord_skipped, free_port};

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
const STARTS: usize = 20;

#[tokio::test]
async fn a_taken_adapter_port_exits_with_an_error_not_a_signal() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let zk = taken.local_addr()?.to_string();
    for start in 0..STARTS {
        let etcd = format!("127.0.0.1:{}", free_port()?);
        let args = ["--etcd-listen", &etcd, "--zk-listen", &zk].map(String::from);
        let tag = format!("start{start}");
        let mut server = Concord::serve(dir.path(), &tag, &args, &[])?;
        let status = server.exit_status(EXIT_TIMEOUT).await?;
        let log = server.log();
        ensure!(
            status.signal().is_none() && status.code() == Some(1),
            "start {start} ended with {status}:\n{log}"
        );
        let expected = format!("concord: adapter zookeeper: cannot listen on {zk}: ");
        ensure!(log.contains(&expected), "start {start}:\n{log}");
    }
    Ok(())
}
