"""The provider-side back end: the backend a security server routes its REST services to.

It serves every ``/{service code}/Call`` over gRPC (plaintext, loopback, next to the server),
reads the ``ruta.v1.HttpRequest`` the consumer side signed, makes the real HTTP call to the REST
backend configured for that service, and answers with a ``ruta.v1.HttpResponse`` (status, the
allowed headers, body), which the security server signs and logs.

Every refusal carries ``ruta-fault`` and ``ruta-fault-id`` (:func:`ruta.faults.abort`), as an
adapter's do, so the caller sees the code under ``backend.`` (docs/adr/0024), the same over gRPC
and through the gateway's HTTP: ``server.provider.legacy_unavailable`` (the REST backend cannot
be reached, or the back end is stopping), ``server.provider.legacy_timeout`` (it did not answer
in time), ``server.provider.result_too_large`` (its answer, or the headers of it that are passed
on, over the limits), ``client.invalid_request`` (not an HttpRequest, or a path or method it will
not forward), ``client.invalid_header`` (request headers passed on over the limits),
``server.provider.unknown_service`` (no REST backend for that service here, or a method other
than ``Call``).
"""

from __future__ import annotations

import logging
from typing import Any, Final, NoReturn
from urllib.parse import unquote

import aiohttp
import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from yarl import URL

from gateway.http_headers import HeaderLimitError, carried_headers
from gateway.settings import (
    GRPC_ENVELOPE_BYTES,
    BackEndSettings,
    LimitSettings,
    RestBackendSettings,
)
from ruta.call_metadata import SERVICE_HEADER
from ruta.faults import Fault, RutaError, abort
from ruta.http_body import read_bounded
from ruta.ids import IdentifierError, ServiceId, SubsystemId
from ruta.listeners import Listeners, ListenerSpec
from ruta.v1 import http_pb2

__all__ = ["REST_METHOD", "BackEnd", "BackEndError"]

REST_METHOD: Final = "Call"
#: Methods forwarded to a REST backend.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Prefix of gRPC's own services (health), served beside the REST services' Call.
_GRPC_OWN: Final = "grpc."

_log = logging.getLogger(__name__)


