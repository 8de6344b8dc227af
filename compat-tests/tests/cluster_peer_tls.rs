//! A 3-member cluster whose members speak mutual TLS on the peer port, on real etcd
//! (`--peer-cert-file --peer-key-file --peer-trusted-ca-file --peer-client-cert-auth`)
//! and on Concord (`cluster.peer_tls`), with the certificates `concord certs` makes:
//!
//! * the members elect a leader and list `https://` peer URLs;
//! * a put through each member reads back linearizably from every member (writes on
//!   followers cross the peer port to the leader, reads take a read-index from it);
//! * the leader is killed with SIGKILL, the others elect a new one over TLS and take a
//!   write, and the killed member restarts and catches up;
//! * a TLS client without a certificate and a plaintext client on a peer port get no
//!   exchange: the connection is closed; Concord's log says why.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::check::pairs;
use concord_compat_tests::server::concord_command;
use concord_compat_tests::tls::rustls_client_config;
use concord_compat_tests::{Backend, Cluster, for_each_backend};
use etcd_client::GetOptions;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MEMBERS: usize = 3;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds the catch-up polling of a restarted member.
const CATCH_UP_ATTEMPTS: usize = 100;
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(100);

/// `concord certs --dir DIR --hosts 127.0.0.1`: the CA and the peer certificate.
fn make_certificates(dir: &Path) -> Result<()> {
    let out = concord_command()?
        .args(["certs", "--hosts", "127.0.0.1", "--dir"])
        .arg(dir)
        .output()
        .context("cannot run concord certs")?;
    ensure!(
        out.status.success(),
        "concord certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Everything the peer sends until it closes, or an error; bounded by [`IO_TIMEOUT`].
async fn until_closed<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Result<Vec<u8>, String>> {
    let mut seen = Vec::new();
    match tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut seen)).await {
        Ok(Ok(_)) => Ok(Ok(seen)),
        Ok(Err(e)) => Ok(Err(e.to_string())),
        Err(_) => bail!("the peer port kept the connection open for {IO_TIMEOUT:?}"),
    }
}

/// A TLS client trusting the CA but presenting no certificate, then a plaintext client:
/// the member at `peer_url` closes both without an exchange.
async fn strangers_are_refused(certs: &Path, peer_url: &str) -> Result<()> {
    let addr = peer_url
        .strip_prefix("https://")
        .with_context(|| format!("peer URL {peer_url} is not https"))?;
    let config = rustls_client_config(&[certs], None, &[])?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    // With TLS 1.3 the client's side of the handshake ends before the server has seen
    // (no) certificate; the refusal arrives at the first read.
    if let Ok(Ok(mut tls)) = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp)).await {
        let _ = tls.write_all(b"\0\0\0\x10hello, members").await;
        let _ = tls.flush().await;
        if let Ok(data) = until_closed(&mut tls).await? {
            ensure!(
                data.is_empty(),
                "an anonymous TLS client got {} bytes",
                data.len()
            );
        }
    }
    let mut plain = TcpStream::connect(addr).await?;
    plain.write_all(b"\0\0\0\x10hello, members").await?;
    if let Ok(data) = until_closed(&mut plain).await? {
        // Concord's TLS stack may answer with an alert record; etcd's Go server
        // may answer an HTTP 400. Neither is a frame of the peer protocol.
        let text = String::from_utf8_lossy(&data);
        ensure!(
            data.is_empty()
                || data[0] == 0x15
                || (text.starts_with("HTTP/1.") && text.contains("400")),
            "a plaintext client got {text:?}"
        );
    }
    Ok(())
}

async fn peer_tls_cluster(backend: Backend) -> Result<()> {
    let certs = tempfile::tempdir()?;
    make_certificates(certs.path())?;
    let mut cluster = Cluster::builder(backend, MEMBERS)
        .peer_mutual_tls(certs.path())
        .start()
        .await?;
    let members = cluster.member_list().await?;
    ensure!(members.len() == MEMBERS, "member list: {members:?}");
    for member in &members {
        ensure!(
            member.peer_urls().iter().all(|u| u.starts_with("https://")),
            "peer URLs of {}: {:?}",
            member.name(),
            member.peer_urls()
        );
    }

    // Writes through every member (followers forward over TLS), read back everywhere.
    for i in cluster.members() {
        let mut client = cluster.client(i).await?;
        client
            .put(format!("/tls/through-{i}"), format!("v{i}"), None)
            .await
            .with_context(|| format!("put through member {i}"))?;
    }
    let expected: Vec<(String, String)> = cluster
        .members()
        .into_iter()
        .map(|i| (format!("/tls/through-{i}"), format!("v{i}")))
        .collect();
    for i in cluster.members() {
        let mut client = cluster.client(i).await?;
        let all = client
            .get("/tls/", Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("linearizable read on member {i}"))?;
        ensure!(
            pairs(all.kvs()) == expected,
            "member {i} read {:?}",
            pairs(all.kvs())
        );
    }

    // A leader killed: the others elect over TLS, take a write, and the killed member
    // catches up after its restart.
    let leader = cluster.wait_leader().await?;
    cluster.kill9(leader)?;
    let new_leader = cluster.wait_new_leader(leader).await?;
    let mut client = cluster.client(new_leader).await?;
    client.put("/tls/after-kill", "still", None).await?;
    cluster.restart(leader).await?;
    let want = vec![("/tls/after-kill".to_string(), "still".to_string())];
    let mut caught_up = false;
    for _ in 0..CATCH_UP_ATTEMPTS {
        if cluster.read(leader, "/tls/after-kill", true).await.ok() == Some(want.clone()) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(CATCH_UP_INTERVAL).await;
    }
    ensure!(
        caught_up,
        "the restarted member never showed the write\n{}",
        cluster.log_tails()
    );
    ensure!(cluster.read(leader, "/tls/after-kill", false).await? == want);

    strangers_are_refused(certs.path(), &cluster.peer_url(new_leader)?).await?;
    if backend == Backend::Concord {
        let log = cluster.log_tail(new_leader)?;
        ensure!(
            log.contains("refusing peer connection: TLS handshake failed"),
            "no refusal in the log:\n{log}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_with_mutual_tls_on_the_peer_port() -> Result<()> {
    for_each_backend(peer_tls_cluster).await
}
