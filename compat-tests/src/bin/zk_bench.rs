//! `zk_bench`: the same ZooKeeper create, setData and getData load against Concord's
//! ZooKeeper adapter and against real ZooKeeper 3.8 on this machine, side by side.
//!
//! Each backend is started fresh by this tool, on loopback, with a temporary data
//! directory and durable writes, as the compat tests start them
//! ([`concord_compat_tests::zookeeper::ZkServer`]): real ZooKeeper (Debian's package,
//! run with `java` directly; ZooKeeper fsyncs its log before acknowledging by default),
//! Concord (`concord serve`) syncs its Raft log before acknowledging. Each is ready when
//! a ZooKeeper client can open a session on it.
//!
//! Then `sessions` ZooKeeper sessions are opened and `clients` concurrent tasks share
//! them (client `i` uses session `i % sessions`); each task issues requests back to back,
//! so requests pipeline on a session. The sessions are the lean client of
//! [`concord_compat_tests::zk_load`] (requests queued together leave in one write; every
//! reply checked), so that the load generator takes less of the two cores it shares
//! with the server. Three phases of `seconds` each follow:
//!
//! * `create`: each task creates its own persistent znodes `/bench/cNNN-NNNNNNNNN`
//!   with `value-size`-byte data;
//! * `setData`: each task overwrites the data of znodes picked at random among those the
//!   create phase made;
//! * `getData`: each task reads znodes picked the same way (a reply whose data is not
//!   `value-size` bytes long counts as an error).
//!
//! Every phase prints progress once a second; at the end a table gives ops/s, p50 and p99
//! (milliseconds) per backend and operation, then Concord's ratio to ZooKeeper per
//! operation (throughput: higher is better; latency: lower is better). Every request is
//! bounded by a timeout (a timed-out request counts as an error), and so is every wait;
//! the servers are killed at the end, on error and on Ctrl-C.
//!
//! Usage: `zk_bench [--seconds N] [--sessions N] [--clients N] [--value-size N]
//! [--backends concord,zookeeper] [--rounds N]`. `--rounds N` runs the backends in turns
//! N times and gives the median of the per-round ratios (this machine's speed drifts by
//! tens of percent from one minute to the next). The `concord` binary is found as the
//! compat tests find it (`CONCORD_BIN`, else `release/concord` beside this binary).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_compat_tests::bench_flags::{self, count};
use concord_compat_tests::bench_stats::{Picker, percentile};
use concord_compat_tests::kv_load::{self, PhaseResult};
use concord_compat_tests::zk_load::ZkLoadSession;
use concord_compat_tests::zookeeper::{ZkBackend, ZkServer};
use tokio::task::JoinSet;

/// The parent of every znode the load creates.
const ROOT: &str = "/bench";
/// Bounds one request; past it the request counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The session timeout asked for: generous, so that a slow fsync does not expire it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The load's shape; defaults are the issue's: 64 clients over 8 sessions, 256-byte
/// values, 10 s per phase.
#[derive(Debug, Clone)]
struct LoadShape {
    seconds: u64,
    sessions: usize,
    clients: usize,
    value_size: usize,
    backends: Vec<ZkBackend>,
    rounds: usize,
}

impl Default for LoadShape {
    fn default() -> Self {
        Self {
            seconds: 10,
            sessions: 8,
            clients: 64,
            value_size: 256,
            backends: ZkBackend::ALL.to_vec(),
            rounds: 1,
        }
    }
}

impl LoadShape {
    fn from_args(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut shape = Self::default();
        for (flag, value) in bench_flags::pairs(args)? {
            match flag.as_str() {
                "--seconds" => shape.seconds = u64::try_from(count(&flag, &value)?)?,
                "--sessions" => shape.sessions = count(&flag, &value)?,
                "--clients" => shape.clients = count(&flag, &value)?,
                "--value-size" => shape.value_size = count(&flag, &value)?,
                "--rounds" => shape.rounds = count(&flag, &value)?,
                "--backends" => {
                    shape.backends = value
                        .split(',')
                        .map(|name| ZkBackend::parse(name.trim()).context("--backends"))
                        .collect::<Result<_>>()?;
                }
                other => bail!("unknown flag {other}; see the module doc of zk_bench.rs"),
            }
        }
        Ok(shape)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    SetData,
    GetData,
}

impl Operation {
    const ALL: [Operation; 3] = [Operation::Create, Operation::SetData, Operation::GetData];

    fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::SetData => "setData",
            Operation::GetData => "getData",
        }
    }
}

