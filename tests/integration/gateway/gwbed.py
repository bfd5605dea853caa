"""The security-server bed plus gateways: SOC's gateway (consumer side, plain loopback callers
for ``DEV/GOV/SOC/benefits``) and POP's gateway (provider side, whose back end serves the REST
service ``DEV/GOV/POP/registry/persons`` from a real aiohttp REST backend)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.app import GatewayApp
from gateway.settings import GatewaySettings
from ruta.ids import ServiceId
from ruta.v1 import globalconf_pb2
from tests.conftest import free_port
from tests.integration.security_server.bed import (
    BENEFITS,
    POP,
    PURPOSE,
    REGISTRY_SUBSYSTEM,
    SOC,
    Bed,
)

REST_SERVICE: Final = ServiceId(REGISTRY_SUBSYSTEM, "persons")
#: An OpenAPI description of the legacy persons API (what the registry carries).
PERSONS_OPENAPI: Final = {
    "openapi": "3.0.3",
    "info": {"title": "Legacy persons API", "version": "1"},
    "paths": {
        "/persons/{id}": {
            "get": {
                "operationId": "getPerson",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "A person"}},
            }
        },
        "/persons": {
            "post": {"operationId": "addPerson", "responses": {"201": {"description": "Added"}}}
        },
    },
}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LegacyRest:
    """A real aiohttp REST backend: GET /persons/{id}, POST /persons (echo), GET /slow."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/persons/{id}", self._get)
        app.router.add_post("/api/persons", self._post)
        app.router.add_get("/api/slow", self._slow)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, request: web.Request, body: bytes) -> None:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body": body,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        person_id = request.match_info["id"]
        if person_id != "38001010001":
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(
            {"id": person_id, "name": "Ana Pérez", "lang": request.query.get("lang", "")},
            headers={"ETag": '"v1"', "X-Internal": "secret-ish"},
        )

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(request, body)
        return web.json_response({"received": json.loads(body)}, status=201)

    async def _slow(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=30)
        return web.json_response({})


class GatewayBed(Bed):
    """The bed with a REST service listed, a contract for it, and POP routing it to its
    gateway's back end."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.rest = LegacyRest()
        self.back_end_port = free_port()
        self.rest_contract = True
        self.gateways: dict[str, GatewayApp] = {}

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        conf.services.add(
            id=REST_SERVICE.to_proto(),
            methods=["Call"],
            description="Legacy persons API (REST)",
            openapi=json.dumps(PERSONS_OPENAPI).encode(),
        )
        if self.rest_contract:
            conf.contracts.add(
                contract_id="C-REST",
                consumer=BENEFITS.to_proto(),
                service=REST_SERVICE.to_proto(),
                methods=["Call"],
                purpose=PURPOSE,
                legal_basis="Social Benefits Act s.12",
                valid_from=_timestamp(_now() - datetime.timedelta(days=1)),
            )
        return conf

    def settings_dict(self, server: Any, **limits: Any) -> dict[str, Any]:
        data = super().settings_dict(server, **limits)
        if server == POP:
            data["backends"] = [
                *data.get("backends", []),
                {"service": str(REST_SERVICE), "address": f"127.0.0.1:{self.back_end_port}"},
            ]
        return data

    def gateway_settings(self, server: Any, **overrides: Any) -> dict[str, Any]:
        agency = self.agencies[server]
        cred = self._issue(self.pki.gateway(server.member))
        folder = agency.directory / "gateway"
        data: dict[str, Any] = {
            "member": str(server.member),
            "data_dir": str(folder / "data"),
            "http": {
                "listen": "127.0.0.1:0",
                "plain_loopback_subsystems": [str(agency.subsystem)],
            },
            "consumer": {
                "address": agency.addresses["consumer"],
                "ca": str(self.pki.trust_path),
                "cert": str(cred.cert_path),
                "key": str(cred.key_path),
            },
            "globalconf": {
                "anchor": str(self.anchor_path),
                "fetch_interval_seconds": 0.2,
                "retry_initial_seconds": 0.2,
                "retry_max_seconds": 0.5,
            },
            "limits": {"max_body_bytes": 16 * 1024, "timeout_seconds": 10},
        }
        if server == POP:
            data["backend"] = {
                "listen": f"127.0.0.1:{self.back_end_port}",
                "rest": [
                    {"service": str(REST_SERVICE), "base_url": self.rest.url, "timeout_seconds": 2}
                ],
            }
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return data

    async def start_gateway(self, server: Any, **overrides: Any) -> GatewayApp:
        settings = GatewaySettings(**self.gateway_settings(server, **overrides))
        app = await GatewayApp.start(settings)
        self.gateways[str(server)] = app
        return app

    async def close(self) -> None:
        for app in self.gateways.values():
            await app.stop()
        self.gateways.clear()
        await super().close()
        await self.rest.stop()


def _timestamp(at: datetime.datetime) -> Any:
    from google.protobuf import timestamp_pb2  # noqa: PLC0415

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return stamp


@contextlib.asynccontextmanager
async def gateway_bed(
    directory: Path, *, audit: bool = False, bed: type[GatewayBed] = GatewayBed
) -> AsyncIterator[GatewayBed]:
    """POP and SOC serving in this process (with their audit APIs when ``audit``), with their
    gateways and the REST backend; ``bed`` may be a subclass that lists more."""
    instance = bed(directory)
    try:
        await instance.rest.start()
        await instance.build()
        for server in (POP, SOC):
            data = instance.settings_dict(server)
            if audit:
                data["audit"] = {"listen": "127.0.0.1:0"}
            await instance.start_server(server, data=data)
        await instance.start_gateway(POP)
        await instance.start_gateway(SOC)
        yield instance
    finally:
        await instance.close()


def gateway_url(instance: GatewayBed, server: Any = SOC) -> str:
    return instance.gateways[str(server)].addresses["http"]
