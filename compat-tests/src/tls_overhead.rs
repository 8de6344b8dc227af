//! What `bench --tls` measures and prints: the Put rate of each backend on a plain client
//! port and with TLS on it (server TLS, and mutual TLS where every client presents a
//! certificate), each backend's TLS/plain ratios (its TLS overhead), and whether
//! Concord's overhead is no worse than etcd's.
//!
//! The connections are opened (and their handshakes done) before a phase starts, so the
//! overhead measured is that of encrypting and decrypting the requests, not of
//! handshakes.

use std::path::Path;

use anyhow::{Result, bail};

use crate::kv_load::PhaseResult;
use crate::server::Backend;
use crate::tls::ClientPortTls;

/// How clients reach the etcd client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP/2.
    Plain,
    /// TLS with a server certificate only.
    ServerTls,
    /// TLS where the server also requires a client certificate.
    MutualTls,
}

impl Transport {
    /// The name in progress lines, the table and the ratio lines.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::ServerTls => "server TLS",
            Transport::MutualTls => "mutual TLS",
        }
    }

    /// The client-port TLS of this transport, with the certificates in `dir`.
    pub fn client_port_tls(self, dir: &Path) -> Option<ClientPortTls> {
        let mutual = match self {
            Transport::Plain => return None,
            Transport::ServerTls => false,
            Transport::MutualTls => true,
        };
        Some(ClientPortTls {
            dir: dir.to_path_buf(),
            mutual,
        })
    }
}

/// The TLS transports of `--tls`: `server`, `mutual` or both, comma-separated.
pub fn parse_tls_modes(flag: &str, value: &str) -> Result<Vec<Transport>> {
    let mut modes = Vec::new();
    for name in value.split(',').map(str::trim) {
        let mode = match name {
            "server" => Transport::ServerTls,
            "mutual" => Transport::MutualTls,
            other => bail!("{flag}: unknown TLS mode {other:?}: use server and/or mutual"),
        };
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    Ok(modes)
}

/// One backend's Put phase over one transport.
#[derive(Debug, Clone, Copy)]
pub struct TlsRun {
    pub backend: Backend,
    pub transport: Transport,
    pub put: PhaseResult,
}

/// A backend's TLS phase divided by its plain one: throughput (the share of its plain
/// rate it keeps), p50 and p99 (how many times longer requests take).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overhead {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Overhead {
    /// `tls` relative to `plain`.
    pub fn of(tls: &PhaseResult, plain: &PhaseResult) -> Self {
        let [throughput, p50, p99] = tls.ratios_to(plain);
        Overhead {
            throughput,
            p50,
            p99,
        }
    }
}

/// The overhead of `transport` for `backend`, when both it and the plain run are there.
pub fn overhead(runs: &[TlsRun], backend: Backend, transport: Transport) -> Option<Overhead> {
    let find = |wanted: Transport| {
        runs.iter()
            .find(|r| r.backend == backend && r.transport == wanted)
    };
    Some(Overhead::of(
        &find(transport)?.put,
        &find(Transport::Plain)?.put,
    ))
}

/// The line comparing Concord's share of its plain Put rate under `transport` with
/// etcd's: no worse when Concord keeps at least as much (after rounding to the two
/// decimals shown, so the verdict never contradicts the numbers printed).
pub fn comparison(transport: Transport, concord: f64, etcd: f64) -> String {
    let shown = |ratio: f64| (ratio * 100.0).round();
    let verdict = if shown(concord) >= shown(etcd) {
        "Concord's overhead is no worse".to_string()
    } else {
        format!(
            "Concord's overhead is worse ({:.0} points more of its plain rate lost)",
            shown(etcd) - shown(concord)
        )
    };
    format!(
        "Concord keeps {concord:.2} of its plain Put rate under {}, etcd keeps {etcd:.2}: {verdict}",
        transport.name()
    )
}

