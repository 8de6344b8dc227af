//! The adapter contract: how a dialect (etcd v3, etcd v2, ZooKeeper, or a loaded plugin)
//! is started and stopped by the host. An adapter has a name and a config section; the
//! host starts it with a kernel handle and a shutdown signal, and it answers with the
//! addresses it bound and a task that ends when it has stopped.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use concord_kernel::Kernel;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter {adapter}: cannot listen on {addr}: {source}")]
    Bind {
        adapter: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("adapter {adapter}: {message}")]
    Failed { adapter: String, message: String },
}

/// Resolves once the host asks its adapters to stop.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal and the trigger that fires it.
    pub fn new() -> (ShutdownTrigger, ShutdownSignal) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), ShutdownSignal(rx))
    }

    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means "stop".
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// What the host hands an adapter when starting it.
#[derive(Debug, Clone)]
pub struct AdapterContext {
    pub kernel: Kernel,
    pub shutdown: ShutdownSignal,
}

/// A started adapter.
#[derive(Debug)]
pub struct RunningAdapter {
    pub name: String,
    pub listening_on: Vec<SocketAddr>,
    /// Ends when the adapter has stopped serving (after shutdown, or on a fatal error).
    pub task: JoinHandle<Result<(), AdapterError>>,
}

pub type StartFuture = Pin<Box<dyn Future<Output = Result<RunningAdapter, AdapterError>> + Send>>;

/// One dialect. `start` binds its listeners (so bind errors stop start-up) and returns
/// while serving continues in the background.
pub trait Adapter: Send {
    fn name(&self) -> &str;
    /// The config section this adapter is configured by, e.g. `adapters.etcd`.
    fn config_section(&self) -> String {
        format!("adapters.{}", self.name())
    }
    fn start(self: Box<Self>, context: AdapterContext) -> StartFuture;
}
