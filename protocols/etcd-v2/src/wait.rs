//! `wait=true`: a long poll answered with the first matching event from `waitIndex` on
//! (or every one, with `stream=true`), for changes made through any dialect.
//!
//! Events come from a kernel watcher. What a change was in v2 terms (create, update,
//! compareAndSwap, a refresh that notifies nobody, a directory) is known only to the v2
//! adapter that made it, so the adapter records its own writes ([`Actions`]) by revision
//! and a waiter uses that record; a change made elsewhere is a `set` (put), an `expire`
//! (delete of a key that had a lease) or a `delete`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concord_kernel::types::{Event, EventKind, KeyValue, Revision, V2Node, WatchRequest};
use concord_kernel::{Kernel, WatchEnd, Watcher};
use tokio::sync::{Notify, mpsc};

use crate::error::{V2Error, code};
use crate::json::{EventJson, Expiries, Expiry, NodeJson, node_json};

/// How many past events etcd v2 keeps for `waitIndex`.
pub const HISTORY_EVENTS: i64 = 1000;

/// Longest a waiter waits for a v2 write in flight to record what it was.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// One v2 write as its adapter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub revision: Revision,
    pub key: Vec<u8>,
    pub action: &'static str,
    pub dir: bool,
    pub prev_dir: bool,
    /// A refresh changes only the TTL and wakes no waiter.
    pub refresh: bool,
}

/// The recent v2 writes of this adapter, by revision.
#[derive(Debug, Default)]
pub struct Actions {
    recent: Mutex<VecDeque<Recorded>>,
    in_flight: AtomicUsize,
    changed: Notify,
}

/// A v2 write under way: waiters hold on until it records what it did (or gives up).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Actions);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Actions {
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn record(&self, recorded: Recorded) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(recorded);
            while recent.len() > HISTORY_EVENTS as usize {
                recent.pop_front();
            }
        }
        self.changed.notify_waiters();
    }

    fn find(&self, revision: Revision) -> Option<Recorded> {
        let recent = self.recent.lock().ok()?;
        recent
            .iter()
            .rev()
            .find(|r| r.revision == revision)
            .cloned()
    }

    /// The record of `revision`, waiting (bounded) while v2 writes are in flight.
    async fn lookup(&self, revision: Revision) -> Option<Recorded> {
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        loop {
            let notified = self.changed.notified();
            if let Some(found) = self.find(revision) {
                return Some(found);
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.find(revision);
            }
        }
    }
}

/// What a waiter follows.
#[derive(Debug, Clone)]
pub struct WaitSpec {
    pub key: String,
    pub recursive: bool,
    pub stream: bool,
    /// 0: from the next change.
    pub wait_index: u64,
}

impl WaitSpec {
    fn matches(&self, key: &[u8]) -> bool {
        let watched = self.key.as_bytes();
        if key == watched {
            return true;
        }
        if !self.recursive {
            return false;
        }
        if watched == b"/" {
            return key.first() == Some(&b'/');
        }
        key.len() > watched.len() && key.starts_with(watched) && key[watched.len()] == b'/'
    }

    /// The kernel watch covering the key (and, recursively, everything under it).
    fn request(&self, start_revision: Revision) -> WatchRequest {
        let key = self.key.as_bytes().to_vec();
        let range_end = if self.recursive {
            if self.key == "/" {
                b"0".to_vec()
            } else {
                let mut end = key.clone();
                end.push(b'0');
                end
            }
        } else {
            Vec::new()
        };
        WatchRequest {
            key,
            range_end,
            start_revision,
            prev_kv: true,
            ..Default::default()
        }
    }
}

/// Checks `waitIndex` against the history etcd would still have and starts a watcher.
pub fn start(kernel: &Kernel, spec: &WaitSpec) -> Result<(Watcher, Revision), V2Error> {
    let current = kernel
        .revision()
        .map_err(|e| crate::error::from_kernel(&e, 0))?;
    let compacted = kernel
        .compact_revision()
        .map_err(|e| crate::error::from_kernel(&e, current))?;
    let wait_index = i64::try_from(spec.wait_index).unwrap_or(i64::MAX);
    // etcd keeps the last 1000 events; Concord's history also ends at a compaction.
    let oldest = (current - HISTORY_EVENTS + 1).max(compacted + 1).max(1);
    if wait_index > 0 && wait_index < oldest {
        return Err(V2Error::new(
            code::EVENT_INDEX_CLEARED,
            format!("the requested history has been cleared [{oldest}/{wait_index}]"),
            0,
        ));
    }
    let start = if wait_index > 0 {
        wait_index
    } else {
        current + 1
    };
    let watcher = kernel
        .watch(spec.request(start))
        .map_err(|e| crate::error::from_kernel(&e, current))?;
    Ok((watcher, current))
}

