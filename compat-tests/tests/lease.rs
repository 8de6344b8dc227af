//! The Lease service through the `etcd-client` crate: grant (the TTL floor, chosen ids,
//! the duplicate-id and too-large-TTL errors), expiry of attached keys without
//! keep-alive, keep-alive keeping them, revoke deleting every attached key in one
//! revision, TimeToLive (with keys, and of an unknown lease), the lease list, and the
//! errors for unknown leases.
//!
//! Every scenario runs on a fresh real etcd and a fresh Concord (select with
//! `CONCORD_COMPAT_BACKENDS`). Expiry waits are bounded polls (at most
//! [`EXPIRY_BOUND`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use concord_compat_tests::check::{expect_status, revision};
use concord_compat_tests::streams::{
    EventView, KeepAliveAnswer, RawKeepAlive, collect_events, expect_no_response,
};
use concord_compat_tests::{Session, ensure_eq, on_each_backend};
use etcd_client::{Client, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use tonic::Code;

const NOT_FOUND: &str = "etcdserver: requested lease not found";
/// etcd's maximum lease TTL (`MaxLeaseTTL`), in seconds.
const MAX_TTL: i64 = 9_000_000_000;
/// The longest a key may outlive its lease's TTL before the test gives up.
const EXPIRY_BOUND: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

async fn exists(c: &mut Client, key: &str) -> Result<bool> {
    Ok(c.get(key, None).await?.count() == 1)
}

/// Polls until `key` is gone; returns how long that took. Fails after [`EXPIRY_BOUND`].
async fn wait_gone(c: &mut Client, key: &str) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < EXPIRY_BOUND {
        if !exists(c, key).await? {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("{key} still exists {EXPIRY_BOUND:?} after its lease should have expired")
}

async fn grant_ttls(s: Session) -> Result<()> {
    let mut c = s.client;
    for (asked, granted) in [(0, 2), (1, 2), (2, 2), (3, 3), (60, 60), (MAX_TTL, MAX_TTL)] {
        let resp = c.lease_grant(asked, None).await?;
        ensure_eq!(resp.ttl(), granted, "grant {asked}");
        ensure!(
            resp.id() > 0,
            "a server-chosen id is positive: {}",
            resp.id()
        );
        ensure_eq!(resp.error(), "");
        ensure_eq!(
            revision(resp.header())?,
            1,
            "a grant does not bump the revision"
        );
    }
    expect_status(
        c.lease_grant(MAX_TTL + 1, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    )?;
    Ok(())
}

#[tokio::test]
async fn grant_floors_the_ttl_and_refuses_too_large_ones() -> Result<()> {
    on_each_backend(grant_ttls).await
}

async fn chosen_ids(s: Session) -> Result<()> {
    let mut c = s.client;
    let resp = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await?;
    ensure_eq!((resp.id(), resp.ttl()), (0x1234, 30));
    expect_status(
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    )?;
    let ttl = c.lease_time_to_live(0x1234, None).await?;
    ensure_eq!(ttl.granted_ttl(), 30, "the first grant stands");
    // Id 0 means "choose one for me".
    let resp = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0)))
        .await?;
    ensure!(resp.id() > 0 && resp.id() != 0x1234, "id {}", resp.id());
    Ok(())
}

#[tokio::test]
async fn grant_with_a_chosen_id_and_the_duplicate_error() -> Result<()> {
    on_each_backend(chosen_ids).await
}

async fn expiry(s: Session) -> Result<()> {
    let mut c = s.client;
    let lease = c.lease_grant(2, None).await?.id();
    c.put("short", "lived", Some(PutOptions::new().with_lease(lease)))
        .await?;
    c.put("kept", "forever", None).await?;
    let kv = c.get("short", None).await?.take_kvs();
    ensure_eq!(kv.first().map(|kv| kv.lease()), Some(lease));
    let rev = revision(c.get("short", None).await?.header())?;
    let (_watcher, mut stream) = c
        .watch(
            "short",
            Some(WatchOptions::new().with_start_revision(rev + 1)),
        )
        .await?;
    let took = wait_gone(&mut c, "short").await?;
    ensure!(
        took >= Duration::from_millis(1000),
        "the key went after {took:?}, before its 2 s TTL"
    );
    let got = collect_events(&mut stream, 1).await?;
    ensure_eq!(
        got[0].event,
        EventView::delete("short", rev + 1),
        "expiry is a delete event"
    );
    ensure!(exists(&mut c, "kept").await?, "a key without lease stays");
    let ttl = c.lease_time_to_live(lease, None).await?;
    ensure_eq!(
        (ttl.id(), ttl.ttl()),
        (lease, -1),
        "an expired lease is gone"
    );
    expect_status(c.lease_revoke(lease).await, Code::NotFound, NOT_FOUND)?;
    Ok(())
}

