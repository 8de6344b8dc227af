"""One scripted kazoo (2.11) session against a ZooKeeper server.

Usage: kazoo_session.py HOST:PORT

Prints a deterministic transcript, one line per step, so that the transcript
of real ZooKeeper 3.8 and the one of Concord can be compared line by line.
zxids and times are shown only by their relations (czxid==mzxid, pzxid>czxid,
...), session ids only by whose session they are.

Covers CRUD, sequential and ephemeral nodes, multi, ACLs, sessions (resume,
close, expiry), one-shot and persistent (recursive) watches, containers, TTL
nodes and the kazoo recipes. kazoo 2.11 has no API for containers, TTL nodes
or addWatch, so those requests (opcodes 19, 21 and 106) are sent through
kazoo's own connection (`KazooClient._call`) with the request records
defined below; everything else is plain kazoo.

Every wait is bounded; a step that times out prints a line saying so (which
makes the transcripts differ) instead of hanging. Exits 0 when the script ran
to its end, non-zero on an unexpected (non-ZooKeeper) exception.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.serialization import (
    Create2,
    Watch,
    int_struct,
    long_struct,
    write_string,
)
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.security import OPEN_ACL_UNSAFE, make_acl, make_digest_acl

HOSTS = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 10  # seconds: the bound of every wait for an event

# ---------------------------------------------------------------- output


def out(line):
    print(line, flush=True)


SESSIONS = {}  # session id -> name, for ephemeralOwner


def rel(a, b):
    return "<" if a < b else ("==" if a == b else ">")


def owner(value):
    if value == 0:
        return "0"
    if value in SESSIONS:
        return SESSIONS[value]
    return hex(value & 0xFFFFFFFFFFFFFFFF)


def st(s):
    """A stat by its relations: no absolute zxids or times."""
    if s is None:
        return "None"
    return (
        f"version={s.version} cversion={s.cversion} aversion={s.aversion} "
        f"numChildren={s.numChildren} dataLength={s.dataLength} "
        f"czxid{rel(s.czxid, s.mzxid)}mzxid pzxid{rel(s.pzxid, s.czxid)}czxid "
        f"pzxid{rel(s.pzxid, s.mzxid)}mzxid "
        f"ctime>0={s.ctime > 0} mtime{'>=' if s.mtime >= s.ctime else '<'}ctime "
        f"owner={owner(s.ephemeralOwner)}"
    )


def fmt(value):
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, ZnodeStat):
        return "stat(" + st(value) + ")"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], ZnodeStat):
        return f"{fmt(value[0])} stat({st(value[1])})"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, bytes):
        return repr(value)
    return repr(value)


def step(name, fn):
    """Runs fn; prints its result, or the ZooKeeper error's class name."""
    try:
        value = fn()
    except KazooException as e:
        out(f"{name}: {type(e).__name__}")
        return e
    out(f"{name}: {fmt(value)}")
    return value


def wait_until(predicate, timeout=WAIT, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def connect(name, **kwargs):
    client = KazooClient(hosts=HOSTS, timeout=kwargs.pop("timeout", 10), **kwargs)
    client.start(timeout=WAIT)
    SESSIONS[client.client_id[0]] = name
    return client


def close(client):
    client.stop()
    client.close()


# ------------------------------------------- requests kazoo 2.11 lacks

CONTAINER = 4
PERSISTENT_WITH_TTL = 5
ADD_WATCH_PERSISTENT = 0
ADD_WATCH_PERSISTENT_RECURSIVE = 1


class CreateContainer(Create2):
    """createContainer (opcode 19): a CreateRequest with flags CONTAINER."""

    type = 19


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """createTTL (opcode 21): CreateTTLRequest; replies like create2."""

    type = 21

    def serialize(self):
        b = Create2(self.path, self.data, self.acl, self.flags).serialize()
        b.extend(long_struct.pack(self.ttl))
        return b

    @classmethod
    def deserialize(cls, buffer, offset):
        return Create2.deserialize(buffer, offset)


class AddWatch(namedtuple("AddWatch", "path mode")):
    """addWatch (opcode 106): AddWatchRequest; the reply body is ignored."""

    type = 106

    def serialize(self):
        return bytearray(write_string(self.path) + int_struct.pack(self.mode))

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


def raw(client, request):
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=WAIT)


