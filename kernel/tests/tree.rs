//! The kernel's tree view (what the ZooKeeper dialect stands on), through its public
//! API, on a real one-member group in a temp dir.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod common;

use common::open;
use concord_kernel::Kernel;
use concord_kernel::types::*;

/// A create with the open ACL; `data` `None` is ZooKeeper's null.
fn create_with(
    path: &str,
    data: Option<&str>,
    ephemeral_owner: i64,
    sequential: bool,
    kind: ZnodeKind,
) -> TreeOp {
    TreeOp::Create {
        path: path.into(),
        data: data.map(Into::into),
        acl: vec![Acl {
            perms: 31,
            scheme: "world".into(),
            id: "anyone".into(),
        }],
        ephemeral_owner,
        sequential,
        kind,
    }
}

fn create(path: &str, data: &str) -> TreeOp {
    create_with(path, Some(data), 0, false, ZnodeKind::Persistent)
}

/// setData of `path` expecting `version` (-1: any).
fn set_data(path: &str, data: &str, version: i32) -> TreeOp {
    TreeOp::SetData {
        path: path.into(),
        data: Some(data.into()),
        version,
    }
}

fn sequential(path: &str) -> TreeOp {
    create_with(path, Some(""), 0, true, ZnodeKind::Persistent)
}

fn ephemeral(path: &str, lease: i64) -> TreeOp {
    create_with(path, Some(""), lease, false, ZnodeKind::Persistent)
}

async fn one(kernel: &Kernel, op: TreeOp) -> Result<TreeOpResult, TreeError> {
    let resp = kernel.tree_txn(vec![op]).await.unwrap();
    resp.outcome
        .map(|mut results| results.remove(0))
        .map_err(|(_, e)| e)
}

fn stat(kernel: &Kernel, path: &str) -> ZnodeStat {
    kernel.tree_node(path).unwrap().expect("node exists").stat
}

#[tokio::test]
async fn create_read_update_delete_with_zookeeper_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    assert_eq!(
        one(&kernel, create("/a/b", "x")).await,
        Err(TreeError::NoNode),
        "parent must exist"
    );
    assert_eq!(
        one(&kernel, create("/a/", "x")).await,
        Err(TreeError::BadArguments)
    );
    let Ok(TreeOpResult::Created {
        path,
        stat: created,
    }) = one(&kernel, create("/a", "1")).await
    else {
        panic!("create /a failed");
    };
    assert_eq!(
        (path.as_str(), created.version, created.num_children),
        ("/a", 0, 0)
    );
    assert_eq!(
        one(&kernel, create("/a", "again")).await,
        Err(TreeError::NodeExists)
    );
    one(&kernel, create("/a/b", "2")).await.unwrap();
    let a = stat(&kernel, "/a");
    assert_eq!((a.num_children, a.cversion), (1, 1));
    assert_eq!(a.pzxid, stat(&kernel, "/a/b").czxid);
    assert_eq!(
        kernel.tree_children("/a").unwrap().unwrap().0,
        vec!["b".to_string()]
    );
    let root = kernel.tree_children("/").unwrap().unwrap();
    assert_eq!(root.0, vec!["a".to_string()]);
    assert_eq!(root.1.cversion, 1);

    assert_eq!(
        one(&kernel, set_data("/a", "v", 5)).await,
        Err(TreeError::BadVersion)
    );
    let Ok(TreeOpResult::DataSet { stat: updated }) = one(&kernel, set_data("/a", "new", 0)).await
    else {
        panic!("setData failed");
    };
    assert_eq!(updated.version, 1);
    assert_eq!(updated.czxid, created.czxid);
    assert!(updated.mzxid > created.mzxid);
    assert!(updated.mtime >= created.ctime && created.ctime > 0);
    assert_eq!(kernel.tree_node("/a").unwrap().unwrap().data, b"new");

    assert_eq!(
        one(
            &kernel,
            TreeOp::Delete {
                path: "/a".into(),
                version: -1
            }
        )
        .await,
        Err(TreeError::NotEmpty)
    );
    one(
        &kernel,
        TreeOp::Delete {
            path: "/a/b".into(),
            version: 0,
        },
    )
    .await
    .unwrap();
    let a = stat(&kernel, "/a");
    assert_eq!((a.num_children, a.cversion), (0, 2));
    one(
        &kernel,
        TreeOp::Delete {
            path: "/a".into(),
            version: 1,
        },
    )
    .await
    .unwrap();
    assert!(kernel.tree_node("/a").unwrap().is_none());
    // The same path created again starts over.
    one(&kernel, create("/a", "")).await.unwrap();
    assert_eq!(stat(&kernel, "/a").cversion, 0);
    kernel.shutdown().await;
}

