//! `watch_bench`: watch fan-out on Concord and on real etcd, side by side.
//!
//! Each backend is started fresh. `watchers` watches are opened on one prefix, spread
//! over `connections` gRPC connections (one watch stream per watcher); then `clients`
//! concurrent writers Put keys under that prefix for `seconds`. Every value carries its
//! send time (nanoseconds since the benchmark's start, as decimal text at the front of
//! the value), so each watcher measures the delivery latency of every event it gets.
//! Latencies go into a fixed-bucket histogram (bounded memory whatever the load).
//! Progress is printed every second; at the end a table gives, per backend, the puts/s,
//! the delivered events/s (all watchers together), p50 and p99 delivery latency, and
//! Concord's ratio to etcd.
//!
//! Usage: `watch_bench [--seconds N] [--watchers N] [--connections N] [--clients N]
//! [--value-size N] [--backends etcd,concord]`. The `concord` binary is found as the
//! compat tests find it (`CONCORD_BIN`, else `release/concord` beside this binary).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_compat_tests::bench_flags::{self, backends, count};
use concord_compat_tests::{Backend, Server};
use etcd_client::{Client, WatchOptions};
use tokio::task::JoinSet;

const PREFIX: &str = "wbench/";
/// How long after the writers stop the watchers may take to drain.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct LoadShape {
    seconds: u64,
    watchers: usize,
    connections: usize,
    clients: usize,
    value_size: usize,
    backends: Vec<Backend>,
}

impl Default for LoadShape {
    fn default() -> Self {
        Self {
            seconds: 10,
            watchers: 1000,
            connections: 16,
            clients: 64,
            value_size: 64,
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
                "--watchers" => shape.watchers = count(&flag, &value)?,
                "--connections" => shape.connections = count(&flag, &value)?,
                "--clients" => shape.clients = count(&flag, &value)?,
                "--value-size" => shape.value_size = count(&flag, &value)?,
                "--backends" => shape.backends = backends(&flag, &value)?,
                other => bail!("unknown flag {other}; see the module doc of watch_bench.rs"),
            }
        }
        Ok(shape)
    }
}

/// Latency histogram: 1 µs buckets up to 1 ms, then 10 µs to 10 ms, 100 µs to 100 ms,
/// 1 ms to 1 s, and one overflow bucket. Fixed size.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
}

const TIERS: [(u64, u64); 4] = [(1_000, 1), (10_000, 10), (100_000, 100), (1_000_000, 1_000)];
const PER_TIER: usize = 1000;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; TIERS.len() * PER_TIER + 1],
        }
    }

    fn bucket(micros: u64) -> usize {
        let mut base = 0;
        for (i, (limit, width)) in TIERS.iter().enumerate() {
            if micros < *limit {
                let offset = usize::try_from((micros - base) / width).unwrap_or(PER_TIER - 1);
                return i * PER_TIER + offset.min(PER_TIER - 1);
            }
            base = *limit;
        }
        TIERS.len() * PER_TIER
    }

    /// The upper bound of a bucket, in microseconds.
    fn upper(bucket: usize) -> u64 {
        let tier = bucket / PER_TIER;
        if tier >= TIERS.len() {
            return TIERS[TIERS.len() - 1].0;
        }
        let base = if tier == 0 { 0 } else { TIERS[tier - 1].0 };
        base + (bucket % PER_TIER + 1) as u64 * TIERS[tier].1
    }

    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `pct`-th percentile (nearest rank, bucket upper bound).
    fn percentile(&self, pct: u64) -> Duration {
        let total = self.total();
        let rank = (total * pct).div_ceil(100).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(Self::upper(bucket));
            }
        }
        Duration::ZERO
    }
}

#[derive(Debug, Clone, Copy)]
struct RunResult {
    puts_per_second: f64,
    events_per_second: f64,
    p50: Duration,
    p99: Duration,
    put_errors: u64,
    undecodable: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let shape = LoadShape::from_args(std::env::args().skip(1))?;
    eprintln!("watch_bench: {shape:?}");
    let mut results = Vec::new();
    for &backend in &shape.backends {
        eprintln!("watch_bench: starting {backend}");
        let server = Server::start(backend).await?;
        let result = run(backend, &server, &shape).await?;
        drop(server);
        results.push((backend, result));
    }
    print_report(&shape, &results);
    Ok(())
}

