//! Multi-member clusters under test: N real etcd 3.4 members or N `concord` members, as
//! one [`Cluster`].
//!
//! Members are numbered from 0 (their index, stable for the cluster's life: a removed
//! member keeps its slot) and named `n1`, `n2`, ... (members added later get the name
//! the test gives). Each member has its own client, peer and ZooKeeper ports (from
//! [`free_port`]), its data in `<root>/<name>/data` and its log (stdout and stderr,
//! appended across restarts) in `<root>/<name>.log`, all under one temporary root
//! directory. Every process is killed with SIGKILL when the [`Cluster`] is dropped, even
//! a stopped (SIGSTOP) one.
//!
//! How a member is started:
//!
//! * real etcd: `etcd --name --data-dir --listen-client-urls --advertise-client-urls
//!   --listen-peer-urls --initial-advertise-peer-urls --initial-cluster
//!   --initial-cluster-state --initial-cluster-token --enable-v2`;
//! * Concord: `concord serve --etcd-listen IP:CP --zk-listen IP:ZP` with
//!   `CONCORD_NODE__NAME`, `CONCORD_NODE__DATA_DIR`, `CONCORD_NODE__PEER_URL`,
//!   `CONCORD_CLUSTER__PEER_LISTEN`, `CONCORD_CLUSTER__INITIAL_CLUSTER`,
//!   `CONCORD_CLUSTER__INITIAL_CLUSTER_STATE` and `CONCORD_CLUSTER__INITIAL_CLUSTER_TOKEN`
//!   (the harness's own `CONCORD_*` variables are not passed on, see
//!   [`concord_command`]).
//!
//! With [`ClusterBuilder::peer_mutual_tls`] members speak mutual TLS on the peer port
//! (etcd's `--peer-cert-file --peer-key-file --peer-trusted-ca-file
//! --peer-client-cert-auth`; Concord's `cluster.peer_tls` profile) and their peer URLs
//! are `https://`.
//!
//! A member has a [`Placement`]: the IPv4 address it binds and advertises (127.0.0.1 by
//! default) and optionally a network namespace, in which case its command runs as
//! `ip netns exec NAME <command>` (which execs the server, so the child's pid is the
//! server's). The harness itself reaches every member from where it runs.
//!
//! Membership changes go through the etcd API as `etcdctl member add/remove` would:
//! [`Cluster::add_member`] calls MemberAdd on a live member, then starts the new process
//! with `initial-cluster` = the current members plus the new one and state `existing`;
//! [`Cluster::remove_member`] calls MemberRemove, then kills the process.
//!
//! Every wait is bounded in attempts and in time, and fails with the members' log tails;
//! nothing here panics, everything returns an error instead.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use etcd_client::{Client, ConnectOptions, GetOptions, MemberAddOptions, StatusResponse};
use tempfile::TempDir;

use crate::server::{Backend, ServerOptions, concord_command, etcd_command, free_port};

