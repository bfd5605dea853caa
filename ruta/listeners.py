"""gRPC listeners that keep serving: every part's grpc.aio servers, started and watched here.

grpcio's asyncio server ends its serving loop for good when a single request's ``:path`` is not
valid UTF-8 (``docs/upstream/grpcio-aio-invalid-path.md``): the port closes, the process stays up,
and no handler or interceptor runs early enough to refuse the request. So no part creates a
``grpc.aio.Server`` itself: each describes a listener (:class:`ListenerSpec`) and
:class:`Listeners` binds, starts, watches and stops it (``docs/adr/0020-listener-watchdog.md``).

Within :data:`WATCH_INTERVAL_SECONDS` of a server loop ending, the listener is marked down (its
health services and the process-wide ``""`` health on every listener of the process report
NOT_SERVING, ``ruta_listener_up`` drops to 0, ``ruta_listener_restarts_total`` counts it), a new
server with the same services, credentials and options is bound to the same address and started,
and health reports SERVING again. Calls in flight on the dead server keep the grace period to
finish. If the address cannot be bound again after :data:`RESTART_ATTEMPTS` tries,
:attr:`Listeners.failed` is set: the process stops and exits with
:data:`LISTENER_FAILED_EXIT_STATUS` for its supervisor (:meth:`Listeners.serve_until`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, Counter, Gauge

from ruta.addresses import join_address, split_address
from ruta.faults import Fault, RutaError
from ruta.metrics_http import new_registry
from ruta.tasks import cancel_and_wait

__all__ = [
    "LISTENER_FAILED_EXIT_STATUS",
    "RESTART_ATTEMPTS",
    "RESTART_RETRY_SECONDS",
    "WATCH_INTERVAL_SECONDS",
    "Listener",
    "ListenerError",
    "ListenerSpec",
    "Listeners",
]

_log = logging.getLogger(__name__)

#: How often each listener's server loop is checked: a loop that ended is noticed within this.
WATCH_INTERVAL_SECONDS: Final = 0.25
#: Tries to bind the address of a listener whose loop ended; when all fail, the process gives up.
RESTART_ATTEMPTS: Final = 20
#: Pause between those tries (another process may hold the port for a moment).
RESTART_RETRY_SECONDS: Final = 0.5
#: Exit status of a process that stopped because a listener could not be restarted.
LISTENER_FAILED_EXIT_STATUS: Final = 3

_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING


class ListenerError(RutaError):
    """A listener's address cannot be bound (in use, not local, no permission)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """What one gRPC listener serves and how: enough to build its server again at any time.

    ``name`` labels the listener in logs and metrics (``consumer``, ``transport``, ``audit``,
    ``admin``, ``adapter``). ``add_services`` adds every service but health to a new server (it is
    called again on each restart, so it must only register handlers). ``health_names`` are the
    service names the health service reports besides ``""``. ``credentials`` makes the TLS
    credentials of each new server (grpcio's dynamic credentials cannot serve a second server);
    ``None`` listens in plaintext. ``drain`` is called at shutdown once health reports
    NOT_SERVING, before the server stops (to end long streams).
    """

    name: str
    listen: str
    add_services: Callable[[grpc.aio.Server], None]
    health_names: tuple[str, ...] = ()
    credentials: Callable[[], grpc.ServerCredentials] | None = None
    options: tuple[tuple[str, Any], ...] = ()
    max_concurrent_calls: int | None = None
    drain: Callable[[], None] | None = None


class Listener:
    """One listener: its spec, its bound address, its health service and its current server."""

    def __init__(self, spec: ListenerSpec, server: grpc.aio.Server, port: int, health: Any) -> None:
        self.spec = spec
        self.server = server
        self.port = port
        self.health = health
        #: False from the moment its loop is seen ended until a new server has started.
        self.up = False
        self.started = False

    @property
    def address(self) -> str:
        """``host:port`` as bound (the port the system chose for port 0)."""
        host, _ = split_address(self.spec.listen)
        return join_address(host, self.port)


class Listeners:
    """The gRPC listeners of one process: :meth:`bind` each, :meth:`start`, then :meth:`stop`.

    Metrics go to ``registry`` (a fresh one when ``None``): ``ruta_listener_up{listener}`` and
    ``ruta_listener_restarts_total{listener}``. ``grace_seconds`` is what calls in flight on a
    server whose loop ended get to finish. ``restart_delay_seconds`` waits before binding again
    (0 in production; a test sets it to observe the listener down); ``restart_attempts`` bounds
    the tries before :attr:`failed` is set.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        grace_seconds: float = 5.0,
        watch_interval_seconds: float = WATCH_INTERVAL_SECONDS,
        restart_delay_seconds: float = 0.0,
        restart_attempts: int = RESTART_ATTEMPTS,
    ) -> None:
        self.registry = registry if registry is not None else new_registry()
        #: Set when a listener could not be restarted: the process should exit non-zero.
        self.failed = asyncio.Event()
        self._grace = grace_seconds
        self._interval = watch_interval_seconds
        self._restart_delay = restart_delay_seconds
        self._attempts = restart_attempts
        self._listeners: list[Listener] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._up = Gauge(
            "ruta_listener_up",
            "1 while the listener's gRPC server serves, 0 while it is down or restarting.",
            ("listener",),
            registry=self.registry,
        )
        self._restarts = Counter(
            "ruta_listener_restarts",
            "Times the listener's gRPC server loop ended unexpectedly and the watchdog restarted "
            "it, or tried to (docs/adr/0020-listener-watchdog.md).",
            ("listener",),
            registry=self.registry,
        )

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """Every bound listener, in the order bound."""
        return tuple(self._listeners)

    def bind(self, spec: ListenerSpec) -> Listener:
        """Build the server of ``spec`` and bind its address (not serving until :meth:`start`).

        Raises :class:`ListenerError` naming the listener and the address when it cannot be
        bound; nothing stays bound then.
        """
        listener = Listener(spec, *self._build(spec, spec.listen, health.aio.HealthServicer()))
        self._listeners.append(listener)
        self._up.labels(spec.name).set(0)
        self._restarts.labels(spec.name)  # the series exists (at 0) from the start
        return listener

    async def start(self) -> None:
        """Start every bound listener not started yet, report SERVING, and watch each.

        Raises :class:`RuntimeError` if this grpcio gives no way to see a server loop end (the
        watchdog would be blind: see :func:`_serving_loop_running`).
        """
        for listener in self._listeners:
            if listener.started:
                continue
            listener.started = True
            await listener.server.start()
            _serving_loop_running(listener.server)  # fails loudly on an unsupported grpcio
            await self._mark_up(listener)
            self._watchers.append(
                asyncio.create_task(self._watch(listener), name=f"listener-{listener.spec.name}")
            )

    async def serve_until(self, stop: asyncio.Event) -> bool:
        """Wait until ``stop`` is set (True) or a listener could not be restarted (False: the
        process should stop and exit with :data:`LISTENER_FAILED_EXIT_STATUS`)."""
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self.failed.wait())
        try:
            await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            failed.cancel()
        return not self.failed.is_set()

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, drain, then stop every server (calls in flight get ``grace``
        seconds; ``None``: cancelled at once). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            await cancel_and_wait(watcher)
        for listener in self._listeners:
            await listener.health.enter_graceful_shutdown()
        for listener in self._listeners:
            if listener.spec.drain is not None:
                listener.spec.drain()
        await asyncio.gather(
            *(listener.server.stop(grace) for listener in self._listeners), *self._retiring
        )

    def _build(
        self, spec: ListenerSpec, address: str, servicer: Any
    ) -> tuple[grpc.aio.Server, int, Any]:
        server = grpc.aio.server(
            options=list(spec.options), maximum_concurrent_rpcs=spec.max_concurrent_calls
        )
        spec.add_services(server)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        try:
            if spec.credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, spec.credentials())
        except RuntimeError:  # grpc's "failed to bind"
            port = 0
        if port == 0:
            raise ListenerError(
                f"cannot listen on {address} for the {spec.name} port (address in use or not local)"
            )
        return server, port, servicer

    async def _watch(self, listener: Listener) -> None:
        """Check the listener's server loop; when it has ended, restart it on the same address."""
        while True:
            await asyncio.sleep(self._interval)
            if _serving_loop_running(listener.server):
                continue
            await self._mark_down(listener)
            self._retire(listener.server)
            if not await self._restart(listener):
                _log.critical(
                    "listener %s (%s) could not be bound again after %d tries; the process "
                    "stops so that its supervisor restarts it",
                    listener.spec.name,
                    listener.address,
                    self._attempts,
                )
                self.failed.set()
                return
            await self._mark_up(listener)
            _log.warning("listener %s (%s) serves again", listener.spec.name, listener.address)

    async def _restart(self, listener: Listener) -> bool:
        """Bind and start a new server for ``listener``; False once every try failed."""
        for attempt in range(self._attempts):
            delay = self._restart_delay if attempt == 0 else RESTART_RETRY_SECONDS
            if delay:
                await asyncio.sleep(delay)
            try:
                server, _, _ = self._build(listener.spec, listener.address, listener.health)
            except ListenerError as exc:
                _log.warning("restarting listener %s: %s", listener.spec.name, exc.message)
                continue
            except Exception:  # noqa: BLE001 - any failure to rebuild is a failed try
                _log.exception("restarting listener %s failed", listener.spec.name)
                continue
            listener.server = server  # from now on stop() stops this one
            try:
                await server.start()
            except Exception:  # noqa: BLE001 - as above; the port is freed for the next try
                _log.exception("restarting listener %s failed", listener.spec.name)
                await server.stop(None)
                continue
            return True
        return False

    def _retire(self, server: grpc.aio.Server) -> None:
        """Let calls in flight on a server whose loop ended finish within the grace, then free
        what it holds; in the background, so the new server starts at once."""

        async def retire() -> None:
            try:
                await server.stop(self._grace)
            except Exception:  # noqa: BLE001 - a dead server's cleanup must not stop the restart
                _log.exception("stopping a gRPC server whose loop ended failed")

        task = asyncio.create_task(retire(), name="listener-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _mark_down(self, listener: Listener) -> None:
        listener.up = False
        self._up.labels(listener.spec.name).set(0)
        self._restarts.labels(listener.spec.name).inc()
        _log.error(
            "listener %s (%s): the gRPC server loop ended unexpectedly (grpcio; see "
            "docs/upstream/grpcio-aio-invalid-path.md); health NOT_SERVING, restarting it",
            listener.spec.name,
            listener.address,
        )
        for name in listener.spec.health_names:
            await listener.health.set(name, _NOT_SERVING)
        for each in self._listeners:
            await each.health.set("", _NOT_SERVING)

    async def _mark_up(self, listener: Listener) -> None:
        listener.up = True
        self._up.labels(listener.spec.name).set(1)
        for name in listener.spec.health_names:
            await listener.health.set(name, _SERVING)
        if all(each.up for each in self._listeners):
            for each in self._listeners:
                await each.health.set("", _SERVING)
        else:
            await listener.health.set("", _NOT_SERVING)


def _serving_loop_running(server: grpc.aio.Server) -> bool:
    """Whether grpcio's serving loop of the started ``server`` still runs.

    grpcio has no public signal for it: ``wait_for_termination`` also waits for every call in
    flight, so a long stream would hide a dead loop. The Cython server's ``is_running()`` turns
    false as soon as the loop's crash handler starts shutting it down. Read here and nowhere else;
    raises :class:`RuntimeError` if a grpcio release removes it, so an upgrade fails at start
    instead of leaving the watchdog blind.
    """
    running = getattr(getattr(server, "_server", None), "is_running", None)
    if not callable(running):
        raise RuntimeError(  # noqa: TRY004 - an unsupported grpcio, not a caller's wrong type
            f"grpcio {grpc.__version__} gives no way to see a server loop end; "
            "the listener watchdog needs one (docs/adr/0020-listener-watchdog.md)"
        )
    return bool(running())
