//! The ZooKeeper adapter: listens on the plain client port and/or the secure (TLS) one,
//! as ZooKeeper's `clientPort` and `secureClientPort`, accepts connections (each served
//! by [`crate::connection`], a TLS handshake first on the secure port), keeps what all connections share (options, the watch
//! dispatcher, live connections and sessions, counters for the four-letter words), and
//! on the leader removes empty containers and expired TTL nodes on a timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use concord_kernel::Kernel;
use concord_kernel::types::{Acl, TreeOp};
use concord_plugin_api::{Adapter, AdapterContext, AdapterError, RunningAdapter, StartFuture};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OnceCell};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::codes::perms;
use crate::watches::WatchDispatcher;

const NAME: &str = "zookeeper";

/// The adapter's settings (the `[adapters.zookeeper]` section).
#[derive(Debug, Clone)]
pub struct ZookeeperOptions {
    /// The plaintext client port (`clientPort`), if served.
    pub listen: Option<SocketAddr>,
    /// The TLS client port (`secureClientPort`), if served; needs
    /// [`ZookeeperAdapter::tls`].
    pub secure_listen: Option<SocketAddr>,
    pub tick_time_ms: u32,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    pub max_frame_bytes: usize,
    /// Four-letter words answered; `*` allows all.
    pub four_letter_words: Vec<String>,
    pub extended_types: bool,
    pub container_check_interval: Duration,
    pub data_dir: String,
}

/// The ZooKeeper dialect as an adapter.
#[derive(Debug)]
pub struct ZookeeperAdapter {
    pub options: ZookeeperOptions,
    /// The TLS configuration of the secure port (no ALPN: ZooKeeper has none).
    pub tls: Option<Arc<ServerConfig>>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AdapterError> {
    let bind_error = |source| AdapterError::Bind {
        adapter: NAME.into(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Request latency and packet counters, as `srvr`/`mntr` report them.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    latency_total_us: AtomicU64,
    latency_count: AtomicU64,
    latency_min_us: AtomicU64,
    latency_max_us: AtomicU64,
}

impl Counters {
    pub fn record_latency(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_total_us.fetch_add(us, Ordering::Relaxed);
        let first = self.latency_count.fetch_add(1, Ordering::Relaxed) == 0;
        if first {
            self.latency_min_us.store(us, Ordering::Relaxed);
        } else {
            self.latency_min_us.fetch_min(us, Ordering::Relaxed);
        }
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// (min, avg, max) in milliseconds.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let count = self.latency_count.load(Ordering::Relaxed);
        if count == 0 {
            return (0.0, 0.0, 0.0);
        }
        let ms = |us: u64| us as f64 / 1000.0;
        (
            ms(self.latency_min_us.load(Ordering::Relaxed)),
            ms(self.latency_total_us.load(Ordering::Relaxed)) / count as f64,
            ms(self.latency_max_us.load(Ordering::Relaxed)),
        )
    }
}

/// One live connection, as `cons` and `stat` list it.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub session_id: AtomicU64,
    pub timeout_ms: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Writes read but not answered yet: while any is, the reader acknowledges what it
    /// reads at once (see `connection::read_requests`).
    pub writes_unanswered: AtomicUsize,
    /// Tells the connection to close (its session moved to another connection, or the
    /// adapter stops).
    pub close: Notify,
}

/// What every connection of the adapter shares.
#[derive(Debug)]
pub struct Shared {
    pub kernel: Kernel,
    pub options: ZookeeperOptions,
    pub dispatcher: WatchDispatcher,
    pub counters: Counters,
    pub started: Instant,
    connections: Mutex<HashMap<u64, Arc<ConnectionInfo>>>,
    /// Session id → the connection serving it.
    sessions: Mutex<HashMap<i64, u64>>,
    next_connection: AtomicU64,
    system_nodes: OnceCell<()>,
}

/// Locks `m` even if a panicking thread held it: every guarded structure here is
/// changed by single inserts and removes, so it is consistent whatever happened.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn add_connection(&self, peer: SocketAddr) -> (u64, Arc<ConnectionInfo>) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ConnectionInfo {
            peer,
            session_id: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            writes_unanswered: AtomicUsize::new(0),
            close: Notify::new(),
        });
        lock(&self.connections).insert(id, info.clone());
        (id, info)
    }

    pub fn remove_connection(&self, id: u64, session_id: i64) {
        lock(&self.connections).remove(&id);
        let mut sessions = lock(&self.sessions);
        if sessions.get(&session_id) == Some(&id) {
            sessions.remove(&session_id);
        }
        self.dispatcher.unregister(id);
    }

    /// Records that `connection` now serves `session_id`; a connection that served it
    /// before is told to close (ZooKeeper moves a session the same way).
    pub fn bind_session(&self, connection: u64, session_id: i64) {
        let previous = lock(&self.sessions).insert(session_id, connection);
        if let Some(old) = previous.filter(|old| *old != connection)
            && let Some(info) = lock(&self.connections).get(&old)
        {
            info.close.notify_one();
        }
    }

    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        lock(&self.connections).values().cloned().collect()
    }

    /// Creates `/zookeeper`, `/zookeeper/config` and `/zookeeper/quota` the first time a
    /// session starts, as every ZooKeeper server has them (not at start-up, so a Concord
    /// used only through etcd has no such keys).
    pub async fn ensure_system_nodes(&self) {
        self.system_nodes
            .get_or_init(|| async {
                let open = |perm| Acl {
                    perms: perm,
                    scheme: "world".into(),
                    id: "anyone".into(),
                };
                for (path, perm) in [
                    ("/zookeeper", perms::ALL),
                    ("/zookeeper/config", perms::READ),
                    ("/zookeeper/quota", perms::ALL),
                ] {
                    let create = TreeOp::Create {
                        path: path.into(),
                        data: Some(Vec::new()),
                        acl: vec![open(perm)],
                        ephemeral_owner: 0,
                        sequential: false,
                        kind: Default::default(),
                    };
                    // NodeExists is the usual outcome after the first start.
                    if let Err(e) = self.kernel.tree_txn(vec![create]).await {
                        tracing::warn!(path, error = %e, "cannot create a zookeeper system node");
                    }
                }
            })
            .await;
    }
}

