#!/usr/bin/env bash
# Builds and runs one Concord node with the default configuration (etcd v3 on
# 127.0.0.1:2379, data in ./concord-data). Extra arguments go to `concord serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin concord
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/concord" serve "$@"
