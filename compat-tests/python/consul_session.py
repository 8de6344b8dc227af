"""A py-consul session against Concord's Consul KV plugin: CRUD, flags, recurse, keys
with a separator, check-and-set puts and deletes, raw reads, and a blocking query that
times out. Every step is checked here; each prints one transcript line.

Usage: consul_session.py HOST PORT
"""

import sys
import threading

import consul


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = consul.Consul(host=host, port=port)
    kv = c.kv
    steps = 0

    def check(label, cond, detail=""):
        nonlocal steps
        if not cond:
            raise AssertionError(f"{label}: {detail}")
        steps += 1
        print(f"ok {label}")

    # Create, read, update, with flags.
    check("put", kv.put("app/db", "primary") is True)
    index, entry = kv.get("app/db")
    check("get", entry["Value"] == b"primary" and entry["Key"] == "app/db", entry)
    check("index header", int(index) >= entry["ModifyIndex"] > 0, (index, entry))
    check("create index", entry["CreateIndex"] == entry["ModifyIndex"], entry)
    check("put flags", kv.put("app/db", "replica", flags=42) is True)
    _, entry = kv.get("app/db")
    check("flags read back", entry["Flags"] == 42 and entry["Value"] == b"replica", entry)
    check("update keeps create index", entry["CreateIndex"] < entry["ModifyIndex"], entry)

    # Check-and-set.
    modify = entry["ModifyIndex"]
    check("cas stale", kv.put("app/db", "lost", cas=modify - 1) is False)
    check("cas current", kv.put("app/db", "won", cas=modify) is True)
    check("cas 0 on existing", kv.put("app/db", "again", cas=0) is False)
    check("cas 0 on new", kv.put("app/new", "made", cas=0) is True)
    _, entry = kv.get("app/db")
    check("cas result", entry["Value"] == b"won", entry)

    # A missing key.
    index, entry = kv.get("app/none")
    check("missing", entry is None and int(index) > 0, (index, entry))

    # Recurse and keys.
    for key, value in [("app/cfg/a", "1"), ("app/cfg/b", "2"), ("app/cfg/deep/c", "3"), ("other", "x")]:
        kv.put(key, value)
    _, entries = kv.get("app/cfg/", recurse=True)
    check(
        "recurse",
        [(e["Key"], e["Value"]) for e in entries]
        == [("app/cfg/a", b"1"), ("app/cfg/b", b"2"), ("app/cfg/deep/c", b"3")],
        entries,
    )
    _, keys = kv.get("app/", keys=True)
    check(
        "keys",
        keys == ["app/cfg/a", "app/cfg/b", "app/cfg/deep/c", "app/db", "app/new"],
        keys,
    )
    _, keys = kv.get("app/", keys=True, separator="/")
    check("keys with separator", keys == ["app/cfg/", "app/db", "app/new"], keys)

    # Deletes: cas, then recurse.
    _, entry = kv.get("app/new")
    check("delete cas stale", kv.delete("app/new", cas=entry["ModifyIndex"] + 1000) is False)
    check("delete cas", kv.delete("app/new", cas=entry["ModifyIndex"]) is True)
    check("deleted", kv.get("app/new")[1] is None)
    check("delete recurse", kv.delete("app/cfg/", recurse=True) is True)
    check("recurse gone", kv.get("app/cfg/", recurse=True)[1] is None)
    _, entries = kv.get("", recurse=True)
    check("what is left", sorted(e["Key"] for e in entries) == ["app/db", "other"], entries)

    # A blocking query on a key nobody writes ends when its wait runs out, with the data.
    index, _ = kv.get("other")
    index2, entry = kv.get("other", index=index, wait="1s")
    check("blocking timeout", entry["Value"] == b"x" and int(index2) >= int(index), entry)

    # A blocking query woken by a write from another client.
    result = {}

    def waiter():
        result["answer"] = kv.get("other", index=index, wait="30s")

    thread = threading.Thread(target=waiter)
    thread.start()
    kv.put("other", "y")
    thread.join(25)
    check("blocking woken", not thread.is_alive() and result["answer"][1]["Value"] == b"y", result)
    print(f"{steps} checks passed")


if __name__ == "__main__":
    main()