EVENT_NAMES = {1: "NodeCreated", 2: "NodeDeleted", 3: "NodeDataChanged", 4: "NodeChildrenChanged"}


class EventLog:
    """Events recorded in arrival order, with bounded waits."""

    def __init__(self):
        self.events = []
        self.cond = threading.Condition()

    def add(self, text):
        with self.cond:
            self.events.append(text)
            self.cond.notify_all()

    def watcher(self, event):
        self.add(f"{event.type} {event.path}")

    def wait_count(self, n, timeout=WAIT):
        with self.cond:
            self.cond.wait_for(lambda: len(self.events) >= n, timeout)
            return len(self.events) >= n

    def settle(self, n, quiet=0.5):
        """Waits for n events, then a quiet moment to catch extra ones."""
        ok = self.wait_count(n)
        time.sleep(quiet)
        with self.cond:
            return ok, list(self.events)


def hook_persistent(client, log):
    """Records every watch notification the client receives (kazoo itself only
    dispatches notifications to its one-shot watchers)."""
    original = client._connection._read_watch_event

    def read_watch_event(buffer, offset):
        watch, _ = Watch.deserialize(buffer, offset)
        log.add(f"{EVENT_NAMES.get(watch.type, watch.type)} {watch.path}")
        return original(buffer, offset)

    client._connection._read_watch_event = read_watch_event


# ---------------------------------------------------------------- steps


def basics(c1):
    out("== basics")
    step("ruok", lambda: c1.command(b"ruok"))
    step("children /", lambda: sorted(c1.get_children("/")))
    step("children /zookeeper", lambda: sorted(c1.get_children("/zookeeper")))
    step("create /kz", lambda: c1.create("/kz", b"root"))
    root = c1.exists("/kz")
    created = step("create /kz/a include_data", lambda: c1.create("/kz/a", b"one", include_data=True))
    a0 = created[1]
    out(f"a.czxid{rel(a0.czxid, root.czxid)}kz.czxid")
    step("get /kz/a", lambda: c1.get("/kz/a"))
    a1 = step("set /kz/a", lambda: c1.set("/kz/a", b"two"))
    out(f"set.mzxid{rel(a1.mzxid, a0.mzxid)}create.mzxid")
    step("set /kz/a version=1", lambda: c1.set("/kz/a", b"three", version=1))
    step("set /kz/a version=1 again", lambda: c1.set("/kz/a", b"four", version=1))
    step("set /kz/missing", lambda: c1.set("/kz/missing", b"x"))
    step("exists /kz/a", lambda: c1.exists("/kz/a"))
    step("exists /kz/missing", lambda: c1.exists("/kz/missing"))
    step("get /kz/missing", lambda: c1.get("/kz/missing"))
    step("create /kz/a again", lambda: c1.create("/kz/a", b"dup"))
    step("create /kz/x/y no makepath", lambda: c1.create("/kz/x/y", b""))
    step("create /kz/deep/er/node makepath", lambda: c1.create("/kz/deep/er/node", b"d", makepath=True))
    step("get /kz/deep/er", lambda: c1.get("/kz/deep/er"))
    step("children /kz/deep", lambda: c1.get_children("/kz/deep"))
    step("create /kz/empty", lambda: c1.create("/kz/empty"))
    step("get /kz/empty", lambda: c1.get("/kz/empty"))
    step("create /kz/a/c1", lambda: c1.create("/kz/a/c1", b"1"))
    c2 = step("create /kz/a/c2 include_data", lambda: c1.create("/kz/a/c2", b"2", include_data=True))[1]
    a2 = c1.exists("/kz/a")
    step("exists /kz/a after children", lambda: a2)
    out(f"a.pzxid{rel(a2.pzxid, c2.czxid)}c2.czxid")
    step("children /kz/a", lambda: sorted(c1.get_children("/kz/a")))
    kids, kstat = c1.get_children("/kz/a", include_data=True)
    out(f"children /kz/a include_data: {sorted(kids)} stat({st(kstat)})")
    step("set /kz/a/c1 (parent unchanged)", lambda: c1.set("/kz/a/c1", b"1b").version)
    step("exists /kz/a after child set", lambda: c1.exists("/kz/a"))
    step("delete /kz/a not empty", lambda: c1.delete("/kz/a"))
    step("delete /kz/a/c1 version=5", lambda: c1.delete("/kz/a/c1", version=5))
    step("delete /kz/a/c1 version=1", lambda: c1.delete("/kz/a/c1", version=1))
    step("exists /kz/a after delete", lambda: c1.exists("/kz/a"))
    step("delete /kz/missing", lambda: c1.delete("/kz/missing"))
    step("delete /kz/a recursive", lambda: c1.delete("/kz/a", recursive=True))
    step("exists /kz/a after recursive", lambda: c1.exists("/kz/a"))
    step("sync /kz", lambda: c1.sync("/kz"))
    big = b"z" * 100000
    step("create /kz/big 100000 bytes", lambda: c1.create("/kz/big", big))
    step("get /kz/big length", lambda: len(c1.get("/kz/big")[0]))


