//! The `concord` binary: wiring only. Reads the configuration, opens the kernel, starts
//! the enabled adapters (and the metrics listener) through the adapter contract, reloads TLS certificates on SIGHUP
//! and stops the adapters on SIGINT/SIGTERM;
//! `concord certs` writes test certificates.

mod certs;
mod tls;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use concord_config::{
    Cli, InitialClusterState, PluginAdapterSettings, RestoreArgs, ServeArgs, Settings, Subcommand,
};
use concord_etcd_v2::{EtcdV2Adapter, MetricsAdapter, V2Service};
use concord_etcd_v3::{ClientStream, EtcdV3Adapter, Http1Handoff};
use concord_kernel::{Kernel, KernelConfig, PeerTls};
use concord_plugin_api::{Adapter, AdapterContext, ShutdownSignal};
use concord_plugin_host::PluginAdapter;
use concord_zookeeper::{ZookeeperAdapter, ZookeeperOptions};
use rustls::ServerConfig;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn kernel_config(settings: &Settings, peer_tls: Option<PeerTls>) -> KernelConfig {
    KernelConfig {
        name: settings.node.name.clone(),
        data_dir: settings.node.data_dir.clone(),
        peer_url: settings.node.peer_url.clone(),
        client_urls: vec![format!("http://{}", settings.adapters.etcd.listen)],
        max_txn_ops: settings.limits.max_txn_ops,
        max_request_bytes: settings.limits.max_request_bytes,
        heartbeat_interval: Duration::from_millis(settings.raft.heartbeat_interval_ms),
        election_timeout: Duration::from_millis(settings.raft.election_timeout_ms),
        snapshot_every_entries: settings.raft.snapshot_every_entries,
        lease_checkpoint_interval: Duration::from_millis(
            settings.raft.lease_checkpoint_interval_ms,
        ),
        quota_backend_bytes: settings.limits.quota_backend_bytes,
        node_cache_bytes: usize::try_from(settings.limits.node_cache_bytes).unwrap_or(usize::MAX),
        initial_members: settings
            .cluster_members()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.peer_url))
            .collect(),
        join_existing: settings.cluster.initial_cluster_state == InitialClusterState::Existing,
        cluster_token: settings.cluster.initial_cluster_token.clone(),
        peer_listen: settings.peer_listen(),
        peer_tls,
    }
}

/// The rustls configurations of the enabled listeners that name a TLS profile, and the
/// certificates SIGHUP reloads.
#[derive(Debug, Default)]
struct ListenerTls {
    etcd: Option<Arc<ServerConfig>>,
    zookeeper: Option<Arc<ServerConfig>>,
    metrics: Option<Arc<ServerConfig>>,
    /// The v2 API's own port.
    etcd_v2: Option<Arc<ServerConfig>>,
    /// By plugin adapter name.
    plugins: BTreeMap<String, Arc<ServerConfig>>,
    peer: Option<PeerTls>,
    certificates: Vec<Arc<tls::ReloadableCert>>,
}

/// Loads every TLS profile an enabled listener uses (certificates, keys, client CAs), so
/// that a profile that cannot be loaded is reported, with the profile and file named,
/// by `--check-config` and at start-up alike.
fn listener_tls(settings: &Settings) -> anyhow::Result<ListenerTls> {
    let mut certificates = Vec::new();
    let mut load = |key: &str, enabled: bool, name: &Option<String>, alpn: &[&[u8]]| {
        let Some(name) = name.as_ref().filter(|_| enabled) else {
            return Ok(None);
        };
        let profile = settings
            .tls
            .get(name)
            .with_context(|| format!("{key}: no profile {name:?}"))?;
        let (config, certificate) = tls::server_config(name, profile, alpn)?;
        certificates.push(certificate);
        anyhow::Ok(Some(config))
    };
    let etcd = &settings.adapters.etcd;
    let zk = &settings.adapters.zookeeper;
    let etcd = load(
        "adapters.etcd.tls",
        etcd.enabled,
        &etcd.tls,
        &[b"h2", b"http/1.1"],
    )?;
    // ZooKeeper's protocol has no ALPN name, nor do the plugins' (unknown to the host).
    let zookeeper = load("adapters.zookeeper.tls", zk.enabled, &zk.tls, &[])?;
    let m = &settings.metrics;
    let metrics = load("metrics.tls", m.enabled, &m.tls, &[b"http/1.1"])?;
    let v2 = &settings.adapters.etcd_v2;
    let v2_own_port = v2.enabled && v2.listen.is_some();
    let etcd_v2 = load("adapters.etcd_v2.tls", v2_own_port, &v2.tls, &[b"http/1.1"])?;
    let mut plugins = BTreeMap::new();
    for plugin in configured_plugins(settings)? {
        let key = format!("adapters.{}.tls", plugin.name);
        if let Some(config) = load(&key, plugin.enabled, &plugin.tls, &[])? {
            plugins.insert(plugin.name, config);
        }
    }
    let peer = match &settings.cluster.peer_tls {
        Some(name) => {
            let profile = settings
                .tls
                .get(name)
                .with_context(|| format!("cluster.peer_tls: no profile {name:?}"))?;
            let (peer, certificate) = tls::peer_config(name, profile)?;
            certificates.push(certificate);
            Some(peer)
        }
        None => None,
    };
    Ok(ListenerTls {
        etcd,
        zookeeper,
        metrics,
        etcd_v2,
        plugins,
        peer,
        certificates,
    })
}