/// How long [`Cluster::start`] waits for every member to answer and agree on a leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a (re)started or added member may take to answer.
pub const MEMBER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Cluster::wait_leader`] and [`Cluster::wait_new_leader`] wait.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a membership change (MemberAdd, MemberRemove, MemberPromote) is retried
/// while the cluster refuses it (etcd refuses reconfiguration while it is unhealthy).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds one probe RPC (a stopped member must not hang a wait).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds one request on clients handed out by [`Cluster::client`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound on the attempts of any wait, on top of its time bound.
const MAX_ATTEMPTS: u32 = 2_000;
const LOG_TAIL_LINES: usize = 40;
/// The key read by the readiness probes.
const PROBE_KEY: &str = "compat-ready-probe";

/// Where a member runs: the address it binds and advertises, and the network namespace
/// its process runs in (`None`: the harness's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub ip: Ipv4Addr,
    pub netns: Option<String>,
}

impl Placement {
    /// 127.0.0.1 in the harness's own namespace.
    pub fn loopback() -> Self {
        Self {
            ip: Ipv4Addr::LOCALHOST,
            netns: None,
        }
    }

    /// `ip` inside network namespace `netns`.
    pub fn in_netns(netns: impl Into<String>, ip: Ipv4Addr) -> Self {
        Self {
            ip,
            netns: Some(netns.into()),
        }
    }
}

impl Default for Placement {
    fn default() -> Self {
        Self::loopback()
    }
}

/// etcd's `--initial-cluster-state`: founding member or joining a running cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    New,
    Existing,
}

impl InitialState {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        }
    }
}

/// What the harness last did to a member's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Spawned and not stopped.
    Running,
    /// Frozen with SIGSTOP ([`Cluster::stop`]); [`Cluster::resume`] continues it.
    Stopped,
    /// Killed ([`Cluster::kill9`]) or exited; [`Cluster::restart`] starts it again.
    Down,
    /// Removed from the cluster ([`Cluster::remove_member`]) and killed.
    Removed,
}

/// One member: its identity, ports and process.
#[derive(Debug)]
struct Member {
    name: String,
    placement: Placement,
    client_port: u16,
    peer_port: u16,
    zk_port: u16,
    /// The `initial-cluster` it was first started with (kept for restarts).
    initial_cluster: String,
    initial_state: InitialState,
    child: Option<Child>,
    state: MemberState,
    starts: u32,
    /// `http` or, with peer TLS, `https`.
    peer_scheme: &'static str,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("{}:{}", self.placement.ip, self.client_port)
    }

    fn client_url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    fn peer_listen(&self) -> String {
        format!("{}:{}", self.placement.ip, self.peer_port)
    }

    fn peer_url(&self) -> String {
        format!("{}://{}", self.peer_scheme, self.peer_listen())
    }

    fn zk_endpoint(&self) -> String {
        format!("{}:{}", self.placement.ip, self.zk_port)
    }

    fn data_dir(&self, root: &Path) -> PathBuf {
        root.join(&self.name).join("data")
    }

    fn log_path(&self, root: &Path) -> PathBuf {
        root.join(format!("{}.log", self.name))
    }

    fn log_tail(&self, root: &Path) -> String {
        let log = std::fs::read_to_string(self.log_path(root)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Whether the harness believes the process runs and answers (not stopped).
    fn is_live(&self) -> bool {
        self.state == MemberState::Running
    }

    fn is_member(&self) -> bool {
        self.state != MemberState::Removed
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("cannot kill {}", self.name))?;
            child
                .wait()
                .with_context(|| format!("cannot reap {}", self.name))?;
        }
        Ok(())
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow!("{} has no process", self.name))
    }
}

/// The cluster-wide settings a member's command needs.
#[derive(Debug, Clone, Copy)]
struct Setup<'a> {
    backend: Backend,
    root: &'a Path,
    token: &'a str,
    options: &'a ServerOptions,
}

/// The command starting `member` (wrapped in `ip netns exec` when it has a namespace).
fn member_command(member: &Member, setup: Setup<'_>) -> Result<Command> {
    let data_dir = member.data_dir(setup.root);
    let client_url = member.client_url();
    let peer_url = member.peer_url();
    let command = match setup.backend {
        Backend::Etcd => {
            let mut command = etcd_command(
                &member.name,
                &data_dir,
                &client_url,
                &peer_url,
                &member.initial_cluster,
            );
            command
                .arg("--initial-cluster-state")
                .arg(member.initial_state.as_str())
                .arg("--initial-cluster-token")
                .arg(setup.token);
            command.args(&setup.options.etcd_args);
            command
        }
        Backend::Concord => {
            let mut command = concord_command()?;
            command
                .arg("serve")
                .arg("--etcd-listen")
                .arg(member.endpoint())
                .arg("--zk-listen")
                .arg(member.zk_endpoint())
                .env("CONCORD_NODE__NAME", &member.name)
                .env("CONCORD_NODE__DATA_DIR", &data_dir)
                .env("CONCORD_NODE__PEER_URL", &peer_url)
                .env("CONCORD_CLUSTER__PEER_LISTEN", member.peer_listen())
                .env("CONCORD_CLUSTER__INITIAL_CLUSTER", &member.initial_cluster)
                .env(
                    "CONCORD_CLUSTER__INITIAL_CLUSTER_STATE",
                    member.initial_state.as_str(),
                )
                .env("CONCORD_CLUSTER__INITIAL_CLUSTER_TOKEN", setup.token);
            command.envs(setup.options.concord_env.iter().map(|(k, v)| (k, v)));
            command
        }
    };
    Ok(match &member.placement.netns {
        Some(netns) => in_netns(&command, netns),
        None => command,
    })
}

/// `command` run as `ip netns exec NETNS <command>`, with the same environment changes.
fn in_netns(command: &Command, netns: &str) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .arg("netns")
        .arg("exec")
        .arg(netns)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// etcd's `--initial-cluster` syntax: `name=peer-url,...`.
fn initial_cluster<'a>(members: impl IntoIterator<Item = (&'a str, String)>) -> String {
    members
        .into_iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A free port not in `used` (which it joins).
fn distinct_port(used: &mut BTreeSet<u16>) -> Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if used.insert(port) {
            return Ok(port);
        }
    }
    bail!("no distinct free port after 100 tries")
}

/// An etcd-client connection to `endpoints`, with bounded timeouts.
async fn connect_to(endpoints: &[String]) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    Client::connect(urls, Some(options))
        .await
        .with_context(|| format!("cannot connect to {}", endpoints.join(",")))
}

/// `status()` on one endpoint, bounded by [`PROBE_TIMEOUT`] as a whole.
async fn probe_status(endpoint: &str) -> Result<StatusResponse> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let addr: SocketAddr = endpoint.parse().context("endpoint address")?;
        tokio::net::TcpStream::connect(addr)
            .await
            .context("TCP connect")?;
        let mut client = connect_to(&[endpoint.to_string()]).await?;
        client.status().await.context("status")
    })
    .await
    .with_context(|| format!("status on {endpoint} timed out"))?
}

/// A get of the probe key on `endpoint`: linearizable, or serializable (a learner
/// refuses linearizable reads).
async fn probe_get(endpoint: &str, serializable: bool) -> Result<()> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut client = connect_to(&[endpoint.to_string()]).await?;
        let options = serializable.then(|| GetOptions::new().with_serializable());
        client.get(PROBE_KEY, options).await.context("get")?;
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("get on {endpoint} timed out"))?
}

/// The member id in a status response's header.
fn own_id(status: &StatusResponse) -> Result<u64> {
    status
        .header()
        .map(|h| h.member_id())
        .ok_or_else(|| anyhow!("status response without a header"))
}

/// What one attempt of a bounded wait found.
enum Attempt<T> {
    Done(T),
    Retry(anyhow::Error),
}

/// Builds a [`Cluster`]: backend and size, and optionally placements, server options and
/// the cluster token.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    backend: Backend,
    size: usize,
    placements: Option<Vec<Placement>>,
    options: ServerOptions,
    token: Option<String>,
    /// Certificates for mutual TLS on the peer port.
    peer_tls: Option<PathBuf>,
}

impl ClusterBuilder {
    /// Members speak mutual TLS to each other with the certificates `concord certs`
    /// wrote into `dir` (`peer.pem`, `peer-key.pem`, `ca.pem`).
    pub fn peer_mutual_tls(mut self, dir: &Path) -> Self {
        self.peer_tls = Some(dir.to_path_buf());
        self
    }

    /// Member `i` binds `placements[i]` (one per member); all on 127.0.0.1 otherwise.
    pub fn placements(mut self, placements: Vec<Placement>) -> Self {
        self.placements = Some(placements);
        self
    }

    /// Extra settings for every member, as [`crate::Server`] takes them.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// The `initial-cluster-token` (default: unique per cluster).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Spawns every member and waits until each answers and all agree on a leader (see
    /// [`Cluster::start`]).
    pub async fn start(self) -> Result<Cluster> {
        ensure!(self.size >= 1, "a cluster needs at least one member");
        let placements = match self.placements {
            Some(placements) => {
                ensure!(
                    placements.len() == self.size,
                    "{} placements for {} members",
                    placements.len(),
                    self.size
                );
                placements
            }
            None => vec![Placement::loopback(); self.size],
        };
        let root = tempfile::Builder::new()
            .prefix(&format!("compat-cluster-{}-", self.backend))
            .tempdir()
            .context("cannot create a temporary directory")?;
        let token = match self.token {
            Some(token) => token,
            None => format!(
                "compat-{}",
                root.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        };
        let mut options = self.options;
        let peer_scheme = match &self.peer_tls {
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                options.etcd_args.extend([
                    format!("--peer-cert-file={}", file("peer.pem")),
                    format!("--peer-key-file={}", file("peer-key.pem")),
                    format!("--peer-trusted-ca-file={}", file("ca.pem")),
                    "--peer-client-cert-auth".to_string(),
                ]);
                options.concord_env.extend([
                    ("CONCORD_TLS__PEER__CERT".to_string(), file("peer.pem")),
                    ("CONCORD_TLS__PEER__KEY".to_string(), file("peer-key.pem")),
                    ("CONCORD_TLS__PEER__CLIENT_CA".to_string(), file("ca.pem")),
                    ("CONCORD_CLUSTER__PEER_TLS".to_string(), "peer".to_string()),
                ]);
                "https"
            }
            None => "http",
        };
        let mut used = BTreeSet::new();
        let mut members = Vec::with_capacity(self.size);
        for (index, placement) in placements.into_iter().enumerate() {
            members.push(Member {
                name: format!("n{}", index + 1),
                placement,
                client_port: distinct_port(&mut used)?,
                peer_port: distinct_port(&mut used)?,
                zk_port: distinct_port(&mut used)?,
                initial_cluster: String::new(),
                initial_state: InitialState::New,
                child: None,
                state: MemberState::Down,
                starts: 0,
                peer_scheme,
            });
        }
        let all = initial_cluster(members.iter().map(|m| (m.name.as_str(), m.peer_url())));
        for member in &mut members {
            member.initial_cluster = all.clone();
        }
        let mut cluster = Cluster {
            backend: self.backend,
            root,
            token,
            options,
            peer_scheme,
            members,
            used_ports: used,
        };
        for index in 0..cluster.members.len() {
            cluster.spawn(index)?;
        }
        cluster.wait_ready(START_TIMEOUT).await?;
        Ok(cluster)
    }
}

/// A running cluster; every member process is killed with SIGKILL when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    backend: Backend,
    root: TempDir,
    token: String,
    options: ServerOptions,
    peer_scheme: &'static str,
    members: Vec<Member>,
    /// Every port handed to a member, so added members get distinct ones.
    used_ports: BTreeSet<u16>,
}

impl Cluster {
    /// A builder for a cluster of `size` members of `backend`.
    pub fn builder(backend: Backend, size: usize) -> ClusterBuilder {
        ClusterBuilder {
            backend,
            size,
            placements: None,
            options: ServerOptions::default(),
            token: None,
            peer_tls: None,
        }
    }

    /// Starts `size` members of `backend` on loopback, and waits (at most
    /// [`START_TIMEOUT`]) until every member answers `status()`, all report the same
    /// leader, which is one of them, and a linearizable get succeeds through each.
    pub async fn start(backend: Backend, size: usize) -> Result<Self> {
        Self::builder(backend, size).start().await
    }

    /// Which implementation the members run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many member slots there are (removed members included; indexes stay stable).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member slot (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The indexes of members not removed.
    pub fn members(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_member())
            .collect()
    }

    /// The indexes of members running and not stopped.
    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_live())
            .collect()
    }

    /// What the harness last did to member `i`.
    pub fn state(&self, i: usize) -> Result<MemberState> {
        Ok(self.member(i)?.state)
    }

    /// Member `i`'s name (`n1` for member 0).
    pub fn name(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.name.clone())
    }

    /// Member `i`'s placement.
    pub fn placement(&self, i: usize) -> Result<Placement> {
        Ok(self.member(i)?.placement.clone())
    }

    /// Member `i`'s client endpoint, `IP:PORT`, as etcdctl's `--endpoints` takes it.
    pub fn endpoint(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.endpoint())
    }

    /// The client endpoints of every member not removed (killed or stopped ones too).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_member())
            .map(Member::endpoint)
            .collect()
    }

    /// Member `i`'s ZooKeeper endpoint, `IP:PORT` (real etcd has none: nothing listens).
    pub fn zk_endpoint(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.zk_endpoint())
    }

    /// Member `i`'s advertised peer URL, `http://IP:PORT` (`https://` with peer TLS).
    pub fn peer_url(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.peer_url())
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> Result<PathBuf> {
        Ok(self.member(i)?.data_dir(self.root.path()))
    }

    /// The file collecting member `i`'s stdout and stderr across restarts.
    pub fn log_path(&self, i: usize) -> Result<PathBuf> {
        Ok(self.member(i)?.log_path(self.root.path()))
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> Result<String> {
        Ok(self.member(i)?.log_tail(self.root.path()))
    }

    /// Every member's log tail, each under a header, for error messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let _ = writeln!(
                out,
                "--- {} ({:?}) log tail:\n{}",
                member.name,
                member.state,
                member.log_tail(self.root.path())
            );
        }
        out
    }

    /// The (key, value) pairs of `key` read on member `i` alone, linearizable or
    /// serializable.
    pub async fn read(
        &self,
        i: usize,
        key: &str,
        serializable: bool,
    ) -> Result<Vec<(String, String)>> {
        let mut client = self.client(i).await?;
        let options = serializable.then(|| GetOptions::new().with_serializable());
        let response = client
            .get(key, options)
            .await
            .with_context(|| format!("get {key} on member {i}"))?;
        Ok(crate::check::pairs(response.kvs()))
    }

    /// A new etcd-client connection to member `i` only.
    pub async fn client(&self, i: usize) -> Result<Client> {
        connect_to(&[self.endpoint(i)?]).await
    }

    /// A new etcd-client connection balanced over every member's endpoint.
    pub async fn cluster_client(&self) -> Result<Client> {
        connect_to(&self.endpoints()).await
    }

    /// Kills member `i` with SIGKILL (a stopped one too) and reaps it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        let member = self.member_mut(i)?;
        member.kill()?;
        if member.state != MemberState::Removed {
            member.state = MemberState::Down;
        }
        Ok(())
    }

    /// Freezes member `i` with SIGSTOP: its sockets stay open but nothing answers.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        let member = self.member(i)?;
        ensure!(
            member.state == MemberState::Running,
            "{} is {:?}, not running",
            member.name,
            member.state
        );
        send_signal("STOP", member.pid()?)?;
        self.member_mut(i)?.state = MemberState::Stopped;
        Ok(())
    }

    /// Continues member `i` after [`Cluster::stop`] with SIGCONT.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        let member = self.member(i)?;
        ensure!(
            member.state == MemberState::Stopped,
            "{} is {:?}, not stopped",
            member.name,
            member.state
        );
        send_signal("CONT", member.pid()?)?;
        self.member_mut(i)?.state = MemberState::Running;
        Ok(())
    }

    /// Kills member `i` if it runs, starts it again on the same data directory and ports,
    /// and waits until it answers `status()`. A real etcd member answers only once the
    /// cluster has quorum: to restart several members of a cluster that has none, use
    /// [`Cluster::restart_many`].
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.restart_many(&[i]).await
    }

    /// Kills each of `indexes` that runs, starts them all, then waits until each
    /// answers `status()`.
    pub async fn restart_many(&mut self, indexes: &[usize]) -> Result<()> {
        for &i in indexes {
            let member = self.member(i)?;
            ensure!(member.is_member(), "{} was removed", member.name);
        }
        for &i in indexes {
            self.kill9(i)?;
            self.spawn(i)?;
        }
        for &i in indexes {
            self.wait_answers(i).await?;
        }
        Ok(())
    }

    /// The member the live members report as leader: they must agree (members that know
    /// no leader are ignored) and at least one must know one. The leader may be a member
    /// that does not answer (stopped, or killed a moment ago), matched by its id in the
    /// member list.
    pub async fn leader(&mut self) -> Result<usize> {
        self.leader_report().await.map(|(leader, _)| leader)
    }

    /// Waits (at most [`LEADER_TIMEOUT`]) until the live members agree on a leader that
    /// itself answers, and returns it.
    pub async fn wait_leader(&mut self) -> Result<usize> {
        self.wait_leader_where("a leader", |_| true).await
    }

    /// Waits (at most [`LEADER_TIMEOUT`]) until the live members agree on a leader other
    /// than `old` that itself answers, and returns it.
    pub async fn wait_new_leader(&mut self, old: usize) -> Result<usize> {
        self.wait_leader_where(&format!("a leader other than {old}"), |l| l != old)
            .await
    }

    /// Member `i`'s id, from the member list of a live member (matched by peer URL).
    pub async fn member_id(&self, i: usize) -> Result<u64> {
        let peer_url = self.peer_url(i)?;
        let members = self.member_list().await?;
        members
            .iter()
            .find(|m| m.peer_urls().contains(&peer_url))
            .map(etcd_client::Member::id)
            .ok_or_else(|| anyhow!("{peer_url} is not in the member list"))
    }

    /// The member list, from the first live member that answers.
    pub async fn member_list(&self) -> Result<Vec<etcd_client::Member>> {
        let mut errors = Vec::new();
        for i in self.live() {
            let outcome = async {
                let mut client = self.client(i).await?;
                let response = tokio::time::timeout(PROBE_TIMEOUT, client.member_list())
                    .await
                    .context("member_list timed out")??;
                anyhow::Ok(response.members().to_vec())
            }
            .await;
            match outcome {
                Ok(members) => return Ok(members),
                Err(e) => errors.push(format!("{}: {e:#}", self.members[i].name)),
            }
        }
        bail!("no live member listed the members: {}", errors.join("; "))
    }

    /// Adds a member on 127.0.0.1; see [`Cluster::add_member_at`].
    pub async fn add_member(&mut self, name: &str, learner: bool) -> Result<usize> {
        self.add_member_at(name, learner, Placement::loopback())
            .await
    }

    /// Adds member `name` (a learner if `learner`) as `etcdctl member add` then starting
    /// it would: allocates its ports, calls MemberAdd with its peer URL on a live member
    /// (retried while the cluster refuses, at most [`MEMBERSHIP_TIMEOUT`]), spawns it with
    /// `initial-cluster` = the current members plus itself and state `existing`, and waits
    /// until it answers `status()`. Returns its index.
    pub async fn add_member_at(
        &mut self,
        name: &str,
        learner: bool,
        placement: Placement,
    ) -> Result<usize> {
        ensure!(
            !self.members.iter().any(|m| m.name == name),
            "a member named {name} exists already"
        );
        ensure!(
            !name.is_empty() && !name.contains([',', '=']),
            "bad member name {name:?}"
        );
        let mut member = Member {
            name: name.to_string(),
            placement,
            client_port: distinct_port(&mut self.used_ports)?,
            peer_port: distinct_port(&mut self.used_ports)?,
            zk_port: distinct_port(&mut self.used_ports)?,
            initial_cluster: String::new(),
            initial_state: InitialState::Existing,
            child: None,
            state: MemberState::Down,
            starts: 0,
            peer_scheme: self.peer_scheme,
        };
        let peer_url = member.peer_url();
        self.retry_membership(
            &format!("MemberAdd {name} {peer_url}"),
            async |cluster, k| {
                if let Ok(list) = cluster.member_list().await
                    && list.iter().any(|m| m.peer_urls().contains(&peer_url))
                {
                    return Ok(Attempt::Done(()));
                }
                let mut client = cluster.client(k).await?;
                let options = if learner {
                    MemberAddOptions::new().with_is_learner()
                } else {
                    MemberAddOptions::new()
                };
                match client.member_add([peer_url.as_str()], Some(options)).await {
                    Ok(_) => Ok(Attempt::Done(())),
                    Err(e) => Ok(Attempt::Retry(anyhow!(e))),
                }
            },
        )
        .await?;
        let existing = self
            .members
            .iter()
            .filter(|m| m.is_member())
            .map(|m| (m.name.as_str(), m.peer_url()));
        member.initial_cluster = initial_cluster(existing.chain([(name, peer_url.clone())]));
        self.members.push(member);
        let index = self.members.len() - 1;
        self.spawn(index)?;
        self.wait_answers(index).await?;
        Ok(index)
    }

    /// Promotes learner `i` to a voting member, retrying (at most [`MEMBERSHIP_TIMEOUT`])
    /// while etcd refuses because the learner has not caught up.
    pub async fn promote(&mut self, i: usize) -> Result<()> {
        let id = self.member_id(i).await?;
        let name = self.name(i)?;
        self.retry_membership(&format!("MemberPromote {name}"), async |cluster, k| {
            if let Ok(list) = cluster.member_list().await
                && list.iter().any(|m| m.id() == id && !m.is_learner())
            {
                return Ok(Attempt::Done(()));
            }
            let mut client = cluster.client(k).await?;
            match client.member_promote(id).await {
                Ok(_) => Ok(Attempt::Done(())),
                Err(e) => Ok(Attempt::Retry(anyhow!(e))),
            }
        })
        .await
    }

    /// Removes member `i` from the cluster (MemberRemove through another live member,
    /// retried while the cluster refuses, at most [`MEMBERSHIP_TIMEOUT`]), then kills it.
    /// Its slot stays (as [`MemberState::Removed`]); [`Cluster::endpoints`] leaves it out.
    pub async fn remove_member(&mut self, i: usize) -> Result<()> {
        let member = self.member(i)?;
        ensure!(member.is_member(), "{} was removed already", member.name);
        let name = member.name.clone();
        let id = self.member_id(i).await?;
        self.retry_membership(&format!("MemberRemove {name}"), async |cluster, k| {
            if k == i {
                return Ok(Attempt::Retry(anyhow!(
                    "not asking {name} to remove itself"
                )));
            }
            let mut client = cluster.client(k).await?;
            let listed = tokio::time::timeout(PROBE_TIMEOUT, client.member_list()).await;
            if let Ok(Ok(list)) = listed
                && !list.members().iter().any(|m| m.id() == id)
            {
                return Ok(Attempt::Done(()));
            }
            match client.member_remove(id).await {
                Ok(_) => Ok(Attempt::Done(())),
                Err(e) => Ok(Attempt::Retry(anyhow!(e))),
            }
        })
        .await?;
        let member = self.member_mut(i)?;
        member.kill()?;
        member.state = MemberState::Removed;
        Ok(())
    }

    /// An error (with the log tail) for each member the harness believes runs whose
    /// process has exited; such members are marked [`MemberState::Down`].
    pub fn ensure_running(&mut self) -> Result<()> {
        let mut dead = Vec::new();
        for member in &mut self.members {
            if !matches!(member.state, MemberState::Running | MemberState::Stopped) {
                continue;
            }
            let Some(child) = member.child.as_mut() else {
                continue;
            };
            if let Some(status) = child.try_wait()? {
                member.child = None;
                member.state = MemberState::Down;
                dead.push(format!(
                    "{} exited with {status}; log tail:\n{}",
                    member.name,
                    member.log_tail(self.root.path())
                ));
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            bail!("{}", dead.join("\n"))
        }
    }

    fn member(&self, i: usize) -> Result<&Member> {
        self.members
            .get(i)
            .ok_or_else(|| anyhow!("no member {i} (the cluster has {})", self.members.len()))
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut Member> {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| anyhow!("no member {i} (the cluster has {len})"))
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let setup = Setup {
            backend: self.backend,
            root: self.root.path(),
            token: &self.token,
            options: &self.options,
        };
        let member = self
            .members
            .get(i)
            .ok_or_else(|| anyhow!("no member {i}"))?;
        let mut command = member_command(member, setup)?;
        let log_path = member.log_path(setup.root);
        let dir = member.data_dir(setup.root);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        writeln!(
            log,
            "=== compat-tests: start #{} of {} member {} ===",
            member.starts + 1,
            setup.backend,
            member.name
        )?;
        let stderr: File = log.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot spawn {} ({command:?})", member.name))?;
        let member = self.member_mut(i)?;
        member.starts += 1;
        member.child = Some(child);
        member.state = MemberState::Running;
        Ok(())
    }

    /// Calls `attempt` until it is done or fails, with `attempt` told a live member to
    /// ask (rotating over the live members); bounded by [`MEMBERSHIP_TIMEOUT`].
    async fn retry_membership<T>(
        &mut self,
        what: &str,
        mut attempt: impl AsyncFnMut(&Cluster, usize) -> Result<Attempt<T>>,
    ) -> Result<T> {
        let mut turn = 0usize;
        self.poll(what, MEMBERSHIP_TIMEOUT, async |cluster| {
            cluster.ensure_running()?;
            let live = cluster.live();
            if live.is_empty() {
                bail!("no live member to ask");
            }
            let k = live[turn % live.len()];
            turn += 1;
            match attempt(cluster, k).await {
                Ok(outcome) => Ok(outcome),
                Err(e) => Ok(Attempt::Retry(e)),
            }
        })
        .await
    }

    /// Calls `attempt` every [`POLL_INTERVAL`] until it is done, it fails (an error from
    /// `attempt` itself ends the wait at once), `timeout` passes or [`MAX_ATTEMPTS`] are
    /// used up; the last two fail with the last retry's reason and every log tail.
    async fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut attempt: impl AsyncFnMut(&mut Cluster) -> Result<Attempt<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = anyhow!("no attempt made");
        for _ in 0..MAX_ATTEMPTS {
            match attempt(self).await {
                Ok(Attempt::Done(value)) => return Ok(value),
                Ok(Attempt::Retry(reason)) => last = reason,
                Err(fatal) => {
                    return Err(fatal.context(format!(
                        "{} cluster: while waiting for {what}\n{}",
                        self.backend,
                        self.log_tails()
                    )));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        bail!(
            "{} cluster: no {what} within {timeout:?} (last: {last:#})\n{}",
            self.backend,
            self.log_tails()
        )
    }

    /// Waits until every live member answers, all agree on a leader that answers too, and
    /// a get succeeds through each (linearizable, serializable on learners).
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.poll("every member ready", timeout, async |cluster| {
            cluster.ensure_running()?;
            let mut ids = Vec::new();
            let mut leaders = BTreeSet::new();
            let mut learners = Vec::new();
            for i in cluster.live() {
                let member = &cluster.members[i];
                let status = match probe_status(&member.endpoint()).await {
                    Ok(status) => status,
                    Err(e) => return Ok(Attempt::Retry(e.context(member.name.clone()))),
                };
                ids.push(own_id(&status)?);
                leaders.insert(status.leader());
                learners.push((i, status.is_learner()));
            }
            let leader = match leaders.into_iter().collect::<Vec<_>>()[..] {
                [leader] if leader != 0 => leader,
                ref other => {
                    return Ok(Attempt::Retry(anyhow!(
                        "members report leaders {other:?} (0: none)"
                    )));
                }
            };
            if !ids.contains(&leader) {
                return Ok(Attempt::Retry(anyhow!(
                    "leader {leader:x} is none of the live members {ids:x?}"
                )));
            }
            for (i, learner) in learners {
                if let Err(e) = probe_get(&cluster.members[i].endpoint(), learner).await {
                    return Ok(Attempt::Retry(e.context(cluster.members[i].name.clone())));
                }
            }
            Ok(Attempt::Done(()))
        })
        .await
    }

    /// Waits (at most [`MEMBER_READY_TIMEOUT`]) until member `i` answers `status()`.
    async fn wait_answers(&mut self, i: usize) -> Result<()> {
        let endpoint = self.endpoint(i)?;
        let what = format!("answer from {} on {endpoint}", self.name(i)?);
        self.poll(&what, MEMBER_READY_TIMEOUT, async |cluster| {
            cluster.ensure_running()?;
            match probe_status(&endpoint).await {
                Ok(_) => Ok(Attempt::Done(())),
                Err(e) => Ok(Attempt::Retry(e)),
            }
        })
        .await
    }

    async fn wait_leader_where(
        &mut self,
        what: &str,
        accept: impl Fn(usize) -> bool,
    ) -> Result<usize> {
        self.poll(what, LEADER_TIMEOUT, async |cluster| {
            cluster.ensure_running()?;
            match cluster.leader_report().await {
                Ok((leader, answered)) if answered && accept(leader) => Ok(Attempt::Done(leader)),
                Ok((leader, answered)) => Ok(Attempt::Retry(anyhow!(
                    "the leader is {leader} ({})",
                    if answered {
                        "not the one wanted"
                    } else {
                        "it does not answer"
                    }
                ))),
                Err(e) => Ok(Attempt::Retry(e)),
            }
        })
        .await
    }

    /// The agreed leader's index and whether it answered `status()` itself.
    async fn leader_report(&mut self) -> Result<(usize, bool)> {
        self.ensure_running()?;
        let mut answered = Vec::new();
        let mut errors = Vec::new();
        for i in self.live() {
            let member = &self.members[i];
            match probe_status(&member.endpoint()).await {
                Ok(status) => answered.push((i, own_id(&status)?, status.leader())),
                Err(e) => errors.push(format!("{}: {e:#}", member.name)),
            }
        }
        ensure!(
            !answered.is_empty(),
            "no live member answered status: {}",
            errors.join("; ")
        );
        let leaders: BTreeSet<u64> = answered
            .iter()
            .map(|&(_, _, leader)| leader)
            .filter(|&leader| leader != 0)
            .collect();
        let leader = match leaders.iter().collect::<Vec<_>>()[..] {
            [leader] => *leader,
            [] => bail!("no member knows a leader"),
            _ => bail!("members disagree on the leader: {answered:x?} (index, id, leader)"),
        };
        if let Some(&(i, _, _)) = answered.iter().find(|&&(_, id, _)| id == leader) {
            return Ok((i, true));
        }
        // The leader did not answer: find it by id in the member list.
        let list = self.member_list().await?;
        let urls = list
            .iter()
            .find(|m| m.id() == leader)
            .map(|m| m.peer_urls().to_vec())
            .ok_or_else(|| anyhow!("leader {leader:x} is not in the member list"))?;
        let index = self
            .members
            .iter()
            .position(|m| urls.contains(&m.peer_url()))
            .ok_or_else(|| anyhow!("leader {leader:x} ({urls:?}) is none of ours"))?;
        Ok((index, false))
    }
}

/// Sends `SIG<signal>` to `pid` with the `kill` command.
fn send_signal(signal: &str, pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    ensure!(status.success(), "kill -{signal} {pid} failed: {status}");
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            // Errors cannot be reported from drop; SIGKILL also ends a stopped process.
            let _ = member.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ETCD_BIN;

    fn member(name: &str, placement: Placement) -> Member {
        Member {
            name: name.into(),
            placement,
            client_port: 2379,
            peer_port: 2380,
            zk_port: 2181,
            initial_cluster: "n1=http://10.0.0.2:2380".into(),
            initial_state: InitialState::Existing,
            child: None,
            state: MemberState::Down,
            starts: 0,
            peer_scheme: "http",
        }
    }

    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn initial_cluster_uses_etcd_syntax() {
        let members = [
            ("n1", "http://127.0.0.1:1".to_string()),
            ("n2", "http://127.0.0.1:2".to_string()),
        ];
        assert_eq!(
            initial_cluster(members),
            "n1=http://127.0.0.1:1,n2=http://127.0.0.1:2"
        );
    }

    #[test]
    fn etcd_member_in_a_namespace_binds_its_address() {
        let root = Path::new("/tmp/root");
        let options = ServerOptions::default();
        let setup = Setup {
            backend: Backend::Etcd,
            root,
            token: "tok",
            options: &options,
        };
        let m = member(
            "n1",
            Placement::in_netns("lab-a", Ipv4Addr::new(10, 0, 0, 2)),
        );
        let command = member_command(&m, setup).unwrap();
        assert_eq!(command.get_program(), "ip");
        let args = args(&command);
        assert_eq!(args[..4], ["netns", "exec", "lab-a", ETCD_BIN]);
        let flag = |name: &str| {
            let at = args.iter().position(|a| a == name).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(flag("--listen-client-urls"), "http://10.0.0.2:2379");
        assert_eq!(
            flag("--initial-advertise-peer-urls"),
            "http://10.0.0.2:2380"
        );
        assert_eq!(flag("--initial-cluster-state"), "existing");
        assert_eq!(flag("--initial-cluster-token"), "tok");
        assert_eq!(flag("--data-dir"), "/tmp/root/n1/data");
    }

    #[test]
    fn concord_member_gets_its_cluster_configuration_in_the_environment() {
        let Ok(_) = crate::server::concord_bin() else {
            // Without a concord binary the command cannot be built; nothing to check.
            return;
        };
        let options = ServerOptions::default();
        let setup = Setup {
            backend: Backend::Concord,
            root: Path::new("/tmp/root"),
            token: "tok",
            options: &options,
        };
        let m = member(
            "n2",
            Placement::in_netns("lab-b", Ipv4Addr::new(10, 0, 0, 3)),
        );
        let command = member_command(&m, setup).unwrap();
        let env = |key: &str| {
            command
                .get_envs()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v)
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(env("CONCORD_NODE__NAME").as_deref(), Some("n2"));
        assert_eq!(
            env("CONCORD_NODE__PEER_URL").as_deref(),
            Some("http://10.0.0.3:2380")
        );
        assert_eq!(
            env("CONCORD_CLUSTER__PEER_LISTEN").as_deref(),
            Some("10.0.0.3:2380")
        );
        assert_eq!(
            env("CONCORD_CLUSTER__INITIAL_CLUSTER_STATE").as_deref(),
            Some("existing")
        );
        let args = args(&command);
        assert_eq!(args[..3], ["netns", "exec", "lab-b"]);
        assert!(args.ends_with(&[
            "serve".into(),
            "--etcd-listen".into(),
            "10.0.0.3:2379".into(),
            "--zk-listen".into(),
            "10.0.0.3:2181".into(),
        ]));
    }

    #[test]
    fn distinct_ports_do_not_repeat() {
        let mut used = BTreeSet::new();
        let ports: Vec<u16> = (0..10).map(|_| distinct_port(&mut used).unwrap()).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
    }
}
