"""Every refusal the gateway gives over HTTP: the JSON body {type, message, detail} with the
status of ruta.faults.http_status_of, through two real security servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.examples.population.make_db import create_population_db
from tests.integration.adapters.support import example, serving
from tests.integration.gateway.gwbed import REST_SERVICE, GatewayBed, gateway_bed, gateway_url
from tests.integration.gateway.test_service_access import HEADERS, _call
from tests.integration.security_server.bed import BENEFITS, INCOME, POP, PURPOSE, SERVICE, SOC

pytestmark = pytest.mark.integration

GET_PERSON = f"/r1/{SERVICE}/GetPerson"
PERSON = {"nationalId": "38001010001"}


def _assert_fault(status: int, body: Any, want_status: int, want_type: str) -> None:
    assert status == want_status, body
    assert isinstance(body, dict), body
    assert set(body) == {"type", "message", "detail"}, body
    assert body["type"] == want_type, body
    assert body["message"]
    assert len(body["detail"]) == 36  # the fault id, a UUID


# (name, method, path, headers, JSON body, raw body, HTTP status, fault code)
CALLER_MISTAKES: list[tuple[str, str, str, dict[str, str], Any, bytes | None, int, str]] = [
    (
        "unknown service",
        "POST",
        f"/r1/{SERVICE.subsystem}/population.v1.Nothing/GetPerson",
        HEADERS,
        PERSON,
        None,
        404,
        "client.unknown_service",
    ),
    (
        "unknown method",
        "POST",
        f"/r1/{SERVICE}/Nope",
        HEADERS,
        PERSON,
        None,
        404,
        "client.unknown_service",
    ),
    ("unknown path", "GET", "/nothing/here", HEADERS, None, None, 404, "client.unknown_service"),
    (
        "malformed client header",
        "POST",
        GET_PERSON,
        {"X-Road-Client": "DEV/GOV/SOC", "Ruta-Purpose": PURPOSE},
        PERSON,
        None,
        400,
        "client.invalid_identifier",
    ),
    (
        "malformed GovStack client header",
        "POST",
        GET_PERSON,
        {"Information-Mediator-Client": "DEV/GOV/SOC/../x"},
        PERSON,
        None,
        400,
        "client.invalid_identifier",
    ),
    ("missing client header", "POST", GET_PERSON, {}, PERSON, None, 400, "client.missing_header"),
    (
        "malformed provider in the path",
        "POST",
        "/r1/DEV/GOV/P$P/registry/population.v1.PopulationRegister/GetPerson",
        HEADERS,
        PERSON,
        None,
        400,
        "client.invalid_identifier",
    ),
    (
        "JSON that does not fit the message",
        "POST",
        GET_PERSON,
        HEADERS,
        {"nationalIdentifier": "1"},
        None,
        400,
        "client.invalid_request",
    ),
    ("not JSON", "POST", GET_PERSON, HEADERS, None, b"{not json", 400, "client.invalid_request"),
    ("GET of a gRPC method", "GET", GET_PERSON, HEADERS, None, None, 400, "client.invalid_request"),
    (
        "body over the limit",
        "POST",
        GET_PERSON,
        HEADERS,
        None,
        b"x" * (16 * 1024 + 1),
        413,
        "client.message_too_large",
    ),
    (
        "no contract (wrong purpose)",
        "POST",
        GET_PERSON,
        {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": "curiosity"},
        PERSON,
        None,
        403,
        "server.consumer.access_denied",
    ),
    (
        "no contract for the REST service",
        "GET",
        f"/r1/{REST_SERVICE}/persons/38001010001",
        {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": "curiosity"},
        None,
        None,
        403,
        "server.consumer.access_denied",
    ),
    (
        "another member's subsystem",
        "POST",
        GET_PERSON,
        {"X-Road-Client": str(INCOME), "Ruta-Purpose": PURPOSE},
        PERSON,
        None,
        403,
        "client.permission_denied",
    ),
    (
        "own member's subsystem not allowed on plain loopback",
        "POST",
        GET_PERSON,
        {"X-Road-Client": "DEV/GOV/SOC/other", "Ruta-Purpose": PURPOSE},
        PERSON,
        None,
        403,
        "client.permission_denied",
    ),
    (
        "a purpose that is not printable ASCII",
        "POST",
        GET_PERSON,
        {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": "x" * 300},
        PERSON,
        None,
        400,
        "client.invalid_header",
    ),
]


async def test_callers_mistakes_are_refused_with_their_codes(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        base = gateway_url(instance)
        for name, method, path, headers, body, raw, status, fault in CALLER_MISTAKES:
            got_status, _, got = await _call(
                base + path, method=method, body=body, data=raw, headers=headers
            )
            try:
                _assert_fault(got_status, got, status, fault)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None


async def test_json_that_does_not_fit_names_the_field(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        status, _, body = await _call(
            gateway_url(instance) + GET_PERSON, body={"nationalIdentifier": "1"}
        )
        _assert_fault(status, body, 400, "client.invalid_request")
        assert "nationalIdentifier" in body["message"]
        status, _, body = await _call(gateway_url(instance) + GET_PERSON, body={"nationalId": 7})
        _assert_fault(status, body, 400, "client.invalid_request")
        assert "nationalId" in body["message"]


async def test_a_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 1024

    async with (
        gateway_bed(tmp_path) as instance,
        aiohttp.ClientSession() as session,
        session.post(gateway_url(instance) + GET_PERSON, data=chunks(), headers=HEADERS) as resp,
    ):
        _assert_fault(resp.status, await resp.json(), 413, "client.message_too_large")


async def test_grpc_backend_unreachable_is_502(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        await instance.stop_backend()
        status, _, body = await _call(gateway_url(instance) + GET_PERSON, body=PERSON)
        _assert_fault(status, body, 502, "server.provider.service_failed")


async def test_rest_backend_unreachable_is_502(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        await instance.rest.stop()
        status, _, body = await _call(
            f"{gateway_url(instance)}/r1/{REST_SERVICE}/persons/38001010001", method="GET"
        )
        _assert_fault(status, body, 502, "server.provider.service_failed")


async def test_rest_backend_not_answering_in_time_is_504(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        status, _, body = await _call(
            f"{gateway_url(instance)}/r1/{REST_SERVICE}/slow", method="GET"
        )
        assert status == 504, body
        assert body["type"] == "application.deadline_exceeded"
        assert len(body["detail"]) == 36


async def test_security_server_unreachable_is_502(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        from tests.integration.security_server.bed import SOC  # noqa: PLC0415

        app = instance.agencies[SOC].app
        assert app is not None
        await app.stop()
        instance.agencies[SOC].app = None
        status, _, body = await _call(gateway_url(instance) + GET_PERSON, body=PERSON)
        _assert_fault(status, body, 502, "server.consumer.network_error")


async def test_an_adapters_own_fault_is_the_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider backend that gives a fault code of its own (the population SQL adapter
    refusing a malformed national_id): the type is that code under ``backend.`` and the detail
    is the adapter's fault id (docs/adr/0024)."""
    database = tmp_path / "population.db"
    create_population_db(database)
    monkeypatch.setenv("RUTA_POPULATION_DB", str(database))
    async with serving(example(tmp_path, "population")) as adapter:
        instance = GatewayBed(tmp_path / "bed")
        try:
            await instance.rest.start()
            await instance.build()
            instance.backend_address = f"127.0.0.1:{adapter.port}"
            for server in (POP, SOC):
                await instance.start_server(server)
            await instance.start_gateway(SOC)
            status, _, body = await _call(
                gateway_url(instance) + GET_PERSON, body={"nationalId": "12-34"}
            )
        finally:
            await instance.close()
    _assert_fault(status, body, 400, "backend.client.invalid_request")
    assert body["message"] == "request field national_id has an invalid format"
