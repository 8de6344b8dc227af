"""Resumes a ZooKeeper session on other cluster members, then closes it.

Usage: kazoo_cluster_resume.py HOSTS SESSION_ID PASSWORD_HEX PATH SESSION_TIMEOUT

The session was started (by kazoo_holder.py) on a member that is now dead or
frozen; HOSTS are other members. Connects with kazoo's
client_id=(SESSION_ID, password) and a bounded connection retry, and prints one
line "check NAME True|False DETAIL" per check: the session is accepted with the
same id, kazoo never saw LOST, and PATH (the holder's ephemeral node) still
exists, owned by the session; then a line "states ..." with kazoo's state
changes (seconds since the start); then it closes the session and prints
"closed" and "done". Whether the
ephemeral is then gone on every member is the test's to check.

Judging the checks is the test's business: the script exits 0 when it ran to
its end, non-zero on an unexpected exception. Every wait is bounded.
"""

import logging
import sys
import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState
from kazoo_cluster_common import WAIT, check, out, peer, retries


def main():
    hosts, sid, password, path, timeout = (
        sys.argv[1],
        int(sys.argv[2]),
        bytes.fromhex(sys.argv[3]),
        sys.argv[4],
        float(sys.argv[5]),
    )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.monotonic()
    states = []
    client = KazooClient(
        hosts=hosts,
        timeout=timeout,
        client_id=(sid, password),
        **retries(),
    )
    client.add_listener(lambda state: states.append((state, time.monotonic() - started)))
    try:
        client.start(timeout=WAIT)
    except Exception as e:  # kazoo reports a refused session in several ways
        check("resumed", False, f"start failed: {type(e).__name__} {e}")
    else:
        check("resumed", True, f"peer={peer(client)}")
    got = client.client_id[0] if client.client_id else None
    check("same_session", got == sid, f"{got!r} vs {sid:#x}")
    check("never_lost", KazooState.LOST not in [s for s, _ in states])
    try:
        stat = client.exists(path)
        owner = None if stat is None else stat.ephemeralOwner
    except KazooException as e:
        owner = f"error {type(e).__name__}"
    check("ephemeral_owned", owner == sid, f"owner={owner!r}")
    out("states " + " ".join(f"{s}@{t:.2f}s" for s, t in states))
    client.stop()
    client.close()
    out("closed")
    out("done")


if __name__ == "__main__":
    main()
