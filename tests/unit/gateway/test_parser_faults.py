"""What aiohttp's HTTP parser refuses, before any route, is still the gateway's JSON fault
(DESIGN.md "Faults"): a raw socket sends what no HTTP client would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.app import FaultingAppRunner


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = FaultingAppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` and read until the server closes the connection (as it does after
    every refusal: the read would time out otherwise)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("name", "request_bytes", "fault"),
    [
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "client.invalid_request",
        ),
        ("bad request line", b"GET / HTTP/9.9.9\r\nHost: x\r\n\r\n", "client.invalid_request"),
        (
            "header line over aiohttp's bound",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
            "client.invalid_request",
        ),
        (
            "header without a colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            "client.invalid_request",
        ),
        (
            "bad chunk size",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "client.invalid_request",
        ),
    ],
)
async def test_a_request_aiohttp_cannot_parse_gets_a_json_fault(
    port: int, name: str, request_bytes: bytes, fault: str
) -> None:
    status, headers, body = await _raw(port, request_bytes)
    assert status == 400, (name, body)
    assert headers["content-type"].startswith("application/json"), (name, headers)
    refusal = json.loads(body)
    assert set(refusal) == {"type", "message", "detail"}, refusal
    assert refusal["type"] == fault, (name, refusal)
    assert refusal["message"].startswith("the request is not valid HTTP/1.1"), refusal
    assert "\n" not in refusal["message"], refusal
    assert len(refusal["detail"]) == 36


async def test_a_well_formed_request_is_still_served(port: int) -> None:
    status, _, body = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"ok")
