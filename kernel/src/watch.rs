//! The watch hub: one stream of applied events, fanned out to watchers by key range.
//!
//! The state machine publishes every revision it applies (all of that revision's events,
//! with their previous values) on a bounded broadcast channel after the revision is
//! durable in RocksDB. A [`Watcher`] that starts at an old revision first catches up from
//! the history column families, then follows the broadcast. A watcher that falls behind
//! the channel never slows anyone down: the channel drops its oldest messages for it, and
//! the watcher goes back to catching up from history where it left off, as etcd's
//! unsynced watchers do. Delivery is in revision order, without gaps or duplicates: every
//! batch carries its revision, and a watcher skips what it has already delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};

use rocksdb::{DB, Direction, IteratorMode};
use tokio::sync::broadcast;

use crate::encoding::{HistoryEntry, hist_key, keyrev_key, split_hist_key, split_keyrev_key};
use crate::error::{KernelError, KernelResult};
use crate::mvcc::{CF_KV_HIST, CF_KV_KEYREV, Change, ReadView, cf};
use crate::types::{Event, EventKind, KeyValue, Revision, WatchBatch, WatchRequest};

/// Revisions the broadcast channel holds for a slow watcher before it must catch up
/// from history.
const LIVE_BUFFER_REVISIONS: usize = 4096;
/// Events one catch-up step reads before handing them out.
const CATCH_UP_EVENTS: usize = 1024;

/// All events of one applied revision.
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    revision: Revision,
    events: Vec<Event>,
}

impl RevisionEvents {
    /// The events of the changes a command made at `revision`.
    fn from_changes(revision: Revision, changes: &[Change]) -> Self {
        let events = changes
            .iter()
            .map(|change| {
                let prev_kv = change
                    .prev
                    .clone()
                    .map(|kv| kv.into_key_value(change.key.clone()));
                match &change.kv {
                    Some(kv) => Event {
                        kind: EventKind::Put,
                        kv: kv.clone().into_key_value(change.key.clone()),
                        prev_kv,
                    },
                    None => Event {
                        kind: EventKind::Delete,
                        kv: deleted_key_value(change.key.clone(), revision),
                        prev_kv,
                    },
                }
            })
            .collect();
        RevisionEvents { revision, events }
    }
}

/// A delete event's kv carries only the key and the revision of the delete.
fn deleted_key_value(key: Vec<u8>, revision: Revision) -> KeyValue {
    KeyValue {
        key,
        mod_revision: revision,
        ..Default::default()
    }
}

/// The publishing side, owned by the state machine; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    sender: broadcast::Sender<Arc<RevisionEvents>>,
    /// The latest applied revision, kept here so reading it costs no RocksDB lookup.
    applied: Arc<AtomicI64>,
}

impl WatchHub {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(LIVE_BUFFER_REVISIONS);
        WatchHub {
            sender,
            applied: Arc::default(),
        }
    }

    /// The latest revision written by the state machine (0 before the first).
    pub(crate) fn applied_revision(&self) -> Revision {
        self.applied.load(AtomicOrdering::Acquire)
    }

    /// Records the revision the stored state is at (start-up, snapshot install).
    pub(crate) fn set_applied_revision(&self, revision: Revision) {
        self.applied.store(revision, AtomicOrdering::Release);
    }

    /// Publishes the changes of one applied revision; called after the revision is
    /// written. The events are built only if someone listens: a watcher that
    /// subscribes after this check reads a current revision that already includes
    /// this one, so it takes it from history.
    pub(crate) fn publish(&self, revision: Revision, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.applied.fetch_max(revision, AtomicOrdering::Release);
        if self.sender.receiver_count() == 0 {
            return;
        }
        // An error only means the last watcher left meanwhile.
        let _ = self
            .sender
            .send(Arc::new(RevisionEvents::from_changes(revision, changes)));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.sender.subscribe()
    }
}

/// Why a watcher stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchEnd {
    /// The next revision it needed is gone; it may restart at `compact_revision`.
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: Revision },
    /// The kernel is shutting down.
    #[error("kernel is shutting down")]
    Closed,
    #[error(transparent)]
    Failed(#[from] KernelError),
}

/// One watcher: yields the matching events of every revision from its start on.
pub struct Watcher {
    db: Arc<DB>,
    hub: WatchHub,
    live: broadcast::Receiver<Arc<RevisionEvents>>,
    request: WatchRequest,
    /// The first revision not yet delivered (or skipped as not matching).
    next_revision: Revision,
    /// Whether history may hold revisions from `next_revision` on that the live channel
    /// will not bring.
    catching_up: bool,
    ready: VecDeque<WatchBatch>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("request", &self.request)
            .field("next_revision", &self.next_revision)
            .field("catching_up", &self.catching_up)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts a watcher. `start_revision` 0 means "from the next revision"; a start at or
    /// below the current revision replays history first; a future start waits for it.
    pub(crate) fn start(db: Arc<DB>, hub: WatchHub, request: WatchRequest) -> KernelResult<Self> {
        // Subscribe before reading the current revision: every revision after it then
        // arrives on the channel, and the ones before come from history.
        let live = hub.subscribe();
        let current = ReadView::snapshot(&db).revision()?;
        let next_revision = if request.start_revision > 0 {
            request.start_revision
        } else {
            current + 1
        };
        Ok(Watcher {
            db,
            hub,
            live,
            catching_up: next_revision <= current,
            next_revision,
            request,
            ready: VecDeque::new(),
        })
    }

    /// The revision this watcher will deliver next (or skip if nothing matches in it).
    pub fn next_revision(&self) -> Revision {
        self.next_revision
    }

