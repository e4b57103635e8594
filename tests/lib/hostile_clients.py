#!/usr/bin/env python3
"""Hostile clients against a running registry: they must not starve anyone else.

    hostile_clients.py http://HOST:PORT slow-heads     30 clients drip their request heads a
                                                       byte at a time while 10 ordinary
                                                       requests must each answer within 5 s
    hostile_clients.py http://HOST:PORT endless-length a POST announcing 99999999999999999999
                                                       bytes (and sending none) must be
                                                       refused with a 4xx within 5 s
    hostile_clients.py http://HOST:PORT pipelined      requests sent back to back on one
                                                       connection, a malformed one among them,
                                                       are answered in order (a host may close
                                                       the connection early, never reorder)
    hostile_clients.py http://HOST:PORT malformed      requests only a raw socket can send
                                                       (broken request lines, framing, headers,
                                                       smuggling attempts) each get a 4xx or a
                                                       closed connection within 5 s, never a
                                                       5xx, and store nothing

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


def read_response(s, buffer):
    """One response from socket `s` (bytes already read in `buffer`): (status, body, rest), or
    None when the connection closes first. Bodies are framed by Content-Length or chunked."""
    def fill():
        data = s.recv(65536)
        if not data:
            raise EOFError
        return data

    try:
        while b"\r\n\r\n" not in buffer:
            buffer += fill()
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    buffer += fill()
                size_line, buffer = buffer.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(buffer) < size + 2:
                    buffer += fill()
                body, buffer = body + buffer[:size], buffer[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                buffer += fill()
            body, buffer = buffer[:length], buffer[length:]
        return status, headers, body, buffer
    except EOFError:
        return None


def pipelined(host, port):
    layer = "sha256:" + "0" * 64
    requests = [
        ("GET", "/v2/", 200),
        ("GET", "/v2/Upper/tags/list", 400),
        ("HEAD", f"/v2/pipelined/blobs/{layer}", 404),
        ("GET", "/v2/pipelined/blobs/sha256:nope", 400),
        ("POST", f"/v2/pipelined/blobs/uploads/?digest={layer}", 400),
        ("GET", "/v2/", 200),
    ]
    wire = b"".join(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {3 if method == 'POST' else 0}\r\n\r\n".encode()
        + (b"abc" if method == "POST" else b"")
        for method, path, _ in requests
    )
    s = open_socket(host, port)
    s.sendall(wire)
    buffer, answered = b"", 0
    try:
        for method, path, expected in requests:
            if method == "HEAD":
                # A HEAD response has no body whatever its Content-Length says.
                got = read_head_only(s, buffer)
            else:
                got = read_response(s, buffer)
            if got is None:
                break
            status, _, _, buffer = got
            if status != expected:
                sys.exit(f"pipelined {method} {path}: {status}, expected {expected} (answers out of order?)")
            answered += 1
    except socket.timeout:
        sys.exit(f"pipelined requests: no answer within {DEADLINE} s after {answered}")
    finally:
        s.close()
    if answered == 0:
        sys.exit("pipelined requests: not even the first was answered")
    print(f"{answered} of {len(requests)} pipelined requests answered in order")
    expect_serving(host, port)


def read_head_only(s, buffer):
    try:
        while b"\r\n\r\n" not in buffer:
            data = s.recv(65536)
            if not data:
                return None
            buffer += data
    except EOFError:
        return None
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    return int(head.split(b"\r\n")[0].split()[1]), {}, b"", buffer


def expect_serving(host, port):
    connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
    connection.request("GET", "/v2/")
    status = connection.getresponse().status
    connection.close()
    if status != 200:
        sys.exit(f"afterwards GET /v2/ answered {status}")


ABC = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # of b"abc"
XYZ = "sha256:3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"  # of b"xyz"
# A push of b"abc" that must never be stored, however the parser frames the body...
PUSH = f"POST /v2/hostile/blobs/uploads/?digest={ABC} HTTP/1.1\r\nHost: x\r\n".encode()
# ...and one a parser may frame leniently, since its digest never matches (answered 400).
PUSH_WRONG = f"POST /v2/hostile/blobs/uploads/?digest={XYZ} HTTP/1.1\r\nHost: x\r\n".encode()

# Requests only a raw socket sends: (what, bytes, answers allowed besides a 4xx or a close).
# "any" marks what a lenient parser may take as it is (berth then answers what it was given);
# "cut" a request whose client stops sending (it shuts its side down after the bytes: a
# parser that takes a chunk size past 2^64 for a number waits for that many bytes);
# 501 and 505 are what RFC 9112 names for unknown transfer codings and versions.
MALFORMED = [
    ("no request target", b"GET\r\nHost: x\r\n\r\n", set()),
    ("an unknown HTTP version", b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n", {505, "any"}),
    ("a method with a bad character", b"G@T /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", set()),
    ("a header line without a colon", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", {"any"}),
    ("a NUL in a header value", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {"any"}),
    ("a space before a header's colon",
     PUSH_WRONG + b"Content-Length : 3\r\n\r\nabc", {"any"}),
    ("an obsolete folded header", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {"any"}),
    ("a 64 KiB header", b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 65536 + b"\r\n\r\n", {"any"}),
    ("2,000 headers", b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"X-A: a\r\n" * 2000 + b"\r\n", {"any"}),
    ("bytes that are not UTF-8 in the path", b"GET /v2/\xff\xfe/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", set()),
    ("a negative Content-Length", PUSH + b"Content-Length: -3\r\n\r\nabc", set()),
    ("a Content-Length that is not a number", PUSH + b"Content-Length: 3x\r\n\r\nabc", set()),
    ("two different Content-Lengths", PUSH + b"Content-Length: 3\r\nContent-Length: 0\r\n\r\nabc", set()),
    ("a Content-Length list of different values", PUSH + b"Content-Length: 3, 0\r\n\r\nabc", set()),
    ("Content-Length and chunked at once",
     PUSH_WRONG + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", {"any"}),
    ("an unknown transfer coding", PUSH + b"Transfer-Encoding: gzip\r\n\r\nabc", {501}),
    ("a chunk size that is not hex", PUSH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", set()),
    ("a chunk size past 2^64",
     PUSH + b"Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n", {"cut"}),
    ("a chunk longer than its size", PUSH + b"Transfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n", set()),
    ("a chunked body cut short", PUSH + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab", {"cut"}),
    ("a body shorter than its Content-Length", PUSH + b"Content-Length: 30\r\n\r\nabc", {"cut"}),
]


def malformed(host, port):
    for what, wire, allowed in MALFORMED:
        s = open_socket(host, port)
        try:
            s.sendall(wire)
            if "cut" in allowed:
                s.shutdown(socket.SHUT_WR)
            # Only the first answer counts: a host may close, or answer and keep reading.
            got = read_response(s, b"")
        except socket.timeout:
            sys.exit(f"{what}: no answer and no close within {DEADLINE} s")
        except (ConnectionResetError, BrokenPipeError):
            got = None
        finally:
            s.close()
        if got is not None:
            status, headers, body, _ = got
            if status >= 500 and status not in allowed:
                sys.exit(f"{what}: {status} {body[:200]!r}")
            if status < 400 and "any" not in allowed:
                sys.exit(f"{what}: {status}, expected a 4xx or a closed connection")
            if "json" in headers.get("content-type", "") and status >= 400 and b'"errors"' not in body:
                sys.exit(f"{what}: a JSON body without errors: {body[:200]!r}")
        print(f"  {what}: {'closed' if got is None else got[0]}")
    expect_serving(host, port)
    # Nothing was stored: the repository every request named does not exist.
    for path in ["/v2/hostile/tags/list", f"/v2/hostile/blobs/{ABC}", f"/v2/hostile/blobs/{XYZ}"]:
        connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
        connection.request("GET", path)
        status = connection.getresponse().status
        connection.close()
        if status != 404:
            sys.exit(f"after the malformed requests, GET {path} answered {status}")
    print(f"{len(MALFORMED)} malformed requests refused or closed; nothing stored")


def main():
    url, check = sys.argv[1], sys.argv[2]
    parts = urlsplit(url)
    checks = {"slow-heads": slow_heads, "endless-length": endless_length, "pipelined": pipelined,
              "malformed": malformed}
    checks[check](parts.hostname, parts.port)


if __name__ == "__main__":
    main()
