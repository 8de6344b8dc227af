//! The metrics listener (`[metrics]`, as etcd's `--listen-metrics-urls`; Concord only),
//! driven with curl: `/metrics` in Prometheus's text format with real values (a leader,
//! a current revision that grows with a Put made through etcd-client), `/health` as
//! etcd 3.5 answers it, 404 elsewhere; no port at all unless enabled; over mutual TLS
//! (curl with `--cacert --cert --key`; without a client certificate, or in plaintext,
//! refused, with the log line saying why); and `--check-config` naming a bad `metrics.tls`
//! reference, and loading the metrics profile only when the listener is enabled.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::tls::{Concord, make_certificates, profile_env};
use concord_compat_tests::{concord_skipped, connect, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to log a refused handshake.
const SETTLE: Duration = Duration::from_secs(5);
const REFUSED_LINE: &str = "TLS handshake refused on the metrics port";
const NO_CERTIFICATE: &str = "peer sent no certificates";

/// One HTTP answer as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

/// `curl ARGS URL` (bounded to 5 s); `None` when no HTTP answer came (refused, TLS
/// failed, timed out).
fn curl(args: &[String], url: &str) -> Result<Option<Reply>> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{content_type}",
        ])
        .args(args)
        .arg(url)
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, trailer) = text.rsplit_once('\n').context("curl -w trailer")?;
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Ok(Some(Reply {
        status: status.parse().context("curl status")?,
        content_type: content_type.to_string(),
        body: body.to_string(),
    }))
}

/// curl's flags for a mutual-TLS client with the certificates of `dir`.
fn mutual_tls_flags(dir: &Path) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "--cacert".into(),
        file("ca.pem"),
        "--cert".into(),
        file("client.pem"),
        "--key".into(),
        file("client-key.pem"),
    ]
}

/// The value of the line `name VALUE` in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<i64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Concord on free etcd and ZooKeeper ports with `env`; with its etcd port.
fn start(dir: &Path, tag: &str, env: &[(String, OsString)]) -> Result<(Concord, u16)> {
    let etcd = free_port()?;
    let args = [
        format!("--etcd-listen=127.0.0.1:{etcd}"),
        format!("--zk-listen=127.0.0.1:{}", free_port()?),
    ];
    Ok((Concord::serve(dir, tag, &args, env)?, etcd))
}

fn metrics_env(port: u16, enabled: bool) -> Vec<(String, OsString)> {
    vec![
        (
            "CONCORD_METRICS__ENABLED".into(),
            enabled.to_string().into(),
        ),
        (
            "CONCORD_METRICS__LISTEN".into(),
            format!("127.0.0.1:{port}").into(),
        ),
    ]
}

/// Waits until `url` answers `/health` with 200.
async fn wait_healthy(server: &Concord, args: &[String], url: &str) -> Result<()> {
    server
        .wait_until(READY_TIMEOUT, || async {
            Ok(curl(args, url)?.is_some_and(|r| r.status == 200))
        })
        .await
}

#[tokio::test]
async fn metrics_health_and_404_on_the_plain_metrics_port() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (server, etcd) = start(dir.path(), "plain", &metrics_env(port, true))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&server, &[], &format!("{base}/health")).await?;

    let health = curl(&[], &format!("{base}/health"))?.context("no /health answer")?;
    ensure!(
        health.status == 200 && health.body == r#"{"health":"true","reason":""}"#,
        "{health:?}"
    );
    let scrape = || async {
        let reply = curl(&[], &format!("{base}/metrics"))?.context("no /metrics answer")?;
        ensure!(
            reply.status == 200 && reply.content_type == "text/plain; version=0.0.4; charset=utf-8",
            "{reply:?}"
        );
        Ok(reply.body)
    };
    let before = scrape().await?;
    for line in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_server_is_learner 0",
        "# TYPE etcd_debugging_mvcc_current_revision gauge",
    ] {
        ensure!(before.lines().any(|l| l == line), "no {line:?}:\n{before}");
    }
    ensure!(
        sample(&before, "etcd_mvcc_db_total_size_in_bytes").is_some_and(|size| size > 0),
        "{before}"
    );
    let revision =
        sample(&before, "etcd_debugging_mvcc_current_revision").context("no revision line")?;
    let mut client = connect(&format!("127.0.0.1:{etcd}")).await?;
    let put = client.put("metrics/k", "v", None).await?;
    let after = scrape().await?;
    let now = sample(&after, "etcd_debugging_mvcc_current_revision").context("no revision")?;
    ensure!(
        now > revision && now >= put.header().map_or(0, |h| h.revision()),
        "revision {revision} then {now} after a put:\n{after}"
    );
    let missing = curl(&[], &format!("{base}/nope"))?.context("no answer for /nope")?;
    ensure!(
        missing.status == 404 && missing.body == "404 page not found\n",
        "{missing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_metrics_port_is_closed_unless_enabled() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (server, etcd) = start(dir.path(), "off", &metrics_env(port, false))?;
    // The node serves (v2's /health on the etcd port), but nothing listens for metrics.
    wait_healthy(&server, &[], &format!("http://127.0.0.1:{etcd}/health")).await?;
    let connected = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    );
    ensure!(connected.is_err(), "something listens on the metrics port");
    ensure!(
        !server.log().contains("metrics listening"),
        "{}",
        server.log()
    );
    Ok(())
}

