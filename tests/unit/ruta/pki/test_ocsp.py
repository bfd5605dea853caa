"""OCSP checks and the client's refusals against a real (tiny) HTTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from ruta.ids import MemberId
from ruta.pki.certs import CertificateKind
from ruta.pki.errors import OcspInvalidError, Reason
from ruta.pki.keys import generate_ec_key
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


class _ScriptedClient(OcspClient):
    """A client whose responder is a function: counts fetches, yields to the loop in each."""

    def __init__(self, answer: bytes | None) -> None:
        super().__init__()
        self._answer = answer
        self.fetches = 0
        self.most_locks = 0

    async def _fetch(self, cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
        self.fetches += 1
        self.most_locks = max(self.most_locks, len(self._locks))
        await asyncio.sleep(0.001)
        if self._answer is not None:
            return self._answer
        raise OcspFetchError("OCSP responder could not be reached (test)")


async def test_failing_certificates_leave_no_lock_behind(tmp_path: Path) -> None:
    # A certificate whose status can never be fetched must not leave its lock in the client:
    # the lock map is bounded by the callers in flight, not by every certificate ever asked.
    pki = TestPki(tmp_path)
    key = generate_ec_key()  # one key: only the certificates need to differ
    certs = [
        pki.issue(CertificateKind.SIGN, member=MemberId.parse(f"LAC/GOV/M{n}"), key=key)
        for n in range(40)
    ]
    async with _ScriptedClient(None) as client:

        async def ask(cert: x509.Certificate) -> None:
            with pytest.raises(OcspFetchError):
                await client.status(cert, pki.ca.certificate)

        for _ in range(3):
            # Several callers per certificate at once, then the same again one by one.
            await asyncio.gather(*(ask(c.certificate) for c in certs for _ in range(3)))
            assert client._locks == {}
            for cred in certs:
                await ask(cred.certificate)
            assert client._locks == {}
        assert 0 < client.most_locks <= len(certs)  # one lock per certificate in flight


async def test_concurrent_callers_share_one_fetch_and_release_the_lock(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    cred = pki.sign("LAC/GOV/POP")
    der = pki.ocsp_response(cred.certificate, this_update=datetime.datetime.now(datetime.UTC))
    async with _ScriptedClient(der) as client:
        statuses = await asyncio.gather(
            *(client.status(cred.certificate, pki.ca.certificate) for _ in range(10))
        )
        assert client.fetches == 1
        assert {s.status for s in statuses} == {CertStatus.GOOD}
        assert client._locks == {}
        # A fresh cached answer is returned without the lock at all.
        await client.status(cred.certificate, pki.ca.certificate)
        assert client.fetches == 1
        assert client._locks == {}
