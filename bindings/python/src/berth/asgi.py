"""An ASGI application serving a Registry::

    BERTH_ROOT=./registry-data uvicorn --factory berth.asgi:create_app

berth's calls wait on storage, so they run in worker threads (``asyncio.to_thread``), and
the event loop stays free. Bodies stream both ways, one chunk at a time.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, Optional

from ._env import registry_from_env, start_collector_from_env
from ._http import length_is_countable
from .registry import Registry

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class ASGIApp:
    """Serves ``registry`` over ASGI (HTTP; lifespan events are acknowledged)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        query = scope.get("query_string", b"").decode("latin-1") or None
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope.get("headers", [])]
        exchange = await asyncio.to_thread(self.registry.start, scope["method"], path, query, headers)
        try:
            while length_is_countable(headers):
                message = await receive()
                if message["type"] == "http.disconnect":
                    exchange.close()  # cut off: nothing half-sent is kept
                    return
                chunk = message.get("body", b"")
                if chunk:
                    await asyncio.to_thread(exchange.write, chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            exchange.close()
            raise
        response = await asyncio.to_thread(exchange.finish)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (n.lower().encode("latin-1"), v.encode("latin-1"))
                        for n, v in response.headers
                        if n.lower() not in HOP_BY_HOP
                    ],
                }
            )
            if scope["method"] != "HEAD":
                while True:
                    chunk = await asyncio.to_thread(response.next_chunk)
                    if not chunk:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(registry: Optional[Registry] = None) -> ASGIApp:
    """The ASGI app, over ``registry`` or one configured from ``BERTH_*`` variables."""
    if registry is None:
        registry = registry_from_env()
        start_collector_from_env(registry)
    return ASGIApp(registry)
