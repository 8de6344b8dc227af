#!/usr/bin/env bash
# Installs what building and testing Concord needs on a fresh Debian machine:
#   build: clang + libclang-dev (RocksDB's bindings); tests: protobuf-compiler (the
#   etcd-client test crate), etcd-server + etcd-client (differential tests against real
#   etcd), zookeeper (real ZooKeeper 3.8 and zkCli.sh, with its Java runtime), curl (raw
#   HTTP for the etcd v2 tests), and the Python etcd3, python-etcd, kazoo and py-consul
#   clients.
#   What is already present is not reinstalled.
set -euo pipefail
want=(clang libclang-dev)
if [ "${1:-}" = "--test" ]; then
  want+=(protobuf-compiler etcd-server etcd-client zookeeper curl openssl)
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
if [ "${1:-}" = "--test" ]; then
  # Python etcd3 0.12 needs protobuf < 4, and a tenacity old enough for its lock retries.
  if ! python3 -c "import etcd3" >/dev/null 2>&1; then
    echo "installing: python etcd3"
    python3 -m pip install -q --disable-pip-version-check \
      'etcd3==0.12.0' 'protobuf<4' 'tenacity==6.3.1' 2>&1 | grep -v "as the 'root' user" || true
  fi
fi
if [ "${1:-}" = "--test" ] && ! python3 -c "import etcd" >/dev/null 2>&1; then
  echo "installing: python-etcd (etcd v2 client)"
  python3 -m pip install -q --disable-pip-version-check 'python-etcd==0.4.5' 2>&1 \
    | grep -v "as the 'root' user" || true
fi
if [ "${1:-}" = "--test" ] && ! python3 -c "import consul" >/dev/null 2>&1; then
  echo "installing: py-consul (Consul client, for the consul-kv plugin)"
  python3 -m pip install -q --disable-pip-version-check 'py-consul==1.8.0' 2>&1 \
    | grep -v "as the 'root' user" || true
fi
if [ "${1:-}" = "--test" ] && ! python3 -c "import kazoo" >/dev/null 2>&1; then
  echo "installing: python kazoo"
  python3 -m pip install -q --disable-pip-version-check 'kazoo==2.11.0' 2>&1 \
    | grep -v "as the 'root' user" || true
fi
