//! The metrics listener, as etcd's `--listen-metrics-urls`: HTTP/1.1 on a port of its
//! own (plain, or TLS through the adapters' shared handshake) serving `GET /metrics` in
//! Prometheus's text format and `GET /health` as etcd 3.5 answers it. Values come from
//! the kernel's public API at each scrape; only the metrics in [`METRICS`] exist (a
//! small part of etcd's). It is an adapter named "metrics", started and stopped with
//! the others.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_kernel::types::{AlarmKind, NodeStatus, RangeRequest};
use concord_kernel::{ETCD_CLUSTER_VERSION, ETCD_VERSION, Kernel, KernelResult};
use concord_plugin_api::{Adapter, AdapterContext, StartFuture};
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::ServerConfig;

use crate::listener::Http1Port;

/// Names the listener in the TLS refusal log line.
const PORT: &str = "the metrics port";
/// etcd's content type for Prometheus's text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// etcd gives the health check's read one second.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// `[metrics]` as an adapter: its address and, with a TLS profile, its rustls config.
#[derive(Debug)]
pub struct MetricsAdapter {
    pub listen: SocketAddr,
    pub tls: Option<Arc<ServerConfig>>,
}

impl Adapter for MetricsAdapter {
    fn name(&self) -> &str {
        "metrics"
    }

    fn config_section(&self) -> String {
        "metrics".into()
    }

    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture {
        Box::pin(async move {
            let port = Http1Port {
                adapter: "metrics",
                port: PORT,
                listen: self.listen,
                tls: self.tls,
            };
            let kernel = context.kernel.clone();
            port.start(&context, move |stream| {
                tokio::spawn(serve_connection(kernel.clone(), stream));
            })
            .await
        })
    }
}

async fn serve_connection<S>(kernel: Kernel, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| answer(kernel.clone(), req));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "metrics connection ended");
    }
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

async fn answer(
    kernel: Kernel,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let known = matches!(req.uri().path(), "/metrics" | "/health");
    if !known {
        return Ok(response(
            StatusCode::NOT_FOUND,
            TEXT,
            "404 page not found\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut refused = response(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "Method Not Allowed\n".into(),
        );
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(refused);
    }
    Ok(if req.uri().path() == "/health" {
        let (status, health, reason) = match unhealthy(&kernel).await {
            None => (StatusCode::OK, "true", String::new()),
            Some(reason) => {
                tracing::warn!(%reason, "/health error");
                (StatusCode::SERVICE_UNAVAILABLE, "false", reason)
            }
        };
        let body = serde_json::json!({ "health": health, "reason": reason });
        response(status, TEXT, body.to_string())
    } else {
        match Sample::take(&kernel).await {
            Ok(sample) => response(StatusCode::OK, PROMETHEUS_TEXT, render(&sample)),
            Err(e) => response(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
        }
    })
}

/// Why this member is not healthy, as etcd 3.5 checks it and in its words: an alarm, no
/// leader, or a linearizable read that fails (or takes over a second).
async fn unhealthy(kernel: &Kernel) -> Option<String> {
    if let Some(alarm) = kernel.alarms().first() {
        let name = match alarm.kind {
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        };
        return Some(format!("ALARM {name}"));
    }
    match kernel.status().await {
        Ok(status) if status.leader != 0 => {}
        Ok(_) => return Some("RAFT NO LEADER".into()),
        Err(e) => return Some(format!("STATUS ERROR:{e}")),
    }
    let read = kernel.range(RangeRequest {
        key: b"health".to_vec(),
        count_only: true,
        ..RangeRequest::default()
    });
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, read).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("RANGE ERROR:{e}")),
        Err(_) => Some("RANGE ERROR:context deadline exceeded".into()),
    }
}

/// What one scrape reports, read from the kernel.
#[derive(Debug)]
struct Sample {
    member_id: u64,
    is_leader: bool,
    compact_revision: i64,
    status: NodeStatus,
}

impl Sample {
    async fn take(kernel: &Kernel) -> KernelResult<Sample> {
        Ok(Sample {
            member_id: kernel.member_id(),
            is_leader: kernel.is_leader(),
            compact_revision: kernel.compact_revision()?,
            status: kernel.status().await?,
        })
    }
}

