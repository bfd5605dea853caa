"""OCSP checks and the client's refusals against a real (tiny) HTTP server on loopback."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ruta.pki.errors import OcspInvalidError, Reason
from ruta.pki.ocsp import (
    MAX_OCSP_RESPONSE_BYTES,
    CertStatus,
    OcspClient,
    OcspFetchError,
    check_ocsp_response,
    ocsp_url_of,
)
from ruta.pki.testing import TestPki
from tests.conftest import free_port

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def error(request: web.Request) -> web.Response:
        return web.Response(status=503, body=b"busy")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"\x30" * (MAX_OCSP_RESPONSE_BYTES + 100))

    app = web.Application()
    app.router.add_post("/error", error)
    app.router.add_post("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "error", "text"),
    [
        ("error", OcspFetchError, "HTTP 503"),
        ("huge", OcspInvalidError, "larger"),
    ],
)
async def test_client_refusals(
    tmp_path: Path, http_port: int, path: str, error: type[Exception], text: str
) -> None:
    pki = TestPki(tmp_path, ocsp_url=f"http://127.0.0.1:{http_port}/{path}")
    cert = pki.sign("LAC/GOV/POP").certificate
    async with OcspClient() as client:
        with pytest.raises(error, match=text):
            await client.response_for(cert, pki.ca.certificate)


async def test_client_unreachable_responder(tmp_path: Path) -> None:
    pki = TestPki(tmp_path, ocsp_url=f"http://127.0.0.1:{free_port()}/ocsp")
    cert = pki.sign("LAC/GOV/POP").certificate
    async with OcspClient(timeout=5) as client:
        with pytest.raises(OcspFetchError, match="could not be reached"):
            await client.response_for(cert, pki.ca.certificate)


def test_ocsp_url_and_next_update(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    cred = pki.sign("LAC/GOV/POP")
    assert ocsp_url_of(cred.certificate) == pki.ocsp_url
    assert ocsp_url_of(pki.ocsp_responder.certificate) is None
    der = pki.ocsp_response(cred.certificate, this_update=NOW)
    status = check_ocsp_response(der, cred.certificate, pki.ca.certificate, at=NOW)
    assert status.status is CertStatus.GOOD
    assert not status.revoked_at_or_before(NOW)
    # Fresh at NOW + 59 min, stale at NOW + 61 min (default freshness 3600 s).
    check_ocsp_response(
        der, cred.certificate, pki.ca.certificate, at=NOW + datetime.timedelta(minutes=59)
    )
    with pytest.raises(OcspInvalidError) as info:
        check_ocsp_response(
            der, cred.certificate, pki.ca.certificate, at=NOW + datetime.timedelta(minutes=61)
        )
    assert info.value.reason is Reason.OCSP_STALE
    # A shorter freshness bound is honoured.
    with pytest.raises(OcspInvalidError):
        check_ocsp_response(
            der,
            cred.certificate,
            pki.ca.certificate,
            at=NOW + datetime.timedelta(minutes=2),
            freshness=datetime.timedelta(minutes=1),
        )
