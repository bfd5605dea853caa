"""A running gateway: the HTTP port (service access and directory services), the client of its
member's consumer port, the global-configuration client and, when configured, the provider-side
back end and the public pages' own port (``[public]``: catalogue, open data, the citizen's
record). ``DATA_DIR/ready.json`` names the bound addresses once everything serves."""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Final, Self

from aiohttp import web
from aiohttp.http_exceptions import InvalidHeader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.access import ServiceAccess
from gateway.backend import BackEnd
from gateway.bus import BusClient
from gateway.callers import Callers
from gateway.console.citizen import CitizenConsole
from gateway.console.counts import GrpcCounts, OpenData
from gateway.console.pages import PAGES, add_console_routes
from gateway.directory import Directory
from gateway.http_faults import GatewayError, fault_response, json_response
from gateway.metrics import GatewayMetrics
from gateway.openapi import gateway_openapi
from gateway.settings import GatewaySettings
from gateway.transcode import ServiceCodecs
from ruta.faults import Fault
from ruta.globalconf import ConfigurationAnchor, GlobalConf
from ruta.globalconf.client import GlobalConfClient
from ruta.listeners import Listeners
from ruta.metrics_http import certificate_expiry, new_registry
from ruta.pki.certs import load_certificate, read_certificate_file
from ruta.readiness import write_ready_file

__all__ = [
    "READY_FILE",
    "SHUTDOWN_GRACE_SECONDS",
    "FaultingAppRunner",
    "GatewayApp",
    "build_app",
    "build_public_app",
]

READY_FILE: Final = "ready.json"
#: What calls in flight on the back end get to finish at shutdown.
SHUTDOWN_GRACE_SECONDS: Final = 5.0
_R1: Final = "/r1/{instance}/{member_class}/{member_code}/{subsystem}"

_log = logging.getLogger(__name__)


