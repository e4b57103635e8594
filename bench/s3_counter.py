#!/usr/bin/env python3
"""A counting pass-through in front of an S3 API, for the benchmarks' request counts.

    s3_counter.py PORT UPSTREAM     listens on 127.0.0.1:PORT and forwards every request
                                    as is to UPSTREAM (e.g. http://127.0.0.1:9000)

GET /_counts answers the requests forwarded since the last reset, by S3 operation (as JSON);
POST /_counts/reset zeroes them. Bodies are buffered: for small objects only. Loopback only.
"""
import http.client
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

counts, lock = {}, threading.Lock()


def operation(method, path):
    """The S3 operation a request is, near enough for a bill: GET/PUT/... of an object, a
    listing, a multipart step, a copy."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    key = parts.path.strip("/").partition("/")[2]
    if method == "GET" and not key:
        return "LIST"
    if "uploads" in query or "uploadId" in query:
        return f"{method} multipart"
    return method


class Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=(), length=None):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def forward(self):
        if self.path == "/_counts":
            with lock:
                return self.reply(200, json.dumps(counts).encode())
        if self.path == "/_counts/reset":
            with lock:
                counts.clear()
            return self.reply(204, b"")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with lock:
            name = operation(self.command, self.path)
            if self.headers.get("x-amz-copy-source"):
                name = "COPY"
            counts[name] = counts.get(name, 0) + 1
        connection = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=120)
        try:
            headers = {name: value for name, value in self.headers.items()}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = [(name, value) for name, value in response.getheaders()
                    if name.lower() not in ("content-length", "transfer-encoding", "connection")]
            if self.command == "HEAD":
                # A HEAD's length is the object's.
                self.reply(response.status, b"", kept, response.getheader("Content-Length", "0"))
            else:
                self.reply(response.status, answer, kept)
        finally:
            connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


if __name__ == "__main__":
    port, UPSTREAM = int(sys.argv[1]), urlsplit(sys.argv[2])
    ThreadingHTTPServer(("127.0.0.1", port), Forward).serve_forever()
