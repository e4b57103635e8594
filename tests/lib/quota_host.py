#!/usr/bin/env python3
"""Quotas through a host, over HTTP: the host runs with BERTH_QUOTAS set to

    [{"repositories": "quota/*", "limit": 4096}, {"namespace": "quota", "limit": 6144}]

A blob that fits is stored; one past the repository's limit is refused (403 DENIED, saying
the limit and the usage) whether its length is announced or only known at the end of a
chunked upload, and leaves nothing behind; the same blob again costs nothing; the namespace
counts its repositories together; a delete gives bytes back; /v2/_usage/<name> reports it.

    quota_host.py URL
"""
import http.client
import json
import os
import sys
from urllib.parse import urlsplit

# The helpers of the race test beside this file.
from gc_race import request, sha256


def main(url):
    def push(repository, data, announce=True):
        headers = {"Content-Length": str(len(data))} if announce else {}
        return request(url, "POST", f"/v2/{repository}/blobs/uploads/?digest={sha256(data)}", data, headers)

    def chunked(repository, data):
        """A chunked upload: POST, one PATCH, then the PUT that finishes it."""
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            def send(method, path, body=b""):
                connection.request(method, path, body=body,
                                   headers={"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                return response.status, response.getheader("Location"), response.read()

            status, location, _ = send("POST", f"/v2/{repository}/blobs/uploads/")
            assert status == 202, f"a chunked upload starts: {status}"
            status, location, _ = send("PATCH", location, data)
            assert status == 202, f"PATCH: {status}"
            separator = "&" if "?" in location else "?"
            status, _, body = send("PUT", f"{location}{separator}digest={sha256(data)}")
            return status, body
        finally:
            connection.close()

    def refused(answer, *phrases):
        status, body = answer
        assert status == 403, f"refused with 403, not {status}: {body[:300]!r}"
        error = json.loads(body)["errors"][0]
        assert error["code"] == "DENIED", error
        for phrase in phrases:
            assert phrase in error["message"], error["message"]

    def usage(name):
        status, body = request(url, "GET", f"/v2/_usage/{name}")
        assert status == 200, f"usage: {status} {body[:300]!r}"
        return json.loads(body)

    def linked(repository, data):
        status, _ = request(url, "HEAD", f"/v2/{repository}/blobs/{sha256(data)}")
        return status == 200

    first, second, third = os.urandom(3000), os.urandom(2000), os.urandom(1500)
    status, _ = push("quota/a", first)
    assert status == 201, f"a blob within the limit: {status}"
    status, _ = push("quota/a", first)
    assert status == 201, f"the same blob again: {status}"
    refused(push("quota/a", second), "repository quota/a", "2.9 KiB of its 4.0 KiB limit",
            "needs 2.0 KiB more")
    refused(chunked("quota/a", second), "repository quota/a")
    assert not linked("quota/a", second), "a refused blob is not in the repository"
    # The namespace: 3000 held in quota/a, so 2000 in quota/b passes 6144 together.
    status, _ = push("quota/b", third)
    assert status == 201, f"within both limits: {status}"
    refused(push("quota/b", second), "namespace quota", "4.4 KiB of its 6.0 KiB limit")
    assert not linked("quota/b", second)
    report = usage("quota/a")
    assert report["bytes"] == 3000 and report["objects"] == 1, report
    assert [q["scope"] for q in report["quotas"]] == ["repository", "namespace"], report
    assert report["quotas"][1]["used"] == 4500, report
    assert usage("quota")["below"] == {"bytes": 4500, "repositories": 2}, usage("quota")
    # A delete gives the bytes back: the refused blob now fits.
    status, _ = request(url, "DELETE", f"/v2/quota/a/blobs/{sha256(first)}")
    assert status == 202, f"delete: {status}"
    status, _ = push("quota/a", second)
    assert status == 201, f"after the delete: {status}"
    assert usage("quota/a")["bytes"] == 2000
    # Elsewhere no rule applies.
    status, _ = push("free", second + first)
    assert status == 201, status
    print("quotas hold: refusals name the limit and the usage; usage is reported")


if __name__ == "__main__":
    main(sys.argv[1])
