//! TLS on the ZooKeeper adapter (Concord only), as ZooKeeper's `clientPort` beside
//! `secureClientPort`: one Concord serves a plain port and a mutual-TLS port at once.
//! Two real clients use the secure port while another session of the same kind uses the
//! plain one, each seeing the other's nodes:
//! - kazoo (`use_ssl=True`, `ca`, `certfile`, `keyfile`); a TLS client without a client
//!   certificate and a plaintext client on the secure port are refused, and the log says
//!   why;
//! - the Rust `zookeeper-client` crate (`tls` feature: `TlsOptions` with the CA and the
//!   client certificate, a `tcp+tls://` connect string): create, getData, setData,
//!   getChildren, an ephemeral node, delete; with the CA but no client certificate it
//!   gets no session, and the log says why.
//!
//! Certificates come from `openssl` (`concord_compat_tests::tls`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::tls::{Concord, make_certificates, profile_env};
use concord_compat_tests::zookeeper::probe_session;
use concord_compat_tests::{concord_skipped, free_port, python};
use zookeeper_client as zk;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Each kazoo run: a few requests, or a refused start bounded by 5 s in the script.
const KAZOO_TIMEOUT: Duration = Duration::from_secs(60);
/// Each `zookeeper-client` step (a connect or one request).
const STEP: Duration = Duration::from_secs(10);
/// The session timeout a refused `zookeeper-client` asks for: it gives up after that.
const REFUSED_SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a refused `zookeeper-client` may try before the test calls it a hang.
const REFUSED_WITHIN: Duration = Duration::from_secs(15);
/// How long the server may take to log a refused handshake, or to remove an ephemeral.
const SETTLE: Duration = Duration::from_secs(5);
const REFUSED_LINE: &str = "TLS handshake refused on the zookeeper secure port";
const NO_CERTIFICATE: &str = "peer sent no certificates";