#[tokio::test]
async fn keys_vanish_when_their_lease_expires() -> Result<()> {
    on_each_backend(expiry).await
}

async fn keep_alive(s: Session) -> Result<()> {
    let mut c = s.client;
    let lease = c.lease_grant(2, None).await?.id();
    c.put("kept", "alive", Some(PutOptions::new().with_lease(lease)))
        .await?;
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await?;
    ensure_eq!(keeper.id(), lease);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(5) && rounds < 100 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        keeper.keep_alive().await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .context("no keep-alive answer")??
            .context("the keep-alive stream ended")?;
        ensure_eq!((answer.id(), answer.ttl()), (lease, 2), "round {rounds}");
        ensure!(
            exists(&mut c, "kept").await?,
            "lost the key after {rounds} rounds"
        );
        rounds += 1;
    }
    let ttl = c.lease_time_to_live(lease, None).await?;
    ensure!(
        (1..=2).contains(&ttl.ttl()),
        "remaining TTL {} just after a keep-alive",
        ttl.ttl()
    );
    drop((keeper, answers));
    wait_gone(&mut c, "kept").await?;
    Ok(())
}

#[tokio::test]
async fn keep_alive_keeps_keys_past_their_ttl() -> Result<()> {
    on_each_backend(keep_alive).await
}

async fn revoke(s: Session) -> Result<()> {
    let mut c = s.client;
    let lease = c.lease_grant(60, None).await?.id();
    for key in ["r/a", "r/b", "r/c"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(lease)))
            .await?;
    }
    let last = c.put("r/free", "v", None).await?;
    let before = revision(last.header())?;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(before + 1);
    let (_watcher, mut stream) = c.watch("r/", Some(options)).await?;
    let resp = c.lease_revoke(lease).await?;
    ensure_eq!(
        revision(resp.header())?,
        before + 1,
        "a revoke deletes every attached key in one revision"
    );
    let got = collect_events(&mut stream, 3).await?;
    let mut events: Vec<EventView> = got.iter().map(|d| d.event.clone()).collect();
    events.sort_by(|a, b| {
        a.kv.as_ref()
            .map(|kv| &kv.key)
            .cmp(&b.kv.as_ref().map(|kv| &kv.key))
    });
    ensure_eq!(
        events,
        vec![
            EventView::delete("r/a", before + 1),
            EventView::delete("r/b", before + 1),
            EventView::delete("r/c", before + 1),
        ]
    );
    for d in &got {
        ensure_eq!(d.header_revision, before + 1, "{d:?}");
    }
    expect_no_response(&mut stream, Duration::from_millis(500)).await?;
    let left = c
        .get("r/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    ensure_eq!(left.count(), 1, "only the key without lease is left");
    // A revoke of a lease with no keys does not bump the revision.
    let empty = c.lease_grant(60, None).await?.id();
    let resp = c.lease_revoke(empty).await?;
    ensure_eq!(revision(resp.header())?, before + 1);
    Ok(())
}

#[tokio::test]
async fn revoke_deletes_all_attached_keys_in_one_revision() -> Result<()> {
    on_each_backend(revoke).await
}

