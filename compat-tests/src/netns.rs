//! A network-namespace lab for cluster partition tests: one Linux network namespace per
//! node, all joined by a bridge in the root namespace, and a way to cut one node off
//! and heal it again.
//!
//! [`NetLab::create`]`(n)` builds, with `ip` (iproute2):
//!
//! * a bridge `cnl<tag>br` in the root namespace with the address `10.A.B.254/24`
//!   ([`NetLab::host_ip`]), `A.B` chosen per lab so concurrent labs do not share a
//!   subnet (a subnet any root-namespace address or route already overlaps is skipped);
//! * for node `i`, a namespace `cnl<tag>n<i>` holding `lo` (up) and `eth0` with the
//!   address `10.A.B.(i+1)/24`, the far end of a veth pair whose root-namespace end
//!   `cnl<tag>v<ii>` is a port of the bridge.
//!
//! `<tag>` is the test process's id and a per-process counter in hex (`pppppp` + `cc`),
//! so parallel tests and parallel test processes never clash, and every interface name
//! stays within Linux's 15 characters. The test process stays in the root namespace and
//! reaches every node through the bridge; nodes reach each other through it too. The
//! bridge is layer 2, so no `ip_forward` is needed, and it is created with
//! `nf_call_iptables`/`ip6tables`/`arptables` off so `br_netfilter` (if loaded) never
//! sees its frames. [`NetLab::command`] runs a program inside a node's namespace.
//!
//! [`NetLab::isolate`] sets node `i`'s root-side veth administratively down: the bridge
//! port is disabled at once and the node's `eth0` loses carrier, so nothing passes in
//! either direction, between the node and the other nodes or the root namespace (its own
//! loopback keeps working). New connections time out or fail; established TCP
//! connections stay open but pass no data (their retransmissions are dropped) until
//! [`NetLab::heal`] sets the port up again (and waits until it forwards), after which
//! they resume. This was chosen over `tc`: `netem` and the `tc` classifiers are not in
//! every kernel (this machine's has none of them), and a veth's link state is.
//!
//! Dropping a [`NetLab`] kills (SIGKILL) whatever still runs in its namespaces (only
//! processes started through the lab can be there), deletes its veths, namespaces and
//! bridge, with every command bounded in time and every error written to stderr, never
//! a panic, so a failing test leaves nothing behind. A test process that was itself
//! killed cannot clean up: the next lab created on the machine removes the labs whose
//! owning process is gone (the process id is in the names).
//!
//! Requires root and a working `ip netns` ([`NetLab::is_available`]); tests skip with
//! a loud message otherwise.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The prefix of every name a lab creates (namespaces and interfaces).
pub const NAME_PREFIX: &str = "cnl";

/// How long one `ip` command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`NetLab::create`] and [`NetLab::heal`] wait for the bridge ports to
/// forward.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most nodes a lab can have: `.1` to `.253`, `.254` is the bridge.
pub const MAX_NODES: usize = 253;

/// The name of the node's interface inside its namespace.
pub const NODE_INTERFACE: &str = "eth0";

/// The labs this process has created so far (the counter in the names).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Serialises subnet choice and stale-lab cleanup between this process's threads.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// Whether this process has removed leftovers carrying its own process id (from a dead
/// process that had the same id).
static OWN_LEFTOVERS_REMOVED: OnceLock<()> = OnceLock::new();

/// One node of a [`NetLab`]: its namespace, its root-side veth and its address, with
/// what of it has been created (what [`Drop`] must delete).
#[derive(Debug)]
struct Node {
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    netns_created: bool,
    veth_created: bool,
    isolated: bool,
}

/// Network namespaces joined by a bridge, one per node; see the module documentation.
#[derive(Debug)]
pub struct NetLab {
    tag: String,
    bridge: String,
    bridge_created: bool,
    host_ip: Ipv4Addr,
    nodes: Vec<Node>,
}

impl NetLab {
    /// Whether labs can be created here: running as root with a working `ip netns`.
    pub fn is_available() -> bool {
        Self::unavailable_reason().is_none()
    }

    /// Why labs cannot be created here, or `None` if they can.
    pub fn unavailable_reason() -> Option<String> {
        match effective_uid() {
            Ok(0) => {}
            Ok(uid) => return Some(format!("network namespaces need root (euid is {uid})")),
            Err(error) => return Some(format!("cannot tell the effective uid: {error:#}")),
        }
        match run(&mut ip(&["netns", "list"])) {
            Ok(_) => None,
            Err(error) => Some(format!("`ip netns list` does not work: {error:#}")),
        }
    }

