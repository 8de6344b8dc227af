//! The etcd v3 Put and Range load that `bench` (one server per backend) and
//! `cluster_bench` (a cluster per backend) both run, and their result table.
//!
//! A phase runs `clients` concurrent tasks over the given gRPC connections ([`KvConnection`],
//! a lean client that sends each request in one TCP write; client `i` uses connection
//! `i % connections`), each issuing requests back to back on keys drawn
//! from a set of `keys`, with values of `value-size` bytes, for `seconds`. Range requests
//! are linearizable single-key gets (etcdctl's default). A phase prints progress once a
//! second, then one summary line. [`print_results`] prints the table (ops/s, p50, p99,
//! errors per backend and phase) and Concord's ratio to etcd when both ran.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;

use crate::bench_flags::{backends, count};
use crate::bench_stats::{Picker, percentile};
use crate::grpc_kv::KvConnection;
use crate::server::Backend;

/// How long one request may take before it counts as an error (so that a phase ends
/// even when a server stops answering).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The load's shape; defaults are the issue's: 64 clients over 8 connections, 256-byte
/// values, 1000 keys, 10 s per phase, both backends.
#[derive(Debug, Clone)]
pub struct LoadShape {
    pub seconds: u64,
    pub clients: usize,
    pub connections: usize,
    pub keys: usize,
    pub value_size: usize,
    pub backends: Vec<Backend>,
    /// How many times every backend runs its phases, the backends taking turns, so that
    /// a slow spell of a shared machine falls on both and the median ratio stays fair.
    pub rounds: usize,
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
            rounds: 1,
        }
    }
}

impl LoadShape {
    /// Applies one of the shared flags (`--seconds --clients --connections --keys
    /// --value-size --backends --rounds`); `false` when `flag` is not one of them.
    pub fn apply_flag(&mut self, flag: &str, value: &str) -> Result<bool> {
        match flag {
            "--seconds" => self.seconds = u64::try_from(count(flag, value)?)?,
            "--clients" => self.clients = count(flag, value)?,
            "--connections" => self.connections = count(flag, value)?,
            "--keys" => self.keys = count(flag, value)?,
            "--value-size" => self.value_size = count(flag, value)?,
            "--backends" => self.backends = backends(flag, value)?,
            "--rounds" => self.rounds = count(flag, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The line describing the load, printed above the table.
    pub fn describe(&self) -> String {
        format!(
            "{} clients over {} connections, {}-byte values, {} keys, {}s per phase, {} round(s)",
            self.clients, self.connections, self.value_size, self.keys, self.seconds, self.rounds
        )
    }
}

/// A phase's request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Range,
}

impl Operation {
    /// The name in progress lines and the table.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Put => "Put",
            Operation::Range => "Range",
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Copy)]
pub struct PhaseResult {
    pub ops_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

impl PhaseResult {
    /// Throughput, p50 and p99 of this phase relative to `base`'s.
    pub fn ratios_to(&self, base: &PhaseResult) -> [f64; 3] {
        [
            self.ops_per_second / base.ops_per_second,
            self.p50.as_secs_f64() / base.p50.as_secs_f64(),
            self.p99.as_secs_f64() / base.p99.as_secs_f64(),
        ]
    }
}

/// One backend's Put and Range phases.
#[derive(Debug, Clone, Copy)]
pub struct BackendResult {
    pub backend: Backend,
    pub put: PhaseResult,
    pub range: PhaseResult,
}

impl BackendResult {
    /// The result of the `operation` phase.
    pub fn phase(&self, operation: Operation) -> &PhaseResult {
        match operation {
            Operation::Put => &self.put,
            Operation::Range => &self.range,
        }
    }
}

/// The name of the key with this index.
pub fn key_name(index: usize) -> String {
    format!("bench/key-{index:06}")
}

/// Makes sure every key exists, so each Range phase request finds one key.
pub async fn fill_all_keys(kv: &KvConnection, shape: &LoadShape) -> Result<()> {
    let value = vec![b'v'; shape.value_size];
    let mut kv = kv.clone();
    for index in 0..shape.keys {
        kv.put(key_name(index).as_bytes(), &value)
            .await
            .context("filling keys")?;
    }
    Ok(())
}

/// Runs the Put phase, fills every key, then runs the Range phase.
pub async fn run_put_and_range(
    label: &str,
    backend: Backend,
    shape: &LoadShape,
    connections: &[KvConnection],
) -> Result<BackendResult> {
    let put = run_phase(label, Operation::Put, shape, connections).await?;
    let first = connections
        .first()
        .context("the load needs at least one connection")?;
    fill_all_keys(first, shape).await?;
    let range = run_phase(label, Operation::Range, shape, connections).await?;
    Ok(BackendResult {
        backend,
        put,
        range,
    })
}

/// One phase of `operation` for `shape.seconds`; progress and the summary line are
/// printed to stderr, prefixed with `label` (e.g. `bench: etcd`).
pub async fn run_phase(
    label: &str,
    operation: Operation,
    shape: &LoadShape,
    connections: &[KvConnection],
) -> Result<PhaseResult> {
    if connections.is_empty() {
        bail!("{label} {}: no connection", operation.name());
    }
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
                let call = async {
                    match operation {
                        Operation::Put => kv.put(key.as_bytes(), &value).await,
                        Operation::Range => kv.get(key.as_bytes()).await,
                    }
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                    Ok(Ok(())) => latencies.push(sent.elapsed()),
                    Ok(Err(_)) | Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let progress = report_progress(label.to_string(), operation, started, duration);
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
        bail!("{label} {}: no request succeeded", operation.name());
    }
    latencies.sort_unstable();
    let result = PhaseResult {
        ops_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        errors,
    };
    eprintln!(
        "{label} {}: {:.0} ops/s, p50 {:?}, p99 {:?}, {} errors",
        operation.name(),
        result.ops_per_second,
        result.p50,
        result.p99,
        result.errors
    );
    Ok(result)
}

fn report_progress(
    label: String,
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
                "{label} {} {:>3}/{}s",
                operation.name(),
                started.elapsed().as_secs(),
                duration.as_secs()
            );
        }
    })
}

