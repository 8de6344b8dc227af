#!/usr/bin/env python3
"""Re-capture the ZooKeeper wire fixtures in this folder.

Runs a logging TCP proxy between real clients (kazoo, zkCli.sh, and a raw
socket client for the forms no shipped client sends) and a ZooKeeper server
that is already listening on 127.0.0.1:ZK_PORT (zoo.cfg: tickTime=2000,
admin.enableServer=false, 4lw.commands.whitelist=*, extendedTypesEnabled=true)
and writes every frame, labelled by step, to OUT_DIR/raw-log.jsonl; then
`fixtures.py OUT_DIR/raw-log.jsonl .` writes one `.hex` file per step.
Usage: capture.py ZK_PORT OUT_DIR
Each fixture line is a whole frame (length prefix included) in hex:
`C>`/`C<` connect request/response, `>` client to server, `<` server to client.
"""
import json, os, socket, struct, subprocess, sys, threading, time

ZK_PORT = int(sys.argv[1])
OUT = sys.argv[2]
LOG = []           # (label, conn, direction, bytes)
LOCK = threading.Lock()
STATE = {"label": None, "conns": 0}


def mark(label):
    with LOCK:
        STATE["label"] = label


def record(conn, direction, frame):
    with LOCK:
        LOG.append((STATE["label"], conn, direction, frame))


def pump(src, dst, conn, direction, first_is_connect, on_frame):
    buf = b""
    first = first_is_connect
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        buf += data
        while len(buf) >= 4:
            n = struct.unpack(">i", buf[:4])[0]
            if len(buf) < 4 + n:
                break
            frame, buf = buf[: 4 + n], buf[4 + n :]
            tag = ("C" if first else "") + direction
            first = False
            if on_frame(frame) == "drop":
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            record(conn, tag, frame)
            try:
                dst.sendall(frame)
            except OSError:
                return
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(listener):
    while True:
        try:
            c, _ = listener.accept()
        except OSError:
            return
        s = socket.create_connection(("127.0.0.1", ZK_PORT))
        with LOCK:
            STATE["conns"] += 1
            conn = STATE["conns"]
        # A request whose bytes name /droptrigger is not forwarded: the
        # proxy cuts the connection so the client reconnects (and resends
        # its watches with setWatches / setWatches2).
        drop = lambda f: "drop" if b"/droptrigger" in f else None
        threading.Thread(target=pump, args=(c, s, conn, ">", True, drop), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, conn, "<", True, lambda f: None), daemon=True).start()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
PROXY = listener.getsockname()[1]
threading.Thread(target=serve, args=(listener,), daemon=True).start()
HOST = "127.0.0.1:%d" % PROXY


