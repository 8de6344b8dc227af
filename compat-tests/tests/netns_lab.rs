//! The network-namespace lab (`concord_compat_tests::netns::NetLab`) does what partition
//! tests need: nodes reach each other and the test process through the bridge; an
//! isolated node reaches nobody and nobody reaches it (new connections fail within a
//! bounded time, an open connection passes nothing) while the other nodes still talk;
//! after healing everything works again, the open connection included; and dropping
//! the lab, even while a test panics, leaves none of its namespaces or interfaces.
//!
//! Needs root and `ip netns`; without them the tests skip with a loud message, unless
//! `CONCORD_REQUIRE_NETNS=1` makes that a failure. The echo servers and clients are
//! `python3` run inside the namespaces with `ip netns exec`.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::netns::{NetLab, output_bounded};

const PORT: u16 = 7000;
/// How long one connection attempt (connect, then the echo) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection that should work may keep failing (retried) before that is an
/// error.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an open connection may take to deliver its echo once healed (TCP retries
/// with exponential backoff, so this bounds a few seconds of isolation generously).
const RESUME_TIMEOUT: Duration = Duration::from_secs(40);
/// The echo servers exit on their own after this (a safety net: the test kills them).
const SERVER_LIFETIME_SECS: u32 = 300;

/// An echo server: one thread per connection. Prints `listening` once bound.
const ECHO_SERVER: &str = r#"
import signal, socket, sys, threading
signal.alarm(int(sys.argv[3]))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(64)
print("listening", flush=True)
def serve(conn):
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// Connects, sends `ping`, expects it back; prints `ok` or why not.
const ECHO_CLIENT: &str = r#"
import socket, sys
timeout = float(sys.argv[3])
try:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=timeout)
    conn.settimeout(timeout)
    conn.sendall(b"ping")
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            break
        data += chunk
    print("ok" if data == b"ping" else "bad echo %r" % data)
except Exception as error:
    print("fail %r" % error)
"#;

