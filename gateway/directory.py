"""Directory services (GovStack Information Mediator ``directory-services.yaml``): who is on the
instance, what a provider offers, what the caller may call, and service descriptions.

- ``GET /listClients[?instanceId=]``: members and subsystems (``MEMBER`` / ``APPLICATION``).
- ``GET /r1/{instance}/{class}/{member}/{subsystem}/listMethods[?serviceId=]``: the provider's
  services with their endpoints (a REST service's from its OpenAPI paths; a gRPC service's JSON
  methods as ``POST /{Method}``).
- ``.../allowedMethods``: the same, narrowed to what the caller's active contracts allow.
- ``.../getOpenAPI?serviceCode=``: a REST service's registered OpenAPI description; for a gRPC
  service, an OpenAPI 3 description of its JSON methods generated from its descriptors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from gateway.access import provider_subsystem
from gateway.callers import Callers
from gateway.http_faults import GatewayError, fault_response, json_response
from gateway.openapi import FAULT_RESPONSE, FAULT_SCHEMA
from gateway.transcode import ServiceCodecs, json_schema_of
from ruta.faults import Fault, RutaError
from ruta.globalconf import GlobalConf, Service
from ruta.globalconf.errors import GlobalConfError
from ruta.ids import IdentifierError, ServiceId, SubsystemId

__all__ = ["HTTP_METHODS", "Directory", "rest_endpoints"]

#: The operations an OpenAPI path item may hold.
HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Most endpoints listed for one service.
MAX_ENDPOINTS_PER_SERVICE: Final = 1024

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def rest_endpoints(openapi: bytes) -> list[dict[str, str]]:
    """``[{"method": "GET", "path": "/persons/{id}"}, ...]`` from an OpenAPI description (JSON),
    in document order; empty when it does not parse."""
    try:
        document = json.loads(openapi)
    except ValueError:
        return []
    paths = document.get("paths") if isinstance(document, dict) else None
    endpoints: list[dict[str, str]] = []
    if not isinstance(paths, dict):
        return endpoints
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            if method in item and len(endpoints) < MAX_ENDPOINTS_PER_SERVICE:
                endpoints.append({"method": method.upper(), "path": str(path)})
    return endpoints


class Directory:
    """The directory-service handlers."""

    def __init__(
        self,
        *,
        conf: Callable[[], GlobalConf],
        callers: Callers,
        codecs: ServiceCodecs,
        clock: Clock = _now,
    ) -> None:
        self._conf = conf
        self._callers = callers
        self._codecs = codecs
        self._clock = clock

    def _configuration(self) -> GlobalConf:
        try:
            return self._conf()
        except GlobalConfError as exc:
            raise GatewayError(exc.message, fault=exc.fault) from None

    async def list_clients(self, request: web.Request) -> web.Response:
        try:
            conf = self._configuration()
            wanted = request.query.get("instanceId")
            members: list[dict[str, Any]] = []
            if wanted is None or wanted == conf.instance:
                names = {m.id: m.name for m in conf.members}
                members.extend(
                    {"name": member.name, "id": _member_id(member.id)}
                    for member in sorted(conf.members, key=lambda m: m.id)
                )
                members.extend(
                    {
                        "name": names.get(subsystem.member, str(subsystem.member)),
                        "id": {
                            **_member_id(subsystem.member),
                            "objectType": "APPLICATION",
                            "applicationCode": subsystem.code,
                        },
                    }
                    for subsystem in sorted(conf.subsystems)
                )
            return json_response({"member": members})
        except RutaError as error:
            return fault_response(error)

    async def list_methods(self, request: web.Request) -> web.Response:
        return await self._methods(request, allowed_only=False)

    async def allowed_methods(self, request: web.Request) -> web.Response:
        return await self._methods(request, allowed_only=True)

    async def _methods(self, request: web.Request, *, allowed_only: bool) -> web.Response:
        try:
            provider = provider_subsystem(request)
            caller = self._callers.authenticate(request) if allowed_only else None
            conf = self._configuration()
            wanted = request.query.get("serviceId")
            now = self._clock()
            listed: list[dict[str, Any]] = []
            for service in conf.services_of(provider):
                if wanted is not None and wanted not in (service.id.service_name, str(service.id)):
                    continue
                endpoints = self._endpoints(service)
                if caller is not None:
                    methods = _allowed(conf, caller.client, service, now)
                    if methods is None:
                        continue
                    if methods and not service.is_rest:
                        endpoints = [e for e in endpoints if e["path"].lstrip("/") in methods]
                listed.append(_service_details(service, endpoints))
            return json_response({"member": listed})
        except RutaError as error:
            return fault_response(error)

    def _endpoints(self, service: Service) -> list[dict[str, str]]:
        if service.is_rest:
            return rest_endpoints(service.openapi)
        return [{"method": "POST", "path": f"/{name}"} for name in sorted(service.methods)]

    async def get_openapi(self, request: web.Request) -> web.Response:
        try:
            provider = provider_subsystem(request)
            code = request.query.get("serviceCode")
            if not code:
                raise GatewayError(
                    "the query parameter serviceCode is required",
                    fault=Fault.CLIENT_INVALID_REQUEST,
                )
            try:
                service_id = ServiceId(provider, code)
            except IdentifierError as exc:
                raise GatewayError(exc.message, fault=Fault.CLIENT_INVALID_IDENTIFIER) from None
            service = self._configuration().service(service_id)
            if service is None:
                raise GatewayError(
                    f"service {service_id} is not listed in the global configuration",
                    fault=Fault.CLIENT_UNKNOWN_SERVICE,
                )
            if service.is_rest:
                return web.Response(
                    body=service.openapi, content_type="application/json", charset="utf-8"
                )
            return json_response(grpc_openapi(service, self._codecs))
        except RutaError as error:
            return fault_response(error)


def _member_id(member: Any) -> dict[str, str]:
    return {
        "objectType": "MEMBER",
        "instanceId": member.instance,
        "memberClass": member.member_class,
        "memberCode": member.member_code,
    }


def _service_details(service: Service, endpoints: list[dict[str, str]]) -> dict[str, Any]:
    member = service.id.subsystem.member
    return {
        "objectType": "SERVICE",
        "serviceType": "OPENAPI" if service.is_rest else "GRPC",
        "instanceId": member.instance,
        "memberClass": member.member_class,
        "memberCode": member.member_code,
        "applicationCode": service.id.subsystem.code,
        "serviceCode": service.id.service_name,
        "endpointList": {"member": endpoints},
    }


def _allowed(
    conf: GlobalConf, client: SubsystemId, service: Service, at: datetime
) -> frozenset[str] | None:
    """The methods of ``service`` the client's active contracts allow (empty: all), or ``None``
    when none does."""
    methods: set[str] = set()
    found = False
    for contract in conf.contracts_of(client):
        if contract.service != service.id:
            continue
        if contract.valid_from > at or (
            contract.valid_until is not None and at >= contract.valid_until
        ):
            continue
        if not contract.methods:
            return frozenset()
        found = True
        methods.update(contract.methods)
    return frozenset(methods) if found else None


def grpc_openapi(service: Service, codecs: ServiceCodecs) -> dict[str, Any]:
    """An OpenAPI 3.0 description of a gRPC service's methods as JSON calls through the gateway
    (paths relative to ``/r1/{instance}/{class}/{member}/{subsystem}/{service}``)."""
    descriptor = codecs.descriptor(service)
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for method in descriptor.methods:
        if service.methods and method.name not in service.methods:
            continue
        paths[f"/{method.name}"] = {
            "post": {
                "operationId": method.name,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": json_schema_of(method.input_type, schemas)}
                    },
                },
                "responses": {
                    "200": {
                        "description": f"{method.output_type.full_name} (protobuf JSON mapping)",
                        "content": {
                            "application/json": {
                                "schema": json_schema_of(method.output_type, schemas)
                            }
                        },
                    },
                    "default": FAULT_RESPONSE,
                },
            }
        }
    schemas["Fault"] = FAULT_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {"title": str(service.id), "version": "1", "description": service.description},
        "paths": paths,
        "components": {"schemas": schemas},
    }
