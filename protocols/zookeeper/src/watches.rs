//! ZooKeeper watches over the kernel's event stream. Each connection has a
//! [`WatchTable`] (one-shot data, exist and child watches; persistent and
//! persistent-recursive ones); one [`WatchDispatcher`] follows every change the kernel
//! applies (from any dialect), turns it into node created / deleted / data changed /
//! children changed, and queues the notifications of the connections it concerns.
//! `synced_to` lets a connection hold a reply until every change up to the reply's
//! zxid has been dispatched, so a client sees a watch event before the reply of any
//! later read that shows the change, as ZooKeeper guarantees.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use concord_kernel::Kernel;
use concord_kernel::types::{EventKind, Revision, WatchRequest};
use concord_kernel::{WatchEnd, valid_path};
use tokio::sync::{mpsc, watch};

use crate::codes::{EventType, KeeperState};
use crate::records::WatcherEvent;
use crate::server::lock;

/// A change to one node, as ZooKeeper's watches see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange<'a> {
    Created(&'a str),
    DataChanged(&'a str),
    Deleted(&'a str),
}

/// The parent of a ZooKeeper path (`/a` → `/`); `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(cut) => Some(&path[..cut]),
        None => None,
    }
}

/// `path` itself and each of its ancestors up to the root.
fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| parent(p))
}

/// Which kind of watch a request sets or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// getData, or exists on an existing node.
    Data,
    /// exists on a missing node.
    Exist,
    /// getChildren.
    Child,
    Persistent,
    PersistentRecursive,
}

/// One connection's watches: path → the revision it was set at (a change at or before
/// that revision was already visible to the read that set it, so it does not fire it).
#[derive(Debug, Default)]
pub struct WatchTable {
    watches: HashMap<WatchKind, HashMap<String, Revision>>,
}

impl WatchTable {
    pub fn add(&mut self, kind: WatchKind, path: &str, revision: Revision) {
        self.watches
            .entry(kind)
            .or_default()
            .entry(path.to_string())
            .or_insert(revision);
    }

    /// Removes the watch; whether there was one.
    pub fn remove(&mut self, kind: WatchKind, path: &str) -> bool {
        self.watches
            .get_mut(&kind)
            .is_some_and(|paths| paths.remove(path).is_some())
    }

    pub fn contains(&self, kind: WatchKind, path: &str) -> bool {
        self.watches
            .get(&kind)
            .is_some_and(|paths| paths.contains_key(path))
    }

    /// How many watches of all kinds, and the distinct paths they are on.
    pub fn counts(&self) -> (usize, HashSet<String>) {
        let mut paths = HashSet::new();
        let mut total = 0;
        for table in self.watches.values() {
            total += table.len();
            paths.extend(table.keys().cloned());
        }
        (total, paths)
    }

    fn take_one_shot(&mut self, kind: WatchKind, path: &str, revision: Revision) -> bool {
        let Some(paths) = self.watches.get_mut(&kind) else {
            return false;
        };
        match paths.get(path) {
            Some(set_at) if *set_at < revision => {
                paths.remove(path);
                true
            }
            _ => false,
        }
    }

    fn persistent_on(&self, path: &str, revision: Revision) -> bool {
        self.watches
            .get(&WatchKind::Persistent)
            .and_then(|paths| paths.get(path))
            .is_some_and(|set_at| *set_at < revision)
    }

    fn recursive_over(&self, path: &str, revision: Revision) -> bool {
        let Some(paths) = self.watches.get(&WatchKind::PersistentRecursive) else {
            return false;
        };
        self_and_ancestors(path).any(|p| paths.get(p).is_some_and(|set_at| *set_at < revision))
    }

