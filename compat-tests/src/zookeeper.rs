//! ZooKeeper servers under test: real ZooKeeper 3.8 (Debian's `zookeeper` package,
//! run with `java` directly) or Concord's ZooKeeper adapter, on loopback ports.
//!
//! A [`ZkServer`] owns its process and kills it (SIGKILL, the whole process group for
//! ZooKeeper) when dropped. Start-up is awaited until the server answers, bounded by
//! [`ZK_READY_TIMEOUT`]: until a ZooKeeper session can be opened and closed (for real
//! ZooKeeper after `ruok` answers `imok`; for Concord after its etcd port answers, as
//! [`Server::start`] checks).
//!
//! Both are configured alike: four-letter words all whitelisted, extended types (TTL
//! nodes) enabled, containers checked every second.
//!
//! [`zk_backends`] selects the backends from `CONCORD_COMPAT_ZK_BACKENDS`
//! (`zookeeper`, `concord`, comma-separated), else from `CONCORD_COMPAT_BACKENDS`
//! (`etcd` meaning the reference, here ZooKeeper); both when neither is set.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::diff;
use crate::server::{BACKENDS_ENV, Backend, Server, ServerOptions, free_port};

/// The JVM that runs ZooKeeper.
pub const JAVA_BIN: &str = "/usr/bin/java";
/// Debian's ZooKeeper 3.8 jar (its manifest names the other jars it needs), the
/// package's log4j configuration, and log4j so that ZooKeeper's log goes to its file.
pub const ZK_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:\
     /usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";
/// ZooKeeper's command-line client.
pub const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";
/// How long a server may take to answer after it is spawned.
pub const ZK_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Selects the backends: `zookeeper` and/or `concord`, comma-separated.
pub const ZK_BACKENDS_ENV: &str = "CONCORD_COMPAT_ZK_BACKENDS";
/// The container (and TTL) check interval both servers get, in milliseconds.
pub const CONTAINER_CHECK_INTERVAL_MS: u32 = 1000;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;

/// Which implementation a [`ZkServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZkBackend {
    /// Real ZooKeeper 3.8, standalone: the reference.
    Zookeeper,
    /// The `concord` binary under test, through its ZooKeeper adapter.
    Concord,
}

impl ZkBackend {
    /// Both backends, reference first.
    pub const ALL: [ZkBackend; 2] = [ZkBackend::Zookeeper, ZkBackend::Concord];

    /// The lower-case name used in messages and in [`ZK_BACKENDS_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            ZkBackend::Zookeeper => "zookeeper",
            ZkBackend::Concord => "concord",
        }
    }

    /// The backend named `zookeeper` or `concord`.
    pub fn parse(name: &str) -> Result<Self> {
        ZkBackend::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                anyhow!(
                    "unknown backend {name:?} in {ZK_BACKENDS_ENV}: use zookeeper and/or concord"
                )
            })
    }
}

