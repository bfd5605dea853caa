"""The security server's errors, and who a refusal on the exchange path belongs to.

A fault belongs to the side that refuses (DESIGN.md, Faults). Code below the proxies (headers,
signature checks, transport, identity, message log, witness gate) does not know which side
called it: it raises an error with a side-neutral :class:`Reason`. Each proxy maps
``(side, reason)`` to a :class:`~ruta.faults.Fault` once, at its boundary, with
:func:`fault_for`; a new call site cannot blame the wrong server, because it names no fault.

Refusals a proxy decides itself (a contract, a size limit, a stale message) are
:class:`ProxyError` with the proxy's own fault.
"""

from __future__ import annotations

import enum
from typing import Final

from ruta.faults import Fault, RutaError
from ruta.globalconf.errors import GlobalConfError, OutdatedGlobalConfError
from ruta.pki.errors import (
    CertificateInvalidError,
    CertificateRevokedError,
    OcspInvalidError,
    SignatureError,
    SignerMismatchError,
)
from security_server.log.errors import LogWriteError

__all__ = [
    "ExchangeError",
    "FramesUnsupportedError",
    "HeaderError",
    "IdentityError",
    "MalformedMessageError",
    "ProxyError",
    "Reason",
    "Side",
    "SigningError",
    "TransportError",
    "WitnessUnavailableError",
    "fault_for",
    "reason_of",
]


class Side(enum.StrEnum):
    """The two security servers of an exchange."""

    CONSUMER = "consumer"
    PROVIDER = "provider"


class Reason(enum.StrEnum):
    """Why something below the proxies failed, whichever side called it."""

    #: A message header is malformed or out of bounds.
    MALFORMED_MESSAGE = "malformed_message"
    #: The signature value does not verify.
    INVALID_SIGNATURE = "invalid_signature"
    #: The signer certificate names another member than the one claimed.
    SIGNER_MISMATCH = "signer_mismatch"
    #: The signer certificate is malformed, expired, of the wrong profile or unanchored.
    CERT_INVALID = "cert_invalid"
    #: The signer certificate was revoked at signing time.
    CERT_REVOKED = "cert_revoked"
    #: The stapled OCSP response is missing, stale or not trusted.
    OCSP_INVALID = "ocsp_invalid"
    #: A peer server could not be reached, or is not the server the configuration lists.
    PEER_UNREACHABLE = "peer_unreachable"
    #: A calling peer is not a listed security server.
    PEER_UNKNOWN = "peer_unknown"
    #: A peer's authentication certificate is revoked (or its status is unknown).
    PEER_REVOKED = "peer_revoked"
    #: The configuration in force has expired.
    OUTDATED_GLOBALCONF = "outdated_globalconf"
    #: No usable configuration is held.
    INVALID_GLOBALCONF = "invalid_globalconf"
    #: The message log could not store or read a message.
    LOGGING_FAILED = "logging_failed"
    #: The message log has had no witness cosignature for too long.
    WITNESS_UNAVAILABLE = "witness_unavailable"
    #: This server's own credentials are unusable (no fresh OCSP response for its signing
    #: certificate, no issuer, unreadable authentication key).
    OWN_CREDENTIALS = "own_credentials"


class ExchangeError(RutaError):
    """A side-neutral failure below the proxies; :func:`fault_for` gives its fault for a side.

    Its own ``fault`` is only what an error reaching no proxy would carry.
    """

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


class ProxyError(RutaError):
    """An exchange refused by one of the proxies; the fault says who and why."""

    default_fault = Fault.SERVER_CONSUMER_INTERNAL_ERROR


class HeaderError(RutaError):
    """A caller's call metadata is missing, malformed or out of bounds (a ``client.*`` fault,
    the same on both sides)."""

    default_fault = Fault.CLIENT_INVALID_HEADER


class IdentityError(RutaError):
    """This server's keys or certificates are unusable (startup refuses to run)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


class MalformedMessageError(ExchangeError):
    """A received message header is malformed or out of bounds."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.MALFORMED_MESSAGE)


class TransportError(ExchangeError):
    """A peer server could not be reached, is not the server the configuration lists, or (as
    a caller) is not a listed server or not in good standing."""

    def __init__(self, message: str, *, reason: Reason = Reason.PEER_UNREACHABLE) -> None:
        super().__init__(message, reason=reason)


class FramesUnsupportedError(TransportError):
    """The provider server does not offer ``Transport.ExchangeFrames``."""