/// Returns the lab if labs can be created here; else says loudly why the test skips
/// (or fails, with `CONCORD_REQUIRE_NETNS=1`).
fn lab_or_skip(n: usize) -> Result<Option<NetLab>> {
    if let Some(reason) = NetLab::unavailable_reason() {
        assert!(
            std::env::var("CONCORD_REQUIRE_NETNS").as_deref() != Ok("1"),
            "network namespaces are required but unavailable: {reason}"
        );
        eprintln!("!!!!!!!! SKIPPED: network-namespace lab unavailable: {reason} !!!!!!!!");
        return Ok(None);
    }
    Ok(Some(NetLab::create(n)?))
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the echo server inside node `i`'s namespace on its address and waits until it
/// listens.
fn start_echo(lab: &NetLab, i: usize) -> Result<Spawned> {
    let mut command = lab.command(i, "python3")?;
    command
        .args(["-c", ECHO_SERVER])
        .arg(lab.ip(i)?.to_string())
        .arg(PORT.to_string())
        .arg(SERVER_LIFETIME_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Spawned(command.spawn().context("start the echo server")?);
    let stdout = child.0.stdout.take().context("no stdout pipe")?;
    let (sender, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    match lines.recv_timeout(Duration::from_secs(15)) {
        Ok(line) if line == "listening" => Ok(child),
        Ok(line) => bail!("node {i}'s echo server printed {line:?}"),
        Err(error) => bail!("node {i}'s echo server did not start: {error}"),
    }
}

/// Where a connection attempt starts: the test process (root namespace) or a node.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Root,
    Node(usize),
}

/// One attempt to echo through a new connection from `from` to node `to`: `Ok(Ok(()))`
/// if the echo came back, `Ok(Err(why))` if not, `Err` if the attempt could not be made.
fn echo_once(lab: &NetLab, from: Origin, to: usize) -> Result<Result<(), String>> {
    let ip = lab.ip(to)?;
    match from {
        Origin::Root => Ok(echo_from_root(ip).map_err(|error| format!("{error:#}"))),
        Origin::Node(i) => {
            let mut command = lab.command(i, "python3")?;
            command
                .args(["-c", ECHO_CLIENT])
                .arg(ip.to_string())
                .arg(PORT.to_string())
                .arg(CONNECT_TIMEOUT.as_secs_f64().to_string());
            let output = output_bounded(&mut command, CONNECT_TIMEOUT * 5)?;
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            ensure!(
                output.status.success(),
                "the client in node {i} failed ({}): {stdout} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(if stdout == "ok" { Ok(()) } else { Err(stdout) })
        }
    }
}

fn echo_from_root(ip: Ipv4Addr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((ip, PORT)), CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    stream.write_all(b"ping")?;
    let mut echo = [0; 4];
    stream.read_exact(&mut echo)?;
    ensure!(&echo == b"ping", "bad echo {echo:?}");
    Ok(())
}

/// Node `to` answers from `from`, retried for at most [`REACH_TIMEOUT`].
fn expect_reachable(lab: &NetLab, from: Origin, to: usize) -> Result<()> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match echo_once(lab, from, to)? {
            Ok(()) => {
                if attempts > 1 {
                    eprintln!("{from:?} -> node {to}: reachable after {attempts} attempts");
                }
                return Ok(());
            }
            Err(why) if started.elapsed() >= REACH_TIMEOUT => {
                bail!("{from:?} -> node {to}: unreachable after {attempts} attempts: {why}")
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Node `to` does not answer from `from`, and the attempt fails within its bound.
fn expect_unreachable(lab: &NetLab, from: Origin, to: usize) -> Result<()> {
    let started = Instant::now();
    match echo_once(lab, from, to)? {
        Ok(()) => bail!("{from:?} -> node {to}: reachable, though node 0 is isolated"),
        Err(why) => {
            let took = started.elapsed();
            eprintln!("{from:?} -> node {to}: unreachable as expected ({why}, {took:?})");
            ensure!(
                took < CONNECT_TIMEOUT * 5,
                "{from:?} -> node {to}: failing took {took:?}"
            );
            Ok(())
        }
    }
}

fn netns_list() -> Result<String> {
    let output = output_bounded(
        std::process::Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    )?;
    ensure!(output.status.success(), "ip netns list: {}", output.status);
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn link_list() -> Result<String> {
    let output = output_bounded(
        std::process::Command::new("ip").args(["-o", "link", "show"]),
        Duration::from_secs(10),
    )?;
    ensure!(output.status.success(), "ip link show: {}", output.status);
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// None of `netns` is in `ip netns list`, none of `links` in `ip link`.
fn expect_gone(netns: &[String], links: &[String]) -> Result<()> {
    let namespaces = netns_list()?;
    let interfaces = link_list()?;
    for name in netns {
        ensure!(
            !namespaces.split_whitespace().any(|word| word == name),
            "namespace {name} is still there:\n{namespaces}"
        );
    }
    for name in links {
        ensure!(
            !interfaces.contains(&format!(" {name}:"))
                && !interfaces.contains(&format!(" {name}@")),
            "interface {name} is still there:\n{interfaces}"
        );
    }
    Ok(())
}

fn partition_and_heal(lab: &mut NetLab) -> Result<()> {
    let placements = lab.placements();
    ensure!(placements.len() == 3, "placements: {placements:?}");
    let host = lab.host_ip().octets();
    for (i, (netns, ip)) in placements.iter().enumerate() {
        ensure!(
            ip.octets() == [host[0], host[1], host[2], i as u8 + 1],
            "node {i} at {ip}, host at {}",
            lab.host_ip()
        );
        ensure!(
            netns_list()?.split_whitespace().any(|word| word == netns),
            "namespace {netns} is not listed"
        );
    }
    eprintln!("lab: host {} nodes {placements:?}", lab.host_ip());

    let _echo0 = start_echo(lab, 0)?;
    let _echo2 = start_echo(lab, 2)?;

    // Healthy: the root namespace and the nodes reach node 0 and node 2.
    expect_reachable(lab, Origin::Root, 0)?;
    expect_reachable(lab, Origin::Node(1), 0)?;
    expect_reachable(lab, Origin::Node(0), 2)?;
    expect_reachable(lab, Origin::Node(1), 2)?;
    expect_reachable(lab, Origin::Root, 2)?;

    // A connection opened before the partition, to see it stall and then resume.
    let mut held =
        TcpStream::connect_timeout(&SocketAddr::from((lab.ip(0)?, PORT)), CONNECT_TIMEOUT)?;
    held.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    held.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    held.write_all(b"before")?;
    let mut before = [0; 6];
    held.read_exact(&mut before)?;
    ensure!(&before == b"before", "held connection echoed {before:?}");

    lab.isolate(0)?;
    ensure!(lab.is_isolated(0)?, "node 0 not marked isolated");
    expect_unreachable(lab, Origin::Root, 0)?;
    expect_unreachable(lab, Origin::Node(1), 0)?;
    expect_unreachable(lab, Origin::Node(0), 2)?;
    // The rest of the cluster still works.
    expect_reachable(lab, Origin::Node(1), 2)?;
    expect_reachable(lab, Origin::Root, 2)?;
    // The open connection is not reset, it just passes nothing.
    held.write_all(b"during")?;
    held.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut byte = [0; 1];
    match held.read(&mut byte) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => bail!("the held connection to isolated node 0 gave {other:?}"),
    }

    lab.heal(0)?;
    ensure!(!lab.is_isolated(0)?, "node 0 still marked isolated");
    expect_reachable(lab, Origin::Root, 0)?;
    expect_reachable(lab, Origin::Node(1), 0)?;
    expect_reachable(lab, Origin::Node(0), 2)?;
    // The held connection delivers what was sent during the partition.
    let healed = Instant::now();
    let mut during = Vec::new();
    while during.len() < 6 {
        let left = RESUME_TIMEOUT.saturating_sub(healed.elapsed());
        ensure!(
            !left.is_zero(),
            "the held connection did not resume within {RESUME_TIMEOUT:?} (got {during:?})"
        );
        held.set_read_timeout(Some(left))?;
        let mut chunk = [0; 6];
        match held.read(&mut chunk) {
            Ok(0) => bail!("the held connection was closed (got {during:?})"),
            Ok(n) => during.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => bail!("the held connection failed after healing: {error}"),
        }
    }
    ensure!(during == b"during", "held connection echoed {during:?}");
    eprintln!(
        "held connection resumed {:?} after healing",
        healed.elapsed()
    );
    Ok(())
}

#[test]
fn isolate_cuts_a_node_off_and_heal_restores_it() {
    let Some(mut lab) = lab_or_skip(3).unwrap() else {
        return;
    };
    let (netns, links) = (lab.netns_names(), lab.link_names());
    let result = partition_and_heal(&mut lab);
    drop(lab);
    let gone = expect_gone(&netns, &links);
    result.unwrap();
    gone.unwrap();
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let Some(lab) = lab_or_skip(2).unwrap() else {
        return;
    };
    let (netns, links) = (lab.netns_names(), lab.link_names());
    // A process left running inside a namespace: the drop kills it.
    let mut command = lab.command(1, "sleep").unwrap();
    command
        .arg("300")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let sleeper = Spawned(command.spawn().unwrap());
    let panicked = catch_unwind(AssertUnwindSafe(move || {
        let _lab = lab;
        panic!("a test failing with the lab alive");
    }));
    assert!(panicked.is_err());
    expect_gone(&netns, &links).unwrap();
    let mut sleeper = sleeper;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sleeper.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the sleeper still runs");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(9), "the sleeper ended with {status}");
}

#[test]
fn concurrent_labs_do_not_clash() {
    let Some(first) = lab_or_skip(1).unwrap() else {
        return;
    };
    let second = NetLab::create(2).unwrap();
    let subnet = |lab: &NetLab| lab.host_ip().octets()[..3].to_vec();
    assert_ne!(subnet(&first), subnet(&second));
    for name in first.netns_names().iter().chain(&first.link_names()) {
        assert!(name.len() <= 15, "{name} is too long for an interface");
        assert!(!second.netns_names().contains(name) && !second.link_names().contains(name));
    }
    assert!(NetLab::create(0).is_err());
    assert!(first.command(1, "true").is_err());
}