fn node_path(client: usize, index: u64) -> String {
    format!("{ROOT}/c{client:03}-{index:09}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let shape = LoadShape::from_args(std::env::args().skip(1))?;
    eprintln!("zk_bench: {shape:?}");
    // On Ctrl-C the run is dropped, and with it the servers (killed) and the clients.
    tokio::select! {
        outcome = run_all(&shape) => outcome,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; servers killed"),
    }
}

async fn run_all(shape: &LoadShape) -> Result<()> {
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=shape.rounds {
        eprintln!("zk_bench: round {round} of {}", shape.rounds);
        for &backend in &shape.backends {
            match run_backend(backend, shape).await {
                Ok(phases) => results.push((backend, phases)),
                Err(e) => {
                    eprintln!("zk_bench: {backend} failed: {e:#}");
                    failures.push(backend.name());
                }
            }
        }
    }
    if !results.is_empty() {
        print_report(shape, &results);
    }
    if !failures.is_empty() {
        bail!("failed on {}", failures.join(", "));
    }
    Ok(())
}

/// Starts `backend`, runs the three phases on it, and kills it.
async fn run_backend(backend: ZkBackend, shape: &LoadShape) -> Result<Vec<PhaseResult>> {
    eprintln!("zk_bench: starting {backend}");
    let mut server = ZkServer::start(backend).await?;
    eprintln!(
        "zk_bench: {backend} answers on {} (log {})",
        server.zk_endpoint(),
        server.log_path().display()
    );
    let sessions = open_sessions(&server.zk_endpoint(), shape.sessions).await?;
    tokio::time::timeout(REQUEST_TIMEOUT, sessions[0].create(ROOT, b""))
        .await
        .with_context(|| format!("creating {ROOT} timed out"))?
        .with_context(|| format!("cannot create {ROOT}"))?;
    let mut phases = Vec::new();
    let mut nodes = Arc::new(Vec::new());
    for operation in Operation::ALL {
        let (result, created) = run_phase(backend, operation, shape, &sessions, &nodes).await?;
        if operation == Operation::Create {
            if created.is_empty() {
                bail!("{backend}: the create phase created no znode");
            }
            nodes = Arc::new(created);
        }
        phases.push(result);
        server
            .ensure_running()
            .with_context(|| format!("{backend} died during {}", operation.name()))?;
    }
    drop(sessions);
    drop(server);
    Ok(phases)
}

async fn open_sessions(endpoint: &str, count: usize) -> Result<Vec<ZkLoadSession>> {
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(ZkLoadSession::connect(endpoint, SESSION_TIMEOUT).await?);
    }
    Ok(sessions)
}

/// What one client task did.
#[derive(Debug, Default)]
struct TaskOutcome {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    created: Vec<String>,
}

impl TaskOutcome {
    fn failed(&mut self, error: impl fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }
}

/// One phase: every client task issues `operation` back to back until the deadline.
/// Returns the measurements and, for the create phase, the znodes created.
async fn run_phase(
    backend: ZkBackend,
    operation: Operation,
    shape: &LoadShape,
    sessions: &[ZkLoadSession],
    nodes: &Arc<Vec<String>>,
) -> Result<(PhaseResult, Vec<String>)> {
    let duration = Duration::from_secs(shape.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for client in 0..shape.clients {
        let session = sessions[client % sessions.len()].clone();
        let nodes = Arc::clone(nodes);
        let done = Arc::clone(&done);
        let value_size = shape.value_size;
        let value = vec![b'x'; value_size];
        let mut picker = Picker(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1));
        tasks.spawn(async move {
            let mut outcome = TaskOutcome::default();
            let mut next_index = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = match operation {
                    Operation::Create => {
                        let path = node_path(client, next_index);
                        next_index += 1;
                        let answer =
                            tokio::time::timeout(REQUEST_TIMEOUT, session.create(&path, &value))
                                .await;
                        match answer {
                            Ok(Ok(true)) => {
                                outcome.created.push(path);
                                Ok(Ok(()))
                            }
                            Ok(Ok(false)) => Ok(Err(anyhow::anyhow!("{path} already exists"))),
                            Ok(Err(e)) => Ok(Err(e)),
                            Err(elapsed) => Err(elapsed),
                        }
                    }
                    Operation::SetData => {
                        let path = &nodes[picker.next(nodes.len())];
                        tokio::time::timeout(REQUEST_TIMEOUT, session.set_data(path, &value)).await
                    }
                    Operation::GetData => {
                        let path = &nodes[picker.next(nodes.len())];
                        tokio::time::timeout(REQUEST_TIMEOUT, session.get_data(path))
                            .await
                            .map(|reply| {
                                reply.and_then(|data| {
                                    anyhow::ensure!(
                                        data.len() == value_size,
                                        "{path}: {} bytes of data, expected {value_size}",
                                        data.len()
                                    );
                                    Ok(())
                                })
                            })
                    }
                };
                match answer {
                    Ok(Ok(())) => {
                        outcome.latencies.push(sent.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => outcome.failed(e),
                    Err(_) => outcome.failed(format!("no reply within {REQUEST_TIMEOUT:?}")),
                }
            }
            outcome
        });
    }
    let progress = report_progress(backend, operation, started, duration, Arc::clone(&done));
    let collected = tokio::time::timeout(duration + REQUEST_TIMEOUT * 2, async {
        let mut all = TaskOutcome::default();
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.context("a client task panicked")?;
            all.latencies.extend(outcome.latencies);
            all.errors += outcome.errors;
            if all.first_error.is_none() {
                all.first_error = outcome.first_error;
            }
            all.created.extend(outcome.created);
        }
        anyhow::Ok(all)
    })
    .await;
    progress.abort();
    let mut all = match collected {
        Ok(all) => all?,
        Err(_) => {
            tasks.abort_all();
            bail!(
                "{backend} {}: client tasks did not finish in time",
                operation.name()
            );
        }
    };
    let elapsed = started.elapsed();
    if let Some(error) = &all.first_error {
        eprintln!(
            "zk_bench: {backend} {}: {} errors, the first: {error}",
            operation.name(),
            all.errors
        );
    }
    if all.latencies.is_empty() {
        bail!("{backend} {}: no request succeeded", operation.name());
    }
    all.latencies.sort_unstable();
    let result = PhaseResult {
        ops_per_second: all.latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all.latencies, 50),
        p99: percentile(&all.latencies, 99),
        errors: all.errors,
    };
    eprintln!(
        "zk_bench: {backend} {}: {:.0} ops/s, p50 {:?}, p99 {:?}, {} errors",
        operation.name(),
        result.ops_per_second,
        result.p50,
        result.p99,
        result.errors
    );
    Ok((result, all.created))
}

