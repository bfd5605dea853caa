"""Publishing the signed global configuration over HTTP and gRPC.

A :class:`ConfigurationPublisher` holds the current signed document. The registry tells it to
:meth:`~ConfigurationPublisher.publish` a freshly built ``GlobalConfiguration`` whenever the store
changes, and (with :meth:`~ConfigurationPublisher.start`) rebuilds and re-signs it periodically so
that the served document never expires while the registry runs. Each publication gets a new,
larger serial, ``generated_at = now`` and ``expires_at = now + validity``.

Two read paths, both cheap per request (everything is computed once per publication):

- ``GET /globalconf`` (aiohttp): the ``SignedGlobalConfiguration`` bytes, strong ``ETag`` (hex
  SHA-256 of those bytes; ``-gzip`` suffixed for the gzip-coded variant), ``If-None-Match`` ->
  ``304``, ``Cache-Control: no-cache``; ``503`` until the first publication.
- ``ruta.v1.GlobalConfService/Get`` (grpc.aio): the same document (parsed once per publication),
  or ``not_modified`` when the caller already holds that serial. Clients must raise their
  receive limit (``grpc.max_receive_message_length``) for large instances.

The serial is ``max(previous + 1, conf.serial, unix time in milliseconds)``: it survives a
registry restart and stays roughly aligned across registry nodes without coordination.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import grpc
import grpc.aio
from aiohttp import web
from cryptography import x509

from ruta.faults import Fault, RutaError, abort
from ruta.globalconf import CONTENT_TYPE, etag_of, sign_configuration
from ruta.pki.keys import Signer
from ruta.tasks import cancel_and_wait
from ruta.timestamps import to_timestamp
from ruta.v1 import globalconf_pb2, globalconf_pb2_grpc

__all__ = [
    "DEFAULT_PATH",
    "ConfigurationBuilder",
    "ConfigurationPublisher",
    "GlobalConfServicer",
    "GlobalConfUnavailableError",
    "PublishedConfiguration",
    "add_globalconf_routes",
    "add_globalconf_servicer",
    "globalconf_app",
]

#: Where the document is served on the registry's HTTP listener.
DEFAULT_PATH: Final = "/globalconf"
#: Seconds a client is told to wait before retrying when nothing is published yet.
_RETRY_AFTER_SECONDS: Final = 5
_GZIP_SUFFIX: Final = "-gzip"

ConfigurationBuilder = Callable[[], Awaitable[globalconf_pb2.GlobalConfiguration]]

_log = logging.getLogger(__name__)


class GlobalConfUnavailableError(RutaError):
    """No global configuration has been published yet."""

    default_fault = Fault.SERVER_REGISTRY_GLOBALCONF_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class PublishedConfiguration:
    """One publication: the signed bytes and what is served for them."""

    serial: int
    generated_at: datetime
    expires_at: datetime
    #: Serialised ``SignedGlobalConfiguration``.
    signed: bytes
    #: ``signed``, gzip-compressed (served when the client accepts gzip).
    gzipped: bytes
    #: Hex SHA-256 of ``signed`` (the strong ETag, unquoted).
    etag: str


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ConfigurationPublisher:
    """Signs and holds the current global configuration of one registry node.

    ``validity`` is how long each document may be used (the registry's
    ``globalconf_validity_seconds`` setting). ``serial_floor`` is a serial already used (from the
    store), so a restarted node never goes back. ``publish`` is thread-safe.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        certificate: x509.Certificate,
        validity: timedelta = timedelta(seconds=600),
        clock: Callable[[], datetime] | None = None,
        serial_floor: int = 0,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        self._signer = signer
        self._certificate = certificate
        self._validity = validity
        self._clock = clock if clock is not None else _utcnow
        self._last_serial = serial_floor
        self._current: PublishedConfiguration | None = None
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> PublishedConfiguration | None:
        """The document being served, or ``None`` before the first publication."""
        return self._current

    @property
    def validity(self) -> timedelta:
        return self._validity

    def publish(
        self, conf: globalconf_pb2.GlobalConfiguration, *, now: datetime | None = None
    ) -> PublishedConfiguration:
        """Stamp ``conf`` with a new serial, ``generated_at`` and ``expires_at``, sign it and
        serve it from now on. ``conf`` is not modified.

        CPU-bound (seconds for a very large instance): from an event loop call it through
        :meth:`publish_from` or ``asyncio.to_thread``. Raises what
        :func:`ruta.globalconf.sign_configuration` raises; the served document is then unchanged.
        """
        with self._lock:
            at = now if now is not None else self._clock()
            serial = max(self._last_serial + 1, conf.serial, _millis(at))
            stamped = globalconf_pb2.GlobalConfiguration()
            stamped.CopyFrom(conf)
            stamped.serial = serial
            stamped.generated_at.CopyFrom(to_timestamp(at))
            expires_at = at + self._validity
            stamped.expires_at.CopyFrom(to_timestamp(expires_at))
            signed = sign_configuration(stamped, signer=self._signer, certificate=self._certificate)
            published = PublishedConfiguration(
                serial=serial,
                generated_at=at,
                expires_at=expires_at,
                signed=signed,
                gzipped=gzip.compress(signed, compresslevel=6, mtime=0),
                etag=etag_of(signed),
            )
            self._last_serial = serial
            self._current = published
        _log.info(
            "published global configuration serial %d (%d bytes, expires %s)",
            serial,
            len(signed),
            expires_at.isoformat(),
        )
        return published

    async def publish_from(self, build: ConfigurationBuilder) -> PublishedConfiguration:
        """Build a document with ``build()`` and publish it, signing in a worker thread."""
        conf = await build()
        return await asyncio.to_thread(self.publish, conf)

    async def start(self, build: ConfigurationBuilder, *, interval: timedelta) -> None:
        """Publish now, then rebuild and re-sign every ``interval`` (keep it well under the
        validity, e.g. a quarter). Raises if the first publication fails; later failures are
        logged and retried at the next interval."""
        if self._task is not None:
            return
        await self.publish_from(build)
        self._task = asyncio.create_task(
            self._run(build, interval.total_seconds()), name="globalconf-publisher"
        )

    async def stop(self) -> None:
        """Stop the periodic re-publication (the current document stays served)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self, build: ConfigurationBuilder, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish_from(build)
            except Exception:  # noqa: BLE001 - logged with traceback; the loop must survive
                _log.exception("re-publishing the global configuration failed")


# -- HTTP ------------------------------------------------------------------------------------


def _not_modified(request: web.Request, etag: str) -> bool:
    tags = request.if_none_match
    if not tags:
        return False
    accepted = {etag, etag + _GZIP_SUFFIX}
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): ignore W/.
    return any(tag.value == "*" or tag.value in accepted for tag in tags)


def _accepts_gzip(request: web.Request) -> bool:
    for coding in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def _handler(publisher: ConfigurationPublisher) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def get_globalconf(request: web.Request) -> web.Response:
        current = publisher.current
        if current is None:
            return web.Response(
                status=503,
                text="no global configuration has been published yet\n",
                headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
            )
        headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        gz = _accepts_gzip(request)
        headers["ETag"] = f'"{current.etag}{_GZIP_SUFFIX if gz else ""}"'
        if _not_modified(request, current.etag):
            return web.Response(status=304, headers=headers)
        if gz:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=current.gzipped, content_type=CONTENT_TYPE, headers=headers)
        return web.Response(body=current.signed, content_type=CONTENT_TYPE, headers=headers)

    return get_globalconf


def add_globalconf_routes(
    app: web.Application, publisher: ConfigurationPublisher, *, path: str = DEFAULT_PATH
) -> None:
    """Serve ``publisher``'s document at ``GET``/``HEAD`` ``path`` on ``app``."""
    app.router.add_get(path, _handler(publisher))


