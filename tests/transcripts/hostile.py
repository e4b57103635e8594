"""The hostile-input corpus: hundreds of malformed requests, each refused with the spec's error
code, after which the registry holds exactly what it held before.

It sets up one repository (`ok`: a config, a layer, a manifest tagged `v1`, an upload session
holding five bytes), sends every malformed name, tag, digest, range, length, manifest, header,
upload id and query below at every endpoint that takes it, and then checks that nothing
changed: the catalog, the tag list, the manifest behind `v1`, the session's offset, and that no
blob or manifest any of the requests carried can be found.

Requests that only a raw socket can send (pipelined requests, malformed request lines and
framing, slow heads) are in tests/lib/hostile_clients.py.
"""
import json
from urllib.parse import quote

from steps import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, descriptor, error, req, sha256, step

CONFIG = '{"architecture":"amd64","os":"linux"}'
LAYER = "0123456789"
SESSION_BYTES = "abcde"


def manifest_doc(**extra):
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor(OCI_CONFIG, CONFIG), "layers": [descriptor(OCI_LAYER, LAYER)]}
    doc.update(extra)
    return doc


GOOD = json.dumps(manifest_doc(), separators=(",", ":"))

# Repository names the spec's grammar refuses, percent-encoded as a client would send them.
# (No literal dot segments: URL parsers in some hosts resolve `/..` before berth sees it.)
BAD_NAMES = [
    "Upper", "a..b", "-a", "a-", "a_", "a.", ".a", "a___b", "a/-b", "a/b.", "a//b", "_",
    "d" * 255, "e" * 100 + "/" + "f" * 155, quote("é"), "a%00b", "a%20b", "a%0Ab", "a%09b", "a:b",
    "a@b", "a+b", "a%25b", "a%5Cb", "a*b", "a%7Eb",
]

# Tags the grammar refuses (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
BAD_TAGS = [".a", "-a", "x" * 129, "a%00", "a%20b", quote("é"), "a+b", "a%40b", "a*b", "a%25", "%7E"]

HEX = "0123456789abcdef" * 4
# Digests the grammar refuses, or with an algorithm berth does not know.
BAD_DIGESTS = [
    "sha256:xyz", "sha256:" + HEX.upper(), "sha256:" + HEX[:63], "sha256:" + HEX + "0", "sha512:" + HEX,
    "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:", ":" + HEX, "sha256" + HEX, "SHA256:" + HEX,
    "sha256:" + "g" * 64, "sha256+b64:abc", "sha256:%20" + HEX, "sha256:" + HEX + "%00",
    "sha384:" + HEX + HEX[:32], "sha256:" + HEX + "%0A",
]

# Content-Range values a chunk to a session holding five bytes cannot carry. (Not an empty
# value: workerd drops empty header fields, so there it is a chunk without a range.)
BAD_CONTENT_RANGES = [
    "\uff15-5", "garbage", "5-4", "0-4", "6-6", "4-5", "5-", "-5", "5-99999999999999999999",
    "bytes 5-5x", "5 - 5", "0x5-0x5", "+5-5", "5-5-5", "bytes=", "5,6",
]

# Range values of a blob GET that berth refuses with 416 (malformed, or unsatisfiable).
UNSATISFIABLE_RANGES = [
    "bytes=5-2", "bytes=10-", "bytes=abc", "bytes=-0", "bytes=--1", "bytes=1--2", "bytes=",
    "bytes=,", "bytes=99999999999999999999-", "bytes=0-1,x", "bytes=\uff10-1", "bytes=0x1-2",
    "bytes=10-20,30-", "bytes=1.5-2",
]

# Malformed manifests: (what, body, content type, code).
NOT_A_DOCUMENT = "MANIFEST_INVALID"