def sequential_and_ephemeral(c1):
    out("== sequential and ephemeral")
    step("create /kz/seq/n- seq makepath", lambda: c1.create("/kz/seq/n-", b"", sequence=True, makepath=True))
    step("create /kz/seq/n- seq", lambda: c1.create("/kz/seq/n-", b"", sequence=True))
    step("create /kz/seq/plain", lambda: c1.create("/kz/seq/plain"))
    step("create /kz/seq/n- seq after plain", lambda: c1.create("/kz/seq/n-", b"", sequence=True))
    step("delete /kz/seq/plain", lambda: c1.delete("/kz/seq/plain"))
    step("create /kz/seq/n- seq after delete", lambda: c1.create("/kz/seq/n-", b"", sequence=True))
    step("create /kz/seq/ (empty prefix) seq", lambda: c1.create("/kz/seq/", b"", sequence=True))
    step("create /kz/seq/e- ephemeral seq", lambda: c1.create("/kz/seq/e-", b"e", ephemeral=True, sequence=True))
    step("children /kz/seq", lambda: sorted(c1.get_children("/kz/seq")))
    step("exists /kz/seq", lambda: c1.exists("/kz/seq"))
    step("create /kz/eph ephemeral", lambda: c1.create("/kz/eph", b"e", ephemeral=True))
    step("exists /kz/eph", lambda: c1.exists("/kz/eph"))
    step("create /kz/eph/child", lambda: c1.create("/kz/eph/child", b""))
    step("create /kz/eph2 ephemeral include_data", lambda: c1.create("/kz/eph2", b"", ephemeral=True, include_data=True))


def multi(c1):
    out("== multi")
    t = c1.transaction()
    t.create("/kz/t1", b"x")
    t.set_data("/kz/t1", b"y")
    t.delete("/kz/missing")
    t.create("/kz/t2", b"z")
    step("multi with failing delete", lambda: t.commit())
    step("exists /kz/t1 after failed multi", lambda: c1.exists("/kz/t1"))
    t = c1.transaction()
    t.create("/kz/t1", b"x")
    t.set_data("/kz/t1", b"y", version=0)
    t.check("/kz/t1", 1)
    t.create("/kz/t2", b"z")
    t.delete("/kz/t2")
    step("multi ok", lambda: t.commit())
    step("get /kz/t1", lambda: c1.get("/kz/t1"))
    step("exists /kz/t2", lambda: c1.exists("/kz/t2"))
    t = c1.transaction()
    t.check("/kz/t1", 5)
    t.set_data("/kz/t1", b"never")
    step("multi failing check", lambda: t.commit())
    t = c1.transaction()
    t.set_data("/kz/t1", b"w")
    t.create("/kz/t1", b"dup")
    step("multi node exists", lambda: t.commit())
    step("get /kz/t1 after failed multis", lambda: c1.get("/kz/t1"))
    t = c1.transaction()
    t.create("/kz/t3", b"")
    t.create("/kz/t3/s-", b"", sequence=True)
    t.create("/kz/t3/e", b"", ephemeral=True)
    step("multi sequential + ephemeral", lambda: t.commit())
    step("exists /kz/t3/e", lambda: c1.exists("/kz/t3/e"))
    t = c1.transaction()
    t.delete("/kz/t3/e")
    t.delete("/kz/t3")
    step("multi delete not empty", lambda: t.commit())