impl fmt::Display for ZkBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backends selected by [`ZK_BACKENDS_ENV`], else by [`BACKENDS_ENV`] (its `etcd`,
/// the reference there, standing for ZooKeeper); both when neither is set.
pub fn zk_backends() -> Result<Vec<ZkBackend>> {
    let names = |var: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let own = names(ZK_BACKENDS_ENV);
    if !own.is_empty() {
        return own.iter().map(|n| ZkBackend::parse(n)).collect();
    }
    let shared = names(BACKENDS_ENV);
    if !shared.is_empty() {
        return shared
            .iter()
            .map(|n| match Backend::parse(n)? {
                Backend::Etcd => Ok(ZkBackend::Zookeeper),
                Backend::Concord => Ok(ZkBackend::Concord),
            })
            .collect();
    }
    Ok(ZkBackend::ALL.to_vec())
}

/// The settings Concord gets so that it is configured like the reference ZooKeeper.
pub fn concord_zk_options() -> ServerOptions {
    ServerOptions {
        concord_env: vec![
            (
                "CONCORD_ADAPTERS__ZOOKEEPER__FOUR_LETTER_WORDS".into(),
                "[\"*\"]".into(),
            ),
            (
                "CONCORD_ADAPTERS__ZOOKEEPER__EXTENDED_TYPES".into(),
                "true".into(),
            ),
            (
                "CONCORD_ADAPTERS__ZOOKEEPER__CONTAINER_CHECK_INTERVAL_MS".into(),
                CONTAINER_CHECK_INTERVAL_MS.to_string(),
            ),
        ],
        ..Default::default()
    }
}

/// A running real ZooKeeper: its process (leader of its own process group), its port
/// and its directory (configuration, data, log).
#[derive(Debug)]
struct RealZookeeper {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl RealZookeeper {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    fn spawn(dir: TempDir, port: u16) -> Result<Self> {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let config = dir.path().join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=2000\n\
                 dataDir={data}\n\
                 clientPort={port}\n\
                 clientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n\
                 4lw.commands.whitelist=*\n\
                 extendedTypesEnabled=true\n\
                 znode.container.checkIntervalMs={CONTAINER_CHECK_INTERVAL_MS}\n",
                data = data.display()
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let log_path = dir.path().join("zookeeper.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let stderr: File = log.try_clone()?;
        let mut command = Command::new(JAVA_BIN);
        command
            // zoo.cfg's unknown keys become `zookeeper.`-prefixed system properties;
            // the container manager reads the unprefixed one.
            .arg(format!(
                "-Dznode.container.checkIntervalMs={CONTAINER_CHECK_INTERVAL_MS}"
            ))
            .arg(format!("-Dzookeeper.log.dir={}", dir.path().display()))
            .arg("-Dzookeeper.root.logger=INFO,CONSOLE")
            .arg("-cp")
            .arg(ZK_CLASSPATH)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot spawn ZooKeeper ({command:?})"))?;
        Ok(RealZookeeper {
            child: Some(child),
            port,
            dir,
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            // Errors cannot be reported from here; the process is gone either way
            // unless the kill itself failed, which leaves nothing else to try.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RealZookeeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to the process group `pgid` (a process started with
/// `process_group(0)` leads the group of its own id). Errors are ignored: the group may
/// be gone already.
pub fn kill_process_group(pgid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[derive(Debug)]
enum Running {
    Zookeeper(RealZookeeper),
    Concord(Server),
}

/// A running ZooKeeper-speaking server; killed when dropped.
#[derive(Debug)]
pub struct ZkServer {
    backend: ZkBackend,
    running: Running,
}

impl ZkServer {
    /// Starts `backend` on fresh loopback ports with an empty temporary data directory
    /// and waits until it answers.
    pub async fn start(backend: ZkBackend) -> Result<Self> {
        let running = match backend {
            ZkBackend::Zookeeper => {
                let dir = tempfile::Builder::new()
                    .prefix("compat-zookeeper-")
                    .tempdir()
                    .context("cannot create a temporary directory")?;
                Running::Zookeeper(RealZookeeper::spawn(dir, free_port()?)?)
            }
            ZkBackend::Concord => {
                Running::Concord(Server::start_with(Backend::Concord, concord_zk_options()).await?)
            }
        };
        let mut server = ZkServer { backend, running };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Which implementation this is.
    pub fn backend(&self) -> ZkBackend {
        self.backend
    }

    /// The ZooKeeper client endpoint, `127.0.0.1:PORT`.
    pub fn zk_endpoint(&self) -> String {
        match &self.running {
            Running::Zookeeper(zk) => format!("127.0.0.1:{}", zk.port),
            Running::Concord(server) => server.zk_endpoint(),
        }
    }

    /// The etcd v3 endpoint of the same keyspace (Concord only).
    pub fn etcd_endpoint(&self) -> Option<String> {
        match &self.running {
            Running::Zookeeper(_) => None,
            Running::Concord(server) => Some(server.endpoint()),
        }
    }

    /// The underlying Concord [`Server`] (Concord only).
    pub fn concord(&self) -> Option<&Server> {
        match &self.running {
            Running::Zookeeper(_) => None,
            Running::Concord(server) => Some(server),
        }
    }

    /// The file collecting the server's output.
    pub fn log_path(&self) -> PathBuf {
        match &self.running {
            Running::Zookeeper(zk) => zk.log_path(),
            Running::Concord(server) => server.log_path(),
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// An error if the process has exited (or was killed).
    pub fn ensure_running(&mut self) -> Result<()> {
        match &mut self.running {
            Running::Concord(server) => server.ensure_running(),
            Running::Zookeeper(zk) => {
                let Some(child) = zk.child.as_mut() else {
                    bail!("zookeeper is not running");
                };
                if let Some(status) = child.try_wait()? {
                    zk.child = None;
                    bail!(
                        "zookeeper exited with {status}; log tail:\n{}",
                        log_tail(&zk.log_path())
                    );
                }
                Ok(())
            }
        }
    }

    /// Sends a four-letter word and returns the whole answer.
    pub async fn four_letter_word(&self, word: &str) -> Result<String> {
        four_letter_word(&self.zk_endpoint(), word).await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + ZK_READY_TIMEOUT;
        let endpoint = self.zk_endpoint();
        let mut last_error = anyhow!("no attempt made");
        loop {
            self.ensure_running()
                .with_context(|| format!("{} stopped before it was ready", self.backend))?;
            let probe = match self.backend {
                // ZooKeeper answers `ruok` before it serves sessions: check both.
                ZkBackend::Zookeeper => match four_letter_word(&endpoint, "ruok").await {
                    Ok(answer) if answer == "imok" => probe_session(&endpoint).await,
                    Ok(answer) => Err(anyhow!("ruok answered {answer:?}")),
                    Err(e) => Err(e),
                },
                ZkBackend::Concord => probe_session(&endpoint).await,
            };
            match probe {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer on {endpoint} within {ZK_READY_TIMEOUT:?} (last error: {last_error:#}); log tail:\n{}",
                    self.backend,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

async fn tcp_connect(endpoint: &str) -> Result<tokio::net::TcpStream> {
    let addr: SocketAddr = endpoint
        .parse()
        .with_context(|| format!("bad endpoint {endpoint}"))?;
    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("TCP connect to {endpoint} timed out"))?
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// One session, opened and closed by hand: a ConnectRequest (protocol 0, timeout 10 s,
/// no session, zero password) must get a ConnectResponse with a session id, then a
/// closeSession ends it.
pub async fn probe_session(endpoint: &str) -> Result<()> {
    let mut stream = tcp_connect(endpoint).await?;
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut body = Vec::with_capacity(45);
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(&10_000i32.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(&16i32.to_be_bytes());
        body.extend_from_slice(&[0u8; 16]);
        body.push(0);
        let mut request = u32::try_from(body.len())?.to_be_bytes().to_vec();
        request.extend_from_slice(&body);
        stream.write_all(&request).await?;
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .await
            .context("the connection closed before the ConnectResponse")?;
        let len = usize::try_from(u32::from_be_bytes(len))?;
        if !(16..=1024).contains(&len) {
            bail!("ConnectResponse of {len} bytes");
        }
        let mut response = vec![0u8; len];
        stream.read_exact(&mut response).await?;
        let mut session = [0u8; 8];
        session.copy_from_slice(&response[8..16]);
        if i64::from_be_bytes(session) == 0 {
            bail!("the server refused the session");
        }
        // closeSession: xid 1, opcode -11, no body.
        let mut close = 8u32.to_be_bytes().to_vec();
        close.extend_from_slice(&1i32.to_be_bytes());
        close.extend_from_slice(&(-11i32).to_be_bytes());
        stream.write_all(&close).await?;
        let mut rest = Vec::new();
        // The reply, then the server closes the connection.
        let _ = stream.read_to_end(&mut rest).await;
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("session handshake with {endpoint} timed out"))?
}

/// Sends a four-letter word (`ruok`, `srvr`, ...) on a new connection and reads the
/// answer until the server closes it (bounded).
pub async fn four_letter_word(endpoint: &str, word: &str) -> Result<String> {
    let mut stream = tcp_connect(endpoint).await?;
    tokio::time::timeout(PROBE_TIMEOUT, async {
        stream.write_all(word.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .with_context(|| format!("{word} on {endpoint} timed out"))?
}

/// A loopback address for `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// What a bounded external command printed.
#[derive(Debug, Clone)]
pub struct ScriptOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` (stdin from `input`, or null) in a process group of its own, for at
/// most `timeout`; the whole group is killed when it ends, times out, or the future is
/// dropped, so nothing it started outlives it.
pub async fn run_bounded(
    mut command: tokio::process::Command,
    input: Option<&str>,
    timeout: Duration,
) -> Result<ScriptOutput> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot spawn {command:?}"))?;
    let guard = GroupGuard(child.id());
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{command:?} did not finish within {timeout:?}"))??;
    drop(guard);
    Ok(ScriptOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Kills a process group when dropped.
#[derive(Debug)]
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_process_group(pgid);
        }
    }
}

/// Runs `session` on a fresh real ZooKeeper and, when Concord is selected
/// ([`zk_backends`]), on a fresh Concord, one after the other, and fails with a diff
/// if the transcripts differ, keeping both in a temporary directory named after
/// `name`. Returns the reference transcript. Without Concord selected the reference
/// is compared with a second run of itself (which checks that the session is
/// deterministic).
pub async fn compare_with_zookeeper<F>(name: &str, session: F) -> Result<String>
where
    F: AsyncFn(&ZkServer) -> Result<String>,
{
    let selected = zk_backends()?;
    let subject = if selected.contains(&ZkBackend::Concord) {
        ZkBackend::Concord
    } else {
        ZkBackend::Zookeeper
    };
    println!("{name}: comparing {subject} with real ZooKeeper");
    let expected = run_on(ZkBackend::Zookeeper, &session)
        .await
        .with_context(|| format!("{name} on real ZooKeeper"))?;
    let actual = run_on(subject, &session)
        .await
        .with_context(|| format!("{name} on {subject}"))?;
    if let Some(diff) = diff::lines(&expected, &actual) {
        let kept = tempfile::Builder::new()
            .prefix(&format!("compat-{name}-"))
            .tempdir()?
            .keep();
        std::fs::write(kept.join("zookeeper.txt"), &expected)?;
        std::fs::write(kept.join(format!("{subject}.txt")), &actual)?;
        bail!(
            "{subject} answered the {name} session differently from real ZooKeeper \
             (- zookeeper, + {subject}; full transcripts in {}):\n{diff}",
            kept.display()
        );
    }
    Ok(expected)
}

async fn run_on<F>(backend: ZkBackend, session: &F) -> Result<String>
where
    F: AsyncFn(&ZkServer) -> Result<String>,
{
    let mut server = ZkServer::start(backend).await?;
    let outcome = session(&server).await;
    match (outcome, server.ensure_running()) {
        (Ok(transcript), Ok(())) => Ok(transcript),
        (Ok(_), Err(dead)) => Err(dead),
        (Err(e), Ok(())) => Err(e.context(format!("log tail:\n{}", server.log_tail()))),
        (Err(e), Err(dead)) => Err(e.context(format!("{dead:#}"))),
    }
}

/// Runs `scenario` against a fresh server of each selected backend ([`zk_backends`]),
/// one after the other, and fails with every backend's error if any failed.
pub async fn on_each_zk_backend<F>(scenario: F) -> Result<()>
where
    F: AsyncFn(&ZkServer) -> Result<()>,
{
    let mut failures = Vec::new();
    for backend in zk_backends()? {
        println!("=== scenario on {backend}");
        let outcome = async {
            let mut server = ZkServer::start(backend).await?;
            let outcome = scenario(&server).await;
            match (outcome, server.ensure_running()) {
                (Ok(()), alive) => alive,
                (Err(e), Ok(())) => Err(e),
                (Err(e), Err(dead)) => Err(e.context(format!("{dead:#}"))),
            }
        }
        .await;
        if let Err(e) = outcome {
            failures.push(format!("on {backend}: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n\n"))
    }
}
