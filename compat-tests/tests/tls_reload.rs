//! SIGHUP reloads TLS certificate files (Concord only): with a connection to the etcd
//! client port open (mutual TLS, v2 over HTTP/1.1 keep-alive, through tokio-rustls), the
//! server certificate and key files are replaced by ones from another CA and SIGHUP
//! sent; a new connection is then served the new certificate, and the open one stays
//! usable with the old session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::tls::{Concord, make_certificates, profile_env, rustls_client_config};
use concord_compat_tests::{concord_skipped, free_port};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A client trusting the CAs of `cas`, presenting the client certificate of `client`.
fn connector(cas: &[&Path], client: &Path) -> Result<TlsConnector> {
    let mut config = rustls_client_config(cas, Some(client), &[b"http/1.1"])?;
    // A resumed session shows the certificate of the handshake it resumes: every
    // connection here makes a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn connect(connector: &TlsConnector, port: u16) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    Ok(tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp)).await??)
}

/// The server certificate the connection was given.
fn served_certificate(stream: &TlsStream<TcpStream>) -> Result<Vec<u8>> {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .context("no server certificate")?;
    Ok(certs.first().context("empty chain")?.to_vec())
}

/// One keep-alive GET /version on `stream`; its answer names etcdserver.
async fn get_version(stream: &mut TlsStream<TcpStream>) -> Result<()> {
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("etcdcluster") {
            let n = stream.read(&mut chunk).await?;
            ensure!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(())
    })
    .await
    .context("no answer to GET /version")??;
    Ok(())
}

fn pem_der(path: &Path) -> Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_file(path)?.to_vec())
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_connections() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (old, new, live) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("live"),
    );
    for d in [&old, &new, &live] {
        std::fs::create_dir(d)?;
    }
    make_certificates(&old)?;
    make_certificates(&new)?;
    for file in ["ca.pem", "server.pem", "server-key.pem"] {
        std::fs::copy(old.join(file), live.join(file))?;
    }
    let port = free_port()?;
    let mut env = profile_env(&live, "server", "server-key.pem", true);
    env.push(("CONCORD_ADAPTERS__ETCD__TLS".into(), "server".into()));
    let args = [
        format!("--etcd-listen=127.0.0.1:{port}"),
        format!("--zk-listen=127.0.0.1:{}", free_port()?),
    ];
    let server = Concord::serve(dir.path(), "reload", &args, &env)?;
    // Clients trust both CAs and present the old CA's client certificate (the client CA
    // of the profile is not replaced).
    let connector = connector(&[&old, &new], &old)?;
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(connect(&connector, port).await.is_ok())
        })
        .await?;
    let mut established = connect(&connector, port).await?;
    get_version(&mut established).await?;
    ensure!(served_certificate(&established)? == pem_der(&old.join("server.pem"))?);

    for file in ["server.pem", "server-key.pem"] {
        std::fs::copy(new.join(file), live.join(file))?;
    }
    server.signal("HUP")?;
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(server.log().contains("TLS certificate reloaded"))
        })
        .await?;
    let mut fresh = connect(&connector, port).await?;
    ensure!(
        served_certificate(&fresh)? == pem_der(&new.join("server.pem"))?,
        "a new connection still gets the old certificate"
    );
    get_version(&mut fresh).await?;
    get_version(&mut established)
        .await
        .context("the connection made before the reload")?;

    // A key that does not go with the certificate: not reloaded, the new one stays.
    std::fs::copy(old.join("server-key.pem"), live.join("server-key.pem"))?;
    server.signal("HUP")?;
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(server.log().contains("TLS certificate not reloaded"))
        })
        .await?;
    let mut after = connect(&connector, port).await?;
    ensure!(served_certificate(&after)? == pem_der(&new.join("server.pem"))?);
    get_version(&mut after).await?;
    Ok(())
}
