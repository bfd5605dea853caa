"""Service access through the gateway and two real security servers: JSON-to-gRPC and REST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.integration.gateway.gwbed import REST_SERVICE, gateway_bed, gateway_url
from tests.integration.security_server.bed import BENEFITS, PURPOSE, SERVICE

pytestmark = pytest.mark.integration

GET_PERSON = f"/r1/{SERVICE}/GetPerson"
HEADERS = {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": PURPOSE}


async def _call(
    url: str,
    *,
    method: str = "POST",
    body: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, CIMultiDict[str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            json=body if data is None else None,
            data=data,
            headers=HEADERS if headers is None else headers,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response,
    ):
        raw = await response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response.status, CIMultiDict(response.headers), parsed


def _assert_fault(status: int, body: Any, want_status: int, want_type: str) -> None:
    assert status == want_status, body
    assert body["type"] == want_type, body
    assert body["message"]
    assert len(body["detail"]) == 36  # the fault id, a UUID


async def test_json_to_grpc_through_two_security_servers(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        base = gateway_url(instance)
        status, headers, body = await _call(
            base + GET_PERSON,
            body={"nationalId": "38001010001"},
            headers={**HEADERS, "X-Road-UserId": "caseworker-17", "Ruta-Subject": "38001010001"},
        )
        assert status == 200, body
        assert body["givenName"] == "Ana"
        assert headers["Content-Type"].startswith("application/json")
        assert len(headers["X-Road-Id"]) == 36
        assert len(headers["X-Road-Request-Hash"]) == 64
        # The provider's backend saw what the HTTP caller said, through the signed header.
        seen = instance.backend.calls[-1]
        assert seen["ruta-client"] == str(BENEFITS)
        assert seen["ruta-purpose"] == PURPOSE
        assert seen["ruta-message-id"] == headers["X-Road-Id"]
        assert seen["ruta-user-id"] == "caseworker-17"
        assert seen["ruta-subject"] == "38001010001"
        # The doubled form .../{package.Service}/{package.Service}/{Method} is the same call.
        status, _, body = await _call(
            f"{base}/r1/{SERVICE}/{SERVICE.service_name}/GetPerson",
            body={"nationalId": "38001010001"},
            headers={"Information-Mediator-Client": str(BENEFITS), "Ruta-Purpose": PURPOSE},
        )
        assert status == 200, body


async def test_rest_through_two_security_servers(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        base = gateway_url(instance)
        status, headers, body = await _call(
            f"{base}/r1/{REST_SERVICE}/persons/38001010001?lang=es",
            method="GET",
            headers={**HEADERS, "Accept": "application/json", "X-Secret": "not forwarded"},
        )
        assert status == 200, body
        assert body == {"id": "38001010001", "name": "Ana Pérez", "lang": "es"}
        assert headers["ETag"] == '"v1"'
        assert "X-Internal" not in headers  # not in the response-header policy
        assert len(headers["X-Road-Id"]) == 36
        assert len(headers["X-Road-Request-Hash"]) == 64
        seen = instance.rest.requests[-1]
        assert seen["path"] == "/api/persons/38001010001"
        assert seen["query"] == "lang=es"
        assert "X-Secret" not in seen["headers"]
        # A POST with a body, and the backend's own status (201) passed on.
        status, _, body = await _call(f"{base}/r1/{REST_SERVICE}/persons", body={"name": "Luis"})
        assert status == 201, body
        assert body == {"received": {"name": "Luis"}}
        # The backend's 404 is the backend's answer, passed on as it is.
        status, _, body = await _call(f"{base}/r1/{REST_SERVICE}/persons/0", method="GET")
        assert status == 404
        assert body == {"error": "not found"}


async def test_metrics_count_requests_by_kind_and_status(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        await instance.gateways.pop("DEV/GOV/SOC/ss1").stop()
        from tests.integration.security_server.bed import SOC  # noqa: PLC0415

        app = await instance.start_gateway(SOC, metrics={"listen": "127.0.0.1:0"})
        base = app.addresses["http"]
        assert (await _call(base + GET_PERSON, body={"nationalId": "38001010001"}))[0] == 200
        assert (await _call(base + "/listClients", method="GET", headers={}))[0] == 200
        assert (await _call(base + GET_PERSON, body={"x": 1}))[0] == 400
        async with aiohttp.ClientSession() as session, session.get(app.addresses["metrics"]) as r:
            text = await r.text()
        assert 'ruta_gateway_requests_total{kind="json",status="200"} 1.0' in text
        assert 'ruta_gateway_requests_total{kind="json",status="400"} 1.0' in text
        assert 'ruta_gateway_requests_total{kind="directory",status="200"} 1.0' in text
        assert "ruta_gateway_request_seconds_bucket" in text
        assert "process_resident_memory_bytes " in text
        assert 'ruta_certificate_expires_timestamp_seconds{kind="gateway"}' in text
        assert "38001010001" not in text
