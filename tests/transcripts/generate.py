#!/usr/bin/env python3
"""Writes the request→response transcripts in this folder.

Each transcript is a JSON file: a list of steps, each a request and the response expected.
Every host of berth (the Rust driver, the C ABI, Python, WASM) replays these same files, so the
digests in them are computed here rather than typed. Run it after changing a scenario:

    python3 tests/transcripts/generate.py

Step format:
  request:  method, path (may carry ?query), headers {}, and one of
            body (text), body_repeat {"text", "count"}
  response: status, headers {} (exact values; "*" = present), absent_headers [],
            error (code of the first error), body (exact text), json (exact JSON value)
  save:     {"var": "Header-Name"}: later paths and header values may use ${var}
"""
import json
import os

import hostile
from steps import (DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, EMPTY, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
                   OCI_MANIFEST, boundary, descriptor, error, image, multipart, push_blob, put_manifest,
                   req, sha256, sha512, step)

HERE = os.path.dirname(os.path.abspath(__file__))

transcripts = {}

transcripts["hostile"] = hostile.steps()

transcripts["api-version"] = [
    step(req("GET", "/v2/"), 200, headers={"Docker-Distribution-API-Version": "registry/2.0"}, json={}),
    step(req("HEAD", "/v2/"), 200),
    step(req("GET", "/v1/"), 404, **error("UNSUPPORTED")),
    step(req("GET", "/v2/just-a-name"), 404, **error("UNSUPPORTED")),
    step(req("POST", "/v2/"), 405, **error("UNSUPPORTED")),
    step(req("PATCH", "/v2/r/manifests/latest"), 405, **error("UNSUPPORTED")),
]

hello = "hello, registry"
transcripts["blob-monolithic"] = [
    push_blob("r", hello),
    step(req("HEAD", f"/v2/r/blobs/{sha256(hello)}"), 200,
         headers={"Content-Length": str(len(hello)), "Docker-Content-Digest": sha256(hello)}),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}"), 200, body=hello,
         headers={"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=7-14"}), 206,
         body="registry", headers={"Content-Range": f"bytes 7-14/{len(hello)}", "Content-Length": "8"}),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=-3"}), 206, body="try"),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=100-"}), 416,
         headers={"Content-Range": f"bytes */{len(hello)}"}, **error("SIZE_INVALID")),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=9-2"}), 416, **error("SIZE_INVALID")),
    # Several ranges: multipart/byteranges (podman asks so for zstd:chunked layers).
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=0-4, 7-14"}), 206,
         body=multipart(hello, [(0, 4), (7, 14)]),
         headers={"Content-Type": "multipart/byteranges; boundary=" + boundary(hello),
                  "Content-Length": str(len(multipart(hello, [(0, 4), (7, 14)])))}),
    step(req("HEAD", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=0-4,7-14"}), 206,
         headers={"Content-Length": str(len(multipart(hello, [(0, 4), (7, 14)])))}),
    # An unsatisfiable range among satisfiable ones is left out.
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=0-4,100-200"}), 206,
         body="hello", headers={"Content-Range": f"bytes 0-4/{len(hello)}"}),
    # Ranges that overlap into more than the blob: the whole blob instead.
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=0-,0-"}), 200, body=hello),
    # A unit other than bytes is ignored (RFC 9110 §14.2).
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "items=0-1"}), 200, body=hello),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}", headers={"Range": "bytes=0-1,x"}), 416,
         **error("SIZE_INVALID")),
    step(req("GET", f"/v2/other/blobs/{sha256(hello)}"), 404, **error("BLOB_UNKNOWN")),
    step(req("HEAD", f"/v2/other/blobs/{sha256(hello)}"), 404),
    step(req("DELETE", f"/v2/r/blobs/{sha256(hello)}"), 202),
    step(req("GET", f"/v2/r/blobs/{sha256(hello)}"), 404, **error("BLOB_UNKNOWN")),
    step(req("DELETE", f"/v2/r/blobs/{sha256(hello)}"), 404, **error("BLOB_UNKNOWN")),
    # The empty blob.
    push_blob("r", ""),
    step(req("GET", f"/v2/r/blobs/{sha256('')}"), 200, body="", headers={"Content-Length": "0"}),
    # No range of an empty blob holds a byte.
    step(req("GET", f"/v2/r/blobs/{sha256('')}", headers={"Range": "bytes=-5"}), 416,
         headers={"Content-Range": "bytes */0"}, **error("SIZE_INVALID")),
]

