"""Holds one ZooKeeper session with an ephemeral node until it is killed.

Usage: kazoo_holder.py HOST:PORT PATH TIMEOUT_SECONDS

Connects with kazoo, creates PATH as an ephemeral node, prints one line
"<session id> <password hex>" and then waits. kazoo_session.py kills it with
SIGKILL, so the session is never closed: only its expiry (or a client resuming
it) ends it. It also exits by itself when its parent dies or after 120 s, so
it never outlives the test.
"""

import os
import sys
import time

from kazoo.client import KazooClient


def main():
    hosts, path, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    parent = os.getppid()
    client = KazooClient(hosts=hosts, timeout=timeout)
    client.start(timeout=10)
    client.create(path, b"held", ephemeral=True)
    sid, password = client.client_id
    print(f"{sid} {password.hex()}", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.2)
    # Only reached when the parent vanished: end the session cleanly.
    client.stop()
    client.close()


if __name__ == "__main__":
    main()
