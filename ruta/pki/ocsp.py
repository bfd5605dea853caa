"""OCSP (RFC 6960): building responses, checking them, and a caching client.

A security server fetches the OCSP response for each of its own certificates and staples it to
what it signs; a verifier checks the stapled response *at signing time*
(docs/adr/0004-trust-ca-files-and-signing-time.md). The registry's responder builds its answers
with :func:`build_ocsp_response`.

A response is accepted when it parses within :data:`MAX_OCSP_RESPONSE_BYTES`, is successful, has
exactly one single response for the certificate in question, is signed either by the issuing CA
itself, by a delegated responder certificate it carries that the issuer issued with the
OCSPSigning EKU, or by a certificate in ``trusted_responders``; and its ``thisUpdate`` lies within
``freshness`` before the time of interest (and not after it beyond :data:`MAX_CLOCK_SKEW`).
Anything else raises :class:`~ruta.pki.errors.OcspInvalidError` with a specific reason.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ruta.faults import Fault
from ruta.http_body import read_bounded
from ruta.memo import memo_by_identity
from ruta.pki.certs import fingerprint
from ruta.pki.errors import OcspInvalidError, PkiError, Reason
from ruta.pki.keys import PrivateKey

# Asked on every exchange for the same few certificates (ours and our peers'); hashing a
# certificate object is cheaper than digesting its DER again.
# Remembered per certificate object (hashing a certificate for an lru_cache costs more than
# the dict lookup saves: ruta.memo).
_cache_key = memo_by_identity(fingerprint, maxsize=1024)

__all__ = [
    "DEFAULT_OCSP_FRESHNESS",
    "MAX_CLOCK_SKEW",
    "MAX_OCSP_REQUEST_BYTES",
    "MAX_OCSP_RESPONSE_BYTES",
    "CertId",
    "CertStatus",
    "OcspClient",
    "OcspFetchError",
    "OcspStatus",
    "authenticate_ocsp_response",
    "build_ocsp_request",
    "build_ocsp_response",
    "cert_id",
    "check_ocsp_freshness",
    "check_ocsp_response",
    "ocsp_url_of",
    "unsuccessful_ocsp_response",
]

#: X-Road's default: an OCSP response older than this (at the time of interest) is refused.
DEFAULT_OCSP_FRESHNESS: Final = datetime.timedelta(seconds=3600)
#: How far in the future a response's thisUpdate may lie (responder clocks differ a little).
MAX_CLOCK_SKEW: Final = datetime.timedelta(minutes=5)
#: Largest OCSP response accepted (stapled or fetched); ours are about 1 KiB with the responder
#: certificate.
MAX_OCSP_RESPONSE_BYTES: Final = 16 * 1024
#: Largest OCSP request a responder reads (one certificate id plus a nonce is ~100 bytes).
MAX_OCSP_REQUEST_BYTES: Final = 4 * 1024
_DER: Final = serialization.Encoding.DER
#: How many fetched responses an :class:`OcspClient` keeps.
MAX_OCSP_CACHE_ENTRIES: Final = 1024


class CertStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


_TO_OCSP: Final = {
    CertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}
_FROM_OCSP: Final = {v: k for k, v in _TO_OCSP.items()}


@dataclass(frozen=True, slots=True)
class CertId:
    """An OCSP CertID: which certificate of which issuer, under which hash."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    hash_algorithm: hashes.HashAlgorithm

    def matches(self, other: CertId) -> bool:
        return (
            self.serial_number == other.serial_number
            and self.issuer_name_hash == other.issuer_name_hash
            and self.issuer_key_hash == other.issuer_key_hash
            and self.hash_algorithm.name == other.hash_algorithm.name
        )


@dataclass(frozen=True, slots=True)
class OcspStatus:
    """What a checked OCSP response says about one certificate."""

    status: CertStatus
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    produced_at: datetime.datetime
    revocation_time: datetime.datetime | None
    revocation_reason: x509.ReasonFlags | None
    responder: x509.Certificate

    def revoked_at_or_before(self, at: datetime.datetime) -> bool:
        """True when this response says the certificate was revoked at or before ``at``."""
        return (
            self.status is CertStatus.REVOKED
            and self.revocation_time is not None
            and self.revocation_time <= at
        )


