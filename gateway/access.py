"""Service access: ``{METHOD} /r1/{instance}/{class}/{member}/{subsystem}/{service}/{path...}``.

- A **REST service** (its configuration entry carries an OpenAPI description): the whole HTTP
  request becomes one ``ruta.v1.HttpRequest``, the signed body of a call to the fixed method
  ``Call``; the provider's gateway back end makes the real HTTP call and its ``HttpResponse``
  becomes the answer (docs/adr/0021-gateway.md).
- A **gRPC service called with JSON**: ``POST .../{package.Service}/{Method}`` (or
  ``.../{package.Service}/{package.Service}/{Method}``); the JSON body is transcoded with the
  service's descriptor set and carried as the ordinary gRPC exchange, and the answer back.

Every answer carries ``X-Road-Id`` (the message id) and ``X-Road-Request-Hash`` once the
exchange happened; every refusal is the JSON fault body of :mod:`gateway.http_faults`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web
from google.protobuf.message import DecodeError
from multidict import CIMultiDict

from gateway.bus import BusClient, BusRefusedError, CallerContext
from gateway.callers import Callers
from gateway.http_faults import JSON_TYPE, GatewayError, fault_response
from gateway.http_headers import HeaderLimitError, carried_headers
from gateway.metrics import KIND_KEY
from gateway.settings import LimitSettings
from gateway.transcode import ServiceCodecs, TranscodeError
from ruta.faults import (
    BACKEND_FAULT_PREFIX,
    Fault,
    RutaError,
    http_status_of,
    http_status_of_grpc,
)
from ruta.globalconf import GlobalConf, Service
from ruta.globalconf.errors import GlobalConfError
from ruta.http_body import read_bounded
from ruta.ids import IdentifierError, MemberId, ServiceId, SubsystemId
from ruta.v1 import http_pb2

__all__ = [
    "MESSAGE_ID_HEADER",
    "REQUEST_HASH_HEADER",
    "REST_METHOD",
    "ServiceAccess",
    "provider_subsystem",
]

#: The fixed bus method of every REST service (docs/adr/0021-gateway.md).
REST_METHOD: Final = "Call"
MESSAGE_ID_HEADER: Final = "X-Road-Id"
REQUEST_HASH_HEADER: Final = "X-Road-Request-Hash"
#: Longest path below a service carried to a REST backend.
MAX_REST_PATH_LENGTH: Final = 2048
#: Index of the service code among the "/"-separated segments of /r1/I/C/M/S/SERVICE/...
_SERVICE_SEGMENT: Final = 6

_log = logging.getLogger(__name__)
_FAULT_CODES: Final = frozenset(f.value for f in Fault)

ConfSource = Callable[[], GlobalConf]


def provider_subsystem(request: web.Request) -> SubsystemId:
    """The provider subsystem named by the URL. Raises :class:`GatewayError`
    (``client.invalid_identifier``) naming the part that is wrong."""
    info = request.match_info
    try:
        member = MemberId(info["instance"], info["member_class"], info["member_code"])
        return SubsystemId(member, info["subsystem"])
    except IdentifierError as exc:
        raise GatewayError(exc.message, fault=Fault.CLIENT_INVALID_IDENTIFIER) from None


class ServiceAccess:
    """The ``/r1/...`` service-access handler."""

    def __init__(
        self,
        *,
        conf: ConfSource,
        bus: BusClient,
        callers: Callers,
        codecs: ServiceCodecs,
        limits: LimitSettings,
    ) -> None:
        self._conf = conf
        self._bus = bus
        self._callers = callers
        self._codecs = codecs
        self._limits = limits
        self._request_headers = frozenset(h.lower() for h in limits.request_headers)
        self._response_headers = frozenset(h.lower() for h in limits.response_headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except BusRefusedError as refusal:
            return _refusal_response(refusal)
        except RutaError as error:
            return fault_response(error)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        subsystem = provider_subsystem(request)
        try:
            service_id = ServiceId(subsystem, request.match_info["service"])
        except IdentifierError as exc:
            raise GatewayError(exc.message, fault=Fault.CLIENT_INVALID_IDENTIFIER) from None
        caller = self._callers.authenticate(request)
        try:
            conf = self._conf()
        except GlobalConfError as exc:
            raise GatewayError(exc.message, fault=exc.fault) from None
        service = conf.service(service_id)
        if service is None:
            raise GatewayError(
                f"service {service_id} is not listed in the global configuration",
                fault=Fault.CLIENT_UNKNOWN_SERVICE,
            )
        request[KIND_KEY] = "rest" if service.is_rest else "json"
        body = await self._body(request)
        tail = request.match_info.get("tail", "")
        if service.is_rest:
            return await self._rest(request, service, caller, tail, body)
        return await self._json(request, service, caller, tail, body)

    async def _body(self, request: web.Request) -> bytes:
        limit = self._limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise GatewayError(
                f"the request body is {request.content_length} bytes; the limit is {limit}",
                fault=Fault.CLIENT_MESSAGE_TOO_LARGE,
            )
        body = await read_bounded(request.content, limit)
        if body is None:
            raise GatewayError(
                f"the request body is over the limit of {limit} bytes",
                fault=Fault.CLIENT_MESSAGE_TOO_LARGE,
            )
        return body

    # -- gRPC services called with JSON ------------------------------------------------------

    async def _json(
        self,
        request: web.Request,
        service: Service,
        caller: CallerContext,
        tail: str,
        body: bytes,
    ) -> web.StreamResponse:
        parts = [p for p in tail.split("/") if p]
        if len(parts) == 2 and parts[0] == service.id.service_name:
            parts = parts[1:]
        if len(parts) != 1:
            raise GatewayError(
                f"call a method of {service.id} as POST .../{service.id.service_name}/METHOD",
                fault=Fault.CLIENT_UNKNOWN_SERVICE,
            )
        if request.method != "POST":
            raise GatewayError(
                "a gRPC method is called with POST and a JSON body",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        codec = self._codecs.method(service, parts[0])
        wire = codec.request_from_json(body)
        answer = await self._bus.call(
            service=service.id,
            method=codec.name,
            caller=caller,
            body=wire,
            deadline_seconds=self._limits.timeout_seconds,
        )
        exchanged = _exchanged_headers(answer.message_id, answer.request_hash)
        try:
            data = codec.response_to_json(answer.body)
        except TranscodeError as exc:
            return fault_response(exc, headers=exchanged)
        return web.Response(
            body=data, status=200, content_type=JSON_TYPE, charset="utf-8", headers=exchanged
        )

    # -- REST services -----------------------------------------------------------------------

    async def _rest(
        self,
        request: web.Request,
        service: Service,
        caller: CallerContext,
        tail: str,
        body: bytes,
    ) -> web.StreamResponse:
        # The path below the service as the caller encoded it (match_info holds it decoded,
        # which would turn an encoded "/" or "?" into structure).
        raw = request.rel_url.raw_path.split("/")
        path = "/" + "/".join(raw[_SERVICE_SEGMENT + 1 :])
        if len(path) > MAX_REST_PATH_LENGTH:
            raise GatewayError(
                f"the path is longer than {MAX_REST_PATH_LENGTH} characters",
                fault=Fault.CLIENT_INVALID_REQUEST,
            )
        message = http_pb2.HttpRequest(
            method=request.method.upper(),
            path=path,
            query=request.query_string,
            headers=carried_headers(
                request.headers.items(),
                self._request_headers,
                self._limits,
                whose="the request",
                fault=Fault.CLIENT_INVALID_HEADER,
            ),
            body=body,
        )
        answer = await self._bus.call(
            service=service.id,
            method=REST_METHOD,
            caller=caller,
            body=message.SerializeToString(),
            deadline_seconds=self._limits.timeout_seconds,
        )
        exchanged = _exchanged_headers(answer.message_id, answer.request_hash)
        response = http_pb2.HttpResponse()
        try:
            response.ParseFromString(answer.body)
        except DecodeError:
            return fault_response(
                GatewayError(
                    "the provider's answer is not an HTTP response",
                    fault=Fault.SERVER_PROVIDER_SERVICE_FAILED,
                ),
                headers=exchanged,
            )
        if not 100 <= response.status <= 599:
            return fault_response(
                GatewayError(
                    f"the provider's answer carries HTTP status {response.status}",
                    fault=Fault.SERVER_PROVIDER_SERVICE_FAILED,
                ),
                headers=exchanged,
            )
        try:
            carried = carried_headers(
                ((h.name, h.value) for h in response.headers),
                self._response_headers,
                self._limits,
                whose="the provider's answer",
                fault=Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
                invalid=Fault.SERVER_PROVIDER_SERVICE_FAILED,
            )
        except HeaderLimitError as exc:
            return fault_response(exc, headers=exchanged)
        headers = CIMultiDict((h.name, h.value) for h in carried)
        headers.update(exchanged)
        return web.Response(body=response.body, status=response.status, headers=headers)


def _exchanged_headers(message_id: str, request_hash: str) -> dict[str, str]:
    found = {}
    if message_id:
        found[MESSAGE_ID_HEADER] = message_id
    if request_hash:
        found[REQUEST_HASH_HEADER] = request_hash
    return found


def _backend_http_status(refusal: BusRefusedError) -> int:
    """The HTTP status of a provider backend's refusal: that of its code when the code is one
    of Ruta's under ``backend.`` (the gateway back end's and the adapters' are), so a code
    means the same status whoever gives it; else that of its gRPC status."""
    code = refusal.backend_fault.removeprefix(BACKEND_FAULT_PREFIX)
    if refusal.backend_fault.startswith(BACKEND_FAULT_PREFIX) and code in _FAULT_CODES:
        return http_status_of(Fault(code), status=refusal.status)
    return http_status_of_grpc(refusal.status)


def _refusal_response(refusal: BusRefusedError) -> web.Response:
    exchanged = _exchanged_headers(refusal.message_id, refusal.request_hash)
    if refusal.application:
        # The provider's backend answered with its own status (and perhaps its own fault code,
        # docs/adr/0024): pass it on.
        return fault_response(
            refusal,
            fault_id=refusal.fault_id,
            http_status=_backend_http_status(refusal),
            fault_type=refusal.backend_fault or f"application.{refusal.status.name.lower()}",
            headers=exchanged,
            grpc_status=refusal.status,
        )
    return fault_response(
        refusal, fault_id=refusal.fault_id, grpc_status=refusal.status, headers=exchanged
    )
