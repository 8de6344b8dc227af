//! ZooKeeper's own command-line client, `zkCli.sh` (3.8): a scripted series of commands
//! (create, get, ls, set, stat, delete, deleteall, sequential and ephemeral nodes,
//! ACLs, containers, TTL nodes, ...) runs against real ZooKeeper and against Concord;
//! the normalized outputs (log lines, times and zxids removed, zxids kept only by their
//! relations) and exit codes must be equal line for line.
//!
//! Most steps are one `zkCli.sh -server HOST:PORT cmd args...` each (one session per
//! command, as a shell script would use it); the steps that need one session (its
//! ephemerals, its auth) feed a script on stdin.

use std::time::Duration;

use anyhow::{Result, ensure};
use concord_compat_tests::zookeeper::{ZKCLI, ZkServer, compare_with_zookeeper, run_bounded};

/// One zkCli run: a JVM start and one session.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

enum Step {
    /// `zkCli.sh -server ... <args>`.
    One(&'static str),
    /// `zkCli.sh -server ...` with these commands on stdin.
    Script(&'static [&'static str]),
}

use Step::{One, Script};

const STEPS: &[Step] = &[
    One("create /cli hello"),
    One("create /cli again"),
    One("create /cli/a/b x"),
    One("get /cli"),
    One("get -s /cli"),
    One("ls /"),
    One("ls -s /cli"),
    One("set /cli world"),
    One("set -s /cli world2"),
    One("set -v 0 /cli x"),
    One("set -v 2 /cli world3"),
    One("stat /cli"),
    One("stat /missing"),
    One("create /cli/child1 c1"),
    One("create /cli/child2"),
    One("get /cli/child2"),
    One("create /cli/empty \"\""),
    One("get -s /cli/empty"),
    One("ls /cli"),
    One("ls -R /cli"),
    One("stat /cli"),
    One("delete /cli"),
    One("delete -v 5 /cli/child1"),
    One("delete -v 0 /cli/child1"),
    One("delete /cli/child1"),
    One("create -s /cli/s- a"),
    One("create -s /cli/s- b"),
    Script(&[
        "create -e /cli/eph x",
        "create -s -e /cli/e- y",
        "create /cli/eph/child z",
        "ls /cli",
        // One match only: the order of several is a hash set's.
        "getEphemerals /cli/e-",
        "stat /cli/eph",
        "quit",
    ]),
    One("ls /cli"),
    One("stat /cli/eph"),
    One("getAcl /cli"),
    One("getAcl -s /cli"),
    Script(&[
        "addauth digest user:pw",
        "create /cli/secure s auth::cdrwa",
        "getAcl /cli/secure",
        "get /cli/secure",
        "set /cli/secure s2",
        "quit",
    ]),
    One("get /cli/secure"),
    One("set /cli/secure x"),
    One("getAcl /cli/secure"),
    One("stat /cli/secure"),
    Script(&[
        "addauth digest user:pw",
        "setAcl /cli/secure world:anyone:r",
        "getAcl -s /cli/secure",
        "quit",
    ]),
    One("get /cli/secure"),
    One("setAcl /cli/child2 world:anyone:r"),
    One("getAcl -s /cli/child2"),
    One("set /cli/child2 z"),
    One("create /cli/child2/x"),
    One("setAcl -v 0 /cli/child2 world:anyone:cdrwa"),
    One("create /cli/bad x digest:nocolon:cdrwa"),
    One("create /cli/bad x bogus:x:cdrwa"),
    One("create /cli/ipacl x ip:127.0.0.1:cdrwa"),
    One("get /cli/ipacl"),
    One("create -c /cli/ctr"),
    One("create -t 600000 /cli/ttl t"),
    One("stat /cli/ttl"),
    One("create -e -t 1000 /cli/ettl"),
    One("whoami"),
    One("getAllChildrenNumber /cli"),
    One("sync /cli"),
    One("ls -R /cli"),
    One("deleteall /cli"),
    One("ls /"),
    One("get /missing"),
    One("deleteall /missing"),
    One("ls /missing"),
    One("create relative x"),
    One("create /trailing/ x"),
];

/// zkCli's own chatter that does not depend on the server: the banner, SLF4J's
/// warnings, log lines and the session's connection events.
fn noise(line: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "SLF4J:",
        "Connecting to ",
        "Welcome to ZooKeeper!",
        "JLine support is",
        "WATCHER::",
        "WatchedEvent state:",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p)) || is_log_line(line)
}

/// `2026-01-01 00:00:00,000 [myid:] - INFO ...` and the like.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 23
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
}

