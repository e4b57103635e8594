"""The WSGI and ASGI apps, called as their servers call them, and the WSGI app behind a
real server (wsgiref) with an HTTP client."""
import asyncio
import http.client
import io
import os
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import berth
from berth.asgi import ASGIApp
from berth.asgi import create_app as create_asgi
from berth.wsgi import WSGIApp
from berth.wsgi import create_app as create_wsgi
from conftest import digest, image


def call_wsgi(app, method, target, body=b"", headers=None):
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "5000",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured = {}

    def start_response(status, response_headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict((n.lower(), v) for n, v in response_headers)

    iterable = app(environ, start_response)
    try:
        data = b"".join(iterable)
    finally:
        iterable.close()
    return captured["status"], captured["headers"], data


def test_wsgi_push_and_pull():
    registry = berth.Registry(memory=True)
    app = WSGIApp(registry)
    data = os.urandom(3 << 20)
    status, headers, _ = call_wsgi(app, "POST", f"/v2/w/b/blobs/uploads/?digest={digest(data)}", data)
    assert status == 201 and headers["location"] == f"/v2/w/b/blobs/{digest(data)}"
    status, headers, body = call_wsgi(app, "GET", f"/v2/w/b/blobs/{digest(data)}")
    assert status == 200 and body == data and headers["content-length"] == str(len(data))
    status, _, body = call_wsgi(app, "GET", "/v2/w/b/manifests/nope")
    assert status == 404 and b"MANIFEST_UNKNOWN" in body


def test_wsgi_app_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTH_ROOT", str(tmp_path))
    monkeypatch.setenv("BERTH_READ_ONLY", "1")
    app = create_wsgi()
    assert call_wsgi(app, "GET", "/v2/")[0] == 200
    assert call_wsgi(app, "POST", "/v2/w/ro/blobs/uploads/")[0] == 405
    monkeypatch.setenv("BERTH_STORAGE", "floppy")
    with pytest.raises(ValueError):
        create_wsgi()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_wsgi_behind_a_real_server():
    registry = berth.Registry(memory=True)
    server = make_server("127.0.0.1", 0, WSGIApp(registry), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        data = os.urandom(1 << 20)

        def request(method, target, body=None, headers=None):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            payload = response.read()
            connection.close()
            return response, payload

        response, _ = request("POST", f"/v2/w/real/blobs/uploads/?digest={digest(data)}", data)
        assert response.status == 201
        response, payload = request("GET", f"/v2/w/real/blobs/{digest(data)}")
        assert response.status == 200 and payload == data
        manifest_digest = image(registry, "w/real", "latest")
        response, _ = request("HEAD", "/v2/w/real/manifests/latest")
        assert response.status == 200 and response.getheader("Docker-Content-Digest") == manifest_digest
    finally:
        server.shutdown()


def call_asgi(app, method, target, chunks=(), headers=None, disconnect=False):
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(n.lower().encode(), v.encode()) for n, v in (headers or {}).items()],
    }
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.disconnect"} if disconnect else {"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, {}, b""
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {n.decode(): v.decode() for n, v in start["headers"]}, body


def test_asgi_push_and_pull_in_chunks():
    app = ASGIApp(berth.Registry(memory=True))
    data = os.urandom(5 << 20)
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    status, headers, _ = call_asgi(
        app, "POST", f"/v2/a/b/blobs/uploads/?digest={digest(data)}", chunks, {"Content-Length": str(len(data))}
    )
    assert status == 201, headers
    status, headers, body = call_asgi(app, "GET", f"/v2/a/b/blobs/{digest(data)}")
    assert status == 200 and body == data
    status, headers, body = call_asgi(app, "HEAD", f"/v2/a/b/blobs/{digest(data)}")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(data))


def test_asgi_disconnect_mid_body_publishes_nothing():
    app = ASGIApp(berth.Registry(memory=True))
    data = b"y" * 100_000
    status, _, _ = call_asgi(
        app,
        "POST",
        f"/v2/a/cut/blobs/uploads/?digest={digest(data)}",
        [data[:5000]],
        {"Content-Length": str(len(data))},
        disconnect=True,
    )
    assert status is None  # nothing was answered to a client that left
    status, _, _ = call_asgi(app, "HEAD", f"/v2/a/cut/blobs/{digest(data)}")
    assert status == 404


def test_asgi_lifespan_and_factory(monkeypatch):
    monkeypatch.setenv("BERTH_STORAGE", "memory")
    app = create_asgi()
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return events.pop(0)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


class NeverReadInput:
    """A request body whose client never sends it: reading it is the bug."""

    def read(self, *_):
        raise AssertionError("the app waited for a body whose length is no byte count")


def test_wsgi_refuses_an_uncountable_length_without_reading():
    app = WSGIApp(berth.Registry(memory=True))
    for length in ("99999999999999999999", "12abc"):
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/v2/w/blobs/uploads/",
            "QUERY_STRING": "digest=" + digest(b"x"),
            "wsgi.input": NeverReadInput(),
            "CONTENT_LENGTH": length,
        }
        captured = {}
        body = b"".join(app(environ, lambda status, headers: captured.setdefault("status", status)))
        assert captured["status"].startswith("400") and b"SIZE_INVALID" in body


def test_asgi_refuses_an_uncountable_length_without_waiting():
    app = ASGIApp(berth.Registry(memory=True))
    sent = []

    async def never_sent():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/a/blobs/uploads/",
        "query_string": ("digest=" + digest(b"x")).encode(),
        "headers": [(b"content-length", b"99999999999999999999")],
    }
    asyncio.run(asyncio.wait_for(app(scope, never_sent, send), 10))
    assert sent[0]["status"] == 400
    assert b"SIZE_INVALID" in b"".join(m.get("body", b"") for m in sent[1:])
