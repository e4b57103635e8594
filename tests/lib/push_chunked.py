#!/usr/bin/env python3
"""Pushes a file as a blob in chunks (POST, PATCH with Content-Range, PUT ?digest=), then
pulls it back and checks its digest. Prints the digest, then the push and pull rates
(including the client's own hashing) on stderr.

    push_chunked.py http://127.0.0.1:5000 REPO FILE CHUNK_BYTES
    push_chunked.py http://127.0.0.1:5000 REPO random:BYTES CHUNK_BYTES

`random:BYTES` pushes that many random bytes made as they are sent, so a blob of many
gigabytes needs no copy of itself on disk.
"""
import hashlib
import http.client
import os
import sys
import time
import urllib.parse


def chunks(source, size):
    """Yields the blob's content in pieces of `size` bytes."""
    if source.startswith("random:"):
        remaining = int(source[len("random:"):])
        while remaining > 0:
            piece = os.urandom(min(size, remaining))
            remaining -= len(piece)
            yield piece
        return
    with open(source, "rb") as f:
        while data := f.read(size):
            yield data


def main():
    base, repo, path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    host = urllib.parse.urlparse(base).netloc
    connection = http.client.HTTPConnection(host, timeout=600)

    def request(method, target, body=None, headers=None):
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response, data

    started = time.monotonic()
    response, _ = request("POST", f"/v2/{repo}/blobs/uploads/")
    assert response.status == 202, response.status
    location = response.getheader("Location")
    digest = hashlib.sha256()
    offset = 0
    for data in chunks(path, chunk):
        digest.update(data)
        headers = {"Content-Range": f"{offset}-{offset + len(data) - 1}",
                   "Content-Type": "application/octet-stream"}
        response, body = request("PATCH", location, data, headers)
        assert response.status == 202, (response.status, body)
        location = response.getheader("Location")
        offset += len(data)
    name = "sha256:" + digest.hexdigest()
    response, body = request("PUT", f"{location}?digest={name}")
    assert response.status == 201, (response.status, body)
    pushed = time.monotonic()

    connection.request("GET", f"/v2/{repo}/blobs/{name}")
    response = connection.getresponse()
    assert response.status == 200, response.status
    pulled = hashlib.sha256()
    while True:
        data = response.read(1 << 20)
        if not data:
            break
        pulled.update(data)
    assert "sha256:" + pulled.hexdigest() == name, "pulled content differs"
    pulled_at = time.monotonic()
    print(name)
    mb = offset / 1e6
    print(f"push: {mb / (pushed - started):.0f} MB/s, pull: {mb / (pulled_at - pushed):.0f} MB/s "
          f"({offset} bytes in {chunk}-byte chunks)", file=sys.stderr)


if __name__ == "__main__":
    main()
