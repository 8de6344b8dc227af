"""Holds a kazoo Lock and an ephemeral node while the test kills a cluster member.

Usage: kazoo_cluster_lock.py HOSTS LOCK_PATH EPHEMERAL_PATH SESSION_TIMEOUT

HOSTS is every member's ZooKeeper endpoint, comma-separated, tried in that
order (randomize_hosts=False: the test puts first the member it wants kazoo
connected to; when that is the member it kills, kazoo has to move its session
to another member).

The holder uses a connection retry and a command retry (KazooRetry with
bounded tries and delays) and a session timeout well above an election, as a
production client would. The exchange with the test, one line each way:

1. prints "ready session=<hex> peer=<host:port>" once it holds the lock and
   its ephemeral node;
2. reads one line from stdin, "killed <host:port>": the test killed that
   member (SIGKILL) and the survivors elected a new leader;
3. waits (bounded) until kazoo is connected to another member than the killed
   one, then prints one
   line "check NAME True|False DETAIL" per check (same session, never LOST,
   lock still held and its node owned by the session, ephemeral still owned, a
   write through the moved session, a second client's acquire times out while
   the holder holds the lock and succeeds once it releases it), a line
   "states ..." with every kazoo state change and when it happened (seconds
   since the kill), and "done".

Judging the checks is the test's business: the script exits 0 when it ran to
its end, non-zero on an unexpected exception. Every wait is bounded; it also
exits when its parent dies, so it never outlives the test.
"""

import logging
import os
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, LockTimeout
from kazoo.protocol.states import KazooState
from kazoo_cluster_common import WAIT, check, out, peer, retries, wait_until

SECOND_TRY = 3  # seconds the second client tries for the held lock


def read_line_bounded(timeout):
    line = [None]

    def read():
        line[0] = sys.stdin.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0]


def owner_of(client, path):
    try:
        stat = client.retry(client.exists, path)
    except KazooException as e:
        return f"error {type(e).__name__}"
    return None if stat is None else stat.ephemeralOwner


def main():
    hosts, lock_path, eph_path, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    states = []

    def listener(state):
        states.append((state, time.monotonic()))

    holder = KazooClient(hosts=hosts, timeout=timeout, randomize_hosts=False, **retries())
    holder.add_listener(listener)
    holder.start(timeout=WAIT)
    sid = holder.client_id[0]
    lock = holder.Lock(lock_path, "holder")
    if not lock.acquire(timeout=WAIT):
        raise RuntimeError("the holder did not get the free lock")
    holder.create(eph_path, b"held", ephemeral=True, makepath=True)
    before = peer(holder)
    out(f"ready session={sid:#x} peer={before}")

    line = read_line_bounded(120)
    if not line or not line.startswith("killed "):
        raise RuntimeError(f"no word from the test (got {line!r})")
    killed_at = time.monotonic()
    killed = line.split()[1]

    moved = wait_until(lambda: holder.state == KazooState.CONNECTED and peer(holder) not in (None, killed))
    after = peer(holder)
    check("connected_elsewhere", moved, f"before={before} after={after} killed={killed}")
    check("session_unchanged", holder.client_id[0] == sid, f"{holder.client_id[0]:#x} vs {sid:#x}")
    check("never_lost", KazooState.LOST not in [s for s, _ in states])
    check("lock_is_acquired", lock.is_acquired)
    lock_node = f"{lock_path}/{lock.node}" if lock.node else None
    owner = owner_of(holder, lock_node) if lock_node else None
    check("lock_node_owned", owner == sid, f"node={lock_node} owner={owner!r}")
    owner = owner_of(holder, eph_path)
    check("ephemeral_owned", owner == sid, f"owner={owner!r}")
    try:
        # Through the command retry, as a client does: during the election a member
        # answers OperationTimeout, which kazoo's retry handles.
        holder.retry(holder.set, eph_path, b"after the failover")
        data, _ = holder.retry(holder.get, eph_path)
        check("write_after_failover", data == b"after the failover")
    except KazooException as e:
        check("write_after_failover", False, type(e).__name__)

    second = KazooClient(hosts=hosts, timeout=timeout, **retries())
    second.start(timeout=WAIT)
    check("second_session_distinct", second.client_id[0] != sid)
    other = second.Lock(lock_path, "second")
    try:
        got = other.acquire(timeout=SECOND_TRY)
    except LockTimeout:
        got = False
    check("second_blocked_while_held", not got)
    check("contenders_while_held", other.contenders() == ["holder"], f"{other.contenders()!r}")
    owner = owner_of(second, lock_node) if lock_node else None
    check("second_sees_holder_lock_node", owner == sid, f"owner={owner!r}")

    released = lock.release()
    check("holder_released", released and not lock.is_acquired)
    try:
        got = other.acquire(timeout=WAIT)
    except LockTimeout:
        got = False
    check("second_acquires_after_release", got)
    check("contenders_after_release", other.contenders() == ["second"], f"{other.contenders()!r}")
    other.release()
    names = [f"{s}@{t - killed_at:+.2f}s" for s, t in states]
    out("states " + " ".join(names))

    holder.stop()
    holder.close()
    gone = wait_until(lambda: second.retry(second.exists, eph_path) is None, timeout=10)
    check("ephemeral_gone_after_close", gone)
    second.stop()
    second.close()
    out("done")


if __name__ == "__main__":
    parent = os.getppid()

    def orphan_guard():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=orphan_guard, daemon=True).start()
    main()
