//! A bounded in-memory cache of tree nodes (data, Stat, ACL) in front of the state
//! database, for the point reads of the tree view (ZooKeeper's getData, exists and
//! getACL, and the ACL check of its writes). RocksDB stays the only record: the cache
//! starts empty, is filled by reads and by the state machine's batched tree writes, and
//! forgets every key a state write touches.
//!
//! Consistency rests on three rules:
//! * the state machine calls [`NodeCache::after_write`] after each write of the state
//!   and before it publishes the write's revision, so an entry found after reading the
//!   published revision holds every change up to it;
//! * a read that missed fills the cache only if no state write ended since it looked
//!   ([`NodeCache::epoch`] before its snapshot, checked again under the lock), so a
//!   value read before a write can never outlive that write's invalidation;
//! * each entry keeps the revision it was read (or written) at, and a read it answers
//!   reports the later of that and the published revision, so a watch set by that read
//!   starts after every change its data shows.
//!
//! Only tree paths (keys that start with `/`) are cached, so only such keys of a batch
//! need forgetting; the few other keys of that shape it also forgets (history records
//! of path keys) cost nothing but the lookup.
//!
//! Two generations bound the memory: entries go into the young one; when it holds half
//! the budget it becomes the old one (the previous old one is dropped), and an old entry
//! that is read moves back to the young one. Roughly the least recently used half goes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;

use rocksdb::{WriteBatch, WriteBatchIteratorCf};

use crate::types::{Acl, Revision, TreeNode};

/// Bytes an entry costs beyond its path, data and ACL text (the map slot, the Stat, the
/// vectors' headers), roughly.
const ENTRY_OVERHEAD: usize = 192;

struct Entry {
    node: TreeNode,
    revision: Revision,
}

fn entry_bytes(path: &[u8], node: &TreeNode) -> usize {
    let acl: usize = node
        .acl
        .iter()
        .map(|a| a.scheme.len() + a.id.len() + 48)
        .sum();
    ENTRY_OVERHEAD + path.len() + node.data.len() + acl
}

#[derive(Default)]
struct Generation {
    entries: HashMap<Vec<u8>, Entry, RandomState>,
    bytes: usize,
}

impl Generation {
    fn remove(&mut self, path: &[u8]) -> Option<Entry> {
        let entry = self.entries.remove(path)?;
        self.bytes = self.bytes.saturating_sub(entry_bytes(path, &entry.node));
        Some(entry)
    }
}

#[derive(Default)]
struct Generations {
    /// Counts the state writes seen, so a fill can tell whether one came between its
    /// read and itself.
    epoch: u64,
    young: Generation,
    old: Generation,
}

impl Generations {
    fn insert(&mut self, budget: usize, path: Vec<u8>, entry: Entry) {
        let bytes = entry_bytes(&path, &entry.node);
        if bytes > budget / 2 {
            return;
        }
        self.forget(&path);
        self.young.entries.insert(path, entry);
        self.young.bytes += bytes;
        if self.young.bytes > budget / 2 {
            self.old = std::mem::take(&mut self.young);
        }
    }

    fn forget(&mut self, path: &[u8]) {
        self.young.remove(path);
        self.old.remove(path);
    }
}

/// See the module documentation.
pub(crate) struct NodeCache {
    /// Most bytes the entries may take, roughly; 0 turns the cache off.
    budget: usize,
    generations: Mutex<Generations>,
}

/// Whether `key` can name a cached node.
fn is_path(key: &[u8]) -> bool {
    key.first() == Some(&b'/')
}

