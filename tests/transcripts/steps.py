"""Helpers that build transcript steps (format: generate.py)."""
import hashlib
import json

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def sha512(data):
    return "sha512:" + hashlib.sha512(data.encode()).hexdigest()


def req(method, path, body=None, headers=None, **extra):
    r = {"method": method, "path": path}
    if headers:
        r["headers"] = headers
    if body is not None:
        r["body"] = body
    r.update(extra)
    return r


def step(request, status, **expect):
    response = {"status": status}
    save = expect.pop("save", None)
    response.update(expect)
    s = {"request": request, "response": response}
    if save:
        s["save"] = save
    return s


def push_blob(repo, data, digest=None):
    digest = digest or sha256(data)
    return step(req("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data), 201,
                headers={"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest})


def descriptor(media_type, data, digest=None, **extra):
    d = {"mediaType": media_type, "digest": digest or sha256(data), "size": len(data.encode())}
    d.update(extra)
    return d


def image(config, layers, media_type=OCI_MANIFEST, config_type=OCI_CONFIG, **extra):
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": descriptor(config_type, config),
           "layers": [descriptor(OCI_LAYER if media_type == OCI_MANIFEST else
                                 "application/vnd.docker.image.rootfs.diff.tar.gzip", l) for l in layers]}
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":"))


def put_manifest(repo, reference, body, media_type=OCI_MANIFEST, status=201, **expect):
    headers = {"Content-Type": media_type} if media_type else None
    if status == 201:
        expect.setdefault("headers", {})
        expect["headers"].setdefault("Docker-Content-Digest", sha256(body) if not reference.startswith("sha512:") else reference)
    return step(req("PUT", f"/v2/{repo}/manifests/{reference}", body, headers), status, **expect)


def boundary(data):
    return "berth-" + hashlib.sha256(data.encode()).hexdigest()[:32]


def multipart(data, spans):
    """The multipart/byteranges body berth sends for inclusive `spans` of `data`."""
    parts = [f"--{boundary(data)}\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Range: bytes {a}-{b}/{len(data)}\r\n\r\n{data[a:b + 1]}" for a, b in spans]
    return "\r\n".join(parts) + f"\r\n--{boundary(data)}--\r\n"


def error(code):
    return {"error": code}