    /// The matching events of the next revision that has any.
    pub async fn next(&mut self) -> Result<WatchBatch, WatchEnd> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(batch);
            }
            if self.catching_up {
                self.catch_up()?;
                continue;
            }
            match self.live.recv().await {
                Ok(revision) => {
                    if revision.revision < self.next_revision {
                        continue;
                    }
                    if revision.revision > self.next_revision {
                        // Revisions are consecutive on the channel, so a jump means this
                        // receiver was reset: fill the hole from history.
                        self.catching_up = true;
                        continue;
                    }
                    self.next_revision = revision.revision + 1;
                    if let Some(batch) = self.matching(revision.revision, &revision.events) {
                        return Ok(batch);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "slow watcher catches up from history");
                    self.live = self.hub.subscribe();
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(WatchEnd::Closed),
            }
        }
    }

    fn matching(&self, revision: Revision, events: &[Event]) -> Option<WatchBatch> {
        let events: Vec<Event> = events
            .iter()
            .filter(|event| self.request.wants(event))
            .map(|event| Event {
                kind: event.kind,
                kv: event.kv.clone(),
                prev_kv: if self.request.prev_kv {
                    event.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect();
        (!events.is_empty()).then_some(WatchBatch { revision, events })
    }

    /// Reads up to [`CATCH_UP_EVENTS`] history events from `next_revision` on into
    /// `ready`; leaves catch-up mode once history holds nothing newer.
    fn catch_up(&mut self) -> Result<(), WatchEnd> {
        let view = ReadView::snapshot(&self.db);
        let current = view.revision()?;
        let compacted = view.compact_revision()?;
        if self.next_revision > current {
            self.catching_up = false;
            return Ok(());
        }
        if self.next_revision < compacted {
            return Err(WatchEnd::Compacted {
                compact_revision: compacted,
            });
        }
        let hist = cf(&self.db, CF_KV_HIST)?;
        let start = hist_key(self.next_revision, 0);
        let iter = self.db.iterator_cf_opt(
            hist,
            view.options(),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut open: Option<WatchBatch> = None;
        for (read, item) in iter.enumerate() {
            let (raw_hist, key) = item.map_err(KernelError::from)?;
            let (revision, _) = split_hist_key(&raw_hist).ok_or_else(|| corrupt("hist"))?;
            if revision > current {
                break;
            }
            if let Some(done) = open.take_if(|b| b.revision != revision) {
                // Every event of `done.revision` has been read.
                self.next_revision = done.revision + 1;
                if !done.events.is_empty() {
                    self.ready.push_back(done);
                }
                if read >= CATCH_UP_EVENTS {
                    return Ok(());
                }
            }
            let batch = open.get_or_insert_with(|| WatchBatch {
                revision,
                events: Vec::new(),
            });
            if !self.request.covers(&key) {
                continue;
            }
            let event = history_event(
                &self.db,
                &view,
                key.to_vec(),
                revision,
                self.request.prev_kv,
            )?;
            if self.request.wants(&event) {
                batch.events.push(event);
            }
        }
        // History is read up to `current`: the open revision is whole, and the live
        // channel (subscribed before `current` was read) brings everything after it.
        if let Some(done) = open.filter(|b| !b.events.is_empty()) {
            self.ready.push_back(done);
        }
        self.next_revision = current + 1;
        self.catching_up = false;
        Ok(())
    }
}

fn corrupt(what: &str) -> KernelError {
    KernelError::Storage(format!("corrupt {what} record"))
}

/// The event history records for `key` at `revision`, with the version before it if
/// asked for (and not compacted away).
fn history_event(
    db: &DB,
    view: &ReadView<'_>,
    key: Vec<u8>,
    revision: Revision,
    with_prev: bool,
) -> KernelResult<Event> {
    let keyrev = cf(db, CF_KV_KEYREV)?;
    let raw = db
        .get_cf_opt(keyrev, keyrev_key(&key, revision), &view.options())?
        .ok_or_else(|| corrupt("keyrev"))?;
    let entry = HistoryEntry::decode(&raw).ok_or_else(|| corrupt("history"))?;
    let prev_kv = if with_prev {
        previous_version(db, view, &key, revision)?
    } else {
        None
    };
    Ok(match entry {
        HistoryEntry::Put(kv) => Event {
            kind: EventKind::Put,
            kv: kv.into_key_value(key),
            prev_kv,
        },
        HistoryEntry::Delete => Event {
            kind: EventKind::Delete,
            kv: deleted_key_value(key, revision),
            prev_kv,
        },
    })
}

/// The live version of `key` just before `revision`, if history still has it.
fn previous_version(
    db: &DB,
    view: &ReadView<'_>,
    key: &[u8],
    revision: Revision,
) -> KernelResult<Option<KeyValue>> {
    let upper = keyrev_key(key, revision - 1);
    let mut iter = db.iterator_cf_opt(
        cf(db, CF_KV_KEYREV)?,
        view.options(),
        IteratorMode::From(&upper, Direction::Reverse),
    );
    let Some(item) = iter.next() else {
        return Ok(None);
    };
    let (raw_key, raw_value) = item?;
    match split_keyrev_key(&raw_key) {
        Some((k, _)) if k == key => match HistoryEntry::decode(&raw_value) {
            Some(HistoryEntry::Put(kv)) => Ok(Some(kv.into_key_value(k))),
            Some(HistoryEntry::Delete) => Ok(None),
            None => Err(corrupt("history")),
        },
        _ => Ok(None),
    }
}
