//! TLS on the ZooKeeper adapter (Concord only), as ZooKeeper's `clientPort` beside
//! `secureClientPort`: one Concord serves a plain port and a mutual-TLS port at once.
//! kazoo (`use_ssl=True`, `ca`, `certfile`, `keyfile`) gets a session on the secure
//! port while another kazoo client uses the plain port, each seeing the other's nodes;
//! a TLS client without a client certificate and a plaintext client on the secure port
//! are refused, and the log says why. Certificates come from `openssl`
//! (`concord_compat_tests::tls`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::tls::{Concord, make_certificates, profile_env};
use concord_compat_tests::zookeeper::probe_session;
use concord_compat_tests::{Backend, backends, free_port, python};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Each kazoo run: a few requests, or a refused start bounded by 5 s in the script.
const KAZOO_TIMEOUT: Duration = Duration::from_secs(60);

async fn kazoo(args: &[String]) -> Result<String> {
    python::session("kazoo_tls.py", args, &[], KAZOO_TIMEOUT, "Concord").await
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test]
async fn kazoo_on_the_secure_port_beside_the_plain_one() -> Result<()> {
    if !backends()?.contains(&Backend::Concord) {
        println!("Concord not selected: skipped");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    make_certificates(dir)?;
    let (plain, secure) = (free_port()?, free_port()?);
    let mut env = profile_env(dir, "zk", "server-key.pem", true);
    env.extend([
        ("CONCORD_ADAPTERS__ZOOKEEPER__TLS".into(), "zk".into()),
        (
            "CONCORD_ADAPTERS__ZOOKEEPER__SECURE_LISTEN".into(),
            format!("127.0.0.1:{secure}").into(),
        ),
    ]);
    let args = [
        format!("--etcd-listen=127.0.0.1:{}", free_port()?),
        format!("--zk-listen=127.0.0.1:{plain}"),
    ];
    let server = Concord::serve(dir, "zk", &args, &env)?;
    let plain_endpoint = format!("127.0.0.1:{plain}");
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(probe_session(&plain_endpoint).await.is_ok())
        })
        .await?;
    let secure_endpoint = format!("127.0.0.1:{secure}");

    let both = kazoo(&[
        "both".into(),
        plain_endpoint.clone(),
        secure_endpoint.clone(),
        file(dir, "ca.pem"),
        file(dir, "client.pem"),
        file(dir, "client-key.pem"),
    ])
    .await?;
    let expected = "plain reads over tls version 0\n\
                    secure reads changed over tls\n\
                    plain sees it gone: True\n\
                    secure reads over plain\n\
                    secure sees it gone: True\n\
                    done\n";
    ensure!(both == expected, "kazoo over both ports:\n{both}");

    // Mutual TLS: a client without a certificate gets no session.
    let anonymous = kazoo(&[
        "refused".into(),
        secure_endpoint.clone(),
        file(dir, "ca.pem"),
    ])
    .await?;
    ensure!(anonymous.trim() == "refused", "{anonymous}");
    let log = server.log();
    ensure!(
        log.lines().any(
            |l| l.contains("TLS handshake refused on the zookeeper secure port")
                && l.contains("peer sent no certificates")
        ),
        "no log line for the client without a certificate:\n{log}"
    );

    // Plaintext on the secure port: refused, nothing falls back.
    let plaintext = kazoo(&["plaintext".into(), secure_endpoint.clone()]).await?;
    ensure!(plaintext.trim() == "refused", "{plaintext}");
    ensure!(
        probe_session(&secure_endpoint).await.is_err(),
        "a plaintext session on the secure port"
    );
    let log = server.log();
    ensure!(
        log.lines().any(
            |l| l.contains("TLS handshake refused on the zookeeper secure port")
                && l.contains("received corrupt message")
        ),
        "no log line for the plaintext client:\n{log}"
    );
    // The plain port is still served after all that.
    probe_session(&plain_endpoint).await?;
    Ok(())
}
