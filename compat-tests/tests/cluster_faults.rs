//! Fault tests on multi-member clusters, checked for linearizability and durability.
//!
//! A shared [`Workload`] runs [`CLIENTS`] client tasks, each with its own etcd-client
//! connection to one member (spread over the members), issuing random puts (unique values
//! `c{client}-{seq}`), linearizable gets and occasional deletes on [`KEYS`] keys, every
//! request recorded in a [`History`] and bounded by [`REQUEST_TIMEOUT`]. Answers map to
//! outcomes as a client knows them: a success is `Ok` (or the value read); an error that
//! means the request was refused before it was proposed (`InvalidArgument`) is `Failed`;
//! anything else (Unavailable, "leader changed", a timeout, a lost connection) is
//! `Unknown`: it may or may not have been applied. When the workload ends, the final state
//! of every key is read linearizably from a live member, and both
//! [`linearizability::check`] and [`linearizability::check_durability`] must pass, with
//! at least a minimum of acknowledged writes (so a run that did nothing cannot pass).
//!
//! The scenarios, on 3 members unless stated:
//!
//! 1. a put through every member reads back linearizably on every member;
//! 2. the leader is killed (SIGKILL) under load; once a new leader is elected each
//!    survivor answers a linearizable get and a put at once (within the request timeout),
//!    the load goes on, the killed member restarts and catches up (a serializable read on
//!    it alone equals the state);
//! 3. a follower is frozen (SIGSTOP) under load for 3 s, then continued, and catches up;
//! 4. membership under load: a learner is added and promoted, a non-leader original voter
//!    removed; the member list ends as expected;
//! 5. every member is killed under load and all restart together: every acknowledged
//!    write survives and the cluster takes writes again;
//! 6. a network partition (each member in its own network namespace): the leader is cut
//!    off under load, the majority elects a new leader, serves a linearizable get and a
//!    put through each member at once, and takes writes while an etcdctl client inside
//!    the cut-off namespace keeps asking the old leader (recorded in the same history);
//!    the old leader is healed and catches up;
//! 7. snapshot catch-up: with a snapshot every 100 entries, a follower is killed (or
//!    frozen), more than 1000 keys and 1000 log entries are written (Concord puts
//!    concurrent writes in one entry, so more keys than entries), and the restarted
//!    (continued) follower catches up (its last key and its key count); on Concord its
//!    log shows it installed a snapshot from the leader;
//! 8. 5 members: two followers are killed under load, the other three go on taking
//!    writes, the two restart and catch up;
//!
//! and a check of the checker: the history of a short real run passes, but with the
//! final state of one key set back to an older acknowledged value (a lost write) it fails
//! the durability check, and with one get made to return that older value after the newer
//! put completed (a stale read) it fails the linearizability check.
//!
//! Each scenario runs on every backend of [`backends`] (real etcd validates the scenario
//! itself), one scenario at a time in this process (they share two cores and depend on
//! election timing), each bounded by [`SCENARIO_TIMEOUT`]; dropping a scenario's
//! [`Cluster`] (and [`NetLab`]) kills every process it started.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use concord_compat_tests::history::{Call, History, Operation, Outcome};
use concord_compat_tests::linearizability::{self, KeyResult};
use concord_compat_tests::netns::NetLab;
use concord_compat_tests::{
    Backend, Cluster, Placement, ServerOptions, ensure_eq, for_each_backend,
};
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::task::JoinHandle;
use tonic::Code;

/// Client tasks of a [`Workload`].
const CLIENTS: usize = 8;
/// Keys the workload works on.
const KEYS: usize = 5;
/// The workload's keys are `faults/k0` ...; nothing else is under this prefix.
const KEY_PREFIX: &str = "faults/k";
/// Bounds one workload request (and one probe of the helpers here).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that got an error waits this long before its next request, so that clients
/// of a dead member do not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Acknowledged puts and deletes a workload must at least have had.
const MIN_ACKED_WRITES: usize = 50;
/// Bounds reading the final state and waiting for a member to catch up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bounds one scenario on one backend (cluster start included).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(150);
/// Load phases.
const WARM_UP: Duration = Duration::from_secs(2);
const FAULT_PHASE: Duration = Duration::from_secs(3);
const COOL_DOWN: Duration = Duration::from_secs(2);

/// One scenario at a time in this test process (see the module documentation); a tokio
/// mutex, so it works across each test's own runtime.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` on every backend of [`backends`], each bounded by
/// [`SCENARIO_TIMEOUT`], one scenario at a time; fails with every backend's error.
async fn on_each_cluster_backend<F>(name: &str, scenario: F) -> Result<()>
where
    F: AsyncFn(Backend) -> Result<()>,
{
    let _serial = SERIAL.lock().await;
    for_each_backend(async |backend| {
        println!("=== {name} on {backend}");
        let started = Instant::now();
        let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, scenario(backend)).await;
        let took = started.elapsed();
        match outcome {
            Ok(Ok(())) => {
                println!("=== {name} on {backend}: passed in {took:.1?}");
                Ok(())
            }
            Ok(Err(e)) => {
                println!("=== {name} on {backend}: FAILED in {took:.1?}");
                Err(e)
            }
            Err(_) => {
                println!("=== {name} on {backend}: TIMED OUT after {took:.1?}");
                bail!("timed out after {SCENARIO_TIMEOUT:?}")
            }
        }
    })
    .await
}