/// Prints the table of every backend's phases, then Concord's ratios to etcd when both
/// ran (throughput: higher is better; latency: lower is better).
pub fn print_results(results: &[BackendResult]) {
    println!(
        "{:<8} {:<6} {:>12} {:>12} {:>12} {:>7}",
        "backend", "op", "ops/s", "p50", "p99", "errors"
    );
    for result in results {
        for (operation, phase) in [
            (Operation::Put, &result.put),
            (Operation::Range, &result.range),
        ] {
            println!(
                "{:<8} {:<6} {:>12.0} {:>12} {:>12} {:>7}",
                result.backend.name(),
                operation.name(),
                phase.ops_per_second,
                format!("{:.2?}", phase.p50),
                format!("{:.2?}", phase.p99),
                phase.errors
            );
        }
    }
    let of = |wanted: Backend| results.iter().filter(move |r| r.backend == wanted);
    let pairs: Vec<_> = of(Backend::Etcd).zip(of(Backend::Concord)).collect();
    for (name, phase) in [("Put", Operation::Put), ("Range", Operation::Range)] {
        let ratios: Vec<[f64; 3]> = pairs
            .iter()
            .map(|(etcd, concord)| concord.phase(phase).ratios_to(etcd.phase(phase)))
            .collect();
        let Some(median) = median_ratios(&ratios) else {
            continue;
        };
        println!(
            "ratio concord/etcd {name:<5}: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x{}",
            median[0],
            median[1],
            median[2],
            rounds_note(&ratios)
        );
    }
}

/// What follows a ratio's medians when there were several rounds: their count and each
/// round's throughput ratio.
pub fn rounds_note(ratios: &[[f64; 3]]) -> String {
    if ratios.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{:.2}x", r[0])).collect();
    format!(
        " (medians of {} rounds; throughput {})",
        ratios.len(),
        each.join(" ")
    )
}

/// The median of each column of per-round ratios (the lower middle one for an even
/// count); `None` without rounds.
pub fn median_ratios(ratios: &[[f64; 3]]) -> Option<[f64; 3]> {
    if ratios.is_empty() {
        return None;
    }
    let mut median = [0.0; 3];
    for (column, slot) in median.iter_mut().enumerate() {
        let mut values: Vec<f64> = ratios.iter().map(|r| r[column]).collect();
        values.sort_by(f64::total_cmp);
        *slot = values[(values.len() - 1) / 2];
    }
    Some(median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_flags_apply_and_others_are_left_alone() {
        let mut shape = LoadShape::default();
        assert!(shape.apply_flag("--seconds", "3").unwrap());
        assert!(shape.apply_flag("--backends", "etcd").unwrap());
        assert!(!shape.apply_flag("--members", "5").unwrap());
        assert!(shape.apply_flag("--clients", "0").is_err());
        assert_eq!(shape.seconds, 3);
        assert_eq!(shape.backends, vec![Backend::Etcd]);
        assert_eq!(shape.clients, 64);
        assert_eq!(key_name(7), "bench/key-000007");
        assert_eq!(shape.rounds, 1);
        assert!(shape.apply_flag("--rounds", "3").unwrap());
        assert_eq!(shape.rounds, 3);
        assert!(shape.apply_flag("--rounds", "0").is_err());
    }

    #[test]
    fn median_ratios_take_each_column_apart() {
        assert_eq!(median_ratios(&[]), None);
        assert_eq!(median_ratios(&[[1.5, 0.5, 0.7]]), Some([1.5, 0.5, 0.7]));
        let rounds = [[1.0, 0.9, 0.3], [2.0, 0.1, 0.2], [1.5, 0.5, 0.1]];
        assert_eq!(median_ratios(&rounds), Some([1.5, 0.5, 0.2]));
        assert_eq!(
            median_ratios(&[[1.0, 2.0, 3.0], [4.0, 1.0, 0.5]]),
            Some([1.0, 1.0, 0.5])
        );
    }

    #[test]
    fn ratios_divide_throughput_and_latencies_by_the_base() {
        let phase = |ops, p50, p99| PhaseResult {
            ops_per_second: ops,
            p50: Duration::from_millis(p50),
            p99: Duration::from_millis(p99),
            errors: 0,
        };
        assert_eq!(
            phase(300.0, 1, 6).ratios_to(&phase(200.0, 4, 8)),
            [1.5, 0.25, 0.75]
        );
    }

    #[test]
    fn the_rounds_note_lists_each_rounds_throughput_ratio() {
        assert_eq!(rounds_note(&[[1.5, 0.5, 0.7]]), "");
        assert_eq!(
            rounds_note(&[[1.0, 0.9, 0.3], [2.345, 0.1, 0.2]]),
            " (medians of 2 rounds; throughput 1.00x 2.35x)"
        );
    }
}