def bad_manifests():
    cases = [
        ("not JSON", "not json", OCI_MANIFEST),
        ("empty", "", OCI_MANIFEST),
        ("an array", "[]", OCI_MANIFEST),
        ("null", "null", OCI_MANIFEST),
        ("a string", '"manifest"', OCI_MANIFEST),
        ("an empty object", "{}", OCI_MANIFEST),
        ("truncated", GOOD[:-1], OCI_MANIFEST),
        ("trailing bytes", GOOD + "x", OCI_MANIFEST),
        ("a second document", GOOD + GOOD, OCI_MANIFEST),
        ("deeply nested", "[" * 100_000, OCI_MANIFEST),
        ("deeply nested in a field", json.dumps(manifest_doc())[:-1] + ',"x":' + "[" * 10_000, OCI_MANIFEST),
        ("a NaN size", GOOD.replace('"size":10', '"size":NaN'), OCI_MANIFEST),
        ("schemaVersion 1", json.dumps(manifest_doc(schemaVersion=1)), OCI_MANIFEST),
        ("schemaVersion 3", json.dumps(manifest_doc(schemaVersion=3)), OCI_MANIFEST),
        ("schemaVersion as a string", json.dumps(manifest_doc(schemaVersion="2")), OCI_MANIFEST),
        ("no config", json.dumps({k: v for k, v in manifest_doc().items() if k != "config"}), OCI_MANIFEST),
        ("config not an object", json.dumps(manifest_doc(config="sha256:" + HEX)), OCI_MANIFEST),
        ("layers not a list", json.dumps(manifest_doc(layers={"0": descriptor(OCI_LAYER, LAYER)})), OCI_MANIFEST),
        ("a layer without a digest", json.dumps(manifest_doc(layers=[{"mediaType": OCI_LAYER, "size": 10}])),
         OCI_MANIFEST),
        ("a malformed layer digest", json.dumps(manifest_doc(
            layers=[dict(descriptor(OCI_LAYER, LAYER), digest="sha256:xyz")])), OCI_MANIFEST),
        ("a negative size", json.dumps(manifest_doc(layers=[dict(descriptor(OCI_LAYER, LAYER), size=-1)])),
         OCI_MANIFEST),
        ("a size as a string", json.dumps(manifest_doc(layers=[dict(descriptor(OCI_LAYER, LAYER), size="10")])),
         OCI_MANIFEST),
        ("a size past 2^64", GOOD.replace('"size":10', '"size":99999999999999999999999'), OCI_MANIFEST),
        ("a fractional size", GOOD.replace('"size":10', '"size":10.5'), OCI_MANIFEST),
        ("a body media type other than the header's", json.dumps(manifest_doc(mediaType=OCI_INDEX)), OCI_MANIFEST),
        ("an unknown content type", GOOD, "application/x-not-a-manifest"),
        ("a non-ASCII content type", GOOD, "application/vnd.oci.image.manifest.v1+json\u00e9"),
        ("annotations that are not strings", json.dumps(manifest_doc(annotations={"a": 1})), OCI_MANIFEST),
        ("annotations as a list", json.dumps(manifest_doc(annotations=["a"])), OCI_MANIFEST),
        ("a malformed subject", json.dumps(manifest_doc(subject={"mediaType": OCI_MANIFEST, "digest": "sha256:x",
                                                                  "size": 1})), OCI_MANIFEST),
        ("an index whose child has no digest", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                            "manifests": [{"mediaType": OCI_MANIFEST, "size": 1}]}),
         OCI_INDEX),
        ("an index whose manifests is an object", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                               "manifests": {}}), OCI_INDEX),
    ]
    return cases


