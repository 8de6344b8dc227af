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
//! With `--tls server` (or `mutual`, or `server,mutual`) it measures TLS overhead
//! instead: certificates are made with openssl in a temporary directory, and each
//! backend is started fresh once with a plain client port and once per TLS mode (etcd
//! with `--cert-file --key-file` and `https://` client URLs, plus `--trusted-ca-file
//! --client-cert-auth` for mutual TLS; Concord with a TLS profile on its etcd port),
//! and gets only the Put phase. The table then gives Put ops/s, p50 and p99 per backend
//! and transport, each backend's TLS/plain ratios, and whether Concord keeps at least
//! as large a share of its plain Put rate under TLS as etcd does
//! ([`concord_compat_tests::tls_overhead`]).
//!
//! Usage: `bench [--seconds N] [--clients N] [--connections N] [--keys N]
//! [--value-size N] [--backends etcd,concord] [--rounds N]
//! [--tls server|mutual|server,mutual]`. `--rounds N` runs the backends in turns N times
//! and gives the median of the per-round ratios. The `concord` binary is found as the
//! compat tests find it (`CONCORD_BIN`, else `release/concord` beside this binary). The
//! load itself is [`concord_compat_tests::kv_load`], shared with `cluster_bench`. Every
//! server is killed when its run ends or fails.

use std::path::Path;

use anyhow::{Context, Result, bail};
use concord_compat_tests::grpc_kv::KvConnection;
use concord_compat_tests::kv_load::{self, LoadShape, Operation};
use concord_compat_tests::tls::make_certificates;
use concord_compat_tests::tls_overhead::{self, TlsRun, Transport};
use concord_compat_tests::{Backend, Server, bench_flags};

/// The command line: the load's shape (defaults are the issue's: 64 clients over 8
/// connections, 256-byte values, 1000 keys) and the TLS modes (none: the Put and Range
/// comparison).
#[derive(Debug)]
struct Flags {
    shape: LoadShape,
    tls: Vec<Transport>,
}

fn flags_from_args(args: impl Iterator<Item = String>) -> Result<Flags> {
    let mut flags = Flags {
        shape: LoadShape::default(),
        tls: Vec::new(),
    };
    for (flag, value) in bench_flags::pairs(args)? {
        if flag == "--tls" {
            flags.tls = tls_overhead::parse_tls_modes(&flag, &value)?;
        } else if !flags.shape.apply_flag(&flag, &value)? {
            bail!("unknown flag {flag}; see the module doc of bench.rs");
        }
    }
    Ok(flags)
}

#[tokio::main]
async fn main() -> Result<()> {
    let Flags { shape, tls } = flags_from_args(std::env::args().skip(1))?;
    eprintln!("bench: {shape:?}");
    // On Ctrl-C the run is dropped, and with it the servers (killed) and the clients.
    tokio::select! {
        outcome = async {
            if tls.is_empty() {
                run_put_and_range(&shape).await
            } else {
                run_tls(&shape, &tls).await
            }
        } => outcome,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; servers killed"),
    }
}

/// Each backend's Put and Range phases.
async fn run_put_and_range(shape: &LoadShape) -> Result<()> {
    let mut results = Vec::new();
    for round in 1..=shape.rounds {
        for &backend in &shape.backends {
            eprintln!("bench: round {round}, starting {backend}");
            let server = Server::start(backend).await?;
            let connections = connect_all(&server, shape.connections).await?;
            let label = format!("bench: {backend}");
            let result = kv_load::run_put_and_range(&label, backend, shape, &connections).await?;
            drop(server);
            results.push(result);
        }
    }
    println!("load: {}", shape.describe());
    kv_load::print_results(&results);
    Ok(())
}

/// Each backend's Put phase on a plain client port, then with each of `modes`.
async fn run_tls(shape: &LoadShape, modes: &[Transport]) -> Result<()> {
    let certs = tempfile::Builder::new()
        .prefix("bench-tls-")
        .tempdir()
        .context("cannot create a temporary directory for the certificates")?;
    eprintln!("bench: making certificates with openssl");
    make_certificates(certs.path())?;
    let mut runs = Vec::new();
    for &backend in &shape.backends {
        for &transport in [Transport::Plain].iter().chain(modes) {
            let label = format!("bench: {backend} {}", transport.name());
            let put = run_put(&label, backend, transport, certs.path(), shape).await?;
            runs.push(TlsRun {
                backend,
                transport,
                put,
            });
        }
    }
    println!("load: {}, Put only", shape.describe());
    tls_overhead::print_tls_results(&runs);
    Ok(())
}

/// Starts `backend` with `transport` on its client port, runs the Put phase, stops it.
async fn run_put(
    label: &str,
    backend: Backend,
    transport: Transport,
    certs: &Path,
    shape: &LoadShape,
) -> Result<kv_load::PhaseResult> {
    eprintln!("{label}: starting");
    let server = Server::start_with_tls(backend, transport.client_port_tls(certs))
        .await
        .with_context(|| format!("{label}: start-up"))?;
    let connections = connect_all(&server, shape.connections)
        .await
        .with_context(|| format!("{label}: connecting"))?;
    let put = kv_load::run_phase(label, Operation::Put, shape, &connections).await?;
    drop(connections);
    drop(server);
    Ok(put)
}

async fn connect_all(server: &Server, count: usize) -> Result<Vec<KvConnection>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections
            .push(KvConnection::connect(&server.endpoint(), server.client_port_tls()).await?);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults_and_bad_flags_are_refused() {
        let args = ["--seconds", "3", "--backends", "concord"].map(String::from);
        let flags = flags_from_args(args.into_iter()).unwrap();
        assert_eq!(flags.shape.seconds, 3);
        assert_eq!(flags.shape.backends, vec![Backend::Concord]);
        assert_eq!(flags.shape.clients, 64);
        assert!(flags.tls.is_empty());
        let tls = ["--tls", "server,mutual"].map(String::from);
        let flags = flags_from_args(tls.into_iter()).unwrap();
        assert_eq!(flags.tls, vec![Transport::ServerTls, Transport::MutualTls]);
        let bad = ["--clients", "0"].map(String::from);
        assert!(flags_from_args(bad.into_iter()).is_err());
        let unknown = ["--nope", "1"].map(String::from);
        assert!(flags_from_args(unknown.into_iter()).is_err());
        let bad_tls = ["--tls", "plain"].map(String::from);
        assert!(flags_from_args(bad_tls.into_iter()).is_err());
    }
}
