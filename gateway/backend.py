"""The provider-side back end: the backend a security server routes its REST services to.

It serves every ``/{service code}/Call`` over gRPC (plaintext, loopback, next to the server),
reads the ``ruta.v1.HttpRequest`` the consumer side signed, makes the real HTTP call to the REST
backend configured for that service, and answers with a ``ruta.v1.HttpResponse`` (status, the
allowed headers, body), which the security server signs and logs. Failures are gRPC statuses the
provider turns into faults: ``UNAVAILABLE`` (backend unreachable: ``server.provider.
service_failed``), ``DEADLINE_EXCEEDED`` (it did not answer in time), ``RESOURCE_EXHAUSTED`` (its
answer is over the limit), ``INVALID_ARGUMENT`` (a request it will not forward), ``NOT_FOUND``
(no REST backend for that service here).
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

from gateway.settings import (
    GRPC_ENVELOPE_BYTES,
    BackEndSettings,
    LimitSettings,
    RestBackendSettings,
)
from ruta.call_metadata import SERVICE_HEADER
from ruta.http_body import read_bounded
from ruta.ids import IdentifierError, ServiceId, SubsystemId
from ruta.listeners import Listeners, ListenerSpec
from ruta.v1 import http_pb2

__all__ = ["REST_METHOD", "BackEnd"]

REST_METHOD: Final = "Call"
#: Methods forwarded to a REST backend.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_log = logging.getLogger(__name__)


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
                if method != REST_METHOD:
                    return None
                metadata = tuple(handler_call_details.invocation_metadata or ())

                async def _call(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
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
            await _refuse(context, grpc.StatusCode.NOT_FOUND, "no REST backend for this service")
        request = http_pb2.HttpRequest()
        try:
            request.ParseFromString(body)
        except DecodeError:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "not an HttpRequest")
        url = _target(rest.base_url, request)
        if url is None or request.method not in _METHODS:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "the request is not forwarded")
        headers = [(h.name, h.value) for h in request.headers if h.name in self._request_headers]
        session = self._session
        if session is None:
            await _refuse(context, grpc.StatusCode.UNAVAILABLE, "the back end is stopping")
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
                kept = [
                    http_pb2.HttpHeader(name=k.lower(), value=v)
                    for k, v in response.headers.items()
                    if k.lower() in self._response_headers
                ][: self._limits.max_headers]
        except TimeoutError:
            _log.warning("REST backend of %s did not answer in time", rest.service)
            await _refuse(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the REST backend did not answer in time",
            )
        except (aiohttp.ClientError, OSError) as exc:
            _log.warning("REST backend of %s failed: %s", rest.service, type(exc).__name__)
            await _refuse(
                context, grpc.StatusCode.UNAVAILABLE, "the REST backend cannot be reached"
            )
        if answer is None:
            await _refuse(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the REST backend's answer is over {self._limits.max_body_bytes} bytes",
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
    context: grpc.aio.ServicerContext[Any, Any], status: grpc.StatusCode, text: str
) -> NoReturn:
    await context.abort(status, text)
    raise AssertionError("unreachable: grpc.aio abort returned")  # pragma: no cover


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
