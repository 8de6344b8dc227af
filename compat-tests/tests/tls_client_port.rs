//! TLS on the etcd client port (Concord only): certificates made with `openssl` for a
//! test CA; with a client CA in the profile (mutual TLS) `etcdctl --cacert --cert --key`
//! (gRPC over `h2`) and curl (v2 over `http/1.1`) are served, while a client without a
//! certificate and a plaintext client are refused with a log line saying why; a key that
//! does not go with its certificate stops start-up with a line naming the profile, and
//! `concord serve --check-config` reports it with the same line. The `etcd-client`
//! crate over mutual TLS runs on real etcd and on Concord alike.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::server::connect_maybe_tls;
use concord_compat_tests::tls::{ClientPortTls, Concord, MUTUAL, make_certificates, profile_env};
use concord_compat_tests::{Backend, Server, concord_skipped, for_each_backend, free_port};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Concord with mutual TLS (profile `server`, key file `key`) on the etcd port `port`.
/// The environment of a mutual-TLS profile `server` (key file `key`) on the etcd port.
fn start_env(dir: &Path, key: &str) -> Vec<(String, std::ffi::OsString)> {
    let mut env = profile_env(dir, "server", key, true);
    env.push(("CONCORD_ADAPTERS__ETCD__TLS".into(), "server".into()));
    env
}

fn start(dir: &Path, port: u16, key: &str) -> Result<Concord> {
    let env = start_env(dir, key);
    let args = [
        format!("--etcd-listen=127.0.0.1:{port}"),
        format!("--zk-listen=127.0.0.1:{}", free_port()?),
    ];
    Concord::serve(dir, &port.to_string(), &args, &env)
}

fn etcdctl(dir: &Path, port: u16, tls: &[&str], args: &[&str]) -> Result<std::process::Output> {
    let mut command = Command::new("/usr/bin/etcdctl");
    command.env("ETCDCTL_API", "3").args([
        "--endpoints",
        &format!("https://127.0.0.1:{port}"),
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "3s",
    ]);
    for flag in tls {
        let (name, file) = flag.split_once('=').context("flag=file")?;
        command.arg(format!("--{name}={}", dir.join(file).display()));
    }
    Ok(command.args(args).output()?)
}

/// The `etcd-client` crate with a client certificate: put, get, a txn and a watch over
/// mutual TLS; with only the CA (no certificate), and in plaintext, nothing is served.
async fn etcd_client_over_mutual_tls(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let tls = ClientPortTls {
        dir: dir.path().to_path_buf(),
        mutual: true,
    };
    let server = Server::start_with_tls(backend, Some(tls.clone())).await?;
    let mut client = server.client().await?;
    client.put("/tls/crate", "over-tls", None).await?;
    let got = client.get("/tls/crate", None).await?;
    let value = got.kvs().first().map(|kv| kv.value().to_vec());
    ensure!(value.as_deref() == Some(&b"over-tls"[..]), "get: {value:?}");
    let txn = Txn::new()
        .when([Compare::value("/tls/crate", CompareOp::Equal, "over-tls")])
        .and_then([TxnOp::put("/tls/crate", "swapped", None)]);
    ensure!(client.txn(txn).await?.succeeded(), "txn compare failed");
    let (_watcher, mut events) = client.watch("/tls/watched", None).await?;
    client.put("/tls/watched", "seen", None).await?;
    let event = tokio::time::timeout(READY_TIMEOUT, events.message())
        .await
        .context("no watch event over TLS")??
        .context("watch stream ended")?;
    ensure!(!event.events().is_empty(), "empty watch response");

    let anonymous = ClientPortTls {
        dir: dir.path().to_path_buf(),
        mutual: false,
    };
    // The channel may connect lazily: the refusal shows on the first request.
    if let Ok(mut stranger) = connect_maybe_tls(&server.endpoint(), Some(&anonymous)).await {
        ensure!(
            stranger.get("/tls/crate", None).await.is_err(),
            "a client without a certificate was served"
        );
    }
    if let Ok(mut plain) = connect_maybe_tls(&server.endpoint(), None).await {
        ensure!(
            plain.get("/tls/crate", None).await.is_err(),
            "a plaintext client was served on the TLS port"
        );
    }
    Ok(())
}

