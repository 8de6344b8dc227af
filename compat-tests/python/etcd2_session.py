"""A python-etcd (etcd v2 API) session for the differential test.

Usage: etcd2_session.py HOST:PORT

Prints one line per step: what was done and what came back (actions, keys, values,
directory flags, index deltas relative to the session's start, error classes and
messages). The same script runs against real etcd and Concord; the transcripts must
be equal.
"""

import re
import sys
import threading
import time

import etcd


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    client = etcd.Client(host=host, port=int(port), read_timeout=20)
    base = client.read("/").etcd_index

    def rel(index):
        return "i%+d" % (index - base) if index else "0"

    def key(name):
        # In-order keys are named by their index.
        return re.sub(r"\d{20}", lambda m: rel(int(m.group())), name)

    def show(step, result):
        if isinstance(result, etcd.EtcdResult):
            children = sorted(
                "%s%s=%s" % (key(c.key), "/" if c.dir else "", c.value)
                for c in result.leaves
                if c.key != result.key
            )
            print(
                "%s: %s %s dir=%s value=%r ttl=%s mod=%s created=%s children=%s"
                % (
                    step,
                    result.action,
                    key(result.key),
                    result.dir,
                    result.value,
                    "yes" if result.ttl else "no",
                    rel(result.modifiedIndex),
                    rel(result.createdIndex),
                    children,
                )
            )
        else:
            print("%s: %r" % (step, result))

    def attempt(step, call, *args, **kwargs):
        try:
            show(step, call(*args, **kwargs))
        except etcd.EtcdException as e:
            print("%s: %s %s" % (step, type(e).__name__, str(e).split(" : ")[0]))

    attempt("write", client.write, "/py/a", "1")
    attempt("read", client.read, "/py/a")
    attempt("overwrite", client.write, "/py/a", "2")
    attempt("create existing", client.write, "/py/a", "x", prevExist=False)
    attempt("update missing", client.write, "/py/missing", "x", prevExist=True)
    attempt("cas wrong", client.write, "/py/a", "3", prevValue="nope")
    attempt("cas right", client.test_and_set, "/py/a", "3", "2")
    attempt("mkdir", client.write, "/py/dir", None, dir=True)
    attempt("file into dir", client.write, "/py/dir", "x")
    attempt("nested", client.write, "/py/dir/sub/leaf", "deep")
    attempt("recursive read", client.read, "/py", recursive=True, sorted=True)
    attempt("append 1", client.write, "/py/queue", "job1", append=True)
    attempt("append 2", client.write, "/py/queue", "job2", append=True)
    attempt("queue", client.read, "/py/queue", sorted=True)
    attempt("ttl", client.write, "/py/ttl", "t", ttl=100)
    attempt("refresh", client.refresh, "/py/ttl", ttl=200)
    attempt("get", client.get, "/py/a")
    attempt("delete dir plain", client.delete, "/py/dir")
    attempt("delete dir non-empty", client.delete, "/py/dir", dir=True)
    attempt("delete dir recursive", client.delete, "/py/dir", recursive=True)
    attempt("cad wrong", client.delete, "/py/a", prevValue="nope")
    attempt("cad right", client.delete, "/py/a", prevValue="3")
    attempt("read deleted", client.read, "/py/a")
    attempt("read under file", client.read, "/py/ttl/x")
    attempt("root write", client.write, "/", "x")

    # A watch woken by a later write.
    woken = {}

    def watcher():
        try:
            woken["result"] = client.watch("/py/w", timeout=15)
        except etcd.EtcdException as e:
            woken["error"] = type(e).__name__

    thread = threading.Thread(target=watcher)
    thread.start()
    time.sleep(0.7)
    client.write("/py/w", "awake")
    thread.join(20)
    show("watch", woken.get("result", woken.get("error")))
    # A watch from an index in history.
    first = client.write("/py/h", "first").modifiedIndex
    client.write("/py/h", "second")
    attempt("watch from index", client.watch, "/py/h", index=first, timeout=10)
    attempt("watch recursive from index", client.watch, "/py", index=first, recursive=True, timeout=10)
    members = client.members
    print("members: %d, fields %s" % (len(members), sorted(next(iter(members.values())).keys())))
    print("machines: %d" % len(client.machines))
    print("leader fields: %s" % sorted(client.leader.keys()))
    print("store stats fields: %s" % sorted(client.store_stats.keys()))


if __name__ == "__main__":
    main()
