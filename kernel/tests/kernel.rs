//! Kernel semantics through its public API, on a real one-member group in a temp dir.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod common;

use common::open;
use concord_kernel::types::*;
use concord_kernel::{Kernel, KernelConfig, KernelError};

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn prefix(key: &str) -> RangeRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    RangeRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[tokio::test]
async fn revisions_versions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let r1 = kernel.put(put("a", "1")).await.unwrap();
    assert_eq!(
        r1.header.revision, 2,
        "a fresh cluster starts at revision 1"
    );
    let r2 = kernel
        .put(PutRequest {
            prev_kv: true,
            ..put("a", "2")
        })
        .await
        .unwrap();
    assert_eq!(r2.header.revision, 3);
    let prev = r2.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.version, prev.mod_revision),
        (&b"1"[..], 1, 2)
    );

    let now = kernel.range(get("a")).await.unwrap();
    let kv = &now.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let old = kernel
        .range(RangeRequest {
            revision: 2,
            ..get("a")
        })
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    assert_eq!(
        old.header.revision, 3,
        "header carries the current revision"
    );

    // Deleting a missing key does not bump the revision.
    let del = kernel
        .delete_range(DeleteRangeRequest {
            key: b"zz".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((del.deleted, del.header.revision), (0, 3));
    let del = kernel
        .delete_range(DeleteRangeRequest {
            key: b"a".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (del.deleted, del.header.revision, del.prev_kvs.len()),
        (1, 4, 1)
    );
    assert!(kernel.range(get("a")).await.unwrap().kvs.is_empty());
    assert_eq!(
        kernel
            .range(RangeRequest {
                revision: 3,
                ..get("a")
            })
            .await
            .unwrap()
            .kvs[0]
            .value,
        b"2"
    );
    assert_eq!(
        kernel
            .range(RangeRequest {
                revision: 5,
                ..get("a")
            })
            .await
            .unwrap_err(),
        KernelError::FutureRevision
    );
    // Recreated keys start a new life: version 1, new create revision.
    kernel.put(put("a", "3")).await.unwrap();
    let kv = kernel.range(get("a")).await.unwrap().kvs[0].clone();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
    kernel.shutdown().await;
}

#[tokio::test]
async fn range_options() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    for (k, v) in [("p/c", "1"), ("p/a", "3"), ("p/b", "2"), ("q", "0")] {
        kernel.put(put(k, v)).await.unwrap();
    }
    kernel.put(put("p/a", "4")).await.unwrap();
    let all = kernel.range(prefix("p/")).await.unwrap();
    assert_eq!(keys(&all), ["p/a", "p/b", "p/c"]);
    let limited = kernel
        .range(RangeRequest {
            limit: 2,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert_eq!(
        (keys(&limited), limited.count, limited.more),
        (vec!["p/a".to_string(), "p/b".into()], 3, true)
    );
    let by_value = kernel
        .range(RangeRequest {
            sort_target: SortTarget::Value,
            sort_order: SortOrder::Descend,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&by_value), ["p/a", "p/b", "p/c"]);
    let by_mod_default_order = kernel
        .range(RangeRequest {
            sort_target: SortTarget::Mod,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert_eq!(
        keys(&by_mod_default_order),
        ["p/c", "p/b", "p/a"],
        "target without order sorts ascending"
    );
    let from_key = kernel
        .range(RangeRequest {
            range_end: vec![0],
            ..get("p/b")
        })
        .await
        .unwrap();
    assert_eq!(keys(&from_key), ["p/b", "p/c", "q"]);
    let counted = kernel
        .range(RangeRequest {
            count_only: true,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert_eq!((counted.count, counted.kvs.len()), (3, 0));
    let keys_only = kernel
        .range(RangeRequest {
            keys_only: true,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let filtered = kernel
        .range(RangeRequest {
            min_mod_revision: 4,
            ..prefix("p/")
        })
        .await
        .unwrap();
    assert_eq!(
        (keys(&filtered), filtered.count),
        (vec!["p/a".to_string(), "p/b".into()], 3)
    );
    let serializable = kernel
        .range(RangeRequest {
            serializable: true,
            ..get("q")
        })
        .await
        .unwrap();
    assert_eq!(serializable.kvs.len(), 1);
    assert_eq!(
        kernel.range(get("")).await.unwrap_err(),
        KernelError::EmptyKey
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn txn_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    kernel.put(put("k", "v")).await.unwrap();
    let cmp = |key: &str, result, target| Compare {
        result,
        target,
        key: key.into(),
        range_end: vec![],
    };
    let txn = TxnRequest {
        compare: vec![
            cmp(
                "k",
                CompareResult::Equal,
                CompareTarget::Value(b"v".to_vec()),
            ),
            cmp("missing", CompareResult::Equal, CompareTarget::Version(0)),
        ],
        success: vec![
            RequestOp::Put(put("k", "w")),
            RequestOp::Put(put("n", "1")),
            RequestOp::Range(get("k")),
            RequestOp::Txn(TxnRequest {
                compare: vec![cmp(
                    "k",
                    CompareResult::Equal,
                    CompareTarget::Value(b"v".to_vec()),
                )],
                success: vec![RequestOp::Put(put("nested", "then"))],
                failure: vec![RequestOp::Put(put("nested", "else"))],
            }),
        ],
        failure: vec![],
    };
    let resp = kernel.txn(txn).await.unwrap();
    assert!(resp.succeeded);
    assert_eq!(
        resp.header.revision, 3,
        "one revision for all writes of a txn"
    );
    let ResponseOp::Range(r) = &resp.responses[2] else {
        panic!("range response expected")
    };
    assert_eq!(
        r.kvs[0].value, b"w",
        "reads in a txn see its earlier writes"
    );
    let ResponseOp::Txn(nested) = &resp.responses[3] else {
        panic!("txn response expected")
    };
    assert!(
        nested.succeeded,
        "nested compares see the state before the txn"
    );
    assert_eq!(
        kernel.range(get("nested")).await.unwrap().kvs[0].value,
        b"then"
    );

    // A value compare on a missing key is always false.
    let resp = kernel
        .txn(TxnRequest {
            compare: vec![cmp(
                "missing",
                CompareResult::NotEqual,
                CompareTarget::Value(b"x".to_vec()),
            )],
            success: vec![],
            failure: vec![RequestOp::Range(get("k"))],
        })
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(
        resp.header.revision, 3,
        "a read-only txn does not bump the revision"
    );

    let dup = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(put("a", "1")), RequestOp::Put(put("a", "2"))],
        failure: vec![],
    };
    assert_eq!(
        kernel.txn(dup).await.unwrap_err(),
        KernelError::DuplicateKey
    );
    let ignore = PutRequest {
        ignore_value: true,
        ..put("absent", "")
    };
    assert_eq!(
        kernel.put(ignore).await.unwrap_err(),
        KernelError::KeyNotFound
    );
    let leased = PutRequest {
        lease: 42,
        ..put("l", "1")
    };
    assert_eq!(
        kernel.put(leased).await.unwrap_err(),
        KernelError::LeaseNotFound
    );
    assert_eq!(
        kernel.range(get("k")).await.unwrap().header.revision,
        3,
        "failed writes change nothing"
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kernel = open(dir.path()).await;
        for i in 0..5 {
            kernel.put(put("c", &i.to_string())).await.unwrap(); // revisions 2..=6
        }
        kernel.put(put("gone", "x")).await.unwrap(); // 7
        kernel
            .delete_range(DeleteRangeRequest {
                key: b"gone".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap(); // 8
        kernel
            .compact(CompactRequest {
                revision: 5,
                physical: true,
            })
            .await
            .unwrap();
        let err = kernel
            .range(RangeRequest {
                revision: 4,
                ..get("c")
            })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            KernelError::Compacted {
                compact_revision: 5
            }
        );
        assert_eq!(
            kernel
                .range(RangeRequest {
                    revision: 5,
                    ..get("c")
                })
                .await
                .unwrap()
                .kvs[0]
                .value,
            b"3"
        );
        assert_eq!(
            kernel
                .range(RangeRequest {
                    revision: 7,
                    ..get("gone")
                })
                .await
                .unwrap()
                .kvs
                .len(),
            1
        );
        assert!(matches!(
            kernel
                .compact(CompactRequest {
                    revision: 5,
                    physical: false
                })
                .await,
            Err(KernelError::Compacted { .. })
        ));
        assert_eq!(
            kernel
                .compact(CompactRequest {
                    revision: 99,
                    physical: false
                })
                .await
                .unwrap_err(),
            KernelError::FutureRevision
        );
        kernel
            .compact(CompactRequest {
                revision: 8,
                physical: true,
            })
            .await
            .unwrap();
        assert!(
            kernel
                .range(RangeRequest {
                    revision: 8,
                    ..get("gone")
                })
                .await
                .unwrap()
                .kvs
                .is_empty()
        );
        assert_eq!(
            kernel
                .range(RangeRequest {
                    revision: 8,
                    ..get("c")
                })
                .await
                .unwrap()
                .kvs[0]
                .value,
            b"4"
        );
        kernel.shutdown().await;
    }
    let kernel = open(dir.path()).await;
    let kv = kernel.range(get("c")).await.unwrap();
    assert_eq!(
        (kv.kvs[0].value.as_slice(), kv.header.revision),
        (&b"4"[..], 8)
    );
    assert!(matches!(
        kernel
            .range(RangeRequest {
                revision: 7,
                ..get("c")
            })
            .await,
        Err(KernelError::Compacted {
            compact_revision: 8
        })
    ));
    kernel.shutdown().await;
}

#[tokio::test]
async fn data_dir_refuses_another_name() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).await.shutdown().await;
    let config = KernelConfig {
        data_dir: dir.path().to_path_buf(),
        name: "other".into(),
        ..Default::default()
    };
    let err = Kernel::open(config, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to start it as \"other\""),
        "{err}"
    );
}

/// Linearizable reads share read-index rounds, and still each one sees every write
/// acknowledged before it began: readers in flight together with a writer check the
/// counter they read against the last one acknowledged when their read started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_see_every_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    kernel.put(put("counter", "0")).await.unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let writer = {
        let (kernel, acknowledged) = (kernel.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for n in 1..=200u64 {
                kernel.put(put("counter", &n.to_string())).await.unwrap();
                acknowledged.store(n, Ordering::SeqCst);
            }
        })
    };
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (kernel, acknowledged) = (kernel.clone(), acknowledged.clone());
        readers.spawn(async move {
            let mut reads = 0;
            while acknowledged.load(Ordering::SeqCst) < 200 && reads < 2_000 {
                let floor = acknowledged.load(Ordering::SeqCst);
                let resp = kernel.range(get("counter")).await.unwrap();
                let seen: u64 = std::str::from_utf8(&resp.kvs[0].value)
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(seen >= floor, "read {seen} after {floor} was acknowledged");
                reads += 1;
            }
            reads
        });
    }
    writer.await.unwrap();
    let mut total = 0;
    while let Some(reads) = readers.join_next().await {
        total += reads.unwrap();
    }
    assert!(total > 0, "the readers read while the writer wrote");
}
