//! Long-running etcdctl commands (`watch`, `lock`, `elect`) run in the background, their
//! stdout read line by line with a bounded wait.
//!
//! A [`Background`] owns its child process: it is killed (SIGKILL) and reaped by
//! [`Background::kill`], and killed when dropped (tokio's `kill_on_drop`), so a failing
//! test leaves nothing running.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::etcdctl::ETCDCTL_BIN;

/// The longest [`Background::wait_exit`] waits by default.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A background `etcdctl` process and the lines it has printed on stdout so far.
#[derive(Debug)]
pub struct Background {
    args: Vec<String>,
    child: Child,
    pid: u32,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Ends when stderr reaches end of file.
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Starts `etcdctl --endpoints=ENDPOINT ARGS...` (API v3) with stdin closed.
    pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(ETCDCTL_BIN);
        command
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {ETCDCTL_BIN} {args:?}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("etcdctl {args:?} exited at once"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            // Ends at end of file (the process exited) or when the receiver is gone.
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        let stderr_reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = collected.lock() {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Background {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            pid,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the process has written on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The next stdout line, waiting at most `timeout`; an error on timeout or when
    /// stdout has ended.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!(
                "etcdctl {:?} closed its stdout (stderr: {:?})",
                self.args,
                self.stderr()
            ),
            Err(_) => bail!(
                "etcdctl {:?} printed no line within {timeout:?} (stderr: {:?})",
                self.args,
                self.stderr()
            ),
        }
    }

    /// The next `n` stdout lines, each waited for at most `timeout`.
    pub async fn next_lines(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let mut lines = Vec::with_capacity(n);
        for i in 0..n {
            let line = self
                .next_line(timeout)
                .await
                .with_context(|| format!("after {i} of {n} lines: {lines:?}"))?;
            lines.push(line);
        }
        Ok(lines)
    }

    /// Checks that no stdout line arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) -> Result<()> {
        match tokio::time::timeout(window, self.lines.recv()).await {
            Err(_) | Ok(None) => Ok(()),
            Ok(Some(line)) => bail!(
                "etcdctl {:?} printed {line:?} but should have stayed silent",
                self.args
            ),
        }
    }

    /// Every stdout line until none arrives for `quiet`, stdout ends, or `limit` has
    /// passed (whichever comes first).
    pub async fn lines_until_quiet(&mut self, quiet: Duration, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.lines.recv()).await {
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(_) => return lines,
            }
        }
    }

    /// Sends a signal by name (`INT`, `TERM`, `KILL`, ...) with `kill(1)`.
    pub async fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// Waits at most `timeout` for the process to exit; its exit code (`None` if it
    /// was killed by a signal).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("etcdctl {:?} did not exit within {timeout:?}", self.args))?
            .context("cannot wait for etcdctl")?;
        // The process is gone, but its last stderr bytes may still be in the pipe.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(timeout, reader).await;
        }
        Ok(status.code())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.start_kill().context("cannot kill etcdctl")?;
        }
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .context("etcdctl did not die after SIGKILL")?
            .context("cannot reap etcdctl")?;
        Ok(())
    }
}
