"""The soap backend against a real SOAP service (aiohttp), through gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from adapters.examples.legacy_business import make_app, wsdl
from ruta.faults import Fault
from tests.conftest import free_port
from tests.integration.adapters.support import example, running_app, serving


def _custom(tmp_path: Path, wsdl_url: str, *, method: str = "", patterns: bool = True) -> Path:
    path = example(tmp_path, "business")
    text = path.read_text(encoding="utf-8")
    if not patterns:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("patterns ="))
    text = text.replace("${RUTA_BUSINESS_WSDL:-http://127.0.0.1:8092/business?wsdl}", wsdl_url)
    text = text.replace(
        'operation = "FindCompaniesByOwner"', f'operation = "FindCompaniesByOwner"\n{method}'
    )
    custom = path.parent / "custom.toml"
    custom.write_text(text, encoding="utf-8")
    return custom


async def test_example_maps_companies_enums_and_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(make_app()) as base_url:
        monkeypatch.setenv("RUTA_BUSINESS_WSDL", f"{base_url}/business?wsdl")
        async with serving(example(tmp_path, "business")) as served:
            owner = await served.call("ListCompaniesByOwner", {"national_id": "4410000025"})
            assert owner == {
                "national_id": "4410000025",
                "companies": [
                    {
                        "registry_code": "20600000011",
                        "name": "Panadería Fernández SAC",
                        "status": "ACTIVE",
                        "role": "OWNER",
                        "registered_on": "2016-05-10",
                    },
                    {
                        "registry_code": "20600000029",
                        "name": "Transportes Rojas EIRL",
                        "status": "DISSOLVED",
                        "role": "OWNER",
                        "registered_on": "2012-03-01",
                    },
                ],
            }
            none = await served.call("ListCompaniesByOwner", {"national_id": "4410000017"})
            assert none == {"national_id": "4410000017"}
            unknown = await served.refuse("ListCompaniesByOwner", {"national_id": "4410000999"})
            assert unknown.code is grpc.StatusCode.NOT_FOUND
            assert unknown.fault is Fault.CLIENT_NOT_FOUND
            invalid = await served.refuse("ListCompaniesByOwner", {"national_id": "x' or 1=1"})
            assert invalid.code is grpc.StatusCode.INVALID_ARGUMENT
            assert invalid.details == "request field national_id has an invalid format"


async def test_legacy_client_fault_is_invalid_argument(tmp_path: Path) -> None:
    """Without the example's pattern, the legacy service's own Client fault refuses the call."""
    async with running_app(make_app()) as base_url:
        path = _custom(tmp_path, f"{base_url}/business?wsdl", patterns=False)
        async with serving(path) as served:
            invalid = await served.refuse("ListCompaniesByOwner", {"national_id": "x' or 1=1"})
            assert invalid.code is grpc.StatusCode.INVALID_ARGUMENT
            assert invalid.fault is Fault.CLIENT_INVALID_REQUEST
            assert (
                invalid.details
                == "SOAP backend business_soap refused the request for ListCompaniesByOwner"
            )


async def test_legacy_down_is_unavailable_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    path = _custom(tmp_path, f"http://127.0.0.1:{port}/business?wsdl")
    async with serving(path) as served:
        down = await served.refuse("ListCompaniesByOwner", {"national_id": "4410000025"})
        assert down.code is grpc.StatusCode.UNAVAILABLE
        assert down.fault is Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE
        assert down.details == "SOAP backend business_soap cannot be reached"
        # The WSDL is loaded on first use, so the adapter serves once the service is up.
        runner = web.AppRunner(make_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            owner = await served.call("ListCompaniesByOwner", {"national_id": "4410000033"})
            assert owner["companies"][0]["registry_code"] == "20600000037"
        finally:
            await runner.cleanup()


def _envelope(body: str) -> str:
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:b="urn:ruta-example:business-register"><soap:Body>'
        f"{body}</soap:Body></soap:Envelope>"
    )


XXE = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    + _envelope(
        "<b:FindCompaniesByOwnerResponse><b:ownerId>&secret;</b:ownerId>"
        "</b:FindCompaniesByOwnerResponse>"
    )
)
BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>\n'
    + _envelope(
        "<b:FindCompaniesByOwnerResponse><b:ownerId>&b;</b:ownerId></b:FindCompaniesByOwnerResponse>"
    )
)
WRONG_SHAPE = _envelope(
    "<b:FindCompaniesByOwnerResponse><b:ownerId>1</b:ownerId><b:bogus>1</b:bogus>"
    "</b:FindCompaniesByOwnerResponse>"
)
NO_BODY = '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"></soap:Envelope>'


@pytest.mark.parametrize(
    ("answer", "status", "code", "fault", "text"),
    [
        (
            "this is not xml <",
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "not SOAP XML",
        ),
        (
            "<a>b</a>",
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "does not fit its WSDL",
        ),
        (
            NO_BODY,
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "does not fit its WSDL",
        ),
        (
            XXE,
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "DTD, entities or external references",
        ),
        (
            BOMB,
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "DTD, entities or external references",
        ),
        (
            WRONG_SHAPE,
            200,
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "does not fit its WSDL",
        ),
        (
            "<x>" + "y" * 300_000 + "</x>",
            200,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
            "more than 100000 bytes",
        ),
        (
            "busy",
            503,
            grpc.StatusCode.UNAVAILABLE,
            Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE,
            "failed (HTTP error)",
        ),
    ],
)
async def test_malformed_and_unsafe_answers_are_refused(
    tmp_path: Path, answer: str, status: int, code: grpc.StatusCode, fault: Fault, text: str
) -> None:
    async def serve_wsdl(request: web.Request) -> web.Response:
        return web.Response(text=wsdl(str(request.url.with_query(None))), content_type="text/xml")

    async def bad_answer(_request: web.Request) -> web.Response:
        return web.Response(text=answer, status=status, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/business", serve_wsdl)
    app.router.add_post("/business", bad_answer)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, f"{base_url}/business?wsdl")
        path.write_text(
            path.read_text(encoding="utf-8").replace(
                "timeout_seconds = 5", "timeout_seconds = 5\nmax_response_bytes = 100000"
            ),
            encoding="utf-8",
        )
        async with serving(path) as served:
            refusal = await served.refuse("ListCompaniesByOwner", {"national_id": "4410000025"})
    assert refusal.code is code
    assert refusal.fault is fault
    assert text in refusal.details
    assert "root:" not in refusal.details


async def test_timeouts_and_caller_deadline(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def serve_wsdl(request: web.Request) -> web.Response:
        return web.Response(text=wsdl(str(request.url.with_query(None))), content_type="text/xml")

    async def stuck(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/business", serve_wsdl)
    app.router.add_post("/business", stuck)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, f"{base_url}/business?wsdl", method="timeout_seconds = 0.5")
        try:
            async with serving(path) as served:
                refusal = await served.refuse("ListCompaniesByOwner", {"national_id": "4410000025"})
                assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED
                assert refusal.fault is Fault.SERVER_PROVIDER_LEGACY_TIMEOUT
                refusal = await served.refuse(
                    "ListCompaniesByOwner", {"national_id": "4410000025"}, deadline=0.5
                )
                assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED
                release.set()
        finally:
            release.set()
