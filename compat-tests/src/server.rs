//! Server processes under test: real etcd or the `concord` binary, on loopback ports.
//!
//! A [`Server`] owns its child process and kills it (SIGKILL) when dropped, so every
//! process a test starts is stopped even when the test panics. Start-up is awaited until
//! the client port accepts a TCP connection and an etcd-client `status()` and `get`
//! both succeed, bounded by [`READY_TIMEOUT`]. With [`Server::start_with_tls`] the
//! client port speaks TLS ([`ClientPortTls`]), and the probe and [`Server::client`]
//! connect with TLS.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

use crate::tls::ClientPortTls;

/// Real etcd, as installed by Debian's `etcd-server` package.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long a server may take to answer after it is spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The member name every test server gets, so member lists compare equal.
pub const MEMBER_NAME: &str = "compat";
/// Selects the backends [`on_each_backend`] runs on: a comma-separated list of
/// `etcd` and `concord`; both when unset.
pub const BACKENDS_ENV: &str = "CONCORD_COMPAT_BACKENDS";
/// Overrides where the `concord` binary is looked for.
pub const CONCORD_BIN_ENV: &str = "CONCORD_BIN";

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

/// Which server implementation a [`Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Real etcd 3.4 (`/usr/bin/etcd`): the reference.
    Etcd,
    /// The `concord` binary under test.
    Concord,
}

impl Backend {
    /// Both backends, reference first.
    pub const ALL: [Backend; 2] = [Backend::Etcd, Backend::Concord];

    /// The lower-case name used in messages and in [`BACKENDS_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Concord => "concord",
        }
    }

    /// The backend named `etcd` or `concord`.
    pub fn parse(name: &str) -> Result<Self> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                anyhow!("unknown backend {name:?} in {BACKENDS_ENV}: use etcd and/or concord")
            })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backends selected by [`BACKENDS_ENV`] (both when unset or empty).
pub fn backends() -> Result<Vec<Backend>> {
    let selected = std::env::var(BACKENDS_ENV).unwrap_or_default();
    let names: Vec<&str> = selected
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(Backend::ALL.to_vec());
    }
    names.into_iter().map(Backend::parse).collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The `concord` binary: `$CONCORD_BIN`, else `release/concord` in a directory above the
/// running test executable (which lives in `$CARGO_TARGET_DIR/release/deps/`).
pub fn concord_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(CONCORD_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join("release").join("concord"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no release/concord above {}: build it with `cargo build --release --bin concord` \
                 or set {CONCORD_BIN_ENV}",
                exe.display()
            )
        })
}

/// A command running the `concord` binary, without this harness's own `CONCORD_*`
/// variables: Concord reads every `CONCORD_*` variable as configuration (and refuses
/// unknown ones).
pub fn concord_command() -> Result<Command> {
    let mut command = Command::new(concord_bin()?);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("CONCORD_") {
            command.env_remove(var);
        }
    }
    Ok(command)
}

/// Real etcd as member `name` with its data in `data_dir`, serving and advertising
/// `client_url` and `peer_url`, bootstrapping with `initial_cluster`, and the v2 API on
/// (Concord serves it by default; etcd 3.4 only when asked).
pub fn etcd_command(
    name: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
) -> Command {
    let mut command = Command::new(ETCD_BIN);
    command
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-client-urls")
        .arg(client_url)
        .arg("--advertise-client-urls")
        .arg(client_url)
        .arg("--listen-peer-urls")
        .arg(peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(peer_url)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--enable-v2");
    command
}

/// An etcd-client connection to `endpoint` (`127.0.0.1:PORT`), with bounded timeouts.
pub async fn connect(endpoint: &str) -> Result<Client> {
    connect_maybe_tls(endpoint, None).await
}

/// Like [`connect`], over TLS (`https://`) when `tls` is given.
pub async fn connect_maybe_tls(endpoint: &str, tls: Option<&ClientPortTls>) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    let scheme = match tls {
        Some(tls) => {
            options = options.with_tls(tls.client_options()?);
            "https"
        }
        None => "http",
    };
    Client::connect([format!("{scheme}://{endpoint}")], Some(options))
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// Where a server keeps its data and log: its own temporary directory, or one the test
/// owns (so that it can start a new server on the same data).
#[derive(Debug)]
enum WorkDir {
    Temp(TempDir),
    Given(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(dir) => dir.path(),
            WorkDir::Given(path) => path,
        }
    }
}

