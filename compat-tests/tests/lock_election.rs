//! Distributed locks and elections, both ways clients do them: `etcdctl lock` and
//! `etcdctl elect` (client-side recipes over KV, Watch and Lease) and the `etcd-client`
//! crate's Lock and Election clients (the server-side v3lock and v3election services).
//!
//! etcdctl 3.4's `elect` has no session-TTL flag (its session lease lasts 60 s), so the
//! "leader dies" case kills the leader's etcdctl with SIGKILL and then revokes its
//! session lease, which is what the lease's expiry would do 60 s later; `lock --ttl=2`
//! shows the real expiry path. Every scenario runs on real etcd and on Concord.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::background::Background;
use concord_compat_tests::check::expect_status;
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::{
    Client, GetOptions, LeaderKey, LockOptions, ProclaimOptions, ResignOptions, SortOrder,
    SortTarget,
};
use tonic::Code;

/// How long a holder or leader may take to print its line once it should have one.
const LINE: Duration = Duration::from_secs(10);
/// How long a waiter must stay silent while someone else holds the lock or leads.
const SILENCE: Duration = Duration::from_millis(1500);

/// The keys under `prefix`, oldest first, with their leases.
async fn contenders(c: &mut Client, prefix: &str) -> Result<Vec<(String, i64)>> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let resp = c.get(prefix, Some(options)).await?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
        .collect())
}

