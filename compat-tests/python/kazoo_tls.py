"""kazoo (2.11) against a ZooKeeper server's plain and secure (TLS) ports.

Usage:
  kazoo_tls.py both PLAIN_HOST:PORT SECURE_HOST:PORT CA CERT KEY
      One client on each port at the same time: a node created over TLS is read
      over the plain port and deleted over TLS, and the other way round.
  kazoo_tls.py refused SECURE_HOST:PORT CA [CERT KEY]
      A TLS client (without a client certificate unless CERT and KEY are given)
      that must not get a session; prints "refused".
  kazoo_tls.py plaintext SECURE_HOST:PORT
      A plaintext client on the secure port, which must not get a session either.

kazoo's TLS parameters: use_ssl, ca (the CA file that verifies the server),
certfile and keyfile (the client certificate), verify_certs (default True).
Every wait is bounded; exits non-zero when something unexpected happened.
"""

import logging
import sys

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

# kazoo logs each failed connection attempt; the tests read stdout only.
logging.basicConfig(level=logging.CRITICAL)


def tls_client(hosts, ca, cert=None, key=None):
    return KazooClient(
        hosts=hosts,
        timeout=10,
        use_ssl=True,
        ca=ca,
        certfile=cert,
        keyfile=key,
        verify_certs=True,
    )


def both(plain_hosts, secure_hosts, ca, cert, key):
    secure = tls_client(secure_hosts, ca, cert, key)
    plain = KazooClient(hosts=plain_hosts, timeout=10)
    secure.start(timeout=10)
    plain.start(timeout=10)
    try:
        secure.create("/tls-node", b"over tls")
        data, stat = plain.get("/tls-node")
        print(f"plain reads {data.decode()} version {stat.version}")
        secure.set("/tls-node", b"changed over tls")
        data, _ = secure.get("/tls-node")
        print(f"secure reads {data.decode()}")
        secure.delete("/tls-node")
        print(f"plain sees it gone: {plain.exists('/tls-node') is None}")
        plain.create("/plain-node", b"over plain")
        data, _ = secure.get("/plain-node")
        print(f"secure reads {data.decode()}")
        plain.delete("/plain-node")
        print(f"secure sees it gone: {secure.exists('/plain-node') is None}")
    finally:
        for client in (secure, plain):
            client.stop()
            client.close()
    print("done")


def refused(client):
    try:
        client.start(timeout=5)
    except KazooTimeoutError:
        print("refused")
        return
    finally:
        client.stop()
        client.close()
    print("served")
    sys.exit(1)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "both":
        both(*args)
    elif mode == "refused":
        refused(tls_client(*args))
    elif mode == "plaintext":
        refused(KazooClient(hosts=args[0], timeout=5))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
