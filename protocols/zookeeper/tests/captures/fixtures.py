#!/usr/bin/env python3
"""Turn capture.py's raw-log.jsonl into one .hex fixture per labelled step.

Usage: fixtures.py RAW_LOG OUT_DIR
Each file: one comment line (client, server, operation), then one frame a
line: `C>`/`C<` connect request/response, `>` client to server, `<` server
to client, the whole frame (length prefix included) in hex.
"""
import json, os, sys

SERVER = "ZooKeeper 3.8.0 (Debian 3.8.0-11+deb12u2, standalone)"
CLIENTS = {
    "kazoo": "kazoo 2.11.0 (Python)",
    "zkcli": "zkCli.sh (ZooKeeper 3.8.0 Java client, Debian)",
    "raw": "raw Python socket client (hand-built frames)",
}
OPS = {
    "kazoo-connect": "connect (new session, readOnly byte 0)",
    "kazoo-create-persistent": "create /cap persistent",
    "kazoo-create-ephemeral": "create /cap/eph ephemeral",
    "kazoo-create-sequential": "create /cap/seq- persistent sequential",
    "kazoo-create-ephemeral-sequential": "create /cap/eseq- ephemeral sequential",
    "kazoo-create2": "create2 /cap/c2 (create with include_data)",
    "kazoo-create-nodeexists": "create /cap again: error reply NODEEXISTS",
    "kazoo-create-nonode-parent": "create /nope/child: error reply NONODE",
    "kazoo-exists-hit": "exists /cap (hit)",
    "kazoo-exists-miss": "exists /cap/missing (miss: NONODE, no body)",
    "kazoo-exists-miss-watch": "exists /cap/later with watch (miss)",
    "kazoo-getdata-watch": "getData /cap with watch",
    "kazoo-setdata-notification": "setData /cap: NodeDataChanged notification then the reply",
    "kazoo-setdata-badversion": "setData /cap version 42: error reply BADVERSION",
    "kazoo-getchildren": "getChildren /cap",
    "kazoo-getchildren-watch-notification": "getChildren /cap with watch, create /cap/later: NodeCreated and NodeChildrenChanged notifications",
    "kazoo-getchildren2": "getChildren2 /cap",
    "kazoo-delete": "delete /cap/c2",
    "kazoo-delete-notempty": "delete /cap: error reply NOTEMPTY",
    "kazoo-multi-ok": "multi create+setData+check+delete, all succeed",
    "kazoo-multi-failing": "multi create+check(version 99)+setData with a failing check",
    "kazoo-getacl": "getACL /cap",
    "kazoo-setacl": "setACL /cap/later digest",
    "kazoo-sync": "sync /cap",
    "kazoo-auth": "auth digest user:pw (xid -4)",
    "kazoo-ping": "ping (xid -2) while idle",
    "kazoo-closesession": "closeSession",
    "zkcli-connect": "connect (new session, readOnly byte 0) and first ping",
    "zkcli-create-container": "create -c /ctr (createContainer)",
    "zkcli-create-ttl": "create -t 60000 /ttl (createTTL)",
    "zkcli-create-ephemeral": "create -e /ctr/e1",
    "zkcli-getallchildrennumber": "getAllChildrenNumber /ctr",
    "zkcli-getephemerals": "getEphemerals /",
    "zkcli-whoami": "whoami (no auth)",
    "zkcli-stat": "stat /ctr (exists)",
    "zkcli-ls-s": "ls -s /ctr (getChildren2)",
    "zkcli-getacl": "getAcl /ctr",
    "zkcli-sync": "sync /ctr",
    "zkcli-addwatch-persistent": "addWatch -m PERSISTENT /ctr",
    "zkcli-addwatch-recursive": "addWatch /ttl without -m: mode 0 (PERSISTENT) on the wire, since zkCli 3.8.0 keeps the -m of the previous addWatch",
    "zkcli-persistent-notification": "set /ctr: persistent-watch NodeDataChanged notification",
    "zkcli-get-watch": "get -w /ttl (getData with watch)",
    "zkcli-setwatches2-reconnect": "connection cut by the proxy; reconnect with session id+password, setWatches2",
    "zkcli-removewatches": "removewatches /ttl -d",
    "zkcli-removewatches-nowatcher": "removewatches /ctr -c",
    "zkcli-addauth": "addauth digest user:pw (xid -4)",
    "zkcli-whoami-authed": "whoami after addauth (two ClientInfo)",
    "zkcli-delete-nonode": "delete /nonexistent: error reply NONODE",
    "zkcli-ping": "pings (xid -2) while idle",
    "zkcli-close": "quit (closeSession)",
    "zkcli-connect-2": "connect (second session) and first ping",
    "zkcli-ls-watch": "ls -w /ctr (getChildren2 with watch)",
    "zkcli-stat-watch": "stat -w /ttl (exists with watch)",
    "zkcli-setwatches-reconnect": "connection cut by the proxy; reconnect, setWatches, NodeDeleted notification",
    "zkcli-close-2": "quit (closeSession)",
    "raw-connect-no-readonly": "connect WITHOUT the readOnly byte (pre-3.4 form): response has none either; exists; closeSession",
    "raw-multiread": "multiRead getData+getChildren+getData(missing); closeSession",
    "raw-checkwatches": "checkWatches /cap with no watch: NOWATCHER; exists; closeSession",
    "raw-unknown-opcode": "unknown opcode 999: UNIMPLEMENTED with zxid -1, then ZooKeeper closes the connection",
    "raw-setwatches2": "setWatches2 with xid -8 and all five vectors: notifications then the reply",
}

log, out = sys.argv[1], sys.argv[2]
groups = {}
for line in open(log):
    label, conn, d, h = json.loads(line)
    groups.setdefault(label, []).append((d, h))
for label, frames in groups.items():
    client = CLIENTS[label.split("-")[0]]
    with open(os.path.join(out, label + ".hex"), "w") as f:
        f.write("# client: %s; server: %s; operation: %s\n" % (client, SERVER, OPS[label]))
        for d, h in frames:
            f.write("%s %s\n" % (d, h))
print(len(groups), "files")
