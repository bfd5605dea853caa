"""The OCSP responder over real HTTP on loopback, and the OCSP client against it."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ca import CertificateAuthority
from registry.ocsp_server import ocsp_app, respond
from ruta.ids import MemberId
from ruta.pki.certs import CertificateKind, make_csr
from ruta.pki.errors import CertificateRevokedError, OcspInvalidError, Reason
from ruta.pki.keys import FileSigner, generate_ec_key
from ruta.pki.ocsp import (
    MAX_OCSP_REQUEST_BYTES,
    CertStatus,
    OcspClient,
    OcspFetchError,
    build_ocsp_request,
    check_ocsp_response,
)
from ruta.pki.signature import MessageVerifier, sign_message
from ruta.pki.testing import TestPki
from tests.conftest import free_port

POP = MemberId.parse("LAC/GOV/POP")
HOUR = datetime.timedelta(hours=1)


@dataclass
class Responder:
    ca: CertificateAuthority
    url: str
    hits: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def issue(self) -> tuple[x509.Certificate, FileSigner]:
        key = generate_ec_key()
        cert = self.ca.issue(make_csr(key, "x"), CertificateKind.SIGN, member=POP)
        return cert, FileSigner(key)


async def _start(responder: Responder, port: int) -> None:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        responder.hits.append(request.method)
        return await handler(request)

    app = ocsp_app(responder.ca)
    app.middlewares.append(count)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    responder.runner = runner


@pytest.fixture
async def responder(tmp_path: Path) -> AsyncIterator[Responder]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/ocsp"
    ca = CertificateAuthority.initialise(tmp_path / "ca", common_name="OCSP CA", ocsp_url=url)
    running = Responder(ca, url)
    await _start(running, port)
    try:
        yield running
    finally:
        if running.runner is not None:
            await running.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> ocsp.OCSPResponse:
    async with http.post(url, data=body, headers={"Content-Type": "application/ocsp-request"}) as r:
        assert r.status == 200
        assert r.content_type == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(await r.read())


async def test_good_revoked_unknown_over_post_and_get(
    responder: Responder, session: aiohttp.ClientSession
) -> None:
    ca = responder.ca
    cert, _ = responder.issue()
    now = datetime.datetime.now(datetime.UTC)
    request = build_ocsp_request(cert, ca.certificate)
    good = await _post(session, responder.url, request)
    status = check_ocsp_response(
        good.public_bytes(serialization.Encoding.DER), cert, ca.certificate, at=now
    )
    assert status.status is CertStatus.GOOD
    assert status.responder == ca.ocsp_certificate

    ca.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
    encoded = quote(base64.b64encode(request).decode(), safe="")
    async with session.get(f"{responder.url}/{encoded}") as reply:
        revoked_der = await reply.read()
    revoked = check_ocsp_response(revoked_der, cert, ca.certificate, at=now)
    assert revoked.status is CertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert revoked.revoked_at_or_before(now + HOUR)

    # A certificate this CA never issued (same issuer key, unknown serial).
    stranger = TestPki(ca.directory.parent / "stranger")
    foreign = stranger.sign(POP).certificate
    unknown_request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            good.issuer_name_hash, good.issuer_key_hash, foreign.serial_number, good.hash_algorithm
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    unknown = await _post(session, responder.url, unknown_request)
    assert unknown.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    # A certificate of another CA: the responder is not authorised for it.
    other = await _post(
        session, responder.url, build_ocsp_request(foreign, stranger.ca.certificate)
    )
    assert other.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_nonce_is_echoed(responder: Responder, session: aiohttp.ClientSession) -> None:
    cert, _ = responder.issue()
    nonce = b"0123456789abcdef"
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, responder.ca.certificate, hashes.SHA1())
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = await _post(session, responder.url, request)
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"\x30" + b"\x00" * (MAX_OCSP_REQUEST_BYTES + 10)]
)
async def test_malformed_and_oversized_requests(
    responder: Responder, session: aiohttp.ClientSession, body: bytes
) -> None:
    answer = await _post(session, responder.url, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("path", ["%%%", "not-base64!", "A" * 7000])
async def test_malformed_get(
    responder: Responder, session: aiohttp.ClientSession, path: str
) -> None:
    async with session.get(f"{responder.url}/{path}") as reply:
        der = await reply.read()
    answer = ocsp.load_der_ocsp_response(der)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.fixture(scope="module")
def quiet_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.initialise(
        tmp_path_factory.mktemp("ca") / "ca", common_name="x", ocsp_url="http://x/"
    )


def test_respond_never_raises_for_bad_bytes(quiet_ca: CertificateAuthority) -> None:
    for body in (b"", b"\x30\x00", b"\x30\x80" * 50, bytes(range(256))):
        status = ocsp.load_der_ocsp_response(respond(quiet_ca, body)).response_status
        assert status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=600))
def test_respond_is_total(quiet_ca: CertificateAuthority, body: bytes) -> None:
    answer = ocsp.load_der_ocsp_response(respond(quiet_ca, body))
    assert answer.response_status in {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }


async def test_client_caches_refreshes_and_falls_back(responder: Responder) -> None:
    cert, _ = responder.issue()
    clock = [datetime.datetime.now(datetime.UTC)]
    async with OcspClient(clock=lambda: clock[0]) as client:
        first = await client.response_for(cert, responder.ca.certificate)
        again = await client.response_for(cert, responder.ca.certificate)
        assert first == again
        assert responder.hits == ["POST"]
        responder.ca.revoke(cert.serial_number)
        # Still within the refresh interval: the cached (good) answer.
        assert (await client.status(cert, responder.ca.certificate)).status is CertStatus.GOOD
        # Past the refresh interval (half the freshness): fetched again, now revoked.
        clock[0] += datetime.timedelta(minutes=31)
        status = await client.status(cert, responder.ca.certificate)
        assert status.status is CertStatus.REVOKED
        assert responder.hits == ["POST", "POST"]


async def test_client_when_responder_is_down(responder: Responder) -> None:
    cert, _ = responder.issue()
    async with OcspClient() as client:
        await client.response_for(cert, responder.ca.certificate)
        assert responder.runner is not None
        await responder.runner.cleanup()
        responder.runner = None
        # Cached and fresh: still served.
        assert await client.response_for(cert, responder.ca.certificate)
        other, _ = responder.issue()
        with pytest.raises(OcspFetchError):
            await client.response_for(other, responder.ca.certificate)


async def test_client_checks_what_it_fetches(responder: Responder, tmp_path: Path) -> None:
    # A certificate whose AIA names this responder, but issued by another CA with the same URL:
    # the responder answers "unauthorized" and the client refuses it.
    stranger = TestPki(tmp_path / "stranger", ocsp_url=responder.url)
    foreign = stranger.sign(POP).certificate
    async with OcspClient() as client:
        with pytest.raises(OcspInvalidError) as info:
            await client.response_for(foreign, stranger.ca.certificate)
    assert info.value.reason is Reason.OCSP_NOT_SUCCESSFUL


async def test_signed_then_revoked_still_verifies(responder: Responder) -> None:
    """End to end with the real responder: a staple from before revocation keeps the signature
    valid; a staple fetched after revocation makes a new signature fail."""
    ca = responder.ca
    cert, signer = responder.issue()
    header = b"\x0a\x04test"
    verifier = MessageVerifier([ca.trust_anchor])
    async with OcspClient(refresh_after=datetime.timedelta(0)) as client:
        signed_at = datetime.datetime.now(datetime.UTC)
        staple = await client.response_for(cert, ca.certificate)
        before = sign_message(header, signer=signer, certificate=cert, ocsp_response=staple)
        ca.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
        after_staple = await client.response_for(cert, ca.certificate)
        after = sign_message(header, signer=signer, certificate=cert, ocsp_response=after_staple)
    verifier.verify(header, before, claimed_member=POP, signed_at=signed_at)
    with pytest.raises(CertificateRevokedError):
        verifier.verify(
            header, after, claimed_member=POP, signed_at=datetime.datetime.now(datetime.UTC)
        )
