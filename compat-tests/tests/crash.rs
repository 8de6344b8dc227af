//! Durability: every put the server acknowledged survives `kill -9` and a restart on the
//! same data directory. Sixteen writers put unique keys concurrently; the server is killed
//! in the middle of the load, restarted, and every acknowledged (key, value) must read
//! back. Runs on each backend (real etcd validates the test itself).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_compat_tests::check::pairs;
use concord_compat_tests::{Backend, Server, ServerOptions, backends, connect, ensure_eq};
use etcd_client::GetOptions;

const WRITERS: usize = 16;
/// How long the load runs before the kill.
const LOAD: Duration = Duration::from_secs(2);
/// Upper bound on one writer's puts per round, so no loop depends on timing to end.
const MAX_PUTS_PER_WRITER: usize = 100_000;
/// How long writers may take to notice the kill and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn key(round: usize, writer: usize, i: usize) -> String {
    format!("crash/{round}/{writer:02}/{i:06}")
}

fn value(round: usize, writer: usize, i: usize) -> String {
    format!("round {round}, writer {writer}, put {i}")
}

/// Runs one writer until it is told to stop, its server dies, or it reaches its bound;
/// returns the puts the server acknowledged.
async fn writer(
    endpoint: String,
    round: usize,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let Ok(mut client) = connect(&endpoint).await else {
        return acked;
    };
    for i in 0..MAX_PUTS_PER_WRITER {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (k, v) = (key(round, writer, i), value(round, writer, i));
        match client.put(k.as_str(), v.as_str(), None).await {
            Ok(_) => acked.push((k, v)),
            Err(_) => break, // the server is gone (or going): stop writing
        }
    }
    acked
}

/// Puts from [`WRITERS`] concurrent clients, kills the server with SIGKILL after [`LOAD`],
/// and returns every acknowledged put.
async fn load_then_kill(server: &mut Server, round: usize) -> Result<Vec<(String, String)>> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(server.endpoint(), round, w, stop.clone())))
        .collect();
    tokio::time::sleep(LOAD).await;
    server.kill9()?;
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut acked = Vec::new();
    for task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let puts = tokio::time::timeout(left, task)
            .await
            .context("a writer did not stop after the kill")??;
        acked.extend(puts);
    }
    println!(
        "round {round}: {} puts acknowledged before kill -9",
        acked.len()
    );
    if acked.is_empty() {
        bail!("no put was acknowledged in round {round}");
    }
    Ok(acked)
}

/// Reads back every acknowledged put; reads one writer's keys at a time to keep each
/// response small.
async fn check_acked(server: &Server, acked: &[(String, String)]) -> Result<()> {
    let mut client = server.client().await?;
    let mut expected: BTreeMap<String, BTreeMap<&str, &str>> = BTreeMap::new();
    for (k, v) in acked {
        let prefix = k.rsplit_once('/').map_or(k.as_str(), |(p, _)| p);
        expected
            .entry(format!("{prefix}/"))
            .or_default()
            .insert(k, v);
    }
    for (prefix, wanted) in expected {
        let resp = client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let found: BTreeMap<String, String> = pairs(resp.kvs()).into_iter().collect();
        let lost: Vec<_> = wanted
            .iter()
            .filter(|(k, v)| found.get(**k).map(String::as_str) != Some(**v))
            .map(|(k, _)| *k)
            .collect();
        ensure_eq!(
            lost,
            Vec::<&str>::new(),
            "acknowledged puts under {prefix} lost or changed"
        );
    }
    Ok(())
}

/// `rounds` times: load, kill -9, restart on the same data directory; after each
/// restart every put acknowledged so far must be readable.
async fn survive_kills(backend: Backend, rounds: usize, options: ServerOptions) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start_in_with(backend, dir.path(), options).await?;
    let mut acked = Vec::new();
    for round in 0..rounds {
        acked.extend(load_then_kill(&mut server, round).await?);
        server
            .restart()
            .await
            .with_context(|| format!("restart #{}", round + 1))?;
        check_acked(&server, &acked)
            .await
            .with_context(|| format!("after restart #{}", round + 1))?;
    }
    Ok(())
}

async fn on_each(rounds: usize, options: ServerOptions) -> Result<()> {
    for backend in backends()? {
        println!("=== {backend}");
        survive_kills(backend, rounds, options.clone())
            .await
            .with_context(|| format!("on {backend}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_kill_9() -> Result<()> {
    on_each(1, ServerOptions::default()).await
}

/// With a snapshot (and a purge of the Raft log behind it) every few entries, the kill
/// also lands after purges: what was purged must already be durable in the state store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_kill_9_after_log_purges() -> Result<()> {
    on_each(1, ServerOptions::default().snapshot_every(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_two_kills_and_restarts() -> Result<()> {
    on_each(2, ServerOptions::default()).await
}
