"""The package over the C ABI: requests, streaming bodies, errors, threads, notices."""
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import berth
from conftest import digest, image


def test_version_and_ping(registry):
    assert berth.__version__
    response = registry.handle("GET", "/v2/")
    assert response.status == 200
    assert response.header("docker-distribution-api-version") == "registry/2.0"
    assert response.json() == {}


def test_monolithic_blob_round_trip(registry):
    data = os.urandom(100_000)
    response = registry.handle("POST", f"/v2/py/blob/blobs/uploads/?digest={digest(data)}", body=data)
    assert response.status == 201
    assert response.header("Location") == f"/v2/py/blob/blobs/{digest(data)}"
    pulled = registry.handle("GET", f"/v2/py/blob/blobs/{digest(data)}")
    assert pulled.status == 200 and pulled.read() == data
    head = registry.handle("HEAD", f"/v2/py/blob/blobs/{digest(data)}")
    assert head.header("Content-Length") == str(len(data)) and head.read() == b""


def test_streamed_chunked_upload(registry):
    """A 24 MiB blob in 8 MiB PATCHes, each body an iterator of 1 MiB chunks."""
    blocks = [os.urandom(1 << 20) for _ in range(24)]
    expected = digest(b"".join(blocks))
    response = registry.handle("POST", "/v2/py/big/blobs/uploads/")
    assert response.status == 202
    location = response.header("Location")
    for start in range(0, 24, 8):
        part = blocks[start : start + 8]
        first = start << 20
        response = registry.handle(
            "PATCH",
            location,
            headers=[("Content-Range", f"{first}-{first + (8 << 20) - 1}"), ("Content-Length", str(8 << 20))],
            body=iter(part),
        )
        assert response.status == 202, response.read()
        location = response.header("Location")
    separator = "&" if "?" in location else "?"
    assert registry.handle("PUT", f"{location}{separator}digest={expected}").status == 201
    pulled = registry.handle("GET", f"/v2/py/big/blobs/{expected}")
    chunks = list(pulled)
    if registry.kind == "fs":  # memory storage holds each object as one chunk
        assert max(map(len, chunks)) <= 1 << 20, "a blob on disk is streamed in small chunks"
    assert digest(b"".join(chunks)) == expected


def test_exchange_api_streams_a_body():
    registry = berth.Registry(memory=True)
    data = b"x" * 3_000_000
    exchange = registry.start("POST", "/v2/py/ex/blobs/uploads/", f"digest={digest(data)}", {"Content-Length": str(len(data))})
    for offset in range(0, len(data), 65536):
        exchange.write(data[offset : offset + 65536])
    response = exchange.finish()
    assert response.status == 201
    with pytest.raises(berth.WrongStateError):
        exchange.write(b"more")


def test_manifest_tags_and_catalog(registry):
    manifest_digest = image(registry, "py/app", "v1")
    image(registry, "py/app", "v2")
    assert registry.handle("GET", "/v2/py/app/tags/list").json() == {"name": "py/app", "tags": ["v1", "v2"]}
    assert registry.handle("GET", "/v2/py/app/tags/list?n=1").json()["tags"] == ["v1"]
    assert "py/app" in registry.handle("GET", "/v2/_catalog").json()["repositories"]
    got = registry.handle("GET", "/v2/py/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert got.status == 200 and got.header("Docker-Content-Digest") == manifest_digest


def test_protocol_errors_are_responses_not_exceptions(registry):
    response = registry.handle("GET", "/v2/py/x/blobs/sha256:nothex")
    assert response.status == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    response = registry.handle("GET", "/v2/py/x/manifests/missing")
    assert response.status == 404 and response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_read_only_registry_refuses_pushes(tmp_path):
    registry = berth.Registry(tmp_path, read_only=True)
    response = registry.handle("POST", "/v2/py/ro/blobs/uploads/")
    assert response.status in (401, 403, 405)
    assert registry.handle("GET", "/v2/").status == 200


def test_exceptions_map_result_codes(tmp_path):
    with pytest.raises(berth.StorageUnavailableError) as caught:
        berth.Registry("/proc/berth-cannot-be-here")
    assert isinstance(caught.value, berth.StorageError)
    assert isinstance(caught.value, berth.BerthError)
    assert caught.value.code == 5 and "berth-cannot-be-here" in caught.value.detail
    with pytest.raises(berth.InvalidArgumentError) as caught:
        berth.Registry(tmp_path, part_size=0)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError):
        berth.Registry()  # no storage
    with pytest.raises(ValueError):
        berth.Registry(tmp_path, memory=True)  # two storages
    registry = berth.Registry(memory=True)
    registry.close()
    with pytest.raises(berth.WrongStateError):
        registry.handle("GET", "/v2/")


