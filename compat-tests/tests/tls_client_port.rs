//! TLS on the etcd client port (Concord only): certificates made with `openssl` for a
//! test CA; with a client CA in the profile (mutual TLS) `etcdctl --cacert --cert --key`
//! (gRPC over `h2`) and curl (v2 over `http/1.1`) are served, while a client without a
//! certificate and a plaintext client are refused with a log line saying why; a key that
//! does not go with its certificate stops start-up with a line naming the profile.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::server::concord_command;
use concord_compat_tests::{Backend, backends, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A Concord process, killed when dropped.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
fn make_certificates(dir: &Path) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=concord-test-ca",
        ],
    )?;
    // Extensions make X.509 v3 certificates (webpki accepts no others).
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        let csr = format!("{name}.csr");
        let out = format!("{name}.pem");
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &out,
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

fn start(dir: &Path, port: u16, key: &str) -> Result<Running> {
    let log = dir.join(format!("concord-{port}.log"));
    let mut command = concord_command()?;
    command
        .args(["serve", "--data-dir"])
        .arg(dir.join(format!("data-{port}")))
        .args(["--etcd-listen", &format!("127.0.0.1:{port}")])
        .args(["--zk-listen", &format!("127.0.0.1:{}", free_port()?)])
        .env("CONCORD_TLS__SERVER__CERT", dir.join("server.pem"))
        .env("CONCORD_TLS__SERVER__KEY", dir.join(key))
        .env("CONCORD_TLS__SERVER__CLIENT_CA", dir.join("ca.pem"))
        .env("CONCORD_ADAPTERS__ETCD__TLS", "server")
        .stdin(Stdio::null());
    let file = std::fs::File::create(&log)?;
    command.stdout(file.try_clone()?).stderr(file);
    Ok(Running {
        child: command.spawn()?,
        log,
    })
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

const MUTUAL: [&str; 3] = ["cacert=ca.pem", "cert=client.pem", "key=client-key.pem"];

#[tokio::test]
async fn mutual_tls_on_the_etcd_client_port() -> Result<()> {
    if !backends()?.contains(&Backend::Concord) {
        println!("Concord not selected: skipped");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let server = start(dir.path(), port, "server-key.pem")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while !etcdctl(dir.path(), port, &MUTUAL, &["endpoint", "health"])?
        .status
        .success()
    {
        if Instant::now() > deadline {
            bail!("Concord with TLS did not answer:\n{}", server.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    if !backends()?.contains(&Backend::Concord) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let mut server = start(dir.path(), port, "client-key.pem")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(status) = server.child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("Concord started with a mismatched key");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = server.log();
    ensure!(
        !status.success()
            && stderr.contains("tls.server")
            && stderr.contains("does not go with the certificate"),
        "{status}: {stderr}"
    );
    Ok(())
}