def acls(c1):
    out("== acls")
    digest = make_digest_acl("user", "pw", all=True)
    out(f"digest id: {digest.id.scheme}:{digest.id.id} perms={digest.perms}")
    step("create /kz/secret digest acl", lambda: c1.create("/kz/secret", b"s", acl=[digest]))
    c2 = connect("c2")
    step("c2 get /kz/secret", lambda: c2.get("/kz/secret"))
    step("c2 set /kz/secret", lambda: c2.set("/kz/secret", b"x"))
    step("c2 exists /kz/secret", lambda: c2.exists("/kz/secret"))
    step("c2 children /kz/secret", lambda: c2.get_children("/kz/secret"))
    step("c2 create /kz/secret/child", lambda: c2.create("/kz/secret/child"))
    step("c2 get_acls /kz/secret", lambda: c2.get_acls("/kz/secret"))
    step("c2 add_auth digest", lambda: c2.add_auth("digest", "user:pw"))
    step("c2 get /kz/secret after auth", lambda: c2.get("/kz/secret"))
    acl_list, acl_stat = c2.get_acls("/kz/secret")
    out(f"c2 get_acls: {[(a.perms, a.id.scheme, a.id.id) for a in acl_list]} stat({st(acl_stat)})")
    reader = make_acl("world", "anyone", read=True)
    step("c2 set_acls version=0", lambda: c2.set_acls("/kz/secret", [digest, reader], version=0))
    step("c2 set_acls version=0 again", lambda: c2.set_acls("/kz/secret", [digest], version=0))
    acl_list, acl_stat = c1.get_acls("/kz/secret")
    out(f"c1 get_acls: {sorted((a.perms, a.id.scheme, a.id.id) for a in acl_list)} aversion={acl_stat.aversion}")
    step("c1 get /kz/secret (world read)", lambda: c1.get("/kz/secret"))
    step("c1 set /kz/secret (no write)", lambda: c1.set("/kz/secret", b"no"))
    step("c1 set_acls /kz/secret (no admin)", lambda: c1.set_acls("/kz/secret", OPEN_ACL_UNSAFE))
    step("create bad scheme acl", lambda: c1.create("/kz/bad", b"", acl=[make_acl("bogus", "x", all=True)]))
    step("create auth acl without auth", lambda: c1.create("/kz/bad", b"", acl=[make_acl("auth", "", all=True)]))
    step("create empty acl", lambda: raw(c1, Create2("/kz/bad", b"", [], 0)))
    step("create malformed digest acl", lambda: c1.create("/kz/bad", b"", acl=[make_acl("digest", "nocolon", all=True)]))
    step("create malformed ip acl", lambda: c1.create("/kz/bad", b"", acl=[make_acl("ip", "not-an-ip", all=True)]))
    step("exists /kz/bad", lambda: c1.exists("/kz/bad"))
    step("c2 create /kz/mine auth acl", lambda: c2.create("/kz/mine", b"m", acl=[make_acl("auth", "", all=True)]))
    acl_list, _ = c2.get_acls("/kz/mine")
    out(f"c2 get_acls /kz/mine: {[(a.perms, a.id.scheme, a.id.id) for a in acl_list]}")
    step("c1 get /kz/mine", lambda: c1.get("/kz/mine"))
    step("create /kz/ro world read-only", lambda: c1.create("/kz/ro", b"r", acl=[reader]))
    step("set /kz/ro", lambda: c1.set("/kz/ro", b"w"))
    step("create /kz/ro/child", lambda: c1.create("/kz/ro/child"))
    step("delete /kz/ro (parent allows)", lambda: c1.delete("/kz/ro"))
    step("create /kz/ip ip acl", lambda: c1.create("/kz/ip", b"i", acl=[make_acl("ip", "127.0.0.1", all=True)]))
    step("c2 get /kz/ip", lambda: c2.get("/kz/ip"))
    step("create /kz/ipnet ip/cidr acl", lambda: c1.create("/kz/ipnet", b"n", acl=[make_acl("ip", "10.0.0.0/8", all=True)]))
    step("c2 get /kz/ipnet", lambda: c2.get("/kz/ipnet"))
    close(c2)