fn rel(a: i64, b: i64) -> &'static str {
    match a.cmp(&b) {
        std::cmp::Ordering::Less => "<",
        std::cmp::Ordering::Equal => "==",
        std::cmp::Ordering::Greater => ">",
    }
}

fn zxid(value: &str) -> i64 {
    i64::from_str_radix(value.trim().trim_start_matches("0x"), 16).unwrap_or(-1)
}

/// Drops the noise (and the blank line zkCli prints before each watcher line), replaces
/// times with `<time>`, zxids with `<zxid>` plus one line of their relations, and a
/// session id in `ephemeralOwner` with `<session>`.
fn normalize(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let (mut czxid, mut mzxid) = (0, 0);
    for line in output.lines() {
        if noise(line) {
            if (line.starts_with("WATCHER::") || line.starts_with("WatchedEvent"))
                && lines.last().is_some_and(|l| l.is_empty())
            {
                lines.pop();
            }
            continue;
        }
        let normalized = if let Some(v) = line.strip_prefix("cZxid = ") {
            czxid = zxid(v);
            "cZxid = <zxid>".to_string()
        } else if let Some(v) = line.strip_prefix("mZxid = ") {
            mzxid = zxid(v);
            "mZxid = <zxid>".to_string()
        } else if let Some(v) = line.strip_prefix("pZxid = ") {
            let pzxid = zxid(v);
            lines.push("pZxid = <zxid>".to_string());
            format!(
                "(czxid{}mzxid pzxid{}czxid pzxid{}mzxid)",
                rel(czxid, mzxid),
                rel(pzxid, czxid),
                rel(pzxid, mzxid)
            )
        } else if line.starts_with("ctime = ") || line.starts_with("mtime = ") {
            format!("{}= <time>", &line[..6])
        } else if let Some(v) = line.strip_prefix("ephemeralOwner = ") {
            if v == "0x0" {
                line.to_string()
            } else {
                "ephemeralOwner = <session>".to_string()
            }
        } else {
            line.to_string()
        };
        lines.push(normalized);
    }
    lines
}

async fn zkcli(server: &ZkServer, args: Option<&str>, input: Option<String>) -> Result<String> {
    // stdout and stderr on one pipe, in the order zkCli wrote them (it flushes both
    // after each line).
    let command_line = format!(
        "exec {ZKCLI} -server {} {} 2>&1",
        server.zk_endpoint(),
        args.unwrap_or("")
    );
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(command_line);
    let output = run_bounded(command, input.as_deref(), COMMAND_TIMEOUT).await?;
    let mut lines = normalize(&output.stdout);
    lines.push(format!(
        "exit {}",
        output
            .status
            .code()
            .map_or_else(|| "by signal".to_string(), |c| c.to_string())
    ));
    Ok(lines.join("\n"))
}

async fn run_session(server: &ZkServer) -> Result<String> {
    let mut transcript = String::new();
    for step in STEPS {
        let (title, text) = match step {
            One(args) => (format!("$ {args}"), zkcli(server, Some(args), None).await?),
            Script(commands) => {
                let mut script = commands.join("\n");
                script.push('\n');
                (
                    format!("$ script: {}", commands.join("; ")),
                    zkcli(server, None, Some(script)).await?,
                )
            }
        };
        transcript.push_str(&title);
        transcript.push('\n');
        transcript.push_str(&text);
        transcript.push('\n');
    }
    ensure!(
        transcript.contains("Created /cli\n") && transcript.contains("[cli, zookeeper]"),
        "the zkCli session did not create /cli:\n{transcript}"
    );
    Ok(transcript)
}

#[tokio::test]
async fn zkcli_session_matches_real_zookeeper() -> Result<()> {
    let expected = compare_with_zookeeper("zkcli", run_session).await?;
    println!("{expected}");
    Ok(())
}

#[test]
fn normalize_drops_noise_and_keeps_relations() {
    let raw = "Connecting to 127.0.0.1:1\nWelcome to ZooKeeper!\nJLine support is disabled\n\
               \nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null\n\
               hello\n\ncZxid = 0xa\nctime = Wed Nov 25 08:21:23 UTC 2026\nmZxid = 0x12\n\
               mtime = Wed Nov 25 08:21:26 UTC 2026\npZxid = 0xa\nephemeralOwner = 0x1000\n";
    assert_eq!(
        normalize(raw),
        vec![
            "hello",
            "",
            "cZxid = <zxid>",
            "ctime = <time>",
            "mZxid = <zxid>",
            "mtime = <time>",
            "pZxid = <zxid>",
            "(czxid<mzxid pzxid==czxid pzxid<mzxid)",
            "ephemeralOwner = <session>",
        ]
    );
}
