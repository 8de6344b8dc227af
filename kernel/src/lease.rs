//! Leases: the one expiry primitive (etcd v3 leases, etcd v2 TTLs, ZooKeeper sessions).
//!
//! What is replicated lives in two column families: `lease` (id → granted TTL and the
//! last checkpointed remaining TTL) and `lease_key` (id ‖ key → nothing: the keys
//! attached to it). When a lease runs out is *not* replicated: the [`Lessor`] keeps one
//! clock per lease in memory, renewed by keep-alives at the leader, and the leader
//! proposes a revoke when a clock runs out, as etcd does. Periodic checkpoints replicate
//! the remaining TTLs so that a restart resumes them instead of starting over; a member
//! that becomes leader restarts every clock with an extension, so no lease expires
//! because leadership moved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::LeaseId;

/// The longest TTL etcd accepts (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A lease as stored: the TTL it was granted with and, once checkpointed, what was left
/// of it then (0 = never checkpointed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub ttl: i64,
    pub remaining: i64,
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ttl.to_be_bytes());
        out[8..].copy_from_slice(&self.remaining.to_be_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<LeaseRecord> {
        Some(LeaseRecord {
            ttl: i64::from_be_bytes(buf.get(..8)?.try_into().ok()?),
            remaining: i64::from_be_bytes(buf.get(8..16)?.try_into().ok()?),
        })
    }

    /// Seconds a restored clock starts with.
    fn resume_seconds(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }
}

/// `lease` column family key.
pub(crate) fn lease_key(id: LeaseId) -> [u8; 8] {
    id.to_be_bytes()
}

