//! Differential ZooKeeper sessions with the Rust `zookeeper-client` crate: the same
//! scripted scenarios (CRUD, errors, Stat relations, sequential nodes, multi writes and
//! reads, ACLs and auth, one-shot and persistent watches, session close, containers and
//! TTL nodes, getEphemerals, getAllChildrenNumber, whoAmI) run on real ZooKeeper 3.8
//! and on Concord; the transcripts (errors by code, zxids and times only by their
//! relations) must be equal line for line.
//!
//! The cross-dialect tests at the end run on Concord only (real ZooKeeper has no etcd
//! API): a znode is the etcd key equal to its path, etcd writes show in ZooKeeper reads
//! and fire ZooKeeper watches, ZooKeeper writes fire etcd watches, and ZooKeeper's
//! version is etcd's version − 1.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::connect;
use concord_compat_tests::streams::{EventView, KvView, collect_events};
use concord_compat_tests::zookeeper::{ZkBackend, ZkServer, compare_with_zookeeper, zk_backends};
use etcd_client::{GetOptions, WatchOptions};
use zookeeper_client as zk;

/// The longest any single ZooKeeper request or expected event may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for a container or TTL node to be reaped, or a closed
/// session's ephemerals to vanish.
const REAP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a test listens for an event that must not come.
const QUIET: Duration = Duration::from_millis(500);

const OPEN: zk::Acls<'static> = zk::Acls::anyone_all();

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(OPEN)
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(OPEN)
}

async fn connect_zk(endpoint: &str) -> Result<zk::Client> {
    tokio::time::timeout(
        STEP_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_connection_timeout(Duration::from_secs(5))
            .connect(endpoint),
    )
    .await
    .with_context(|| format!("ZooKeeper connect to {endpoint} timed out"))?
    .with_context(|| format!("cannot connect to ZooKeeper at {endpoint}"))
}

/// Awaits one client call, bounded by [`STEP_TIMEOUT`].
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, call)
        .await
        .with_context(|| format!("{what}: no answer within {STEP_TIMEOUT:?}"))
}

/// Awaits one client call that must succeed, bounded by [`STEP_TIMEOUT`].
async fn must<T, E>(what: &str, call: impl Future<Output = std::result::Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    bounded(what, call)
        .await?
        .with_context(|| format!("{what} failed"))
}

fn rel(a: i64, b: i64) -> &'static str {
    match a.cmp(&b) {
        std::cmp::Ordering::Less => "<",
        std::cmp::Ordering::Equal => "==",
        std::cmp::Ordering::Greater => ">",
    }
}

/// A Stat by its relations: versions and counts as they are, zxids and times compared.
fn stat(s: &zk::Stat) -> String {
    format!(
        "version={} cversion={} aversion={} numChildren={} dataLength={} czxid{}mzxid \
         pzxid{}czxid pzxid{}mzxid ctime>0={} mtime{}ctime owner={}",
        s.version,
        s.cversion,
        s.aversion,
        s.num_children,
        s.data_length,
        rel(s.czxid, s.mzxid),
        rel(s.pzxid, s.czxid),
        rel(s.pzxid, s.mzxid),
        s.ctime > 0,
        if s.mtime >= s.ctime { ">=" } else { "<" },
        if s.ephemeral_owner == 0 {
            "0"
        } else {
            "session"
        },
    )
}

fn err<T: Debug>(result: &std::result::Result<T, impl Debug>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{e:?}"),
    }
}

fn event(e: &zk::WatchedEvent) -> String {
    format!("{:?} {}", e.event_type, e.path)
}

#[derive(Default)]
struct Transcript(String);

impl Transcript {
    fn line(&mut self, text: impl AsRef<str>) {
        self.0.push_str(text.as_ref());
        self.0.push('\n');
    }
}