/// Polls until `n` contenders wait under `prefix` (bounded).
async fn wait_contenders(c: &mut Client, prefix: &str, n: usize) -> Result<Vec<(String, i64)>> {
    for _ in 0..100 {
        let found = contenders(c, prefix).await?;
        if found.len() == n {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = contenders(c, prefix).await?;
    ensure_eq!(found.len(), n, "contenders under {prefix}: {found:?}");
    Ok(found)
}

async fn etcdctl_lock_fifo(s: Session) -> Result<()> {
    let mut c = s.client;
    let mut a = Background::etcdctl(&s.endpoint, &["lock", "mylock"])?;
    let a_key = a.next_line(LINE).await?;
    ensure!(a_key.starts_with("mylock/"), "holder printed {a_key:?}");
    let mut b = Background::etcdctl(&s.endpoint, &["lock", "mylock"])?;
    wait_contenders(&mut c, "mylock/", 2).await?;
    let mut c3 = Background::etcdctl(&s.endpoint, &["lock", "mylock"])?;
    let waiting = wait_contenders(&mut c, "mylock/", 3).await?;
    ensure_eq!(waiting[0].0, a_key, "the holder's key is the oldest");
    b.expect_silence(SILENCE).await?;
    c3.expect_silence(Duration::from_millis(100)).await?;

    // SIGINT makes etcdctl unlock; the lock passes in arrival order.
    a.signal("INT").await?;
    ensure_eq!(a.wait_exit(LINE).await?, Some(0), "{}", a.stderr());
    let b_key = b.next_line(LINE).await?;
    ensure_eq!(b_key, waiting[1].0, "the second to arrive is next");
    c3.expect_silence(SILENCE).await?;
    b.signal("INT").await?;
    ensure_eq!(b.wait_exit(LINE).await?, Some(0), "{}", b.stderr());
    ensure_eq!(c3.next_line(LINE).await?, waiting[2].0);
    c3.signal("INT").await?;
    c3.wait_exit(LINE).await?;
    ensure_eq!(
        contenders(&mut c, "mylock/").await?.len(),
        0,
        "all unlocked"
    );
    Ok(())
}

#[tokio::test]
async fn etcdctl_lock_is_exclusive_and_fifo() -> Result<()> {
    on_each_backend(etcdctl_lock_fifo).await
}

async fn etcdctl_lock_expiry(s: Session) -> Result<()> {
    let mut c = s.client;
    let mut a = Background::etcdctl(&s.endpoint, &["lock", "--ttl=2", "exp"])?;
    let a_key = a.next_line(LINE).await?;
    let mut b = Background::etcdctl(&s.endpoint, &["lock", "--ttl=2", "exp"])?;
    let waiting = wait_contenders(&mut c, "exp/", 2).await?;
    ensure_eq!(waiting[0].0, a_key);
    // SIGKILL: no unlock; the holder's session lease (TTL 2 s) must expire.
    a.kill().await?;
    let b_key = b
        .next_line(LINE)
        .await
        .context("the lock never passed on")?;
    ensure_eq!(b_key, waiting[1].0);
    b.kill().await?;
    Ok(())
}

#[tokio::test]
async fn etcdctl_lock_passes_on_when_the_holder_s_lease_expires() -> Result<()> {
    on_each_backend(etcdctl_lock_expiry).await
}

async fn etcdctl_lock_command(s: Session) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    let log = log.to_str().context("temp path is not UTF-8")?;
    let script =
        format!("echo \"in $1\" >> {log}; sleep 0.5; echo \"out $1\" >> {log}; echo done $1");
    let mut runs = Vec::new();
    for name in ["one", "two", "three"] {
        runs.push(Background::etcdctl(
            &s.endpoint,
            &["lock", "cmdlock", "--", "sh", "-c", &script, "sh", name],
        )?);
    }
    for run in &mut runs {
        ensure_eq!(
            run.wait_exit(Duration::from_secs(20)).await?,
            Some(0),
            "{}",
            run.stderr()
        );
        let line = run.next_line(LINE).await?;
        ensure!(line.starts_with("done "), "{line:?}");
    }
    let text = std::fs::read_to_string(dir.path().join("log"))?;
    let lines: Vec<&str> = text.lines().collect();
    ensure_eq!(lines.len(), 6, "{text}");
    for pair in lines.chunks(2) {
        let (enter, leave) = (pair[0], pair[1]);
        ensure!(
            enter.starts_with("in ") && leave == enter.replacen("in ", "out ", 1),
            "critical sections overlap:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn etcdctl_lock_runs_commands_one_at_a_time() -> Result<()> {
    on_each_backend(etcdctl_lock_command).await
}

async fn etcdctl_elect(s: Session) -> Result<()> {
    let mut c = s.client;
    let mut a = Background::etcdctl(&s.endpoint, &["elect", "myelection", "alpha"])?;
    let lines = a.next_lines(2, LINE).await?;
    ensure!(lines[0].starts_with("myelection/"), "{lines:?}");
    ensure_eq!(lines[1], "alpha");
    let mut observer = Background::etcdctl(&s.endpoint, &["elect", "-l", "myelection"])?;
    ensure_eq!(
        observer.next_lines(2, LINE).await?,
        lines,
        "the observer sees the leader"
    );
    let mut b = Background::etcdctl(&s.endpoint, &["elect", "myelection", "beta"])?;
    // One at a time, so that the order of arrival is known.
    wait_contenders(&mut c, "myelection/", 2).await?;
    let mut g = Background::etcdctl(&s.endpoint, &["elect", "myelection", "gamma"])?;
    let waiting = wait_contenders(&mut c, "myelection/", 3).await?;
    b.expect_silence(SILENCE).await?;
    g.expect_silence(Duration::from_millis(100)).await?;

    // The leader dies without resigning; its session lease going away hands over.
    a.kill().await?;
    b.expect_silence(Duration::from_millis(500)).await?;
    c.lease_revoke(waiting[0].1).await?;
    let lines = match b.next_lines(2, LINE).await {
        Ok(lines) => lines,
        Err(e) => {
            let now = contenders(&mut c, "myelection/").await?;
            return Err(e.context(format!("contenders were {waiting:?}, now {now:?}")));
        }
    };
    ensure_eq!(lines, [waiting[1].0.clone(), "beta".to_string()]);
    ensure_eq!(observer.next_lines(2, LINE).await?, lines);

    // SIGINT makes etcdctl resign: the next in line leads.
    b.signal("INT").await?;
    ensure_eq!(b.wait_exit(LINE).await?, Some(0), "{}", b.stderr());
    let lines = g.next_lines(2, LINE).await?;
    ensure_eq!(lines, [waiting[2].0.clone(), "gamma".to_string()]);
    ensure_eq!(observer.next_lines(2, LINE).await?, lines);
    g.kill().await?;
    observer.kill().await?;
    Ok(())
}

#[tokio::test]
async fn etcdctl_elect_hands_over_when_the_leader_goes() -> Result<()> {
    on_each_backend(etcdctl_elect).await
}

async fn lock_client(s: Session) -> Result<()> {
    let mut c = s.client;
    let first = c.lease_grant(60, None).await?.id();
    let second = c.lease_grant(60, None).await?.id();
    let held = c
        .lock("svc", Some(LockOptions::new().with_lease(first)))
        .await?;
    let held_key = held.key().to_vec();
    ensure!(
        held_key.starts_with(b"svc/"),
        "{:?}",
        String::from_utf8_lossy(&held_key)
    );
    let kv = c.get(held_key.clone(), None).await?;
    ensure_eq!(
        kv.kvs().first().map(|kv| kv.lease()),
        Some(first),
        "the lock key has the lease"
    );

    let mut other = c.clone();
    let waiter = tokio::spawn(async move {
        other
            .lock("svc", Some(LockOptions::new().with_lease(second)))
            .await
    });
    tokio::time::sleep(SILENCE).await;
    ensure!(!waiter.is_finished(), "the second lock did not wait");
    c.unlock(held_key.clone()).await?;
    let next = tokio::time::timeout(LINE, waiter)
        .await
        .context("the second lock never got it")???;
    ensure!(next.key() > held_key.as_slice(), "a later key");
    ensure_eq!(
        c.get(held_key, None).await?.count(),
        0,
        "unlock deleted the key"
    );

    // A lock whose lease goes away is released.
    let mut other = c.clone();
    let third = c.lease_grant(60, None).await?.id();
    let waiter = tokio::spawn(async move {
        other
            .lock("svc", Some(LockOptions::new().with_lease(third)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(!waiter.is_finished());
    c.lease_revoke(second).await?;
    tokio::time::timeout(LINE, waiter)
        .await
        .context("revoking the holder's lease did not release the lock")???;
    // Locking with a lease that does not exist fails.
    expect_status(
        c.lock("svc2", Some(LockOptions::new().with_lease(0x5555)))
            .await,
        // v3lock passes the lease error on without a gRPC code.
        Code::Unknown,
        "etcdserver: requested lease not found",
    )?;
    Ok(())
}

#[tokio::test]
async fn lock_service_is_exclusive_and_released_by_unlock_or_revoke() -> Result<()> {
    on_each_backend(lock_client).await
}

async fn election_client(s: Session) -> Result<()> {
    let mut c = s.client;
    let lease1 = c.lease_grant(60, None).await?.id();
    let lease2 = c.lease_grant(60, None).await?.id();
    let status = expect_status_any(c.leader("vote").await)?;
    ensure_eq!(
        (status.code(), status.message()),
        (Code::Unknown, "election: no leader"),
        "no leader yet"
    );

    let won = c.campaign("vote", "v1", lease1).await?;
    let leader: LeaderKey = won.leader().context("no leader key")?.clone();
    ensure_eq!(leader.name(), b"vote");
    ensure!(leader.key().starts_with(b"vote/"), "{:?}", leader.key_str());
    ensure_eq!(leader.lease(), lease1);
    ensure!(leader.rev() > 1, "rev {}", leader.rev());
    let now = c.leader("vote").await?;
    ensure_eq!(now.kv().map(|kv| kv.value()), Some(&b"v1"[..]));
    ensure_eq!(now.kv().map(|kv| kv.key()), Some(leader.key()));

    let mut observe = c.observe("vote").await?;
    let seen = tokio::time::timeout(LINE, observe.message())
        .await
        .context("observe sent nothing")??
        .context("observe ended")?;
    ensure_eq!(seen.kv().map(|kv| kv.value()), Some(&b"v1"[..]));

    c.proclaim(
        "v2",
        Some(ProclaimOptions::new().with_leader(leader.clone())),
    )
    .await?;
    ensure_eq!(
        c.leader("vote").await?.kv().map(|kv| kv.value().to_vec()),
        Some(b"v2".to_vec())
    );
    let seen = tokio::time::timeout(LINE, observe.message())
        .await
        .context("observe missed the proclamation")??
        .context("observe ended")?;
    ensure_eq!(seen.kv().map(|kv| kv.value()), Some(&b"v2"[..]));

    // A proclamation by a key that is not the leader's is refused.
    let impostor = leader.clone().with_key("vote/ffff");
    let status = expect_status_any(
        c.proclaim("v9", Some(ProclaimOptions::new().with_leader(impostor)))
            .await,
    )?;
    ensure_eq!(
        (status.code(), status.message()),
        (Code::Unknown, "election: not leader")
    );

    let mut other = c.clone();
    let challenger = tokio::spawn(async move { other.campaign("vote", "v3", lease2).await });
    tokio::time::sleep(SILENCE).await;
    ensure!(
        !challenger.is_finished(),
        "a second campaign won while the leader was there"
    );
    c.resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await?;
    let won = tokio::time::timeout(LINE, challenger)
        .await
        .context("the challenger never won")???;
    ensure_eq!(won.leader().map(|l| l.lease()), Some(lease2));
    let seen = tokio::time::timeout(LINE, observe.message())
        .await
        .context("observe missed the new leader")??
        .context("observe ended")?;
    ensure_eq!(seen.kv().map(|kv| kv.value()), Some(&b"v3"[..]));
    ensure_eq!(
        c.leader("vote").await?.kv().map(|kv| kv.lease()),
        Some(lease2)
    );
    Ok(())
}

/// The gRPC status of a failed call, whatever its code.
fn expect_status_any<T: std::fmt::Debug>(
    result: Result<T, etcd_client::Error>,
) -> Result<tonic::Status> {
    concord_compat_tests::check::grpc_status(result)
}

#[tokio::test]
async fn election_service_campaign_observe_proclaim_resign() -> Result<()> {
    on_each_backend(election_client).await
}
