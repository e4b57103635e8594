import hashlib
import json

import pytest

import berth


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(registry: berth.Registry, repository: str, tag: str) -> str:
    """Pushes a one-layer image; returns the manifest digest."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer bytes"
    for blob in (config, layer):
        response = registry.handle("POST", f"/v2/{repository}/blobs/uploads/?digest={digest(blob)}", body=blob)
        assert response.status == 201, response.read()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}],
        }
    ).encode()
    response = registry.handle(
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        body=manifest,
    )
    assert response.status == 201, response.read()
    return digest(manifest)


@pytest.fixture(params=["memory", "fs"])
def registry(request, tmp_path):
    if request.param == "memory":
        r = berth.Registry(memory=True)
    else:
        r = berth.Registry(tmp_path / "data")
    r.kind = request.param
    yield r
    r.close()