class SigningError(ExchangeError):
    """A header could not be signed (for example no fresh OCSP response for the signing cert)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.OWN_CREDENTIALS)


class WitnessUnavailableError(ExchangeError):
    """No cosignature from the witness within the window: exchanges are refused until one comes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.WITNESS_UNAVAILABLE)


_CONSUMER: Final[dict[Reason, Fault]] = {
    Reason.MALFORMED_MESSAGE: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.INVALID_SIGNATURE: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.SIGNER_MISMATCH: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.CERT_INVALID: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.CERT_REVOKED: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.OCSP_INVALID: Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE,
    Reason.PEER_UNREACHABLE: Fault.SERVER_CONSUMER_NETWORK_ERROR,
    Reason.PEER_UNKNOWN: Fault.SERVER_CONSUMER_NETWORK_ERROR,
    Reason.PEER_REVOKED: Fault.SERVER_CONSUMER_NETWORK_ERROR,
    Reason.OUTDATED_GLOBALCONF: Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF,
    Reason.INVALID_GLOBALCONF: Fault.SERVER_CONSUMER_INVALID_GLOBALCONF,
    Reason.LOGGING_FAILED: Fault.SERVER_CONSUMER_LOGGING_FAILED,
    Reason.WITNESS_UNAVAILABLE: Fault.SERVER_CONSUMER_WITNESS_UNAVAILABLE,
    Reason.OWN_CREDENTIALS: Fault.SERVER_CONSUMER_INTERNAL_ERROR,
}
_PROVIDER: Final[dict[Reason, Fault]] = {
    Reason.MALFORMED_MESSAGE: Fault.SERVER_PROVIDER_INVALID_MESSAGE,
    Reason.INVALID_SIGNATURE: Fault.SERVER_PROVIDER_INVALID_SIGNATURE,
    Reason.SIGNER_MISMATCH: Fault.SERVER_PROVIDER_SIGNER_MISMATCH,
    Reason.CERT_INVALID: Fault.SERVER_PROVIDER_CERT_INVALID,
    Reason.CERT_REVOKED: Fault.SERVER_PROVIDER_CERT_REVOKED,
    Reason.OCSP_INVALID: Fault.SERVER_PROVIDER_OCSP_INVALID,
    Reason.PEER_UNREACHABLE: Fault.SERVER_PROVIDER_INTERNAL_ERROR,
    Reason.PEER_UNKNOWN: Fault.SERVER_PROVIDER_ACCESS_DENIED,
    Reason.PEER_REVOKED: Fault.SERVER_PROVIDER_CERT_REVOKED,
    Reason.OUTDATED_GLOBALCONF: Fault.SERVER_PROVIDER_OUTDATED_GLOBALCONF,
    Reason.INVALID_GLOBALCONF: Fault.SERVER_PROVIDER_INTERNAL_ERROR,
    Reason.LOGGING_FAILED: Fault.SERVER_PROVIDER_LOGGING_FAILED,
    Reason.WITNESS_UNAVAILABLE: Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE,
    Reason.OWN_CREDENTIALS: Fault.SERVER_PROVIDER_INTERNAL_ERROR,
}
_BY_SIDE: Final = {Side.CONSUMER: _CONSUMER, Side.PROVIDER: _PROVIDER}


# Errors of the libraries below the proxies, by class (most specific first).
_REASONS: Final[tuple[tuple[type[RutaError], Reason], ...]] = (
    (SignerMismatchError, Reason.SIGNER_MISMATCH),
    (CertificateRevokedError, Reason.CERT_REVOKED),
    (CertificateInvalidError, Reason.CERT_INVALID),
    (OcspInvalidError, Reason.OCSP_INVALID),
    (SignatureError, Reason.INVALID_SIGNATURE),
    (LogWriteError, Reason.LOGGING_FAILED),
    (OutdatedGlobalConfError, Reason.OUTDATED_GLOBALCONF),
    (GlobalConfError, Reason.INVALID_GLOBALCONF),
)


def reason_of(error: RutaError) -> Reason | None:
    """The side-neutral reason of an error from below the proxies (None: the error's own fault
    stands, as a ``client.*`` mistake or a proxy's refusal does)."""
    if isinstance(error, ExchangeError):
        return error.reason
    return next((reason for kind, reason in _REASONS if isinstance(error, kind)), None)


def fault_for(side: Side, error: RutaError) -> Fault:
    """The fault ``side`` refuses with for ``error`` (the one place that decides it)."""
    reason = reason_of(error)
    if reason is None:
        return error.fault
    return _BY_SIDE[side][reason]