def kazoo_scenario():
    from kazoo.client import KazooClient
    from kazoo.security import make_digest_acl
    events = []
    mark("kazoo-connect")
    zk = KazooClient(hosts=HOST, timeout=4.0)
    zk.start()
    mark("kazoo-create-persistent")
    zk.create("/cap", b"hello")
    mark("kazoo-create-ephemeral")
    zk.create("/cap/eph", b"e", ephemeral=True)
    mark("kazoo-create-sequential")
    zk.create("/cap/seq-", b"", sequence=True)
    mark("kazoo-create-ephemeral-sequential")
    zk.create("/cap/eseq-", b"x", ephemeral=True, sequence=True)
    mark("kazoo-create2")
    zk.create("/cap/c2", b"two", include_data=True)
    mark("kazoo-create-nodeexists")
    try:
        zk.create("/cap", b"again")
    except Exception as e:
        events.append(repr(e))
    mark("kazoo-create-nonode-parent")
    try:
        zk.create("/nope/child", b"")
    except Exception as e:
        events.append(repr(e))
    mark("kazoo-exists-hit")
    zk.exists("/cap")
    mark("kazoo-exists-miss")
    zk.exists("/cap/missing")
    mark("kazoo-exists-miss-watch")
    zk.exists("/cap/later", watch=lambda ev: events.append(ev))
    mark("kazoo-getdata-watch")
    zk.get("/cap", watch=lambda ev: events.append(ev))
    mark("kazoo-setdata-notification")
    zk.set("/cap", b"world")
    time.sleep(0.3)
    mark("kazoo-setdata-badversion")
    try:
        zk.set("/cap", b"x", version=42)
    except Exception as e:
        events.append(repr(e))
    mark("kazoo-getchildren")
    zk.get_children("/cap")
    mark("kazoo-getchildren-watch-notification")
    zk.get_children("/cap", watch=lambda ev: events.append(ev))
    zk.create("/cap/later", b"")
    time.sleep(0.3)
    mark("kazoo-getchildren2")
    zk.get_children("/cap", include_data=True)
    mark("kazoo-delete")
    zk.delete("/cap/c2")
    mark("kazoo-delete-notempty")
    try:
        zk.delete("/cap")
    except Exception as e:
        events.append(repr(e))
    mark("kazoo-multi-ok")
    t = zk.transaction()
    t.create("/cap/t1", b"t")
    t.set_data("/cap/t1", b"u")
    t.check("/cap/t1", 1)
    t.delete("/cap/t1")
    t.commit()
    mark("kazoo-multi-failing")
    t = zk.transaction()
    t.create("/cap/t2", b"t")
    t.check("/cap", 99)
    t.set_data("/cap", b"never")
    t.commit()
    mark("kazoo-getacl")
    zk.get_acls("/cap")
    mark("kazoo-setacl")
    zk.set_acls("/cap/later", [make_digest_acl("user", "pw", all=True)])
    mark("kazoo-sync")
    zk.sync("/cap")
    mark("kazoo-auth")
    zk.add_auth("digest", "user:pw")
    time.sleep(0.3)
    mark("kazoo-ping")
    time.sleep(3.5)
    mark("kazoo-closesession")
    zk.stop()
    zk.close()
    time.sleep(0.3)
    return events


def zkcli(lines, timeout_ms=30000):
    """Feed zkCli.sh one command at a time, marking each."""
    p = subprocess.Popen(
        ["/usr/share/zookeeper/bin/zkCli.sh", "-timeout", str(timeout_ms), "-server", HOST],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, ZOO_LOG_DIR="/tmp", CLIENT_JVMFLAGS="-Dzookeeper.log.dir=/tmp"),
    )
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    reader.start()
    for label, cmd, wait in lines:
        mark(label)
        if cmd is not None:
            p.stdin.write((cmd + "\n").encode())
            p.stdin.flush()
        time.sleep(wait)
    p.stdin.close()
    p.wait(timeout=30)
    reader.join(timeout=5)
    return out[0].decode(errors="replace") if out else ""


def zkcli_scenario():
    a = zkcli([
        ("zkcli-connect", None, 4.0),
        ("zkcli-create-container", "create -c /ctr x", 1.0),
        ("zkcli-create-ttl", "create -t 60000 /ttl y", 1.0),
        ("zkcli-create-ephemeral", "create -e /ctr/e1 z", 1.0),
        ("zkcli-getallchildrennumber", "getAllChildrenNumber /ctr", 1.0),
        ("zkcli-getephemerals", "getEphemerals /", 1.0),
        ("zkcli-whoami", "whoami", 1.0),
        ("zkcli-stat", "stat /ctr", 1.0),
        ("zkcli-ls-s", "ls -s /ctr", 1.0),
        ("zkcli-getacl", "getAcl /ctr", 1.0),
        ("zkcli-sync", "sync /ctr", 1.0),
        ("zkcli-addwatch-persistent", "addWatch -m PERSISTENT /ctr", 1.0),
        ("zkcli-addwatch-recursive", "addWatch /ttl", 1.0),
        ("zkcli-persistent-notification", "set /ctr w", 1.0),
        ("zkcli-get-watch", "get -w /ttl", 1.0),
        ("zkcli-setwatches2-reconnect", "get /droptrigger", 6.0),
        ("zkcli-removewatches", "removewatches /ttl -d", 1.0),
        ("zkcli-removewatches-nowatcher", "removewatches /ctr -c", 1.0),
        ("zkcli-addauth", "addauth digest user:pw", 1.0),
        ("zkcli-whoami-authed", "whoami", 1.0),
        ("zkcli-delete-nonode", "delete /nonexistent", 1.0),
        ("zkcli-ping", None, 12.0),
        ("zkcli-close", "quit", 2.0),
    ], timeout_ms=6000)
    b = zkcli([
        ("zkcli-connect-2", None, 4.0),
        ("zkcli-ls-watch", "ls -w /ctr", 1.0),
        ("zkcli-stat-watch", "stat -w /ttl", 1.0),
        ("zkcli-setwatches-reconnect", "get /droptrigger", 6.0),
        ("zkcli-close-2", "quit", 2.0),
    ], timeout_ms=6000)
    return a + b


