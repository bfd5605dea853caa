"""This server's own identity: its authentication and signing credentials, and signing.

The authentication key and certificate are what the server presents on every TLS link; the
signing key and certificate are the member's, used to sign message headers. Signing staples the
OCSP response for the signing certificate, fetched and cached by :class:`~ruta.pki.ocsp.OcspClient`
from the certificate's AIA URL, so a verifier can check revocation at signing time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ruta.faults import Fault, RutaError
from ruta.ids import MemberId, ServerId
from ruta.pki.certs import fingerprint, load_certificates, member_id_of, server_id_of
from ruta.pki.errors import PkiError
from ruta.pki.keys import FileSigner, Signer
from ruta.pki.ocsp import OcspClient, OcspFetchError
from ruta.pki.signature import MessageSigner
from ruta.v1 import transport_pb2

__all__ = ["IdentityError", "ServerIdentity", "SigningError"]

#: Most certificates read from a certificate file (leaf + intermediates).
MAX_CERTIFICATE_FILE_CHAIN = 8


class IdentityError(RutaError):
    """This server's keys or certificates are unusable (startup refuses to run)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


class SigningError(RutaError):
    """A header could not be signed (for example no fresh OCSP response for the signing cert)."""

    default_fault = Fault.SERVER_CONSUMER_INTERNAL_ERROR


def _read_chain(path: Path, what: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(
            f"the {what} certificate file cannot be read ({exc.strerror})"
        ) from None
    try:
        return load_certificates(data, limit=MAX_CERTIFICATE_FILE_CHAIN)
    except PkiError as exc:
        raise IdentityError(f"the {what} certificate file is invalid: {exc.message}") from None


@functools.lru_cache(maxsize=16)
def _issuer_of(
    certificate: x509.Certificate,
    chain: tuple[x509.Certificate, ...],
    anchors: tuple[x509.Certificate, ...],
) -> x509.Certificate | None:
    # Asked on every signature; names compared once per configuration's anchors.
    for candidate in (*chain, *anchors):
        if candidate.subject == certificate.issuer:
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What this server is and how it signs. Build with :meth:`from_files`."""

    server: ServerId
    auth_certificate: x509.Certificate
    auth_fingerprint: str
    signer: Signer
    signing_certificate: x509.Certificate
    #: Intermediates above the signing certificate (may be empty).
    signing_chain: tuple[x509.Certificate, ...]
    signing_fingerprint: str
    ocsp: OcspClient
    #: Signs with ``signer`` and ``signing_certificate`` (checked to belong together at load).
    message_signer: MessageSigner

    @property
    def member(self) -> MemberId:
        return self.server.member

    @classmethod
    def from_files(
        cls,
        *,
        server: ServerId,
        auth_cert: Path,
        signing_key: Path,
        signing_cert: Path,
        ocsp: OcspClient,
    ) -> ServerIdentity:
        """Load and check the certificates: the auth certificate must name ``server`` and the
        signing certificate its member. Raises :class:`IdentityError` (never a path in the
        text)."""
        auth = _read_chain(auth_cert, "authentication")[0]
        signing = _read_chain(signing_cert, "signing")
        try:
            named_server = server_id_of(auth)
            named_member = member_id_of(signing[0])
            signer: Signer = FileSigner.from_file(signing_key)
            message_signer = MessageSigner(signer=signer, certificate=signing[0], chain=signing[1:])
        except PkiError as exc:
            raise IdentityError(f"this server's credentials are invalid: {exc.message}") from None
        if named_server != server:
            raise IdentityError(
                f"the authentication certificate names server {named_server}, not {server}"
            )
        if named_member != server.member:
            raise IdentityError(
                f"the signing certificate names member {named_member}, not {server.member}"
            )
        return cls(
            server=server,
            auth_certificate=auth,
            auth_fingerprint=fingerprint(auth),
            signer=signer,
            signing_certificate=signing[0],
            signing_chain=tuple(signing[1:]),
            signing_fingerprint=fingerprint(signing[0]),
            ocsp=ocsp,
            message_signer=message_signer,
        )

    def _issuer(self, anchors: Sequence[x509.Certificate], fault: Fault) -> x509.Certificate:
        issuer = _issuer_of(self.signing_certificate, self.signing_chain, tuple(anchors))
        if issuer is None:
            raise SigningError(
                "the signing certificate's issuer is neither in its chain nor a trust anchor",
                fault=fault,
            )
        return issuer

    async def staple(self, anchors: Sequence[x509.Certificate], *, fault: Fault) -> bytes:
        """A fresh OCSP response for the signing certificate (cached by the OCSP client).

        Raises :class:`SigningError` with ``fault`` when none can be had (the responder has been
        unreachable for longer than the freshness bound, or answers something unusable).
        """
        issuer = self._issuer(anchors, fault)
        try:
            return await self.ocsp.response_for(self.signing_certificate, issuer)
        except (OcspFetchError, PkiError) as exc:
            raise SigningError(
                f"no fresh OCSP response for this server's signing certificate: {exc.message}",
                fault=fault,
            ) from None

    def sign(self, header_bytes: bytes, *, staple: bytes) -> transport_pb2.Signature:
        """Sign ``header_bytes`` with the member's key, stapling ``staple`` (from :meth:`staple`);
        the key was checked against the certificate when the identity was loaded."""
        # ECDSA P-256 signing takes well under a millisecond: on the loop, no thread hop.
        return self.message_signer.sign(header_bytes, ocsp_response=staple)