def build_app(
    settings: GatewaySettings,
    *,
    conf: Callable[[], GlobalConf],
    bus: BusClient,
    metrics: GatewayMetrics | None = None,
    open_data: OpenData | None = None,
    citizen: CitizenConsole | None = None,
) -> web.Application:
    """The callers' aiohttp application (routes only; no listener): service access, directory
    services, the catalogue and the open-data and citizen pages given here (the gateway gives
    them to :func:`build_public_app` instead when ``[public]`` is configured)."""
    callers = Callers(settings.http, member=settings.member_id)
    codecs = ServiceCodecs()
    directory = Directory(conf=conf, callers=callers, codecs=codecs)
    access = ServiceAccess(
        conf=conf, bus=bus, callers=callers, codecs=codecs, limits=settings.limits
    )
    # Bodies are read by the handlers with their own bound; aiohttp's is set just above it so
    # its 413 never pre-empts the JSON refusal.
    app = _application(settings, metrics)
    document = gateway_openapi()

    async def openapi(_: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get("/openapi.json", openapi)
    _add_public_routes(app, settings, conf=conf, open_data=open_data, citizen=citizen)
    app.router.add_get("/listClients", directory.list_clients)
    app.router.add_get(f"{_R1}/listMethods", directory.list_methods)
    app.router.add_get(f"{_R1}/allowedMethods", directory.allowed_methods)
    app.router.add_get(f"{_R1}/getOpenAPI", directory.get_openapi)
    app.router.add_route("*", f"{_R1}/{{service}}", access.handle)
    app.router.add_route("*", f"{_R1}/{{service}}/{{tail:.*}}", access.handle)
    return app


def build_public_app(
    settings: GatewaySettings,
    *,
    conf: Callable[[], GlobalConf],
    metrics: GatewayMetrics | None = None,
    open_data: OpenData | None = None,
    citizen: CitizenConsole | None = None,
) -> web.Application:
    """The public pages' application (``[public]``): the catalogue and, when configured, the
    open-data report and the citizen's record of access; no service access, no caller header."""
    app = _application(settings, metrics)
    _add_public_routes(app, settings, conf=conf, open_data=open_data, citizen=citizen)
    return app


def _application(settings: GatewaySettings, metrics: GatewayMetrics | None) -> web.Application:
    middlewares = [_faults_middleware]
    if metrics is not None:
        middlewares.insert(0, metrics.middleware)
    return web.Application(
        client_max_size=settings.limits.max_body_bytes + 1, middlewares=middlewares
    )


def _add_public_routes(
    app: web.Application,
    settings: GatewaySettings,
    *,
    conf: Callable[[], GlobalConf],
    open_data: OpenData | None,
    citizen: CitizenConsole | None,
) -> None:
    add_console_routes(app, conf=conf, open_data=open_data, member=settings.member_id)
    if citizen is not None:
        citizen.add_routes(app)


@web.middleware
async def _faults_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing refusals (unknown path, wrong method) as JSON faults too, and an unexpected
    failure as ``server.consumer.internal_error`` (its traceback logged under the fault id)
    rather than aiohttp's bare 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        refusal = _routing_refusal(exc)
        if refusal is None:
            raise  # a redirect, or a page's own answer
        return refusal
    except Exception:  # noqa: BLE001 - any bug still answers with a fault code
        fault_id = str(uuid.uuid4())
        _log.exception("unexpected error answering %s (fault_id=%s)", request.path, fault_id)
        return fault_response(
            _internal_error(),
            fault_id=fault_id,
        )


def _internal_error() -> GatewayError:
    """The refusal for a failure of the gateway's own (a bug): its log holds the traceback
    under the fault id the caller is given."""
    return GatewayError(
        "the gateway failed to answer; its operator finds why under this fault id",
        fault=Fault.SERVER_CONSUMER_INTERNAL_ERROR,
    )


def _routing_refusal(exc: web.HTTPException) -> web.Response | None:
    """The JSON fault for aiohttp's routing refusals; None for any other HTTP answer."""
    if isinstance(exc, web.HTTPNotFound):
        return fault_response(
            GatewayError("no such path on this gateway", fault=Fault.CLIENT_UNKNOWN_SERVICE)
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return fault_response(
            GatewayError("method not allowed here", fault=Fault.CLIENT_INVALID_REQUEST),
            http_status=405,
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return fault_response(
            GatewayError("the request body is too large", fault=Fault.CLIENT_MESSAGE_TOO_LARGE)
        )
    return None


class _FaultingRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (a malformed
    request line, a header line over aiohttp's bound, a bad chunk, an HTTP method it does not
    know) with the gateway's JSON fault, ``client.invalid_request``, instead of aiohttp's plain
    text; an unexpected failure outside the application's middleware as
    ``server.consumer.internal_error``. The connection is closed after it, as aiohttp does."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer went out already: aiohttp's own handling (it closes).
            return super().handle_error(request, status, exc, message)
        fault_id = str(uuid.uuid4())
        if status >= 500:
            _log.error(
                "unexpected error answering a request from %s (fault_id=%s)",
                request.remote,
                fault_id,
                exc_info=exc,
            )
            error = _internal_error()
        else:
            # The parser's own words name what was wrong (a reason, never the request's
            # content beyond what the caller sent); the log line stays at debug, as aiohttp
            # keeps it: strangers' malformed traffic is not the operator's problem.
            _log.debug("refused an unparsable request from %s", request.remote, exc_info=exc)
            reason = " ".join((message or (str(exc) if exc is not None else "")).split())
            error = GatewayError(
                f"the request is not valid HTTP/1.1: {reason}".rstrip(": "),
                fault=(
                    Fault.CLIENT_INVALID_HEADER
                    if isinstance(exc, InvalidHeader)
                    else Fault.CLIENT_INVALID_REQUEST
                ),
            )
        response = fault_response(error, fault_id=fault_id, http_status=status)
        response.force_close()
        return response


class _FaultingServer(web.Server):
    """aiohttp's server whose connections answer parser refusals with the gateway's faults."""

    def __call__(self) -> RequestHandler:
        return _FaultingRequestHandler(self, loop=self._loop, **self._kwargs)


class FaultingAppRunner(web.AppRunner):
    """``web.AppRunner`` for the gateway's callers' ports: every refusal, including those of
    aiohttp's HTTP parser before any route is reached, is the JSON fault (DESIGN.md
    "Faults")."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _FaultingServer
        return server


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting ``cert``/``key``, TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def _serve(runner: web.AppRunner, listen: str, context: ssl.SSLContext | None) -> str:
    """Set ``runner`` up listening on ``listen``; its URL (the port bound)."""
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context).start()
    scheme = "https" if context is not None else "http"
    return f"{scheme}://{host}:{runner.addresses[0][1]}"


def _expiry_of(path: Path) -> Callable[[], datetime]:
    """When the certificate in ``path`` (read now) expires."""
    not_after = load_certificate(read_certificate_file(path, limit=1)).not_valid_after_utc
    return lambda: not_after


class GatewayApp:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.addresses: dict[str, str] = {}
        self.globalconf: GlobalConfClient | None = None
        self.back_end: BackEnd | None = None
        self.metrics = GatewayMetrics(new_registry())
        #: The process's watched gRPC listeners (the back end's, when configured).
        self.listeners = Listeners(registry=self.metrics.registry)
        self._metrics_runner: web.AppRunner | None = None
        self._bus: BusClient | None = None
        self._citizen: CitizenConsole | None = None
        self._runner: web.AppRunner | None = None
        self._public_runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, settings: GatewaySettings) -> Self:
        """Start everything; on failure close what was opened and raise."""
        app = cls(settings)
        try:
            await app._start()
        except BaseException:
            await app.stop()
            raise
        return app

    async def _start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.globalconf = GlobalConfClient(
            anchor=ConfigurationAnchor.from_file(settings.globalconf.anchor),
            cache_path=settings.data_dir / "globalconf.bin",
            settings=settings.globalconf,
        )
        await self.globalconf.start()
        self._watch_certificates()
        self._bus = BusClient(settings.consumer, max_message_bytes=settings.limits.max_body_bytes)
        if settings.backend is not None:
            self.back_end = BackEnd(settings.backend, limits=settings.limits)
            self.addresses["backend"] = self.back_end.bind(self.listeners)
            await self.listeners.start()
        globalconf = self.globalconf
        open_data = None
        if settings.open_data is not None:
            open_data = OpenData(
                settings.open_data,
                conf=globalconf.current,
                source=GrpcCounts.from_settings(settings.open_data, globalconf.current),
            )
        if settings.citizen is not None:
            self._citizen = CitizenConsole.from_settings(
                settings.citizen, pages=PAGES, conf=globalconf.current
            )
        public = settings.public
        app = build_app(
            settings,
            conf=globalconf.current,
            bus=self._bus,
            metrics=self.metrics,
            open_data=open_data if public is None else None,
            citizen=self._citizen if public is None else None,
        )
        if settings.metrics is not None:
            self.addresses["metrics"] = await self._serve_metrics(settings.metrics.listen)
        if public is not None:
            public_app = build_public_app(
                settings,
                conf=globalconf.current,
                metrics=self.metrics,
                open_data=open_data,
                citizen=self._citizen,
            )
            self._public_runner = FaultingAppRunner(public_app, access_log=None)
            context = None
            if public.tls_cert is not None and public.tls_key is not None:
                context = _server_context(public.tls_cert, public.tls_key)
            self.addresses["public"] = await _serve(self._public_runner, public.listen, context)
        self._runner = FaultingAppRunner(app, access_log=None)
        self.addresses["http"] = await _serve(
            self._runner, settings.http.listen, self._ssl_context()
        )
        write_ready_file(settings.data_dir / READY_FILE, dict(self.addresses))

    def _watch_certificates(self) -> None:
        """``ruta_certificate_expires_timestamp_seconds{kind}``: the gateway certificate it
        presents to its consumer port (``gateway``) and its HTTPS certificate (``tls``)."""
        files = {"gateway": self.settings.consumer.cert, "tls": self.settings.http.tls_cert}
        if self.settings.citizen is not None:
            files["citizen-service"] = self.settings.citizen.cert
        if self.settings.public is not None:
            files["public-tls"] = self.settings.public.tls_cert
        certificates: dict[str, Callable[[], datetime]] = {}
        for kind, path in files.items():
            if path is not None:
                certificates[kind] = _expiry_of(path)
        certificate_expiry(self.metrics.registry, certificates)

    async def _serve_metrics(self, listen: str) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics.serve)
        self._metrics_runner = web.AppRunner(app, access_log=None)
        await self._metrics_runner.setup()
        host, _, port = listen.rpartition(":")
        await web.TCPSite(self._metrics_runner, host.strip("[]"), int(port)).start()
        return f"http://{host}:{self._metrics_runner.addresses[0][1]}/metrics"

    def _ssl_context(self) -> ssl.SSLContext | None:
        http = self.settings.http
        if not http.tls or http.tls_cert is None or http.tls_key is None:
            return None
        context = _server_context(http.tls_cert, http.tls_key)
        if http.client_ca is not None:
            context.load_verify_locations(cafile=str(http.client_ca))
        # Directory services answer without a certificate; service access requires one.
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    async def stop(self) -> None:
        """Stop serving and close every resource; safe to call twice."""
        (self.settings.data_dir / READY_FILE).unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._public_runner is not None:
            await self._public_runner.cleanup()
            self._public_runner = None
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        await self.listeners.stop(SHUTDOWN_GRACE_SECONDS)
        if self.back_end is not None:
            await self.back_end.close()
            self.back_end = None
        if self._bus is not None:
            await self._bus.close()
            self._bus = None
        if self._citizen is not None:
            await self._citizen.close()
            self._citizen = None
        if self.globalconf is not None:
            await self.globalconf.stop()
            self.globalconf = None
