//! The kernel's watch hub, leases, alarms and snapshots through its public API, on a real
//! one-member group in a temp dir.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use concord_kernel::types::*;
use concord_kernel::{Kernel, KernelConfig, KernelError, WatchEnd, Watcher};

fn config(dir: &std::path::Path) -> KernelConfig {
    KernelConfig {
        data_dir: dir.to_path_buf(),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(150),
        lease_checkpoint_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn open(dir: &std::path::Path) -> Kernel {
    Kernel::open(config(dir), Duration::from_secs(10))
        .await
        .unwrap()
}

async fn put(kernel: &Kernel, key: &str, value: &str, lease: i64) -> Revision {
    kernel
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })
        .await
        .unwrap()
        .header
        .revision
}

async fn delete(kernel: &Kernel, key: &str) -> Revision {
    kernel
        .delete_range(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .header
        .revision
}

async fn next(watcher: &mut Watcher) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("no event within 5 s")
        .unwrap()
}

fn prefix(key: &str) -> WatchRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

fn summary(batch: &WatchBatch) -> Vec<(EventKind, String, String, Revision)> {
    batch
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                String::from_utf8_lossy(&e.kv.key).into_owned(),
                String::from_utf8_lossy(&e.kv.value).into_owned(),
                e.kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_replays_history_then_follows_live_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let r1 = put(&kernel, "w/a", "1", 0).await;
    let r2 = put(&kernel, "other", "x", 0).await;
    let r3 = put(&kernel, "w/a", "2", 0).await;
    let r4 = delete(&kernel, "w/a").await;
    let mut watcher = kernel
        .watch(WatchRequest {
            start_revision: r1,
            prev_kv: true,
            ..prefix("w/")
        })
        .unwrap();
    let first = next(&mut watcher).await;
    assert_eq!(first.revision, r1);
    assert_eq!(
        summary(&first),
        [(EventKind::Put, "w/a".into(), "1".into(), r1)]
    );
    assert_eq!(first.events[0].prev_kv, None);
    assert!(r2 < r3);
    let second = next(&mut watcher).await;
    assert_eq!(
        summary(&second),
        [(EventKind::Put, "w/a".into(), "2".into(), r3)]
    );
    assert_eq!(second.events[0].prev_kv.as_ref().unwrap().value, b"1");
    let third = next(&mut watcher).await;
    assert_eq!(
        summary(&third),
        [(EventKind::Delete, "w/a".into(), "".into(), r4)]
    );
    assert_eq!(
        third.events[0].kv.create_revision, 0,
        "delete kv holds key + mod_revision only"
    );
    assert_eq!(third.events[0].prev_kv.as_ref().unwrap().value, b"2");
    // Live events follow, in one batch per revision.
    let r5 = kernel
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: "w/b".into(),
                    value: "3".into(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: "w/c".into(),
                    value: "4".into(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        })
        .await
        .unwrap()
        .header
        .revision;
    let live = next(&mut watcher).await;
    assert_eq!(
        summary(&live),
        [
            (EventKind::Put, "w/b".into(), "3".into(), r5),
            (EventKind::Put, "w/c".into(), "4".into(), r5)
        ]
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn filters_future_starts_and_compacted_starts() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let r1 = put(&kernel, "k", "1", 0).await;
    let mut no_put = kernel
        .watch(WatchRequest {
            key: "k".into(),
            start_revision: r1,
            no_put: true,
            ..Default::default()
        })
        .unwrap();
    let mut future = kernel
        .watch(WatchRequest {
            key: "k".into(),
            start_revision: r1 + 2,
            ..Default::default()
        })
        .unwrap();
    put(&kernel, "k", "2", 0).await;
    let r3 = delete(&kernel, "k").await;
    assert_eq!(
        next(&mut no_put).await.revision,
        r3,
        "puts are filtered out"
    );
    assert_eq!(next(&mut future).await.revision, r1 + 2);
    kernel
        .compact(CompactRequest {
            revision: r3,
            physical: true,
        })
        .await
        .unwrap();
    let mut compacted = kernel
        .watch(WatchRequest {
            key: "k".into(),
            start_revision: r1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        compacted.next().await,
        Err(WatchEnd::Compacted {
            compact_revision: r3
        })
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn a_watcher_that_falls_far_behind_catches_up_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let mut slow = kernel.watch(prefix("s/")).unwrap();
    // More revisions than the live buffer holds, while the watcher reads nothing.
    let writes = 5000;
    let mut last = 0;
    for i in 0..writes {
        last = put(&kernel, &format!("s/{}", i % 7), &i.to_string(), 0).await;
    }
    let mut seen = Vec::new();
    while seen.last().copied() != Some(last) {
        seen.push(next(&mut slow).await.revision);
    }
    assert_eq!(seen.len(), writes);
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate"
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn leases_attach_keys_revoke_in_one_revision_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let min_ttl = kernel.min_lease_ttl();
    let granted = kernel.lease_grant(0, 0).await.unwrap();
    assert_eq!(granted.ttl, min_ttl, "TTL raised to the minimum");
    assert!(granted.id > 0);
    assert_eq!(
        kernel.lease_grant(granted.id, 60).await.unwrap_err(),
        KernelError::LeaseExists
    );
    assert_eq!(
        kernel
            .lease_grant(0, concord_kernel::MAX_LEASE_TTL + 1)
            .await
            .unwrap_err(),
        KernelError::LeaseTtlTooLarge
    );
    let long = kernel.lease_grant(77, 600).await.unwrap();
    assert_eq!(long.id, 77);
    put(&kernel, "l/a", "1", 77).await;
    let before = put(&kernel, "l/b", "2", 77).await;
    let err = kernel
        .put(PutRequest {
            key: "l/c".into(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, KernelError::LeaseNotFound);
    let ttl = kernel.lease_time_to_live(77, true).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (600, 2));
    assert!(ttl.ttl > 590 && ttl.ttl <= 600, "{}", ttl.ttl);
    assert_eq!(kernel.lease_time_to_live(999, false).await.unwrap().ttl, -1);
    assert_eq!(kernel.lease_keep_alive(999).await.unwrap().ttl, 0);
    assert_eq!(kernel.lease_keep_alive(77).await.unwrap().ttl, 600);
    let leases = kernel.lease_leases().await.unwrap().leases;
    assert_eq!(leases.len(), 2);
    let revoked = kernel.lease_revoke(77).await.unwrap();
    assert_eq!(revoked.revision, before + 1, "both keys go in one revision");
    assert!(
        kernel
            .range(RangeRequest {
                key: "l/".into(),
                range_end: "l0".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert_eq!(
        kernel.lease_revoke(77).await.unwrap_err(),
        KernelError::LeaseNotFound
    );
    // The short lease expires on its own (bounded wait) and takes its key along.
    put(&kernel, "short", "x", granted.id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let gone = kernel
            .range(RangeRequest {
                key: "short".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .is_empty();
        if gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kernel
            .lease_time_to_live(granted.id, false)
            .await
            .unwrap()
            .ttl,
        -1
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn remaining_ttl_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kernel = open(dir.path()).await;
        kernel.lease_grant(5, 300).await.unwrap();
        put(&kernel, "kept", "v", 5).await;
        // Let at least one checkpoint record the remaining time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kernel.shutdown().await;
    }
    let kernel = open(dir.path()).await;
    let ttl = kernel.lease_time_to_live(5, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 300);
    assert_eq!(ttl.keys, vec![b"kept".to_vec()]);
    assert!(
        ttl.ttl > 250 && ttl.ttl < 300,
        "resumed, not restarted: {}",
        ttl.ttl
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn snapshot_restores_into_a_new_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(&dir.path().join("source")).await;
    put(&kernel, "a", "1", 0).await;
    let revision = put(&kernel, "b", "2", 0).await;
    let hash_before = kernel.hash_kv(0).await.unwrap();
    let file = dir.path().join("snap.db");
    let info = kernel.snapshot_to_file(file.clone()).await.unwrap();
    assert_eq!(info.revision, revision);
    kernel.shutdown().await;
    drop(kernel);
    let target = dir.path().join("restored");
    concord_kernel::restore_snapshot(&file, &target).unwrap();
    assert!(
        concord_kernel::restore_snapshot(&file, &target).is_err(),
        "refuses a used dir"
    );
    let restored = open(&target).await;
    let all = restored
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.header.revision, revision);
    assert_eq!(all.kvs.len(), 2);
    let hash_after = restored.hash_kv(revision).await.unwrap();
    assert_eq!(hash_after.hash, hash_before.hash);
    put(&restored, "c", "3", 0).await;
    assert_ne!(restored.hash_kv(0).await.unwrap().hash, hash_before.hash);
    restored.shutdown().await;
}

#[tokio::test]
async fn no_space_alarm_refuses_puts_but_not_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    put(&kernel, "x", "1", 0).await;
    let alarm = Alarm {
        member_id: kernel.member_id(),
        kind: AlarmKind::NoSpace,
    };
    kernel.set_alarm(alarm, true).await.unwrap();
    assert_eq!(kernel.alarms(), vec![alarm]);
    let err = kernel
        .put(PutRequest {
            key: "y".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, KernelError::NoSpace);
    assert_eq!(
        kernel.lease_grant(0, 10).await.unwrap_err(),
        KernelError::NoSpace
    );
    delete(&kernel, "x").await;
    kernel.set_alarm(alarm, false).await.unwrap();
    assert!(kernel.alarms().is_empty());
    put(&kernel, "y", "2", 0).await;
    kernel.shutdown().await;
}