impl Adapter for ZookeeperAdapter {
    fn name(&self) -> &str {
        NAME
    }

    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture {
        Box::pin(async move {
            let mut listeners = Vec::new();
            if let Some(listen) = self.options.listen {
                listeners.push((bind(listen).await?, None));
            }
            if let Some(listen) = self.options.secure_listen {
                let Some(tls) = self.tls.clone() else {
                    return Err(AdapterError::Failed {
                        adapter: NAME.into(),
                        message: format!("secure port {listen} without a TLS configuration"),
                    });
                };
                listeners.push((bind(listen).await?, Some(TlsAcceptor::from(tls))));
            }
            let dispatcher = WatchDispatcher::start(context.kernel.clone()).map_err(|e| {
                AdapterError::Failed {
                    adapter: NAME.into(),
                    message: format!("cannot follow the kernel's changes: {e}"),
                }
            })?;
            let shared = Arc::new(Shared {
                kernel: context.kernel.clone(),
                options: self.options,
                dispatcher,
                counters: Counters::default(),
                started: Instant::now(),
                connections: Mutex::default(),
                sessions: Mutex::default(),
                next_connection: AtomicU64::new(0),
                system_nodes: OnceCell::new(),
            });
            let listening_on = listeners.iter().map(|((_, bound), _)| *bound).collect();
            for ((_, bound), tls) in &listeners {
                tracing::info!(%bound, tls = tls.is_some(), "zookeeper listening");
            }
            let listeners = listeners
                .into_iter()
                .map(|((listener, _), tls)| (listener, tls))
                .collect();
            let task = tokio::spawn(serve(listeners, shared, context));
            Ok(RunningAdapter {
                name: NAME.into(),
                listening_on,
                task,
            })
        })
    }
}

async fn serve(
    listeners: Vec<(TcpListener, Option<TlsAcceptor>)>,
    shared: Arc<Shared>,
    context: AdapterContext,
) -> Result<(), AdapterError> {
    let reaper = tokio::spawn(reap_expired_nodes(shared.clone()));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, tls)| tokio::spawn(accept_loop(listener, tls, shared.clone())))
        .collect();
    context.shutdown.wait().await;
    reaper.abort();
    for task in accepting {
        task.abort();
    }
    for connection in shared.connections() {
        connection.close.notify_one();
    }
    Ok(())
}

/// Accepts connections on one port; each is served on a task of its own, which on the
/// secure port first runs the TLS handshake (a refused one closes only that connection).
async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: keep serving the others.
                tracing::warn!(error = %e, "zookeeper accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &tls {
            None => {
                tokio::spawn(crate::connection::serve(shared, stream, peer));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let port = "the zookeeper secure port";
                    if let Some(stream) =
                        concord_plugin_api::tls::accept(&acceptor, stream, port).await
                    {
                        crate::connection::serve(shared, stream, peer).await;
                    }
                });
            }
        }
    }
}

/// On the leader, every `container_check_interval`: deletes containers whose last child
/// went and TTL nodes past their TTL, each guarded by the version it had when found.
async fn reap_expired_nodes(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.options.container_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !shared.kernel.is_leader() {
            continue;
        }
        let due = match shared.kernel.tree_reapable() {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list expired zookeeper nodes");
                continue;
            }
        };
        for node in due {
            let delete = TreeOp::Delete {
                path: node.path.clone(),
                version: node.version,
            };
            match shared.kernel.tree_txn(vec![delete]).await {
                Ok(r) if r.outcome.is_ok() => {
                    tracing::debug!(path = %node.path, "removed expired container or TTL node");
                }
                Ok(_) => {} // changed or gained a child since: not due any more
                Err(e) => tracing::warn!(path = %node.path, error = %e, "cannot remove node"),
            }
        }
    }
}
