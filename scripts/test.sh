#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit tests, and the compat tests that
# drive the real `concord` binary with etcdctl and the etcd-client crate, beside a real
# etcd. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The compat tests start the binary, so build it first.
cargo build --release --workspace --all-targets
# Without pipefail here, so that a failing test run still reaches the summary line.
set +o pipefail
cargo test --release --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/concord-test.log"
status=${PIPESTATUS[0]}
set -o pipefail
passed=$(grep -Eo '[0-9]+ passed' "${TMPDIR:-/tmp}/concord-test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${TMPDIR:-/tmp}/concord-test.log" | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
exit "$status"
