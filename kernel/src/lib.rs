//! Concord's replicated key-value kernel: an MVCC keyspace on RocksDB, replicated through
//! openraft. Adapters use [`Kernel`] and the types in [`types`]; nothing else here is
//! public API.

mod alarm;
mod backup;
mod cluster;
mod consensus;
mod encoding;
pub mod error;
mod kernel;
mod lease;
mod log_store;
mod mvcc;
mod node_cache;
mod peer;
mod read_index;
mod state_machine;
#[cfg(test)]
mod storage_suite;
mod tree;
pub mod types;
mod validate;
mod wal;
mod watch;

pub use backup::{SnapshotInfo, restore_snapshot};
pub use cluster::{MembershipChange, MembershipOutcome};
pub use error::{KernelError, KernelResult};
pub use kernel::{ETCD_CLUSTER_VERSION, ETCD_VERSION, Kernel, KernelConfig};
pub use lease::MAX_LEASE_TTL;
pub use peer::PeerTls;
pub use tree::valid_path;
pub use watch::{WatchEnd, Watcher};