fn report_progress(
    backend: ZkBackend,
    operation: Operation,
    started: Instant,
    duration: Duration,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            eprintln!(
                "zk_bench: {backend} {} {:>3}/{}s, {} ops",
                operation.name(),
                started.elapsed().as_secs(),
                duration.as_secs(),
                done.load(Ordering::Relaxed)
            );
        }
    })
}

/// The `pct`-th percentile of sorted, non-empty latencies (nearest rank).
fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

fn print_report(shape: &LoadShape, results: &[(ZkBackend, Vec<PhaseResult>)]) {
    println!(
        "load: {} clients over {} sessions, {}-byte values, {}s per phase, {} round(s)",
        shape.clients, shape.sessions, shape.value_size, shape.seconds, shape.rounds
    );
    println!(
        "{:<10} {:<8} {:>12} {:>12} {:>12} {:>7}",
        "backend", "op", "ops/s", "p50 ms", "p99 ms", "errors"
    );
    for (backend, phases) in results {
        for (operation, result) in Operation::ALL.into_iter().zip(phases) {
            println!(
                "{:<10} {:<8} {:>12.0} {:>12} {:>12} {:>7}",
                backend.name(),
                operation.name(),
                result.ops_per_second,
                millis(result.p50),
                millis(result.p99),
                result.errors
            );
        }
    }
    // Rounds pair up in order; a round a backend failed in leaves it one run short.
    let of = |wanted: ZkBackend| {
        results
            .iter()
            .filter(move |(b, _)| *b == wanted)
            .map(|(_, phases)| phases)
    };
    let pairs: Vec<_> = of(ZkBackend::Zookeeper)
        .zip(of(ZkBackend::Concord))
        .collect();
    for (index, operation) in Operation::ALL.into_iter().enumerate() {
        let ratios: Vec<[f64; 3]> = pairs
            .iter()
            .filter_map(|(zookeeper, concord)| {
                Some(concord.get(index)?.ratios_to(zookeeper.get(index)?))
            })
            .collect();
        let Some(median) = kv_load::median_ratios(&ratios) else {
            continue;
        };
        println!(
            "ratio concord/zookeeper {:<7}: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x{}",
            operation.name(),
            median[0],
            median[1],
            median[2],
            kv_load::rounds_note(&ratios),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_are_unique_per_client_and_index() {
        assert_eq!(node_path(3, 17), "/bench/c003-000000017");
        assert_ne!(node_path(1, 23), node_path(12, 3));
    }

    #[test]
    fn flags_override_defaults_and_bad_flags_are_refused() {
        let args = [
            "--seconds",
            "3",
            "--backends",
            "zookeeper",
            "--sessions",
            "2",
            "--rounds",
            "3",
        ]
        .map(String::from);
        let shape = LoadShape::from_args(args.into_iter()).unwrap();
        assert_eq!(shape.rounds, 3);
        assert_eq!(shape.seconds, 3);
        assert_eq!(shape.sessions, 2);
        assert_eq!(shape.backends, vec![ZkBackend::Zookeeper]);
        assert_eq!(shape.clients, 64);
        assert_eq!(shape.value_size, 256);
        let both = ["--backends", "concord, zookeeper"].map(String::from);
        assert_eq!(
            LoadShape::from_args(both.into_iter()).unwrap().backends,
            vec![ZkBackend::Concord, ZkBackend::Zookeeper]
        );
        let bad = ["--clients", "0"].map(String::from);
        assert!(LoadShape::from_args(bad.into_iter()).is_err());
        let etcd = ["--backends", "etcd"].map(String::from);
        assert!(LoadShape::from_args(etcd.into_iter()).is_err());
        let unknown = ["--nope", "1"].map(String::from);
        assert!(LoadShape::from_args(unknown.into_iter()).is_err());
    }
}
