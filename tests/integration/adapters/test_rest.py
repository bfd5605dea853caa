"""The rest backend against real aiohttp legacy services, through gRPC."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from adapters.examples.legacy_tax import make_app
from ruta.faults import Fault
from tests.conftest import free_port
from tests.integration.adapters.support import example, running_app, serving


def _toml(
    base_url: str, *, method: str = "", backend: str = "", path: str = "/x/{national_id}"
) -> str:
    return f"""
[adapter]
service = "tax.v1.TaxAgency"
proto = "tax.proto"

[backends.api]
kind = "rest"
base_url = "{base_url}"
backoff_seconds = 0.01
{backend}

[methods.GetIncome]
backend = "api"
path = "{path}"
query_params = {{ year = "year" }}
{method}

[methods.GetIncome.fields]
national_id = "tin"
total_cents = {{ from = "total", scale = 100 }}
"""


def _custom(tmp_path: Path, toml: str) -> Path:
    folder = example(tmp_path, "tax").parent
    path = folder / "custom.toml"
    path.write_text(toml, encoding="utf-8")
    return path


async def test_example_maps_income_with_nested_repeated_and_converted_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(make_app()) as base_url:
        monkeypatch.setenv("RUTA_TAX_URL", base_url)
        async with serving(example(tmp_path, "tax")) as served:
            income = await served.call("GetIncome", {"national_id": "4410000017", "year": 2025})
            assert income == {
                "national_id": "4410000017",
                "year": 2025,
                "total_cents": "1655050",
                "currency": "PEN",
                "assessed": True,
                "items": [
                    {
                        "source": "employment",
                        "amount_cents": "1535000",
                        "payer": "Escuela Municipal 5",
                    },
                    {"source": "rental", "amount_cents": "120050"},
                ],
            }
            unassessed = await served.call("GetIncome", {"national_id": "4410000025", "year": 2025})
            assert "assessed" not in unassessed  # false is proto3's default
            missing = await served.refuse("GetIncome", {"national_id": "4410000017", "year": 1999})
            assert missing.code is grpc.StatusCode.NOT_FOUND
            assert missing.fault is Fault.CLIENT_NOT_FOUND
            no_year = await served.refuse("GetIncome", {"national_id": "4410000017"})
            assert no_year.code is grpc.StatusCode.INVALID_ARGUMENT
            assert no_year.details == "request field year is required"
            refused = await served.refuse("GetIncome", {"national_id": "4410000017", "year": 1800})
            assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
            assert refused.details == "REST backend tax_api refused the request (HTTP 400)"


async def test_legacy_down_is_unavailable(tmp_path: Path) -> None:
    path = _custom(tmp_path, _toml(f"http://127.0.0.1:{free_port()}", backend="retries = 1"))
    async with serving(path) as served:
        refusal = await served.refuse("GetIncome", {"national_id": "1", "year": 2025})
        assert refusal.code is grpc.StatusCode.UNAVAILABLE
        assert refusal.fault is Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE
        assert refusal.details == "REST backend api cannot be reached"


async def test_timeouts_and_caller_deadline(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def stuck(_request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/x/{id}", stuck)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, _toml(base_url, method="timeout_seconds = 0.3"))
        async with serving(path) as served:
            refusal = await served.refuse("GetIncome", {"national_id": "1", "year": 2025})
            assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert refusal.fault is Fault.SERVER_PROVIDER_LEGACY_TIMEOUT
        path = _custom(tmp_path, _toml(base_url, method="timeout_seconds = 60"))
        async with serving(path) as served:
            refusal = await served.refuse(
                "GetIncome", {"national_id": "1", "year": 2025}, deadline=0.3
            )
            assert refusal.code is grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()


@pytest.mark.parametrize(
    ("body", "content_type", "code", "fault", "text"),
    [
        (
            b"<html>oops</html>",
            "text/html",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "not JSON",
        ),
        (
            b'{"tin": "1", "total": "lots"}',
            "application/json",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "total_cents does not fit",
        ),
        (
            b'["a", "b"]',
            "application/json",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "more than one record",
        ),
        (
            b'"just text"',
            "application/json",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "not a record",
        ),
        (
            b"[" * 100_000,
            "application/json",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "not JSON",
        ),
        (
            b'{"pad": "' + b"x" * 300_000 + b'"}',
            "application/json",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
            "more than 100000 bytes",
        ),
        (b"", "application/json", grpc.StatusCode.NOT_FOUND, Fault.CLIENT_NOT_FOUND, "no record"),
    ],
)
async def test_malformed_answers_are_refused(
    tmp_path: Path, body: bytes, content_type: str, code: grpc.StatusCode, fault: Fault, text: str
) -> None:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/x/{id}", answer)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, _toml(base_url, backend="max_response_bytes = 100000"))
        async with serving(path) as served:
            refusal = await served.refuse("GetIncome", {"national_id": "1", "year": 2025})
            assert refusal.code is code
            assert refusal.fault is fault
            assert text in refusal.details


@pytest.mark.parametrize(("http_method", "attempts"), [("GET", 3), ("POST", 1)])
async def test_retries_only_idempotent_calls(
    tmp_path: Path, http_method: str, attempts: int
) -> None:
    seen: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.json_response({"error": "busy"}, status=503)

    app = web.Application()
    app.router.add_route(http_method, "/x/{id}", flaky)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, _toml(base_url, method=f'http_method = "{http_method}"'))
        async with serving(path) as served:
            refusal = await served.refuse("GetIncome", {"national_id": "1", "year": 2025})
            assert refusal.code is grpc.StatusCode.UNAVAILABLE
            assert refusal.details == "REST backend api failed (HTTP 503)"
    assert seen == [http_method] * attempts


async def test_retry_recovers_after_a_busy_answer(tmp_path: Path) -> None:
    calls = 0

    async def busy_once(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({}, status=503)
        return web.json_response({"tin": "4410000017", "total": "1.5"})

    app = web.Application()
    app.router.add_get("/x/{id}", busy_once)
    async with running_app(app) as base_url, serving(_custom(tmp_path, _toml(base_url))) as served:
        income = await served.call("GetIncome", {"national_id": "4410000017", "year": 2025})
    assert income == {"national_id": "4410000017", "total_cents": "150"}
    assert calls == 2


@pytest.mark.parametrize(
    "value", ["../../admin", "a/b?c=d#e", "x' OR '1'='1", "%2e%2e", "100%", " spaced out "]
)
async def test_path_values_stay_one_segment_and_body_is_json(tmp_path: Path, value: str) -> None:
    received: list[object] = []

    async def record(request: web.Request) -> web.Response:
        received.append((request.match_info["id"], dict(request.query), await request.json()))
        return web.json_response({"tin": "ok"})

    app = web.Application()
    app.router.add_post("/persons/{id}/income", record)
    async with running_app(app) as base_url:
        toml = _toml(
            base_url,
            path="/persons/{national_id}/income",
            method='http_method = "POST"\nbody = { person = "national_id", fiscal_year = "year" }',
        )
        async with serving(_custom(tmp_path, toml)) as served:
            await served.call("GetIncome", {"national_id": value, "year": 2025})
    assert received == [(value, {"year": "2025"}, {"person": value, "fiscal_year": 2025})]


async def test_secret_header_is_sent_but_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    monkeypatch.setenv("TAX_TOKEN", "tok-very-secret")
    headers: list[str] = []

    async def guarded(request: web.Request) -> web.Response:
        headers.append(request.headers.get("Authorization", ""))
        return web.json_response({"error": "nope"}, status=403)

    app = web.Application()
    app.router.add_get("/x/{id}", guarded)
    async with running_app(app) as base_url:
        toml = _toml(base_url, backend='headers = { Authorization = "Bearer ${TAX_TOKEN}" }')
        async with serving(_custom(tmp_path, toml)) as served:
            refusal = await served.refuse("GetIncome", {"national_id": "1", "year": 2025})
    assert headers == ["Bearer tok-very-secret"]
    assert refusal.code is grpc.StatusCode.UNAVAILABLE
    assert "credentials" in refusal.details
    text = json.dumps([r.getMessage() for r in caplog.records]) + refusal.details
    assert "tok-very-secret" not in text


@pytest.mark.parametrize("value", ["..", "."])
async def test_a_path_value_cannot_leave_its_segment(tmp_path: Path, value: str) -> None:
    # "/x/.." would reach "/" on the legacy host (URLs drop dot segments): refused instead.
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"tin": "1", "total": "1"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    async with running_app(app) as base_url:
        path = _custom(tmp_path, _toml(base_url, path="/x/{national_id}/income"))
        async with serving(path) as served:
            refusal = await served.refuse("GetIncome", {"national_id": value, "year": 2025})
            assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
            assert refusal.fault is Fault.CLIENT_INVALID_REQUEST
    assert hits == []
