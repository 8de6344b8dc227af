#!/usr/bin/env bash
# Installs what building and testing Concord needs on a fresh Debian machine:
#   build: clang + libclang-dev (RocksDB's bindings); tests: protobuf-compiler (the
#   etcd-client test crate), etcd-server + etcd-client (differential tests against real
#   etcd). Packages already present are not reinstalled.
set -euo pipefail
want=(clang libclang-dev)
if [ "${1:-}" = "--test" ]; then
  want+=(protobuf-compiler etcd-server etcd-client)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