async fn crud(_endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== crud");
    let (root, _) = must("create /d", zk.create("/d", b"root", &persistent())).await?;
    t.line(format!("create /d: {}", stat(&root)));
    let created = bounded("create /d/a", zk.create("/d/a", b"one", &persistent())).await?;
    t.line(format!("create /d/a: {}", err(&created)));
    let (a0, _) = created?;
    t.line(format!("a.czxid{}d.czxid", rel(a0.czxid, root.czxid)));
    let (data, s) = must("get", zk.get_data("/d/a")).await?;
    t.line(format!(
        "get /d/a: {:?} {}",
        String::from_utf8_lossy(&data),
        stat(&s)
    ));
    let s1 = must("set", zk.set_data("/d/a", b"two", None)).await?;
    t.line(format!("set /d/a: {}", stat(&s1)));
    t.line(format!("set.mzxid{}create.mzxid", rel(s1.mzxid, a0.mzxid)));
    let r = bounded("set v", zk.set_data("/d/a", b"three", Some(1))).await?;
    t.line(format!(
        "set /d/a version=1: {}",
        r.as_ref().map_or_else(|e| format!("{e:?}"), stat)
    ));
    let r = bounded("set v", zk.set_data("/d/a", b"four", Some(1))).await?;
    t.line(format!("set /d/a version=1 again: {}", err(&r)));
    let r = bounded("set", zk.set_data("/d/missing", b"x", None)).await?;
    t.line(format!("set /d/missing: {}", err(&r)));
    let r = bounded("get", zk.get_data("/d/missing")).await?;
    t.line(format!("get /d/missing: {}", err(&r)));
    let r = must("exists", zk.check_stat("/d/missing")).await?;
    t.line(format!("exists /d/missing: {}", r.is_none()));
    let r = bounded("create dup", zk.create("/d/a", b"", &persistent())).await?;
    t.line(format!("create /d/a again: {}", err(&r)));
    let r = bounded("create orphan", zk.create("/d/x/y", b"", &persistent())).await?;
    t.line(format!("create /d/x/y: {}", err(&r)));
    let r = bounded("create under ephemeral", async {
        zk.create("/d/e", b"", &ephemeral()).await?;
        zk.create("/d/e/c", b"", &persistent()).await
    })
    .await?;
    t.line(format!("create child of ephemeral: {}", err(&r)));
    let (s, _) = must("create c1", zk.create("/d/a/c1", b"1", &persistent())).await?;
    let (c2, _) = must("create c2", zk.create("/d/a/c2", b"", &persistent())).await?;
    t.line(format!("create /d/a/c1: {}", stat(&s)));
    let (children, parent) = must("children", zk.get_children("/d/a")).await?;
    let mut children = children;
    children.sort();
    t.line(format!("children /d/a: {children:?} {}", stat(&parent)));
    t.line(format!("a.pzxid{}c2.czxid", rel(parent.pzxid, c2.czxid)));
    let (data, s) = must("get empty", zk.get_data("/d/a/c2")).await?;
    t.line(format!("get /d/a/c2: {} bytes {}", data.len(), stat(&s)));
    let r = bounded("delete", zk.delete("/d/a", None)).await?;
    t.line(format!("delete /d/a: {}", err(&r)));
    let r = bounded("delete v", zk.delete("/d/a/c1", Some(3))).await?;
    t.line(format!("delete /d/a/c1 version=3: {}", err(&r)));
    let r = bounded("delete v", zk.delete("/d/a/c1", Some(0))).await?;
    t.line(format!("delete /d/a/c1 version=0: {}", err(&r)));
    let r = bounded("delete", zk.delete("/d/a/c1", None)).await?;
    t.line(format!("delete /d/a/c1 again: {}", err(&r)));
    let s = must("exists", zk.check_stat("/d/a")).await?;
    t.line(format!(
        "exists /d/a: {}",
        s.as_ref().map_or_else(|| "none".to_string(), stat)
    ));
    let r = bounded("delete root", zk.delete("/", None)).await?;
    t.line(format!("delete /: {}", err(&r)));
    let r = bounded("sync", zk.sync("/d")).await?;
    t.line(format!("sync /d: {}", err(&r)));
    let big = vec![b'z'; 500_000];
    let r = bounded("create big", zk.create("/d/big", &big, &persistent())).await?;
    t.line(format!("create 500000 bytes: {}", err(&r)));
    let r = bounded("get big", zk.get_data("/d/big")).await?;
    t.line(format!(
        "get 500000 bytes: {}",
        r.map_or_else(
            |e| format!("{e:?}"),
            |(d, s)| format!("{} {}", d.len(), s.data_length)
        )
    ));
    Ok(())
}