/// An etcd-client connection to `endpoint` only, with the workload's timeouts.
async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    Client::connect([format!("http://{endpoint}")], Some(options))
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

fn key(n: usize) -> String {
    format!("{KEY_PREFIX}{n}")
}

/// The state of every workload key: its value, or `None` if absent.
type State = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The workload keys on `endpoint` (one range over their prefix, so one consistent
/// view), linearizable or serializable; absent keys are `None`.
async fn read_state(endpoint: &str, serializable: bool) -> Result<State> {
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut client = connect(endpoint).await?;
        let mut options = GetOptions::new().with_prefix();
        if serializable {
            options = options.with_serializable();
        }
        let response = client
            .get(KEY_PREFIX, Some(options))
            .await
            .context("range")?;
        let mut state: State = (0..KEYS).map(|n| (key(n).into_bytes(), None)).collect();
        for kv in response.kvs() {
            state.insert(kv.key().to_vec(), Some(kv.value().to_vec()));
        }
        anyhow::Ok(state)
    })
    .await;
    outcome
        .map_err(|_| anyhow!("range on {endpoint} timed out"))?
        .with_context(|| format!("range on {endpoint}"))
}

/// The final state, read linearizably from the first live member that answers, retried
/// (over the live members in turn) for at most [`SETTLE_TIMEOUT`].
async fn final_state(cluster: &Cluster) -> Result<State> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut errors = Vec::new();
    loop {
        for i in cluster.live() {
            match read_state(&cluster.endpoint(i)?, false).await {
                Ok(state) => return Ok(state),
                Err(e) => errors.push(format!("member {i}: {e:#}")),
            }
        }
        if Instant::now() >= deadline {
            let last = &errors[errors.len().saturating_sub(6)..];
            bail!(
                "no live member gave the final state within {SETTLE_TIMEOUT:?}; last errors:\n{}\n{}",
                last.join("\n"),
                cluster.log_tails()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits (at most [`SETTLE_TIMEOUT`]) until a serializable read of the workload keys on
/// member `i` alone equals a linearizable read through another live member taken just
/// before it (re-read each time, so a late unknown write cannot make it flaky).
async fn wait_caught_up(cluster: &Cluster, i: usize) -> Result<State> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let others: Vec<usize> = cluster.live().into_iter().filter(|&j| j != i).collect();
    ensure!(
        !others.is_empty(),
        "no live member besides {i} to compare with"
    );
    let mut turn = 0usize;
    loop {
        let other = others[turn % others.len()];
        turn += 1;
        let last = match read_state(&cluster.endpoint(other)?, false).await {
            Ok(reference) => match read_state(&cluster.endpoint(i)?, true).await {
                Ok(mine) if mine == reference => return Ok(mine),
                Ok(mine) => format!("member {i} has {mine:?}, member {other} has {reference:?}"),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("reference read: {e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "member {i} did not catch up within {SETTLE_TIMEOUT:?} (last: {last}); log tail:\n{}",
                cluster.log_tail(i)?
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What one request's answer tells its client.
fn write_outcome<T>(
    result: Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>,
) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(e)) if definitely_not_applied(&e) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Whether an error says the request was refused before it was proposed. Only
/// `InvalidArgument` qualifies: every other code (Unavailable, "leader changed", "not
/// leader" from a member that may have forwarded it, deadline exceeded) may follow a
/// proposal, and transport errors and timeouts tell nothing.
fn definitely_not_applied(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.code() == Code::InvalidArgument)
}

/// xorshift64*: the workload's choices (no dependency for so little).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Outcome counts of a workload.
#[derive(Debug, Default)]
struct Counts {
    acked_writes: AtomicU64,
    reads: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
}

impl Counts {
    fn record(&self, call: &Call, outcome: &Outcome) {
        let counter = match (call, outcome) {
            (Call::Put(_) | Call::Delete, Outcome::Ok) => &self.acked_writes,
            (_, Outcome::Value(_)) => &self.reads,
            (_, Outcome::Failed) => &self.failed,
            _ => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        format!(
            "{} acknowledged writes, {} reads, {} failed, {} unknown",
            self.acked_writes.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed)
        )
    }
}

/// What a finished workload recorded and read at the end.
struct Finished {
    operations: Vec<Operation>,
    final_state: State,
}

/// [`CLIENTS`] client tasks recording into one [`History`]; see the module
/// documentation. Dropping it stops the tasks.
struct Workload {
    history: History,
    /// When the history started (a moment before its own clock: times measured from
    /// here are at least the history's).
    started: Instant,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts the clients, client `c` connected to member `members[c % members.len()]`.
    fn start(cluster: &Cluster, members: &[usize]) -> Result<Self> {
        ensure!(!members.is_empty(), "a workload needs members to talk to");
        let started = Instant::now();
        let history = History::new();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        println!("workload: {CLIENTS} clients on members {members:?}, seed {seed:#x}");
        let mut tasks = Vec::with_capacity(CLIENTS);
        for c in 0..CLIENTS {
            let endpoint = cluster.endpoint(members[c % members.len()])?;
            let client = ClientTask {
                id: c as u64,
                endpoint,
                history: history.clone(),
                stop: Arc::clone(&stop),
                counts: Arc::clone(&counts),
                rng: Rng::new(seed ^ ((c as u64 + 1) << 48)),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        Ok(Self {
            history,
            started,
            stop,
            counts,
            tasks,
        })
    }

    /// The time since the history started, as its operations measure it (or a little
    /// more).
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Acknowledged puts and deletes invoked after `since` (a [`Workload::now`]).
    fn acked_writes_since(&self, since: Duration) -> usize {
        self.history
            .operations()
            .iter()
            .filter(|op| op.invoked >= since && is_acked_write(op))
            .count()
    }

    /// How long after `since` the first write invoked after it was acknowledged: how long
    /// writes stalled after a fault at `since`.
    fn writes_stalled_for(&self, since: Duration) -> Option<Duration> {
        self.history
            .operations()
            .iter()
            .filter(|op| op.invoked >= since && is_acked_write(op))
            .filter_map(|op| op.completed)
            .min()
            .map(|done| done.saturating_sub(since))
    }

    /// Stops the clients (each finishes its request in flight, at most
    /// [`REQUEST_TIMEOUT`]), reads the final state from a live member, and checks the
    /// history alone and with the final state; at least `min_acked` writes must have been
    /// acknowledged.
    async fn finish(mut self, cluster: &Cluster, min_acked: usize) -> Result<Finished> {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.context("a workload client panicked")?;
        }
        let operations = self.history.operations();
        println!(
            "workload: {} operations: {}",
            operations.len(),
            self.counts.summary()
        );
        let final_state = final_state(cluster).await?;
        let acked = operations.iter().filter(|op| is_acked_write(op)).count();
        ensure!(
            acked >= min_acked,
            "only {acked} acknowledged writes (at least {min_acked} expected): {}",
            self.counts.summary()
        );
        let checked = Instant::now();
        let report = linearizability::check(&operations);
        ensure!(
            report.is_linearizable(),
            "the history is not linearizable: {report}\n{}",
            cluster.log_tails()
        );
        let report = linearizability::check_durability(&operations, &final_state);
        ensure!(
            report.is_linearizable(),
            "the final state {final_state:?} loses acknowledged writes: {report}\n{}",
            cluster.log_tails()
        );
        println!(
            "workload: history linearizable and durable ({:?} to check)",
            checked.elapsed()
        );
        Ok(Finished {
            operations,
            final_state,
        })
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn is_acked_write(op: &Operation) -> bool {
    matches!(op.call, Call::Put(_) | Call::Delete) && op.outcome == Outcome::Ok
}

/// One workload client.
struct ClientTask {
    id: u64,
    endpoint: String,
    history: History,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    rng: Rng,
}

impl ClientTask {
    async fn run(mut self) {
        let mut client: Option<Client> = None;
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(conn) = client.as_mut() else {
                match connect(&self.endpoint).await {
                    Ok(c) => client = Some(c),
                    Err(_) => tokio::time::sleep(ERROR_BACKOFF).await,
                }
                continue;
            };
            let key = key(self.rng.below(KEYS as u64) as usize);
            let choice = self.rng.below(100);
            let call = if choice < 45 {
                seq += 1;
                Call::put(format!("c{}-{seq}", self.id))
            } else if choice < 92 {
                Call::Get
            } else {
                Call::Delete
            };
            let op = self.history.invoke(self.id, key.as_bytes(), call.clone());
            let outcome = match &call {
                Call::Put(value) => write_outcome(
                    tokio::time::timeout(REQUEST_TIMEOUT, conn.put(key, value.clone(), None)).await,
                ),
                Call::Delete => write_outcome(
                    tokio::time::timeout(REQUEST_TIMEOUT, conn.delete(key, None)).await,
                ),
                Call::Get => match tokio::time::timeout(REQUEST_TIMEOUT, conn.get(key, None)).await
                {
                    Ok(Ok(response)) => {
                        Outcome::Value(response.kvs().first().map(|kv| kv.value().to_vec()))
                    }
                    _ => Outcome::Unknown,
                },
            };
            self.history.complete(op, outcome.clone());
            self.counts.record(&call, &outcome);
            if !matches!(outcome, Outcome::Ok | Outcome::Value(_)) {
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// A spawned task aborted when this is dropped (a scenario that fails early must not
/// leave it running).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T> {
        (&mut self.0).await.context("a task panicked")
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client id of the probes of [`probe_survivors`] (plus the member's index).
const PROBE_CLIENT: u64 = 2_000;

/// Whether the survivors of a fault serve at once now that they agree on a new leader:
/// through each of `members`, one linearizable get and one put (value `probe{member}`),
/// each recorded in `history` and given [`REQUEST_TIMEOUT`]. Returns what went wrong
/// (empty: all answered), so that the scenario can go on and check the rest before
/// failing on it.
async fn probe_survivors(cluster: &Cluster, members: &[usize], history: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for &i in members {
        let mut client = match connect(&cluster.endpoint(i).unwrap_or_default()).await {
            Ok(client) => client,
            Err(e) => {
                problems.push(format!("member {i}: {e:#}"));
                continue;
            }
        };
        let client_id = PROBE_CLIENT + i as u64;
        let key = key(0);
        let op = history.invoke(client_id, key.as_bytes(), Call::Get);
        let started = Instant::now();
        let got = tokio::time::timeout(REQUEST_TIMEOUT, client.get(key.as_str(), None)).await;
        let outcome = match &got {
            Ok(Ok(response)) => {
                Outcome::Value(response.kvs().first().map(|kv| kv.value().to_vec()))
            }
            _ => Outcome::Unknown,
        };
        history.complete(op, outcome.clone());
        if outcome == Outcome::Unknown {
            problems.push(format!(
                "member {i} did not answer a linearizable get within {REQUEST_TIMEOUT:?} \
                 (after {:.1?}: {got:?})",
                started.elapsed()
            ));
        }
        let value = format!("probe{i}");
        let op = history.invoke(client_id, key.as_bytes(), Call::put(value.as_str()));
        let started = Instant::now();
        let put =
            tokio::time::timeout(REQUEST_TIMEOUT, client.put(key.as_str(), value, None)).await;
        let outcome = write_outcome(put);
        history.complete(op, outcome.clone());
        if outcome != Outcome::Ok {
            problems.push(format!(
                "member {i} did not acknowledge a put within {REQUEST_TIMEOUT:?} \
                 ({outcome:?} after {:.1?})",
                started.elapsed()
            ));
        }
    }
    if !problems.is_empty() {
        println!("survivors not serving: {problems:?}");
        problems.push(format!("log tails then:\n{}", cluster.log_tails()));
    }
    problems
}

/// Fails if [`probe_survivors`] found problems.
fn ensure_served(leader: usize, problems: &[String]) -> Result<()> {
    ensure!(
        problems.is_empty(),
        "once member {leader} was elected, the survivors did not serve at once:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// The current leader, agreed by the live members.
async fn leader(cluster: &mut Cluster) -> Result<usize> {
    cluster.wait_leader().await
}

/// The members other than `leader`, in index order.
fn followers(cluster: &Cluster, leader: usize) -> Vec<usize> {
    cluster
        .members()
        .into_iter()
        .filter(|&i| i != leader)
        .collect()
}

// ---- 1. write through every node ----

async fn write_through_every_node(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    for i in cluster.members() {
        let mut client = connect(&cluster.endpoint(i)?).await?;
        client
            .put(format!("faults/through/{i}"), format!("v{i}"), None)
            .await
            .with_context(|| format!("put through member {i}"))?;
    }
    for j in cluster.members() {
        let mut client = connect(&cluster.endpoint(j)?).await?;
        for i in cluster.members() {
            let response = client
                .get(format!("faults/through/{i}"), None)
                .await
                .with_context(|| format!("linearizable get on member {j}"))?;
            let values: Vec<Vec<u8>> = response
                .kvs()
                .iter()
                .map(|kv| kv.value().to_vec())
                .collect();
            ensure_eq!(
                values,
                vec![format!("v{i}").into_bytes()],
                "member {j} reading the put through member {i}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn write_through_every_node_reads_back_everywhere() -> Result<()> {
    on_each_cluster_backend("write through every node", write_through_every_node).await
}

// ---- 2. kill -9 the leader under load ----

async fn kill_leader(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    let old = leader(&mut cluster).await?;
    cluster.kill9(old)?;
    let killed = workload.now();
    let new = cluster.wait_new_leader(old).await?;
    println!(
        "killed leader {old}; member {new} leads after {:.1?}",
        workload.now() - killed
    );
    let unserved = probe_survivors(&cluster, &followers(&cluster, old), &workload.history).await;
    tokio::time::sleep(FAULT_PHASE).await;
    let during = workload.acked_writes_since(killed);
    println!(
        "{during} writes acknowledged with the leader down; the first {:.1?} after the kill",
        workload.writes_stalled_for(killed)
    );
    ensure!(during > 0, "no write was acknowledged with the leader down");
    cluster.restart(old).await?;
    tokio::time::sleep(COOL_DOWN).await;
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    wait_caught_up(&cluster, old).await?;
    ensure_served(new, &unserved)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_leader_under_load_then_restart() -> Result<()> {
    on_each_cluster_backend("kill -9 the leader under load", kill_leader).await
}

// ---- 3. SIGSTOP a follower under load ----

async fn freeze_follower(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    let leader = leader(&mut cluster).await?;
    let frozen = followers(&cluster, leader)[0];
    cluster.stop(frozen)?;
    let stopped = workload.now();
    tokio::time::sleep(FAULT_PHASE).await;
    let during = workload.acked_writes_since(stopped);
    cluster.resume(frozen)?;
    println!("froze follower {frozen} for {FAULT_PHASE:?}: {during} writes acknowledged meanwhile");
    ensure!(
        during > 0,
        "no write was acknowledged with a follower frozen"
    );
    tokio::time::sleep(COOL_DOWN).await;
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    wait_caught_up(&cluster, frozen).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_follower_under_load_then_resume() -> Result<()> {
    on_each_cluster_backend("SIGSTOP a follower under load", freeze_follower).await
}

// ---- 4. membership changes under load ----

async fn membership_under_load(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    let added = cluster.add_member("n4", true).await?;
    println!("added learner n4 as member {added}");
    cluster.promote(added).await?;
    println!("promoted n4");
    let leader = leader(&mut cluster).await?;
    let removed = followers(&cluster, leader)
        .into_iter()
        .find(|&i| i != added)
        .ok_or_else(|| anyhow!("no original follower to remove"))?;
    cluster.remove_member(removed).await?;
    println!("removed member {removed} (leader: {leader})");
    let after = workload.now();
    tokio::time::sleep(COOL_DOWN).await;
    ensure!(
        workload.acked_writes_since(after) > 0,
        "no write was acknowledged after the removal"
    );
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;

    let listed = cluster.member_list().await?;
    let mut listed_urls: Vec<String> = listed.iter().flat_map(|m| m.peer_urls().to_vec()).collect();
    listed_urls.sort();
    let mut expected: Vec<String> = cluster
        .members()
        .into_iter()
        .map(|i| cluster.peer_url(i))
        .collect::<Result<_>>()?;
    expected.sort();
    ensure_eq!(listed_urls, expected, "peer URLs in the member list");
    ensure!(
        listed.iter().all(|m| !m.is_learner()),
        "a learner is left: {listed:?}"
    );
    wait_caught_up(&cluster, added).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn add_promote_remove_members_under_load() -> Result<()> {
    on_each_cluster_backend("membership under load", membership_under_load).await
}

// ---- 5. restart every node ----

async fn restart_every_node(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(FAULT_PHASE).await;
    let all = cluster.members();
    for &i in &all {
        cluster.kill9(i)?;
    }
    let acked_before = workload.acked_writes_since(Duration::ZERO);
    println!("killed every member after {acked_before} acknowledged writes");
    cluster.restart_many(&all).await?;
    let restarted = workload.now();
    leader(&mut cluster).await?;
    tokio::time::sleep(FAULT_PHASE).await;
    let after = workload.acked_writes_since(restarted);
    println!("{after} writes acknowledged after the restart");
    ensure!(after > 0, "the restarted cluster took no write");
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    for &i in &all {
        wait_caught_up(&cluster, i).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_every_node_under_load_then_restart_all() -> Result<()> {
    on_each_cluster_backend("restart every node", restart_every_node).await
}

// ---- 6. network partition ----

/// The client id of the etcdctl client inside the isolated member's namespace.
const MINORITY_CLIENT: u64 = 1_000;
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// Bounds one etcdctl run of the minority client (its own timeouts are shorter).
const ETCDCTL_RUN_TIMEOUT: Duration = Duration::from_secs(6);

/// `etcdctl --endpoints=ENDPOINT ARGS` run inside namespace `netns`: its output without
/// the final newline, or why it failed (its last stderr line).
async fn etcdctl_in(netns: &str, endpoint: &str, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", netns, ETCDCTL])
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=1s", "--command-timeout=2s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(ETCDCTL_RUN_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end_matches('\n')
            .to_string()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(stderr.lines().last().unwrap_or("").to_string())
        }
        Ok(Err(e)) => Err(format!("cannot run etcdctl: {e}")),
        Err(_) => Err("etcdctl did not finish".to_string()),
    }
}

/// What the minority client saw: each recorded request's outcome with etcdctl's output
/// or error, and how many serializable gets (not recorded) the isolated member answered.
#[derive(Debug, Default)]
struct MinorityReport {
    recorded: Vec<(Outcome, String)>,
    serializable_answered: usize,
    serializable_errors: Vec<String>,
}

/// A client on the cut-off side: `etcdctl` run inside the isolated member's namespace
/// (`ip netns exec`), so it reaches that member over the namespace's own addresses while
/// the harness cannot. In turn it sends a serializable get (not recorded: a member may
/// answer it from its own state; an answer proves the client reaches the member), a
/// linearizable get and a put (value `m-{seq}`), the last two recorded in the
/// workload's history, until stopped. A minority member must not answer those two from
/// its stale state: a stale get, or a put it acknowledged and then lost, is a violation
/// the checker finds.
fn spawn_minority_client(
    netns: String,
    endpoint: String,
    history: History,
    stop: Arc<AtomicBool>,
) -> AbortOnDrop<MinorityReport> {
    AbortOnDrop(tokio::spawn(async move {
        let mut report = MinorityReport::default();
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = key(seq as usize % KEYS);
            let step = seq % 3;
            seq += 1;
            if step == 0 {
                let args = ["get", &key, "--print-value-only", "--consistency=s"];
                match etcdctl_in(&netns, &endpoint, &args).await {
                    Ok(_) => report.serializable_answered += 1,
                    Err(e) => {
                        report.serializable_errors.push(e);
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
                continue;
            }
            let value = format!("m-{seq}");
            let (call, args) = if step == 1 {
                (Call::Get, ["get", key.as_str(), "--print-value-only"])
            } else {
                (
                    Call::put(value.clone()),
                    ["put", key.as_str(), value.as_str()],
                )
            };
            let op = history.invoke(MINORITY_CLIENT, key.as_bytes(), call.clone());
            let answer = etcdctl_in(&netns, &endpoint, &args).await;
            let outcome = match (&call, &answer) {
                (Call::Get, Ok(text)) if text.is_empty() => Outcome::absent(),
                (Call::Get, Ok(text)) => Outcome::found(text.as_str()),
                (_, Ok(_)) => Outcome::Ok,
                (_, Err(_)) => Outcome::Unknown,
            };
            history.complete(op, outcome.clone());
            if answer.is_err() {
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
            report
                .recorded
                .push((outcome, answer.unwrap_or_else(|error| error)));
        }
        report
    }))
}

async fn partition_leader(backend: Backend) -> Result<()> {
    // Declared first so it is dropped last, after the cluster's processes are killed.
    let mut lab = NetLab::create(3)?;
    let placements = lab
        .placements()
        .into_iter()
        .map(|(netns, ip)| Placement::in_netns(netns, ip))
        .collect();
    let mut cluster = Cluster::builder(backend, 3)
        .placements(placements)
        .start()
        .await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    let old = leader(&mut cluster).await?;
    lab.isolate(old)?;
    let isolated = workload.now();
    let minority_stop = Arc::new(AtomicBool::new(false));
    let minority = spawn_minority_client(
        lab.netns(old)?.to_string(),
        cluster.endpoint(old)?,
        workload.history.clone(),
        Arc::clone(&minority_stop),
    );
    let new = cluster.wait_new_leader(old).await?;
    println!(
        "isolated leader {old}; member {new} leads after {:.1?}",
        workload.now() - isolated
    );
    let unserved = probe_survivors(&cluster, &followers(&cluster, old), &workload.history).await;
    tokio::time::sleep(FAULT_PHASE).await;
    let during = workload.acked_writes_since(isolated);
    println!(
        "{during} writes acknowledged during the partition; the first {:.1?} after it began",
        workload.writes_stalled_for(isolated)
    );
    ensure!(
        during > 0,
        "the majority took no write during the partition"
    );
    minority_stop.store(true, Ordering::Relaxed);
    let minority = minority.join().await?;
    println!("the minority client (etcdctl inside member {old}'s namespace): {minority:?}");
    ensure!(
        !minority.recorded.is_empty() && minority.serializable_answered > 0,
        "the minority client did not reach the isolated member: {minority:?}"
    );
    lab.heal(old)?;
    tokio::time::sleep(COOL_DOWN).await;
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    wait_caught_up(&cluster, old).await?;
    ensure_served(new, &unserved)
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_leader_under_load_then_heal() -> Result<()> {
    if let Some(reason) = NetLab::unavailable_reason() {
        eprintln!("SKIPPED partition_leader_under_load_then_heal: {reason}");
        return Ok(());
    }
    on_each_cluster_backend("network partition of the leader", partition_leader).await
}

// ---- 7. snapshot catch-up ----

/// Keys written at least while the follower is down.
const SNAPSHOT_KEYS: usize = 1200;
const SNAPSHOT_EVERY: u64 = 100;
/// Raft log entries the leader must append while the follower is down: ten snapshot
/// intervals. Concord proposes concurrent writes together (several puts in one entry),
/// so keys are written in rounds until the leader's `raft_index` has grown this much.
const SNAPSHOT_MIN_ENTRIES: u64 = 10 * SNAPSHOT_EVERY;
/// Keys per round, and the most the test writes in all.
const SNAPSHOT_ROUND: usize = 400;
const SNAPSHOT_MAX_KEYS: usize = 12_000;
const SNAPSHOT_PREFIX: &str = "faults/snap/";
/// Concurrent writers of the snapshot test's keys.
const WRITERS: usize = 8;
/// Attempts per key before the writer gives up.
const PUT_ATTEMPTS: usize = 20;

fn snapshot_key(n: usize) -> String {
    format!("{SNAPSHOT_PREFIX}{n:05}")
}

/// Puts keys `from..to` (value `v{n}`) through `endpoint` with [`WRITERS`] concurrent
/// clients, retrying each key (a put is idempotent here) a bounded number of times.
async fn write_snapshot_keys(endpoint: &str, from: usize, to: usize) -> Result<()> {
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let endpoint = endpoint.to_string();
        writers.push(AbortOnDrop(tokio::spawn(async move {
            let mut client = connect(&endpoint).await?;
            for n in (from + w..to).step_by(WRITERS) {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let put = client.put(snapshot_key(n), format!("v{n}"), None);
                    match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) if attempt >= PUT_ATTEMPTS => {
                            bail!("put {} failed {attempt} times: {e}", snapshot_key(n))
                        }
                        Err(_) if attempt >= PUT_ATTEMPTS => {
                            bail!("put {} timed out {attempt} times", snapshot_key(n))
                        }
                        _ => tokio::time::sleep(ERROR_BACKOFF).await,
                    }
                }
            }
            anyhow::Ok(())
        })));
    }
    for writer in writers {
        writer.join().await??;
    }
    Ok(())
}

/// The leader's last Raft log index, from its `Status`.
async fn raft_index(endpoint: &str) -> Result<u64> {
    let mut client = connect(endpoint).await?;
    let status = tokio::time::timeout(REQUEST_TIMEOUT, client.status())
        .await
        .map_err(|_| anyhow!("status on {endpoint} timed out"))??;
    Ok(status.raft_index())
}

/// Writes keys through `endpoint` in rounds of [`SNAPSHOT_ROUND`] until at least
/// [`SNAPSHOT_KEYS`] are written and its log has grown by [`SNAPSHOT_MIN_ENTRIES`]
/// entries (at most [`SNAPSHOT_MAX_KEYS`]); returns the number of keys and of entries.
async fn write_until_log_grew(endpoint: &str) -> Result<(usize, u64)> {
    let start = raft_index(endpoint).await?;
    let mut written = 0;
    loop {
        let grown = raft_index(endpoint).await?.saturating_sub(start);
        if written >= SNAPSHOT_KEYS && grown >= SNAPSHOT_MIN_ENTRIES {
            return Ok((written, grown));
        }
        ensure!(
            written < SNAPSHOT_MAX_KEYS,
            "{written} puts grew the log by only {grown} entries"
        );
        write_snapshot_keys(endpoint, written, written + SNAPSHOT_ROUND).await?;
        written += SNAPSHOT_ROUND;
    }
}

/// A serializable view of the first `keys` snapshot keys on `endpoint`: the last one's
/// value and the count under the prefix.
async fn snapshot_view(endpoint: &str, keys: usize) -> Result<(Option<Vec<u8>>, i64)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut client = connect(endpoint).await?;
        let last = client
            .get(
                snapshot_key(keys - 1),
                Some(GetOptions::new().with_serializable()),
            )
            .await?;
        let count = client
            .get(
                SNAPSHOT_PREFIX,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_count_only()
                        .with_serializable(),
                ),
            )
            .await?;
        anyhow::Ok((
            last.kvs().first().map(|kv| kv.value().to_vec()),
            count.count(),
        ))
    })
    .await
    .map_err(|_| anyhow!("reads on {endpoint} timed out"))?
}

/// The byte offsets of `needle` in `log` after `from`.
fn find_after(log: &str, from: usize, needle: &str) -> Option<usize> {
    log.get(from..)?.find(needle).map(|at| from + at)
}

/// How the lagging follower of the snapshot test is kept behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    /// Killed (SIGKILL), restarted on its data afterwards.
    Killed,
    /// Frozen (SIGSTOP), continued (SIGCONT) afterwards.
    Frozen,
}

async fn snapshot_catch_up(backend: Backend, lag: Lag) -> Result<()> {
    let options = ServerOptions::default().snapshot_every(SNAPSHOT_EVERY);
    let mut cluster = Cluster::builder(backend, 3)
        .options(options)
        .start()
        .await?;
    let leader = leader(&mut cluster).await?;
    let lagging = followers(&cluster, leader)[0];
    match lag {
        Lag::Killed => cluster.kill9(lagging)?,
        Lag::Frozen => cluster.stop(lagging)?,
    }
    let started = Instant::now();
    let (keys, entries) = write_until_log_grew(&cluster.endpoint(leader)?).await?;
    println!(
        "wrote {keys} keys ({entries} log entries) with member {lagging} {lag:?} in {:.1?}",
        started.elapsed()
    );
    let back = Instant::now();
    match lag {
        Lag::Killed => cluster.restart(lagging).await?,
        Lag::Frozen => cluster.resume(lagging)?,
    }
    let expected = (Some(format!("v{}", keys - 1).into_bytes()), keys as i64);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let endpoint = cluster.endpoint(lagging)?;
    loop {
        let view = snapshot_view(&endpoint, keys).await;
        if matches!(&view, Ok(view) if *view == expected) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "member {lagging} did not catch up within {SETTLE_TIMEOUT:?}: {view:?}, expected {expected:?}; log tail:\n{}",
                cluster.log_tail(lagging)?
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    println!(
        "member {lagging} caught up {:.1?} after it was brought back",
        back.elapsed()
    );
    if backend == Backend::Concord {
        let path = cluster.log_path(lagging)?;
        let log = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Since its last start: the restart, or the one start of a frozen member.
        let restart = log
            .rfind("=== compat-tests: start #")
            .ok_or_else(|| anyhow!("no start marker in {}", path.display()))?;
        let installing = find_after(&log, restart, "installing a snapshot from the leader");
        let installed = installing.and_then(|at| find_after(&log, at, "snapshot installed"));
        ensure!(
            installing.is_some() && installed.is_some(),
            "member {lagging}'s log since its last start shows no snapshot installed from the \
             leader (installing: {installing:?}, installed: {installed:?}); log tail:\n{}",
            cluster.log_tail(lagging)?
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_follower_catches_up_through_a_snapshot() -> Result<()> {
    on_each_cluster_backend("snapshot catch-up (killed follower)", async |backend| {
        snapshot_catch_up(backend, Lag::Killed).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_follower_catches_up_through_a_snapshot() -> Result<()> {
    on_each_cluster_backend("snapshot catch-up (frozen follower)", async |backend| {
        snapshot_catch_up(backend, Lag::Frozen).await
    })
    .await
}

// ---- 8. five members, two followers killed ----

async fn five_members_lose_two(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 5).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    let leader = leader(&mut cluster).await?;
    let killed: Vec<usize> = followers(&cluster, leader).into_iter().take(2).collect();
    for &i in &killed {
        cluster.kill9(i)?;
    }
    let down = workload.now();
    tokio::time::sleep(FAULT_PHASE).await;
    let during = workload.acked_writes_since(down);
    println!("killed followers {killed:?}: {during} writes acknowledged by the other three");
    ensure!(during > 0, "the remaining three members took no write");
    cluster.restart_many(&killed).await?;
    tokio::time::sleep(COOL_DOWN).await;
    workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    for &i in &killed {
        wait_caught_up(&cluster, i).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn five_members_kill9_two_followers_under_load() -> Result<()> {
    on_each_cluster_backend("5 members, two followers killed", five_members_lose_two).await
}

// ---- the checker catches a lost write in a real history ----

/// Two acknowledged puts on one key, the first completed before the second was invoked:
/// `(key, the older value, when the newer put completed)`.
fn ordered_puts(operations: &[Operation]) -> Option<(Vec<u8>, Vec<u8>, Duration)> {
    let acked_put = |op: &Operation| match (&op.call, &op.outcome) {
        (Call::Put(value), Outcome::Ok) => Some(value.clone()),
        _ => None,
    };
    operations.iter().find_map(|older| {
        let value = acked_put(older)?;
        let done = older.completed?;
        operations
            .iter()
            .filter(|newer| newer.key == older.key && newer.invoked > done)
            .filter(|newer| acked_put(newer).is_some())
            .find_map(|newer| newer.completed)
            .map(|newer_done| (older.key.clone(), value, newer_done))
    })
}

/// Checks that `report` fails on `key` alone.
fn ensure_caught(report: &linearizability::Report, key: &[u8], what: &str) -> Result<()> {
    println!("{what}: {report}");
    ensure!(!report.is_linearizable(), "the checker accepted {what}");
    ensure!(
        matches!(report.get(key), Some(KeyResult::Violation { .. })),
        "{what}: the violation is not reported on the tampered key: {report}"
    );
    ensure!(
        report.problems().count() == 1,
        "{what}: keys other than the tampered one fail: {report}"
    );
    Ok(())
}

async fn checker_catches_lost_write(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let workload = Workload::start(&cluster, &cluster.members())?;
    tokio::time::sleep(WARM_UP).await;
    // The real history passes both checks (finish asserts it).
    let Finished {
        operations,
        final_state,
    } = workload.finish(&cluster, MIN_ACKED_WRITES).await?;
    let (key, older, newer_done) = ordered_puts(&operations)
        .ok_or_else(|| anyhow!("no two ordered acknowledged puts on one key in the history"))?;
    let shown = format!(
        "{}={}",
        String::from_utf8_lossy(&key),
        String::from_utf8_lossy(&older)
    );

    // A lost write: the final state shows the older put's value, as if the newer one's
    // effect had been dropped.
    let mut tampered = final_state.clone();
    tampered.insert(key.clone(), Some(older.clone()));
    let report = linearizability::check_durability(&operations, &tampered);
    ensure_caught(
        &report,
        &key,
        &format!("a final state {shown} that lost a put"),
    )?;

    // A stale read: a get invoked after the newer put completed returns the older value.
    let mut stale = operations.clone();
    let get = stale
        .iter_mut()
        .find(|op| {
            op.key == key
                && op.call == Call::Get
                && matches!(op.outcome, Outcome::Value(_))
                && op.invoked > newer_done
        })
        .ok_or_else(|| anyhow!("no get after the newer put in the history"))?;
    get.outcome = Outcome::Value(Some(older.clone()));
    let id = get.id;
    let report = linearizability::check(&stale);
    ensure_caught(
        &report,
        &key,
        &format!("get #{id} made to read a stale {shown}"),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn checker_catches_a_lost_write_and_a_stale_read_in_a_real_history() -> Result<()> {
    on_each_cluster_backend(
        "checker catches a lost write and a stale read",
        checker_catches_lost_write,
    )
    .await
}
