#!/usr/bin/env python3
"""Concurrent pushes that a test kills the registry under, and the check after its restart.

    concurrent_pushes.py push  URL LEDGER   8 threads push images (a layer in two chunks, a
                                            config, a manifest by tag) until the registry
                                            stops answering or 60 s pass; each write it
                                            acknowledges is appended to LEDGER and fsynced
    concurrent_pushes.py check URL LEDGER   every acknowledged blob is there with its bytes,
                                            every acknowledged tag names its manifest, whole;
                                            prints "acknowledged N, lost N, corrupt N"

Loopback only; bounded in count and time.
"""
import hashlib
import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlsplit

THREADS = 8
DEADLINE = 60.0
#: Tells this run's tags from an earlier run's (a test pushes once per round).
RUN = os.urandom(4).hex()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, url):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            connection.close()


class Ledger:
    def __init__(self, path):
        self.file = open(path, "a")
        self.lock = threading.Lock()

    def record(self, entry):
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())


def push_one(registry, ledger, worker, n):
    repo = f"crash/w{worker}"
    layer = os.urandom(200_000 + n % 7 * 1000)
    start = registry.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert start[0] == 202, start
    location = start[1]["location"]
    half = len(layer) // 2
    patch = registry.request("PATCH", location, layer[:half],
                             {"Content-Range": f"0-{half - 1}", "Content-Type": "application/octet-stream"})
    assert patch[0] == 202, patch
    finish = registry.request("PUT", f"{location}?digest={sha256(layer)}", layer[half:],
                              {"Content-Range": f"{half}-{len(layer) - 1}"})
    assert finish[0] == 201, finish
    ledger.record({"blob": sha256(layer), "repo": repo})
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": f"{worker}-{n}"}).encode()
    status = registry.request("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(config)}", config)
    assert status[0] == 201, status
    ledger.record({"blob": sha256(config), "repo": repo})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    tag = f"r{RUN}-{n}"
    put = registry.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                           {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put[0] == 201, put
    ledger.record({"tag": tag, "repo": repo, "manifest": sha256(manifest)})


def push(url, ledger_path):
    registry, ledger = Registry(url), Ledger(ledger_path)
    started = time.monotonic()

    def worker(index):
        n = 0
        while time.monotonic() - started < DEADLINE:
            try:
                push_one(registry, ledger, index, n)
            except (OSError, http.client.HTTPException):
                return  # the registry was killed: stop pushing
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def check(url, ledger_path):
    registry = Registry(url)
    acknowledged = lost = corrupt = 0
    with open(ledger_path) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for entry in entries:
        acknowledged += 1
        if "blob" in entry:
            status, headers, body = registry.request("GET", f"/v2/{entry['repo']}/blobs/{entry['blob']}")
            if status != 200:
                lost += 1
                print(f"lost: blob {entry['blob']} in {entry['repo']}: {status}")
            elif sha256(body) != entry["blob"]:
                corrupt += 1
                print(f"corrupt: blob {entry['blob']} in {entry['repo']}")
        else:
            status, headers, body = registry.request("GET", f"/v2/{entry['repo']}/manifests/{entry['tag']}",
                                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            if status != 200:
                lost += 1
                print(f"lost: tag {entry['tag']} in {entry['repo']}: {status}")
            elif sha256(body) != entry["manifest"]:
                corrupt += 1
                print(f"corrupt: tag {entry['tag']} in {entry['repo']} names {sha256(body)}")
    print(f"acknowledged {acknowledged}, lost {lost}, corrupt {corrupt}")
    return 0 if acknowledged > 0 and lost == 0 and corrupt == 0 else 1


def main():
    mode, url, ledger = sys.argv[1:4]
    if mode == "push":
        push(url, ledger)
        return 0
    return check(url, ledger)


if __name__ == "__main__":
    sys.exit(main())