/// On every SIGHUP, reads each TLS listener's certificate and key files again: new
/// handshakes get the new certificate, established connections keep theirs. A profile
/// whose files cannot be loaded keeps the certificate in use, with an error logged.
fn reload_certificates_on_sighup(
    certificates: Vec<Arc<tls::ReloadableCert>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the adapters start, so a SIGHUP never kills the node.
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            for certificate in &certificates {
                match certificate.reload() {
                    Ok(()) => {
                        tracing::info!(profile = certificate.name(), "TLS certificate reloaded")
                    }
                    Err(e) => tracing::error!(
                        profile = certificate.name(),
                        error = %format!("{e:#}"),
                        "TLS certificate not reloaded; the one in use stays"
                    ),
                }
            }
        }
    });
    Ok(())
}

/// The built-in adapters the settings enable, with their listeners' TLS configurations.
fn enabled_adapters(
    settings: &Settings,
    kernel: &Kernel,
    tls: ListenerTls,
) -> Vec<Box<dyn Adapter>> {
    let mut adapters: Vec<Box<dyn Adapter>> = Vec::new();
    let v2 = &settings.adapters.etcd_v2;
    let v2_service = v2.enabled.then(|| V2Service::new(kernel.clone()));
    let mut shared_http1 = None;
    if let Some(service) = v2_service {
        match v2.listen {
            Some(listen) => adapters.push(Box::new(EtcdV2Adapter {
                listen,
                service,
                tls: tls.etcd_v2.clone(),
            })),
            None => {
                shared_http1 = Some(Http1Handoff(Arc::new(move |stream: ClientStream| {
                    service.serve_connection(stream);
                })));
            }
        }
    }
    if settings.adapters.etcd.enabled {
        adapters.push(Box::new(EtcdV3Adapter {
            listen: settings.adapters.etcd.listen,
            max_request_bytes: settings.limits.max_request_bytes,
            http1: shared_http1,
            tls: tls.etcd,
        }));
    }
    let zk = &settings.adapters.zookeeper;
    if zk.enabled {
        adapters.push(Box::new(ZookeeperAdapter {
            options: ZookeeperOptions {
                listen: zk.plaintext.then_some(zk.listen),
                secure_listen: zk.secure_listen,
                tick_time_ms: zk.tick_time_ms,
                min_session_timeout_ms: zk.min_session_timeout_ms,
                max_session_timeout_ms: zk.max_session_timeout_ms,
                max_frame_bytes: zk.max_frame_bytes,
                four_letter_words: zk.four_letter_words.clone(),
                extended_types: zk.extended_types,
                container_check_interval: Duration::from_millis(zk.container_check_interval_ms),
                data_dir: settings.node.data_dir.display().to_string(),
            },
            tls: tls.zookeeper,
        }));
    }
    if settings.metrics.enabled {
        adapters.push(Box::new(MetricsAdapter {
            listen: settings.metrics.listen,
            tls: tls.metrics,
        }));
    }
    adapters
}

fn configured_plugins(settings: &Settings) -> anyhow::Result<Vec<PluginAdapterSettings>> {
    settings
        .plugin_adapters()
        .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))
}