async fn sequential(_endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== sequential");
    must("create /s", zk.create("/s", b"", &persistent())).await?;
    let seq = zk::CreateMode::PersistentSequential.with_acls(OPEN);
    let eseq = zk::CreateMode::EphemeralSequential.with_acls(OPEN);
    for (path, options) in [
        ("/s/n-", &seq),
        ("/s/n-", &seq),
        ("/s/e-", &eseq),
        ("/s/", &seq),
    ] {
        let (s, n) = must("create seq", zk.create(path, b"", options)).await?;
        t.line(format!(
            "create {path} sequential: {n} owner={}",
            if s.ephemeral_owner == 0 {
                "0"
            } else {
                "session"
            }
        ));
    }
    let mut children = must("children", zk.list_children("/s")).await?;
    children.sort();
    t.line(format!("children /s: {children:?}"));
    let r = bounded("ephemerals", zk.list_ephemerals("/")).await?;
    t.line(format!(
        "getEphemerals /: {:?}",
        r.map(|mut v| {
            v.sort();
            v
        })
    ));
    let r = bounded("ephemerals", zk.list_ephemerals("/s")).await?;
    t.line(format!(
        "getEphemerals /s: {:?}",
        r.map(|mut v| {
            v.sort();
            v
        })
    ));
    let r = bounded("descendants", zk.count_descendants_number("/s")).await?;
    t.line(format!("getAllChildrenNumber /s: {r:?}"));
    let r = bounded("descendants", zk.count_descendants_number("/missing")).await?;
    t.line(format!("getAllChildrenNumber /missing: {}", err(&r)));
    Ok(())
}

async fn multi(_endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== multi");
    let mut w = zk.new_multi_writer();
    w.add_create("/m", b"m", &persistent())?;
    w.add_create("/m/a", b"a", &persistent())?;
    w.add_set_data("/m/a", b"a2", Some(0))?;
    w.add_check_version("/m/a", 1)?;
    w.add_create(
        "/m/b",
        b"",
        &zk::CreateMode::PersistentSequential.with_acls(OPEN),
    )?;
    w.add_delete("/m/a", Some(1))?;
    let r = bounded("multi", w.commit()).await?;
    match &r {
        Ok(results) => {
            for result in results {
                t.line(format!(
                    "  {}",
                    match result {
                        zk::MultiWriteResult::Check => "check".to_string(),
                        zk::MultiWriteResult::Delete => "delete".to_string(),
                        zk::MultiWriteResult::Create { path, stat: s } =>
                            format!("create {path} {}", stat(s)),
                        zk::MultiWriteResult::SetData { stat: s } => format!("set {}", stat(s)),
                        other => format!("{other:?}"),
                    }
                ));
            }
        }
        Err(e) => t.line(format!("multi ok: {e:?}")),
    }
    let mut w = zk.new_multi_writer();
    w.add_create("/m/c", b"", &persistent())?;
    w.add_set_data("/m/missing", b"", None)?;
    w.add_create("/m/d", b"", &persistent())?;
    let r = bounded("multi", w.commit()).await?;
    t.line(format!("multi failing at 1: {}", err(&r)));
    let r = must("exists", zk.check_stat("/m/c")).await?;
    t.line(format!("exists /m/c after failed multi: {}", r.is_some()));
    let mut w = zk.new_multi_writer();
    w.add_check_version("/m", 7)?;
    let r = bounded("multi", w.commit()).await?;
    t.line(format!("multi failing check: {}", err(&r)));
    let mut w = zk.new_multi_writer();
    w.add_delete("/m", None)?;
    let r = bounded("multi", w.commit()).await?;
    t.line(format!("multi delete not empty: {}", err(&r)));
    let w = zk.new_multi_writer();
    let mut w = w;
    let r = bounded("multi", w.commit()).await?;
    t.line(format!("empty multi: {}", err(&r)));

    let mut reader = zk.new_multi_reader();
    reader.add_get_data("/m")?;
    reader.add_get_children("/m")?;
    reader.add_get_data("/m/missing")?;
    reader.add_get_children("/missing")?;
    let r = must("multi read", reader.commit()).await?;
    for result in r {
        t.line(format!(
            "  read {}",
            match result {
                zk::MultiReadResult::Data { data, stat: s } =>
                    format!("data {:?} {}", String::from_utf8_lossy(&data), stat(&s)),
                zk::MultiReadResult::Children { mut children } => {
                    children.sort();
                    format!("children {children:?}")
                }
                zk::MultiReadResult::Error { err } => format!("error {err:?}"),
                other => format!("{other:?}"),
            }
        ));
    }
    Ok(())
}