def watches(c1):
    out("== watches")
    c2 = connect("c2w")
    c1.create("/kz/w", b"0")
    log = EventLog()
    step("get /kz/w with watch", lambda: c1.get("/kz/w", watch=log.watcher)[0])
    c2.set("/kz/w", b"1")
    c2.set("/kz/w", b"2")
    ok, events = log.settle(1)
    out(f"data watch after two sets: {events} (waited: {ok})")
    log = EventLog()
    c1.get("/kz/w", watch=log.watcher)
    c2.delete("/kz/w")
    ok, events = log.settle(1)
    out(f"data watch on delete: {events}")
    log = EventLog()
    step("exists /kz/w2 with watch", lambda: c1.exists("/kz/w2", watch=log.watcher))
    c2.create("/kz/w2", b"")
    ok, events = log.settle(1)
    out(f"exists watch on create: {events}")
    log = EventLog()
    c1.exists("/kz/w2", watch=log.watcher)
    c2.set("/kz/w2", b"x")
    ok, events = log.settle(1)
    out(f"exists watch on set: {events}")
    c1.create("/kz/wc", b"")
    log = EventLog()
    step("children /kz/wc with watch", lambda: c1.get_children("/kz/wc", watch=log.watcher))
    c2.create("/kz/wc/a", b"")
    c2.create("/kz/wc/b", b"")
    ok, events = log.settle(1)
    out(f"child watch after two creates: {events}")
    log = EventLog()
    c1.get_children("/kz/wc", watch=log.watcher)
    c2.set("/kz/wc/a", b"data")
    c2.set("/kz/wc", b"parent data")
    c2.delete("/kz/wc/a")
    ok, events = log.settle(1)
    out(f"child watch ignores data changes, fires on delete: {events}")
    log = EventLog()
    c1.get_children("/kz/wc", watch=log.watcher)
    c1.get("/kz/wc", watch=log.watcher)
    c2.delete("/kz/wc/b")
    c2.delete("/kz/wc")
    ok, events = log.settle(2)
    out(f"child + data watch, child then node deleted: {events}")
    log = EventLog()
    c1.exists("/kz/w3", watch=log.watcher)
    c1.exists("/kz/w3", watch=log.watcher)
    c2.create("/kz/w3", b"")
    ok, events = log.settle(1)
    out(f"same watcher set twice fires once: {events}")

    # Persistent watches: addWatch through a client of its own.
    c3 = connect("c3")
    log = EventLog()
    hook_persistent(c3, log)
    c1.create("/kz/pw", b"")
    step("addWatch /kz/pw persistent", lambda: raw(c3, AddWatch("/kz/pw", ADD_WATCH_PERSISTENT)))
    c2.set("/kz/pw", b"1")
    c2.set("/kz/pw", b"2")
    c2.create("/kz/pw/child", b"")
    c2.set("/kz/pw/child", b"x")
    c2.create("/kz/pw/child/grand", b"")
    c2.delete("/kz/pw/child/grand")
    c2.delete("/kz/pw/child")
    c2.delete("/kz/pw")
    c2.create("/kz/pw", b"")
    ok, events = log.settle(6)
    out(f"persistent watch events: {events}")
    log2 = EventLog()
    hook_persistent(c3, log2)
    c1.create("/kz/pr", b"")
    step("addWatch /kz/pr persistent recursive", lambda: raw(c3, AddWatch("/kz/pr", ADD_WATCH_PERSISTENT_RECURSIVE)))
    c2.create("/kz/pr/a", b"")
    c2.set("/kz/pr/a", b"1")
    c2.create("/kz/pr/a/b", b"")
    c2.set("/kz/pr", b"top")
    c2.delete("/kz/pr/a/b")
    c2.create("/kz/prx", b"")  # a sibling with the same prefix: not under /kz/pr
    ok, events = log2.settle(5)
    out(f"persistent recursive watch events: {events}")
    close(c3)
    close(c2)