/// The enabled adapters of loaded plugins, with their listeners' TLS configurations; the
/// libraries themselves are loaded when the adapters start.
fn plugin_adapters(
    settings: &Settings,
    tls: &mut BTreeMap<String, Arc<ServerConfig>>,
) -> anyhow::Result<Vec<Box<dyn Adapter>>> {
    let mut adapters: Vec<Box<dyn Adapter>> = Vec::new();
    for plugin in configured_plugins(settings)?
        .into_iter()
        .filter(|p| p.enabled)
    {
        adapters.push(Box::new(PluginAdapter {
            tls: tls.remove(&plugin.name),
            name: plugin.name,
            library: plugin.path,
            settings_json: plugin.settings_json,
            listen: plugin.listen,
        }));
    }
    Ok(adapters)
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mut tls = listener_tls(&settings)?;
    reload_certificates_on_sighup(std::mem::take(&mut tls.certificates))?;
    let kernel = Kernel::open(
        kernel_config(&settings, tls.peer.take()),
        Duration::from_secs(30),
    )
    .await
    .context("cannot open the kernel")?;
    tracing::info!(
        name = kernel.name(),
        member_id = %format!("{:x}", kernel.member_id()),
        data_dir = %settings.node.data_dir.display(),
        "kernel ready"
    );
    let (trigger, shutdown) = ShutdownSignal::new();
    let context = AdapterContext {
        kernel: kernel.clone(),
        shutdown,
    };
    // Each adapter's task reports on `stopped` when it ends.
    let (stopped_tx, mut stopped) = tokio::sync::mpsc::unbounded_channel();
    let mut started = 0;
    // A built-in adapter that cannot start stops the node; a plugin that cannot load or
    // start is logged and left out, and the other dialects serve.
    let loaded = plugin_adapters(&settings, &mut tls.plugins)?
        .into_iter()
        .map(|a| (a, false));
    let built_in = enabled_adapters(&settings, &kernel, tls)
        .into_iter()
        .map(|a| (a, true));
    for (adapter, essential) in built_in.chain(loaded) {
        let running = match adapter.start(context.clone()).await {
            Ok(running) => running,
            Err(e) if !essential => {
                tracing::error!("{e}; serving without it");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(adapter = %running.name, addrs = ?running.listening_on, "adapter started");
        let tx = stopped_tx.clone();
        tokio::spawn(async move {
            let outcome = running.task.await;
            let _ = tx.send((running.name, outcome));
        });
        started += 1;
    }
    drop(stopped_tx);
    tokio::select! {
        r = wait_for_stop_signal() => r?,
        () = kernel.removed_from_cluster() => {
            tracing::error!("this member was removed from the cluster; stopping");
        }
        Some((name, outcome)) = stopped.recv(), if started > 0 => {
            // An adapter that stops on its own is fatal: report it and shut down.
            tracing::error!(adapter = %name, ?outcome, "adapter stopped unexpectedly");
            started -= 1;
        }
    }
    tracing::info!("shutting down");
    trigger.fire();
    let drain = async { while stopped.recv().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!(adapters = started, "adapters did not stop within 5 s");
    }
    kernel.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Subcommand::Serve(args) => run_serve(&args),
        Subcommand::Restore(args) => run_restore(&args),
        Subcommand::Certs(args) => match certs::run(&args) {
            Ok(()) => {
                for file in certs::FILES {
                    println!("{}", args.dir.join(file).display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("concord: certs: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load_settings(args: &ServeArgs) -> Result<Settings, ExitCode> {
    Settings::load(args).map_err(|e| {
        eprintln!("concord: {e}");
        ExitCode::from(2)
    })
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn run_restore(args: &RestoreArgs) -> ExitCode {
    let settings = match load_settings(&args.as_serve_args()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    init_logging();
    match concord_kernel::restore_snapshot(&args.snapshot, &settings.node.data_dir) {
        Ok(info) => {
            println!(
                "restored {} records at revision {} into {}",
                info.records,
                info.revision,
                settings.node.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("concord: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: &ServeArgs) -> ExitCode {
    let settings = match load_settings(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if args.check_config {
        return match listener_tls(&settings) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("concord: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("concord: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord: {e:#}");
            ExitCode::FAILURE
        }
    }
}