async fn acls(endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== acls");
    let r = bounded("whoami", zk.list_auth_users()).await?;
    t.line(format!(
        "whoAmI: {:?}",
        r.map(|users| users
            .iter()
            .map(|u| format!("{}:{}", u.scheme(), u.user()))
            .collect::<Vec<_>>())
    ));
    let r = bounded(
        "creator acl",
        zk.create(
            "/acl",
            b"",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all()),
        ),
    )
    .await?;
    t.line(format!("create creator_all without auth: {}", err(&r)));
    let connected = tokio::time::timeout(
        STEP_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_auth("digest", b"user:pw")
            .connect(endpoint),
    )
    .await;
    t.line(format!(
        "connect with digest auth: {}",
        match &connected {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => format!("{e:?}"),
            Err(_) => "no answer".to_string(),
        }
    ));
    let authed = match connected {
        Ok(Ok(client)) => client,
        // Go on with addAuth after the handshake, so that the rest still compares.
        _ => {
            let client = connect_zk(endpoint).await?;
            must("addAuth", client.auth("digest", b"user:pw")).await?;
            client
        }
    };
    let r = bounded("whoami", authed.list_auth_users()).await?;
    t.line(format!(
        "whoAmI with digest: {:?}",
        r.map(|users| {
            let mut v: Vec<_> = users
                .iter()
                .map(|u| format!("{}:{}", u.scheme(), u.user()))
                .collect();
            v.sort();
            v
        })
    ));
    let r = bounded(
        "creator acl",
        authed.create(
            "/acl",
            b"secret",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all()),
        ),
    )
    .await?;
    t.line(format!("create creator_all with auth: {}", err(&r)));
    let (acl, s) = must("get acl", authed.get_acl("/acl")).await?;
    t.line(format!(
        "getACL /acl: {:?} aversion={}",
        acl.iter()
            .map(|a| format!("{}:{}:{}", a.scheme(), a.id(), a.permission()))
            .collect::<Vec<_>>(),
        s.aversion
    ));
    let r = bounded("get", zk.get_data("/acl")).await?;
    t.line(format!("unauthenticated get: {}", err(&r)));
    let r = bounded("getacl", zk.get_acl("/acl")).await?;
    t.line(format!("unauthenticated getACL: {}", err(&r)));
    let r = must("exists", zk.check_stat("/acl")).await?;
    t.line(format!("unauthenticated exists: {}", r.is_some()));
    let r = bounded("auth", zk.auth("digest", b"user:pw")).await?;
    t.line(format!("addAuth: {}", err(&r)));
    let r = bounded("get", zk.get_data("/acl")).await?;
    t.line(format!(
        "get after addAuth: {}",
        r.map_or_else(
            |e| format!("{e:?}"),
            |(d, _)| String::from_utf8_lossy(&d).into_owned()
        )
    ));
    let read_only = [zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())];
    let open_acl = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::anyone())];
    let r = bounded("setacl", zk.set_acl("/acl", &read_only, Some(0))).await?;
    t.line(format!(
        "setACL version=0: {}",
        r.as_ref().map_or_else(|e| format!("{e:?}"), stat)
    ));
    let r = bounded("setacl", zk.set_acl("/acl", &open_acl, Some(0))).await?;
    t.line(format!("setACL version=0 again: {}", err(&r)));
    let r = bounded("set", zk.set_data("/acl", b"x", None)).await?;
    t.line(format!("set on read-only: {}", err(&r)));
    let r = bounded("setacl", zk.set_acl("/acl", &open_acl, None)).await?;
    t.line(format!("setACL without ADMIN: {}", err(&r)));
    let bogus = [zk::Acl::new(
        zk::Permission::ALL,
        zk::AuthId::new("bogus", "x"),
    )];
    let r = bounded(
        "bad acl",
        zk.create(
            "/bad",
            b"",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&bogus)),
        ),
    )
    .await?;
    t.line(format!("create with unknown scheme: {}", err(&r)));
    let r = bounded("bad auth", zk.auth("bogus", b"x")).await?;
    t.line(format!("addAuth unknown scheme: {}", err(&r)));
    drop(authed);
    Ok(())
}

