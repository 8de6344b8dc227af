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
//! The load itself is [`concord_compat_tests::kv_load`], shared with `cluster_bench`.

use anyhow::{Result, bail};
use concord_compat_tests::Server;
use concord_compat_tests::bench_flags;
use concord_compat_tests::kv_load::{self, LoadShape};
use etcd_client::KvClient;

/// The load's shape from the command line; defaults are the issue's: 64 clients over 8
/// connections, 256-byte values, 1000 keys.
fn shape_from_args(args: impl Iterator<Item = String>) -> Result<LoadShape> {
    let mut shape = LoadShape::default();
    for (flag, value) in bench_flags::pairs(args)? {
        if !shape.apply_flag(&flag, &value)? {
            bail!("unknown flag {flag}; see the module doc of bench.rs");
        }
    }
    Ok(shape)
}

#[tokio::main]
async fn main() -> Result<()> {
    let shape = shape_from_args(std::env::args().skip(1))?;
    eprintln!("bench: {shape:?}");
    let mut results = Vec::new();
    for &backend in &shape.backends {
        eprintln!("bench: starting {backend}");
        let server = Server::start(backend).await?;
        let connections = connect_all(&server, shape.connections).await?;
        let label = format!("bench: {backend}");
        let result = kv_load::run_put_and_range(&label, backend, &shape, &connections).await?;
        drop(server);
        results.push(result);
    }
    println!("load: {}", shape.describe());
    kv_load::print_results(&results);
    Ok(())
}

async fn connect_all(server: &Server, count: usize) -> Result<Vec<KvClient>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(server.client().await?.kv_client());
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_compat_tests::Backend;

    #[test]
    fn flags_override_defaults_and_bad_flags_are_refused() {
        let args = ["--seconds", "3", "--backends", "concord"].map(String::from);
        let shape = shape_from_args(args.into_iter()).unwrap();
        assert_eq!(shape.seconds, 3);
        assert_eq!(shape.backends, vec![Backend::Concord]);
        assert_eq!(shape.clients, 64);
        let bad = ["--clients", "0"].map(String::from);
        assert!(shape_from_args(bad.into_iter()).is_err());
        let unknown = ["--nope", "1"].map(String::from);
        assert!(shape_from_args(unknown.into_iter()).is_err());
    }
}