def sessions(c1):
    out("== sessions")
    c1.create("/kz/sess", b"")
    holder = start_holder("/kz/sess/b")
    sid, password = holder_session(holder)
    SESSIONS[sid] = "holder-b"
    out(f"holder b created ephemeral: {fmt(c1.exists('/kz/sess/b'))}")
    kill(holder)
    out(f"after kill -9 of b, ephemeral still there: {c1.exists('/kz/sess/b') is not None}")
    resumed = KazooClient(hosts=HOSTS, timeout=4, client_id=(sid, password))
    resumed.start(timeout=WAIT)
    out(f"resumed session id == b: {resumed.client_id[0] == sid}")
    step("resumed exists /kz/sess/b", lambda: resumed.exists("/kz/sess/b"))
    step("resumed create /kz/sess/c ephemeral", lambda: resumed.create("/kz/sess/c", b"", ephemeral=True))
    step("children /kz/sess", lambda: sorted(c1.get_children("/kz/sess")))
    close(resumed)
    out(f"after close: ephemerals gone within {WAIT}s: {wait_until(lambda: c1.get_children('/kz/sess') == [])}")

    holder = start_holder("/kz/sess/d")
    sid, password = holder_session(holder)
    SESSIONS[sid] = "holder-d"
    log = EventLog()
    c1.get("/kz/sess/d", watch=log.watcher)
    kill(holder)
    killed = time.monotonic()
    out(f"after kill -9 of d, ephemeral still there: {c1.exists('/kz/sess/d') is not None}")
    ok = log.wait_count(1, timeout=20)
    elapsed = time.monotonic() - killed
    out(f"expiry: {log.events} within 20s: {ok}; not before 2s: {elapsed >= 2}")
    step("exists /kz/sess/d after expiry", lambda: c1.exists("/kz/sess/d"))
    states = []
    expired = KazooClient(hosts=HOSTS, timeout=4, client_id=(sid, password))
    expired.add_listener(lambda state: states.append(state))
    try:
        expired.start(timeout=WAIT)
        out(f"resume expired session: connected, new session: {expired.client_id[0] != sid}")
    except Exception as e:  # kazoo reports an expired session in its own ways
        out(f"resume expired session: {type(e).__name__}")
    out(f"resume expired session: states seen include LOST: {KazooState.LOST in states}")
    close(expired)


def start_holder(path):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "kazoo_holder.py"), HOSTS, path, "4"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def holder_session(holder):
    line = [None]

    def read():
        line[0] = holder.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(WAIT * 2)
    if not line[0]:
        kill(holder)
        raise RuntimeError("the holder did not report its session")
    sid, password = line[0].split()
    return int(sid), bytes.fromhex(password)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(WAIT)


def containers_and_ttl(c1):
    out("== containers and ttl")
    step("create container /kz/ctr", lambda: raw(c1, CreateContainer("/kz/ctr", b"c", OPEN_ACL_UNSAFE, CONTAINER)))
    step("exists /kz/ctr", lambda: c1.exists("/kz/ctr"))
    step("create container /kz/ctr_empty", lambda: raw(c1, CreateContainer("/kz/ctr_empty", b"", OPEN_ACL_UNSAFE, CONTAINER)))
    step("create /kz/ctr/child", lambda: c1.create("/kz/ctr/child", b""))
    time.sleep(2.5)
    out(f"container with a child kept: {c1.exists('/kz/ctr') is not None}")
    c1.delete("/kz/ctr/child")
    out(f"container gone within {WAIT}s after last child deleted: {wait_until(lambda: c1.exists('/kz/ctr') is None)}")
    out(f"container that never had children kept: {c1.exists('/kz/ctr_empty') is not None}")
    step("createContainer with flags 0", lambda: raw(c1, CreateContainer("/kz/ctr2", b"", OPEN_ACL_UNSAFE, 0)))
    step("create ttl /kz/ttl ttl=1000", lambda: raw(c1, CreateTTL("/kz/ttl", b"t", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 1000)))
    step("exists /kz/ttl", lambda: c1.exists("/kz/ttl"))
    out(f"ttl node gone within {WAIT}s: {wait_until(lambda: c1.exists('/kz/ttl') is None)}")
    step("create ttl with persistent flags", lambda: raw(c1, CreateTTL("/kz/ttl2", b"", OPEN_ACL_UNSAFE, 0, 1000)))
    step("create ttl=0", lambda: raw(c1, CreateTTL("/kz/ttl3", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 0)))
    step("create ttl sequential", lambda: raw(c1, CreateTTL("/kz/ttls-", b"", OPEN_ACL_UNSAFE, 6, 60000))[0])
    step("create ttl with a child kept", lambda: raw(c1, CreateTTL("/kz/ttlp", b"", OPEN_ACL_UNSAFE, PERSISTENT_WITH_TTL, 500))[0])
    c1.create("/kz/ttlp/child", b"")
    time.sleep(2.5)
    out(f"ttl node with a child kept: {c1.exists('/kz/ttlp') is not None}")