/// Each metric served, in order: etcd's name and our help text (`concord_raft_term` is ours:
/// etcd exports no term). All are gauges, as in etcd.
const METRICS: [(&str, &str); 12] = [
    (
        "etcd_cluster_version",
        "Always 1; the cluster_version label carries the cluster version.",
    ),
    (
        "etcd_debugging_mvcc_compact_revision",
        "Revision the keyspace was last compacted at (-1: never).",
    ),
    (
        "etcd_debugging_mvcc_current_revision",
        "Newest revision of the keyspace.",
    ),
    (
        "etcd_mvcc_db_total_size_in_bytes",
        "Bytes the storage engine holds on disk.",
    ),
    (
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Bytes of live data in the storage engine.",
    ),
    (
        "etcd_server_has_leader",
        "1 while this member knows a leader, else 0.",
    ),
    (
        "etcd_server_id",
        "Always 1; the server_id label carries this member's id in hex.",
    ),
    (
        "etcd_server_is_leader",
        "1 while this member leads, else 0.",
    ),
    (
        "etcd_server_is_learner",
        "1 while this member is a learner, else 0.",
    ),
    (
        "etcd_server_proposals_applied_total",
        "Raft log index this member has applied.",
    ),
    (
        "etcd_server_version",
        "Always 1; the server_version label carries the etcd version served.",
    ),
    ("concord_raft_term", "The current Raft term of this member."),
];

fn major_minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((second_dot, _)) => &version[..second_dot],
        None => version,
    }
}

/// The sample in Prometheus's text format, [`METRICS`] in order.
fn render(sample: &Sample) -> String {
    let status = &sample.status;
    let flag = |b: bool| (String::new(), i128::from(b));
    let plain = |value: i128| (String::new(), value);
    let values: [(String, i128); 12] = [
        // etcd labels the cluster version as major.minor ("3.5").
        (
            format!(
                "{{cluster_version=\"{}\"}}",
                major_minor(ETCD_CLUSTER_VERSION)
            ),
            1,
        ),
        // etcd reports -1 before the first compaction; the kernel says 0.
        plain(match sample.compact_revision {
            0 => -1,
            revision => revision.into(),
        }),
        plain(status.header.revision.into()),
        plain(status.db_size.into()),
        plain(status.db_size_in_use.into()),
        flag(status.leader != 0),
        (format!("{{server_id=\"{:x}\"}}", sample.member_id), 1),
        flag(sample.is_leader),
        flag(status.is_learner),
        plain(status.raft_applied_index.into()),
        (format!("{{server_version=\"{ETCD_VERSION}\"}}"), 1),
        plain(status.raft_term.into()),
    ];
    let mut out = String::new();
    for ((name, help), (labels, value)) in METRICS.iter().zip(values) {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_etcd_names_and_minus_one_before_any_compaction() {
        let mut sample = Sample {
            member_id: 0x2e12_59d4_15f2_a040,
            is_leader: true,
            compact_revision: 0,
            status: NodeStatus {
                header: concord_kernel::types::ResponseHeader {
                    revision: 7,
                    ..Default::default()
                },
                version: ETCD_VERSION.into(),
                db_size: 20480,
                db_size_in_use: 16384,
                leader: 0x2e12_59d4_15f2_a040,
                raft_index: 5,
                raft_term: 2,
                raft_applied_index: 5,
                is_learner: false,
                errors: Vec::new(),
            },
        };
        let text = render(&sample);
        for line in [
            "etcd_server_has_leader 1",
            "etcd_server_is_leader 1",
            "etcd_server_is_learner 0",
            "etcd_server_id{server_id=\"2e1259d415f2a040\"} 1",
            "etcd_debugging_mvcc_current_revision 7",
            "etcd_debugging_mvcc_compact_revision -1",
            "etcd_mvcc_db_total_size_in_bytes 20480",
            "etcd_server_proposals_applied_total 5",
            "# TYPE concord_raft_term gauge",
            "concord_raft_term 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        sample.compact_revision = 4;
        sample.status.leader = 0;
        let text = render(&sample);
        assert!(
            text.contains("\netcd_debugging_mvcc_compact_revision 4\n"),
            "{text}"
        );
        assert!(text.contains("\netcd_server_has_leader 0\n"), "{text}");
        assert!(text.contains("\netcd_cluster_version{cluster_version=\"3.5\"} 1\n"));
        assert_eq!(major_minor("3.4"), "3.4");
    }
}
