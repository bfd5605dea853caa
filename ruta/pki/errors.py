"""Errors of the trust library: one root, each class carrying its stable fault code.

Verification failures also carry a :class:`Reason`: a stable, finer-grained name of what exactly
failed (expired, unknown CA, stale OCSP ...). The fault code is what goes on the wire; the reason
is for logs, tests and operators, so that every distinct failure is distinguishable without
inventing a wire code for each.
"""

from __future__ import annotations

import enum

from ruta.faults import Fault, RutaError

__all__ = [
    "CertificateInvalidError",
    "CertificateRevokedError",
    "InvalidSignatureError",
    "KeyFileError",
    "MalformedCertificateError",
    "OcspInvalidError",
    "PkiError",
    "Reason",
    "SignatureError",
    "SignerMismatchError",
]


class Reason(enum.StrEnum):
    """What exactly made a verification fail. Values are stable: never rename one."""

    # The signature value itself.
    SIGNATURE_MISMATCH = "signature_mismatch"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    MALFORMED_SIGNATURE = "malformed_signature"
    #: A batch signature's path has an impossible shape (size, index or proof length).
    MALFORMED_BATCH = "malformed_batch"
    # The signer certificate and its chain.
    MALFORMED_CERTIFICATE = "malformed_certificate"
    CERTIFICATE_TOO_LARGE = "certificate_too_large"
    CHAIN_TOO_LONG = "chain_too_long"
    UNKNOWN_ISSUER = "unknown_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_KEY_USAGE = "wrong_key_usage"
    WRONG_KEY_TYPE = "wrong_key_type"
    NO_MEMBER_IDENTIFIER = "no_member_identifier"
    SIGNER_NOT_CLAIMED_MEMBER = "signer_not_claimed_member"
    REVOKED = "revoked"
    # The stapled OCSP response.
    OCSP_MISSING = "ocsp_missing"
    OCSP_MALFORMED = "ocsp_malformed"
    OCSP_TOO_LARGE = "ocsp_too_large"
    OCSP_NOT_SUCCESSFUL = "ocsp_not_successful"
    OCSP_WRONG_CERTIFICATE = "ocsp_wrong_certificate"
    OCSP_UNTRUSTED_RESPONDER = "ocsp_untrusted_responder"
    OCSP_BAD_SIGNATURE = "ocsp_bad_signature"
    OCSP_STALE = "ocsp_stale"
    OCSP_FROM_FUTURE = "ocsp_from_future"
    OCSP_UNKNOWN_STATUS = "ocsp_unknown_status"


class PkiError(RutaError):
    """Root of the trust library's errors (bad key files, certificates, CSRs, OCSP data)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class KeyFileError(PkiError):
    """A private key file is missing, unreadable, of the wrong type or wrongly protected."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


class MalformedCertificateError(PkiError):
    """Bytes that should hold a certificate, CSR or chain do not parse, or are too large."""


class SignatureError(PkiError):
    """A message signature does not verify. ``reason`` names exactly why.

    Side-neutral: the class says what failed (signature, signer, certificate, revocation, OCSP)
    and the security server that verified maps it to its own fault code at its boundary. The
    fault it carries itself (``client.invalid_request``) is for callers outside the exchange path.
    """

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidSignatureError(SignatureError):
    """The signature value does not match the header bytes and the certificate's key."""


class SignerMismatchError(SignatureError):
    """The certificate is valid but names another member than the one claimed as signer."""


class CertificateInvalidError(SignatureError):
    """The signer certificate is malformed, outside its validity, has the wrong profile, or does
    not chain to a trust anchor."""


class CertificateRevokedError(SignatureError):
    """The signer certificate was revoked at or before signing time."""


class OcspInvalidError(SignatureError):
    """The OCSP response is missing, malformed, stale, for another certificate, or not signed by
    a responder trusted for the certificate's issuer."""