    /// The notifications `change` (at `revision`) triggers, removing the one-shot
    /// watches that fired. At most one event per (path, type), as ZooKeeper sends.
    pub fn fire(&mut self, change: NodeChange<'_>, revision: Revision) -> Vec<WatcherEvent> {
        let mut events = Vec::new();
        let (path, event_type, one_shot): (&str, EventType, &[WatchKind]) = match change {
            NodeChange::Created(p) => (
                p,
                EventType::NodeCreated,
                &[WatchKind::Data, WatchKind::Exist],
            ),
            NodeChange::DataChanged(p) => (
                p,
                EventType::NodeDataChanged,
                &[WatchKind::Data, WatchKind::Exist],
            ),
            NodeChange::Deleted(p) => (
                p,
                EventType::NodeDeleted,
                &[WatchKind::Data, WatchKind::Exist, WatchKind::Child],
            ),
        };
        let mut fired = false;
        for kind in one_shot {
            fired |= self.take_one_shot(*kind, path, revision);
        }
        if fired || self.persistent_on(path, revision) || self.recursive_over(path, revision) {
            events.push(event(event_type, path));
        }
        if !matches!(change, NodeChange::DataChanged(_))
            && let Some(parent) = parent(path)
        {
            let child_fired = self.take_one_shot(WatchKind::Child, parent, revision);
            if child_fired || self.persistent_on(parent, revision) {
                events.push(event(EventType::NodeChildrenChanged, parent));
            }
        }
        events
    }
}

/// A notification as the server sends it (state SyncConnected).
pub fn event(event_type: EventType, path: &str) -> WatcherEvent {
    WatcherEvent {
        event_type: event_type.code(),
        state: KeeperState::SyncConnected.code(),
        path: path.to_string(),
    }
}

/// A connection's watches and where its notifications go.
#[derive(Debug)]
pub struct ConnectionWatches {
    pub table: Mutex<WatchTable>,
    notify: mpsc::UnboundedSender<WatcherEvent>,
}

impl ConnectionWatches {
    pub fn new(notify: mpsc::UnboundedSender<WatcherEvent>) -> Self {
        ConnectionWatches {
            table: Mutex::new(WatchTable::default()),
            notify,
        }
    }

    /// The table (see [`lock`] for why a poisoned lock is still used).
    pub fn lock(&self) -> MutexGuard<'_, WatchTable> {
        lock(&self.table)
    }

    /// Queues a notification for the connection (ignored once it is gone).
    pub fn send(&self, event: WatcherEvent) {
        let _ = self.notify.send(event);
    }
}

/// Fans the kernel's changes out to the connections that watch them.
#[derive(Debug, Clone)]
pub struct WatchDispatcher {
    connections: Arc<Mutex<HashMap<u64, Arc<ConnectionWatches>>>>,
    progress: watch::Receiver<Revision>,
}

/// How long a reply waits for the dispatcher before it goes out anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

impl WatchDispatcher {
    /// Starts following the kernel from its current revision.
    pub fn start(kernel: Kernel) -> Result<Self, concord_kernel::KernelError> {
        let start = kernel.revision()?;
        let (progress_tx, progress) = watch::channel(start);
        let connections: Arc<Mutex<HashMap<u64, Arc<ConnectionWatches>>>> = Arc::default();
        let dispatcher = WatchDispatcher {
            connections: connections.clone(),
            progress,
        };
        tokio::spawn(run_dispatch(kernel, start, connections, progress_tx));
        Ok(dispatcher)
    }