async fn kazoo(args: &[String]) -> Result<String> {
    python::session("kazoo_tls.py", args, &[], KAZOO_TIMEOUT, "Concord").await
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// A Concord with certificates in `dir` serving ZooKeeper on a plain port and on a
/// mutual-TLS secure port (profile `zk`, client CA `ca.pem`), once a session on the plain
/// port works; with the plain and the secure `host:port`.
async fn concord_with_secure_port(dir: &Path) -> Result<(Concord, String, String)> {
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
    Ok((server, plain_endpoint, format!("127.0.0.1:{secure}")))
}

/// Waits (bounded) until the log has a line with all of `parts`.
async fn wait_for_log_line(server: &Concord, parts: &[&str]) -> Result<()> {
    server
        .wait_until(SETTLE, || async {
            Ok(server
                .log()
                .lines()
                .any(|l| parts.iter().all(|part| l.contains(part))))
        })
        .await
        .with_context(|| format!("no log line with {parts:?}"))
}

#[tokio::test]
async fn kazoo_on_the_secure_port_beside_the_plain_one() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let (server, plain_endpoint, secure_endpoint) = concord_with_secure_port(dir).await?;

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

/// `zookeeper-client` with the CA of `dir` and, when `identity`, the client certificate.
fn tls_options(dir: &Path, identity: bool) -> Result<zk::TlsOptions> {
    let options = zk::TlsOptions::new().with_pem_ca(&read(dir, "ca.pem")?)?;
    Ok(if identity {
        options.with_pem_identity(&read(dir, "client.pem")?, &read(dir, "client-key.pem")?)?
    } else {
        options
    })
}

async fn connect(connector: zk::Connector, cluster: &str) -> Result<zk::Client> {
    tokio::time::timeout(STEP, connector.connect(cluster))
        .await
        .with_context(|| format!("no session on {cluster} within {STEP:?}"))?
        .with_context(|| format!("no session on {cluster}"))
}

async fn step<T>(what: &str, request: impl Future<Output = Result<T, zk::Error>>) -> Result<T> {
    tokio::time::timeout(STEP, request)
        .await
        .with_context(|| format!("{what}: no answer within {STEP:?}"))?
        .with_context(|| what.to_string())
}

async fn children(client: &zk::Client, path: &str) -> Result<Vec<String>> {
    let (mut children, _) = step("getChildren", client.get_children(path)).await?;
    children.sort();
    Ok(children)
}

#[tokio::test]
async fn zookeeper_client_crate_over_mutual_tls() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    // The crate builds its rustls `ClientConfig` with `ClientConfig::builder()`, which
    // takes the process-wide provider; with both ring (ours) and aws-lc-rs (the crate's
    // rustls default) compiled in there is none until one is installed. An `Err` means
    // one already is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let (server, plain_endpoint, secure_endpoint) = concord_with_secure_port(dir).await?;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());

    let secure = connect(
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_tls(tls_options(dir, true)?),
        &format!("tcp+tls://{secure_endpoint}"),
    )
    .await?;
    let plain = connect(
        zk::Client::connector().with_session_timeout(Duration::from_secs(10)),
        &plain_endpoint,
    )
    .await?;
    ensure!(
        secure.session_id().0 != 0 && secure.session_id() != plain.session_id(),
        "sessions {} and {}",
        secure.session_id(),
        plain.session_id()
    );

    // Over TLS: create, getData, setData, a child, getChildren.
    let (stat, _) = step("create", secure.create("/tls-crate", b"over tls", &open)).await?;
    ensure!(
        stat.version == 0 && stat.data_length == 8,
        "create: {stat:?}"
    );
    let (data, stat) = step("getData", secure.get_data("/tls-crate")).await?;
    ensure!(
        data == b"over tls" && stat.version == 0,
        "getData: {data:?} {stat:?}"
    );
    let stat = step(
        "setData",
        secure.set_data("/tls-crate", b"changed", Some(0)),
    )
    .await?;
    ensure!(stat.version == 1, "setData: {stat:?}");
    let stale = tokio::time::timeout(STEP, secure.set_data("/tls-crate", b"x", Some(0))).await?;
    ensure!(
        matches!(stale, Err(zk::Error::BadVersion)),
        "setData with version 0 after a change: {stale:?}"
    );
    step(
        "create child",
        secure.create("/tls-crate/child", b"", &open),
    )
    .await?;
    step(
        "create ephemeral",
        secure.create("/tls-crate/session", b"", &ephemeral),
    )
    .await?;
    ensure!(
        children(&secure, "/tls-crate").await? == ["child", "session"],
        "children over tls"
    );

    // The plain port sees all of it, the ephemeral owned by the TLS session, and writes
    // that the TLS session sees.
    let (data, stat) = step("plain getData", plain.get_data("/tls-crate")).await?;
    ensure!(
        data == b"changed" && stat.version == 1,
        "plain getData: {data:?} {stat:?}"
    );
    let owner = step("plain exists", plain.check_stat("/tls-crate/session")).await?;
    ensure!(
        owner.map(|stat| stat.ephemeral_owner) == Some(secure.session_id().0),
        "the ephemeral's owner: {owner:?}"
    );
    step(
        "plain create",
        plain.create("/tls-crate/plain", b"p", &open),
    )
    .await?;
    ensure!(
        children(&secure, "/tls-crate").await? == ["child", "plain", "session"],
        "children over tls after the plain create"
    );
    let (data, _) = step(
        "getData of the plain node",
        secure.get_data("/tls-crate/plain"),
    )
    .await?;
    ensure!(data == b"p", "the plain node over tls: {data:?}");

    // Deletes over TLS, seen on the plain port.
    for child in ["child", "plain", "session"] {
        step(
            "delete",
            secure.delete(&format!("/tls-crate/{child}"), None),
        )
        .await?;
    }
    step("delete", secure.delete("/tls-crate", Some(1))).await?;
    ensure!(
        step("exists", secure.check_stat("/tls-crate"))
            .await?
            .is_none(),
        "deleted node still there over tls"
    );
    ensure!(
        step("plain exists", plain.check_stat("/tls-crate"))
            .await?
            .is_none(),
        "deleted node still there on the plain port"
    );

    // A new ephemeral goes away with the TLS session (closed when the client drops).
    step(
        "create ephemeral",
        secure.create("/tls-crate-session", b"", &ephemeral),
    )
    .await?;
    drop(secure);
    server
        .wait_until(SETTLE, || async {
            Ok(step("plain exists", plain.check_stat("/tls-crate-session"))
                .await?
                .is_none())
        })
        .await
        .context("the ephemeral of the closed TLS session stayed")?;

    // Mutual TLS: with the CA but no client certificate, no session (the crate retries
    // until its session timeout; fail_eagerly makes it stop after the one host).
    let anonymous = tokio::time::timeout(
        REFUSED_WITHIN,
        zk::Client::connector()
            .with_session_timeout(REFUSED_SESSION_TIMEOUT)
            .with_fail_eagerly()
            .with_tls(tls_options(dir, false)?)
            .connect(&format!("tcp+tls://{secure_endpoint}")),
    )
    .await;
    match anonymous {
        Ok(Ok(client)) => {
            anyhow::bail!(
                "a session without a client certificate: {}",
                client.session_id()
            )
        }
        Ok(Err(error)) => println!("without a client certificate: {error}"),
        Err(_) => println!("without a client certificate: nothing within {REFUSED_WITHIN:?}"),
    }
    wait_for_log_line(&server, &[REFUSED_LINE, NO_CERTIFICATE]).await?;
    // The plain session is unaffected.
    ensure!(
        step("plain exists", plain.check_stat("/")).await?.is_some(),
        "the root over the plain port"
    );
    Ok(())
}
