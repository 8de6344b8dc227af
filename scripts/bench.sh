#!/usr/bin/env bash
# Runs the benchmarks side by side against a real etcd on this machine: the KV load
# (Put and Range), the TLS overhead (the Put load plain, with server TLS and with mutual
# TLS) and the watch fan-out load; then the ZooKeeper load (create, setData, getData)
# side by side against a real ZooKeeper 3.8. Extra arguments go to all of them, so only
# the flags they share (--seconds, --clients, --value-size), e.g.
# `scripts/bench.sh --seconds 20`. Builds the whole workspace first (building only the
# bench crate would change feature unification and rebuild RocksDB).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo build --release --workspace --all-targets
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/bench" "$@"
"$target_dir/release/bench" --tls server,mutual "$@"
"$target_dir/release/watch_bench" "$@"
"$target_dir/release/zk_bench" "$@"