transcripts["bad-input"] = [
    step(req("GET", "/v2/Upper/tags/list"), 400, **error("NAME_INVALID")),
    step(req("GET", "/v2/a..b/tags/list"), 400, **error("NAME_INVALID")),
    step(req("POST", "/v2/-bad/blobs/uploads/"), 400, **error("NAME_INVALID")),
    step(req("GET", "/v2/r/blobs/sha256:xyz"), 400, **error("DIGEST_INVALID")),
    step(req("GET", "/v2/r/blobs/sha256:" + "A" * 64), 400, **error("DIGEST_INVALID")),
    step(req("GET", "/v2/r/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"), 400, **error("DIGEST_INVALID")),
    step(req("GET", "/v2/r/manifests/sha256:123"), 400, **error("DIGEST_INVALID")),
    step(req("POST", "/v2/r/blobs/uploads/?digest=sha256:nope", "x"), 400, **error("DIGEST_INVALID")),
    step(req("POST", "/v2/r/blobs/uploads/?digest-algorithm=md5"), 400, **error("DIGEST_INVALID")),
    # Content that does not match its digest is refused and never becomes visible.
    step(req("POST", f"/v2/r/blobs/uploads/?digest={sha256('expected')}", "actual"), 400, **error("DIGEST_INVALID")),
    step(req("HEAD", f"/v2/r/blobs/{sha256('expected')}"), 404),
    step(req("HEAD", f"/v2/r/blobs/{sha256('actual')}"), 404),
    step(req("GET", "/v2/r/blobs/uploads/not.an.id"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("PATCH", "/v2/r/blobs/uploads/unknown-session", "x"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("GET", "/v2/r/tags/list?n=many"), 400, **error("UNSUPPORTED")),
    # The longest names: 255 characters in all, 254 in one component; one more is refused.
    push_blob("a/" + "b" * 253, "long name"),
    push_blob("c" * 254, "long name"),
    step(req("POST", "/v2/" + "d" * 255 + f"/blobs/uploads/?digest={sha256('long name')}", "long name"), 400,
         **error("NAME_INVALID")),
    step(req("GET", "/v2/_catalog"), 200, json={"repositories": ["a/" + "b" * 253, "c" * 254]}),
]

whole = "hello world, in three chunks"
c1, c2, c3 = whole[:5], whole[5:17], whole[17:]
transcripts["blob-chunked"] = [
    step(req("POST", "/v2/r/blobs/uploads/"), 202, headers={"Range": "0-0", "Location": "*", "Docker-Upload-UUID": "*"},
         save={"upload": "Location"}),
    step(req("PATCH", "${upload}", c1, {"Content-Range": f"0-{len(c1) - 1}", "Content-Type": "application/octet-stream"}),
         202, headers={"Range": f"0-{len(c1) - 1}", "Location": "${upload}"}),
    # Out of order: 416 with the current range, and nothing changes.
    step(req("PATCH", "${upload}", c1, {"Content-Range": f"0-{len(c1) - 1}"}), 416,
         headers={"Range": f"0-{len(c1) - 1}", "Location": "${upload}"}, **error("BLOB_UPLOAD_INVALID")),
    step(req("PATCH", "${upload}", c2, {"Content-Range": f"{len(c1) + 1}-{len(c1) + len(c2)}"}), 416,
         headers={"Range": f"0-{len(c1) - 1}"}, **error("BLOB_UPLOAD_INVALID")),
    step(req("PATCH", "${upload}", "x", {"Content-Range": "nonsense"}), 416, **error("BLOB_UPLOAD_INVALID")),
    # A full-width digit is no digit: refused like any malformed range, never taken for none.
    step(req("PATCH", "${upload}", "x", {"Content-Range": "\uff10-0"}), 416, **error("BLOB_UPLOAD_INVALID")),
    # A Content-Range that does not match the body's length.
    step(req("PATCH", "${upload}", c2, {"Content-Range": f"{len(c1)}-{len(c1) + len(c2)}"}), 400, **error("SIZE_INVALID")),
    step(req("GET", "${upload}"), 204, headers={"Range": f"0-{len(c1) - 1}", "Location": "${upload}"}),
    step(req("PATCH", "${upload}", c2, {"Content-Range": f"{len(c1)}-{len(c1) + len(c2) - 1}"}), 202,
         headers={"Range": f"0-{len(c1) + len(c2) - 1}"}),
    # A streamed chunk: no Content-Range, appended.
    step(req("PATCH", "${upload}", c3), 202, headers={"Range": f"0-{len(whole) - 1}"}),
    step(req("PUT", "${upload}"), 400, **error("DIGEST_INVALID")),
    step(req("PUT", "${upload}?digest=" + sha256(whole)), 201,
         headers={"Location": f"/v2/r/blobs/{sha256(whole)}", "Docker-Content-Digest": sha256(whole)}),
    step(req("GET", "${upload}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("GET", f"/v2/r/blobs/{sha256(whole)}"), 200, body=whole),
    # The last chunk may come with the PUT.
    step(req("POST", "/v2/r/blobs/uploads/"), 202, save={"second": "Location"}),
    step(req("PATCH", "${second}", "abc", {"Content-Range": "0-2"}), 202, headers={"Range": "0-2"}),
    step(req("PUT", "${second}?digest=" + sha256("abcdef"), "def", {"Content-Range": "3-5"}), 201),
    step(req("GET", f"/v2/r/blobs/{sha256('abcdef')}"), 200, body="abcdef"),
    # A wrong digest at the end fails and ends the session; nothing becomes visible.
    step(req("POST", "/v2/r/blobs/uploads/"), 202, save={"third": "Location"}),
    step(req("PATCH", "${third}", "some bytes"), 202),
    step(req("PUT", "${third}?digest=" + sha256("other bytes")), 400, **error("DIGEST_INVALID")),
    step(req("HEAD", f"/v2/r/blobs/{sha256('other bytes')}"), 404),
    step(req("HEAD", f"/v2/r/blobs/{sha256('some bytes')}"), 404),
    step(req("GET", "${third}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
]

transcripts["blob-upload-cancel"] = [
    step(req("POST", "/v2/r/blobs/uploads/"), 202, save={"upload": "Location", "id": "Docker-Upload-UUID"}),
    step(req("PATCH", "${upload}", "partial", {"Content-Range": "0-6"}), 202),
    # A session belongs to the repository it was started in.
    step(req("GET", "/v2/other/blobs/uploads/${id}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("PATCH", "/v2/other/blobs/uploads/${id}", "more", {"Content-Range": "7-10"}), 404,
         **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("DELETE", "/v2/other/blobs/uploads/${id}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("GET", "${upload}"), 204, headers={"Range": "0-6"}),
    step(req("DELETE", "${upload}"), 204),
    step(req("GET", "${upload}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("PATCH", "${upload}", "more"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("DELETE", "${upload}"), 404, **error("BLOB_UPLOAD_UNKNOWN")),
    step(req("HEAD", f"/v2/r/blobs/{sha256('partial')}"), 404),
]

big = "sha512 content " * 20
cfg512 = '{"architecture":"amd64","os":"linux"}'
manifest512 = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": descriptor(OCI_CONFIG, cfg512, sha512(cfg512)),
                          "layers": [descriptor(OCI_LAYER, big, sha512(big))]}, separators=(",", ":"))
transcripts["sha512"] = [
    step(req("POST", "/v2/r/blobs/uploads/?digest-algorithm=sha512"), 202, save={"upload": "Location"}),
    step(req("PATCH", "${upload}", big[:100], {"Content-Range": "0-99"}), 202),
    step(req("PUT", "${upload}?digest=" + sha512(big), big[100:], {"Content-Range": f"100-{len(big) - 1}"}), 201,
         headers={"Docker-Content-Digest": sha512(big)}),
    step(req("GET", f"/v2/r/blobs/{sha512(big)}"), 200, body=big, headers={"Docker-Content-Digest": sha512(big)}),
    step(req("POST", f"/v2/r/blobs/uploads/?digest={sha512(cfg512)}", cfg512), 201),
    # A chunked sha512 push that never said so is still verified.
    step(req("POST", "/v2/s/blobs/uploads/"), 202, save={"undeclared": "Location"}),
    step(req("PATCH", "${undeclared}", big[:50]), 202),
    step(req("PATCH", "${undeclared}", big[50:]), 202),
    step(req("PUT", "${undeclared}?digest=" + sha512(big)), 201),
    step(req("GET", f"/v2/s/blobs/{sha512(big)}"), 200, body=big),
    put_manifest("r", sha512(manifest512), manifest512),
    step(req("GET", f"/v2/r/manifests/{sha512(manifest512)}"), 200, body=manifest512,
         headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha512(manifest512)}),
    step(req("PUT", f"/v2/r/manifests/{sha512('not it')}", manifest512, {"Content-Type": OCI_MANIFEST}), 400,
         **error("DIGEST_INVALID")),
    step(req("POST", f"/v2/t/blobs/uploads/?mount={sha512(big)}&from=r"), 201,
         headers={"Location": f"/v2/t/blobs/{sha512(big)}"}),
]

config = '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
layer = "pretend this is a gzip'd tar"
manifest = image(config, [layer], annotations={"x": "y"}, unknownField=[1, 2])
missing_layer = image(config, ["never pushed"])
transcripts["manifests"] = [
    push_blob("r", config), push_blob("r", layer),
    step(req("GET", "/v2/r/manifests/latest"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("GET", "/v2/r/manifests/.INVALID_TAG"), 404, **error("MANIFEST_UNKNOWN")),
    put_manifest("r", "latest", manifest,
                 headers={"Location": f"/v2/r/manifests/{sha256(manifest)}", "Docker-Content-Digest": sha256(manifest)}),
    step(req("GET", "/v2/r/manifests/latest"), 200, body=manifest,
         headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(manifest),
                  "Content-Length": str(len(manifest))}),
    step(req("HEAD", f"/v2/r/manifests/{sha256(manifest)}"), 200,
         headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(manifest))}),
    step(req("GET", f"/v2/other/manifests/{sha256(manifest)}"), 404, **error("MANIFEST_UNKNOWN")),
    # Manifests are blobs too.
    step(req("GET", f"/v2/r/blobs/{sha256(manifest)}"), 200, body=manifest),
    put_manifest("r", sha256(manifest), manifest),
    put_manifest("r", sha256("something else"), manifest, status=400, **error("DIGEST_INVALID")),
    put_manifest("r", "broken", "{not json", status=400, **error("MANIFEST_INVALID")),
    put_manifest("r", "schema1", '{"schemaVersion":1,"name":"r","tag":"x","fsLayers":[]}', status=400,
                 **error("MANIFEST_INVALID")),
    put_manifest("r", "mismatch", manifest, media_type=OCI_INDEX, status=400, **error("MANIFEST_INVALID")),
    put_manifest("r", ".bad-tag", manifest, status=400, **error("MANIFEST_INVALID")),
    put_manifest("r", "missing", missing_layer, status=400, **error("MANIFEST_BLOB_UNKNOWN")),
    step(req("GET", "/v2/r/manifests/missing"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("PUT", "/v2/r/manifests/huge", None, {"Content-Type": OCI_MANIFEST},
             body_repeat={"text": " ", "count": 4 * 1024 * 1024 + 1}), 413, **error("SIZE_INVALID")),
    # Without a mediaType field, the Content-Type names the type.
    put_manifest("r", "untyped", json.dumps({"schemaVersion": 2, "config": descriptor(OCI_CONFIG, config),
                                             "layers": []}, separators=(",", ":"))),
    step(req("GET", "/v2/r/manifests/untyped"), 200, headers={"Content-Type": OCI_MANIFEST}),
]

docker_manifest = image(config, [layer], media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG)
docker_list = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
    descriptor(DOCKER_MANIFEST, docker_manifest, platform={"architecture": "amd64", "os": "linux"})]},
    separators=(",", ":"))
oci_index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    descriptor(OCI_MANIFEST, manifest, platform={"architecture": "amd64", "os": "linux"}),
    descriptor(DOCKER_MANIFEST, docker_manifest, platform={"architecture": "arm64", "os": "linux"})]},
    separators=(",", ":"))
transcripts["manifest-types"] = [
    push_blob("r", config), push_blob("r", layer),
    put_manifest("r", "oci", manifest),
    put_manifest("r", "docker", docker_manifest, media_type=DOCKER_MANIFEST),
    put_manifest("r", "docker-list", docker_list, media_type=DOCKER_LIST),
    put_manifest("r", "index", oci_index, media_type=OCI_INDEX),
    step(req("GET", "/v2/r/manifests/docker"), 200, body=docker_manifest, headers={"Content-Type": DOCKER_MANIFEST}),
    step(req("GET", "/v2/r/manifests/docker-list"), 200, body=docker_list, headers={"Content-Type": DOCKER_LIST}),
    step(req("GET", "/v2/r/manifests/index"), 200, body=oci_index, headers={"Content-Type": OCI_INDEX}),
]

transcripts["tags"] = [
    push_blob("r", config), push_blob("r", layer),
    *[put_manifest("r", tag, manifest) for tag in ["v1", "b", "a", "v1-rc", "V2"]],
    step(req("GET", "/v2/r/tags/list"), 200, json={"name": "r", "tags": ["V2", "a", "b", "v1", "v1-rc"]},
         absent_headers=["Link"]),
    step(req("GET", "/v2/r/tags/list?n=2"), 200, json={"name": "r", "tags": ["V2", "a"]},
         headers={"Link": '</v2/r/tags/list?n=2&last=a>; rel="next"'}),
    step(req("GET", "/v2/r/tags/list?n=2&last=a"), 200, json={"name": "r", "tags": ["b", "v1"]},
         headers={"Link": '</v2/r/tags/list?n=2&last=v1>; rel="next"'}),
    step(req("GET", "/v2/r/tags/list?n=2&last=v1"), 200, json={"name": "r", "tags": ["v1-rc"]},
         absent_headers=["Link"]),
    step(req("GET", "/v2/r/tags/list?n=0"), 200, json={"name": "r", "tags": []}),
    step(req("GET", "/v2/r/tags/list?last=b"), 200, json={"name": "r", "tags": ["v1", "v1-rc"]}),
    step(req("GET", "/v2/nothing/tags/list"), 404, **error("NAME_UNKNOWN")),
    # A push by digest may name several tags.
    step(req("PUT", f"/v2/multi/manifests/{sha256(manifest)}?tag=one&tag=two", manifest, {"Content-Type": OCI_MANIFEST}),
         400, **error("MANIFEST_BLOB_UNKNOWN")),
    step(req("POST", f"/v2/multi/blobs/uploads/?mount={sha256(config)}&from=r"), 201),
    step(req("POST", f"/v2/multi/blobs/uploads/?mount={sha256(layer)}&from=r"), 201),
    step(req("PUT", f"/v2/multi/manifests/{sha256(manifest)}?tag=one&tag=two", manifest, {"Content-Type": OCI_MANIFEST}),
         201, headers={"Docker-Content-Digest": sha256(manifest), "OCI-Tag": "one"}),
    step(req("GET", "/v2/multi/tags/list"), 200, json={"name": "multi", "tags": ["one", "two"]}),
    step(req("PUT", f"/v2/multi/manifests/{sha256(manifest)}?tag=-bad", manifest, {"Content-Type": OCI_MANIFEST}),
         400, **error("MANIFEST_INVALID")),
]

other = image(config, [layer], annotations={"other": "yes"})
transcripts["delete"] = [
    push_blob("r", config), push_blob("r", layer),
    put_manifest("r", "keep", manifest), put_manifest("r", "drop", manifest), put_manifest("r", "other", other),
    step(req("DELETE", "/v2/r/manifests/drop"), 202),
    step(req("GET", "/v2/r/manifests/drop"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("DELETE", "/v2/r/manifests/drop"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("GET", f"/v2/r/manifests/{sha256(manifest)}"), 200),
    step(req("GET", "/v2/r/tags/list"), 200, json={"name": "r", "tags": ["keep", "other"]}),
    step(req("DELETE", f"/v2/r/manifests/{sha256(manifest)}"), 202),
    step(req("GET", f"/v2/r/manifests/{sha256(manifest)}"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("GET", "/v2/r/manifests/keep"), 404, **error("MANIFEST_UNKNOWN")),
    step(req("GET", "/v2/r/tags/list"), 200, json={"name": "r", "tags": ["other"]}),
    step(req("DELETE", f"/v2/r/manifests/{sha256(manifest)}"), 404, **error("MANIFEST_UNKNOWN")),
]

subject = manifest
sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
                  "config": descriptor(EMPTY, "{}"), "layers": [descriptor("text/plain", "sig")],
                  "subject": descriptor(OCI_MANIFEST, subject), "annotations": {"who": "me"}},
                 separators=(",", ":"))
sbom = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": descriptor("application/vnd.example.sbom.config", "{}"), "layers": [],
                   "subject": descriptor(OCI_MANIFEST, subject)}, separators=(",", ":"))
