#!/usr/bin/env python3
"""Garbage collection through a host, over HTTP: pushes two images that share a layer and a
loose blob, deletes one image, moves a tag off a third (untagged collection is on), pushes
two tags to gc/kept (whose retention rule, in BERTH_RETENTION, keeps the last one), lets the
host collect, then checks what went and what stayed.

    gc_host.py URL            the host collects on its own (BERTH_GC_INTERVAL), within 30 s
    gc_host.py URL TOKEN      each step is asked for: POST /_berth/gc with the token (the
                              edge worker), until a step reports nothing left

A blob's content is there exactly when an automatic mount (POST ?mount= without from) links
it into another repository: that tells a deleted blob from one only unlinked.
"""
import json
import os
import sys
import time

# The helpers of the race test beside this file.
from gc_race import request, sha256


def main(url, token=None):
    config, shared, only_a, loose, only_old, only_new, only_first = (os.urandom(200) for _ in range(7))

    def push(tag, layers, repository="gc/app"):
        for data in [config] + layers:
            status, _ = request(url, "POST", f"/v2/{repository}/blobs/uploads/?digest={sha256(data)}", data)
            assert status == 201, status
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256(layer), "size": len(layer)} for layer in layers],
        }).encode()
        status, _ = request(url, "PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 201, status
        return manifest

    a = push("a", [shared, only_a])
    b = push("b", [shared])
    # The tag moves on: the manifest it held is untagged, then collected with its own layer.
    old = push("moving", [only_old])
    moved = push("moving", [shared, only_new])
    # Retention keeps the last tag pushed to gc/kept: the first goes, then what it held.
    push("first", [shared, only_first], "gc/kept")
    time.sleep(0.01)
    kept = push("second", [shared], "gc/kept")
    status, _ = request(url, "POST", f"/v2/gc/app/blobs/uploads/?digest={sha256(loose)}", loose)
    assert status == 201, status
    status, _ = request(url, "DELETE", f"/v2/gc/app/manifests/{sha256(a)}")
    assert status == 202, status

    def stored(data):
        probe = f"/v2/gc/probe-{os.urandom(4).hex()}/blobs/uploads/?mount={sha256(data)}"
        return request(url, "POST", probe)[0] == 201

    if token:
        steps = 0
        while True:
            status, body = request(url, "POST", "/_berth/gc",
                                   headers={"Authorization": f"Bearer {token}"})
            assert status == 200, (status, body)
            report = json.loads(body)
            steps += 1
            # A step that deletes a manifest makes its blobs candidates of the next; one that
            # ran out of budget (retention's tag reads too) leaves work for the next.
            if not report["visited"] and not report["left"]:
                break
            assert steps < 100, report
        print(f"{steps} bounded collection steps")
        status, _ = request(url, "POST", "/_berth/gc", headers={"Authorization": "Bearer wrong"})
        assert status == 404, status
    else:
        deadline = time.monotonic() + 30
        while stored(only_a) or stored(loose) or stored(only_old) or stored(only_first):
            assert time.monotonic() < deadline, "nothing collected within 30 s"
            time.sleep(0.5)
    # The deleted image's own layer and the loose blob are gone, content and link; the
    # shared layer, the config and the other image stay and pull.
    for data, wanted in ((only_a, False), (loose, False), (only_old, False), (only_first, False),
                         (shared, True), (config, True)):
        status, body = request(url, "GET", f"/v2/gc/app/blobs/{sha256(data)}")
        assert (status == 200) == wanted, (wanted, status)
        assert stored(data) == wanted, wanted
    status, body = request(url, "GET", "/v2/gc/app/manifests/b",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert (status, body) == (200, b), status
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    status, _ = request(url, "GET", f"/v2/gc/app/manifests/{sha256(old)}", headers=accept)
    assert status == 404, f"the untagged manifest answers {status}"
    status, body = request(url, "GET", "/v2/gc/app/manifests/moving", headers=accept)
    assert (status, body) == (200, moved), status
    status, _ = request(url, "GET", "/v2/gc/kept/manifests/first", headers=accept)
    assert status == 404, f"the expired tag answers {status}"
    status, body = request(url, "GET", "/v2/gc/kept/manifests/second", headers=accept)
    assert (status, body) == (200, kept), status
    print("a deleted image's layer, a loose blob, an untagged manifest and an expired tag's "
          "image, with their layers, collected; the shared layer and the tagged images kept")


if __name__ == "__main__":
    main(*sys.argv[1:])