def recipes(c1):
    out("== recipes")
    c2 = connect("c2r")

    # Lock
    l1 = c1.Lock("/kz/lock", "one")
    l2 = c2.Lock("/kz/lock", "two")
    order = EventLog()
    step("lock one acquire", lambda: l1.acquire(timeout=WAIT))
    step("lock two non-blocking", lambda: l2.acquire(blocking=False))

    def second():
        if l2.acquire(timeout=WAIT):
            order.add("two acquired")
            l2.release()
            order.add("two released")

    t = threading.Thread(target=second)
    t.start()
    wait_until(lambda: len(l1.contenders()) == 2)
    step("lock contenders", lambda: l1.contenders())
    time.sleep(0.3)
    order.add("one releases")
    l1.release()
    t.join(WAIT)
    order.wait_count(3)
    out(f"lock order: {order.events}")
    step("lock contenders after", lambda: l1.contenders())

    # Election
    e1 = c1.Election("/kz/elect", "c1")
    e2 = c2.Election("/kz/elect", "c2")
    log = EventLog()
    release = threading.Event()

    def lead(name, hold):
        log.add(f"{name} leads")
        if hold:
            release.wait(WAIT)

    t1 = threading.Thread(target=lambda: e1.run(lead, "c1", True))
    t1.start()
    log.wait_count(1)
    t2 = threading.Thread(target=lambda: e2.run(lead, "c2", False))
    t2.start()
    wait_until(lambda: len(e1.contenders()) == 2)
    step("election contenders", lambda: e1.contenders())
    release.set()
    t1.join(WAIT)
    t2.join(WAIT)
    log.wait_count(2)
    out(f"election order: {log.events}")

    # Barrier
    b1 = c1.Barrier("/kz/barrier")
    b2 = c2.Barrier("/kz/barrier")
    step("barrier create", lambda: b1.create())
    passed = []
    t = threading.Thread(target=lambda: passed.append(b2.wait(WAIT)))
    t.start()
    time.sleep(0.5)
    out(f"barrier waiter passed before remove: {passed}")
    step("barrier remove", lambda: b1.remove())
    t.join(WAIT)
    out(f"barrier waiter passed after remove: {passed}")
    step("barrier wait when absent", lambda: b2.wait(1))

    # DoubleBarrier
    d1 = c1.DoubleBarrier("/kz/dbar", 2)
    d2 = c2.DoubleBarrier("/kz/dbar", 2)
    log = EventLog()
    first_in = threading.Event()

    def enter_leave(barrier, name, first):
        barrier.enter()
        log.add("entered")
        if first:
            first_in.set()
        barrier.leave()
        log.add("left")

    ta = threading.Thread(target=enter_leave, args=(d1, "d1", True))
    ta.start()
    time.sleep(0.5)
    out(f"double barrier: one participant alone entered: {first_in.is_set()}")
    tb = threading.Thread(target=enter_leave, args=(d2, "d2", False))
    tb.start()
    ta.join(WAIT)
    tb.join(WAIT)
    log.wait_count(4)
    out(f"double barrier: {sorted(log.events)}; both entered before any left: {log.events[:2] == ['entered', 'entered']}")

    # Queue
    q1 = c1.Queue("/kz/queue")
    q2 = c2.Queue("/kz/queue")
    q1.put(b"a")
    q1.put(b"b")
    q1.put(b"urgent", priority=1)
    step("queue len", lambda: len(q2))
    step("queue gets", lambda: [q2.get(), q1.get(), q2.get(), q2.get()])

    # LockingQueue
    lq1 = c1.LockingQueue("/kz/lqueue")
    lq2 = c2.LockingQueue("/kz/lqueue")
    lq1.put_all([b"x", b"y"])
    step("locking queue c2 get", lambda: lq2.get(WAIT))
    step("locking queue c1 get", lambda: lq1.get(WAIT))
    step("locking queue c1 consume", lambda: lq1.consume())
    step("locking queue c2 release", lambda: lq2.release())
    step("locking queue c1 get again", lambda: lq1.get(WAIT))
    step("locking queue c1 consume again", lambda: lq1.consume())
    step("locking queue len", lambda: len(lq2))
    step("locking queue get when empty", lambda: lq2.get(0.5))

    # Counter
    k1 = c1.Counter("/kz/counter")
    k1 += 5

    def bump(client):
        counter = client.Counter("/kz/counter")
        for _ in range(10):
            counter += 1

    threads = [threading.Thread(target=bump, args=(c,)) for c in (c1, c2, c1, c2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    step("counter after 4 threads x 10", lambda: c2.Counter("/kz/counter").value)
    f1 = c1.Counter("/kz/fcounter", default=0.0)
    f1 += 1.5
    step("float counter", lambda: c2.Counter("/kz/fcounter", default=0.0).value)

    # Party
    p1 = c1.Party("/kz/party", "p1")
    p2 = c2.Party("/kz/party", "p2")
    p1.join()
    p2.join()
    step("party members", lambda: sorted(p1))
    step("party len", lambda: len(p2))
    p2.leave()
    step("party after leave", lambda: sorted(p1))
    s1 = c1.ShallowParty("/kz/sparty", "s1")
    s2 = c2.ShallowParty("/kz/sparty", "s2")
    s1.join()
    s2.join()
    step("shallow party members", lambda: sorted(s2))

    # SetPartitioner
    items = [1, 2, 3, 4]
    parts = [
        c.SetPartitioner("/kz/partition", set=items, identifier=name, time_boundary=1)
        for c, name in ((c1, "p1"), (c2, "p2"))
    ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in parts:
            if p.release:
                p.release_set()
            elif p.allocating:
                p.wait_for_acquire(0.5)
        if all(p.acquired for p in parts) and sorted(sum((list(p) for p in parts), [])) == items:
            break
        time.sleep(0.1)
    out(f"partitioner: acquired {[p.acquired for p in parts]} sets {[sorted(p) for p in parts]}")
    for p in parts:
        p.finish()

    # DataWatch
    log = EventLog()

    @c1.DataWatch("/kz/dw")
    def data_changed(data, stat):
        log.add(f"{data!r} {stat.version if stat else None}")

    log.wait_count(1)
    c2.create("/kz/dw", b"v0")
    log.wait_count(2)
    c2.set("/kz/dw", b"v1")
    log.wait_count(3)
    c2.delete("/kz/dw")
    ok, events = log.settle(4)
    out(f"DataWatch calls: {events}")

    # ChildrenWatch
    log = EventLog()
    c1.create("/kz/cw", b"")

    @c1.ChildrenWatch("/kz/cw")
    def children_changed(children):
        log.add(sorted(children))

    log.wait_count(1)
    c2.create("/kz/cw/a", b"")
    log.wait_count(2)
    c2.create("/kz/cw/b", b"")
    log.wait_count(3)
    c2.delete("/kz/cw/a")
    ok, events = log.settle(4)
    out(f"ChildrenWatch calls: {events}")
    close(c2)


def main():
    c1 = connect("c1")
    out(f"c1 connected: {c1.state}")
    basics(c1)
    sequential_and_ephemeral(c1)
    multi(c1)
    acls(c1)
    watches(c1)
    sessions(c1)
    containers_and_ttl(c1)
    recipes(c1)
    out("== end")
    step("children /kz", lambda: sorted(c1.get_children("/kz")))
    close(c1)
    out("done")


if __name__ == "__main__":
    main()