    /// Creates a lab of `n` nodes (1 to [`MAX_NODES`]) and waits until every bridge
    /// port forwards. On an error, whatever was created is deleted again.
    pub fn create(n: usize) -> Result<NetLab> {
        if n == 0 || n > MAX_NODES {
            bail!("a lab has 1 to {MAX_NODES} nodes, not {n}");
        }
        if let Some(reason) = Self::unavailable_reason() {
            bail!("cannot create a network lab: {reason}");
        }
        let pid = std::process::id();
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{NAME_PREFIX}{:06x}{:02x}", pid & 0xff_ffff, counter & 0xff);
        // Held until the bridge has its address, so this process's labs never pick the
        // same subnet; other processes start from another subnet (the process id).
        let guard = CREATE_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        OWN_LEFTOVERS_REMOVED.get_or_init(|| remove_leftovers(|owner| owner == pid));
        remove_leftovers(|owner| owner != pid && !Path::new(&format!("/proc/{owner}")).exists());
        let (a, b) = free_subnet(pid, counter)?;
        let mut lab = NetLab {
            bridge: format!("{tag}br"),
            tag,
            bridge_created: false,
            host_ip: Ipv4Addr::new(10, a, b, 254),
            nodes: (0..n)
                .map(|i| Node {
                    netns: String::new(),
                    veth: String::new(),
                    ip: Ipv4Addr::new(10, a, b, (i + 1) as u8),
                    netns_created: false,
                    veth_created: false,
                    isolated: false,
                })
                .collect(),
        };
        for (i, node) in lab.nodes.iter_mut().enumerate() {
            node.netns = format!("{}n{i}", lab.tag);
            node.veth = format!("{}v{i:02x}", lab.tag);
        }
        let bridge = lab.bridge.clone();
        run(&mut ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ]))?;
        lab.bridge_created = true;
        run(&mut ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.host_ip),
            "dev",
            &bridge,
        ]))?;
        drop(guard);
        run(&mut ip(&["link", "set", &bridge, "up"]))?;
        for node in &mut lab.nodes {
            run(&mut ip(&["netns", "add", &node.netns]))?;
            node.netns_created = true;
            run(&mut ip(&[
                "link",
                "add",
                &node.veth,
                "type",
                "veth",
                "peer",
                "name",
                NODE_INTERFACE,
                "netns",
                &node.netns,
            ]))?;
            node.veth_created = true;
            run(&mut ip(&[
                "link", "set", &node.veth, "master", &bridge, "up",
            ]))?;
            run(&mut ip(&["-n", &node.netns, "link", "set", "lo", "up"]))?;
            run(&mut ip(&[
                "-n",
                &node.netns,
                "addr",
                "add",
                &format!("{}/24", node.ip),
                "dev",
                NODE_INTERFACE,
            ]))?;
            run(&mut ip(&[
                "-n",
                &node.netns,
                "link",
                "set",
                NODE_INTERFACE,
                "up",
            ]))?;
        }
        for i in 0..n {
            lab.wait_forwarding(i)?;
        }
        Ok(lab)
    }

    /// How many nodes the lab has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the lab has no nodes (never: [`NetLab::create`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Each node's namespace name and address, in node order.
    pub fn placements(&self) -> Vec<(String, Ipv4Addr)> {
        self.nodes
            .iter()
            .map(|node| (node.netns.clone(), node.ip))
            .collect()
    }

    /// Node `i`'s namespace name.
    pub fn netns(&self, i: usize) -> Result<&str> {
        Ok(&self.node(i)?.netns)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Result<Ipv4Addr> {
        Ok(self.node(i)?.ip)
    }

    /// The root namespace's address on the bridge (`10.A.B.254`): where nodes reach the
    /// test process.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The names of the namespaces the lab created.
    pub fn netns_names(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.netns.clone()).collect()
    }

    /// The names of the root-namespace interfaces the lab created: the bridge and the
    /// root-side veths.
    pub fn link_names(&self) -> Vec<String> {
        std::iter::once(self.bridge.clone())
            .chain(self.nodes.iter().map(|node| node.veth.clone()))
            .collect()
    }

    /// `ip netns exec NETNS PROGRAM`: a command that runs `program` inside node `i`'s
    /// namespace (add its arguments with `.arg`/`.args`). `ip` execs the program, so
    /// the child's process id is the program's own. `tokio::process::Command` converts
    /// from it with `From`.
    pub fn command(&self, i: usize, program: &str) -> Result<Command> {
        let mut command = ip(&["netns", "exec", self.netns(i)?]);
        command.arg(program);
        Ok(command)
    }

    /// Cuts node `i` off from every other node and from the root namespace, in both
    /// directions, by setting its bridge port down. Isolating an isolated node is a
    /// no-op.
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        let veth = self.node(i)?.veth.clone();
        run(&mut ip(&["link", "set", &veth, "down"]))
            .with_context(|| format!("cannot isolate node {i}"))?;
        self.nodes[i].isolated = true;
        Ok(())
    }

    /// Undoes [`NetLab::isolate`]: sets node `i`'s bridge port up and waits (at most
    /// [`READY_TIMEOUT`]) until it forwards. Healing a connected node is a no-op.
    pub fn heal(&mut self, i: usize) -> Result<()> {
        let veth = self.node(i)?.veth.clone();
        run(&mut ip(&["link", "set", &veth, "up"]))
            .with_context(|| format!("cannot heal node {i}"))?;
        self.wait_forwarding(i)?;
        self.nodes[i].isolated = false;
        Ok(())
    }

    /// Whether node `i` is isolated.
    pub fn is_isolated(&self, i: usize) -> Result<bool> {
        Ok(self.node(i)?.isolated)
    }

    fn node(&self, i: usize) -> Result<&Node> {
        self.nodes
            .get(i)
            .ok_or_else(|| anyhow!("the lab has {} nodes, there is no node {i}", self.len()))
    }

    /// Waits until node `i`'s veth has carrier (both ends up), its bridge port forwards
    /// and its `eth0` is operationally up.
    fn wait_forwarding(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let sys = Path::new("/sys/class/net").join(&node.veth);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let carrier = read_trimmed(&sys.join("carrier")).as_deref() == Some("1");
            // BR_STATE_FORWARDING
            let forwarding = read_trimmed(&sys.join("brport/state")).as_deref() == Some("3");
            let inner_up = carrier
                && forwarding
                && run(&mut ip(&[
                    "-n",
                    &node.netns,
                    "-o",
                    "link",
                    "show",
                    "dev",
                    NODE_INTERFACE,
                ]))
                .is_ok_and(|out| out.contains("state UP"));
            if inner_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {i}'s port {} does not forward after {READY_TIMEOUT:?} \
                     (carrier {carrier}, forwarding {forwarding})",
                    node.veth
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for node in &self.nodes {
            if node.netns_created {
                kill_processes_in(&node.netns);
            }
        }
        for node in &self.nodes {
            // Deleting one end of a veth pair deletes both.
            if node.veth_created {
                log_error(run(&mut ip(&["link", "del", &node.veth])));
            }
            if node.netns_created {
                log_error(run(&mut ip(&["netns", "del", &node.netns])));
            }
        }
        if self.bridge_created {
            log_error(run(&mut ip(&["link", "del", &self.bridge])));
        }
    }
}