async fn watches(endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== watches");
    let other = connect_zk(endpoint).await?;
    must("create /w", zk.create("/w", b"0", &persistent())).await?;
    let (_, _, watcher) = must("watch data", zk.get_and_watch_data("/w")).await?;
    must("set", other.set_data("/w", b"1", None)).await?;
    let e = bounded("data event", watcher.changed()).await?;
    t.line(format!("data watch: {}", event(&e)));
    let (_, watcher) = must("watch exists", zk.check_and_watch_stat("/w/new")).await?;
    must("create", other.create("/w/new", b"", &persistent())).await?;
    let e = bounded("exists event", watcher.changed()).await?;
    t.line(format!("exists watch: {}", event(&e)));
    let (_, watcher) = must("watch children", zk.list_and_watch_children("/w")).await?;
    must("create", other.create("/w/new2", b"", &persistent())).await?;
    let e = bounded("child event", watcher.changed()).await?;
    t.line(format!("child watch: {}", event(&e)));
    let (_, _, watcher) = must("watch data", zk.get_and_watch_data("/w/new")).await?;
    must("delete", other.delete("/w/new", None)).await?;
    let e = bounded("delete event", watcher.changed()).await?;
    t.line(format!("data watch on delete: {}", event(&e)));

    let mut recursive = bounded(
        "addWatch",
        zk.watch("/w", zk::AddWatchMode::PersistentRecursive),
    )
    .await??;
    // One session has one watch mode per path (a second addWatch replaces the first),
    // so the plain persistent watch is another session's.
    let third = connect_zk(endpoint).await?;
    let mut plain = must("addWatch", third.watch("/w", zk::AddWatchMode::Persistent)).await?;
    must("create", other.create("/w/r", b"", &persistent())).await?;
    must("set", other.set_data("/w/r", b"1", None)).await?;
    must("create", other.create("/w/r/deep", b"", &persistent())).await?;
    must("set", other.set_data("/w", b"2", None)).await?;
    must("delete", other.delete("/w/r/deep", None)).await?;
    // Every event until a quiet moment (at most 10 of each), so that a missing or an
    // extra one shows in the transcript.
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(2), recursive.changed()).await {
            Ok(e) => t.line(format!("persistent recursive: {}", event(&e))),
            Err(_) => break,
        }
    }
    for _ in 0..10 {
        match tokio::time::timeout(QUIET, plain.changed()).await {
            Ok(e) => t.line(format!("persistent: {}", event(&e))),
            Err(_) => break,
        }
    }
    drop(third);
    drop(other);
    Ok(())
}