#[tokio::test]
async fn sequential_names_count_the_parents_child_creates() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    one(&kernel, create("/q", "")).await.unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        match one(&kernel, sequential("/q/n-")).await.unwrap() {
            TreeOpResult::Created { path, .. } => names.push(path),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        names,
        ["/q/n-0000000000", "/q/n-0000000001", "/q/n-0000000002"]
    );
    // In one multi, each create sees the ones before it.
    let resp = kernel
        .tree_txn(vec![sequential("/q/m-"), sequential("/q/m-")])
        .await
        .unwrap();
    let created: Vec<String> = resp
        .outcome
        .unwrap()
        .into_iter()
        .map(|r| match r {
            TreeOpResult::Created { path, .. } => path,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(created, ["/q/m-0000000003", "/q/m-0000000004"]);
    // As ZooKeeper 3.8 does: deletes bump cversion but not the sequence (seen with
    // create a, create b, delete a, delete b → the next suffix is 2, cversion 5 after).
    one(&kernel, create("/r", "")).await.unwrap();
    for op in [
        create("/r/a", ""),
        create("/r/b", ""),
        TreeOp::Delete {
            path: "/r/a".into(),
            version: -1,
        },
        TreeOp::Delete {
            path: "/r/b".into(),
            version: -1,
        },
    ] {
        one(&kernel, op).await.unwrap();
    }
    let Ok(TreeOpResult::Created { path, .. }) = one(&kernel, sequential("/r/")).await else {
        panic!("an empty sequential prefix names the parent with a trailing slash");
    };
    assert_eq!(path, "/r/0000000002");
    assert_eq!(stat(&kernel, "/r").cversion, 5);
    kernel.shutdown().await;
}

#[tokio::test]
async fn a_multi_is_all_or_nothing_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let before = kernel.revision().unwrap();
    let failed = kernel
        .tree_txn(vec![
            create("/m", ""),
            create("/m/x", ""),
            TreeOp::Check {
                path: "/nothing".into(),
                version: -1,
            },
        ])
        .await
        .unwrap();
    assert_eq!(failed.outcome, Err((2, TreeError::NoNode)));
    assert!(kernel.tree_node("/m").unwrap().is_none());
    assert_eq!(kernel.revision().unwrap(), before);
    let ok = kernel
        .tree_txn(vec![create("/m", ""), create("/m/x", "")])
        .await
        .unwrap();
    assert_eq!(ok.header.revision, before + 1);
    assert_eq!(stat(&kernel, "/m/x").czxid, before + 1);
    assert_eq!(stat(&kernel, "/m").czxid, before + 1);
    kernel.shutdown().await;
}

