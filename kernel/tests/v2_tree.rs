//! The kernel's v2 tree operations (what the etcd v2 dialect stands on), through its
//! public API: etcd v2 store rules for files and directories, checked at apply time.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::open;
use concord_kernel::Kernel;
use concord_kernel::types::*;

fn set(path: &str, value: Option<&str>) -> V2Write {
    V2Write {
        path: path.into(),
        value: value.map(|v| v.as_bytes().to_vec()),
        ..Default::default()
    }
}

async fn write(kernel: &Kernel, op: V2Write) -> Result<(V2Node, Option<V2Node>), TreeError> {
    let resp = kernel.tree_txn(vec![TreeOp::V2Write(op)]).await.unwrap();
    match resp.outcome.map_err(|(_, e)| e)?.remove(0) {
        TreeOpResult::V2Written { node, prev } => Ok((node, prev)),
        other => panic!("unexpected {other:?}"),
    }
}

async fn delete(kernel: &Kernel, op: V2Delete) -> Result<V2Node, TreeError> {
    let resp = kernel.tree_txn(vec![TreeOp::V2Delete(op)]).await.unwrap();
    match resp.outcome.map_err(|(_, e)| e)?.remove(0) {
        TreeOpResult::V2Deleted { prev } => Ok(prev),
        other => panic!("unexpected {other:?}"),
    }
}

fn keys(read: &V2Subtree) -> Vec<(String, bool)> {
    read.descendants
        .iter()
        .map(|n| (String::from_utf8_lossy(&n.kv.key).into_owned(), n.dir))
        .collect()
}

#[tokio::test]
async fn files_directories_and_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    // A set makes the missing ancestors as directories, at the same revision.
    let (node, prev) = write(&kernel, set("/a/b/c", Some("1"))).await.unwrap();
    assert!(prev.is_none() && !node.dir);
    let read = kernel.v2_read("/a", true, false).await.unwrap();
    assert!(read.node.as_ref().unwrap().dir);
    assert_eq!(
        keys(&read),
        [("/a/b".to_string(), true), ("/a/b/c".to_string(), false)]
    );
    assert_eq!(read.descendants[0].kv.create_revision, node.kv.mod_revision);
    // Only direct children without `recursive`.
    assert_eq!(
        keys(&kernel.v2_read("/a", false, false).await.unwrap()).len(),
        1
    );
    // A directory is not a file, a file is not a directory, the root is read only.
    assert_eq!(
        write(&kernel, set("/a/b", Some("x"))).await,
        Err(TreeError::NotFile)
    );
    assert_eq!(
        write(&kernel, set("/a/b/c/d", Some("x"))).await,
        Err(TreeError::NotDir)
    );
    assert_eq!(
        write(&kernel, set("/", Some("x"))).await,
        Err(TreeError::RootReadOnly)
    );
    let under_file = kernel.v2_read("/a/b/c/d", false, false).await.unwrap();
    assert_eq!(under_file.not_dir.as_deref(), Some("/a/b/c"));
    let missing = kernel.v2_read("/x/y", false, false).await.unwrap();
    assert_eq!(missing.missing.as_deref(), Some("/x"));
    // A plain set replaces a file (a new node); compare-and-swap keeps it.
    let (replaced, prev) = write(&kernel, set("/a/b/c", Some("2"))).await.unwrap();
    assert_eq!(replaced.kv.create_revision, replaced.kv.mod_revision);
    assert_eq!(prev.unwrap().kv.value, b"1");
    let cas = V2Write {
        prev_value: Some(b"nope".to_vec()),
        ..set("/a/b/c", Some("3"))
    };
    assert_eq!(write(&kernel, cas).await, Err(TreeError::CompareFailed));
    let cas = V2Write {
        prev_value: Some(b"2".to_vec()),
        prev_index: replaced.kv.mod_revision,
        ..set("/a/b/c", Some("3"))
    };
    let (swapped, _) = write(&kernel, cas).await.unwrap();
    assert_eq!(swapped.kv.create_revision, replaced.kv.create_revision);
    // prevExist.
    let create = V2Write {
        prev_exist: Some(false),
        ..set("/a/b/c", Some("x"))
    };
    assert_eq!(write(&kernel, create).await, Err(TreeError::NodeExists));
    let update = V2Write {
        prev_exist: Some(true),
        ..set("/nope", Some("x"))
    };
    assert_eq!(write(&kernel, update).await, Err(TreeError::NoNode));
    // Deletes: a directory needs `dir` (empty) or `recursive`.
    let plain = |path: &str| V2Delete {
        path: path.into(),
        ..Default::default()
    };
    assert_eq!(delete(&kernel, plain("/a")).await, Err(TreeError::NotFile));
    let empty_only = V2Delete {
        dir: true,
        ..plain("/a")
    };
    assert_eq!(delete(&kernel, empty_only).await, Err(TreeError::NotEmpty));
    let recursive = V2Delete {
        recursive: true,
        ..plain("/a")
    };
    let gone = delete(&kernel, recursive).await.unwrap();
    assert!(gone.dir);
    assert!(
        kernel
            .v2_read("/a/b/c", false, false)
            .await
            .unwrap()
            .node
            .is_none()
    );
    let range = kernel
        .range(RangeRequest {
            key: b"/a".to_vec(),
            range_end: b"/a0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(range.kvs.is_empty(), "the subtree is gone for etcd v3 too");
}

#[tokio::test]
async fn in_order_keys_are_named_by_their_revision() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let post = V2Write {
        unique: true,
        ..set("/q", Some("job"))
    };
    let (node, _) = write(&kernel, post.clone()).await.unwrap();
    let name = String::from_utf8(node.kv.key.clone()).unwrap();
    assert_eq!(name, format!("/q/{:020}", node.kv.mod_revision));
    // A ZooKeeper sequential create under the same parent takes 10 digits: no clash.
    let (second, _) = write(&kernel, post).await.unwrap();
    assert_ne!(second.kv.key, node.kv.key);
    assert!(
        kernel
            .v2_read("/q", false, false)
            .await
            .unwrap()
            .node
            .unwrap()
            .dir
    );
}

#[tokio::test]
async fn an_expiring_directory_takes_its_children_along() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = open(dir.path()).await;
    let lease = kernel.lease_grant(0, 60).await.unwrap().id;
    let with_ttl = V2Write {
        lease,
        ..set("/tmp", None)
    };
    write(&kernel, with_ttl).await.unwrap();
    write(&kernel, set("/tmp/x/y", Some("1"))).await.unwrap();
    kernel.lease_revoke(lease).await.unwrap();
    let read = kernel.v2_read("/", true, false).await.unwrap();
    assert!(keys(&read).is_empty(), "left: {:?}", keys(&read));
}