/// `lease_key` column family key: the lease id, then the attached key.
pub(crate) fn attachment_key(id: LeaseId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The attached key of a `lease_key` record, if it belongs to `id`.
pub(crate) fn attached_key(id: LeaseId, raw: &[u8]) -> Option<&[u8]> {
    raw.strip_prefix(&id.to_be_bytes()[..])
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: i64,
    expires_at: Instant,
    /// When the leader last proposed revoking it (so it is not proposed every tick).
    revoke_proposed_at: Option<Instant>,
}

/// How long after proposing a revoke the leader proposes it again if the lease is still
/// there (the proposal was lost, e.g. leadership moved).
const REVOKE_RETRY: Duration = Duration::from_secs(2);

fn seconds(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// The in-memory clocks of every lease this member knows.
#[derive(Debug, Default)]
pub(crate) struct Lessor {
    clocks: Mutex<HashMap<LeaseId, Clock>>,
}

impl Lessor {
    fn with_clocks<T>(&self, f: impl FnOnce(&mut HashMap<LeaseId, Clock>) -> T) -> T {
        let mut guard = self
            .clocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Replaces every clock with the stored leases, each resuming its remaining TTL
    /// plus `extend`.
    pub(crate) fn restore(
        &self,
        leases: impl IntoIterator<Item = (LeaseId, LeaseRecord)>,
        extend: Duration,
    ) {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            clocks.clear();
            for (id, record) in leases {
                clocks.insert(
                    id,
                    Clock {
                        ttl: record.ttl,
                        expires_at: now + seconds(record.resume_seconds()) + extend,
                        revoke_proposed_at: None,
                    },
                );
            }
        });
    }

    /// Restarts every clock at its full TTL plus `extend` (a new leader does this).
    pub(crate) fn extend_all(&self, extend: Duration) {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            for clock in clocks.values_mut() {
                clock.expires_at = now + seconds(clock.ttl) + extend;
                clock.revoke_proposed_at = None;
            }
        });
    }

    pub(crate) fn granted(&self, id: LeaseId, ttl: i64) {
        self.with_clocks(|clocks| {
            clocks.insert(
                id,
                Clock {
                    ttl,
                    expires_at: Instant::now() + seconds(ttl),
                    revoke_proposed_at: None,
                },
            );
        });
    }

    pub(crate) fn revoked(&self, id: LeaseId) {
        self.with_clocks(|clocks| clocks.remove(&id));
    }

    /// Restarts the lease's clock at its full TTL; `None` if it does not exist or has
    /// already run out.
    pub(crate) fn renew(&self, id: LeaseId) -> Option<i64> {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            let clock = clocks.get_mut(&id)?;
            if clock.expires_at <= now {
                return None;
            }
            clock.expires_at = now + seconds(clock.ttl);
            Some(clock.ttl)
        })
    }

    /// Whole seconds left (rounded up, as etcd reports), `None` for an unknown lease.
    pub(crate) fn remaining(&self, id: LeaseId) -> Option<i64> {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            clocks.get(&id).map(|clock| {
                let left = clock.expires_at.saturating_duration_since(now);
                i64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
            })
        })
    }

    /// Leases whose clock ran out and whose revoke was not proposed recently; marks them
    /// as proposed.
    pub(crate) fn take_expired(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            let mut expired = Vec::new();
            for (id, clock) in clocks.iter_mut() {
                let due = clock.expires_at <= now
                    && clock
                        .revoke_proposed_at
                        .is_none_or(|at| now.duration_since(at) >= REVOKE_RETRY);
                if due {
                    clock.revoke_proposed_at = Some(now);
                    expired.push(*id);
                }
            }
            expired.sort_unstable();
            expired
        })
    }

    /// The remaining TTL of every lease, for a checkpoint.
    pub(crate) fn checkpoint(&self) -> Vec<(LeaseId, i64)> {
        let now = Instant::now();
        self.with_clocks(|clocks| {
            let mut out: Vec<(LeaseId, i64)> = clocks
                .iter()
                .map(|(id, clock)| {
                    let left = clock.expires_at.saturating_duration_since(now);
                    (
                        *id,
                        i64::try_from(left.as_secs().max(1)).unwrap_or(i64::MAX),
                    )
                })
                .collect();
            out.sort_unstable();
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_keys_round_trip() {
        let record = LeaseRecord {
            ttl: 60,
            remaining: 17,
        };
        assert_eq!(LeaseRecord::decode(&record.encode()), Some(record));
        assert_eq!(LeaseRecord::decode(&[1, 2, 3]), None);
        let raw = attachment_key(7, b"a/b");
        assert_eq!(attached_key(7, &raw), Some(&b"a/b"[..]));
        assert_eq!(attached_key(8, &raw), None);
    }

    #[test]
    fn clocks_renew_expire_and_are_proposed_once() {
        let lessor = Lessor::default();
        lessor.granted(1, 60);
        lessor.granted(2, 0);
        assert_eq!(lessor.remaining(1), Some(60));
        assert_eq!(lessor.renew(1), Some(60));
        // A zero-TTL clock has already run out: it cannot be renewed, and it is due.
        assert_eq!(lessor.renew(2), None);
        assert_eq!(lessor.take_expired(), vec![2]);
        assert_eq!(lessor.take_expired(), Vec::<LeaseId>::new());
        lessor.revoked(2);
        assert_eq!(lessor.remaining(2), None);
        assert_eq!(lessor.renew(3), None);
    }

    #[test]
    fn restore_resumes_checkpointed_remaining_time() {
        let lessor = Lessor::default();
        lessor.restore(
            [
                (
                    1,
                    LeaseRecord {
                        ttl: 100,
                        remaining: 10,
                    },
                ),
                (
                    2,
                    LeaseRecord {
                        ttl: 30,
                        remaining: 0,
                    },
                ),
            ],
            Duration::ZERO,
        );
        assert_eq!(lessor.remaining(1), Some(10));
        assert_eq!(lessor.remaining(2), Some(30));
        lessor.extend_all(Duration::from_secs(2));
        assert_eq!(lessor.remaining(1), Some(102));
        assert_eq!(lessor.checkpoint().len(), 2);
    }
}
