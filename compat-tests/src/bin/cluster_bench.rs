//! `cluster_bench`: the same etcd v3 Put and Range load as `bench`, against a
//! multi-member cluster of real etcd and of Concord on this machine, side by side.
//!
//! Each backend gets a fresh cluster of `members` members on loopback
//! ([`concord_compat_tests::Cluster`]: temporary data directories, durability as each
//! ships), awaited until every member answers and all agree on a leader. Then a Put
//! phase and a linearizable Range phase of `seconds` each: `clients` concurrent tasks
//! over `connections` gRPC connections, connection `c` going to member `c % members`
//! (so followers forward writes to the leader and serve reads through it, as clients
//! spread over a cluster see), keys drawn from a set of `keys`, values of `value-size`
//! bytes. Every phase prints progress once a second; at the end a table gives ops/s,
//! p50 and p99 per backend and Concord's ratio to etcd (throughput: higher is better;
//! latency: lower is better). The load is [`concord_compat_tests::kv_load`], shared with
//! `bench`.
//!
//! Usage: `cluster_bench [--seconds N] [--clients N] [--connections N] [--keys N]
//! [--value-size N] [--members N] [--backends etcd,concord] [--rounds N]` (defaults: 10 s, 64
//! clients, 8 connections, 1000 keys, 256 bytes, 3 members, both backends). The `concord`
//! binary is found as the compat tests find it (`CONCORD_BIN`, else `release/concord`
//! beside this binary).

use anyhow::{Result, bail};
use concord_compat_tests::Cluster;
use concord_compat_tests::bench_flags::{self, count};
use concord_compat_tests::grpc_kv::KvConnection;
use concord_compat_tests::kv_load::{self, LoadShape};

/// The load's shape and the cluster size.
#[derive(Debug, Clone)]
struct Args {
    load: LoadShape,
    members: usize,
}

impl Args {
    fn from_args(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Args {
            load: LoadShape::default(),
            members: 3,
        };
        for (flag, value) in bench_flags::pairs(args)? {
            if flag == "--members" {
                parsed.members = count(&flag, &value)?;
            } else if !parsed.load.apply_flag(&flag, &value)? {
                bail!("unknown flag {flag}; see the module doc of cluster_bench.rs");
            }
        }
        Ok(parsed)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::from_args(std::env::args().skip(1))?;
    eprintln!("cluster_bench: {args:?}");
    let mut results = Vec::new();
    for round in 1..=args.load.rounds {
        for &backend in &args.load.backends {
            eprintln!(
                "cluster_bench: round {round}, starting a {}-member {backend} cluster",
                args.members
            );
            let cluster = Cluster::start(backend, args.members).await?;
            let connections = connect_spread(&cluster, args.load.connections).await?;
            let label = format!("cluster_bench: {backend}");
            let result =
                kv_load::run_put_and_range(&label, backend, &args.load, &connections).await?;
            drop(cluster);
            results.push(result);
        }
    }
    println!("load: {}, {} members", args.load.describe(), args.members);
    kv_load::print_results(&results);
    Ok(())
}

/// `count` connections, connection `c` to the `c % members`-th member's endpoint.
async fn connect_spread(cluster: &Cluster, count: usize) -> Result<Vec<KvConnection>> {
    let endpoints = cluster.endpoints();
    if endpoints.is_empty() {
        bail!("the cluster has no member");
    }
    let mut connections = Vec::with_capacity(count);
    for c in 0..count {
        connections.push(KvConnection::connect(&endpoints[c % endpoints.len()], None).await?);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_compat_tests::Backend;

    #[test]
    fn members_flag_and_shared_flags() {
        let args = ["--members", "5", "--seconds", "3", "--backends", "etcd"].map(String::from);
        let parsed = Args::from_args(args.into_iter()).unwrap();
        assert_eq!(parsed.members, 5);
        assert_eq!(parsed.load.seconds, 3);
        assert_eq!(parsed.load.backends, vec![Backend::Etcd]);
        assert_eq!(parsed.load.connections, 8);
        let defaults = Args::from_args(std::iter::empty()).unwrap();
        assert_eq!(defaults.members, 3);
        assert!(Args::from_args(["--members", "0"].map(String::from).into_iter()).is_err());
        assert!(Args::from_args(["--nope", "1"].map(String::from).into_iter()).is_err());
    }
}
