"""Prometheus metrics of one security server, and the HTTP endpoint that serves them.

Each server owns a private :class:`~prometheus_client.CollectorRegistry` (several servers may run
in one process in tests). Labels are identifiers and fault codes only: never bodies, subjects,
user ids or anything secret. The endpoint (aiohttp) serves ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from ruta.faults import FAULT_HEADER, FAULT_ID_HEADER
from ruta.globalconf import GlobalConf
from ruta.ids import ServiceId, SubsystemId
from ruta.memo import remember
from ruta.metrics_http import certificate_expiry, metrics_handler, new_registry
from security_server.calls import Refused
from security_server.refusals import RefusalLog, RefusalRecord

__all__ = ["LATENCY_BUCKETS", "NO_FAULT", "ExchangeMetrics", "Outcome", "metrics_app"]

_log = logging.getLogger(__name__)

#: Seconds; from a loopback round trip to a slow backend.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: The fault label of an exchange that succeeded.
NO_FAULT: Final = "none"
#: Label value used before a call's client/service/method are known (e.g. bad metadata).
UNKNOWN: Final = "unknown"
#: Method label of a method the service does not list.
OTHER_METHOD: Final = "other"
#: Label sets whose metric children are kept at hand (labels come from the configuration).
MAX_CACHED_LABEL_SETS: Final = 4096

_Labelled = Counter | Gauge | Histogram

#: The labels :meth:`Outcome.identify` found under the configuration in force, by the client and
#: service objects (a server's identifiers are remembered objects: the same ones call after call)
#: and the method; each entry keeps its objects, checked with ``is``, so an id is never mistaken.
#: Emptied when another configuration is in force (an old one is not kept alive).
_IDENTIFIED: dict[
    tuple[int, int, str], tuple[SubsystemId, ServiceId, tuple[str | None, str | None, str | None]]
] = {}
_IDENTIFIED_UNDER: list[GlobalConf | None] = [None]
#: Entries of :data:`_IDENTIFIED` (the oldest goes first when full).
MAX_IDENTIFIED: Final = 1024


@dataclass
class Outcome:
    """Labels of one exchange, filled in as the call is understood.

    Labels come from untrusted input, so they are set only from values the global configuration
    lists (:meth:`identify`): a caller cannot grow the number of series at will.
    """

    client: str = UNKNOWN
    service: str = UNKNOWN
    method: str = UNKNOWN
    fault: str = NO_FAULT
    #: For the operational record (log line), not a label.
    message_id: str = ""
    request_bytes: int = 0
    response_bytes: int = 0
    backend_seconds: float | None = None

    def identify(
        self, conf: GlobalConf, client: SubsystemId, service: ServiceId, method: str
    ) -> None:
        """Label with ``client``/``service``/``method`` where the configuration lists them
        (``unknown``, or ``other`` for an unlisted method, otherwise)."""
        if _IDENTIFIED_UNDER[0] is not conf:
            _IDENTIFIED.clear()
            _IDENTIFIED_UNDER[0] = conf
        key = (id(client), id(service), method)
        known = _IDENTIFIED.get(key)
        if known is None or known[0] is not client or known[1] is not service:
            known = remember(
                _IDENTIFIED,
                key,
                (client, service, _labels(conf, client, service, method)),
                maxsize=MAX_IDENTIFIED,
            )
        client_label, service_label, method_label = known[2]
        if client_label is not None:
            self.client = client_label
        if service_label is not None and method_label is not None:
            self.service = service_label
            self.method = method_label


def _labels(
    conf: GlobalConf, client: SubsystemId, service: ServiceId, method: str
) -> tuple[str | None, str | None, str | None]:
    """What :meth:`Outcome.identify` sets: the client's, service's and method's labels, each
    ``None`` where the configuration does not list it."""
    entry = conf.service(service)
    return (
        str(client) if conf.has_subsystem(client) else None,
        None if entry is None else str(service),
        None if entry is None else (method if method in entry.methods else OTHER_METHOD),
    )


@dataclass
class ExchangeMetrics:
    """Counters and histograms of the exchanges this server took part in, by role."""

    registry: CollectorRegistry = field(default_factory=new_registry)
    #: Where refused exchanges are kept as operational records (``None``: nowhere).
    refusals: RefusalLog | None = None

    def __post_init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # An exchange's children (its latency's, its count's and, once it has one, its backend
        # time's) by the count's labels, and a frames stream side's two counters by role: one
        # lookup where there were two or three (event loop only; at most MAX_CACHED_LABEL_SETS
        # entries each, like ``_children``).
        self._exchange_children: dict[tuple[str, ...], list[Any]] = {}
        self._frame_children: dict[str, tuple[Any, Any]] = {}
        # Exchanges in flight by role: plain counts, read by the gauge at scrape time (no
        # locked gauge update per exchange).
        self._in_flight: dict[str, int] = {}
        labels = ("role", "client", "service", "method", "fault")
        self.exchanges = Counter(
            "ruta_exchanges",
            "Exchanges handled, by role (consumer/provider), client, service, method and fault.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "ruta_exchange_seconds",
            "Time to handle one exchange, by role, service and method.",
            ("role", "service", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "ruta_backend_seconds",
            "Time the provider's backend took to answer, by service and method.",
            ("service", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ruta_exchanges_in_flight",
            "Exchanges being handled now.",
            ("role",),
            registry=self.registry,
        )
        self.frames = Counter(
            "ruta_transport_frames",
            "Frames written on server-to-server streams (Transport.ExchangeFrames), by role "
            "(consumer: request frames, provider: result frames; a frame of durability notices "
            "alone, docs/adr/0038, is not counted).",
            ("role",),
            registry=self.registry,
        )
        self.framed_messages = Counter(
            "ruta_transport_framed_messages",
            "Messages carried in those frames, by role (divided by the frames: how full they run).",
            ("role",),
            registry=self.registry,
        )
        self.globalconf_serial = Gauge(
            "ruta_globalconf_serial",
            "Serial of the global configuration in use.",
            registry=self.registry,
        )
        self.globalconf_expiry = Gauge(
            "ruta_globalconf_expires_timestamp_seconds",
            "When the global configuration in use expires (Unix time).",
            registry=self.registry,
        )

        self.log_size = Gauge(
            "ruta_log_size", "Records in this server's message log.", registry=self.registry
        )
        self.cosignature_age = Gauge(
            "ruta_checkpoint_cosignature_age_seconds",
            "Time since the witness last cosigned a checkpoint of the message log.",
            registry=self.registry,
        )
        self.certificate_expiry = certificate_expiry(self.registry)
        self.globalconf_generated = Gauge(
            "ruta_globalconf_generated_timestamp_seconds",
            "When the global configuration in use was generated (Unix time).",
            registry=self.registry,
        )
        self.settings_reloads = Counter(
            "ruta_settings_reloads",
            "Settings reloads (SIGHUP, ruta ss reload), by outcome: applied, needs_restart "
            "(applied, but a changed setting takes a restart), refused (old settings kept).",
            ("outcome",),
            registry=self.registry,
        )

    def watch(
        self,
        *,
        log_size: Callable[[], float],
        cosignature_age: Callable[[], float],
        certificates: Mapping[str, datetime],
    ) -> None:
        """Read the log size and cosignature age at scrape time; record certificate expiry."""
        self.log_size.set_function(log_size)
        self.cosignature_age.set_function(cosignature_age)
        for kind, not_after in certificates.items():
            self.certificate_expiry.labels(kind).set(not_after.timestamp())

    def _keep_refusal(self, role: str, outcome: Outcome, refused: Refused) -> None:
        """The operational record of a refused exchange (docs/auditor-guide.md): what the
        caller was told (fault, fault id, status) and what the call was, never its content."""
        if self.refusals is None:
            return
        metadata = dict(refused.trailing_metadata)
        self.refusals.add(
            RefusalRecord(
                at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                role=role,
                fault=metadata.get(FAULT_HEADER, outcome.fault),
                fault_id=metadata.get(FAULT_ID_HEADER, "-"),
                status=refused.status.name,
                client=outcome.client,
                service=outcome.service,
                method=outcome.method,
                message_id=outcome.message_id or "-",
            )
        )

    def exchange(self, role: str) -> _Exchange:
        """Count and time one exchange (a context manager yielding the :class:`Outcome` the
        caller fills in). Two observations per exchange (its latency and its count by fault;
        the provider's backend time too): the in-flight gauge reads a plain count when
        scraped."""
        in_flight = self._in_flight
        if role not in in_flight:
            in_flight[role] = 0
            self.in_flight.labels(role).set_function(lambda: in_flight[role])
        return _Exchange(self, role)

    def _finish(self, role: str, outcome: Outcome, elapsed: float, refused: Refused | None) -> None:
        """Record one exchange when it ends (see :meth:`exchange`)."""
        labels = (role, outcome.client, outcome.service, outcome.method, outcome.fault)
        children = self._exchange_children.get(labels)
        if children is None:
            children = [
                self._child(self.latency, (role, outcome.service, outcome.method)),
                self._child(self.exchanges, labels),
                None,
            ]
            if len(self._exchange_children) < MAX_CACHED_LABEL_SETS:
                self._exchange_children[labels] = children
        latency, count, backend = children
        latency.observe(elapsed)
        if outcome.backend_seconds is not None:
            if backend is None:
                # Made at the first backend time of these labels, not before: a child shows as
                # a series once made.
                backend = children[2] = self._child(
                    self.backend_latency, (outcome.service, outcome.method)
                )
            backend.observe(outcome.backend_seconds)
        # The operational record of the exchange: identifiers, sizes, timings, fault; never
        # bodies, subjects or user ids.
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "exchange role=%s message_id=%s client=%s service=%s method=%s fault=%s "
                "request_bytes=%d response_bytes=%d seconds=%.6f backend_seconds=%s",
                role,
                outcome.message_id or "-",
                outcome.client,
                outcome.service,
                outcome.method,
                outcome.fault,
                outcome.request_bytes,
                outcome.response_bytes,
                elapsed,
                "-" if outcome.backend_seconds is None else f"{outcome.backend_seconds:.6f}",
            )
        count.inc()
        if refused is not None and self.refusals is not None:
            self._keep_refusal(role, outcome, refused)

    def _child(self, metric: _Labelled, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, looked up once per label set (prometheus_client locks and
        checks on every ``labels`` call; an exchange makes four)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < MAX_CACHED_LABEL_SETS:
                self._children[key] = child
        return child

    def frame_written(self, role: str, messages: int) -> None:
        """Count one frame of ``messages`` written by the ``role`` side of a frames stream."""
        children = self._frame_children.get(role)
        if children is None:
            children = (
                self._child(self.frames, (role,)),
                self._child(self.framed_messages, (role,)),
            )
            if len(self._frame_children) < MAX_CACHED_LABEL_SETS:
                self._frame_children[role] = children
        frames, messages_counter = children
        frames.inc()
        messages_counter.inc(messages)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        data: bytes = generate_latest(self.registry)
        return data


class _Exchange:
    """One exchange being counted and timed (:meth:`ExchangeMetrics.exchange`): a plain
    context manager, not a generator one (one is entered per exchange)."""

    __slots__ = ("_in_flight", "_metrics", "_outcome", "_role", "_start")

    def __init__(self, metrics: ExchangeMetrics, role: str) -> None:
        self._metrics = metrics
        self._role = role
        self._in_flight = metrics._in_flight
        self._outcome = Outcome()
        self._start = 0.0

    def __enter__(self) -> Outcome:
        self._in_flight[self._role] += 1
        self._start = time.perf_counter()
        return self._outcome

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._in_flight[self._role] -= 1
        elapsed = time.perf_counter() - self._start
        refused = exc if isinstance(exc, Refused) else None
        self._metrics._finish(self._role, self._outcome, elapsed, refused)


def metrics_app(metrics: ExchangeMetrics) -> web.Application:
    """An aiohttp app with ``GET /metrics`` (Prometheus text) and ``GET /healthz``."""

    async def _health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    app.router.add_get("/healthz", _health)
    return app