def test_check_storage_passes_on_builtin_storage(tmp_path):
    berth.Registry(tmp_path).check_storage()
    berth.Registry(memory=True).check_storage()


def test_purge_uploads_keeps_fresh_sessions():
    registry = berth.Registry(memory=True)
    assert registry.handle("POST", "/v2/py/purge/blobs/uploads/").status == 202
    assert registry.purge_uploads(3600) == 0


def test_threads_share_one_registry(registry):
    failures = []

    def push(index):
        for i in range(10):
            data = f"thread {index} blob {i}".encode()
            response = registry.handle("POST", f"/v2/py/t{index}/blobs/uploads/?digest={digest(data)}", body=data)
            if response.status != 201 or registry.handle("GET", f"/v2/py/t{index}/blobs/{digest(data)}").read() != data:
                failures.append((index, i))

    threads = [threading.Thread(target=push, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_response_outlives_registry_close():
    registry = berth.Registry(memory=True)
    data = os.urandom(10_000)
    registry.handle("POST", f"/v2/py/keep/blobs/uploads/?digest={digest(data)}", body=data)
    response = registry.handle("GET", f"/v2/py/keep/blobs/{digest(data)}")
    registry.close()
    assert response.read() == data


def _registry2_root_with_a_bad_folder(root):
    for name in ["good", "Bad..Name"]:
        link = root / "docker/registry/v2/repositories" / name / "_layers/sha256/00/link"
        link.parent.mkdir(parents=True)
        link.write_text("sha256:00")


def test_notices_reach_the_callback(tmp_path):
    _registry2_root_with_a_bad_folder(tmp_path)
    heard = []
    with berth.Registry(tmp_path, on_notice=heard.append) as registry:
        response = registry.handle("GET", "/v2/_catalog")
        assert response.status == 200
        assert response.json() == {"repositories": ["good"]}
    assert len(heard) == 1 and '"Bad..Name"' in heard[0], heard


def test_notices_are_logged_by_default(tmp_path, caplog):
    _registry2_root_with_a_bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="berth"), berth.Registry(tmp_path) as registry:
        assert registry.handle("GET", "/v2/_catalog").status == 200
    assert any('"Bad..Name"' in record.getMessage() for record in caplog.records), caplog.records



ALICE = "alice:$2y$05$.rlAcDikEk8XeKccN72noubJPp..yyEDMyUo2o0cNG6WJPL0VNHcK\n"  # s3cret
TOKEN_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIxJzG56PJYNuU6S04kxwngu6A9qukNdeubFhClLuKqG
-----END PRIVATE KEY-----
"""


def test_logins_with_the_token_service():
    rules = {"repositories": {"team-a/**": {"policies": [{"users": ["alice"], "actions": ["pull", "push"]}]}}}
    registry = berth.Registry(
        memory=True,
        auth={"htpasswd": ALICE, "rules": rules, "service": "py", "token": {"key": TOKEN_KEY}},
    )
    ping = registry.handle("GET", "/v2/", headers=[("Host", "registry.test")])
    assert ping.status == 401
    assert ping.header("WWW-Authenticate") == 'Bearer realm="https://registry.test/token",service="py"'
    basic = [("Authorization", "Basic YWxpY2U6czNjcmV0")]
    answer = registry.handle("GET", "/token?service=py&scope=repository:team-a/x:pull,push,delete", headers=basic)
    assert answer.status == 200
    granted = answer.json()
    assert granted["scope"] == "repository:team-a/x:pull,push"
    bearer = [("Authorization", f"Bearer {granted['token']}")]
    assert registry.handle("POST", "/v2/team-a/x/blobs/uploads/", headers=bearer).status == 202
    assert registry.handle("POST", "/v2/team-b/x/blobs/uploads/", headers=bearer).status == 401
    assert registry.handle("GET", "/token", headers=[("Authorization", "Basic YWxpY2U6bm8=")]).status == 401


def test_key_sets_at_a_url_come_through_fetch_key_set():
    # One registry issues tokens; another trusts them, with their keys at a URL that its
    # fetch_key_set answers from the first one's /token/keys.
    issuer = berth.Registry(memory=True, auth={"htpasswd": ALICE, "service": "py", "token": {"key": TOKEN_KEY}})
    asked, notices = [], []

    def fetch_key_set(url):
        asked.append(url)
        if len(asked) == 1:
            raise OSError("connection refused")
        return issuer.handle("GET", "/token/keys").read()

    trusting = berth.Registry(
        memory=True,
        auth={"service": "py", "key-refetch-interval": 0,
              "issuers": [{"issuer": "berth", "keys-url": "https://issuer.test/token/keys"}]},
        fetch_key_set=fetch_key_set,
        on_notice=notices.append,
    )
    answer = issuer.handle("GET", "/token?service=py&scope=repository:x:pull",
                           headers=[("Authorization", "Basic YWxpY2U6czNjcmV0")])
    bearer = [("Authorization", f"Bearer {answer.json()['token']}")]
    # The first fetch fails (and is reported); the next one brings the key.
    assert trusting.handle("GET", "/v2/", headers=bearer).status == 401
    assert notices and "connection refused" in notices[0]
    assert trusting.handle("GET", "/v2/", headers=bearer).status == 200
    assert asked == ["https://issuer.test/token/keys"] * 2


def test_garbage_collection_deletes_what_nothing_references():
    registry = berth.Registry(memory=True, track_references=True)
    data = os.urandom(1000)
    assert registry.handle("POST", f"/v2/py/gc/blobs/uploads/?digest={digest(data)}", body=data).status == 201
    dry = registry.collect_garbage(grace=0, dry_run=True)
    assert dry.marked == 0 and registry.handle("GET", f"/v2/py/gc/blobs/{digest(data)}").status == 200
    report = registry.collect_garbage(grace=0)
    assert (report.blobs_deleted, report.bytes_deleted, report.left) == (1, 1000, 0), report
    assert registry.handle("GET", f"/v2/py/gc/blobs/{digest(data)}").status == 404


def test_untagged_collection_deletes_the_manifest_a_tag_left():
    registry = berth.Registry(memory=True, track_references=True)
    config, layer = b"{}", os.urandom(1000)
    for data in (config, layer):
        assert registry.handle("POST", f"/v2/py/u/blobs/uploads/?digest={digest(data)}", body=data).status == 201

    def manifest(note):
        return json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                        "size": len(layer)}],
            "annotations": {"note": note},
        }).encode()

    old, new = manifest("old"), manifest("new")
    headers = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")]
    for body in (old, new):
        assert registry.handle("PUT", "/v2/py/u/manifests/latest", headers=headers, body=body).status == 201
    assert registry.collect_garbage(grace=0).manifests_deleted == 0
    assert registry.collect_garbage(grace=0, untagged=True, dry_run=True).manifests_deleted == 1
    report = registry.collect_garbage(grace=0, untagged=True)
    assert report.manifests_deleted == 1, report
    assert registry.handle("GET", f"/v2/py/u/manifests/{digest(old)}").status == 404
    assert registry.handle("GET", "/v2/py/u/manifests/latest").status == 200
    assert registry.handle("GET", f"/v2/py/u/blobs/{digest(layer)}").status == 200


def test_retention_rules_remove_expired_tags():
    rules = [{"repositories": "py/kept", "keep-last": 1}]
    registry = berth.Registry(memory=True, track_references=True, retention=rules)
    config, layer = b"{}", os.urandom(100)
    for data in (config, layer):
        assert registry.handle("POST", f"/v2/py/kept/blobs/uploads/?digest={digest(data)}", body=data).status == 201
    headers = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")]
    for tag in ("first", "second"):
        body = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": 100}],
            "annotations": {"tag": tag},
        }).encode()
        assert registry.handle("PUT", f"/v2/py/kept/manifests/{tag}", headers=headers, body=body).status == 201
        time.sleep(0.01)
    assert registry.collect_garbage(grace=0, dry_run=True).tags_deleted == 1
    report = registry.collect_garbage(grace=0)
    assert report.tags_deleted == 1, report
    assert registry.handle("GET", "/v2/py/kept/manifests/first").status == 404
    assert registry.handle("GET", "/v2/py/kept/manifests/second").status == 200
    with pytest.raises(berth.BerthError, match="keep-last"):
        berth.Registry(memory=True, retention=[{"repositories": "x"}])


def test_quotas_refuse_pushes_past_a_limit_and_report_usage():
    registry = berth.Registry(memory=True, quotas=[{"repositories": "py/*", "limit": "1KiB"}])
    fits, too_much = os.urandom(600), os.urandom(600)
    assert registry.handle("POST", f"/v2/py/q/blobs/uploads/?digest={digest(fits)}", body=fits).status == 201
    refused = registry.handle("POST", f"/v2/py/q/blobs/uploads/?digest={digest(too_much)}",
                              headers=[("Content-Length", "600")], body=too_much)
    assert refused.status == 403
    error = refused.json()["errors"][0]
    assert error["code"] == "DENIED"
    assert "600 B of its 1.0 KiB limit" in error["message"], error
    usage = registry.handle("GET", "/v2/_usage/py/q").json()
    assert (usage["bytes"], usage["quotas"][0]["limit"]) == (600, 1024), usage
    with pytest.raises(berth.BerthError, match="limit"):
        berth.Registry(memory=True, quotas=[{"namespace": "py"}])


def test_scrub_finds_blobs_nothing_links(tmp_path):
    registry = berth.Registry(tmp_path, track_references=True)
    linked = os.urandom(100)
    assert registry.handle("POST", f"/v2/py/s/blobs/uploads/?digest={digest(linked)}", body=linked).status == 201
    # Content under a blob key that no repository links (another tool's, or a dead push's).
    stray = os.urandom(300)
    hexdigest = digest(stray)[7:]
    path = tmp_path / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    path.parent.mkdir(parents=True)
    path.write_bytes(stray)
    dry = registry.scrub(dry_run=True)
    assert (dry.blobs, dry.stray_blobs, dry.stray_bytes, dry.marked) == (2, 1, 300, 0), dry
    report = registry.scrub()
    assert report.stray_blobs == 1 and report.marked > 0, report
    # The stray blob goes, and so (with no grace period) does the loose one no manifest uses.
    assert registry.collect_garbage(grace=0).blobs_deleted == 2
    assert not path.exists()
    with pytest.raises(berth.BerthError, match="tracking"):
        berth.Registry(memory=True).scrub()


def test_invalid_login_settings_are_refused():
    with pytest.raises(berth.BerthError, match="htpasswd"):
        berth.Registry(memory=True, auth={"htpasswd": "alice:plain"})
    with pytest.raises(berth.BerthError, match="unknown field"):
        berth.Registry(memory=True, auth='{"users": []}')


def test_upstreams_route_cached_repositories_and_refuse_pushes_there():
    # An upstream nothing listens on: the cache holds nothing, so pulls fail with the reason,
    # pushes are refused, and other repositories are ordinary ones.
    registry = berth.Registry(memory=True, upstreams=[{"prefix": "hub", "urls": ["http://127.0.0.1:9"]}])
    missing = registry.handle("GET", "/v2/hub/app/manifests/v1")
    assert missing.status == 502, missing.body
    assert "upstream is unavailable" in missing.json()["errors"][0]["message"]
    refused = registry.handle("POST", "/v2/hub/app/blobs/uploads/")
    assert refused.status == 405
    assert "pull-through cache" in refused.json()["errors"][0]["message"]
    assert registry.handle("POST", "/v2/team/app/blobs/uploads/").status == 202
    with pytest.raises(berth.BerthError, match="repository name"):
        berth.Registry(memory=True, upstreams=[{"prefix": "Bad Name", "urls": ["http://x"]}])


def test_mirror_prefills_a_cached_image_once(tmp_path):
    # The scripted upstream of the repository's tests, serving an image layout.
    lib = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "lib")
    subprocess.run([sys.executable, os.path.join(lib, "make_oci_layout.py"), str(tmp_path / "up" / "app"),
                    "v1", "--layers", "2", "--size", "50000"], check=True, stdout=subprocess.DEVNULL)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "upstream.log"
    upstream = subprocess.Popen([sys.executable, os.path.join(lib, "proxy_upstream.py"), str(port),
                                 str(tmp_path / "up"), str(log)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        registry = berth.Registry(memory=True,
                                  upstreams=[{"prefix": "hub", "urls": [f"http://127.0.0.1:{port}"]}])
        report = registry.mirror("hub/app", "v1")
        assert (report.manifests, report.blobs_fetched, report.blobs_cached) == (1, 3, 0)
        assert report.bytes_fetched > 100_000
        again = registry.mirror("hub/app", "v1")
        assert (again.blobs_fetched, again.blobs_cached) == (0, 3)
        blob_gets = [line for line in log.read_text().splitlines()
                     if '"GET"' in line and "/blobs/" in line]
        assert len(blob_gets) == 3, blob_gets
        with pytest.raises(berth.InvalidArgumentError, match="not in a pull-through cache"):
            registry.mirror("team/app", "v1")
        with pytest.raises(berth.NotFoundError):
            registry.mirror("hub/app", "v9")
    finally:
        upstream.kill()
        upstream.wait()
