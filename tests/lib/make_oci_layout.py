#!/usr/bin/env python3
"""Writes a small OCI image layout for the client tests (no Docker engine needed).

    make_oci_layout.py DIR TAG [--platforms linux/amd64,linux/arm64] [--layers N] [--size BYTES]

One platform gives an image manifest tagged TAG; several give an image index tagged TAG whose
children are per-platform images. Layers are gzip'd tars of random bytes, so every run pushes
new content. Prints the digest of the tagged manifest.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import time


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest


def make_layer(size):
    payload = os.urandom(size)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(payload)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(payload))
    raw = tar_bytes.getvalue()
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def make_image(layout, platform, layers, size):
    os_name, arch = platform.split("/")
    layer_descs, diff_ids = [], []
    for _ in range(layers):
        blob, diff_id = make_layer(size)
        layer_descs.append({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": write_blob(layout, blob),
            "size": len(blob),
        })
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": arch,
        "os": os_name,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": write_blob(layout, config),
            "size": len(config),
        },
        "layers": layer_descs,
    }).encode()
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": write_blob(layout, manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": os_name},
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("tag")
    parser.add_argument("--platforms", default="linux/amd64")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64 * 1024)
    args = parser.parse_args()

    os.makedirs(os.path.join(args.dir, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(args.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    images = [make_image(args.dir, p, args.layers, args.size) for p in args.platforms.split(",")]
    if len(images) == 1:
        top = dict(images[0])
        del top["platform"]
    else:
        index = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": images,
        }).encode()
        top = {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": write_blob(args.dir, index),
            "size": len(index),
        }
    top["annotations"] = {"org.opencontainers.image.ref.name": args.tag}
    with open(os.path.join(args.dir, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    print(top["digest"])


if __name__ == "__main__":
    main()