/// Prints the table of every run, each backend's TLS/plain ratios, then the comparison
/// of Concord's overhead with etcd's for each TLS transport both ran.
pub fn print_tls_results(runs: &[TlsRun]) {
    println!(
        "{:<8} {:<11} {:>12} {:>12} {:>12} {:>7}",
        "backend", "transport", "Put ops/s", "p50", "p99", "errors"
    );
    for run in runs {
        println!(
            "{:<8} {:<11} {:>12.0} {:>12} {:>12} {:>7}",
            run.backend.name(),
            run.transport.name(),
            run.put.ops_per_second,
            format!("{:.2?}", run.put.p50),
            format!("{:.2?}", run.put.p99),
            run.put.errors
        );
    }
    let mut transports: Vec<Transport> = Vec::new();
    for run in runs {
        if run.transport != Transport::Plain && !transports.contains(&run.transport) {
            transports.push(run.transport);
        }
    }
    for &transport in &transports {
        for backend in Backend::ALL {
            if let Some(o) = overhead(runs, backend, transport) {
                println!(
                    "{:<8} {}/plain Put: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
                    backend.name(),
                    transport.name(),
                    o.throughput,
                    o.p50,
                    o.p99
                );
            }
        }
    }
    for &transport in &transports {
        if let (Some(concord), Some(etcd)) = (
            overhead(runs, Backend::Concord, transport),
            overhead(runs, Backend::Etcd, transport),
        ) {
            println!(
                "{}",
                comparison(transport, concord.throughput, etcd.throughput)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(backend: Backend, transport: Transport, ops: f64, p50_ms: u64) -> TlsRun {
        TlsRun {
            backend,
            transport,
            put: PhaseResult {
                ops_per_second: ops,
                p50: Duration::from_millis(p50_ms),
                p99: Duration::from_millis(p50_ms * 4),
                errors: 0,
            },
        }
    }

    #[test]
    fn modes_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_tls_modes("--tls", "server").unwrap(),
            vec![Transport::ServerTls]
        );
        assert_eq!(
            parse_tls_modes("--tls", "mutual, server,mutual").unwrap(),
            vec![Transport::MutualTls, Transport::ServerTls]
        );
        assert!(parse_tls_modes("--tls", "plain").is_err());
        assert!(parse_tls_modes("--tls", "").is_err());
    }

    #[test]
    fn overhead_is_tls_over_plain_of_the_same_backend() {
        let runs = [
            run(Backend::Etcd, Transport::Plain, 1000.0, 10),
            run(Backend::Etcd, Transport::ServerTls, 900.0, 12),
            run(Backend::Concord, Transport::Plain, 2000.0, 5),
        ];
        let etcd = overhead(&runs, Backend::Etcd, Transport::ServerTls).unwrap();
        assert!((etcd.throughput - 0.9).abs() < 1e-9);
        assert!((etcd.p50 - 1.2).abs() < 1e-9);
        assert!((etcd.p99 - 1.2).abs() < 1e-9);
        assert_eq!(
            overhead(&runs, Backend::Concord, Transport::ServerTls),
            None
        );
        assert_eq!(overhead(&runs, Backend::Etcd, Transport::MutualTls), None);
    }

    #[test]
    fn the_verdict_follows_the_ratios_as_printed() {
        assert_eq!(
            comparison(Transport::ServerTls, 0.93, 0.90),
            "Concord keeps 0.93 of its plain Put rate under server TLS, etcd keeps 0.90: \
             Concord's overhead is no worse"
        );
        // Equal once rounded to what is shown: no worse.
        assert!(comparison(Transport::MutualTls, 0.9012, 0.9049).ends_with("is no worse"));
        assert_eq!(
            comparison(Transport::MutualTls, 0.85, 0.90),
            "Concord keeps 0.85 of its plain Put rate under mutual TLS, etcd keeps 0.90: \
             Concord's overhead is worse (5 points more of its plain rate lost)"
        );
    }
}
