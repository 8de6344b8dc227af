//! `ETCDCTL_API=2 etcdctl` (3.4, Debian) against real etcd (`--enable-v2`) and against
//! Concord: set, get, mk, mkdir, ls -r, update, rm, rmdir, rm -r, TTLs, swaps, watch and
//! exec-watch. Each command's output and exit code must be the same on both, with
//! store indexes made relative to the session's start.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::Server;
use concord_compat_tests::transcripts::compare_with_etcd;
use concord_compat_tests::v2::{IndexNormalizer, current_index};
use regex::{Captures, Regex};
use tokio::io::{AsyncBufReadExt, BufReader};

const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

fn etcdctl(endpoint: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(ETCDCTL_BIN);
    command
        .env("ETCDCTL_API", "2")
        .arg("--endpoints")
        .arg(format!("http://{endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

struct Session {
    endpoint: String,
    normalizer: IndexNormalizer,
    /// `[N]` after an error and `Index: N` lines of `-o extended`.
    indexes: Regex,
    transcript: String,
}

impl Session {
    fn normalize(&self, text: &str) -> String {
        let relative = self.indexes.replace_all(text, |c: &Captures| {
            let value: i64 = c[2].parse().unwrap_or_default();
            format!(
                "{}{}{}",
                &c[1],
                self.normalizer
                    .label(&format!("prevIndex={value}"))
                    .trim_start_matches("prevIndex="),
                &c[3]
            )
        });
        relative
            .lines()
            .map(|l| {
                if l.starts_with("TTL: ") {
                    "TTL: <ttl>"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn run(&mut self, args: &[&str]) -> Result<()> {
        let output = tokio::time::timeout(COMMAND_TIMEOUT, etcdctl(&self.endpoint, args).output())
            .await
            .with_context(|| format!("etcdctl {args:?} did not finish"))?
            .context("cannot run etcdctl (Debian's etcd-client)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.transcript.push_str(&format!(
            "$ etcdctl {}\n{}\n[exit {}]\n",
            args.join(" "),
            self.normalize(text.trim_end()),
            output.status.code().unwrap_or(-1)
        ));
        Ok(())
    }

    /// Starts `etcdctl ARGS` in the background, runs `trigger`, and records the first
    /// `lines` lines it prints.
    async fn background(&mut self, args: &[&str], trigger: &[&str], lines: usize) -> Result<()> {
        let mut child = etcdctl(&self.endpoint, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run etcdctl")?;
        let stdout = child.stdout.take().context("no stdout")?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.run(trigger).await?;
        let mut reader = BufReader::new(stdout).lines();
        self.transcript
            .push_str(&format!("$ etcdctl {} (background)\n", args.join(" ")));
        for _ in 0..lines {
            let line = tokio::time::timeout(COMMAND_TIMEOUT, reader.next_line())
                .await
                .with_context(|| format!("etcdctl {args:?} printed nothing"))??
                .unwrap_or_default();
            self.transcript.push_str(&format!("{line}\n"));
        }
        child.kill().await.ok();
        Ok(())
    }
}

async fn session(server: &Server) -> Result<String> {
    let endpoint = server.endpoint();
    let mut s = Session {
        normalizer: IndexNormalizer::new(current_index(&endpoint).await?)?,
        endpoint,
        indexes: Regex::new(r"(?m)(\[|Index: )(\d+)(\]|$)")?,
        transcript: String::new(),
    };
    for args in [
        &["set", "/t/foo", "bar"][..],
        &["get", "/t/foo"],
        &["mk", "/t/foo", "x"],
        &["mk", "/t/new", "y"],
        &["mkdir", "/t/d"],
        &["mkdir", "/t/d"],
        &["set", "/t/d/x/y", "deep"],
        &["ls", "-r", "--sort", "/t"],
        &["ls", "--sort", "-p", "/t"],
        &["update", "/t/foo", "baz"],
        &["update", "/t/none", "q"],
        &["get", "/t/none"],
        &["get", "/t/d"],
        &["rm", "/t/d"],
        &["rmdir", "/t/d"],
        &["rmdir", "/t/d/x/y"],
        &["rm", "-r", "/t/d"],
        &["ls", "-r", "--sort", "/t"],
        &["set", "/t2/x", "1", "--ttl", "100"],
        &["get", "/t2/x", "-o", "extended"],
        &["update", "/t2/x", "2", "--ttl", "200"],
        &["set", "/t3/a", "1", "--swap-with-value", "nope"],
        &["set", "/t3/a", "1"],
        &["set", "/t3/a", "2", "--swap-with-value", "1"],
        &["rm", "/t3/a", "--with-value", "nope"],
        &["rm", "/t3/a", "--with-value", "2"],
        &["mkdir", "/t4", "--ttl", "100"],
        &["updatedir", "/t4", "--ttl", "200"],
        &["rm", "-r", "/t"],
        &["ls", "--sort"],
        &["get", "/"],
        &["set", "/", "x"],
    ] {
        s.run(args).await?;
    }
    s.background(&["watch", "/w/k"], &["set", "/w/k", "woken"], 1)
        .await?;
    s.background(
        &["watch", "--recursive", "/w"],
        &["set", "/w/k2", "deep"],
        1,
    )
    .await?;
    s.background(
        // etcdctl 3.4's flag parser drops `--`, and exec-watch then takes the key
        // last.
        &[
            "exec-watch",
            "sh",
            "-c",
            "echo $ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE",
            "/w/k",
        ],
        &["set", "/w/k", "exec"],
        1,
    )
    .await?;
    Ok(s.transcript)
}

#[tokio::test]
async fn etcdctl_v2_session_matches_real_etcd() -> Result<()> {
    let expected = compare_with_etcd("etcdctl-v2", session).await?;
    ensure!(
        expected.matches("$ etcdctl").count() >= 35,
        "short:\n{expected}"
    );
    println!("{expected}");
    Ok(())
}