def globalconf_app(publisher: ConfigurationPublisher) -> web.Application:
    """A stand-alone aiohttp application serving ``GET /globalconf``."""
    app = web.Application()
    add_globalconf_routes(app, publisher)
    return app


# -- gRPC ------------------------------------------------------------------------------------


class GlobalConfServicer(globalconf_pb2_grpc.GlobalConfServiceServicer):
    """``ruta.v1.GlobalConfService``: the current document, or ``not_modified``."""

    def __init__(self, publisher: ConfigurationPublisher) -> None:
        self._publisher = publisher
        # The answer for the current publication, parsed once (not per call).
        self._answer: tuple[PublishedConfiguration, globalconf_pb2.GetGlobalConfResponse] | None
        self._answer = None

    async def Get(  # noqa: N802 - gRPC method name
        self,
        request: globalconf_pb2.GetGlobalConfRequest,
        context: grpc.aio.ServicerContext[
            globalconf_pb2.GetGlobalConfRequest, globalconf_pb2.GetGlobalConfResponse
        ],
    ) -> globalconf_pb2.GetGlobalConfResponse:
        current = self._publisher.current
        if current is None:
            await abort(
                context,
                GlobalConfUnavailableError(
                    "no global configuration has been published yet; retry shortly"
                ),
            )
        if request.known_serial == current.serial:
            return globalconf_pb2.GetGlobalConfResponse(not_modified=True)
        answer = self._answer
        if answer is None or answer[0] is not current:
            signed = globalconf_pb2.SignedGlobalConfiguration.FromString(current.signed)
            answer = self._answer = (current, globalconf_pb2.GetGlobalConfResponse(signed=signed))
        return answer[1]


def add_globalconf_servicer(server: grpc.aio.Server, publisher: ConfigurationPublisher) -> None:
    """Register :class:`GlobalConfServicer` for ``publisher`` on ``server``."""
    globalconf_pb2_grpc.add_GlobalConfServiceServicer_to_server(
        GlobalConfServicer(publisher), server
    )