async fn sessions(endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== sessions");
    must("create /sess", zk.create("/sess", b"", &persistent())).await?;
    let owner = connect_zk(endpoint).await?;
    let (s, _) = must("ephemeral", owner.create("/sess/e", b"", &ephemeral())).await?;
    t.line(format!(
        "ephemeral owner is its session: {}",
        s.ephemeral_owner == owner.session_id().0
    ));
    t.line(format!(
        "session timeout negotiated: {:?}",
        owner.session_timeout()
    ));
    let (_, _, watcher) = must("watch", zk.get_and_watch_data("/sess/e")).await?;
    drop(owner); // closes the session
    let e = tokio::time::timeout(REAP_TIMEOUT, watcher.changed()).await;
    t.line(format!(
        "ephemeral after close: {}",
        e.as_ref().map_or_else(|_| "no event".to_string(), event)
    ));
    let short = tokio::time::timeout(
        STEP_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_millis(100))
            .connect(endpoint),
    )
    .await
    .context("connect timed out")??;
    t.line(format!(
        "session timeout 100ms negotiated to: {:?}",
        short.session_timeout()
    ));
    let long = tokio::time::timeout(
        STEP_TIMEOUT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(3600))
            .connect(endpoint),
    )
    .await
    .context("connect timed out")??;
    t.line(format!(
        "session timeout 3600s negotiated to: {:?}",
        long.session_timeout()
    ));
    Ok(())
}

async fn containers(_endpoint: &str, zk: &zk::Client, t: &mut Transcript) -> Result<()> {
    t.line("== containers and ttl");
    let container = zk::CreateMode::Container.with_acls(OPEN);
    let (s, _) = must("container", zk.create("/ctr", b"", &container)).await?;
    t.line(format!("create container: {}", stat(&s)));
    must("child", zk.create("/ctr/c", b"", &persistent())).await?;
    must("delete child", zk.delete("/ctr/c", None)).await?;
    let gone = wait_gone(zk, "/ctr").await?;
    t.line(format!(
        "container reaped after its last child went: {gone}"
    ));
    let ttl = zk::CreateMode::Persistent
        .with_acls(OPEN)
        .with_ttl(Duration::from_millis(500));
    let (s, _) = must("ttl", zk.create("/ttl", b"t", &ttl)).await?;
    t.line(format!("create ttl node: {}", stat(&s)));
    let gone = wait_gone(zk, "/ttl").await?;
    t.line(format!("ttl node reaped: {gone}"));
    let seq_ttl = zk::CreateMode::PersistentSequential
        .with_acls(OPEN)
        .with_ttl(Duration::from_secs(600));
    let r = bounded("ttl seq", zk.create("/ttls-", b"", &seq_ttl)).await?;
    t.line(format!(
        "create sequential ttl node: {}",
        r.as_ref()
            .map_or_else(|e| format!("{e:?}"), |(_, n)| n.to_string())
    ));
    Ok(())
}

async fn wait_gone(zk: &zk::Client, path: &str) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + REAP_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if must("exists", zk.check_stat(path)).await?.is_none() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}

/// Runs one section on a client of its own; an error ends the section with a line
/// saying so (which makes the transcripts differ) and the next section goes on.
async fn section<F>(endpoint: &str, t: &mut Transcript, name: &str, run: F)
where
    F: AsyncFnOnce(&str, &zk::Client, &mut Transcript) -> Result<()>,
{
    let outcome = async {
        let zk = connect_zk(endpoint).await?;
        run(endpoint, &zk, t).await
    }
    .await;
    if let Err(e) = outcome {
        t.line(format!("!! section {name} aborted: {e:#}"));
    }
}

async fn run_session(server: &ZkServer) -> Result<String> {
    let endpoint = server.zk_endpoint();
    let mut t = Transcript::default();
    section(&endpoint, &mut t, "crud", crud).await;
    section(&endpoint, &mut t, "sequential", sequential).await;
    section(&endpoint, &mut t, "multi", multi).await;
    section(&endpoint, &mut t, "acls", acls).await;
    section(&endpoint, &mut t, "watches", watches).await;
    section(&endpoint, &mut t, "sessions", sessions).await;
    section(&endpoint, &mut t, "containers", containers).await;
    let zk = connect_zk(&endpoint).await?;
    let mut top = must("children /", zk.list_children("/")).await?;
    top.sort();
    t.line(format!("children /: {top:?}"));
    Ok(t.0)
}

