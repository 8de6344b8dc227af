"""A scripted session with the Python `etcd3` client (0.12) against one endpoint.

Prints one line per fact a client depends on, with nothing that legitimately differs
between servers (ids, times); the Rust test runs it against real etcd and Concord and
compares the two transcripts line by line. Usage: etcd3_session.py HOST:PORT
"""

import sys
import threading
import time

import etcd3


def main(endpoint):
    host, port = endpoint.rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=10)
    out = []

    def say(*parts):
        out.append(" ".join(str(p) for p in parts))

    # KV
    client.put("py/a", "1")
    client.put("py/b", "2")
    value, meta = client.get("py/a")
    say("get", value, meta.version, meta.lease_id)
    say("prefix", [(v, m.key) for v, m in client.get_prefix("py/")])
    say("missing", client.get("py/zz"))
    say("delete", client.delete("py/b"), client.delete("py/b"))
    ok, responses = client.transaction(
        compare=[client.transactions.value("py/a") == "1"],
        success=[client.transactions.put("py/a", "2")],
        failure=[client.transactions.get("py/a")],
    )
    say("txn", ok, client.get("py/a")[0])
    ok, responses = client.transaction(
        compare=[client.transactions.version("py/a") == 1],
        success=[],
        failure=[client.transactions.get("py/a")],
    )
    say("txn-else", ok, [[(v, m.version) for v, m in r] for r in responses])
    say("replace", client.replace("py/a", "2", "3"), client.replace("py/a", "2", "4"))

    # Watch: events of a prefix in order.
    events = []
    done = threading.Event()

    def on_event(response):
        for ev in response.events:
            events.append((type(ev).__name__, ev.key.decode(), ev.value.decode()))
        if len(events) >= 3:
            done.set()

    watch_id = client.add_watch_prefix_callback("py/w/", on_event)
    client.put("py/w/x", "1")
    client.put("py/w/x", "2")
    client.delete("py/w/x")
    say("watch", done.wait(10), events)
    client.cancel_watch(watch_id)

    # Leases.
    lease = client.lease(1)
    say("lease-ttl-floor", lease.granted_ttl)
    client.put("py/l", "v", lease=lease)
    say("lease-keys", [k.decode() for k in lease.keys])
    lease.revoke()
    say("after-revoke", client.get("py/l"))
    short = client.lease(2)
    client.put("py/short", "v", lease=short)
    for _ in range(100):
        if client.get("py/short")[0] is None:
            break
        time.sleep(0.1)
    say("expired", client.get("py/short")[0])

    # Lock.
    lock = client.lock("py-lock", ttl=10)
    say("lock", lock.acquire(timeout=5), lock.is_acquired())
    other = client.lock("py-lock", ttl=10)
    say("second-lock", other.acquire(timeout=1))
    lock.release()
    say("second-lock-after-release", other.acquire(timeout=5))
    other.release()

    # Errors.
    try:
        client.put("", "x")
        say("empty-key", "accepted")
    except Exception as e:  # noqa: BLE001 - the class name is the fact
        say("empty-key", type(e).__name__)
    client.put("py/c", "1")
    rev = client.put("py/c", "2").header.revision
    client.compact(rev)
    try:
        client.compact(rev)
        say("compact-again", "accepted")
    except Exception as e:  # noqa: BLE001
        say("compact-again", type(e).__name__)
    say("members", len(list(client.members)))
    client.close()
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