/// The v2 API on a port of its own, with a TLS profile of its own (mutual TLS): curl
/// with a client certificate is served; without one, and in plaintext, it is refused.
#[tokio::test]
async fn v2_on_its_own_port_with_mutual_tls() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let v2_port = free_port()?;
    let mut env = profile_env(dir.path(), "v2", "server-key.pem", true);
    env.extend([
        (
            "CONCORD_ADAPTERS__ETCD_V2__LISTEN".to_string(),
            format!("127.0.0.1:{v2_port}").into(),
        ),
        ("CONCORD_ADAPTERS__ETCD_V2__TLS".to_string(), "v2".into()),
    ]);
    let args = [
        format!("--etcd-listen=127.0.0.1:{}", free_port()?),
        format!("--zk-listen=127.0.0.1:{}", free_port()?),
    ];
    let server = Concord::serve(dir.path(), "v2", &args, &env)?;
    let p = |f: &str| dir.path().join(f).display().to_string();
    let url = format!("https://127.0.0.1:{v2_port}/v2/keys/own/k");
    let curl = |extra: &[String]| {
        Command::new("curl")
            .args(["-s", "--max-time", "3", "--cacert", &p("ca.pem")])
            .args(extra)
            .output()
    };
    let mutual = [
        "--cert".to_string(),
        p("client.pem"),
        "--key".to_string(),
        p("client-key.pem"),
    ];
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(curl(
                &[
                    mutual.to_vec(),
                    vec![format!("https://127.0.0.1:{v2_port}/version")],
                ]
                .concat(),
            )?
            .status
            .success())
        })
        .await?;
    let put = curl(
        &[
            mutual.to_vec(),
            ["-XPUT", "-d", "value=own"].map(String::from).to_vec(),
            vec![url.clone()],
        ]
        .concat(),
    )?;
    let body = String::from_utf8_lossy(&put.stdout);
    ensure!(
        body.contains(r#""value":"own""#),
        "curl over the v2 TLS port: {body}"
    );
    let anonymous = curl(std::slice::from_ref(&url))?;
    ensure!(
        !anonymous.status.success(),
        "served without a client certificate"
    );
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "3"])
        .arg(format!("http://127.0.0.1:{v2_port}/v2/keys/own/k"))
        .output()?;
    ensure!(
        !String::from_utf8_lossy(&plain.stdout).contains("own"),
        "plaintext was served on the v2 TLS port"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    ensure!(
        log.matches("TLS handshake refused on the etcd v2 port")
            .count()
            >= 2,
        "no log line for the refused handshakes:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn etcd_client_crate_over_mutual_tls() -> Result<()> {
    for_each_backend(etcd_client_over_mutual_tls).await
}

#[tokio::test]
async fn mutual_tls_on_the_etcd_client_port() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let server = start(dir.path(), port, "server-key.pem")?;
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(etcdctl(dir.path(), port, &MUTUAL, &["endpoint", "health"])?
                .status
                .success())
        })
        .await?;
    // v2 over HTTP/1.1 and gRPC over h2, on the same TLS port and the same keys.
    let p = |f: &str| dir.path().join(f).display().to_string();
    let curl = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "--cacert",
            &p("ca.pem"),
            "--cert",
            &p("client.pem"),
            "--key",
            &p("client-key.pem"),
            "-XPUT",
            "-d",
            "value=secret",
        ])
        .arg(format!("https://127.0.0.1:{port}/v2/keys/tls/k"))
        .output()?;
    let body = String::from_utf8_lossy(&curl.stdout);
    ensure!(body.contains(r#""action":"set""#), "curl over TLS: {body}");
    let get = etcdctl(
        dir.path(),
        port,
        &MUTUAL,
        &["get", "/tls/k", "--print-value-only"],
    )?;
    ensure!(
        String::from_utf8_lossy(&get.stdout).trim() == "secret",
        "get: {get:?}"
    );
    let put = etcdctl(dir.path(), port, &MUTUAL, &["put", "/tls/k", "again"])?;
    ensure!(
        put.status.success(),
        "put: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    // No client certificate: refused, and the log says so.
    let anonymous = etcdctl(dir.path(), port, &["cacert=ca.pem"], &["get", "/tls/k"])?;
    ensure!(
        !anonymous.status.success(),
        "a client without a certificate was served"
    );
    let curl = Command::new("curl")
        .args(["-s", "--http1.1", "--cacert", &p("ca.pem")])
        .arg(format!("https://127.0.0.1:{port}/v2/keys/tls/k"))
        .output()?;
    ensure!(
        !curl.status.success(),
        "curl without a certificate was served"
    );
    // Plaintext on the TLS port: refused.
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "3"])
        .arg(format!("http://127.0.0.1:{port}/v2/keys/tls/k"))
        .output()?;
    ensure!(
        !String::from_utf8_lossy(&plain.stdout).contains("secret"),
        "plaintext was served on the TLS port"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    ensure!(
        log.matches("TLS handshake refused").count() >= 2,
        "no log line for the refused handshakes:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn a_key_that_does_not_match_its_certificate_stops_start_up() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let mut server = start(dir.path(), port, "client-key.pem")?;
    let status = server.exit_status(READY_TIMEOUT).await?;
    let stderr = server.log();
    ensure!(
        !status.success()
            && stderr.contains("tls.server")
            && stderr.contains("does not go with the certificate"),
        "{status}: {stderr}"
    );
    // `--check-config` loads the profile too, and says the same.
    let mut check = Concord::serve(
        dir.path(),
        "check",
        &[
            "--check-config".to_string(),
            format!("--etcd-listen=127.0.0.1:{port}"),
        ],
        &start_env(dir.path(), "client-key.pem"),
    )?;
    let check_status = check.exit_status(READY_TIMEOUT).await?;
    let line = |log: &str| {
        log.lines()
            .find(|l| l.starts_with("concord: "))
            .map(str::to_string)
    };
    ensure!(
        !check_status.success()
            && line(&check.log()).is_some()
            && line(&check.log()) == line(&stderr),
        "--check-config ({check_status}):\n{}\nstart-up:\n{stderr}",
        check.log()
    );
    // With the right key: valid.
    let mut check = Concord::serve(
        dir.path(),
        "check-ok",
        &["--check-config".to_string()],
        &start_env(dir.path(), "server-key.pem"),
    )?;
    ensure!(
        check.exit_status(READY_TIMEOUT).await?.success()
            && check.log().trim() == "configuration is valid",
        "{}",
        check.log()
    );
    Ok(())
}

#[tokio::test]
async fn concord_certs_makes_a_mutual_tls_setup_etcdctl_accepts() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let args = [
        "certs".into(),
        "--dir".into(),
        certs.clone().into_os_string(),
    ];
    let mut made = Concord::start(dir.path(), "certs", &args, &[])?;
    ensure!(
        made.exit_status(READY_TIMEOUT).await?.success(),
        "{}",
        made.log()
    );
    // Run again: nothing is overwritten.
    let mut again = Concord::start(dir.path(), "certs-again", &args, &[])?;
    ensure!(
        !again.exit_status(READY_TIMEOUT).await?.success()
            && again.log().contains("not overwriting"),
        "{}",
        again.log()
    );
    let port = free_port()?;
    let server = start(&certs, port, "server-key.pem")?;
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(etcdctl(&certs, port, &MUTUAL, &["endpoint", "health"])?
                .status
                .success())
        })
        .await?;
    let put = etcdctl(&certs, port, &MUTUAL, &["put", "/certs/k", "v"])?;
    ensure!(put.status.success(), "put: {put:?}");
    let get = etcdctl(
        &certs,
        port,
        &MUTUAL,
        &["get", "/certs/k", "--print-value-only"],
    )?;
    ensure!(
        String::from_utf8_lossy(&get.stdout).trim() == "v",
        "get: {get:?}"
    );
    let anonymous = etcdctl(&certs, port, &["cacert=ca.pem"], &["get", "/certs/k"])?;
    ensure!(
        !anonymous.status.success(),
        "served without a client certificate"
    );
    Ok(())
}