orphan = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
                     "config": descriptor(EMPTY, "{}"), "layers": [],
                     "subject": descriptor(OCI_MANIFEST, "no such manifest")}, separators=(",", ":"))
sig_desc = {"mediaType": OCI_MANIFEST, "digest": sha256(sig), "size": len(sig),
            "artifactType": "application/vnd.example.sig", "annotations": {"who": "me"}}
sbom_desc = {"mediaType": OCI_MANIFEST, "digest": sha256(sbom), "size": len(sbom),
             "artifactType": "application/vnd.example.sbom.config"}
transcripts["referrers"] = [
    push_blob("r", config), push_blob("r", layer), push_blob("r", "{}"), push_blob("r", "sig"),
    step(req("GET", f"/v2/r/referrers/{sha256(subject)}"), 200,
         headers={"Content-Type": OCI_INDEX},
         json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    put_manifest("r", sha256(subject), subject),
    put_manifest("r", sha256(sig), sig, headers={"OCI-Subject": sha256(subject)}),
    put_manifest("r", sha256(sbom), sbom, headers={"OCI-Subject": sha256(subject)}),
    # A subject that does not exist (yet) must be accepted.
    put_manifest("r", sha256(orphan), orphan, headers={"OCI-Subject": sha256("no such manifest")}),
    step(req("GET", f"/v2/r/referrers/{sha256(subject)}"), 200,
         json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": sorted([sig_desc, sbom_desc], key=lambda d: d["digest"])},
         absent_headers=["OCI-Filters-Applied"]),
    step(req("GET", f"/v2/r/referrers/{sha256(subject)}?artifactType=application/vnd.example.sig"), 200,
         json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig_desc]},
         headers={"OCI-Filters-Applied": "artifactType"}),
    step(req("GET", f"/v2/r/referrers/{sha256('no such manifest')}"), 200,
         json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
             {"mediaType": OCI_MANIFEST, "digest": sha256(orphan), "size": len(orphan),
              "artifactType": "application/vnd.example.sig"}]}),
    step(req("GET", "/v2/r/referrers/sha256:bad"), 400, **error("DIGEST_INVALID")),
    step(req("DELETE", f"/v2/r/manifests/{sha256(sig)}"), 202),
    step(req("GET", f"/v2/r/referrers/{sha256(subject)}"), 200,
         json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sbom_desc]}),
]

