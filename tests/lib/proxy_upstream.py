#!/usr/bin/env python3
"""A scripted upstream registry for the pull-through cache tests: it serves the OCI image
layouts in DIR (each sub-directory LAYOUT is the repository library/LAYOUT, its tags from
index.json) read-only, logs every request as a JSON line to LOG, and misbehaves on demand.

    proxy_upstream.py PORT DIR LOG

GET /_mode/<mode> switches how it answers from then on:
    normal           as a registry does
    429              manifests and blobs: 429 with Retry-After: 2 and RateLimit headers
    429-date         the same, Retry-After an HTTP date 3 seconds ahead
    corrupt          blobs: the right length, one byte changed
    die:<bytes>      a blob GET without Range sends <bytes> bytes, then the connection dies
                     (a GET with Range: bytes=N- is answered 206 with the rest, whole)
    stall:<bytes>    a blob GET without Range sends <bytes> bytes, then nothing for 60 s
    slow:<ms>        blob GETs wait <ms> milliseconds before answering
Each blob GET's log entry says how many blob GETs were open when it arrived ("open").
"""
import hashlib
import json
import os
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, root, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
state = {"mode": "normal", "open": 0}
log_lock = threading.Lock()


def find_blob(digest):
    algorithm, _, hexa = digest.partition(":")
    for layout in os.listdir(root):
        path = os.path.join(root, layout, "blobs", algorithm, hexa)
        if os.path.exists(path):
            return path
    return None


def tagged(repository, tag):
    layout = os.path.join(root, repository.removeprefix("library/"))
    try:
        index = json.load(open(os.path.join(layout, "index.json")))
    except OSError:
        return None
    for manifest in index["manifests"]:
        if manifest.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return manifest
    return None


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, **extra):
        entry = {"method": self.command, "path": self.path, "range": self.headers.get("Range"), **extra}
        with log_lock, open(log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path.startswith("/_mode/"):
            state["mode"] = self.path[len("/_mode/"):]
            return self.answer(200, b"ok")
        if self.command != "GET" or "/blobs/" not in self.path:
            self.record()
            return self.serve()
        with log_lock:
            state["open"] += 1
            opened = state["open"]
        self.record(open=opened)
        try:
            if state["mode"].startswith("slow:"):
                time.sleep(int(state["mode"][len("slow:"):]) / 1000)
            self.serve()
        finally:
            with log_lock:
                state["open"] -= 1

    def serve(self):
        if self.path == "/v2/":
            return self.answer(200, b"{}")
        mode = state["mode"]
        parts = self.path.split("?")[0].split("/")
        kind, reference, repository = parts[-2], parts[-1], "/".join(parts[2:-2])
        if kind not in ("manifests", "blobs"):
            return self.answer(404, b"{}")
        if mode in ("429", "429-date"):
            after = "2" if mode == "429" else formatdate(time.time() + 3, usegmt=True)
            return self.answer(429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}',
                               [("Retry-After", after), ("RateLimit-Remaining", "0")])
        if kind == "manifests":
            descriptor = tagged(repository, reference) if ":" not in reference else {"digest": reference}
            path = descriptor and find_blob(descriptor["digest"])
            if not path:
                return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            data = open(path, "rb").read()
            media_type = json.loads(data).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            return self.answer(200, data, [("Content-Type", media_type), ("Docker-Content-Digest", digest)])
        path = find_blob(reference)
        if not path:
            return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        data = open(path, "rb").read()
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            return self.answer(206, data[start:], [
                ("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"),
                ("Content-Type", "application/octet-stream")])
        if mode.startswith(("die:", "stall:")) and self.command == "GET":
            cut = int(mode.split(":")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            if mode.startswith("stall:"):
                time.sleep(60)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        return self.answer(200, data, [("Content-Type", "application/octet-stream")])


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), Upstream).serve_forever()