    /// Starts delivering changes to connection `id`.
    pub fn register(&self, id: u64, watches: Arc<ConnectionWatches>) {
        self.lock().insert(id, watches);
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionWatches>>> {
        lock(&self.connections)
    }

    /// Waits (bounded) until every change up to `revision` has been dispatched.
    pub async fn synced_to(&self, revision: Revision) {
        let mut progress = self.progress.clone();
        let _ =
            tokio::time::timeout(SYNC_TIMEOUT, progress.wait_for(|done| *done >= revision)).await;
    }

    /// Watch totals over all connections: (connections watching, distinct paths,
    /// watches).
    pub fn totals(&self) -> (usize, usize, usize) {
        let connections = self.lock();
        let mut paths = HashSet::new();
        let mut total = 0;
        let mut watching = 0;
        for watches in connections.values() {
            let (count, on) = watches.lock().counts();
            if count > 0 {
                watching += 1;
            }
            total += count;
            paths.extend(on);
        }
        (watching, paths.len(), total)
    }
}

async fn run_dispatch(
    kernel: Kernel,
    mut from: Revision,
    connections: Arc<Mutex<HashMap<u64, Arc<ConnectionWatches>>>>,
    progress: watch::Sender<Revision>,
) {
    loop {
        let request = WatchRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: from + 1,
            ..Default::default()
        };
        let mut watcher = match kernel.watch(request) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "zookeeper watch dispatcher cannot follow the kernel");
                return;
            }
        };
        loop {
            match watcher.next().await {
                Ok(batch) => {
                    let targets: Vec<Arc<ConnectionWatches>> =
                        lock(&connections).values().cloned().collect();
                    if !targets.is_empty() {
                        for e in &batch.events {
                            let Ok(path) = std::str::from_utf8(&e.kv.key) else {
                                continue;
                            };
                            if !valid_path(path) {
                                continue;
                            }
                            let change = match e.kind {
                                EventKind::Put if e.kv.version == 1 => NodeChange::Created(path),
                                EventKind::Put => NodeChange::DataChanged(path),
                                EventKind::Delete => NodeChange::Deleted(path),
                            };
                            for target in &targets {
                                let fired = target.lock().fire(change, batch.revision);
                                for notification in fired {
                                    target.send(notification);
                                }
                            }
                        }
                    }
                    from = batch.revision;
                    progress.send_replace(from);
                }
                Err(WatchEnd::Compacted { .. }) => {
                    // Only if the dispatcher fell behind a compaction: resume from now.
                    let now = kernel.revision().unwrap_or(from);
                    tracing::warn!(
                        from,
                        now,
                        "zookeeper watch dispatcher skipped compacted changes"
                    );
                    from = now;
                    progress.send_replace(from);
                    break;
                }
                Err(end) => {
                    tracing::debug!(?end, "zookeeper watch dispatcher stopped");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(events: &[WatcherEvent]) -> Vec<(i32, String)> {
        events
            .iter()
            .map(|e| (e.event_type, e.path.clone()))
            .collect()
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Data, "/a", 5);
        t.add(WatchKind::Child, "/", 5);
        let fired = t.fire(NodeChange::DataChanged("/a"), 6);
        assert_eq!(
            types(&fired),
            vec![(EventType::NodeDataChanged.code(), "/a".into())]
        );
        assert!(t.fire(NodeChange::DataChanged("/a"), 7).is_empty());
        let fired = t.fire(NodeChange::Deleted("/a"), 8);
        assert_eq!(
            types(&fired),
            vec![(EventType::NodeChildrenChanged.code(), "/".into())]
        );
    }

    #[test]
    fn changes_already_seen_do_not_fire() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Exist, "/a", 9);
        assert!(t.fire(NodeChange::Created("/a"), 9).is_empty());
        assert_eq!(t.fire(NodeChange::Created("/a"), 10).len(), 1);
    }

    #[test]
    fn persistent_and_recursive() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Persistent, "/p", 1);
        t.add(WatchKind::PersistentRecursive, "/r", 1);
        for _ in 0..2 {
            let fired = t.fire(NodeChange::Created("/p/c"), 2);
            assert_eq!(
                types(&fired),
                vec![(EventType::NodeChildrenChanged.code(), "/p".into())]
            );
        }
        let fired = t.fire(NodeChange::Created("/r/x/y"), 3);
        assert_eq!(
            types(&fired),
            vec![(EventType::NodeCreated.code(), "/r/x/y".into())]
        );
        let fired = t.fire(NodeChange::Deleted("/r"), 4);
        assert_eq!(
            types(&fired),
            vec![(EventType::NodeDeleted.code(), "/r".into())]
        );
        assert!(t.contains(WatchKind::PersistentRecursive, "/r"));
    }

    #[test]
    fn delete_fires_data_and_child_watches_once() {
        let mut t = WatchTable::default();
        t.add(WatchKind::Data, "/a", 1);
        t.add(WatchKind::Child, "/a", 1);
        let fired = t.fire(NodeChange::Deleted("/a"), 2);
        assert_eq!(
            types(&fired),
            vec![(EventType::NodeDeleted.code(), "/a".into())]
        );
        assert_eq!(t.counts().0, 0);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
    }
}
