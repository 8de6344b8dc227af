//! `bench`: the same etcd v3 Put and Range load against Concord and against real etcd on
//! this machine, side by side.
//!
//! Each backend is started fresh (temporary data directory, fsync'd durability as it
//! ships: Concord syncs its Raft log before acknowledging, etcd syncs its WAL), then gets
//! a Put phase and a Range phase of the same length: `clients` concurrent tasks spread
//! over `connections` gRPC connections, each issuing requests back to back on keys drawn
//! from a set of `keys`, with values of `value-size` bytes. Range requests are
//! linearizable single-key gets (etcdctl's default). Every phase prints progress once a
//! second; at the end a table gives ops/s, p50 and p99 per backend and Concord's ratio
//! to etcd (throughput: higher is better; latency: lower is better).
//!
//! Usage: `bench [--seconds N] [--clients N] [--connections N] [--keys N]
//! [--value-size N] [--backends etcd,concord]`. The `concord` binary is found as the
//! compat tests find it (`CONCORD_BIN`, else `release/concord` beside this binary).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_compat_tests::bench_flags::{self, backends, count};
use concord_compat_tests::bench_stats::{Picker, percentile};
use concord_compat_tests::{Backend, Server};
use etcd_client::KvClient;
use tokio::task::JoinSet;

/// The load's shape; defaults are the issue's: 64 clients over 8 connections, 256-byte
/// values, 1000 keys.
#[derive(Debug, Clone)]
struct LoadShape {
    seconds: u64,
    clients: usize,
    connections: usize,
    keys: usize,
    value_size: usize,
    backends: Vec<Backend>,
}

impl Default for LoadShape {
    fn default() -> Self {
        Self {
            seconds: 10,
            clients: 64,
            connections: 8,
            keys: 1000,
            value_size: 256,
            backends: Backend::ALL.to_vec(),
        }
    }
}

impl LoadShape {
    fn from_args(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut shape = Self::default();
        for (flag, value) in bench_flags::pairs(args)? {
            match flag.as_str() {
                "--seconds" => shape.seconds = u64::try_from(count(&flag, &value)?)?,
                "--clients" => shape.clients = count(&flag, &value)?,
                "--connections" => shape.connections = count(&flag, &value)?,
                "--keys" => shape.keys = count(&flag, &value)?,
                "--value-size" => shape.value_size = count(&flag, &value)?,
                "--backends" => shape.backends = backends(&flag, &value)?,
                other => bail!("unknown flag {other}; see the module doc of bench.rs"),
            }
        }
        Ok(shape)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Put,
    Range,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Put => "Put",
            Operation::Range => "Range",
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Copy)]
struct PhaseResult {
    ops_per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

fn key_name(index: usize) -> String {
    format!("bench/key-{index:06}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let shape = LoadShape::from_args(std::env::args().skip(1))?;
    eprintln!("bench: {shape:?}");
    let mut results = Vec::new();
    for &backend in &shape.backends {
        eprintln!("bench: starting {backend}");
        let server = Server::start(backend).await?;
        let connections = connect_all(&server, shape.connections).await?;
        let put = run_phase(backend, Operation::Put, &shape, &connections).await?;
        fill_all_keys(&connections[0], &shape).await?;
        let range = run_phase(backend, Operation::Range, &shape, &connections).await?;
        drop(server);
        results.push((backend, put, range));
    }
    print_report(&shape, &results);
    Ok(())
}

async fn connect_all(server: &Server, count: usize) -> Result<Vec<KvClient>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(server.client().await?.kv_client());
    }
    Ok(connections)
}

/// Makes sure every key exists, so each Range phase request finds one key.
async fn fill_all_keys(kv: &KvClient, shape: &LoadShape) -> Result<()> {
    let value = vec![b'v'; shape.value_size];
    let mut kv = kv.clone();
    for index in 0..shape.keys {
        kv.put(key_name(index), value.clone(), None)
            .await
            .context("filling keys")?;
    }
    Ok(())
}