async fn unknown_keep_alive(s: Session) -> Result<()> {
    let mut c = s.client;
    let lease = c.lease_grant(30, None).await?.id();
    let (mut raw, answer) = RawKeepAlive::open(&s.endpoint, 0x4242).await?;
    ensure_eq!(
        (answer.id, answer.ttl, answer.has_header),
        (0x4242, 0, true),
        "an unknown lease answers TTL 0, not an error: {answer:?}"
    );
    let answer: KeepAliveAnswer = raw.keep_alive(lease).await?;
    ensure_eq!(
        (answer.id, answer.ttl),
        (lease, 30),
        "the stream still works: {answer:?}"
    );
    ensure_eq!(answer.revision, 1);
    // etcd-client's keep_alive turns the TTL 0 answer into an error.
    let result = c.lease_keep_alive(0x4242).await;
    ensure!(result.is_err(), "etcd-client accepted an unknown lease");
    Ok(())
}

#[tokio::test]
async fn keep_alive_of_an_unknown_lease_answers_ttl_zero() -> Result<()> {
    on_each_backend(unknown_keep_alive).await
}

async fn time_to_live(s: Session) -> Result<()> {
    let mut c = s.client;
    let unknown = c.lease_time_to_live(0x77, None).await?;
    ensure_eq!(
        (
            unknown.id(),
            unknown.ttl(),
            unknown.granted_ttl(),
            unknown.keys().len()
        ),
        (0x77, -1, 0, 0),
        "an unknown lease answers TTL -1"
    );
    let unknown = c
        .lease_time_to_live(0x77, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    ensure_eq!(unknown.ttl(), -1);

    let lease = c.lease_grant(100, None).await?.id();
    for key in ["t/b", "t/a", "t/c"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(lease)))
            .await?;
    }
    let plain = c.lease_time_to_live(lease, None).await?;
    ensure_eq!((plain.id(), plain.granted_ttl()), (lease, 100));
    ensure!((98..=100).contains(&plain.ttl()), "ttl {}", plain.ttl());
    ensure_eq!(plain.keys().len(), 0, "keys only when asked for");
    let with_keys = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    let mut keys: Vec<String> = with_keys
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    ensure_eq!(keys, ["t/a", "t/b", "t/c"]);
    // Moving a key to no lease detaches it.
    c.put("t/b", "w", None).await?;
    let with_keys = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    ensure_eq!(with_keys.keys().len(), 2);
    // Deleting a key detaches it too.
    c.delete("t/a", None).await?;
    let with_keys = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    ensure_eq!(with_keys.keys(), [b"t/c".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn time_to_live_with_keys_and_of_an_unknown_lease() -> Result<()> {
    on_each_backend(time_to_live).await
}

async fn list(s: Session) -> Result<()> {
    let mut c = s.client;
    ensure_eq!(c.leases().await?.leases().len(), 0);
    let mut ids = Vec::new();
    for ttl in [10, 20, 30] {
        ids.push(c.lease_grant(ttl, None).await?.id());
    }
    ids.push(
        c.lease_grant(40, Some(LeaseGrantOptions::new().with_id(7)))
            .await?
            .id(),
    );
    let resp = c.leases().await?;
    ensure_eq!(revision(resp.header())?, 1);
    let mut listed: Vec<i64> = resp.leases().iter().map(|l| l.id()).collect();
    listed.sort_unstable();
    ids.sort_unstable();
    ensure_eq!(listed, ids, "the list holds every lease (in no set order)");
    c.lease_revoke(7).await?;
    ensure_eq!(c.leases().await?.leases().len(), 3);
    Ok(())
}

#[tokio::test]
async fn leases_lists_every_live_lease() -> Result<()> {
    on_each_backend(list).await
}

async fn unknown_lease_errors(s: Session) -> Result<()> {
    let mut c = s.client;
    expect_status(c.lease_revoke(0x99).await, Code::NotFound, NOT_FOUND)?;
    expect_status(
        c.put("k", "v", Some(PutOptions::new().with_lease(0x99)))
            .await,
        Code::NotFound,
        NOT_FOUND,
    )?;
    ensure_eq!(c.get("k", None).await?.count(), 0, "nothing was written");
    let txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put(
        "k",
        "v",
        Some(PutOptions::new().with_lease(0x99)),
    )]);
    expect_status(c.txn(txn).await, Code::NotFound, NOT_FOUND)?;
    ensure_eq!(revision(c.get("k", None).await?.header())?, 1);
    Ok(())
}

#[tokio::test]
async fn unknown_leases_are_not_found() -> Result<()> {
    on_each_backend(unknown_lease_errors).await
}