/// A running server process; killed with SIGKILL when dropped.
#[derive(Debug)]
pub struct Server {
    backend: Backend,
    client_port: u16,
    peer_port: u16,
    /// Concord's ZooKeeper port (each test server gets its own, so parallel tests do not
    /// fight over 2181).
    zk_port: u16,
    work: WorkDir,
    child: Option<Child>,
    starts: u32,
    /// Settings beyond the defaults, as each backend takes them.
    options: ServerOptions,
    /// TLS on the client port.
    tls: Option<ClientPortTls>,
}

/// The same setting for both backends: etcd flags and the matching Concord `CONCORD_*`
/// environment variables (nested keys split on `__`).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub etcd_args: Vec<String>,
    pub concord_env: Vec<(String, String)>,
}

impl ServerOptions {
    /// A storage quota (past it the server raises NOSPACE and refuses writes that add
    /// data).
    pub fn quota_backend_bytes(mut self, bytes: u64) -> Self {
        self.etcd_args
            .extend(["--quota-backend-bytes".to_string(), bytes.to_string()]);
        self.concord_env.push((
            "CONCORD_LIMITS__QUOTA_BACKEND_BYTES".into(),
            bytes.to_string(),
        ));
        self
    }

    /// Snapshot (and purge the Raft log) every `entries` applied entries.
    pub fn snapshot_every(mut self, entries: u64) -> Self {
        self.etcd_args
            .extend(["--snapshot-count".to_string(), entries.to_string()]);
        self.concord_env.push((
            "CONCORD_RAFT__SNAPSHOT_EVERY_ENTRIES".into(),
            entries.to_string(),
        ));
        self
    }
}

impl Server {
    /// Starts `backend` on fresh ports with an empty temporary data directory.
    pub async fn start(backend: Backend) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("compat-{backend}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        Self::launch(backend, WorkDir::Temp(dir)).await
    }

    /// Starts `backend` on fresh ports, keeping its data in `dir/data` and its log in
    /// `dir/<backend>.log`; `dir` is left in place when the server is dropped.
    /// Starts `backend` like [`Server::start`], with `options`.
    pub async fn start_with(backend: Backend, options: ServerOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("compat-{backend}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        Self::launch_with(backend, WorkDir::Temp(dir), options).await
    }

    /// Starts `backend` like [`Server::start`], with TLS on the client port when `tls`
    /// is given.
    pub async fn start_with_tls(backend: Backend, tls: Option<ClientPortTls>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("compat-{backend}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        Self::launch_full(backend, WorkDir::Temp(dir), ServerOptions::default(), tls).await
    }

    /// Like [`Server::start_in`], with `options`.
    pub async fn start_in_with(
        backend: Backend,
        dir: &Path,
        options: ServerOptions,
    ) -> Result<Self> {
        Self::launch_with(backend, WorkDir::Given(dir.to_path_buf()), options).await
    }

    pub async fn start_in(backend: Backend, dir: &Path) -> Result<Self> {
        Self::launch(backend, WorkDir::Given(dir.to_path_buf())).await
    }

    async fn launch(backend: Backend, work: WorkDir) -> Result<Self> {
        Self::launch_with(backend, work, ServerOptions::default()).await
    }

    async fn launch_with(backend: Backend, work: WorkDir, options: ServerOptions) -> Result<Self> {
        Self::launch_full(backend, work, options, None).await
    }

    async fn launch_full(
        backend: Backend,
        work: WorkDir,
        options: ServerOptions,
        tls: Option<ClientPortTls>,
    ) -> Result<Self> {
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        if peer_port == client_port {
            peer_port = free_port()?;
        }
        let zk_port = free_port()?;
        let mut server = Server {
            backend,
            client_port,
            peer_port,
            zk_port,
            work,
            child: None,
            starts: 0,
            options,
            tls,
        };
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Kills the process if it still runs, then starts it again on the same data
    /// directory and ports and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("cannot kill {}", self.backend))?;
            child
                .wait()
                .with_context(|| format!("cannot reap {}", self.backend))?;
        }
        Ok(())
    }

    /// Which implementation this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The client endpoint, `127.0.0.1:PORT`, as etcdctl's `--endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Concord's ZooKeeper endpoint, `127.0.0.1:PORT` (real etcd has none: nothing
    /// listens there).
    pub fn zk_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.zk_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port (etcd's Raft port; Concord reports it as its peer URL).
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.work.path().join("data")
    }

    /// The file that collects the process's stdout and stderr across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.work.path().join(format!("{}.log", self.backend))
    }

    /// A new etcd-client connection to this server (over TLS if its client port has it).
    pub async fn client(&self) -> Result<Client> {
        connect_maybe_tls(&self.endpoint(), self.tls.as_ref()).await
    }

