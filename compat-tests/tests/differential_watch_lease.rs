//! Differential test for watch and lease commands: one scripted etcdctl session (`watch
//! --rev` run in the background and read until it goes quiet, `lease grant`,
//! `timetolive`, `keep-alive --once`, `revoke`, `list`, `put --lease`, a compacted watch)
//! runs against a fresh real etcd and a fresh Concord; the normalised transcripts must
//! be identical.
//!
//! On top of [`Normalizer`], lease ids (which each server chooses) are replaced by
//! `<lease-N>` in order of first appearance, in hex (etcdctl's simple output) and
//! decimal (`-w json`) form, and a lease's remaining TTL (which depends on timing) by
//! `<remaining>`. Revisions are not normalised. With `CONCORD_COMPAT_BACKENDS=etcd` the
//! session runs against two real etcds.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use concord_compat_tests::background::Background;
use concord_compat_tests::normalize::Normalizer;
use concord_compat_tests::transcripts::compare_with_etcd;
use concord_compat_tests::{Server, etcdctl};
use regex::Regex;

/// One step: an etcdctl run (`{lease}` stands for the last granted lease id), or a
/// background `watch` read until quiet.
#[derive(Debug)]
enum Step {
    Run(&'static [&'static str]),
    Watch(&'static [&'static str]),
}

use Step::{Run, Watch};

/// The session. Both servers start empty (revision 1).
const SCRIPT: &[Step] = &[
    Run(&["put", "a", "1"]),
    Run(&["put", "b", "2"]),
    Run(&["del", "a"]),
    Run(&["put", "a", "3"]),
    Watch(&["watch", "--rev=2", "", "--prefix"]),
    Watch(&["watch", "--rev=2", "a", "--prev-kv"]),
    Watch(&["watch", "--rev=3", "a", "c"]),
    Watch(&["watch", "--rev=100", "a"]),
    Run(&["lease", "grant", "100"]),
    Run(&["lease", "timetolive", "{lease}"]),
    Run(&["put", "la", "x", "--lease={lease}"]),
    // One attached key only: etcd lists several in no set order.
    Run(&["lease", "timetolive", "{lease}", "--keys"]),
    Run(&["put", "lb", "y", "--lease={lease}"]),
    Run(&["get", "la", "-w", "json"]),
    Run(&["lease", "keep-alive", "--once", "{lease}"]),
    Run(&["lease", "list"]),
    Run(&["lease", "revoke", "{lease}"]),
    Run(&["get", "l", "--prefix"]),
    Run(&["lease", "timetolive", "{lease}"]),
    Run(&["lease", "revoke", "{lease}"]),
    Run(&["lease", "keep-alive", "--once", "{lease}"]),
    Run(&["lease", "list"]),
    Run(&["lease", "grant", "0"]),
    Run(&["lease", "grant", "1"]),
    Run(&["lease", "grant", "9000000001"]),
    Run(&["put", "x", "y", "--lease=1234"]),
    Run(&["lease", "timetolive", "1234"]),
    Watch(&["watch", "--rev=1", "", "--prefix"]),
    Run(&["compaction", "4"]),
    Watch(&["watch", "--rev=2", "", "--prefix"]),
    Watch(&["watch", "--rev=4", "a"]),
];

/// Replaces lease ids (each server picks its own) and remaining TTLs.
struct LeaseIds {
    ids: Vec<u64>,
    remaining: Regex,
}

impl LeaseIds {
    fn new() -> Result<Self> {
        Ok(LeaseIds {
            ids: Vec::new(),
            remaining: Regex::new(r"remaining\(-?\d+s\)")?,
        })
    }

    fn learn(&mut self, id: u64) {
        if !self.ids.contains(&id) {
            self.ids.push(id);
        }
    }

    fn apply(&self, text: &str) -> String {
        let mut out = self
            .remaining
            .replace_all(text, "remaining(<remaining>)")
            .into_owned();
        for (i, id) in self.ids.iter().enumerate() {
            let name = format!("<lease-{}>", i + 1);
            out = out.replace(&format!("{id:016x}"), &name);
            out = out.replace(&format!("{id}"), &name);
        }
        out
    }
}

/// Runs [`SCRIPT`] against `server`; returns its normalised transcript.
async fn transcript(server: &Server) -> Result<String> {
    let normalizer = Normalizer::new(server.client_port(), server.peer_port())?;
    let granted = Regex::new(r"lease ([0-9a-f]{16}) granted")?;
    let mut leases = LeaseIds::new()?;
    let mut lease = String::from("0");
    let mut out = String::new();
    for (i, step) in SCRIPT.iter().enumerate() {
        let (Run(args) | Watch(args)) = step;
        let args: Vec<String> = args.iter().map(|a| a.replace("{lease}", &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = match step {
            Run(_) => {
                let result = etcdctl(&server.endpoint(), &args, None).await?;
                (Some(result.code), result.stdout, result.stderr)
            }
            Watch(_) => {
                let mut watch = Background::etcdctl(&server.endpoint(), &args)?;
                let lines = watch
                    .lines_until_quiet(Duration::from_millis(1500), Duration::from_secs(10))
                    .await;
                watch.kill().await?;
                let code = watch.wait_exit(Duration::from_secs(5)).await?;
                let mut stdout = lines.join("\n");
                if !lines.is_empty() {
                    stdout.push('\n');
                }
                (code, stdout, watch.stderr())
            }
        };
        if let Some(caps) = granted.captures(&stdout) {
            lease = caps[1].to_string();
            leases.learn(u64::from_str_radix(&lease, 16).context("lease id")?);
        }
        let kind = if matches!(step, Watch(_)) { "&" } else { "$" };
        let command = leases.apply(&args.join(" "));
        writeln!(out, "#{i:03} {kind} etcdctl {command}")?;
        writeln!(out, "#{i:03} exit {code:?}")?;
        for (stream, text) in [("out", &stdout), ("err", &stderr)] {
            for line in leases.apply(&normalizer.apply(text)).lines() {
                writeln!(out, "#{i:03} {stream}| {line}")?;
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn etcdctl_watch_and_lease_session_matches_real_etcd() -> Result<()> {
    let expected = compare_with_etcd("differential-watch-lease", transcript).await?;
    println!("{} steps:\n{expected}", SCRIPT.len());
    Ok(())
}
