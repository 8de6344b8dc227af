//! The etcd v2 dialect: the HTTP+JSON keys API (`/v2/keys`, with TTLs, compare-and-swap,
//! in-order keys and long-poll waits), `/version`, `/health`, `/v2/members`,
//! `/v2/machines` and `/v2/stats/*`, over the kernel's tree view (v2 keys are paths;
//! directories are tree nodes of kind `Directory`).
//!
//! `error`, `request` and `json` are pure (etcd's error codes, request parsing, response
//! shapes); `keys` and `wait` talk to the kernel; `server` is the HTTP service and its
//! adapter. `metrics` is etcd's other HTTP listener (`--listen-metrics-urls`: `/metrics`
//! and `/health`), an adapter of its own; `listener` is the accept loop both of their
//! own ports use.

pub mod error;
pub mod json;
pub mod keys;
mod listener;
pub mod metrics;
pub mod request;
pub mod server;
pub mod wait;

pub use metrics::MetricsAdapter;
pub use server::{EtcdV2Adapter, V2Service};