def raw(frames, label):
    """A bare socket client: sends the given frames, logs what comes back."""
    mark(label)
    s = socket.create_connection(("127.0.0.1", PROXY))
    for f in frames:
        try:
            s.sendall(struct.pack(">i", len(f)) + f)
        except OSError:
            break  # the server closed the connection
        time.sleep(0.5)
    s.settimeout(1.0)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    time.sleep(0.3)


def jstr(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def raw_scenario():
    # ConnectRequest without the trailing readOnly byte, as pre-3.4 clients send it.
    old = struct.pack(">iqiq", 0, 0, 30000, 0) + struct.pack(">i", 16) + b"\0" * 16
    new = old + b"\0"
    raw([old, struct.pack(">ii", 1, 3) + jstr("/cap") + b"\0", struct.pack(">ii", 2, -11)], "raw-connect-no-readonly")
    # multiRead (22): getData + getChildren + getData on a missing node.
    mr = b""
    mr += struct.pack(">i?i", 4, False, -1) + jstr("/cap") + b"\0"
    mr += struct.pack(">i?i", 8, False, -1) + jstr("/cap") + b"\0"
    mr += struct.pack(">i?i", 4, False, -1) + jstr("/missing") + b"\0"
    mr += struct.pack(">i?i", -1, True, -1)
    raw([new, struct.pack(">ii", 1, 22) + mr, struct.pack(">ii", 2, -11)], "raw-multiread")
    # checkWatches (17) on a path with no watch.
    raw([new, struct.pack(">ii", 1, 17) + jstr("/cap") + struct.pack(">i", 3),
         struct.pack(">ii", 2, 3) + jstr("/cap") + b"\0",
         struct.pack(">ii", 3, -11)], "raw-checkwatches")
    # An opcode ZooKeeper does not know (999), then an exists on the same connection.
    raw([new, struct.pack(">ii", 1, 999) + jstr("/cap"),
         struct.pack(">ii", 2, 3) + jstr("/cap") + b"\0",
         struct.pack(">ii", 3, -11)], "raw-unknown-opcode")
    # setWatches2 with all five vectors, then getAllChildrenNumber.
    sw2 = struct.pack(">q", 0) + b"".join(struct.pack(">i", 1) + jstr(p) for p in ["/cap", "/cap/x", "/cap", "/a", "/b"])
    raw([new, struct.pack(">ii", -8, 105) + sw2, struct.pack(">ii", 1, -11)], "raw-setwatches2")


try:
    ev = kazoo_scenario()
    print("kazoo events:", ev, file=sys.stderr)
    out = zkcli_scenario()
    open("/tmp/zkcli-output.log", "w").write(out)
    raw_scenario()
finally:
    listener.close()

    with open(os.path.join(OUT, "raw-log.jsonl"), "w") as f:
        for label, conn, d, frame in LOG:
            f.write(json.dumps([label, conn, d, frame.hex()]) + "\n")
