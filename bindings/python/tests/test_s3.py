"""Registry(s3=...) on a real S3 API: tests/python.sh starts moto and sets
BERTH_TEST_S3_ENDPOINT (and AWS credentials); without it these tests are skipped."""
import os
import uuid
import urllib.request

import pytest

import berth
from conftest import digest, image

ENDPOINT = os.environ.get("BERTH_TEST_S3_ENDPOINT")
pytestmark = pytest.mark.skipif(not ENDPOINT, reason="BERTH_TEST_S3_ENDPOINT is not set")


@pytest.fixture
def bucket():
    name = f"berth-py-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(urllib.request.Request(f"{ENDPOINT}/{name}", method="PUT")).read()
    return berth.S3(name, endpoint=ENDPOINT, allow_http=True, path_style=True)


def test_s3_storage_meets_the_contract(bucket):
    berth.Registry(s3=bucket).check_storage()


def test_push_and_pull_on_s3(bucket):
    registry = berth.Registry(s3=bucket)
    data = os.urandom(12 << 20)  # more than one 5 MiB part
    response = registry.handle("POST", "/v2/py/s3/blobs/uploads/")
    location = response.header("Location")
    chunks = [data[i : i + (6 << 20)] for i in range(0, len(data), 6 << 20)]
    offset = 0
    for chunk in chunks:
        response = registry.handle(
            "PATCH", location, headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"}, body=chunk
        )
        assert response.status == 202, response.read()
        location = response.header("Location")
        offset += len(chunk)
    separator = "&" if "?" in location else "?"
    assert registry.handle("PUT", f"{location}{separator}digest={digest(data)}").status == 201
    assert registry.handle("GET", f"/v2/py/s3/blobs/{digest(data)}").read() == data
    image(registry, "py/s3", "v1")
    # A second registry over the same bucket sees everything: the state is in S3.
    other = berth.Registry(s3=bucket)
    assert other.handle("GET", "/v2/py/s3/tags/list").json()["tags"] == ["v1"]
