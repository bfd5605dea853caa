"""The registry's OCSP responder over HTTP (RFC 6960 appendix A: GET and POST).

Answers good / revoked / unknown for certificates of one :class:`~registry.ca.CertificateAuthority`,
signed by the CA's dedicated OCSP signing certificate (EKU OCSPSigning), which the response
carries. Every answer reads the CA directory afresh, so a revocation made by another process
(``ruta registry ca revoke``) is reported at once. A request for another CA's certificate gets
``unauthorized``; a malformed or oversized one gets ``malformedRequest`` (HTTP 200, as the RFC
wants); a request nonce is echoed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import logging
from typing import Final
from urllib.parse import unquote, urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import ocsp

from registry.ca import CertificateAuthority
from ruta.faults import RutaError
from ruta.http_body import read_bounded
from ruta.pki.ocsp import (
    MAX_OCSP_REQUEST_BYTES,
    CertId,
    build_ocsp_response,
    cert_id,
    unsuccessful_ocsp_response,
)

__all__ = [
    "MAX_OCSP_GET_PATH_LENGTH",
    "OCSP_RESPONSE_CONTENT_TYPE",
    "add_ocsp_routes",
    "ocsp_app",
    "respond",
]

OCSP_RESPONSE_CONTENT_TYPE: Final = "application/ocsp-response"
#: Longest URL-encoded base64 text of a GET request read (RFC 6960 A.1). Under aiohttp's own
#: request-line limit (8190 bytes, answered with HTTP 400), and enough for any real request.
MAX_OCSP_GET_PATH_LENGTH: Final = 6 * 1024

_log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def respond(
    ca: CertificateAuthority, request_der: bytes, *, now: datetime.datetime | None = None
) -> bytes:
    """The DER OCSP response to one DER OCSP request (blocking: reads the CA directory).

    Never raises for a bad request: malformed or oversized requests get ``malformedRequest``,
    another CA's certificate ``unauthorized``, a failure to read the CA ``internalError``.
    """
    if len(request_der) > MAX_OCSP_REQUEST_BYTES:
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        asked = CertId(
            request.issuer_name_hash,
            request.issuer_key_hash,
            request.serial_number,
            request.hash_algorithm,
        )
        try:
            nonce: bytes | None = request.extensions.get_extension_for_class(
                x509.OCSPNonce
            ).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType):
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    # The issuer hashes of this CA under the request's hash algorithm (any certificate this CA
    # issued will do to compute them).
    ours = cert_id(ca.ocsp_certificate, ca.certificate, asked.hash_algorithm)
    if (ours.issuer_name_hash, ours.issuer_key_hash) != (
        asked.issuer_name_hash,
        asked.issuer_key_hash,
    ):
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    try:
        status, revocation = ca.status(asked.serial_number)
    except RutaError:
        _log.exception("OCSP responder cannot read the CA directory")
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
    return build_ocsp_response(
        asked,
        status=status,
        responder=ca.ocsp_certificate,
        responder_key=ca.ocsp_key,
        this_update=now or _now(),
        revocation_time=revocation.revoked_at if revocation else None,
        revocation_reason=revocation.reason if revocation else None,
        nonce=nonce,
    )


def _answer(der: bytes) -> web.Response:
    return web.Response(
        body=der,
        content_type=OCSP_RESPONSE_CONTENT_TYPE,
        headers={"Cache-Control": "no-cache"},
    )


def _malformed() -> web.Response:
    return _answer(unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))


def add_ocsp_routes(app: web.Application, ca: CertificateAuthority, *, path: str = "/") -> None:
    """Serve OCSP for ``ca`` on ``app`` at ``path``: POST to ``path``, GET to
    ``path/<url-encoded base64 DER request>``."""
    base = "/" + path.strip("/")
    prefix = base.rstrip("/") + "/"

    async def post(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_OCSP_REQUEST_BYTES:
            return _malformed()
        body = await read_bounded(request.content, MAX_OCSP_REQUEST_BYTES)
        if body is None:
            return _malformed()
        return _answer(await asyncio.to_thread(respond, ca, body))

    async def get(request: web.Request) -> web.Response:
        raw = request.raw_path.split("?", 1)[0]
        encoded = raw[len(prefix) :] if raw.startswith(prefix) else ""
        if not encoded or len(encoded) > MAX_OCSP_GET_PATH_LENGTH:
            return _malformed()
        text = unquote(encoded)
        try:
            der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            return _malformed()
        return _answer(await asyncio.to_thread(respond, ca, der))

    app.router.add_post(base, post)
    if base != "/":
        app.router.add_post(prefix, post)
    app.router.add_get(prefix + "{request:.+}", get)


def ocsp_app(ca: CertificateAuthority, *, path: str | None = None) -> web.Application:
    """A standalone aiohttp application answering OCSP for ``ca``, at ``path`` (default: the
    path of the CA's OCSP URL, so the URL in issued certificates works as it is)."""
    app = web.Application(client_max_size=MAX_OCSP_REQUEST_BYTES)
    add_ocsp_routes(app, ca, path=path if path is not None else (urlsplit(ca.ocsp_url).path or "/"))
    return app