async fn run(backend: Backend, server: &Server, shape: &LoadShape) -> Result<RunResult> {
    let mut connections: Vec<Client> = Vec::with_capacity(shape.connections);
    for _ in 0..shape.connections {
        connections.push(server.client().await?);
    }
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let put_count = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Watchers: each opens its own stream on the prefix and waits for "created".
    let mut watchers = JoinSet::new();
    for w in 0..shape.watchers {
        let mut client = connections[w % connections.len()].clone();
        let (watcher, mut stream) = client
            .watch(PREFIX, Some(WatchOptions::new().with_prefix()))
            .await
            .with_context(|| format!("opening watcher {w}"))?;
        let delivered = Arc::clone(&delivered);
        let mut stop = stop_rx.clone();
        watchers.spawn(async move {
            let _keep = watcher;
            let mut histogram = Histogram::new();
            let mut undecodable = 0u64;
            loop {
                let message = tokio::select! {
                    message = stream.message() => message,
                    _ = stop.changed() => break,
                };
                let Ok(Some(resp)) = message else { break };
                let now = epoch.elapsed();
                for event in resp.events() {
                    match event.kv().and_then(|kv| sent_at(kv.value())) {
                        Some(sent) => histogram.record(now.saturating_sub(sent)),
                        None => undecodable += 1,
                    }
                }
                delivered.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
            (histogram, undecodable)
        });
    }
    eprintln!("watch_bench: {backend}: {} watchers open", shape.watchers);

    let duration = Duration::from_secs(shape.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let mut writers = JoinSet::new();
    for client in 0..shape.clients {
        let mut kv = connections[client % connections.len()].kv_client();
        let put_count = Arc::clone(&put_count);
        let value_size = shape.value_size;
        writers.spawn(async move {
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("{PREFIX}{client:03}/{:04}", i % 1000);
                i += 1;
                let mut value = format!("{} ", epoch.elapsed().as_nanos()).into_bytes();
                value.resize(value_size.max(value.len()), b'x');
                match kv.put(key, value, None).await {
                    Ok(_) => {
                        put_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => errors += 1,
                }
            }
            errors
        });
    }
    let progress = {
        let (delivered, put_count) = (Arc::clone(&delivered), Arc::clone(&put_count));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let (mut last_events, mut last_puts) = (0, 0);
            loop {
                tick.tick().await;
                let (events, puts) = (
                    delivered.load(Ordering::Relaxed),
                    put_count.load(Ordering::Relaxed),
                );
                eprintln!(
                    "watch_bench: {backend} {:>3}/{}s: {} puts/s, {} events/s",
                    started.elapsed().as_secs(),
                    duration.as_secs(),
                    puts - last_puts,
                    events - last_events
                );
                (last_events, last_puts) = (events, puts);
            }
        })
    };
    let mut put_errors = 0;
    while let Some(joined) = writers.join_next().await {
        put_errors += joined.context("a writer panicked")?;
    }
    let write_time = started.elapsed();
    let puts = put_count.load(Ordering::Relaxed);
    // Let the watchers drain: until every put has reached every watcher, or DRAIN.
    let expected = puts * shape.watchers as u64;
    let drain_deadline = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery_time = started.elapsed();
    stop_tx.send(true).ok();
    progress.abort();
    let mut histogram = Histogram::new();
    let mut undecodable = 0;
    while let Some(joined) = watchers.join_next().await {
        let (h, u) = joined.context("a watcher panicked")?;
        histogram.merge(&h);
        undecodable += u;
    }
    let events = delivered.load(Ordering::Relaxed);
    if events == 0 {
        bail!("{backend}: no event was delivered");
    }
    if events < expected {
        eprintln!(
            "watch_bench: {backend}: only {events} of {expected} events delivered within {DRAIN:?} after the writes"
        );
    }
    let result = RunResult {
        puts_per_second: puts as f64 / write_time.as_secs_f64(),
        events_per_second: events as f64 / delivery_time.as_secs_f64(),
        p50: histogram.percentile(50),
        p99: histogram.percentile(99),
        put_errors,
        undecodable,
    };
    eprintln!("watch_bench: {backend}: {result:?}");
    Ok(result)
}

/// The send time at the front of a value: decimal nanoseconds, then a space.
fn sent_at(value: &[u8]) -> Option<Duration> {
    let end = value.iter().position(|b| *b == b' ')?;
    let nanos: u64 = std::str::from_utf8(&value[..end]).ok()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn print_report(shape: &LoadShape, results: &[(Backend, RunResult)]) {
    println!(
        "load: {} watchers on one prefix over {} connections, {} writers, {}-byte values, {}s",
        shape.watchers, shape.connections, shape.clients, shape.value_size, shape.seconds
    );
    println!(
        "{:<8} {:>10} {:>14} {:>10} {:>10} {:>7}",
        "backend", "puts/s", "events/s", "p50", "p99", "errors"
    );
    for (backend, r) in results {
        println!(
            "{:<8} {:>10.0} {:>14.0} {:>10} {:>10} {:>7}",
            backend.name(),
            r.puts_per_second,
            r.events_per_second,
            format!("{:.2?}", r.p50),
            format!("{:.2?}", r.p99),
            r.put_errors + r.undecodable
        );
    }
    let find = |wanted: Backend| results.iter().find(|(b, _)| *b == wanted).map(|(_, r)| r);
    if let (Some(etcd), Some(concord)) = (find(Backend::Etcd), find(Backend::Concord)) {
        println!(
            "ratio concord/etcd: events/s {:.2}x, p50 {:.2}x, p99 {:.2}x",
            concord.events_per_second / etcd.events_per_second,
            concord.p50.as_secs_f64() / etcd.p50.as_secs_f64(),
            concord.p99.as_secs_f64() / etcd.p99.as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_bucket_bounds() {
        let mut h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.total(), 100);
        assert_eq!(h.percentile(50), Duration::from_micros(50_100));
        assert_eq!(h.percentile(99), Duration::from_micros(99_100));
        h.record(Duration::from_secs(5));
        assert_eq!(Histogram::bucket(5_000_000), TIERS.len() * PER_TIER);
    }

    #[test]
    fn small_latencies_have_microsecond_buckets() {
        assert_eq!(Histogram::bucket(0), 0);
        assert_eq!(Histogram::bucket(999), 999);
        assert_eq!(Histogram::upper(Histogram::bucket(999)), 1_000);
        assert_eq!(Histogram::upper(Histogram::bucket(1_005)), 1_010);
    }

    #[test]
    fn send_time_round_trips() {
        assert_eq!(sent_at(b"12345 xxxx"), Some(Duration::from_nanos(12345)));
        assert_eq!(sent_at(b"nope"), None);
    }

    #[test]
    fn flags_override_defaults() {
        let args = ["--watchers", "10", "--backends", "etcd"].map(String::from);
        let shape = LoadShape::from_args(args.into_iter()).unwrap();
        assert_eq!((shape.watchers, shape.seconds), (10, 10));
        assert_eq!(shape.backends, vec![Backend::Etcd]);
        assert!(LoadShape::from_args(["--seconds", "0"].map(String::from).into_iter()).is_err());
    }
}