/// Writes a cleanup error to stderr (a drop must not panic).
fn log_error(result: Result<String>) {
    if let Err(error) = result {
        eprintln!("netns lab cleanup: {error:#}");
    }
}

/// SIGKILLs every process in namespace `netns` and waits (bounded) until none is left.
fn kill_processes_in(netns: &str) {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let pids = match run(&mut ip(&["netns", "pids", netns])) {
            Ok(out) => out
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            Err(error) => {
                eprintln!("netns lab cleanup: {error:#}");
                return;
            }
        };
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("netns lab cleanup: processes {pids:?} still run in {netns}");
            return;
        }
        let mut kill = Command::new("kill");
        kill.arg("-KILL").arg("--").args(&pids);
        // Some may have exited in between: kill's failure says nothing.
        let _ = output_bounded(&mut kill, COMMAND_TIMEOUT);
        thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes the namespaces and root-namespace interfaces named like a lab's whose owning
/// process id satisfies `stale`; errors are written to stderr.
fn remove_leftovers(stale: impl Fn(u32) -> bool) {
    let owner = |name: &str| -> Option<u32> {
        let hex = name.strip_prefix(NAME_PREFIX)?.get(..6)?;
        u32::from_str_radix(hex, 16).ok()
    };
    let is_stale = |name: &str| owner(name).is_some_and(&stale);
    match run(&mut ip(&["-o", "link", "show"])) {
        Ok(links) => {
            // `7: cnl0012ab00v00@if2: <...> ...`; bridges after their ports.
            let mut names: Vec<String> = links
                .lines()
                .filter_map(|line| line.split(": ").nth(1))
                .map(|name| name.split('@').next().unwrap_or(name).to_owned())
                .filter(|name| is_stale(name))
                .collect();
            names.sort_by_key(|name| name.ends_with("br"));
            for name in names {
                eprintln!("netns lab: removing leftover interface {name}");
                log_error(run(&mut ip(&["link", "del", &name])));
            }
        }
        Err(error) => eprintln!("netns lab: cannot list interfaces: {error:#}"),
    }
    match run(&mut ip(&["netns", "list"])) {
        Ok(list) => {
            // `cnl0012ab00n0 (id: 3)` or just `cnl0012ab00n0`
            for name in list
                .lines()
                .filter_map(|line| line.split_whitespace().next())
            {
                if is_stale(name) {
                    eprintln!("netns lab: removing leftover namespace {name}");
                    kill_processes_in(name);
                    log_error(run(&mut ip(&["netns", "del", name])));
                }
            }
        }
        Err(error) => eprintln!("netns lab: cannot list namespaces: {error:#}"),
    }
}

