//! The multi-member [`Cluster`] harness, exercised on 3-member clusters:
//!
//! * failover: a put through member 0 reads back linearizably from every member; the
//!   leader is killed with SIGKILL, the others elect a new one and take a write; the
//!   killed member restarts on its data and catches up (a serializable read on it alone
//!   shows the last write);
//! * freeze: the leader is frozen with SIGSTOP, the others elect a new one and take a
//!   write; after SIGCONT the old leader follows and shows the write;
//! * membership: a learner is added, promoted once in sync and serves linearizable reads,
//!   then is removed, and the three original members still take writes.
//!
//! Each scenario runs on real etcd and on Concord (as [`backends`] selects).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_compat_tests::{Backend, Cluster, MemberState, ensure_eq, for_each_backend};

const MEMBERS: usize = 3;
/// Bounds the catch-up polling of a member (see [`caught_up`]).
const CATCH_UP_ATTEMPTS: usize = 100;
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `done` every [`CATCH_UP_INTERVAL`], at most [`CATCH_UP_ATTEMPTS`] times, until it
/// holds; whether it did. An error of `done` ends the polling with that error.
async fn caught_up(mut done: impl AsyncFnMut() -> Result<bool>) -> Result<bool> {
    for _ in 0..CATCH_UP_ATTEMPTS {
        if done().await? {
            return Ok(true);
        }
        tokio::time::sleep(CATCH_UP_INTERVAL).await;
    }
    Ok(false)
}

fn pair(key: &str, value: &str) -> Vec<(String, String)> {
    vec![(key.to_string(), value.to_string())]
}

async fn failover(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, MEMBERS).await?;
    ensure_eq!(cluster.endpoints().len(), MEMBERS);

    let mut first = cluster.client(0).await?;
    first
        .put("cluster/a", "1", None)
        .await
        .context("put through member 0")?;
    for i in 0..MEMBERS {
        ensure_eq!(
            cluster.read(i, "cluster/a", false).await?,
            pair("cluster/a", "1"),
            "linearizable read on member {i}"
        );
    }

    let old = cluster.wait_leader().await?;
    cluster.kill9(old)?;
    ensure_eq!(cluster.state(old)?, MemberState::Down);
    let new = cluster.wait_new_leader(old).await?;
    ensure!(new != old, "the killed member {old} is still the leader");
    // Write through a survivor that may be a follower, so the write is forwarded.
    let writer = (old + 1) % MEMBERS;
    let mut client = cluster.client(writer).await?;
    client
        .put("cluster/b", "2", None)
        .await
        .with_context(|| format!("put through member {writer} after the failover"))?;

    cluster.restart(old).await?;
    // A member still replaying may refuse or lag; only the final state counts.
    let restarted_caught_up = caught_up(async || {
        let kvs = cluster.read(old, "cluster/b", true).await;
        Ok(kvs.is_ok_and(|kvs| kvs == pair("cluster/b", "2")))
    })
    .await?;
    ensure!(
        restarted_caught_up,
        "restarted member {old} did not catch up; log tail:\n{}",
        cluster.log_tail(old)?
    );
    for i in 0..MEMBERS {
        ensure_eq!(
            cluster.read(i, "cluster/b", false).await?,
            pair("cluster/b", "2"),
            "linearizable read on member {i} after the restart"
        );
    }
    let leader = cluster.wait_leader().await?;
    ensure!(
        leader < MEMBERS,
        "leader {leader} is not an original member"
    );
    Ok(())
}

async fn freeze(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, MEMBERS).await?;
    let old = cluster.wait_leader().await?;
    cluster.stop(old)?;
    ensure_eq!(cluster.state(old)?, MemberState::Stopped);
    let new = cluster.wait_new_leader(old).await?;
    let mut client = cluster.client(new).await?;
    client
        .put("cluster/frozen", "yes", None)
        .await
        .context("put through the new leader")?;
    cluster.resume(old)?;
    let resumed_caught_up = caught_up(async || {
        let kvs = cluster.read(old, "cluster/frozen", true).await;
        Ok(kvs.is_ok_and(|kvs| kvs == pair("cluster/frozen", "yes")))
    })
    .await?;
    ensure!(
        resumed_caught_up,
        "resumed member {old} did not catch up; log tail:\n{}",
        cluster.log_tail(old)?
    );
    let leader = cluster.wait_leader().await?;
    ensure!(
        cluster.live().contains(&leader),
        "leader {leader} is not live"
    );
    Ok(())
}

async fn membership(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, MEMBERS).await?;
    let mut client = cluster.client(0).await?;
    client.put("cluster/m", "before", None).await?;

    let learner = cluster.add_member("n4", true).await?;
    ensure_eq!(learner, MEMBERS);
    let listed = cluster.member_list().await?;
    ensure_eq!(listed.len(), MEMBERS + 1);
    let id = cluster.member_id(learner).await?;
    ensure!(
        listed.iter().any(|m| m.id() == id && m.is_learner()),
        "n4 is not listed as a learner: {listed:?}"
    );
    // A learner serves serializable reads once it has caught up.
    let learner_caught_up = caught_up(async || {
        let kvs = cluster.read(learner, "cluster/m", true).await;
        Ok(kvs.is_ok_and(|kvs| kvs == pair("cluster/m", "before")))
    })
    .await?;
    ensure!(learner_caught_up, "learner n4 did not catch up");

    // MemberPromote, retried while the learner is not yet in sync with the leader.
    cluster.promote(learner).await?;
    // etcd 3.4 answers MemberList from the asked member's applied state, which may not
    // hold the promotion yet: wait (boundedly) until it does.
    let mut listed = Vec::new();
    caught_up(async || {
        listed = cluster.member_list().await?;
        Ok(listed.iter().all(|m| !m.is_learner()))
    })
    .await?;
    ensure!(
        listed.iter().all(|m| !m.is_learner()),
        "a learner is left after the promotion: {listed:?}"
    );
    client.put("cluster/m", "promoted", None).await?;
    ensure_eq!(
        cluster.read(learner, "cluster/m", false).await?,
        pair("cluster/m", "promoted"),
        "linearizable read on the promoted member"
    );

    cluster.remove_member(learner).await?;
    ensure_eq!(cluster.state(learner)?, MemberState::Removed);
    ensure_eq!(cluster.endpoints().len(), MEMBERS);
    let listed = cluster.member_list().await?;
    ensure_eq!(
        listed.len(),
        MEMBERS,
        "members after the removal: {listed:?}"
    );
    ensure!(
        !listed.iter().any(|m| m.id() == id),
        "n4 is still listed: {listed:?}"
    );
    client.put("cluster/m", "after", None).await?;
    for i in 0..MEMBERS {
        ensure_eq!(
            cluster.read(i, "cluster/m", false).await?,
            pair("cluster/m", "after"),
            "linearizable read on member {i} after the removal"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_kill9_leader_then_restart_catches_up() -> Result<()> {
    for_each_backend(failover).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_leader_then_sigcont_follows() -> Result<()> {
    for_each_backend(freeze).await
}

#[tokio::test(flavor = "multi_thread")]
async fn learner_added_promoted_and_removed() -> Result<()> {
    for_each_backend(membership).await
}
