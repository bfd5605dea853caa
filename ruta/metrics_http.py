"""Serving Prometheus metrics over HTTP: the ``GET /metrics`` handler every part mounts.

Each process keeps its metrics in a private :class:`~prometheus_client.CollectorRegistry` (several
may run in one test process); :func:`metrics_handler` serves one registry in the text exposition.
Metrics carry identifiers and counts only, never bodies, subjects or secrets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest

__all__ = ["metrics_handler"]


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering the text exposition of ``registry``."""

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    return metrics
