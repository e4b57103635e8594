"""A WSGI application serving a Registry::

    BERTH_ROOT=./registry-data gunicorn -k gthread --threads 8 'berth.wsgi:create_app()'

gunicorn's threads read request heads themselves, so clients that send their headers slowly
hold a thread each: put a proxy that buffers requests in front of it (see the README), or
serve the ASGI app with uvicorn, which reads heads without holding a thread.

Request bodies are passed to berth as they are read from ``wsgi.input``; response bodies
are iterated chunk by chunk from storage.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import quote

from ._env import registry_from_env, start_collector_from_env
from ._http import length_is_countable
from .registry import Registry, Response

READ_CHUNK = 1 << 20
#: Headers a WSGI application must leave to the server.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}

StartResponse = Callable[[str, List[Tuple[str, str]]], object]

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    307: "Temporary Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def _target(environ: dict) -> Tuple[str, Optional[str]]:
    """The raw path and query; servers that keep the request target (gunicorn's RAW_URI,
    uWSGI's REQUEST_URI) are trusted over the decoded PATH_INFO."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
        return path, query or None
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1").decode("utf-8", "replace"), safe="/:@!$&'()*+,;=-._~")
    return path, environ.get("QUERY_STRING") or None


def _headers(environ: dict) -> Iterator[Tuple[str, str]]:
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            yield name, environ[key]


def _body(environ: dict) -> Iterator[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        remaining = int(length)
        while remaining > 0:
            chunk = stream.read(min(READ_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("the request body ended early")
            remaining -= len(chunk)
            yield chunk
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                return
            yield chunk


class _Body:
    """The response body as a WSGI iterable that releases the response when closed."""

    def __init__(self, response: Response) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        self.response.close()


class WSGIApp:
    """Serves ``registry`` over WSGI."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path, query = _target(environ)
        headers = list(_headers(environ))
        exchange = self.registry.start(environ["REQUEST_METHOD"], path, query, headers)
        try:
            if length_is_countable(headers):
                for chunk in _body(environ):
                    exchange.write(chunk)
        except BaseException:
            exchange.close()  # the registry hears the body was cut off
            raise
        response = exchange.finish()
        status = f"{response.status} {STATUS_TEXT.get(response.status, 'Status')}"
        headers = [(n, v) for n, v in response.headers if n.lower() not in HOP_BY_HOP]
        start_response(status, headers)
        return _Body(response)


def create_app(registry: Optional[Registry] = None) -> WSGIApp:
    """The WSGI app, over ``registry`` or one configured from ``BERTH_*`` variables."""
    if registry is None:
        registry = registry_from_env()
        start_collector_from_env(registry)
    return WSGIApp(registry)
