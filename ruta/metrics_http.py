"""Serving Prometheus metrics over HTTP: the ``GET /metrics`` handler every part mounts.

Each process keeps its metrics in a private :class:`~prometheus_client.CollectorRegistry` (several
may run in one test process), made by :func:`new_registry` with the process collector on
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``, ...);
:func:`metrics_handler` serves one registry in the text exposition. :func:`certificate_expiry`
is the one gauge every part reports its certificates' expiry in. Metrics carry identifiers and
counts only, never bodies, subjects or secrets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.exposition import generate_latest

__all__ = [
    "CERTIFICATE_EXPIRY_METRIC",
    "certificate_expiry",
    "metrics_handler",
    "new_registry",
]

#: The gauge of certificate expiry (Unix time), labelled ``kind``: ``auth`` and ``signing`` on a
#: security server; ``ca``, ``ocsp``, ``tls`` and ``globalconf_signing`` on a registry node.
CERTIFICATE_EXPIRY_METRIC: Final = "ruta_certificate_expires_timestamp_seconds"


def new_registry() -> CollectorRegistry:
    """A private registry with the process collector (CPU, memory, file descriptors, start
    time of this process) registered in it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def certificate_expiry(
    registry: CollectorRegistry,
    certificates: Mapping[str, Callable[[], datetime]] | None = None,
) -> Gauge:
    """The certificate-expiry gauge in ``registry``; each of ``certificates`` (kind: when the
    certificate in use expires) is read at scrape time, so a renewed certificate shows."""
    gauge = Gauge(
        CERTIFICATE_EXPIRY_METRIC,
        "When this part's certificates expire (Unix time), by kind.",
        ("kind",),
        registry=registry,
    )
    for kind, not_after in (certificates or {}).items():
        gauge.labels(kind).set_function(_timestamp_of(not_after))
    return gauge


def _timestamp_of(read: Callable[[], datetime]) -> Callable[[], float]:
    return lambda: read().timestamp()


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering the text exposition of ``registry``."""

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    return metrics