    /// The TLS settings of the client port, if it has TLS.
    pub fn client_port_tls(&self) -> Option<&ClientPortTls> {
        self.tls.as_ref()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// An error if the process has exited (or was killed).
    pub fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.backend);
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "{} exited with {status}; log tail:\n{}",
                self.backend,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn command(&self) -> Result<Command> {
        let data_dir = self.data_dir();
        let name = MEMBER_NAME;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let command = match self.backend {
            Backend::Etcd => {
                let initial_cluster = format!("{name}={peer_url}");
                let mut command =
                    etcd_command(name, &data_dir, &client_url, &peer_url, &initial_cluster);
                command.args(&self.options.etcd_args);
                if let Some(tls) = &self.tls {
                    command.args(tls.etcd_args());
                }
                command
            }
            Backend::Concord => {
                let mut command = concord_command()?;
                command
                    .arg("serve")
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .arg("--etcd-listen")
                    .arg(self.endpoint())
                    .arg("--zk-listen")
                    .arg(self.zk_endpoint())
                    .arg("--name")
                    .arg(name)
                    .env("CONCORD_NODE__PEER_URL", &peer_url);
                command.envs(self.options.concord_env.iter().map(|(k, v)| (k, v)));
                if let Some(tls) = &self.tls {
                    command.envs(tls.concord_env());
                }
                command
            }
        };
        Ok(command)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut command = self.command()?;
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "=== compat-tests: start #{} of {} ===",
            self.starts, self.backend
        )?;
        let stderr: File = log.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot spawn {} ({command:?})", self.backend))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = anyhow!("no attempt made");
        loop {
            self.ensure_running()
                .with_context(|| format!("{} stopped before it was ready", self.backend))?;
            match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer on {} within {READY_TIMEOUT:?} (last error: {last_error:#}); log tail:\n{}",
                    self.backend,
                    self.endpoint(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One readiness check: TCP accept, then `status()` and a `get`.
    async fn probe(&self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")??;
        tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut client = self.client().await?;
            client.status().await.context("status")?;
            client
                .get("compat-ready-probe", None)
                .await
                .context("get")?;
            anyhow::Ok(())
        })
        .await
        .context("etcd-client probe timed out")?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors cannot be reported from drop; the process is gone either way
            // unless the kill itself failed, which leaves nothing else to try.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a scenario run by [`on_each_backend`] gets: a fresh, empty server's endpoint and
/// a client connected to it.
#[derive(Clone)]
pub struct Session {
    /// Which implementation answers.
    pub backend: Backend,
    /// `127.0.0.1:PORT`.
    pub endpoint: String,
    /// The server's peer port (in its member's peer URL).
    pub peer_port: u16,
    /// A client connected to `endpoint`.
    pub client: Client,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("backend", &self.backend)
            .field("endpoint", &self.endpoint)
            .field("peer_port", &self.peer_port)
            .finish_non_exhaustive()
    }
}

/// Whether a Concord-only test skips: true (with a line saying so) when Concord is not
/// among the selected [`backends`].
pub fn concord_skipped() -> Result<bool> {
    let skipped = !backends()?.contains(&Backend::Concord);
    if skipped {
        println!("Concord not selected: skipped");
    }
    Ok(skipped)
}

/// Runs `scenario` once per selected backend ([`backends`]), one after the other, and
/// fails with every backend's error if any failed.
pub async fn for_each_backend<F>(scenario: F) -> Result<()>
where
    F: AsyncFn(Backend) -> Result<()>,
{
    let mut failures = Vec::new();
    for backend in backends()? {
        println!("=== scenario on {backend}");
        if let Err(e) = scenario(backend).await {
            failures.push(format!("on {backend}: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n\n"))
    }
}

/// Runs `scenario` against a fresh server of each selected backend ([`backends`]), one
/// after the other, and fails with every backend's error if any failed. Running the same
/// scenario on real etcd checks that the test's expectations are etcd's behaviour.
pub async fn on_each_backend<F>(scenario: F) -> Result<()>
where
    F: AsyncFn(Session) -> Result<()>,
{
    for_each_backend(async |backend| run_on(backend, &scenario).await).await
}

async fn run_on<F>(backend: Backend, scenario: &F) -> Result<()>
where
    F: AsyncFn(Session) -> Result<()>,
{
    let mut server = Server::start(backend).await?;
    let session = Session {
        backend,
        endpoint: server.endpoint(),
        peer_port: server.peer_port(),
        client: server.client().await?,
    };
    let outcome = scenario(session).await;
    match (outcome, server.ensure_running()) {
        (Ok(()), alive) => alive,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(dead)) => Err(e.context(format!("{dead:#}"))),
    }
}