transcripts["mount"] = [
    push_blob("a", layer),
    step(req("POST", f"/v2/b/blobs/uploads/?mount={sha256(layer)}&from=a"), 201,
         headers={"Location": f"/v2/b/blobs/{sha256(layer)}", "Docker-Content-Digest": sha256(layer)}),
    step(req("GET", f"/v2/b/blobs/{sha256(layer)}"), 200, body=layer),
    # Nothing to mount: a normal session starts.
    step(req("POST", f"/v2/c/blobs/uploads/?mount={sha256('unknown')}&from=a"), 202, headers={"Location": "*"}),
    step(req("POST", f"/v2/c/blobs/uploads/?mount={sha256(layer)}&from=nothing-here"), 202),
    step(req("POST", f"/v2/c/blobs/uploads/?mount={sha256(layer)}&from=BAD"), 202),
    step(req("POST", "/v2/c/blobs/uploads/?mount=sha256:bad&from=a"), 202),
    # Without `from`, an automatic mount of content the registry has.
    step(req("POST", f"/v2/d/blobs/uploads/?mount={sha256(layer)}"), 201),
    step(req("GET", f"/v2/d/blobs/{sha256(layer)}"), 200, body=layer),
]

transcripts["catalog"] = [
    push_blob("zeta", layer), push_blob("alpha/one", layer), push_blob("alpha/two/three", layer),
    push_blob("blobs/uploads", layer),
    step(req("GET", "/v2/_catalog"), 200,
         json={"repositories": ["alpha/one", "alpha/two/three", "blobs/uploads", "zeta"]}),
    step(req("GET", "/v2/_catalog?n=2"), 200, json={"repositories": ["alpha/one", "alpha/two/three"]},
         headers={"Link": '</v2/_catalog?n=2&last=alpha/two/three>; rel="next"'}),
    step(req("GET", "/v2/_catalog?n=2&last=alpha/two/three"), 200, json={"repositories": ["blobs/uploads", "zeta"]},
         absent_headers=["Link"]),
    step(req("GET", f"/v2/blobs/uploads/blobs/{sha256(layer)}"), 200, body=layer),
]

for name, steps in transcripts.items():
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump({"name": name, "steps": steps}, f, indent=1)
        f.write("\n")
print(f"wrote {len(transcripts)} transcripts, {sum(len(s) for s in transcripts.values())} steps")
