#!/usr/bin/env python3
"""Pushes racing the garbage collector, and the check after.

    gc_race.py race SECONDS LEDGER URL...   6 threads push images to the registries at URL
                                            (in turn) for SECONDS: layers drawn from a small
                                            pool, so layers left unreferenced by a delete are
                                            referenced again; each thread moves three tags of
                                            its own (leaving manifests untagged), moves one
                                            back to a manifest it pushed before, and deletes
                                            some of its manifests again. Every tag a registry
                                            acknowledged and the test did not delete goes to
                                            LEDGER.
    gc_race.py check URL LEDGER             every tag in LEDGER pulls back whole (manifest,
                                            config, layers, each verified); prints
                                            "N tags, M blobs verified, K broken"
    gc_race.py needed LEDGER                the digests the tags in LEDGER need, one a line

Loopback only; bounded in count and time.
"""
import hashlib
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlsplit

THREADS = 6
POOL = [bytes([n]) * (32 * 1024 + n) for n in range(8)]
CONFIG = b'{"architecture":"amd64","os":"linux"}'


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def request(url, method, path, body=None, headers=None):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def push_blob(url, repository, data):
    """One-request upload; where a registry answers it with a session (registry:2 does),
    the session is finished with the same content."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        headers = {"Content-Type": "application/octet-stream"}
        connection.request("POST", f"/v2/{repository}/blobs/uploads/?digest={sha256(data)}", body=data,
                           headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            return response.status
        location = response.getheader("Location")
        separator = "&" if "?" in location else "?"
        connection.request("PUT", f"{location}{separator}digest={sha256(data)}", body=data, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def image(layers, note):
    descriptor = lambda media_type, data: {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", CONFIG),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer) for layer in layers],
        "annotations": {"note": note},
    }).encode()


def race(seconds, ledger, urls):
    deadline = time.monotonic() + seconds
    live, lock = {}, threading.Lock()
    counts = {"pushed": 0, "refused": 0, "deleted": 0}

    def writer(number):
        rng = random.Random(number)
        pushed = []  # the manifests this thread pushed, for rollbacks
        round_ = 0
        while time.monotonic() < deadline:
            url = urls[round_ % len(urls)]
            # Three tags a thread: each push moves one, leaving a manifest untagged.
            tag = f"t{number}-{rng.randrange(3)}"
            if pushed and rng.random() < 0.25:
                # A rollback: a manifest pushed before, perhaps untagged and collected since
                # (then refused if its layers went too, whole if accepted).
                manifest = rng.choice(pushed)
            else:
                layers = rng.sample(POOL, rng.randint(1, 3))
                for data in layers + [CONFIG]:
                    push_blob(url, "race", data)
                manifest = image(layers, f"{tag}-{round_}")
            status, _ = request(url, "PUT", f"/v2/race/manifests/{tag}", manifest,
                                {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            with lock:
                if status == 201:
                    live[tag] = manifest.decode()
                    if manifest not in pushed:
                        pushed.append(manifest)
                    counts["pushed"] += 1
                else:
                    counts["refused"] += 1
                mine = [t for t in live if t.startswith(f"t{number}-")]
            if mine and rng.random() < 0.3:
                with lock:
                    manifest = live[rng.choice(mine)]
                    # A delete by digest takes every tag that holds the manifest.
                    for held in [t for t in mine if live[t] == manifest]:
                        del live[held]
                status, _ = request(url, "DELETE", f"/v2/race/manifests/{sha256(manifest.encode())}")
                assert status == 202, (manifest, status)
                counts["deleted"] += 1
            round_ += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(ledger, "w") as out:
        json.dump(live, out)
    print(f"{counts['pushed']} pushes acknowledged, {counts['refused']} refused "
          f"(a blob collected between its upload and the manifest), {counts['deleted']} deleted; "
          f"{len(live)} tags live")


def needed(live):
    digests = set()
    for manifest in live.values():
        document = json.loads(manifest)
        digests.add(sha256(manifest.encode()))
        digests.add(document["config"]["digest"])
        digests.update(layer["digest"] for layer in document["layers"])
    return digests


def check(url, ledger):
    with open(ledger) as source:
        live = json.load(source)
    blobs = broken = 0
    for tag, manifest in live.items():
        status, body = request(url, "GET", f"/v2/race/manifests/{tag}",
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        if status != 200 or body != manifest.encode():
            print(f"  broken: {tag}: manifest {status}")
            broken += 1
            continue
        document = json.loads(manifest)
        for descriptor in [document["config"]] + document["layers"]:
            status, body = request(url, "GET", f"/v2/race/blobs/{descriptor['digest']}")
            blobs += 1
            if status != 200 or sha256(body) != descriptor["digest"]:
                print(f"  broken: {tag}: blob {descriptor['digest']} {status}")
                broken += 1
    print(f"{len(live)} tags, {blobs} blobs verified, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "race":
        race(float(args[0]), args[1], args[2:])
    elif command == "check":
        sys.exit(check(*args))
    elif command == "needed":
        with open(args[0]) as source:
            print("\n".join(sorted(needed(json.load(source)))))
    else:
        sys.exit(f"unknown command {command}")
