"""The gateway's Prometheus metrics (``[metrics] listen``: ``GET /metrics``).

``ruta_gateway_requests_total{kind, status}`` counts HTTP requests by what they were (``rest``,
``json``, ``directory``, ``console`` (the web pages), ``other``) and the HTTP status answered;
``ruta_gateway_request_seconds{kind}`` is their latency. The back end's listener reports
``ruta_listener_up`` and ``ruta_listener_restarts_total`` in the same registry. Labels never
carry identifiers, paths or bodies: cardinality stays bounded and nothing personal is exported.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.console.paths import CATALOGUE_PATH, STATIC_PREFIX

__all__ = ["KIND_KEY", "GatewayMetrics"]

#: What a service-access request turned out to be (``rest`` or ``json``), set by its handler.
KIND_KEY: Final = web.RequestKey("ruta_kind", str)

_DIRECTORY: Final = ("/listMethods", "/allowedMethods", "/getOpenAPI")
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _kind(request: web.Request) -> str:
    path = request.path
    if path == "/listClients" or (path.startswith("/r1/") and path.endswith(_DIRECTORY)):
        return "directory"
    if path.startswith("/r1/"):
        kind: str = request.get(KIND_KEY, "other")
        return kind
    if path == CATALOGUE_PATH or path.startswith(f"{STATIC_PREFIX}/"):
        return "console"
    return "other"


class GatewayMetrics:
    """The counters and the middleware that fills them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._requests = Counter(
            "ruta_gateway_requests",
            "HTTP requests the gateway answered, by kind and HTTP status.",
            ("kind", "status"),
            registry=registry,
        )
        self._seconds = Histogram(
            "ruta_gateway_request_seconds",
            "Time to answer one HTTP request, by kind.",
            ("kind",),
            buckets=_BUCKETS,
            registry=registry,
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            kind = _kind(request)
            self._requests.labels(kind, str(status)).inc()
            self._seconds.labels(kind).observe(time.perf_counter() - started)

    async def serve(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
