//! Four-letter words on the client port (`ruok`, `srvr`, `stat`, `mntr`, `conf`,
//! `cons`, `envi`, `wchs`, `isro`), in ZooKeeper 3.8's formats, answered only when the
//! configured whitelist allows them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use concord_kernel::types::RangeRequest;

use crate::server::Shared;

/// The version string reported where ZooKeeper reports its own.
pub const VERSION: &str = concat!(
    "3.8.0-concord-",
    env!("CARGO_PKG_VERSION"),
    ", built on unknown"
);

fn allowed(shared: &Shared, word: &str) -> bool {
    shared
        .options
        .four_letter_words
        .iter()
        .any(|w| w == "*" || w == word)
}

/// The number of znodes (path keys, and the root), counted from this member's state.
async fn znode_count(shared: &Shared) -> i64 {
    let request = RangeRequest {
        key: b"/".to_vec(),
        range_end: b"0".to_vec(),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    shared
        .kernel
        .range(request)
        .await
        .map_or(0, |r| r.count + 1)
}

/// The live connections, counting the one asking (as ZooKeeper does).
fn connection_count(shared: &Shared) -> usize {
    shared.connections().len() + 1
}

/// How ZooKeeper lists the connection a four-letter word came on.
fn asking_connection(peer: SocketAddr) -> String {
    format!(" /{peer}[0](queued=0,recved=1,sent=0)")
}

fn server_summary(shared: &Shared, out: &mut String, asking: Option<SocketAddr>, nodes: i64) {
    let (min, avg, max) = shared.counters.latency_ms();
    let _ = writeln!(out, "Zookeeper version: {VERSION}");
    if let Some(peer) = asking {
        let _ = writeln!(out, "Clients:");
        for c in shared.connections() {
            let _ = writeln!(
                out,
                " /{}[1](queued=0,recved={},sent={})",
                c.peer,
                c.received.load(Ordering::Relaxed),
                c.sent.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "{}", asking_connection(peer));
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}");
    let _ = writeln!(
        out,
        "Received: {}",
        shared.counters.received.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "Sent: {}",
        shared.counters.sent.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "Connections: {}", connection_count(shared));
    let _ = writeln!(out, "Outstanding: 0");
    let _ = writeln!(
        out,
        "Zxid: {:#x}",
        shared.kernel.revision().unwrap_or_default()
    );
    let _ = writeln!(out, "Mode: {}", mode(shared));
    let _ = writeln!(out, "Node count: {nodes}");
}

/// The member's role as ZooKeeper names it (a Raft learner is an observer).
fn mode(shared: &Shared) -> &'static str {
    let members = shared.kernel.members();
    let learner = members
        .iter()
        .any(|m| m.id == shared.kernel.member_id() && m.is_learner);
    if members.len() <= 1 {
        "standalone"
    } else if learner {
        "observer"
    } else if shared.kernel.is_leader() {
        "leader"
    } else {
        "follower"
    }
}

/// The answer to `word` (a known four-letter word).
pub async fn answer(shared: &Shared, word: &str, peer: SocketAddr) -> String {
    if !allowed(shared, word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let mut out = String::new();
    match word {
        "ruok" => out.push_str("imok"),
        "isro" => out.push_str("rw"),
        "srvr" => server_summary(shared, &mut out, None, znode_count(shared).await),
        "stat" => server_summary(shared, &mut out, Some(peer), znode_count(shared).await),
        "cons" => {
            for c in shared.connections() {
                let _ = writeln!(
                    out,
                    " /{}[1](queued=0,recved={},sent={},sid={:#x},to={})",
                    c.peer,
                    c.received.load(Ordering::Relaxed),
                    c.sent.load(Ordering::Relaxed),
                    c.session_id.load(Ordering::Relaxed),
                    c.timeout_ms.load(Ordering::Relaxed),
                );
            }
            let _ = writeln!(out, "{}", asking_connection(peer));
            out.push('\n');
        }
        "conf" => {
            let o = &shared.options;
            if let Some(listen) = o.listen {
                let _ = writeln!(out, "clientPort={}", listen.port());
                let _ = writeln!(out, "clientPortAddress={}", listen.ip());
            }
            if let Some(listen) = o.secure_listen {
                let _ = writeln!(out, "secureClientPort={}", listen.port());
                let _ = writeln!(out, "secureClientPortAddress={}", listen.ip());
            }
            let _ = writeln!(out, "dataDir={}", o.data_dir);
            let _ = writeln!(out, "tickTime={}", o.tick_time_ms);
            let _ = writeln!(out, "minSessionTimeout={}", o.min_session_timeout_ms);
            let _ = writeln!(out, "maxSessionTimeout={}", o.max_session_timeout_ms);
            let _ = writeln!(out, "serverId=0");
        }
        "envi" => {
            let _ = writeln!(out, "Environment:");
            let _ = writeln!(out, "zookeeper.version={VERSION}");
            let _ = writeln!(out, "os.name={}", std::env::consts::OS);
            let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
        }
        "wchs" => {
            let (watching, paths, total) = shared.dispatcher.totals();
            let _ = writeln!(out, "{watching} connections watching {paths} paths");
            let _ = writeln!(out, "Total watches:{total}");
        }
        "mntr" => {
            let (min, avg, max) = shared.counters.latency_ms();
            let (_, _, watches) = shared.dispatcher.totals();
            let rows: [(&str, String); 12] = [
                ("zk_version", VERSION.to_string()),
                ("zk_server_state", mode(shared).to_string()),
                ("zk_avg_latency", format!("{avg:.4}")),
                ("zk_max_latency", format!("{max:.0}")),
                ("zk_min_latency", format!("{min:.0}")),
                (
                    "zk_packets_received",
                    shared.counters.received.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "zk_packets_sent",
                    shared.counters.sent.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "zk_num_alive_connections",
                    connection_count(shared).to_string(),
                ),
                ("zk_outstanding_requests", "0".to_string()),
                ("zk_znode_count", znode_count(shared).await.to_string()),
                ("zk_watch_count", watches.to_string()),
                (
                    "zk_uptime",
                    shared.started.elapsed().as_millis().to_string(),
                ),
            ];
            for (key, value) in rows {
                let _ = writeln!(out, "{key}\t{value}");
            }
        }
        other => {
            let _ = writeln!(out, "{other} is not supported by this server.");
        }
    }
    out
}