def steps():
    layer_digest = sha256(LAYER)
    good_digest = sha256(GOOD)
    out = []
    add = out.append

    # The repository the corpus must leave untouched.
    add(step(req("POST", f"/v2/ok/blobs/uploads/?digest={sha256(CONFIG)}", CONFIG), 201))
    add(step(req("POST", f"/v2/ok/blobs/uploads/?digest={layer_digest}", LAYER), 201))
    add(step(req("PUT", "/v2/ok/manifests/v1", GOOD, {"Content-Type": OCI_MANIFEST}), 201))
    add(step(req("POST", "/v2/ok/blobs/uploads/"), 202, save={"session": "Location", "id": "Docker-Upload-UUID"}))
    add(step(req("PATCH", "${session}", SESSION_BYTES, {"Content-Range": "0-4"}), 202, headers={"Range": "0-4"}))

    # Names, at every endpoint that takes one.
    for name in BAD_NAMES:
        invalid = error("NAME_INVALID")
        add(step(req("GET", f"/v2/{name}/tags/list"), 400, **invalid))
        add(step(req("HEAD", f"/v2/{name}/manifests/v1"), 400))
        add(step(req("GET", f"/v2/{name}/manifests/{good_digest}"), 400, **invalid))
        add(step(req("PUT", f"/v2/{name}/manifests/v1", GOOD, {"Content-Type": OCI_MANIFEST}), 400, **invalid))
        add(step(req("DELETE", f"/v2/{name}/manifests/v1"), 400, **invalid))
        add(step(req("GET", f"/v2/{name}/blobs/{layer_digest}"), 400, **invalid))
        add(step(req("DELETE", f"/v2/{name}/blobs/{layer_digest}"), 400, **invalid))
        add(step(req("POST", f"/v2/{name}/blobs/uploads/"), 400, **invalid))
        add(step(req("POST", f"/v2/{name}/blobs/uploads/?digest={layer_digest}", LAYER), 400, **invalid))
        add(step(req("POST", f"/v2/{name}/blobs/uploads/?mount={layer_digest}&from=ok"), 400, **invalid))
        # A mount from a name that cannot exist starts a normal session, as registry:2 does.
        add(step(req("POST", f"/v2/ok/blobs/uploads/?mount={layer_digest}&from={name}"), 202,
                 headers={"Location": "*"}))
        add(step(req("GET", f"/v2/{name}/blobs/uploads/${{id}}"), 400, **invalid))
        add(step(req("GET", f"/v2/{name}/referrers/{good_digest}"), 400, **invalid))

    # Tags: a GET or DELETE names no manifest; a PUT is refused.
    for tag in BAD_TAGS:
        add(step(req("GET", f"/v2/ok/manifests/{tag}"), 404, **error("MANIFEST_UNKNOWN")))
        add(step(req("HEAD", f"/v2/ok/manifests/{tag}"), 404))
        add(step(req("DELETE", f"/v2/ok/manifests/{tag}"), 404, **error("MANIFEST_UNKNOWN")))
        add(step(req("PUT", f"/v2/ok/manifests/{tag}", GOOD, {"Content-Type": OCI_MANIFEST}), 400,
                 **error("MANIFEST_INVALID")))
        add(step(req("PUT", f"/v2/ok/manifests/{good_digest}?tag={tag}", GOOD, {"Content-Type": OCI_MANIFEST}), 400,
                 **error("MANIFEST_INVALID")))
    add(step(req("GET", "/v2/ok/tags/list?last=" + quote("é")), 200, json={"name": "ok", "tags": []}))

    # Digests, at every endpoint that takes one.
    for digest in BAD_DIGESTS:
        invalid = error("DIGEST_INVALID")
        add(step(req("GET", f"/v2/ok/blobs/{digest}"), 400, **invalid))
        add(step(req("HEAD", f"/v2/ok/blobs/{digest}"), 400))
        add(step(req("DELETE", f"/v2/ok/blobs/{digest}"), 400, **invalid))
        add(step(req("GET", f"/v2/ok/referrers/{digest}"), 400, **invalid))
        add(step(req("POST", f"/v2/ok/blobs/uploads/?digest={digest}", LAYER), 400, **invalid))
        add(step(req("POST", f"/v2/ok/blobs/uploads/?mount={digest}&from=ok"), 202, headers={"Location": "*"}))
        add(step(req("POST", f"/v2/other/blobs/uploads/?mount={digest}"), 202, headers={"Location": "*"}))
        add(step(req("POST", f"/v2/ok/blobs/uploads/?digest-algorithm={digest.split(':')[0]}x"), 400, **invalid))
        if ":" in digest and digest.split(":")[0] in ("sha256", "sha512"):
            # Shaped like a digest: a manifest reference, not a tag.
            add(step(req("GET", f"/v2/ok/manifests/{digest}"), 400, **invalid))
            add(step(req("PUT", f"/v2/ok/manifests/{digest}", GOOD, {"Content-Type": OCI_MANIFEST}), 400, **invalid))
            add(step(req("DELETE", f"/v2/ok/manifests/{digest}"), 400, **invalid))
    # Well-formed digests the content does not have.
    add(step(req("PUT", f"/v2/ok/manifests/{sha256('other')}", GOOD, {"Content-Type": OCI_MANIFEST}), 400,
             **error("DIGEST_INVALID")))
    add(step(req("POST", f"/v2/ok/blobs/uploads/?digest={sha256('other')}", LAYER), 400, **error("DIGEST_INVALID")))

    # Ranges of a blob GET.
    for value in UNSATISFIABLE_RANGES:
        add(step(req("GET", f"/v2/ok/blobs/{layer_digest}", headers={"Range": value}), 416,
                 headers={"Content-Range": f"bytes */{len(LAYER)}"}, **error("SIZE_INVALID")))
    # Positions past 2^64 mean "the end" and "everything" (RFC 9110 §14.1.1); too many ranges
    # and units other than bytes are ignored.
    add(step(req("GET", f"/v2/ok/blobs/{layer_digest}", headers={"Range": "bytes=2-99999999999999999999"}), 206,
             body=LAYER[2:], headers={"Content-Range": f"bytes 2-9/{len(LAYER)}"}))
    add(step(req("GET", f"/v2/ok/blobs/{layer_digest}", headers={"Range": "bytes=-99999999999999999999"}), 206,
             body=LAYER))
    add(step(req("GET", f"/v2/ok/blobs/{layer_digest}", headers={"Range": "bytes=" + ",".join(["0-0"] * 1001)}),
             200, body=LAYER))
    for unit in ["items=0-1", "Bytes=0-1", "bytes 0-1", "\u00e9=0-1"]:
        add(step(req("GET", f"/v2/ok/blobs/{layer_digest}", headers={"Range": unit}), 200, body=LAYER))

    # Chunks to the session: nothing is appended.
    for value in BAD_CONTENT_RANGES:
        add(step(req("PATCH", "${session}", "f", {"Content-Range": value}), 416,
                 headers={"Range": "0-4", "Location": "${session}"}, **error("BLOB_UPLOAD_INVALID")))
    # A range the body does not fill.
    add(step(req("PATCH", "${session}", "fg", {"Content-Range": "5-9"}), 400, **error("SIZE_INVALID")))
    add(step(req("PATCH", "${session}", "fghij", {"Content-Range": "5-6"}), 400, **error("SIZE_INVALID")))
    # A session belongs to its repository; ids that are not ids are unknown.
    add(step(req("PATCH", "/v2/other/blobs/uploads/${id}", "f"), 404, **error("BLOB_UPLOAD_UNKNOWN")))
    add(step(req("PUT", f"/v2/other/blobs/uploads/${{id}}?digest={sha256(SESSION_BYTES)}"), 404,
             **error("BLOB_UPLOAD_UNKNOWN")))
    add(step(req("DELETE", "/v2/other/blobs/uploads/${id}"), 404, **error("BLOB_UPLOAD_UNKNOWN")))
    for upload_id in ["x" * 300, "a%00", quote("é"), ".hidden", "a.b", "a%5Cb", "_", "-"]:
        for method, query in [("GET", ""), ("PATCH", ""), ("PUT", f"?digest={sha256(SESSION_BYTES)}"),
                              ("DELETE", "")]:
            add(step(req(method, f"/v2/ok/blobs/uploads/{upload_id}{query}"), 404,
                     **error("BLOB_UPLOAD_UNKNOWN")))
    # Finishing with a malformed digest keeps the session.
    for digest in BAD_DIGESTS[:6]:
        add(step(req("PUT", f"${{session}}?digest={digest}"), 400, **error("DIGEST_INVALID")))
    add(step(req("PUT", "${session}"), 400, **error("DIGEST_INVALID")))
    add(step(req("GET", "${session}"), 204, headers={"Range": "0-4"}))

    # Manifests.
    for what, body, content_type in bad_manifests():
        add(step(req("PUT", "/v2/ok/manifests/bad", body, {"Content-Type": content_type}), 400,
                 **error(NOT_A_DOCUMENT)))
        add(step(req("PUT", f"/v2/ok/manifests/{sha256(body)}", body, {"Content-Type": content_type}), 400,
                 **error(NOT_A_DOCUMENT)))
    # Well-formed, but naming blobs the repository does not hold. (An index may name child
    # manifests that are not there: `skopeo copy --multi-arch index-only` pushes such indexes.)
    unknown_layer = json.dumps(manifest_doc(layers=[descriptor(OCI_LAYER, "not pushed")]))
    unknown_config = json.dumps(manifest_doc(config=descriptor(OCI_CONFIG, "not pushed")))
    for body in [unknown_layer, unknown_config]:
        add(step(req("PUT", "/v2/ok/manifests/bad", body, {"Content-Type": OCI_MANIFEST}), 400,
                 **error("MANIFEST_BLOB_UNKNOWN")))
    # Past the 4 MiB a registry must accept: refused, not read into memory.
    add(step(req("PUT", "/v2/ok/manifests/bad", None, {"Content-Type": OCI_MANIFEST},
                 body_repeat={"text": " ", "count": 4 * 1024 * 1024 + 1}), 413, **error("SIZE_INVALID")))

    # Queries.
    for n in ["-1", "abc", "1e3", "99999999999999999999", "1.5", "%20", "0x10"]:
        add(step(req("GET", f"/v2/ok/tags/list?n={n}"), 400, **error("UNSUPPORTED")))
        add(step(req("GET", f"/v2/_catalog?n={n}"), 400, **error("UNSUPPORTED")))
    add(step(req("GET", "/v2/ok/referrers/" + good_digest + "?artifactType=" + quote("\u00e9")), 200,
             json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))

    # Methods an endpoint does not have.
    for method, path in [("POST", "/v2/ok/tags/list"), ("PUT", "/v2/_catalog"), ("DELETE", "/v2/_catalog"),
                         ("PATCH", f"/v2/ok/blobs/{layer_digest}"), ("POST", "/v2/ok/manifests/v1"),
                         ("PUT", f"/v2/ok/referrers/{good_digest}"), ("DELETE", "/v2/")]:
        add(step(req(method, path), 405, **error("UNSUPPORTED")))

    # Nothing changed.
    add(step(req("GET", "/v2/_catalog"), 200, json={"repositories": ["ok"]}))
    add(step(req("GET", "/v2/ok/tags/list"), 200, json={"name": "ok", "tags": ["v1"]}))
    add(step(req("GET", "/v2/ok/manifests/v1"), 200, body=GOOD, headers={"Docker-Content-Digest": good_digest}))
    add(step(req("GET", "${session}"), 204, headers={"Range": "0-4"}))
    add(step(req("GET", f"/v2/ok/blobs/{layer_digest}"), 200, body=LAYER))
    carried = ({body for _, body, _ in bad_manifests()} | {unknown_layer, unknown_config}) - {GOOD}
    for body in sorted(carried):
        add(step(req("HEAD", f"/v2/ok/manifests/{sha256(body)}"), 404))
    for data in sorted({"f", "fg", "fghij", SESSION_BYTES + "f", "other", "not pushed"}):
        add(step(req("HEAD", f"/v2/ok/blobs/{sha256(data)}"), 404))
    add(step(req("HEAD", f"/v2/other/blobs/{layer_digest}"), 404))
    add(step(req("GET", f"/v2/ok/referrers/{good_digest}"), 200,
             json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))
    # Cancelled, the session leaves nothing (the filesystem replay checks its scratch space).
    add(step(req("DELETE", "${session}"), 204))
    add(step(req("GET", "${session}"), 404, **error("BLOB_UPLOAD_UNKNOWN")))
    return out