#[tokio::test]
async fn metrics_over_mutual_tls() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let mut env = metrics_env(port, true);
    env.extend(profile_env(dir.path(), "metrics", "server-key.pem", true));
    env.push(("CONCORD_METRICS__TLS".into(), "metrics".into()));
    let (server, _) = start(dir.path(), "tls", &env)?;
    let base = format!("https://127.0.0.1:{port}");
    let mutual = mutual_tls_flags(dir.path());
    wait_healthy(&server, &mutual, &format!("{base}/health")).await?;
    let reply = curl(&mutual, &format!("{base}/metrics"))?.context("no /metrics over TLS")?;
    ensure!(
        reply.status == 200 && reply.body.lines().any(|l| l == "etcd_server_has_leader 1"),
        "{reply:?}"
    );
    // Trusting the server is not enough: no client certificate, no answer.
    let ca_only = ["--cacert".to_string(), mutual[1].clone()];
    let anonymous = curl(&ca_only, &format!("{base}/metrics"))?;
    ensure!(
        anonymous.is_none(),
        "served without a client certificate: {anonymous:?}"
    );
    // Plaintext on the TLS port: no metrics.
    let plain = curl(&[], &format!("http://127.0.0.1:{port}/metrics"))?;
    ensure!(
        plain
            .as_ref()
            .is_none_or(|r| !r.body.contains("etcd_server_has_leader")),
        "plaintext was served on the TLS port: {plain:?}"
    );
    server
        .wait_until(SETTLE, || async {
            let log = server.log();
            Ok(log.matches(REFUSED_LINE).count() >= 2 && log.contains(NO_CERTIFICATE))
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn check_config_names_a_bad_metrics_profile_and_loads_a_good_one() -> Result<()> {
    if concord_skipped()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    make_certificates(dir.path())?;
    let port = free_port()?;
    let check = |tag: &str, env: Vec<(String, OsString)>| {
        let dir = dir.path().to_path_buf();
        let tag = tag.to_string();
        async move {
            let mut run = Concord::serve(&dir, &tag, &["--check-config".to_string()], &env)?;
            let status = run.exit_status(READY_TIMEOUT).await?;
            anyhow::Ok((status.success(), run.log().trim().to_string()))
        }
    };
    let with_profile = |key: &str, enabled: bool| {
        let mut env = metrics_env(port, enabled);
        env.extend(profile_env(dir.path(), "metrics", key, true));
        env.push(("CONCORD_METRICS__TLS".into(), "metrics".into()));
        env
    };
    let mut missing = metrics_env(port, true);
    missing.push(("CONCORD_METRICS__TLS".into(), "nope".into()));
    let (ok, log) = check("missing", missing).await?;
    ensure!(
        !ok && log
            == "concord: invalid configuration: defaults: key `metrics.tls`: \
                no TLS profile named \"nope\" ([tls.nope] is missing)",
        "{log}"
    );
    // The enabled listener's profile is loaded: a key that does not go with the
    // certificate is reported, naming the profile.
    let (ok, log) = check("mismatch", with_profile("client-key.pem", true)).await?;
    ensure!(
        !ok && log.starts_with("concord: tls.metrics: the key ")
            && log.contains("does not go with the certificate"),
        "{log}"
    );
    // Disabled, its profile is not loaded (as for the other listeners).
    let (ok, log) = check("disabled", with_profile("client-key.pem", false)).await?;
    ensure!(ok && log == "configuration is valid", "{log}");
    let (ok, log) = check("valid", with_profile("server-key.pem", true)).await?;
    ensure!(ok && log == "configuration is valid", "{log}");
    Ok(())
}
