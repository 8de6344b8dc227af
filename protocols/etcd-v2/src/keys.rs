//! The keys API: get, set/create/update/compareAndSwap (PUT), in-order create (POST),
//! delete/compareAndDelete (DELETE), each one kernel call; errors get etcd's code and
//! cause, read after the fact (the kernel reports which check failed, the cause names
//! the path or the values compared).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use concord_kernel::Kernel;
use concord_kernel::types::{TreeOp, TreeOpResult, V2Delete, V2Node, V2Write};
use http::StatusCode;
use serde::Serialize;

use crate::error::{V2Error, code, from_kernel, tree_code};
use crate::json::{EventJson, Expiries, Expiry, NodeJson, listing, node_json};
use crate::request::KeyRequest;
use crate::wait::{Actions, Recorded};

/// A successful keys answer: the event and the index it leaves the store at.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub event: EventJson,
    pub index: i64,
}

/// etcd's `/v2/stats/store` counters.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    pub gets_success: AtomicU64,
    pub gets_fail: AtomicU64,
    pub sets_success: AtomicU64,
    pub sets_fail: AtomicU64,
    pub delete_success: AtomicU64,
    pub delete_fail: AtomicU64,
    pub update_success: AtomicU64,
    pub update_fail: AtomicU64,
    pub create_success: AtomicU64,
    pub create_fail: AtomicU64,
    pub compare_and_swap_success: AtomicU64,
    pub compare_and_swap_fail: AtomicU64,
    pub compare_and_delete_success: AtomicU64,
    pub compare_and_delete_fail: AtomicU64,
    pub expire_count: AtomicU64,
    pub watchers: AtomicU64,
}