/// Feeds `out` the events a waiter gets: one (or all, when streaming); ends when the
/// client goes away.
pub async fn run(
    kernel: Kernel,
    mut watcher: Watcher,
    spec: WaitSpec,
    actions: std::sync::Arc<Actions>,
    out: mpsc::Sender<String>,
) {
    loop {
        let batch = tokio::select! {
            batch = watcher.next() => batch,
            () = out.closed() => return,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(WatchEnd::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "v2 waiter ended");
                return;
            }
        };
        let Some(event) = v2_event(&kernel, &spec, batch.revision, &batch.events, &actions).await
        else {
            continue;
        };
        if out.send(event.body()).await.is_err() || !spec.stream {
            return;
        }
    }
}

/// The TTLs of the leases of `kvs`; a lease already gone (the key expired) shows as
/// expiring now, as etcd shows an expired node.
async fn expiries<'a>(
    kernel: &Kernel,
    kvs: impl IntoIterator<Item = Option<&'a KeyValue>>,
) -> Expiries {
    let now = std::time::SystemTime::now();
    let mut out = Expiries::new();
    for kv in kvs.into_iter().flatten() {
        if kv.lease == 0 || out.contains_key(&kv.lease) {
            continue;
        }
        let ttl = match kernel.lease_time_to_live(kv.lease, false).await {
            Ok(found) if found.ttl >= 0 => found.ttl,
            _ => 0,
        };
        out.insert(kv.lease, Expiry::after(now, ttl));
    }
    out
}

/// The v2 event a waiter sees for one revision's changes, if any matches.
async fn v2_event(
    kernel: &Kernel,
    spec: &WaitSpec,
    revision: Revision,
    events: &[Event],
    actions: &Actions,
) -> Option<EventJson> {
    let matching: Vec<&Event> = events.iter().filter(|e| spec.matches(&e.kv.key)).collect();
    // The topmost key changed (a recursive delete reports the directory).
    let top = matching.iter().min_by_key(|e| e.kv.key.len())?;
    let recorded = actions
        .lookup(revision)
        .await
        .filter(|r| spec.matches(&r.key));
    if recorded.as_ref().is_some_and(|r| r.refresh) {
        return None;
    }
    let event = recorded
        .as_ref()
        .and_then(|r| matching.iter().find(|e| e.kv.key == r.key))
        .unwrap_or(top);
    let (dir, prev_dir) = recorded
        .as_ref()
        .map_or((false, false), |r| (r.dir, r.prev_dir));
    let expiries = expiries(kernel, [Some(&event.kv), event.prev_kv.as_ref()]).await;
    let prev_node = event.prev_kv.as_ref().map(|prev| {
        node_json(
            &V2Node {
                kv: prev.clone(),
                dir: prev_dir,
            },
            &expiries,
        )
    });
    let (action, node) = match event.kind {
        EventKind::Put => (
            recorded.as_ref().map_or("set", |r| r.action),
            node_json(
                &V2Node {
                    kv: event.kv.clone(),
                    dir,
                },
                &expiries,
            ),
        ),
        EventKind::Delete => {
            let prev = event.prev_kv.clone().unwrap_or_else(|| KeyValue {
                key: event.kv.key.clone(),
                ..Default::default()
            });
            let action = match &recorded {
                Some(r) => r.action,
                None if prev.lease != 0 => "expire",
                None => "delete",
            };
            (
                action,
                NodeJson {
                    key: Some(String::from_utf8_lossy(&event.kv.key).into_owned()),
                    dir: prev_dir,
                    modified_index: revision,
                    created_index: prev.create_revision,
                    ..Default::default()
                },
            )
        }
    };
    Some(EventJson {
        action,
        node: Some(node),
        prev_node,
    })
}
