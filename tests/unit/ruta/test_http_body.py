"""ruta.http_body.read_bounded against a real aiohttp server that sends its body in pieces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ruta.http_body import read_bounded

_PIECE = b"x" * 1000


async def _in_pieces(request: web.Request) -> web.StreamResponse:
    pieces = int(request.query["pieces"])
    response = web.StreamResponse()
    response.content_length = pieces * len(_PIECE)
    await response.prepare(request)
    for _ in range(pieces):
        await response.write(_PIECE)
        await asyncio.sleep(0.02)  # the next piece arrives after the reader woke up
    await response.write_eof()
    return response


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", _in_pieces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("pieces", "limit", "expected"),
    [
        (3, 3000, _PIECE * 3),  # exactly at the bound, in three pieces
        (3, 10_000, _PIECE * 3),
        (3, 2999, None),  # one byte over
        (1, 0, None),
        (0, 0, b""),
    ],
)
async def test_reads_every_piece_up_to_the_bound(
    base_url: str, pieces: int, limit: int, expected: bytes | None
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url, params={"pieces": str(pieces)}) as response,
    ):
        assert await read_bounded(response.content, limit) == expected