impl StoreStats {
    fn count(&self, action: &str, ok: bool) {
        let counter = match (action, ok) {
            ("get", true) => &self.gets_success,
            ("get", false) => &self.gets_fail,
            ("set", true) => &self.sets_success,
            ("set", false) => &self.sets_fail,
            ("delete", true) => &self.delete_success,
            ("delete", false) => &self.delete_fail,
            ("update", true) => &self.update_success,
            ("update", false) => &self.update_fail,
            ("create", true) => &self.create_success,
            ("create", false) => &self.create_fail,
            ("compareAndSwap", true) => &self.compare_and_swap_success,
            ("compareAndSwap", false) => &self.compare_and_swap_fail,
            ("compareAndDelete", true) => &self.compare_and_delete_success,
            _ => &self.compare_and_delete_fail,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the keys handlers share.
#[derive(Debug)]
pub struct Keys {
    pub kernel: Kernel,
    pub actions: std::sync::Arc<Actions>,
    pub stats: StoreStats,
}

fn current_index(kernel: &Kernel) -> i64 {
    kernel.revision().unwrap_or_default()
}

impl Keys {
    /// The TTLs of the leases `nodes` carry.
    async fn expiries<'a>(&self, nodes: impl IntoIterator<Item = &'a V2Node>) -> Expiries {
        let leases: HashSet<i64> = nodes
            .into_iter()
            .map(|n| n.kv.lease)
            .filter(|l| *l != 0)
            .collect();
        let now = SystemTime::now();
        let mut out = Expiries::new();
        for lease in leases {
            if let Ok(ttl) = self.kernel.lease_time_to_live(lease, false).await
                && ttl.ttl >= 0
            {
                out.insert(lease, Expiry::after(now, ttl.ttl));
            }
        }
        out
    }

    async fn node(&self, node: &V2Node) -> NodeJson {
        let expiries = self.expiries([node]).await;
        node_json(node, &expiries)
    }

    pub async fn get(&self, req: &KeyRequest) -> Result<Answer, V2Error> {
        let result = self.read(req).await;
        self.stats.count("get", result.is_ok());
        result
    }

    async fn read(&self, req: &KeyRequest) -> Result<Answer, V2Error> {
        let index = current_index(&self.kernel);
        let read = self
            .kernel
            .v2_read(&req.key, req.recursive, !req.quorum)
            .await
            .map_err(|e| from_kernel(&e, index))?;
        let Some(node) = read.node else {
            return Err(match read.not_dir {
                Some(cause) => V2Error::new(code::NOT_DIR, cause, read.revision),
                None => V2Error::new(
                    code::KEY_NOT_FOUND,
                    read.missing.unwrap_or_else(|| req.key.clone()),
                    read.revision,
                ),
            });
        };
        let expiries = self
            .expiries(std::iter::once(&node).chain(&read.descendants))
            .await;
        let json = if node.dir {
            listing(&node, &read.descendants, &expiries)
        } else {
            node_json(&node, &expiries)
        };
        Ok(Answer {
            status: StatusCode::OK,
            event: EventJson {
                action: "get",
                node: Some(json),
                prev_node: None,
            },
            index: read.revision,
        })
    }

    /// PUT (`unique` false) or POST (`unique` true).
    pub async fn write(&self, req: &KeyRequest, unique: bool) -> Result<Answer, V2Error> {
        // etcd: prevExist=false is a create, whatever else is asked.
        let create = unique || req.prev_exist == Some(false);
        let (prev_value, prev_index) = if create {
            (None, 0)
        } else {
            (req.prev_value.clone(), req.prev_index)
        };
        let conditional = prev_value.is_some() || prev_index != 0;
        let action = match req.prev_exist {
            _ if create => "create",
            Some(true) if !conditional => "update",
            _ if conditional => "compareAndSwap",
            _ => "set",
        };
        let result = self
            .write_as(req, unique, action, prev_value, prev_index)
            .await;
        self.stats.count(action, result.is_ok());
        result
    }

    async fn write_as(
        &self,
        req: &KeyRequest,
        unique: bool,
        action: &'static str,
        prev_value: Option<String>,
        prev_index: u64,
    ) -> Result<Answer, V2Error> {
        let index = current_index(&self.kernel);
        let lease = match req.ttl {
            Some(ttl) => {
                let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
                self.kernel
                    .lease_grant(0, ttl)
                    .await
                    .map_err(|e| from_kernel(&e, index))?
                    .id
            }
            None => 0,
        };
        let op = V2Write {
            path: req.key.clone(),
            value: if req.dir {
                None
            } else {
                Some(req.value.clone().unwrap_or_default().into_bytes())
            },
            lease,
            prev_exist: if unique { Some(false) } else { req.prev_exist },
            prev_value: prev_value.clone().map(String::into_bytes),
            prev_index: i64::try_from(prev_index).unwrap_or(i64::MAX),
            refresh: req.refresh,
            unique,
        };
        let in_flight = self.actions.begin();
        let outcome = self.kernel.tree_txn(vec![TreeOp::V2Write(op)]).await;
        let response = match outcome {
            Ok(response) => response,
            Err(e) => {
                drop(in_flight);
                self.release(lease).await;
                return Err(from_kernel(&e, index));
            }
        };
        match response.outcome {
            Ok(mut results) => match results.pop() {
                Some(TreeOpResult::V2Written { node, prev }) => {
                    self.actions.record(Recorded {
                        revision: node.kv.mod_revision,
                        key: node.kv.key.clone(),
                        action,
                        dir: node.dir,
                        prev_dir: prev.as_ref().is_some_and(|p| p.dir),
                        refresh: req.refresh,
                    });
                    drop(in_flight);
                    let created = prev.is_none();
                    let (node_json, prev_json) = if req.no_value_on_success {
                        (None, None)
                    } else {
                        let prev_json = match &prev {
                            Some(p) => Some(self.node(p).await),
                            None => None,
                        };
                        (Some(self.node(&node).await), prev_json)
                    };
                    Ok(Answer {
                        status: if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        event: EventJson {
                            action,
                            node: node_json,
                            prev_node: prev_json,
                        },
                        index: response.header.revision,
                    })
                }
                _ => Err(V2Error::new(code::RAFT_INTERNAL, "unexpected reply", index)),
            },
            Err((_, error)) => {
                drop(in_flight);
                self.release(lease).await;
                Err(self
                    .cause(
                        tree_code(error),
                        &req.key,
                        prev_value.as_deref(),
                        prev_index,
                    )
                    .await)
            }
        }
    }

    pub async fn delete(&self, req: &KeyRequest) -> Result<Answer, V2Error> {
        let conditional = req.prev_value.is_some() || req.prev_index != 0;
        let action = if conditional {
            "compareAndDelete"
        } else {
            "delete"
        };
        let result = self.delete_as(req, action).await;
        self.stats.count(action, result.is_ok());
        result
    }

    async fn delete_as(&self, req: &KeyRequest, action: &'static str) -> Result<Answer, V2Error> {
        let index = current_index(&self.kernel);
        let op = V2Delete {
            path: req.key.clone(),
            dir: req.dir,
            recursive: req.recursive,
            prev_value: req.prev_value.clone().map(String::into_bytes),
            prev_index: i64::try_from(req.prev_index).unwrap_or(i64::MAX),
        };
        let in_flight = self.actions.begin();
        let response = self
            .kernel
            .tree_txn(vec![TreeOp::V2Delete(op)])
            .await
            .map_err(|e| from_kernel(&e, index))?;
        match response.outcome {
            Ok(mut results) => match results.pop() {
                Some(TreeOpResult::V2Deleted { prev }) => {
                    let revision = response.header.revision;
                    self.actions.record(Recorded {
                        revision,
                        key: prev.kv.key.clone(),
                        action,
                        dir: prev.dir,
                        prev_dir: prev.dir,
                        refresh: false,
                    });
                    drop(in_flight);
                    let node = NodeJson {
                        key: Some(String::from_utf8_lossy(&prev.kv.key).into_owned()),
                        dir: prev.dir,
                        modified_index: revision,
                        created_index: prev.kv.create_revision,
                        ..Default::default()
                    };
                    Ok(Answer {
                        status: StatusCode::OK,
                        event: EventJson {
                            action,
                            node: Some(node),
                            prev_node: Some(self.node(&prev).await),
                        },
                        index: revision,
                    })
                }
                _ => Err(V2Error::new(code::RAFT_INTERNAL, "unexpected reply", index)),
            },
            Err((_, error)) => {
                drop(in_flight);
                Err(self
                    .cause(
                        tree_code(error),
                        &req.key,
                        req.prev_value.as_deref(),
                        req.prev_index,
                    )
                    .await)
            }
        }
    }

    /// A lease granted for a write that failed is given back.
    async fn release(&self, lease: i64) {
        if lease != 0
            && let Err(e) = self.kernel.lease_revoke(lease).await
        {
            tracing::debug!(lease, error = %e, "could not revoke the lease of a failed v2 write");
        }
    }

    /// The error etcd sends for a failed check, with its cause as etcd words it.
    async fn cause(
        &self,
        error_code: u16,
        key: &str,
        prev_value: Option<&str>,
        prev_index: u64,
    ) -> V2Error {
        let index = current_index(&self.kernel);
        let read = self.kernel.v2_read(key, false, true).await.ok();
        let cause = match error_code {
            code::KEY_NOT_FOUND => read.and_then(|r| r.missing).unwrap_or_else(|| key.into()),
            code::NOT_DIR => read.and_then(|r| r.not_dir).unwrap_or_else(|| key.into()),
            code::ROOT_READ_ONLY => "/".into(),
            code::COMPARE_FAILED => {
                let (value, modified) = read
                    .and_then(|r| r.node)
                    .map(|n| {
                        (
                            String::from_utf8_lossy(&n.kv.value).into_owned(),
                            n.kv.mod_revision,
                        )
                    })
                    .unwrap_or_default();
                let value_differs = prev_value.is_some_and(|p| p != value);
                let index_differs =
                    prev_index != 0 && i64::try_from(prev_index).unwrap_or(i64::MAX) != modified;
                let shown_value = prev_value.unwrap_or_default();
                match (value_differs, index_differs) {
                    (false, true) => format!("[{prev_index} != {modified}]"),
                    (true, false) => format!("[{shown_value} != {value}]"),
                    _ => format!("[{shown_value} != {value}] [{prev_index} != {modified}]"),
                }
            }
            _ => key.into(),
        };
        V2Error::new(error_code, cause, index)
    }
}
