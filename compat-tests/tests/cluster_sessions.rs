//! Sessions and leases across failovers, on 3-member clusters:
//!
//! * **etcd lease across a leader kill** (real etcd and Concord, as [`backends`]
//!   selects): an etcd-client grants a lease, puts keys with it and keeps it alive
//!   with the `LeaseKeepAlive` stream, opened on the leader and re-opened on another
//!   member whenever it breaks (as a real client's keeper does); the leader is killed
//!   with SIGKILL; 3 TTLs later the keys are still there on every live member and
//!   TimeToLive shows a positive TTL; once the keep-alives stop the keys go within a
//!   bound (expiry still works after the failover).
//! * **kazoo lock across a leader kill** (Concord): a kazoo client with every member as
//!   host, connected to the leader (or, in a second test, to a follower), holds a
//!   `Lock` and an ephemeral node (`python/kazoo_cluster_lock.py`); the leader is
//!   killed; kazoo must keep its session, moving it to another member when its own
//!   died (SUSPENDED → CONNECTED, never LOST), and still hold the lock and the
//!   ephemeral; a second client cannot take the lock until the holder releases it.
//! * **a ZooKeeper session moves between members** (Concord): a session started on
//!   member A only (`python/kazoo_holder.py`) is resumed on another member with its id
//!   and password (`python/kazoo_cluster_resume.py`) after A is killed (A a follower,
//!   or the leader) or frozen with SIGSTOP (A the leader), at once, as a client does
//!   (so during the election when A led); the ephemeral is still there, owned by the
//!   session; after the session is closed it is gone on every member, A included once
//!   it runs again.
//! * **ephemerals go only by expiry** (Concord): a session whose client is frozen
//!   (SIGSTOP), or killed with the leader killed too while its timeout runs, keeps its
//!   ephemeral for at least half its timeout, then loses it within a bound.
//!
//! Every wait is bounded, every process started is killed when its owner is dropped,
//! and the scenarios run one at a time (they measure timeouts on a shared machine).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use concord_compat_tests::check::keys;
use concord_compat_tests::python::crate_dir;
use concord_compat_tests::zookeeper::kill_process_group;
use concord_compat_tests::{Backend, Cluster, backends, for_each_backend};
use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;
use zookeeper_client as zk;

const MEMBERS: usize = 3;

/// The etcd lease's TTL (seconds); keep-alives go every third of it, as etcd-client's.
const LEASE_TTL: i64 = 5;
const LEASE_KEYS: [&str; 2] = ["sessions/lease/a", "sessions/lease/b"];
/// How long after the keep-alives stop the lease's keys may take to go, beyond its TTL
/// (etcd checks expiry every 500 ms, then revokes through Raft).
const EXPIRY_SLACK: Duration = Duration::from_secs(5);

/// The kazoo lock holder's session timeout: well above an election (1-2 s).
const LOCK_SESSION_TIMEOUT_S: u32 = 15;
/// The resumed sessions' timeout.
const MOVED_SESSION_TIMEOUT_S: u32 = 10;
/// The timeout of the sessions that are left to expire.
const EXPIRING_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// How long past its timeout an abandoned session's ephemeral may stay: an election
/// (the new leader restarts every lease's clock, plus one election timeout), a lease
/// tick and the revoke's commit.
const EPHEMERAL_SLACK: Duration = Duration::from_secs(10);

/// One bounded step: an RPC, a ZooKeeper connect, one line from a script.
const STEP: Duration = Duration::from_secs(3);
/// Bounds the retries of one read while a cluster settles after a failover.
const SETTLE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(200);
/// Bounds a whole Python script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a script may take to connect and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(40);
/// Keep-alive streams the keeper opens at most (each broken one is retried after
/// [`POLL`], so this bounds a keeper that never gets through).
const MAX_KEEP_ALIVE_STREAMS: usize = 500;

/// The scenarios measure timeouts: they run one at a time, not as parallel tests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether Concord is selected; ZooKeeper scenarios have no etcd counterpart.
fn concord_selected(scenario: &str) -> Result<bool> {
    let selected = backends()?.contains(&Backend::Concord);
    if !selected {
        println!("{scenario}: Concord not selected, skipped (real etcd has no ZooKeeper port)");
    }
    Ok(selected)
}