async fn run_phase(
    backend: Backend,
    operation: Operation,
    shape: &LoadShape,
    connections: &[KvClient],
) -> Result<PhaseResult> {
    let duration = Duration::from_secs(shape.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for client in 0..shape.clients {
        let mut kv = connections[client % connections.len()].clone();
        let keys = shape.keys;
        let value = vec![b'x'; shape.value_size];
        let mut picker = Picker(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let key = key_name(picker.next(keys));
                let sent = Instant::now();
                let outcome = match operation {
                    Operation::Put => kv.put(key, value.clone(), None).await.map(drop),
                    Operation::Range => kv.get(key, None).await.map(drop),
                };
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let progress = report_progress(backend, operation, started, duration);
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (task_latencies, task_errors) = joined.context("a client task panicked")?;
        latencies.extend(task_latencies);
        errors += task_errors;
    }
    progress.abort();
    let elapsed = started.elapsed();
    if latencies.is_empty() {
        bail!("{backend} {}: no request succeeded", operation.name());
    }
    latencies.sort_unstable();
    let result = PhaseResult {
        ops_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        errors,
    };
    eprintln!(
        "bench: {backend} {}: {:.0} ops/s, p50 {:?}, p99 {:?}, {} errors",
        operation.name(),
        result.ops_per_second,
        result.p50,
        result.p99,
        result.errors
    );
    Ok(result)
}

fn report_progress(
    backend: Backend,
    operation: Operation,
    started: Instant,
    duration: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            eprintln!(
                "bench: {backend} {} {:>3}/{}s",
                operation.name(),
                started.elapsed().as_secs(),
                duration.as_secs()
            );
        }
    })
}

/// The `pct`-th percentile of sorted, non-empty latencies (nearest rank).
fn print_report(shape: &LoadShape, results: &[(Backend, PhaseResult, PhaseResult)]) {
    println!(
        "load: {} clients over {} connections, {}-byte values, {} keys, {}s per phase",
        shape.clients, shape.connections, shape.value_size, shape.keys, shape.seconds
    );
    println!(
        "{:<8} {:<6} {:>12} {:>12} {:>12} {:>7}",
        "backend", "op", "ops/s", "p50", "p99", "errors"
    );
    for (backend, put, range) in results {
        for (operation, result) in [(Operation::Put, put), (Operation::Range, range)] {
            println!(
                "{:<8} {:<6} {:>12.0} {:>12} {:>12} {:>7}",
                backend.name(),
                operation.name(),
                result.ops_per_second,
                format!("{:.2?}", result.p50),
                format!("{:.2?}", result.p99),
                result.errors
            );
        }
    }
    let find = |wanted: Backend| results.iter().find(|(b, _, _)| *b == wanted);
    if let (Some((_, etcd_put, etcd_range)), Some((_, concord_put, concord_range))) =
        (find(Backend::Etcd), find(Backend::Concord))
    {
        for (name, etcd, concord) in [
            ("Put", etcd_put, concord_put),
            ("Range", etcd_range, concord_range),
        ] {
            println!(
                "ratio concord/etcd {name:<5}: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
                concord.ops_per_second / etcd.ops_per_second,
                concord.p50.as_secs_f64() / etcd.p50.as_secs_f64(),
                concord.p99.as_secs_f64() / etcd.p99.as_secs_f64(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults_and_bad_flags_are_refused() {
        let args = ["--seconds", "3", "--backends", "concord"].map(String::from);
        let shape = LoadShape::from_args(args.into_iter()).unwrap();
        assert_eq!(shape.seconds, 3);
        assert_eq!(shape.backends, vec![Backend::Concord]);
        assert_eq!(shape.clients, 64);
        let bad = ["--clients", "0"].map(String::from);
        assert!(LoadShape::from_args(bad.into_iter()).is_err());
        let unknown = ["--nope", "1"].map(String::from);
        assert!(LoadShape::from_args(unknown.into_iter()).is_err());
    }
}
