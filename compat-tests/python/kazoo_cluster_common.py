"""What the kazoo cluster scripts share: their line protocol with the test
(`out`, `check`), the member a client is connected to (`peer`), a production
client's bounded retries (`retries`) and a bounded wait (`wait_until`).

The scripts run as `python3 compat-tests/python/<script>.py`, so this module is
imported from the scripts' own directory.
"""

import time

from kazoo.retry import KazooRetry

WAIT = 30  # seconds: the bound of every wait in the scripts


def out(line):
    print(line, flush=True)


def check(name, ok, detail=""):
    out(f"check {name} {bool(ok)} {detail}".rstrip())


def retries():
    """Connection and command retries with bounded tries and delays."""
    return {
        "connection_retry": KazooRetry(max_tries=60, delay=0.1, backoff=1.5, max_delay=1.0),
        "command_retry": KazooRetry(max_tries=20, delay=0.2, backoff=1.5, max_delay=2.0),
    }


def peer(client):
    """The member kazoo is connected to now (None while it is not)."""
    try:
        sock = client._connection._socket
        if sock is None:
            return None
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError):
        return None


def wait_until(predicate, timeout=WAIT, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
