#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets from the transcripts (tests/transcripts/*.json).

    fuzz/seeds.py OUT_DIR      one folder per target: heads, references, manifests, ranges

The uploads target takes structured input (random operations) and needs no seeds.
"""
import hashlib
import json
import os
import struct
import sys
from glob import glob

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    out = sys.argv[1]
    seeds = {name: set() for name in ["heads", "references", "manifests", "ranges"]}
    for path in sorted(glob(os.path.join(HERE, "..", "tests", "transcripts", "*.json"))):
        for step in json.load(open(path))["steps"]:
            request = step["request"]
            headers = request.get("headers", {})
            body = request.get("body", "")
            if "body_repeat" in request:
                body = request["body_repeat"]["text"] * min(request["body_repeat"]["count"], 4096)
            lines = [f"{request['method']} {request['path']}"] + [f"{k}: {v}" for k, v in headers.items()]
            seeds["heads"].add(("\n".join(lines) + "\n\n" + body).encode())
            route = request["path"].split("?")[0]
            if route.startswith("/v2/"):
                for marker in ["/blobs/", "/manifests/", "/tags/", "/referrers/"]:
                    if marker in route:
                        name, _, rest = route[4:].partition(marker)
                        seeds["references"].add(name.encode())
                        seeds["references"].add(rest.split("/")[-1].encode())
                        break
            if request["method"] == "PUT" and "/manifests/" in route:
                seeds["manifests"].add((headers.get("Content-Type", "") + "\n" + body).encode())
            for header in ["Range", "Content-Range"]:
                if header in headers:
                    for size in [0, 15, 100, 1 << 20]:
                        seeds["ranges"].add(struct.pack("<Q", size) + headers[header].encode())
    for target, inputs in seeds.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for data in inputs:
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(out, target, name), "wb") as f:
                f.write(data)
    print(", ".join(f"{len(v)} {k}" for k, v in seeds.items()) + " seeds")


if __name__ == "__main__":
    main()
