//! Running the real `etcdctl` (API v3) against an endpoint, with a bounded wait.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// Debian's `etcd-client` package installs it here.
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// Longest an etcdctl run may take (its own dial and command timeouts are 2 s and 5 s).
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one etcdctl run printed, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code (etcdctl exits 1 on a server error, 3 on a malformed txn).
    pub code: i32,
    /// Standard output, as text.
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
}

impl Output {
    /// Whether etcdctl exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The last line of stderr: where etcdctl puts its `Error: ...` message, after the
    /// client library's JSON log line.
    pub fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

/// Runs `etcdctl --endpoints=ENDPOINT ARGS...` with `ETCDCTL_API=3`, feeding `stdin`
/// (closed right after) when given.
pub async fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut command = Command::new(ETCDCTL_BIN);
    command
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {ETCDCTL_BIN}"))?;
    let run = async {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .context("cannot write etcdctl's stdin")?;
            // Dropping the pipe closes it: etcdctl's txn reads until end of input.
        }
        child
            .wait_with_output()
            .await
            .context("cannot wait for etcdctl")
    };
    let output = tokio::time::timeout(ETCDCTL_TIMEOUT, run)
        .await
        .with_context(|| format!("etcdctl {args:?} did not finish within {ETCDCTL_TIMEOUT:?}"))??;
    let code = output.status.code().ok_or_else(|| {
        anyhow!(
            "etcdctl {args:?} was killed by a signal ({})",
            output.status
        )
    })?;
    Ok(Output {
        code,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// [`etcdctl()`] bound to one endpoint.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    endpoint: String,
}

impl Etcdctl {
    /// An etcdctl that talks to `endpoint` (`127.0.0.1:PORT`).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Etcdctl {
            endpoint: endpoint.into(),
        }
    }

    /// Runs etcdctl with `args` and no input.
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        etcdctl(&self.endpoint, args, None).await
    }

    /// Runs etcdctl with `args`, feeding it `stdin`.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Result<Output> {
        etcdctl(&self.endpoint, args, Some(stdin)).await
    }
}
