"""Every refusal the gateway gives over HTTP: the JSON body {type, message, detail} with the
status of ruta.faults.http_status_of, through two real security servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from multidict import CIMultiDict

from adapters.examples.population.make_db import create_population_db
from ruta.v1 import http_pb2
from tests.integration.adapters.support import example, serving
from tests.integration.gateway.gwbed import REST_SERVICE, GatewayBed, gateway_bed, gateway_url
from tests.integration.gateway.test_service_access import HEADERS, _call
from tests.integration.security_server.bed import (
    BENEFITS,
    INCOME,
    POP,
    PURPOSE,
    SERVICE,
    SOC,
    call_metadata,
)

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
    # The provider's gateway back end says so with its fault code, as an adapter does.
    async with gateway_bed(tmp_path) as instance:
        await instance.rest.stop()
        status, _, body = await _call(
            f"{gateway_url(instance)}/r1/{REST_SERVICE}/persons/38001010001", method="GET"
        )
        _assert_fault(status, body, 502, "backend.server.provider.legacy_unavailable")


async def test_rest_backend_not_answering_in_time_is_504(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        status, _, body = await _call(
            f"{gateway_url(instance)}/r1/{REST_SERVICE}/slow", method="GET"
        )
        _assert_fault(status, body, 504, "backend.server.provider.legacy_timeout")


REST_PERSON = f"/r1/{REST_SERVICE}/persons/38001010001"


@contextlib.asynccontextmanager
async def _limited(
    directory: Path, *, pop: dict[str, Any], soc: dict[str, Any]
) -> AsyncIterator[GatewayBed]:
    """The gateway bed with POP's gateway (the REST back end) and SOC's (the callers') under
    the ``[limits]`` given."""
    instance = GatewayBed(directory)
    try:
        await instance.rest.start()
        await instance.build()
        for server in (POP, SOC):
            await instance.start_server(server)
        await instance.start_gateway(POP, limits=pop)
        await instance.start_gateway(SOC, limits=soc)
        yield instance
    finally:
        await instance.close()


async def _get(url: str, headers: list[tuple[str, str]]) -> tuple[int, CIMultiDict[str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url,
            headers=CIMultiDict([*HEADERS.items(), *headers]),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.json()


async def test_request_headers_over_the_gateways_limits_are_refused_not_dropped(
    tmp_path: Path,
) -> None:
    async with _limited(tmp_path, pop={}, soc={"max_headers": 2, "max_header_bytes": 256}) as bed:
        url = gateway_url(bed) + REST_PERSON
        status, _, body = await _get(url, [("Accept", "application/json")] * 3)
        _assert_fault(status, body, 400, "client.invalid_header")
        assert "max_headers" in body["message"]
        status, _, body = await _get(url, [("Accept-Language", "es-" + "x" * 300)])
        _assert_fault(status, body, 400, "client.invalid_header")
        assert "max_header_bytes" in body["message"]
        assert bed.rest.requests == []  # nothing reached the REST backend
        status, _, _ = await _get(url, [("Accept-Language", "es")])
        assert status == 200


async def test_the_back_ends_header_limits_refuse_with_the_same_code_over_http_and_grpc(
    tmp_path: Path,
) -> None:
    """POP's gateway bounds request headers tighter than SOC's: its back end refuses with
    client.invalid_header, which reaches an HTTP caller and a gRPC caller alike, under
    ``backend.``; and a REST answer whose passed-on headers are over its bounds is refused, not
    cut (server.provider.result_too_large)."""
    async with _limited(tmp_path, pop={"max_header_bytes": 256}, soc={}) as bed:
        status, _, body = await _get(
            gateway_url(bed) + REST_PERSON, [("Accept-Language", "es-" + "x" * 300)]
        )
        _assert_fault(status, body, 400, "backend.client.invalid_header")
        request = http_pb2.HttpRequest(
            method="GET",
            path="/persons/38001010001",
            headers=[http_pb2.HttpHeader(name="accept-language", value="es-" + "x" * 300)],
        )
        refused = await _refused_over_grpc(bed, request)
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        trailers = dict(refused.trailing_metadata() or ())
        assert trailers["ruta-fault"] == "backend.client.invalid_header"
        assert trailers["ruta-fault-id"] != body["detail"]  # each refusal its own id
        assert bed.rest.requests == []
    async with _limited(tmp_path / "answer", pop={"max_headers": 1}, soc={}) as bed:
        # The answer passes on content-type and etag: two, over POP's one.
        status, headers, body = await _get(gateway_url(bed) + REST_PERSON, [])
        _assert_fault(status, body, 502, "backend.server.provider.result_too_large")
        assert headers["X-Road-Id"]


async def test_an_answer_over_the_callers_gateway_limits_is_refused_not_cut(
    tmp_path: Path,
) -> None:
    async with _limited(tmp_path, pop={}, soc={"max_headers": 1}) as bed:
        status, headers, body = await _get(gateway_url(bed) + REST_PERSON, [])
        _assert_fault(status, body, 502, "server.provider.result_too_large")
        assert headers["X-Road-Id"]  # the exchange happened and is in both logs


async def test_the_back_end_refuses_other_methods_with_a_fault_and_keeps_health(
    tmp_path: Path,
) -> None:
    async with gateway_bed(tmp_path) as bed:
        back_end = bed.gateways[str(POP)].addresses["backend"]
        async with grpc.aio.insecure_channel(back_end) as channel:
            other: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/{REST_SERVICE.service_name}/Other"
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await other(b"", timeout=10)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
            trailers = dict(refused.value.trailing_metadata() or ())
            assert trailers["ruta-fault"] == "server.provider.unknown_service"
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


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


async def test_a_header_value_no_http_parser_made_is_refused_with_a_fault(tmp_path: Path) -> None:
    """A gRPC caller signs an HttpRequest whose header value holds a line break (no HTTP
    parser lets one through): the back end refuses it with its code instead of failing in
    its HTTP client without one."""
    async with gateway_bed(tmp_path) as bed:
        request = http_pb2.HttpRequest(
            method="GET",
            path="/persons/38001010001",
            headers=[http_pb2.HttpHeader(name="accept-language", value="es\r\nX-Injected: yes")],
        )
        refused = await _refused_over_grpc(bed, request)
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        trailers = dict(refused.trailing_metadata() or ())
        assert trailers["ruta-fault"] == "backend.client.invalid_header"
        assert bed.rest.requests == []


async def _refused_over_grpc(bed: Any, request: http_pb2.HttpRequest) -> grpc.aio.AioRpcError:
    """``request`` sent to the REST service through the consumer's gRPC port; its refusal."""
    async with bed.consumer_channel(SOC) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{REST_SERVICE.service_name}/Call"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request.SerializeToString(), metadata=call_metadata(), timeout=10)
    return refused.value