class BackEndError(RutaError):
    """A REST call the back end refuses (see the module docstring for the codes)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class BackEnd:
    """The back end's gRPC handler and its HTTP client; :meth:`bind` adds its listener."""

    def __init__(self, settings: BackEndSettings, *, limits: LimitSettings) -> None:
        self._settings = settings
        self._limits = limits
        self._rest: dict[ServiceId, RestBackendSettings] = {r.service_id: r for r in settings.rest}
        self._request_headers = frozenset(h.lower() for h in limits.request_headers)
        self._response_headers = frozenset(h.lower() for h in limits.response_headers)
        self._session: aiohttp.ClientSession | None = None
        self.address = ""

    def bind(self, listeners: Listeners) -> str:
        """Bind the back end's listener in ``listeners`` (the process's watched gRPC listeners,
        started with the others); returns the bound ``host:port``. Raises
        :class:`~ruta.listeners.ListenerError` when the address cannot be bound."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(limit=256)
        )
        # Room for the gRPC envelope and the HttpRequest fields around a body at the limit.
        room = self._limits.max_body_bytes + self._limits.max_header_bytes + GRPC_ENVELOPE_BYTES
        handler = self._handler()
        listener = listeners.bind(
            ListenerSpec(
                name="gateway-backend",
                listen=self._settings.listen,
                add_services=lambda server: server.add_generic_rpc_handlers((handler,)),
                options=(
                    ("grpc.max_receive_message_length", room),
                    ("grpc.max_send_message_length", room),
                ),
            )
        )
        self.address = listener.address
        return self.address

    async def close(self) -> None:
        """Close the HTTP client (the listener is stopped with the others)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _handler(self) -> grpc.GenericRpcHandler:
        back_end = self

        class _Handler(grpc.GenericRpcHandler):
            def service(
                self, handler_call_details: grpc.HandlerCallDetails
            ) -> grpc.RpcMethodHandler[Any, Any] | None:
                path: str = handler_call_details.method
                name, _, method = path.lstrip("/").partition("/")
                if method != REST_METHOD and name.startswith(_GRPC_OWN):
                    return None  # gRPC's own services (health) are the listener's
                metadata = tuple(handler_call_details.invocation_metadata or ())

                async def _call(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                    if method != REST_METHOD:
                        await _refuse(
                            context,
                            f"the gateway back end serves REST services' {REST_METHOD} only",
                            Fault.SERVER_PROVIDER_UNKNOWN_SERVICE,
                        )
                    return await back_end.call(name, metadata, body, context)

                return grpc.unary_unary_rpc_method_handler(
                    _call, request_deserializer=None, response_serializer=None
                )

        return _Handler()

    async def call(
        self,
        service_name: str,
        metadata: tuple[tuple[str, str | bytes], ...],
        body: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bytes:
        """Answer one REST call (see the module docstring for the statuses it aborts with)."""
        rest = self._backend(service_name, metadata)
        if rest is None:
            await _refuse(
                context,
                "no REST backend for this service on the provider's gateway",
                Fault.SERVER_PROVIDER_UNKNOWN_SERVICE,
            )
        request = http_pb2.HttpRequest()
        try:
            request.ParseFromString(body)
        except DecodeError:
            await _refuse(context, "the request is not a ruta.v1.HttpRequest")
        url = _target(rest.base_url, request)
        if url is None or request.method not in _METHODS:
            await _refuse(
                context,
                "the request is not forwarded: its path leaves the service's base URL or its "
                f"method is not one of {', '.join(sorted(_METHODS))}",
            )
        try:
            headers = [
                (h.name, h.value)
                for h in carried_headers(
                    ((h.name, h.value) for h in request.headers),
                    self._request_headers,
                    self._limits,
                    whose="the request",
                    fault=Fault.CLIENT_INVALID_HEADER,
                )
            ]
        except HeaderLimitError as exc:
            await abort(context, exc)
        session = self._session
        if session is None:
            await _refuse(
                context,
                "the provider's gateway back end is stopping; try again",
                Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE,
            )
        try:
            async with session.request(
                request.method,
                url,
                headers=headers,
                data=request.body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=rest.timeout_seconds),
            ) as response:
                answer = await read_bounded(response.content, self._limits.max_body_bytes)
                status = response.status
                kept = carried_headers(
                    response.headers.items(),
                    self._response_headers,
                    self._limits,
                    whose="the REST backend's answer",
                    fault=Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
                    invalid=Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
                )
        except HeaderLimitError as exc:
            await abort(context, exc)
        except TimeoutError:
            _log.warning("REST backend of %s did not answer in time", rest.service)
            await _refuse(
                context,
                "the REST backend did not answer in time",
                Fault.SERVER_PROVIDER_LEGACY_TIMEOUT,
            )
        except (aiohttp.ClientError, OSError) as exc:
            _log.warning("REST backend of %s failed: %s", rest.service, type(exc).__name__)
            await _refuse(
                context,
                "the REST backend cannot be reached",
                Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE,
            )
        if answer is None:
            await _refuse(
                context,
                f"the REST backend's answer is over {self._limits.max_body_bytes} bytes",
                Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
            )
        data: bytes = http_pb2.HttpResponse(
            status=status, headers=kept, body=answer or b""
        ).SerializeToString()
        return data

    def _backend(
        self, service_name: str, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> RestBackendSettings | None:
        subsystem = next((v for k, v in metadata if k == SERVICE_HEADER), None)
        if not isinstance(subsystem, str):
            return None
        try:
            service = ServiceId(SubsystemId.parse(subsystem), service_name)
        except IdentifierError:
            return None
        return self._rest.get(service)


async def _refuse(
    context: grpc.aio.ServicerContext[Any, Any],
    text: str,
    fault: Fault = Fault.CLIENT_INVALID_REQUEST,
) -> NoReturn:
    """Refuse the call with ``fault``'s status, ``text``, ``ruta-fault`` and ``ruta-fault-id``."""
    await abort(context, BackEndError(text, fault=fault))


def _target(base_url: str, request: http_pb2.HttpRequest) -> URL | None:
    """``base_url`` + the request's path and query, or ``None`` for a path that could leave the
    base (``.`` or ``..`` segments, or not starting with ``/``)."""
    path = request.path
    if not path.startswith("/") or "#" in path or "?" in path:
        return None
    # Judged decoded too: a REST backend may decode "%2e%2e" or "%2F" before routing.
    for form in (path, unquote(path)):
        if "\\" in form or any(seg in (".", "..") for seg in form.split("/")):
            return None
    try:
        url = URL(base_url + path, encoded=True)
        if request.query:
            url = URL(f"{url}?{request.query}", encoded=True)
    except (ValueError, TypeError):
        return None
    return url