#[tokio::test]
async fn zookeeper_client_session_matches_real_zookeeper() -> Result<()> {
    let expected = compare_with_zookeeper("zookeeper-client", run_session).await?;
    println!("{expected}");
    ensure!(
        expected.contains("create /d/a again: NodeExists")
            && expected.contains("persistent recursive: NodeCreated /w/r/deep"),
        "the reference transcript lacks expected steps:\n{expected}"
    );
    Ok(())
}

// ------------------------------------------------------------ cross-dialect (Concord)

/// Starts Concord for a cross-dialect test, or `None` when Concord is not selected.
async fn concord() -> Result<Option<(ZkServer, zk::Client, etcd_client::Client)>> {
    if !zk_backends()?.contains(&ZkBackend::Concord) {
        println!("Concord not selected: cross-dialect test skipped");
        return Ok(None);
    }
    let server = ZkServer::start(ZkBackend::Concord).await?;
    let zk = connect_zk(&server.zk_endpoint()).await?;
    let etcd_endpoint = server
        .etcd_endpoint()
        .context("Concord has an etcd endpoint")?;
    let etcd = connect(&etcd_endpoint).await?;
    Ok(Some((server, zk, etcd)))
}

async fn etcd_value(
    etcd: &mut etcd_client::Client,
    key: &str,
) -> Result<Option<(String, i64, i64)>> {
    let resp = etcd.get(key, None).await?;
    Ok(resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.version(),
            kv.lease(),
        )
    }))
}