/// Picks `(A, B)` such that no root-namespace address or route overlaps `10.A.B.0/24`,
/// starting from one derived from the process id and the lab counter.
fn free_subnet(pid: u32, counter: u32) -> Result<(u8, u8)> {
    // 10.100.0.0 - 10.199.255.0: 25,600 subnets.
    const SUBNETS: u32 = 100 * 256;
    let mut used = Vec::new();
    for words in [
        run(&mut ip(&["-4", "-o", "addr", "show"]))?,
        run(&mut ip(&["-4", "route", "show", "table", "all"]))?,
    ] {
        for line in words.lines() {
            used.extend(line.split_whitespace().filter_map(parse_prefix));
        }
    }
    let start = (pid % 100) * 256 + (counter & 0xff);
    for step in 0..SUBNETS {
        let index = (start + step * 257) % SUBNETS;
        let (a, b) = (100 + index / 256, index % 256);
        let subnet = u32::from(Ipv4Addr::new(10, a as u8, b as u8, 0));
        if !used
            .iter()
            .any(|&(net, len)| overlaps(subnet, 24, net, len))
        {
            return Ok((a as u8, b as u8));
        }
    }
    bail!("no free 10.x.y.0/24 subnet for a network lab")
}

/// `a.b.c.d/len` (or a bare address, as `/32`) as a number and a prefix length.
fn parse_prefix(word: &str) -> Option<(u32, u32)> {
    let (addr, len) = match word.split_once('/') {
        Some((addr, len)) => (addr, len.parse().ok().filter(|len| *len <= 32)?),
        None => (word, 32),
    };
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len))
}

/// Whether two prefixes share an address.
fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// The effective uid, from `/proc/self/status`.
fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("no Uid line in /proc/self/status")?;
    // real, effective, saved, filesystem
    let euid = line
        .split_whitespace()
        .nth(1)
        .context("short Uid line in /proc/self/status")?;
    Ok(euid.parse()?)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// The `ip` binary: iproute2's usual places, else whatever `PATH` finds.
fn ip_binary() -> &'static str {
    static BINARY: OnceLock<&'static str> = OnceLock::new();
    BINARY.get_or_init(|| {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("ip")
    })
}

/// `ip ARGS` (not yet run).
fn ip(args: &[&str]) -> Command {
    let mut command = Command::new(ip_binary());
    command.args(args);
    command
}

/// Runs `command` for at most [`COMMAND_TIMEOUT`] and returns its stdout; a non-zero
/// exit is an error that shows stderr.
fn run(command: &mut Command) -> Result<String> {
    let output = output_bounded(command, COMMAND_TIMEOUT)?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` with stdin closed and both output streams captured, for at most
/// `timeout`; past it the process is killed (SIGKILL) and reaped, and that is an error.
pub fn output_bounded(command: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    // Read both pipes while waiting, so a chatty child cannot block on a full pipe.
    let readers = [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(anyhow!("{command:?} did not finish within {timeout:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(anyhow!("cannot wait for {command:?}: {error}"));
            }
        }
    };
    // The pipes close when the child is gone, unless it left a grandchild holding them:
    // then give up on its output rather than wait.
    let [stdout, stderr] = readers.map(|reader| {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if reader.is_finished() {
            reader.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    });
    Ok(Output {
        status: status?,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap() {
        let net = |s: &str| parse_prefix(s).unwrap();
        let (a, a_len) = net("10.100.3.0/24");
        assert!(overlaps(a, a_len, net("10.100.3.254").0, 32));
        assert!(overlaps(a, a_len, net("10.0.0.0/8").0, 8));
        assert!(!overlaps(a, a_len, net("10.100.4.0/24").0, 24));
        assert!(!overlaps(a, a_len, net("192.0.2.0/24").0, 24));
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("10.0.0.0/33"), None);
    }

    #[test]
    fn names_fit_an_interface() {
        let tag = format!("{NAME_PREFIX}{:06x}{:02x}", 0xff_ffff, 0xff);
        assert!(format!("{tag}br").len() <= 15);
        assert!(format!("{tag}v{:02x}", MAX_NODES - 1).len() <= 15);
    }
}
