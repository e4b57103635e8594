#!/usr/bin/env python3
"""Hostile clients against a running registry: they must not starve anyone else.

    hostile_clients.py http://HOST:PORT slow-heads     30 clients drip their request heads a
                                                       byte at a time while 10 ordinary
                                                       requests must each answer within 5 s
    hostile_clients.py http://HOST:PORT endless-length a POST announcing 99999999999999999999
                                                       bytes (and sending none) must be
                                                       refused with a 4xx within 5 s

Exits non-zero, saying why, when the host fails. Every loop is bounded in count and time.
"""
import http.client
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

DEADLINE = 5.0
SLOW_CLIENTS = 30


def open_socket(host, port):
    return socket.create_connection((host, port), timeout=DEADLINE)


def slow_heads(host, port):
    stop = threading.Event()
    sockets = []
    for _ in range(SLOW_CLIENTS):
        s = open_socket(host, port)
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)

    def drip():
        # One byte of a header per client every 0.2 s, for at most 30 s.
        for _ in range(150):
            if stop.wait(0.2):
                return
            for s in sockets:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    time.sleep(1.0)  # let every slow client be accepted and start its head
    try:
        for i in range(10):
            started = time.monotonic()
            connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
            try:
                connection.request("GET", "/v2/")
                status = connection.getresponse().status
            except OSError as e:
                sys.exit(f"request {i} got no answer while {SLOW_CLIENTS} clients sent their heads slowly: {e}")
            finally:
                connection.close()
            took = time.monotonic() - started
            if status != 200 or took > DEADLINE:
                sys.exit(f"request {i}: status {status} after {took:.1f} s")
        print(f"10 requests answered while {SLOW_CLIENTS} clients sent their heads slowly")
    finally:
        stop.set()
        dripper.join()
        for s in sockets:
            s.close()


def endless_length(host, port):
    s = open_socket(host, port)
    digest = "sha256:" + "0" * 64
    s.sendall(
        f"POST /v2/r/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 99999999999999999999\r\n\r\n".encode()
    )
    started = time.monotonic()
    try:
        head = s.recv(4096)
    except socket.timeout:
        sys.exit(f"no answer within {DEADLINE} s to a length no byte count can be")
    finally:
        s.close()
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].startswith("4"):
        sys.exit(f"expected a 4xx, got {status_line!r}")
    print(f"refused in {time.monotonic() - started:.2f} s: {status_line}")
    # Nothing was stored under the repository the request named.
    connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
    connection.request("HEAD", f"/v2/r/blobs/{digest}")
    status = connection.getresponse().status
    if status != 404:
        sys.exit(f"after the refused push, HEAD of its digest answered {status}")


def main():
    url, check = sys.argv[1], sys.argv[2]
    parts = urlsplit(url)
    {"slow-heads": slow_heads, "endless-length": endless_length}[check](parts.hostname, parts.port)


if __name__ == "__main__":
    main()