#[tokio::test]
async fn ephemerals_live_on_a_lease_and_one_namespace_with_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let lease = kernel.lease_grant(0, 60).await.unwrap().id;
    one(&kernel, ephemeral("/e", lease)).await.unwrap();
    assert_eq!(stat(&kernel, "/e").ephemeral_owner, lease);
    assert_eq!(
        one(&kernel, create("/e/child", "")).await,
        Err(TreeError::NoChildrenForEphemerals)
    );
    let revoked = kernel.lease_revoke(lease).await.unwrap();
    assert!(
        kernel.tree_node("/e").unwrap().is_none(),
        "gone with its lease"
    );
    assert_eq!(
        kernel.tree_children("/").unwrap().unwrap().1.pzxid,
        revoked.revision
    );

    // A key written through etcd is a node; data and versions line up.
    let put = kernel
        .put(PutRequest {
            key: "/from-etcd".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let node = kernel.tree_node("/from-etcd").unwrap().unwrap();
    assert_eq!((node.data.as_slice(), node.stat.version), (&b"v"[..], 0));
    assert_eq!(node.stat.czxid, put.header.revision);
    assert!(
        kernel
            .tree_children("/")
            .unwrap()
            .unwrap()
            .0
            .contains(&"from-etcd".to_string())
    );
    // A node created through the tree and deleted through etcd leaves no metadata.
    one(&kernel, create("/gone", "x")).await.unwrap();
    kernel
        .delete_range(DeleteRangeRequest {
            key: "/gone".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(kernel.tree_node("/gone").unwrap().is_none());
    one(&kernel, create("/gone", "y")).await.unwrap();
    assert_eq!(stat(&kernel, "/gone").cversion, 0);
    kernel.shutdown().await;
}

#[tokio::test]
async fn set_acl_checks_and_bumps_the_acl_version_without_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    one(&kernel, create("/n", "d")).await.unwrap();
    let before = kernel.revision().unwrap();
    let read_only = vec![Acl {
        perms: 1,
        scheme: "world".into(),
        id: "anyone".into(),
    }];
    let set = |version| TreeOp::SetAcl {
        path: "/n".into(),
        acl: read_only.clone(),
        version,
    };
    assert_eq!(one(&kernel, set(3)).await, Err(TreeError::BadVersion));
    let Ok(TreeOpResult::AclSet { stat }) = one(&kernel, set(0)).await else {
        panic!("setACL at aversion 0 must succeed");
    };
    assert_eq!((stat.aversion, stat.version), (1, 0));
    assert_eq!(
        kernel.revision().unwrap(),
        before,
        "an ACL change takes no revision"
    );
    let node = kernel.tree_node("/n").unwrap().unwrap();
    assert_eq!((node.acl, node.stat.aversion), (read_only.clone(), 1));
    assert_eq!(kernel.tree_acl("/n").unwrap(), Some(read_only));
    assert_eq!(kernel.tree_acl("/missing").unwrap(), None);
    assert_eq!(
        one(
            &kernel,
            TreeOp::SetAcl {
                path: "/missing".into(),
                acl: Vec::new(),
                version: -1
            }
        )
        .await,
        Err(TreeError::NoNode)
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn an_ephemeral_on_a_gone_lease_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let lease = kernel.lease_grant(0, 60).await.unwrap().id;
    kernel.lease_revoke(lease).await.unwrap();
    assert_eq!(
        one(&kernel, ephemeral("/e", lease)).await,
        Err(TreeError::SessionExpired)
    );
    assert!(kernel.tree_node("/e").unwrap().is_none());
    kernel.shutdown().await;
}

#[tokio::test]
async fn empty_containers_and_stale_ttl_nodes_are_reapable() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let with_kind = |path: &str, kind| create_with(path, Some(""), 0, false, kind);
    one(&kernel, with_kind("/box", ZnodeKind::Container))
        .await
        .unwrap();
    one(&kernel, with_kind("/ttl", ZnodeKind::Ttl(1)))
        .await
        .unwrap();
    one(&kernel, with_kind("/long", ZnodeKind::Ttl(3_600_000)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let paths = |due: Vec<ReapableNode>| due.into_iter().map(|n| n.path).collect::<Vec<_>>();
    // A container that never had a child stays; a TTL node past its TTL is due.
    assert_eq!(paths(kernel.tree_reapable().unwrap()), vec!["/ttl"]);
    one(&kernel, create("/box/item", "")).await.unwrap();
    assert_eq!(paths(kernel.tree_reapable().unwrap()), vec!["/ttl"]);
    one(
        &kernel,
        TreeOp::Delete {
            path: "/box/item".into(),
            version: -1,
        },
    )
    .await
    .unwrap();
    let due = kernel.tree_reapable().unwrap();
    assert_eq!(paths(due.clone()), vec!["/box", "/ttl"]);
    assert!(due.iter().all(|n| n.version == 0));
    // Removed nodes leave the reaper's list; what it lists survives a restart.
    let delete_box = TreeOp::Delete {
        path: "/box".into(),
        version: 0,
    };
    one(&kernel, delete_box).await.unwrap();
    assert_eq!(paths(kernel.tree_reapable().unwrap()), vec!["/ttl"]);
    kernel.shutdown().await;
    drop(kernel);
    let kernel = open(dir.path()).await;
    assert_eq!(paths(kernel.tree_reapable().unwrap()), vec!["/ttl"]);
    kernel.shutdown().await;
}

#[tokio::test]
async fn submitted_tree_txns_apply_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    // Submitted back to back without awaiting: the create must apply before the
    // children that need it, and the sequential names follow submission order.
    let mut pending = vec![kernel.submit_tree_txn(vec![create("/q", "")]).unwrap()];
    for _ in 0..20 {
        pending.push(
            kernel
                .submit_tree_txn(vec![sequential("/q/item-")])
                .unwrap(),
        );
    }
    let mut names = Vec::new();
    for p in pending {
        match p.await.unwrap().outcome.unwrap().remove(0) {
            TreeOpResult::Created { path, .. } => names.push(path),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = std::iter::once("/q".to_string())
        .chain((0..20).map(|i| format!("/q/item-{i:010}")))
        .collect();
    assert_eq!(names, expected);
    kernel.shutdown().await;
}

#[tokio::test]
async fn null_data_reads_back_as_null_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let null_create = create_with("/n", None, 0, false, ZnodeKind::Persistent);
    one(&kernel, null_create).await.unwrap();
    one(&kernel, create("/e", "")).await.unwrap();
    let null = kernel.tree_node("/n").unwrap().unwrap();
    assert!(null.null_data && null.data.is_empty());
    assert!(
        !kernel.tree_node("/e").unwrap().unwrap().null_data,
        "empty is not null"
    );
    let set = |data: Option<&str>| TreeOp::SetData {
        path: "/n".into(),
        data: data.map(Into::into),
        version: -1,
    };
    one(&kernel, set(Some("x"))).await.unwrap();
    assert!(!kernel.tree_node("/n").unwrap().unwrap().null_data);
    one(&kernel, set(None)).await.unwrap();
    assert!(kernel.tree_node("/n").unwrap().unwrap().null_data);
    kernel.shutdown().await;
}

#[tokio::test]
async fn zookeepers_own_nodes_do_not_count_as_child_changes() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    one(&kernel, create("/zookeeper", "")).await.unwrap();
    one(&kernel, create("/zookeeper/quota", "")).await.unwrap();
    let root = kernel.tree_children("/").unwrap().unwrap();
    assert_eq!(
        (root.0, root.1.cversion),
        (vec!["zookeeper".to_string()], 0)
    );
    assert_eq!(stat(&kernel, "/zookeeper").cversion, 0);
    // The first sequential child of the root is numbered as on a fresh ZooKeeper.
    let Ok(TreeOpResult::Created { path, .. }) = one(&kernel, sequential("/s-")).await else {
        panic!("sequential create under the root");
    };
    assert_eq!(path, "/s-0000000000");
    kernel.shutdown().await;
}

#[tokio::test]
async fn child_counts_follow_every_dialect_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    one(&kernel, create("/p", "")).await.unwrap();
    kernel
        .tree_txn(vec![create("/p/a", ""), create("/p/b", "")])
        .await
        .unwrap();
    let put = |key: &str| PutRequest {
        key: key.into(),
        value: "v".into(),
        ..Default::default()
    };
    kernel.put(put("/p/c")).await.unwrap();
    // An etcd key under a path that is not a node: the node, once created, has it.
    kernel.put(put("/p/d/orphan")).await.unwrap();
    one(&kernel, create("/p/d", "")).await.unwrap();
    assert_eq!(stat(&kernel, "/p").num_children, 4);
    assert_eq!(stat(&kernel, "/p/d").num_children, 1);
    kernel
        .delete_range(DeleteRangeRequest {
            key: "/p/c".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let Ok(TreeOpResult::DataSet { stat: set }) = one(&kernel, set_data("/p", "x", -1)).await
    else {
        panic!("setData");
    };
    assert_eq!(set.num_children, 3);
    let listed = kernel.tree_children("/p").unwrap().unwrap();
    assert_eq!((listed.0.len(), listed.1.num_children), (3, 3));
    kernel.shutdown().await;
}

/// The node as a read without children gives it (served by the node cache when the
/// node is there) and as a snapshot read with children gives it (never cached).
fn cached_and_stored(kernel: &Kernel, path: &str) -> (Option<TreeNode>, Option<TreeNode>) {
    let cached = kernel.tree_read(path, false).unwrap().node;
    let stored = kernel.tree_read(path, true).unwrap().node;
    (cached, stored)
}

#[tokio::test]
async fn cached_nodes_follow_every_kind_of_write() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let paths = ["/", "/c", "/c/d", "/c/e", "/c/d/f"];
    let check = |step: &str| {
        for path in paths {
            // Twice: the first read may fill the cache, the second is then served by it.
            for _ in 0..2 {
                let (cached, stored) = cached_and_stored(&kernel, path);
                assert_eq!(cached, stored, "{path} after {step}");
            }
        }
    };
    check("nothing");
    one(&kernel, create("/c", "1")).await.unwrap();
    check("create");
    kernel
        .tree_txn(vec![create("/c/d", "x"), create("/c/e", "y")])
        .await
        .unwrap();
    check("a multi of creates");
    one(&kernel, set_data("/c", "2", 0)).await.unwrap();
    check("setData");
    let put = |key: &str, value: &str| PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kernel.put(put("/c/d", "from etcd")).await.unwrap();
    check("an etcd put over a node");
    kernel.put(put("/c/d/f", "etcd child")).await.unwrap();
    check("an etcd put under a node");
    one(
        &kernel,
        TreeOp::SetAcl {
            path: "/c/e".into(),
            acl: vec![Acl {
                perms: 1,
                scheme: "world".into(),
                id: "anyone".into(),
            }],
            version: -1,
        },
    )
    .await
    .unwrap();
    check("setACL");
    kernel
        .delete_range(DeleteRangeRequest {
            key: "/c/d/f".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    check("an etcd delete");
    let lease = kernel.lease_grant(0, 60).await.unwrap().id;
    one(&kernel, ephemeral("/c/d/f", lease)).await.unwrap();
    check("an ephemeral create");
    kernel.lease_revoke(lease).await.unwrap();
    check("the session's end");
    one(
        &kernel,
        TreeOp::Delete {
            path: "/c/e".into(),
            version: -1,
        },
    )
    .await
    .unwrap();
    check("delete");
    assert!(kernel.tree_node("/c/e").unwrap().is_none());
    assert_eq!(stat(&kernel, "/c").num_children, 1);
    kernel.shutdown().await;
}

/// Reads racing with writes to the same node never see a node older than a write
/// already acknowledged, and a write acknowledged is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_racing_writes_see_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    one(&kernel, create("/race", "0")).await.unwrap();
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let kernel = kernel.clone();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let floor = acknowledged.load(std::sync::atomic::Ordering::Acquire);
                let node = kernel.tree_node("/race").unwrap().unwrap();
                assert!(
                    node.stat.version >= floor,
                    "read version {} after version {floor} was acknowledged",
                    node.stat.version
                );
                assert_eq!(node.data, node.stat.version.to_string().into_bytes());
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    for version in 1..=200 {
        let Ok(TreeOpResult::DataSet { stat }) = one(
            &kernel,
            set_data("/race", &version.to_string(), version - 1),
        )
        .await
        else {
            panic!("setData {version}");
        };
        acknowledged.store(stat.version, std::sync::atomic::Ordering::Release);
        assert_eq!(stat.version, version);
        let node = kernel.tree_node("/race").unwrap().unwrap();
        assert_eq!(node.stat, stat, "the write's own Stat, read back at once");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "each reader read");
    }
    kernel.shutdown().await;
}