/// The path-shaped keys a write batch touches, whatever their column family, end to end
/// in one buffer: forgetting a node that only looked like one of them costs a later
/// miss, nothing more.
#[derive(Debug, Default)]
pub(crate) struct TouchedKeys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl TouchedKeys {
    fn add(&mut self, key: &[u8]) {
        if is_path(key) {
            self.bytes.extend_from_slice(key);
            self.ends.push(self.bytes.len());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }
}

impl WriteBatchIteratorCf for TouchedKeys {
    fn put_cf(&mut self, _cf_id: u32, key: &[u8], _value: &[u8]) {
        self.add(key);
    }
    fn delete_cf(&mut self, _cf_id: u32, key: &[u8]) {
        self.add(key);
    }
    fn merge_cf(&mut self, _cf_id: u32, key: &[u8], _value: &[u8]) {
        self.add(key);
    }
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl NodeCache {
    pub(crate) fn new(budget_bytes: usize) -> Self {
        NodeCache {
            budget: budget_bytes,
            generations: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        // The maps stay consistent whatever panicked while one was held.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The count of state writes so far; a read takes it before its snapshot and hands
    /// it to [`Self::fill`].
    pub(crate) fn epoch(&self) -> u64 {
        if !self.enabled() {
            return 0;
        }
        self.lock().epoch
    }

    /// The cached node at `path` and the revision it was read at.
    pub(crate) fn get(&self, path: &[u8]) -> Option<(TreeNode, Revision)> {
        if !self.enabled() {
            return None;
        }
        let mut generations = self.lock();
        if let Some(entry) = generations.young.entries.get(path) {
            return Some((entry.node.clone(), entry.revision));
        }
        let entry = generations.old.remove(path)?;
        let found = (entry.node.clone(), entry.revision);
        generations.insert(self.budget, path.to_vec(), entry);
        Some(found)
    }

    /// The ACL of the cached node at `path`.
    pub(crate) fn acl(&self, path: &[u8]) -> Option<Vec<Acl>> {
        if !self.enabled() {
            return None;
        }
        let generations = self.lock();
        let entry = generations
            .young
            .entries
            .get(path)
            .or_else(|| generations.old.entries.get(path))?;
        Some(entry.node.acl.clone())
    }

    /// Keeps `node` as read at `revision`, unless a state write ended after `epoch`.
    pub(crate) fn fill(&self, epoch: u64, path: &[u8], node: &TreeNode, revision: Revision) {
        if !self.enabled() {
            return;
        }
        if !is_path(path) {
            return;
        }
        let mut generations = self.lock();
        if generations.epoch == epoch {
            let entry = Entry {
                node: node.clone(),
                revision,
            };
            generations.insert(self.budget, path.to_vec(), entry);
        }
    }

    /// The keys `batch` touches, taken before it is written (writing consumes it).
    pub(crate) fn keys_of(&self, batch: &WriteBatch) -> TouchedKeys {
        let mut touched = TouchedKeys::default();
        if self.enabled() {
            batch.iterate_cf(&mut touched);
        }
        touched
    }

    /// Called after a batch was written to the state: forgets every key it touched
    /// (from [`Self::keys_of`]), then keeps `written`, the nodes as the batch left them,
    /// at `revision`.
    pub(crate) fn after_write(
        &self,
        touched: &TouchedKeys,
        written: Vec<(Vec<u8>, TreeNode)>,
        revision: Revision,
    ) {
        if !self.enabled() {
            return;
        }
        let mut generations = self.lock();
        generations.epoch += 1;
        for key in touched.iter() {
            generations.forget(key);
        }
        for (path, node) in written.into_iter().filter(|(path, _)| is_path(path)) {
            generations.insert(self.budget, path, Entry { node, revision });
        }
    }

    /// Forgets everything (the whole state was replaced).
    pub(crate) fn clear(&self) {
        let mut generations = self.lock();
        generations.epoch += 1;
        generations.young = Generation::default();
        generations.old = Generation::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ZnodeKind, ZnodeStat};

    fn node(data: &[u8], version: i32) -> TreeNode {
        TreeNode {
            data: data.to_vec(),
            null_data: false,
            stat: ZnodeStat {
                version,
                ..Default::default()
            },
            acl: vec![Acl {
                perms: 31,
                scheme: "world".into(),
                id: "anyone".into(),
            }],
            kind: ZnodeKind::Persistent,
        }
    }

    /// What `after_write` is given for a batch that put `keys`.
    fn written_keys(cache: &NodeCache, keys: &[&[u8]]) -> TouchedKeys {
        let mut batch = WriteBatch::default();
        for (i, key) in keys.iter().enumerate() {
            if i % 2 == 0 {
                batch.put(key, b"x");
            } else {
                batch.delete(key);
            }
        }
        cache.keys_of(&batch)
    }

    #[test]
    fn a_fill_is_found_until_a_write_touches_its_key() {
        let cache = NodeCache::new(1 << 20);
        let epoch = cache.epoch();
        cache.fill(epoch, b"/a", &node(b"one", 0), 5);
        cache.fill(epoch, b"/b", &node(b"two", 0), 5);
        assert_eq!(cache.get(b"/a"), Some((node(b"one", 0), 5)));
        assert_eq!(cache.acl(b"/a"), Some(node(b"", 0).acl));
        cache.after_write(&written_keys(&cache, &[b"/a"]), Vec::new(), 6);
        assert_eq!(cache.get(b"/a"), None);
        assert_eq!(cache.get(b"/b"), Some((node(b"two", 0), 5)));
    }

    #[test]
    fn a_fill_read_before_a_write_is_dropped() {
        let cache = NodeCache::new(1 << 20);
        let epoch = cache.epoch();
        // The reader's snapshot predates this write, which it cannot know.
        cache.after_write(&written_keys(&cache, &[b"/other"]), Vec::new(), 6);
        cache.fill(epoch, b"/a", &node(b"stale", 0), 5);
        assert_eq!(cache.get(b"/a"), None);
        let epoch = cache.epoch();
        cache.fill(epoch, b"/a", &node(b"fresh", 1), 6);
        assert_eq!(cache.get(b"/a"), Some((node(b"fresh", 1), 6)));
    }

    #[test]
    fn written_nodes_replace_what_was_cached() {
        let cache = NodeCache::new(1 << 20);
        cache.fill(cache.epoch(), b"/a", &node(b"old", 0), 5);
        let written = vec![(b"/a".to_vec(), node(b"new", 1))];
        cache.after_write(&written_keys(&cache, &[b"/", b"/a"]), written, 7);
        assert_eq!(cache.get(b"/a"), Some((node(b"new", 1), 7)));
        cache.clear();
        assert_eq!(cache.get(b"/a"), None);
    }

    #[test]
    fn memory_stays_within_the_budget_and_recent_reads_stay() {
        let one = entry_bytes(b"/n0000", &node(&[0; 100], 0));
        let cache = NodeCache::new(one * 20);
        let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("/n{i:04}").into_bytes()).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.fill(cache.epoch(), key, &node(&[0; 100], 0), 1);
            // Keep reading the first key: it must survive the turnover.
            assert!(cache.get(&keys[0]).is_some(), "after {i} fills");
            let generations = cache.lock();
            assert!(generations.young.bytes + generations.old.bytes <= one * 20);
        }
        assert!(cache.get(&keys[1]).is_none(), "an unread early key went");
        assert!(cache.get(&keys[99]).is_some());
    }

    #[test]
    fn only_path_keys_are_kept_and_forgotten() {
        let cache = NodeCache::new(1 << 20);
        let touched = written_keys(&cache, &[b"/a", b"revision", b"/b/c", b"\0\0\x01"]);
        assert_eq!(touched.iter().collect::<Vec<_>>(), [&b"/a"[..], b"/b/c"]);
        cache.fill(cache.epoch(), b"relative", &node(b"x", 0), 1);
        assert_eq!(cache.get(b"relative"), None);
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = NodeCache::new(0);
        cache.fill(cache.epoch(), b"/a", &node(b"one", 0), 5);
        assert_eq!(cache.get(b"/a"), None);
    }
}
