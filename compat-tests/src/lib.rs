//! Harness for Concord's compatibility tests.
//!
//! The tests in `tests/` drive real clients (`etcdctl` and the `etcd-client` crate)
//! against the real `concord` binary and, to validate the tests themselves, against a
//! real etcd (Debian's `etcd` 3.4 at `/usr/bin/etcd`). This crate gives them:
//!
//! * [`Server`]: a running server process of either [`Backend`], started on loopback
//!   ports with a temporary (or given) data directory, awaited until it answers, and
//!   killed when dropped; it can be `kill -9`ed and restarted on the same directory;
//! * [`on_each_backend`]: runs one scenario against every selected backend;
//! * [`cluster`]: a [`Cluster`] of N members of either backend (start, kill -9,
//!   SIGSTOP/SIGCONT, restart, leader, member add/promote/remove), optionally placed
//!   in network namespaces;
//! * [`etcdctl()`]: runs `/usr/bin/etcdctl` (API v3) against an endpoint;
//! * [`fixture`]: data sets several tests share;
//! * [`check`]: assertions on etcd-client results (gRPC codes, headers, keys);
//! * [`normalize`] and [`diff`]: what the differential test needs to compare two
//!   transcripts and show where they differ;
//! * [`python`]: the Python client sessions (`python/*.py`);
//! * [`background`]: long-running etcdctl commands (`watch`, `lock`, `elect`);
//! * [`streams`]: bounded reads of Watch and LeaseKeepAlive streams;
//! * [`tls`]: test certificates (openssl) and Concord started with TLS profiles;
//! * [`restore`]: snapshot save and starting a server on a restored data directory;
//! * [`v2`]: raw HTTP against the etcd v2 API (curl) and the normalising of its
//!   answers (indexes relative to the session's start);
//! * [`plugins`]: the workspace's plugin libraries and a Concord that loads them;
//! * [`netns`]: a network-namespace lab ([`netns::NetLab`]): one namespace per cluster
//!   node behind a bridge, with node isolation and healing for partition tests (root);
//! * [`zookeeper`]: real ZooKeeper 3.8 or Concord's ZooKeeper adapter as a
//!   [`zookeeper::ZkServer`], and the ZooKeeper differential runs;
//! * [`bench_flags`] and [`bench_stats`]: the benchmark tools' flags, key picker and
//!   percentiles; [`kv_load`]: the Put/Range load `bench` and `cluster_bench` share,
//!   sent with [`grpc_kv`], a lean gRPC client (one TCP write per request);
//!   [`tls_overhead`]: the plain/TLS comparison `bench --tls` prints;
//! * [`history`] and [`linearizability`]: a thread-safe recorder of what concurrent
//!   clients did and got back, and a Wing–Gong–Lowe linearizability checker (per-key
//!   register model, unknown outcomes, bounded search) with a durability check against
//!   a final read.
//!
//! Every wait is bounded; nothing here panics on failure, it returns an error instead.
//!
//! Environment: `CONCORD_BIN` names the binary under test (default: `release/concord`
//! in a directory above the test executable, i.e. `$CARGO_TARGET_DIR/release/concord`,
//! so build it first with `cargo build --release --bin concord`);
//! `CONCORD_COMPAT_BACKENDS=etcd` (or `concord`) restricts the scenarios to one backend.
//! Neither is passed on to the `concord` process, which reads `CONCORD_*` as its own
//! configuration.

pub mod background;
pub mod bench_flags;
pub mod bench_stats;
pub mod check;
pub mod cluster;
pub mod diff;
pub mod etcdctl;
pub mod fixture;
pub mod grpc_kv;
pub mod history;
pub mod kv_load;
pub mod linearizability;
pub mod netns;
pub mod normalize;
pub mod plugins;
pub mod python;
pub mod restore;
pub mod server;
pub mod streams;
pub mod tls;
pub mod tls_overhead;
pub mod transcripts;
pub mod v2;
pub mod zk_load;
pub mod zookeeper;

pub use cluster::{Cluster, MemberState, Placement};
pub use etcdctl::{Etcdctl, Output, etcdctl};
pub use server::{
    Backend, Server, ServerOptions, Session, backends, concord_skipped, connect, for_each_backend,
    free_port, on_each_backend,
};