class OcspFetchError(PkiError):
    """The OCSP responder could not be reached or gave no usable answer."""

    default_fault = Fault.SERVER_CONSUMER_NETWORK_ERROR


def cert_id(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> CertId:
    """The CertID of ``cert`` (default hash SHA-1, as RFC 6960 clients and OpenSSL send)."""
    algorithm = hash_algorithm or hashes.SHA1()  # noqa: S303 - the CertID hash, not a signature
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return CertId(
        request.issuer_name_hash, request.issuer_key_hash, request.serial_number, algorithm
    )


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSP request for ``cert`` (SHA-1 CertID, no nonce: responses are cached)."""
    algorithm = hashes.SHA1()  # noqa: S303 - the CertID hash, not a signature
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return request.public_bytes(_DER)


def build_ocsp_response(
    certificate_id: CertId,
    *,
    status: CertStatus,
    responder: x509.Certificate,
    responder_key: PrivateKey,
    this_update: datetime.datetime,
    next_update: datetime.datetime | None = None,
    revocation_time: datetime.datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign a successful DER OCSP response for one certificate.

    The responder is identified by key hash and its certificate is included, so a verifier that
    knows only the issuing CA can check a delegated responder. ``nonce`` is echoed when the
    request carried one.
    """
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=certificate_id.issuer_name_hash,
            issuer_key_hash=certificate_id.issuer_key_hash,
            serial_number=certificate_id.serial_number,
            algorithm=certificate_id.hash_algorithm,
            cert_status=_TO_OCSP[status],
            this_update=this_update,
            next_update=next_update,
            revocation_time=revocation_time if status is CertStatus.REVOKED else None,
            revocation_reason=revocation_reason if status is CertStatus.REVOKED else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
        .certificates([responder])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    algorithm = None if isinstance(responder_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(responder_key, algorithm).public_bytes(_DER)


def unsuccessful_ocsp_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response (malformedRequest, internalError, unauthorized ...)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(_DER)


def _invalid(reason: Reason, text: str) -> OcspInvalidError:
    return OcspInvalidError(text, reason=reason)


def _key_hash(cert: x509.Certificate) -> bytes:
    # RFC 6960 ResponderID byKey: SHA-1 of the subjectPublicKey bits, which is exactly RFC 5280's
    # method-1 key identifier.
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _signed_by(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_key_hash is not None:
        return response.responder_key_hash == _key_hash(cert)
    return response.responder_name == cert.subject


def _verify_response_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, PKCS1v15(), algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(response.signature, response.tbs_response_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _is_delegated_responder(
    candidate: x509.Certificate, issuer: x509.Certificate, at: datetime.datetime
) -> bool:
    try:
        candidate.verify_directly_issued_by(issuer)
        eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        ExtendedKeyUsageOID.OCSP_SIGNING in eku
        and candidate.not_valid_before_utc <= at <= candidate.not_valid_after_utc
    )


def _responder_of(
    response: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    trusted_responders: Sequence[x509.Certificate],
    at: datetime.datetime,
) -> x509.Certificate:
    if _signed_by(response, issuer):
        return issuer
    for pinned in trusted_responders:
        if _signed_by(response, pinned):
            return pinned
    for carried in response.certificates:
        if _signed_by(response, carried) and _is_delegated_responder(carried, issuer, at):
            return carried
    raise _invalid(
        Reason.OCSP_UNTRUSTED_RESPONDER,
        "OCSP response is not signed by the certificate's issuer or a responder it authorised",
    )


def authenticate_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    trusted_responders: Sequence[x509.Certificate] = (),
) -> OcspStatus:
    """The time-independent half of :func:`check_ocsp_response`: parse, match the certificate,
    authenticate the responder and the signature. The result may be cached per DER; pair it
    with :func:`check_ocsp_freshness` for each time of interest. A delegated responder's
    certificate must be valid when the response was produced."""
    if not der:
        raise _invalid(Reason.OCSP_MISSING, "no OCSP response was given")
    if len(der) > MAX_OCSP_RESPONSE_BYTES:
        raise _invalid(
            Reason.OCSP_TOO_LARGE, f"OCSP response is larger than {MAX_OCSP_RESPONSE_BYTES} bytes"
        )
    try:
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _invalid(
                Reason.OCSP_NOT_SUCCESSFUL,
                f"OCSP responder answered {response.response_status.name.lower()}",
            )
        singles = list(response.responses)
        wanted = cert_id(cert, issuer, singles[0].hash_algorithm if singles else None)
        matching = [
            s
            for s in singles
            if wanted.matches(
                CertId(s.issuer_name_hash, s.issuer_key_hash, s.serial_number, s.hash_algorithm)
            )
        ]
        produced_at = response.produced_at_utc
        if len(matching) != 1:
            raise _invalid(
                Reason.OCSP_WRONG_CERTIFICATE, "OCSP response does not answer for this certificate"
            )
        single = matching[0]
        responder = _responder_of(response, issuer, trusted_responders, produced_at)
        if not _verify_response_signature(response, responder):
            raise _invalid(Reason.OCSP_BAD_SIGNATURE, "OCSP response signature does not verify")
        status = _FROM_OCSP[single.certificate_status]
        result = OcspStatus(
            status=status,
            this_update=single.this_update_utc,
            next_update=single.next_update_utc,
            produced_at=produced_at,
            revocation_time=single.revocation_time_utc,
            revocation_reason=single.revocation_reason,
            responder=responder,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        raise _invalid(Reason.OCSP_MALFORMED, "OCSP response does not parse") from exc
    if status is CertStatus.UNKNOWN:
        raise _invalid(Reason.OCSP_UNKNOWN_STATUS, "OCSP responder does not know the certificate")
    return result


def check_ocsp_freshness(
    status: OcspStatus,
    *,
    at: datetime.datetime,
    freshness: datetime.timedelta = DEFAULT_OCSP_FRESHNESS,
    clock_skew: datetime.timedelta = MAX_CLOCK_SKEW,
) -> None:
    """Refuse a response not fresh at ``at``: ``thisUpdate`` more than ``freshness`` before
    ``at`` or past ``nextUpdate`` (stale), or more than ``clock_skew`` after ``at``."""
    if status.this_update > at + clock_skew:
        raise _invalid(Reason.OCSP_FROM_FUTURE, "OCSP response is dated after the time checked")
    if at - status.this_update > freshness or (
        status.next_update is not None and status.next_update < at
    ):
        raise _invalid(
            Reason.OCSP_STALE,
            f"OCSP response is older than the freshness bound ({int(freshness.total_seconds())} s)",
        )


def check_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime.datetime,
    freshness: datetime.timedelta = DEFAULT_OCSP_FRESHNESS,
    trusted_responders: Sequence[x509.Certificate] = (),
) -> OcspStatus:
    """Check a DER OCSP response for ``cert`` (issued by ``issuer``) as of time ``at``.

    Returns the status it states (good, or revoked with time and reason) and never raises for a
    revoked certificate: the caller compares the revocation time with its time of interest
    (:meth:`OcspStatus.revoked_at_or_before`). Raises :class:`OcspInvalidError` (side-neutral)
    with a specific :class:`~ruta.pki.errors.Reason` for a
    missing, oversized, malformed, unsuccessful, foreign, untrusted, badly signed, stale,
    future-dated or ``unknown`` response.
    """
    status = authenticate_ocsp_response(der, cert, issuer, trusted_responders=trusted_responders)
    check_ocsp_freshness(status, at=at, freshness=freshness)
    return status


def ocsp_url_of(cert: x509.Certificate) -> str | None:
    """The first OCSP URL in the certificate's AIA extension, or ``None``."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for description in aia:
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    return None


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class _Cached:
    der: bytes
    status: OcspStatus


@dataclass(slots=True)
class _KeyLock:
    """A certificate's fetch lock and how many callers hold or await it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class OcspClient:
    """Fetches and caches OCSP responses for certificates, from their AIA OCSP URL (HTTP POST).

    A cached response is reused until it is ``refresh_after`` old (default half of
    ``freshness``); after that a new one is fetched, and if the responder cannot be reached or
    its answer does not check, the cached one is still returned while it is within
    ``freshness``. Use as an async context
    manager, or call :meth:`close`; a ``session`` passed in is not closed.
    """

    def __init__(
        self,
        *,
        freshness: datetime.timedelta = DEFAULT_OCSP_FRESHNESS,
        refresh_after: datetime.timedelta | None = None,
        trusted_responders: Sequence[x509.Certificate] = (),
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        max_entries: int = MAX_OCSP_CACHE_ENTRIES,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._freshness = freshness
        self._refresh_after = refresh_after if refresh_after is not None else freshness / 2
        self._trusted = tuple(trusted_responders)
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        # One lock per certificate being fetched, so concurrent callers share one fetch; an
        # entry lives only while some caller holds or awaits it, so the map is bounded by the
        # callers in flight, whatever the fetches' outcomes.
        self._locks: dict[str, _KeyLock] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session this client opened (not one it was given)."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def response_for(self, cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
        """A checked DER OCSP response for ``cert``, from the cache or fetched now.

        Raises :class:`OcspFetchError` when no fresh response can be had (responder down, no AIA
        URL, HTTP error) and :class:`OcspInvalidError` when the responder's answer does not check.
        """
        return (await self._entry(cert, issuer)).der

    async def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> OcspStatus:
        """The checked status of ``cert`` (same caching and errors as :meth:`response_for`)."""
        return (await self._entry(cert, issuer)).status

    def cached_response(self, cert: x509.Certificate) -> bytes | None:
        """What :meth:`response_for` returns when the cache holds an answer for ``cert`` not
        yet due for refresh; otherwise None (then await :meth:`response_for`). No coroutine:
        every exchange asks."""
        cached = self._fresh(_cache_key(cert))
        return None if cached is None else cached.der

    def cached_status(self, cert: x509.Certificate) -> OcspStatus | None:
        """Like :meth:`cached_response`, for :meth:`status`."""
        cached = self._fresh(_cache_key(cert))
        return None if cached is None else cached.status

    def _fresh(self, key: str) -> _Cached | None:
        # The common case, a cached answer not yet due for refresh, needs no lock (every call of
        # an exchange asks; one event loop, nothing awaited between the check and the return).
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached.status.this_update < self._refresh_after:
            self._cache.move_to_end(key)
            return cached
        return None

    async def _entry(self, cert: x509.Certificate, issuer: x509.Certificate) -> _Cached:
        key = _cache_key(cert)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _KeyLock()
        held.users += 1
        try:
            async with held.lock:
                return await self._refresh(key, cert, issuer)
        finally:
            held.users -= 1
            if held.users == 0:
                del self._locks[key]

    async def _refresh(self, key: str, cert: x509.Certificate, issuer: x509.Certificate) -> _Cached:
        """Under ``key``'s lock: the cached answer if another caller just refreshed it, else a
        newly fetched and checked one (or the cached one while still fresh, if that fails)."""
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached.status.this_update < self._refresh_after:
            self._cache.move_to_end(key)
            return cached
        try:
            der = await self._fetch(cert, issuer)
            status = check_ocsp_response(
                der,
                cert,
                issuer,
                at=self._clock(),
                freshness=self._freshness,
                trusted_responders=self._trusted,
            )
        except (OcspFetchError, OcspInvalidError):
            # A responder that is down or answers tryLater: keep using a still-fresh answer.
            if cached is not None and now - cached.status.this_update <= self._freshness:
                return cached
            raise
        entry = _Cached(der, status)
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry

    async def _fetch(self, cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
        url = ocsp_url_of(cert)
        if url is None:
            raise OcspFetchError("certificate names no OCSP responder (no AIA OCSP URL)")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                url,
                data=build_ocsp_request(cert, issuer),
                headers={"Content-Type": "application/ocsp-request"},
                timeout=self._timeout,
            ) as reply:
                if reply.status != 200:
                    raise OcspFetchError(f"OCSP responder answered HTTP {reply.status}")
                body = await read_bounded(reply.content, MAX_OCSP_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OcspFetchError(
                f"OCSP responder could not be reached ({type(exc).__name__})"
            ) from exc
        if body is None:
            raise OcspInvalidError(
                f"OCSP response is larger than {MAX_OCSP_RESPONSE_BYTES} bytes",
                reason=Reason.OCSP_TOO_LARGE,
            )
        return body