/// Every member's log lines about ZooKeeper connections and sessions (the evidence when
/// a session is refused or lost), each under a header.
fn zk_logs(cluster: &Cluster) -> String {
    let mut out = String::new();
    for i in 0..cluster.len() {
        let path = match cluster.log_path(i) {
            Ok(path) => path,
            Err(e) => {
                out.push_str(&format!("--- member {i}: {e:#}\n"));
                continue;
            }
        };
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        out.push_str(&format!(
            "--- member {i} ({}) ZooKeeper lines:\n",
            path.display()
        ));
        for line in log
            .lines()
            .filter(|l| l.contains("zookeeper") || l.contains("lease") || l.contains("=== "))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A member other than `leader` (and other than `not`).
fn follower(cluster: &Cluster, leader: usize, not: Option<usize>) -> Result<usize> {
    cluster
        .live()
        .into_iter()
        .find(|&i| i != leader && Some(i) != not)
        .ok_or_else(|| anyhow!("no live follower besides {not:?} (leader {leader})"))
}

// ------------------------------------------------------------------ etcd leases

/// Whether an etcd-client error is one a client retries (a leader change, a member
/// gone, a timeout).
fn retryable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// `request` on member `i` (a client of its own), retried while it fails in a
/// retryable way, for at most [`SETTLE`].
async fn on_member<T>(
    cluster: &Cluster,
    i: usize,
    what: &str,
    request: impl AsyncFn(&mut Client) -> Result<T, etcd_client::Error>,
) -> Result<T> {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match cluster.client(i).await {
            Ok(mut client) => match tokio::time::timeout(STEP, request(&mut client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if retryable(&e) => last = format!("{e}"),
                Ok(Err(e)) => return Err(anyhow!(e).context(format!("{what} on member {i}"))),
                Err(_) => last = format!("timed out after {STEP:?}"),
            },
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("{what} on member {i}: no answer within {SETTLE:?} (last: {last})")
}

/// What the keep-alive loop saw.
#[derive(Debug, Default)]
struct KeepAliveReport {
    /// Every answer: when, from which endpoint, the TTL it gave.
    answers: Vec<(Instant, String, i64)>,
    /// Every stream that broke: when, on which endpoint, why.
    breaks: Vec<(Instant, String, String)>,
}

impl KeepAliveReport {
    fn summary(&self, origin: Instant) -> String {
        let at = |t: &Instant| t.saturating_duration_since(origin).as_secs_f64();
        let mut lines = Vec::new();
        for (t, endpoint, ttl) in &self.answers {
            lines.push(format!(
                "  {:7.2}s answer from {endpoint}: TTL {ttl}",
                at(t)
            ));
        }
        for (t, endpoint, why) in &self.breaks {
            lines.push(format!(
                "  {:7.2}s stream on {endpoint} broke: {why}",
                at(t)
            ));
        }
        lines.sort();
        lines.join("\n")
    }
}

/// Keeps `lease` alive as etcd-client's keeper does (one request every `interval` on a
/// LeaseKeepAlive stream), first on `endpoints[first]`; a stream that breaks (error,
/// end, no answer within [`STEP`]) is re-opened on the next endpoint. Runs until `stop`
/// changes or is dropped.
async fn keep_alive_loop(
    endpoints: Vec<String>,
    first: usize,
    lease: i64,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> KeepAliveReport {
    let mut report = KeepAliveReport::default();
    if endpoints.is_empty() {
        return report;
    }
    for turn in (first..).take(MAX_KEEP_ALIVE_STREAMS) {
        if *stop.borrow() {
            break;
        }
        let endpoint = endpoints[turn % endpoints.len()].clone();
        match keep_alive_stream(&endpoint, lease, interval, &mut stop, &mut report).await {
            Ok(()) => break,
            Err(e) => {
                report
                    .breaks
                    .push((Instant::now(), endpoint, format!("{e:#}")));
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    report
}

/// One LeaseKeepAlive stream on `endpoint`, until it breaks (an error) or `stop` (Ok).
async fn keep_alive_stream(
    endpoint: &str,
    lease: i64,
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
    report: &mut KeepAliveReport,
) -> Result<()> {
    let options = ConnectOptions::new()
        .with_connect_timeout(STEP)
        .with_timeout(STEP);
    let mut client = tokio::time::timeout(
        STEP,
        Client::connect([format!("http://{endpoint}")], Some(options)),
    )
    .await
    .context("connect timed out")??;
    let (mut keeper, mut answers) = tokio::time::timeout(STEP, client.lease_keep_alive(lease))
        .await
        .context("opening the stream timed out")??;
    loop {
        tokio::time::timeout(STEP, keeper.keep_alive())
            .await
            .context("sending a keep-alive timed out")??;
        let answer = tokio::time::timeout(STEP, answers.message())
            .await
            .context("no keep-alive answer in time")??
            .ok_or_else(|| anyhow!("the stream ended"))?;
        report
            .answers
            .push((Instant::now(), endpoint.to_string(), answer.ttl()));
        ensure!(answer.ttl() > 0, "the lease is gone (TTL {})", answer.ttl());
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// The lease keys on member `i` (linearizable).
async fn lease_keys_on(cluster: &Cluster, i: usize) -> Result<Vec<String>> {
    let response = on_member(cluster, i, "get sessions/lease/", async |c| {
        c.get("sessions/lease/", Some(GetOptions::new().with_prefix()))
            .await
    })
    .await?;
    Ok(keys(response.kvs()))
}

/// The lease's remaining TTL as member `i` reports it.
async fn ttl_on(cluster: &Cluster, i: usize, lease: i64) -> Result<i64> {
    let response = on_member(cluster, i, "lease_time_to_live", async |c| {
        c.lease_time_to_live(lease, None).await
    })
    .await?;
    Ok(response.ttl())
}

async fn lease_across_leader_kill(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, MEMBERS).await?;
    let leader = cluster.wait_leader().await?;
    let mut client = cluster.cluster_client().await?;
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    for key in LEASE_KEYS {
        client
            .put(key, "leased", Some(PutOptions::new().with_lease(lease)))
            .await
            .with_context(|| format!("put {key} with the lease"))?;
    }
    let origin = Instant::now();
    let ttl = Duration::from_secs(LEASE_TTL.unsigned_abs());
    let (stop, stopped) = watch::channel(false);
    let keeper = tokio::spawn(keep_alive_loop(
        cluster.endpoints(),
        leader,
        lease,
        ttl / 3,
        stopped,
    ));
    // A few keep-alives on the leader's own stream first.
    tokio::time::sleep(ttl / 2).await;
    cluster.kill9(leader)?;
    let killed = Instant::now();
    let new = cluster.wait_new_leader(leader).await?;
    println!(
        "{backend}: leader {leader} killed at {:.2}s, new leader {new} after {:.2}s",
        killed.duration_since(origin).as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    tokio::time::sleep_until((killed + ttl * 3).into()).await;

    // Checked while the keep-alives still run.
    let during = async {
        for i in cluster.live() {
            let found = lease_keys_on(&cluster, i).await?;
            ensure!(
                found == LEASE_KEYS,
                "member {i}, 3 TTLs after the leader kill: keys {found:?}"
            );
            let left = ttl_on(&cluster, i, lease).await?;
            ensure!(
                left > 0,
                "member {i}, 3 TTLs after the leader kill: TimeToLive says TTL {left}"
            );
            println!("{backend}: member {i} after 3 TTLs: keys {found:?}, TTL {left}");
        }
        anyhow::Ok(())
    }
    .await;
    stop.send_replace(true);
    let stopped_at = Instant::now();
    let report = tokio::time::timeout(STEP * 2, keeper)
        .await
        .context("the keep-alive loop did not stop")??;
    let summary = report.summary(origin);
    println!("{backend}: keep-alives:\n{summary}");
    let killed_endpoint = cluster.endpoint(leader)?;
    during.with_context(|| format!("keep-alives:\n{summary}\n{}", cluster.log_tails()))?;
    ensure!(
        report.answers.iter().all(|(_, _, ttl)| *ttl > 0),
        "a keep-alive answered TTL <= 0:\n{summary}"
    );
    ensure!(
        report
            .answers
            .iter()
            .any(|(t, endpoint, _)| *t < killed && *endpoint == killed_endpoint),
        "no keep-alive went through the leader's stream before the kill:\n{summary}"
    );
    // Keep-alives must have gone on after the failover, at least one per TTL.
    let after: Vec<Instant> = report
        .answers
        .iter()
        .filter(|(t, endpoint, _)| *t > killed && *endpoint != killed_endpoint)
        .map(|(t, _, _)| *t)
        .collect();
    ensure!(
        after.len() >= 3,
        "only {} keep-alives after the leader kill:\n{summary}",
        after.len()
    );

    // Expiry still works: the keys go once the TTL has run out, not before.
    let found = lease_keys_on(&cluster, new).await?;
    ensure!(
        found == LEASE_KEYS,
        "right after the keep-alives stopped, keys {found:?}"
    );
    let bound = ttl + EXPIRY_SLACK;
    loop {
        let mut remaining = Vec::new();
        for i in cluster.live() {
            let found = lease_keys_on(&cluster, i).await?;
            if !found.is_empty() {
                remaining.push((i, found));
            }
        }
        if remaining.is_empty() {
            break;
        }
        ensure!(
            stopped_at.elapsed() < bound,
            "keys still there {bound:?} after the keep-alives stopped: {remaining:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(POLL).await;
    }
    let gone_after = stopped_at.elapsed();
    for i in cluster.live() {
        let left = ttl_on(&cluster, i, lease).await?;
        ensure!(
            left == -1,
            "member {i}: TimeToLive of the expired lease: {left}"
        );
    }
    println!(
        "{backend}: keys gone {:.2}s after the last keep-alive stopped (TTL {LEASE_TTL}s)",
        gone_after.as_secs_f64()
    );
    Ok(())
}

// ------------------------------------------------------------- Python clients

/// A Python script in `python/`, run in a process group of its own (killed, with
/// anything it started, when dropped), spoken to line by line.
#[derive(Debug)]
struct Script {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    transcript: Vec<String>,
}

impl Script {
    fn spawn(script: &str, args: &[String]) -> Result<Self> {
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(crate_dir().join("python").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot spawn {command:?}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{script} exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{script}: no stdout pipe"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("{script}: no stderr pipe"))?;
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ok(Self {
            name: script.to_string(),
            stdin: child.stdin.take(),
            child,
            pid,
            stdout: BufReader::new(stdout).lines(),
            stderr: Some(stderr),
            transcript: Vec::new(),
        })
    }

    /// What the script printed on stderr (once it has exited or been killed).
    async fn stderr(&mut self) -> String {
        let Some(task) = self.stderr.take() else {
            return String::new();
        };
        match tokio::time::timeout(STEP, task).await {
            Ok(Ok(text)) => text,
            _ => "(stderr not available)".into(),
        }
    }

    /// An error saying what went wrong, with everything the script printed.
    async fn failure(&mut self, what: String) -> anyhow::Error {
        let stderr = self.stderr().await;
        anyhow!(
            "{} {what}; its output:\n{}\nits stderr:\n{stderr}",
            self.name,
            self.transcript.join("\n")
        )
    }

    /// The script's next line of output.
    async fn line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                self.transcript.push(line.clone());
                Ok(line)
            }
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(STEP, self.child.wait()).await;
                Err(self.failure(format!("ended ({status:?})")).await)
            }
            Ok(Err(e)) => Err(anyhow!(e).context(format!("reading {}'s output", self.name))),
            Err(_) => {
                kill_process_group(self.pid);
                Err(self
                    .failure(format!("printed nothing for {timeout:?}"))
                    .await)
            }
        }
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Reads the rest of the output and waits for a successful exit, all within
    /// `timeout`; returns the whole transcript.
    async fn finish(&mut self, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => self.transcript.push(line),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(anyhow!(e).context(format!("reading {}'s output", self.name)));
                }
                Err(_) => {
                    kill_process_group(self.pid);
                    return Err(self
                        .failure(format!("did not finish within {timeout:?}"))
                        .await);
                }
            }
        }
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .with_context(|| format!("{} closed its output but did not exit", self.name))??;
        if !status.success() {
            return Err(self.failure(format!("failed ({status})")).await);
        }
        Ok(self.transcript.clone())
    }

    /// Sends `SIG<signal>` to the script's process.
    fn signal(&self, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -{signal} {} failed", self.pid);
        Ok(())
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        kill_process_group(self.pid);
    }
}

/// Fails unless every check in `names` is in `transcript` as `check NAME True ...`.
fn expect_checks(transcript: &[String], names: &[&str]) -> Result<()> {
    let mut bad = Vec::new();
    for name in names {
        let line = transcript.iter().find(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some("check") && words.next() == Some(name)
        });
        match line {
            Some(line) if line.split_whitespace().nth(2) == Some("True") => {}
            Some(line) => bad.push(line.clone()),
            None => bad.push(format!("check {name}: missing")),
        }
    }
    ensure!(
        bad.is_empty(),
        "failed checks:\n  {}\ntranscript:\n{}",
        bad.join("\n  "),
        transcript.join("\n")
    );
    Ok(())
}

/// The line of `transcript` starting with `prefix`.
fn line_with<'a>(transcript: &'a [String], prefix: &str) -> &'a str {
    transcript
        .iter()
        .find(|line| line.starts_with(prefix))
        .map_or("", String::as_str)
}

/// A kazoo_holder.py session: its ephemeral `path` on `hosts`, and the session's id and
/// password (hex) as it printed them.
async fn start_holder(hosts: &str, path: &str, timeout: Duration) -> Result<(Script, i64, String)> {
    let mut holder = Script::spawn(
        "kazoo_holder.py",
        &[
            hosts.to_string(),
            path.to_string(),
            format!("{}", timeout.as_secs_f64()),
        ],
    )?;
    let line = holder.line(READY_TIMEOUT).await?;
    let (sid, password) = line
        .split_once(' ')
        .ok_or_else(|| anyhow!("kazoo_holder.py printed {line:?}"))?;
    let sid: i64 = sid
        .parse()
        .with_context(|| format!("session id in {line:?}"))?;
    Ok((holder, sid, password.to_string()))
}

// ----------------------------------------------------------- ZooKeeper checks

/// ZooKeeper clients of the harness's own, one per member, reconnected after an error.
#[derive(Debug, Default)]
struct Observers {
    clients: HashMap<usize, zk::Client>,
}

impl Observers {
    /// The ephemeral owner of `path` as member `i` sees it (`Some(0)`: persistent,
    /// `None`: no such node).
    async fn owner(&mut self, cluster: &Cluster, i: usize, path: &str) -> Result<Option<i64>> {
        let client = match self.clients.get(&i) {
            Some(client) => client.clone(),
            None => {
                let endpoint = cluster.zk_endpoint(i)?;
                let client = tokio::time::timeout(
                    STEP,
                    zk::Client::connector()
                        .with_session_timeout(Duration::from_secs(10))
                        .connect(&endpoint),
                )
                .await
                .with_context(|| format!("ZooKeeper connect to member {i} timed out"))?
                .with_context(|| format!("ZooKeeper connect to member {i}"))?;
                self.clients.insert(i, client.clone());
                client
            }
        };
        match tokio::time::timeout(STEP, client.check_stat(path)).await {
            Ok(Ok(stat)) => Ok(stat.map(|s| s.ephemeral_owner)),
            Ok(Err(e)) => {
                self.clients.remove(&i);
                Err(anyhow!(e).context(format!("exists {path} on member {i}")))
            }
            Err(_) => {
                self.clients.remove(&i);
                bail!("exists {path} on member {i} timed out")
            }
        }
    }

    /// The owner of `path` on member `i`, retried over transient errors for at most
    /// [`SETTLE`].
    async fn settled_owner(
        &mut self,
        cluster: &Cluster,
        i: usize,
        path: &str,
    ) -> Result<Option<i64>> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.owner(cluster, i, path).await {
                Ok(owner) => return Ok(owner),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Waits until every one of `members` shows `path` owned by `sid` (bounded).
    async fn wait_owned(
        &mut self,
        cluster: &Cluster,
        members: &[usize],
        path: &str,
        sid: i64,
    ) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        for &i in members {
            loop {
                let owner = self.settled_owner(cluster, i, path).await?;
                if owner == Some(sid) {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "member {i}: {path} owned by {owner:x?}, not by session {sid:#x}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Polls `members` until `path` is gone on all of them; fails if that takes longer
    /// than `bound` after `since`. Returns when it was first seen gone on each member,
    /// after `since`.
    async fn wait_gone(
        &mut self,
        cluster: &Cluster,
        members: &[usize],
        path: &str,
        since: Instant,
        bound: Duration,
    ) -> Result<Vec<(usize, Duration)>> {
        let mut gone: Vec<(usize, Duration)> = Vec::new();
        loop {
            for &i in members {
                if gone.iter().any(|&(g, _)| g == i) {
                    continue;
                }
                if let Ok(None) = self.owner(cluster, i, path).await {
                    gone.push((i, since.elapsed()));
                }
            }
            if gone.len() == members.len() {
                return Ok(gone);
            }
            ensure!(
                since.elapsed() < bound,
                "{path} still there {bound:?} later on some of {members:?} (gone on {gone:?})\n{}",
                cluster.log_tails()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

// ----------------------------------------------------------------- scenarios

/// Which member the kazoo lock holder is connected to when the leader is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HolderOn {
    /// The leader: its death makes kazoo move the session to another member.
    Leader,
    /// A follower: the connection stays, the session must outlive the election.
    Follower,
}

async fn kazoo_lock_across_leader_kill(on: HolderOn) -> Result<()> {
    let mut cluster = Cluster::start(Backend::Concord, MEMBERS).await?;
    let leader = cluster.wait_leader().await?;
    let first = match on {
        HolderOn::Leader => leader,
        HolderOn::Follower => follower(&cluster, leader, None)?,
    };
    // The chosen member first: kazoo connects to it (hosts are not shuffled).
    let mut order = vec![first];
    order.extend(cluster.live().into_iter().filter(|&i| i != first));
    let hosts: Vec<String> = order
        .iter()
        .map(|&i| cluster.zk_endpoint(i))
        .collect::<Result<_>>()?;
    let connected = cluster.zk_endpoint(first)?;
    let killed = cluster.zk_endpoint(leader)?;
    let mut script = Script::spawn(
        "kazoo_cluster_lock.py",
        &[
            hosts.join(","),
            "/sessions/lock".into(),
            "/sessions/holder".into(),
            LOCK_SESSION_TIMEOUT_S.to_string(),
        ],
    )?;
    let ready = script.line(READY_TIMEOUT).await?;
    ensure!(
        ready.starts_with("ready ") && ready.ends_with(&format!("peer={connected}")),
        "the holder is not connected to member {first} ({connected}): {ready}"
    );
    println!("kazoo lock ({on:?}): {ready}; killing leader {leader}");
    cluster.kill9(leader)?;
    let killed_at = Instant::now();
    script.send(&format!("killed {killed}")).await?;
    let new = cluster.wait_new_leader(leader).await?;
    println!(
        "kazoo lock ({on:?}): new leader {new} after {:.2}s",
        killed_at.elapsed().as_secs_f64()
    );
    let outcome = script.finish(SCRIPT_TIMEOUT).await;
    let transcript = outcome.with_context(|| zk_logs(&cluster))?;
    let stderr = script.stderr().await;
    println!("kazoo lock ({on:?}) transcript:\n{}", transcript.join("\n"));
    expect_checks(
        &transcript,
        &[
            "connected_elsewhere",
            "session_unchanged",
            "never_lost",
            "lock_is_acquired",
            "lock_node_owned",
            "ephemeral_owned",
            "write_after_failover",
            "second_session_distinct",
            "second_blocked_while_held",
            "contenders_while_held",
            "second_sees_holder_lock_node",
            "holder_released",
            "second_acquires_after_release",
            "contenders_after_release",
            "ephemeral_gone_after_close",
        ],
    )
    .with_context(|| format!("kazoo log:\n{stderr}\n{}", zk_logs(&cluster)))?;
    let states = line_with(&transcript, "states ");
    ensure!(!states.contains("LOST"), "kazoo states: {states}");
    if on == HolderOn::Leader {
        ensure!(
            states.contains("SUSPENDED"),
            "kazoo did not notice its member's death: {states}"
        );
    }
    Ok(())
}

/// How member A, holding a session's only connection, goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// A follower, killed with SIGKILL (restarted at the end).
    KillFollower,
    /// The leader, killed with SIGKILL (restarted at the end).
    KillLeader,
    /// The leader, frozen with SIGSTOP (continued at the end).
    FreezeLeader,
}

async fn session_moves(loss: Loss) -> Result<()> {
    let mut cluster = Cluster::start(Backend::Concord, MEMBERS).await?;
    let leader = cluster.wait_leader().await?;
    let a = match loss {
        Loss::KillFollower => follower(&cluster, leader, None)?,
        Loss::KillLeader | Loss::FreezeLeader => leader,
    };
    let others: Vec<usize> = cluster.live().into_iter().filter(|&i| i != a).collect();
    let path = "/moved";
    let timeout = Duration::from_secs(MOVED_SESSION_TIMEOUT_S.into());
    let (holder, sid, password) = start_holder(&cluster.zk_endpoint(a)?, path, timeout).await?;
    let mut observers = Observers::default();
    observers.wait_owned(&cluster, &others, path, sid).await?;
    println!("{loss:?}: session {sid:#x} on member {a} (leader {leader}) holds {path}");

    match loss {
        Loss::KillFollower | Loss::KillLeader => cluster.kill9(a)?,
        Loss::FreezeLeader => cluster.stop(a)?,
    }
    // The holder's client could only reach A; it must not compete for the session.
    holder.signal("KILL")?;
    let lost_at = Instant::now();
    let hosts: Vec<String> = others
        .iter()
        .map(|&i| cluster.zk_endpoint(i))
        .collect::<Result<_>>()?;
    // Resumed at once, as a client would: with the leader gone, during the election.
    let mut resume = Script::spawn(
        "kazoo_cluster_resume.py",
        &[
            hosts.join(","),
            sid.to_string(),
            password,
            path.into(),
            MOVED_SESSION_TIMEOUT_S.to_string(),
        ],
    )?;
    let outcome = resume.finish(SCRIPT_TIMEOUT).await;
    let transcript = outcome.with_context(|| cluster.log_tails())?;
    println!(
        "{loss:?}: resume on {hosts:?} ({:.2}s after A went):\n{}",
        lost_at.elapsed().as_secs_f64(),
        transcript.join("\n")
    );
    let stderr = resume.stderr().await;
    println!("{loss:?}: kazoo's log:\n{stderr}");
    expect_checks(
        &transcript,
        &["resumed", "same_session", "never_lost", "ephemeral_owned"],
    )
    .with_context(|| format!("kazoo log:\n{stderr}\n{}", zk_logs(&cluster)))?;
    ensure!(
        transcript.iter().any(|l| l == "closed"),
        "the session was not closed:\n{}",
        transcript.join("\n")
    );
    let closed = Instant::now();
    let gone = observers
        .wait_gone(&cluster, &others, path, closed, SETTLE)
        .await?;
    println!("{loss:?}: after the close, {path} gone on {gone:?}");

    // A, back, shows the close too.
    match loss {
        Loss::KillFollower | Loss::KillLeader => cluster.restart(a).await?,
        Loss::FreezeLeader => cluster.resume(a)?,
    }
    let back = Instant::now();
    let gone = observers
        .wait_gone(&cluster, &[a], path, back, SETTLE)
        .await?;
    println!("{loss:?}: member {a} back, {path} gone after {gone:?}");
    Ok(())
}

/// How the expiring session's client stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// SIGSTOP: the connection stays open, nothing comes on it.
    Freeze,
    /// SIGKILL, and the leader killed too while the session's timeout runs.
    KillWithLeader,
}

async fn ephemeral_by_expiry(silence: Silence) -> Result<()> {
    let mut cluster = Cluster::start(Backend::Concord, MEMBERS).await?;
    let leader = cluster.wait_leader().await?;
    let on = follower(&cluster, leader, None)?;
    let path = "/expiring";
    let timeout = EXPIRING_SESSION_TIMEOUT;
    let (holder, sid, _) = start_holder(&cluster.zk_endpoint(on)?, path, timeout).await?;
    let mut observers = Observers::default();
    observers
        .wait_owned(&cluster, &cluster.live(), path, sid)
        .await?;
    let floor = timeout / 2;
    match silence {
        Silence::Freeze => holder.signal("STOP")?,
        Silence::KillWithLeader => holder.signal("KILL")?,
    }
    let silent = Instant::now();
    println!("{silence:?}: session {sid:#x} on member {on} (leader {leader}) silent");

    // Expiry runs from the silence, or from the new leader's election (a new leader
    // restarts every lease's clock, as etcd and ZooKeeper do).
    let clock_from = match silence {
        Silence::Freeze => silent,
        Silence::KillWithLeader => {
            // Present while the timeout runs, before the leader goes.
            tokio::time::sleep(timeout / 4).await;
            for i in cluster.live() {
                let owner = observers.settled_owner(&cluster, i, path).await?;
                ensure!(
                    owner == Some(sid),
                    "member {i}, {:.2}s after the client died: owner {owner:x?}",
                    silent.elapsed().as_secs_f64()
                );
            }
            cluster.kill9(leader)?;
            let new = cluster.wait_new_leader(leader).await?;
            let elected = Instant::now();
            println!(
                "{silence:?}: leader {leader} killed {:.2}s after the client; new leader {new} at {:.2}s",
                (timeout / 4).as_secs_f64(),
                silent.elapsed().as_secs_f64()
            );
            // The new leader gave the session a fresh timeout.
            for i in cluster.live() {
                let owner = observers.settled_owner(&cluster, i, path).await?;
                ensure!(
                    owner == Some(sid) || elected.elapsed() >= timeout,
                    "member {i}, {:.2}s after the election: owner {owner:x?}\n{}",
                    elected.elapsed().as_secs_f64(),
                    zk_logs(&cluster)
                );
            }
            elected
        }
    };
    let bound = timeout + EPHEMERAL_SLACK;
    let gone = observers
        .wait_gone(&cluster, &cluster.live(), path, clock_from, bound)
        .await?;
    let since_silence: Vec<(usize, Duration)> = gone
        .iter()
        .map(|&(i, d)| (i, clock_from.duration_since(silent) + d))
        .collect();
    println!(
        "{silence:?}: {path} gone {gone:?} after the clock started ({since_silence:?} after \
         the silence; session timeout {timeout:?}, bound {bound:?})"
    );
    let first = since_silence
        .iter()
        .map(|&(_, d)| d)
        .min()
        .unwrap_or_default();
    ensure!(
        first >= floor,
        "{path} went {first:?} after the client fell silent, before half the session \
         timeout ({floor:?}): {since_silence:?}\n{}",
        zk_logs(&cluster)
    );
    Ok(())
}

// --------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn etcd_lease_survives_leader_kill_and_still_expires() -> Result<()> {
    let _serial = SERIAL.lock().await;
    for_each_backend(lease_across_leader_kill).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kazoo_lock_holder_keeps_lock_across_leader_kill() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("kazoo lock")? {
        return Ok(());
    }
    kazoo_lock_across_leader_kill(HolderOn::Leader).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kazoo_lock_holder_on_a_follower_keeps_lock_across_leader_kill() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("kazoo lock")? {
        return Ok(());
    }
    kazoo_lock_across_leader_kill(HolderOn::Follower).await
}

#[tokio::test(flavor = "multi_thread")]
async fn zk_session_moves_from_killed_follower() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("session moves")? {
        return Ok(());
    }
    session_moves(Loss::KillFollower).await
}

#[tokio::test(flavor = "multi_thread")]
async fn zk_session_moves_from_killed_leader() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("session moves")? {
        return Ok(());
    }
    session_moves(Loss::KillLeader).await
}

#[tokio::test(flavor = "multi_thread")]
async fn zk_session_moves_from_frozen_leader() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("session moves")? {
        return Ok(());
    }
    session_moves(Loss::FreezeLeader).await
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_goes_only_by_expiry_when_client_freezes() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("ephemeral expiry")? {
        return Ok(());
    }
    ephemeral_by_expiry(Silence::Freeze).await
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_expires_across_leader_kill() -> Result<()> {
    let _serial = SERIAL.lock().await;
    if !concord_selected("ephemeral expiry")? {
        return Ok(());
    }
    ephemeral_by_expiry(Silence::KillWithLeader).await
}