#[tokio::test]
async fn cross_znode_is_an_etcd_key() -> Result<()> {
    let Some((mut server, zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    must("create", zk.create("/cross", b"", &persistent())).await?;
    let (s, _) = must("create", zk.create("/cross/a", b"hello", &persistent())).await?;
    let got = etcd_value(&mut etcd, "/cross/a").await?;
    ensure!(
        got == Some(("hello".into(), i64::from(s.version) + 1, 0)),
        "etcd sees /cross/a as {got:?}, expected value hello, version {} (ZooKeeper's + 1), no lease",
        s.version + 1
    );
    let s = must("set", zk.set_data("/cross/a", b"again", None)).await?;
    let got = etcd_value(&mut etcd, "/cross/a").await?;
    ensure!(
        got == Some(("again".into(), i64::from(s.version) + 1, 0)),
        "after setData etcd sees {got:?}, ZooKeeper version {}",
        s.version
    );
    let prefix = etcd
        .get("/cross/", Some(GetOptions::new().with_prefix()))
        .await?;
    let keys: Vec<String> = prefix
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    ensure!(keys == ["/cross/a"], "etcd keys under /cross/: {keys:?}");
    // An ephemeral is a key attached to the session's lease.
    let (s, _) = must("ephemeral", zk.create("/cross/e", b"", &ephemeral())).await?;
    let got = etcd_value(&mut etcd, "/cross/e").await?;
    ensure!(
        got.as_ref().map(|g| g.2) == Some(s.ephemeral_owner) && s.ephemeral_owner != 0,
        "the ephemeral's etcd lease {:?} is not its owner session {:#x}",
        got,
        s.ephemeral_owner
    );
    must("delete", zk.delete("/cross/a", None)).await?;
    ensure!(
        etcd_value(&mut etcd, "/cross/a").await?.is_none(),
        "a deleted znode is still an etcd key"
    );
    server.ensure_running()
}

#[tokio::test]
async fn cross_etcd_put_shows_in_zookeeper_and_fires_its_watches() -> Result<()> {
    let Some((mut server, zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    must("create", zk.create("/cross", b"", &persistent())).await?;
    let (_, child_watch) = must("watch children", zk.list_and_watch_children("/cross")).await?;
    let (_, exists_watch) = must("watch exists", zk.check_and_watch_stat("/cross/b")).await?;
    etcd.put("/cross/b", "from-etcd", None).await?;
    let e = bounded("child event", child_watch.changed()).await?;
    ensure!(
        e.event_type == zk::EventType::NodeChildrenChanged && e.path == "/cross",
        "child watch fired {}",
        event(&e)
    );
    let e = bounded("exists event", exists_watch.changed()).await?;
    ensure!(
        e.event_type == zk::EventType::NodeCreated && e.path == "/cross/b",
        "exists watch fired {}",
        event(&e)
    );
    let (data, s, data_watch) = must("get", zk.get_and_watch_data("/cross/b")).await?;
    ensure!(
        data == b"from-etcd" && s.version == 0 && s.num_children == 0,
        "getData /cross/b: {:?} {}",
        String::from_utf8_lossy(&data),
        stat(&s)
    );
    let children = must("children", zk.list_children("/cross")).await?;
    ensure!(children == ["b"], "getChildren /cross: {children:?}");
    let (_, parent) = must("get parent", zk.get_data("/cross")).await?;
    ensure!(
        parent.num_children == 1 && parent.cversion == 1,
        "parent after an etcd put of a child: {}",
        stat(&parent)
    );
    etcd.put("/cross/b", "changed", None).await?;
    let e = bounded("data event", data_watch.changed()).await?;
    ensure!(
        e.event_type == zk::EventType::NodeDataChanged && e.path == "/cross/b",
        "data watch fired {}",
        event(&e)
    );
    let (data, s, delete_watch) = must("get", zk.get_and_watch_data("/cross/b")).await?;
    let got = etcd_value(&mut etcd, "/cross/b").await?;
    ensure!(
        data == b"changed" && got.as_ref().map(|g| g.1) == Some(i64::from(s.version) + 1),
        "after the second put ZooKeeper sees {:?} version {}, etcd {got:?}",
        String::from_utf8_lossy(&data),
        s.version
    );
    etcd.delete("/cross/b", None).await?;
    let e = bounded("delete event", delete_watch.changed()).await?;
    ensure!(
        e.event_type == zk::EventType::NodeDeleted && e.path == "/cross/b",
        "data watch fired {} on an etcd delete",
        event(&e)
    );
    server.ensure_running()
}

#[tokio::test]
async fn cross_zookeeper_writes_fire_etcd_watches() -> Result<()> {
    let Some((mut server, zk, mut etcd)) = concord().await? else {
        return Ok(());
    };
    must("create", zk.create("/cross", b"", &persistent())).await?;
    must("create", zk.create("/cross/a", b"v0", &persistent())).await?;
    let (_watcher, mut stream) = etcd
        .watch("/cross/a", Some(WatchOptions::new().with_prev_key()))
        .await?;
    let s = must("set", zk.set_data("/cross/a", b"v1", None)).await?;
    must("delete", zk.delete("/cross/a", Some(s.version))).await?;
    let events = collect_events(&mut stream, 2).await?;
    let created = s.czxid;
    let expected_put = EventView::put(KvView::put(
        "/cross/a",
        "v1",
        created,
        s.mzxid,
        i64::from(s.version) + 1,
    ))
    .with_prev(KvView::put("/cross/a", "v0", created, created, 1));
    ensure!(
        events[0].event == expected_put,
        "etcd watch saw {:?} for a setData giving {}, expected {expected_put:?}",
        events[0].event,
        stat(&s)
    );
    let delete = &events[1].event;
    ensure!(
        delete.kind == "DELETE"
            && delete.kv.as_ref().map(|kv| kv.key.as_str()) == Some("/cross/a")
            && delete.prev_kv.as_ref().map(|kv| kv.value.as_str()) == Some("v1"),
        "etcd watch saw {delete:?} for a ZooKeeper delete"
    );
    server.ensure_running()
}
