"""The error root of Ruta and the stable fault codes every refusal carries.

Every refusal on the bus is a gRPC status plus two trailing metadata entries: ``ruta-fault`` (a
stable, lower-snake-case code prefixed by who refused, as in X-Road 7.8) and ``ruta-fault-id`` (a
UUID that also appears in the refusing server's log line). This module owns the list of codes, the
gRPC status each maps to, the :class:`RutaError` root that carries a code, and the helpers that turn
an error into what goes on the wire and back.

Fault texts say what was wrong and what to do. They must never carry keys, file paths, connection
strings or stack traces: callers build them from domain values only.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio

__all__ = [
    "BACKEND_FAULT_PREFIX",
    "FAULT_HEADER",
    "FAULT_ID_HEADER",
    "MAX_BACKEND_FAULT_LENGTH",
    "MAX_FAULT_TEXT_LENGTH",
    "MAX_RETRY_AFTER_MS",
    "RETRY_AFTER_HEADER",
    "Fault",
    "FaultReport",
    "RutaError",
    "abort",
    "backend_fault_code",
    "caller_fault_code",
    "fault_from_rpc_error",
    "http_status_of",
    "http_status_of_grpc",
    "report",
    "retry_after_of",
    "status_from_code",
    "status_of",
]

FAULT_HEADER = "ruta-fault"
FAULT_ID_HEADER = "ruta-fault-id"
#: Trailing metadata of a refusal over a load limit: milliseconds after which a retry may pass.
RETRY_AFTER_HEADER = "ruta-retry-after-ms"
#: Longest retry-after hint put on the wire or read from a peer (an hour).
MAX_RETRY_AFTER_MS = 3_600_000
#: Longest fault text put on the wire; longer texts are cut (bounds what a peer must read).
MAX_FAULT_TEXT_LENGTH = 1024
#: What a provider backend's own fault code is prefixed with on its way to the caller: the
#: backend's claim, never a code of the security servers (docs/adr/0024).
BACKEND_FAULT_PREFIX = "backend."
#: Longest fault code a provider's backend may give (without :data:`BACKEND_FAULT_PREFIX`).
MAX_BACKEND_FAULT_LENGTH = 64
# Lower snake case segments joined by dots: the shape of every code below.
_FAULT_CODE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")

_log = logging.getLogger(__name__)


class Fault(enum.StrEnum):
    """Stable fault codes. Values are part of the public protocol: never rename one."""

    # The caller's mistakes.
    CLIENT_INVALID_IDENTIFIER = "client.invalid_identifier"
    CLIENT_MISSING_HEADER = "client.missing_header"
    CLIENT_INVALID_HEADER = "client.invalid_header"
    CLIENT_MESSAGE_TOO_LARGE = "client.message_too_large"
    CLIENT_UNKNOWN_SERVICE = "client.unknown_service"
    CLIENT_UNAUTHENTICATED = "client.unauthenticated"
    CLIENT_PERMISSION_DENIED = "client.permission_denied"
    CLIENT_INVALID_REQUEST = "client.invalid_request"
    CLIENT_NOT_FOUND = "client.not_found"
    CLIENT_ALREADY_EXISTS = "client.already_exists"
    CLIENT_INVALID_CONFIG = "client.invalid_config"
    CLIENT_INVALID_PROOF = "client.invalid_proof"
    CLIENT_REUSED_MESSAGE_ID = "client.reused_message_id"

    # Refusals by the consumer's security server.
    SERVER_CONSUMER_ACCESS_DENIED = "server.consumer.access_denied"
    SERVER_CONSUMER_OUTDATED_GLOBALCONF = "server.consumer.outdated_globalconf"
    SERVER_CONSUMER_INVALID_GLOBALCONF = "server.consumer.invalid_globalconf"
    SERVER_CONSUMER_NETWORK_ERROR = "server.consumer.network_error"
    SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE = "server.consumer.invalid_response_signature"
    SERVER_CONSUMER_LOGGING_FAILED = "server.consumer.logging_failed"
    SERVER_CONSUMER_WITNESS_UNAVAILABLE = "server.consumer.witness_unavailable"
    SERVER_CONSUMER_INTERNAL_ERROR = "server.consumer.internal_error"

    # Refusals by the provider's security server.
    SERVER_PROVIDER_ACCESS_DENIED = "server.provider.access_denied"
    SERVER_PROVIDER_INVALID_MESSAGE = "server.provider.invalid_message"
    SERVER_PROVIDER_INVALID_SIGNATURE = "server.provider.invalid_signature"
    SERVER_PROVIDER_CERT_REVOKED = "server.provider.cert_revoked"
    SERVER_PROVIDER_CERT_INVALID = "server.provider.cert_invalid"
    SERVER_PROVIDER_OCSP_INVALID = "server.provider.ocsp_invalid"
    SERVER_PROVIDER_SIGNER_MISMATCH = "server.provider.signer_mismatch"
    SERVER_PROVIDER_REPLAYED_MESSAGE = "server.provider.replayed_message"
    SERVER_PROVIDER_STALE_MESSAGE = "server.provider.stale_message"
    SERVER_PROVIDER_MESSAGE_TOO_LARGE = "server.provider.message_too_large"
    SERVER_PROVIDER_UNKNOWN_SERVICE = "server.provider.unknown_service"
    SERVER_PROVIDER_SERVICE_FAILED = "server.provider.service_failed"
    SERVER_PROVIDER_OUTDATED_GLOBALCONF = "server.provider.outdated_globalconf"
    SERVER_PROVIDER_LOGGING_FAILED = "server.provider.logging_failed"
    SERVER_PROVIDER_WITNESS_UNAVAILABLE = "server.provider.witness_unavailable"
    SERVER_PROVIDER_INTERNAL_ERROR = "server.provider.internal_error"
    #: Over the contract's rate limit (or the provider's local one); retry after the hint.
    SERVER_PROVIDER_RATE_LIMITED = "server.provider.rate_limited"

    # Refusals by the registry (admin API, configuration, witness).
    SERVER_REGISTRY_INVALID_CHECKPOINT = "server.registry.invalid_checkpoint"
    SERVER_REGISTRY_INTERNAL_ERROR = "server.registry.internal_error"
    SERVER_REGISTRY_GLOBALCONF_UNAVAILABLE = "server.registry.globalconf_unavailable"
    SERVER_REGISTRY_UNAVAILABLE = "server.registry.unavailable"

    # Refusals by an adapter serving the provider from a legacy system.
    SERVER_PROVIDER_LEGACY_UNAVAILABLE = "server.provider.legacy_unavailable"
    SERVER_PROVIDER_LEGACY_TIMEOUT = "server.provider.legacy_timeout"
    SERVER_PROVIDER_INVALID_LEGACY_ANSWER = "server.provider.invalid_legacy_answer"
    SERVER_PROVIDER_RESULT_TOO_LARGE = "server.provider.result_too_large"


_STATUS: dict[Fault, grpc.StatusCode] = {
    Fault.CLIENT_INVALID_IDENTIFIER: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_MISSING_HEADER: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_INVALID_HEADER: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Fault.CLIENT_UNKNOWN_SERVICE: grpc.StatusCode.NOT_FOUND,
    Fault.CLIENT_UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Fault.CLIENT_PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Fault.CLIENT_INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Fault.CLIENT_ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Fault.CLIENT_INVALID_CONFIG: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_INVALID_PROOF: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.CLIENT_REUSED_MESSAGE_ID: grpc.StatusCode.ALREADY_EXISTS,
    Fault.SERVER_CONSUMER_ACCESS_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_CONSUMER_INVALID_GLOBALCONF: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_CONSUMER_NETWORK_ERROR: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE: grpc.StatusCode.INTERNAL,
    Fault.SERVER_CONSUMER_LOGGING_FAILED: grpc.StatusCode.INTERNAL,
    Fault.SERVER_CONSUMER_WITNESS_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_CONSUMER_INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    Fault.SERVER_PROVIDER_ACCESS_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Fault.SERVER_PROVIDER_INVALID_MESSAGE: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.SERVER_PROVIDER_INVALID_SIGNATURE: grpc.StatusCode.UNAUTHENTICATED,
    Fault.SERVER_PROVIDER_CERT_REVOKED: grpc.StatusCode.UNAUTHENTICATED,
    Fault.SERVER_PROVIDER_CERT_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    Fault.SERVER_PROVIDER_OCSP_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    Fault.SERVER_PROVIDER_SIGNER_MISMATCH: grpc.StatusCode.UNAUTHENTICATED,
    Fault.SERVER_PROVIDER_REPLAYED_MESSAGE: grpc.StatusCode.ALREADY_EXISTS,
    Fault.SERVER_PROVIDER_STALE_MESSAGE: grpc.StatusCode.FAILED_PRECONDITION,
    Fault.SERVER_PROVIDER_MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Fault.SERVER_PROVIDER_UNKNOWN_SERVICE: grpc.StatusCode.NOT_FOUND,
    Fault.SERVER_PROVIDER_SERVICE_FAILED: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_PROVIDER_OUTDATED_GLOBALCONF: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_PROVIDER_LOGGING_FAILED: grpc.StatusCode.INTERNAL,
    Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_PROVIDER_INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    Fault.SERVER_PROVIDER_RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Fault.SERVER_REGISTRY_INVALID_CHECKPOINT: grpc.StatusCode.FAILED_PRECONDITION,
    Fault.SERVER_REGISTRY_INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    Fault.SERVER_REGISTRY_GLOBALCONF_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_REGISTRY_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.SERVER_PROVIDER_LEGACY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER: grpc.StatusCode.INTERNAL,
    Fault.SERVER_PROVIDER_RESULT_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


_FAULT_VALUES: frozenset[str] = frozenset(f.value for f in Fault)


def status_of(fault: Fault) -> grpc.StatusCode:
    """Return the gRPC status code a fault is sent with."""
    return _STATUS[fault]


_STATUS_BY_CODE: dict[int, grpc.StatusCode] = {s.value[0]: s for s in grpc.StatusCode}


def status_from_code(code: int) -> grpc.StatusCode:
    """The gRPC status of a numeric code as it travels in a signed header or a framed refusal
    (``UNKNOWN`` for a number that is no status)."""
    return _STATUS_BY_CODE.get(code, grpc.StatusCode.UNKNOWN)


# Over HTTP (the gateway) a fault travels as a JSON body with the status below: 400 the caller's
# mistake, 401/403 authentication and contracts, 404 unknown, 413 too large, 429 rate limited,
# 502/504 the provider side failing or not answering, 503 this side unable to serve now, 500 a
# bug. Most follow from the gRPC status; the overrides say where the side that refused matters.
_HTTP_BY_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_HTTP_STATUS: dict[Fault, int] = {
    Fault.CLIENT_MESSAGE_TOO_LARGE: 413,
    Fault.SERVER_PROVIDER_MESSAGE_TOO_LARGE: 413,
    # The provider's own refusals of a well-formed signed request are failures of the far side
    # as far as an HTTP caller is concerned (its own mistakes are named by client.* codes).
    Fault.SERVER_PROVIDER_INVALID_MESSAGE: 502,
    Fault.SERVER_PROVIDER_INVALID_SIGNATURE: 502,
    Fault.SERVER_PROVIDER_CERT_REVOKED: 502,
    Fault.SERVER_PROVIDER_CERT_INVALID: 502,
    Fault.SERVER_PROVIDER_OCSP_INVALID: 502,
    Fault.SERVER_PROVIDER_SIGNER_MISMATCH: 502,
    Fault.SERVER_PROVIDER_REPLAYED_MESSAGE: 409,
    Fault.SERVER_PROVIDER_STALE_MESSAGE: 502,
    Fault.SERVER_PROVIDER_UNKNOWN_SERVICE: 404,
    Fault.SERVER_PROVIDER_SERVICE_FAILED: 502,
    Fault.SERVER_PROVIDER_OUTDATED_GLOBALCONF: 502,
    Fault.SERVER_PROVIDER_LOGGING_FAILED: 502,
    Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE: 502,
    Fault.SERVER_PROVIDER_INTERNAL_ERROR: 502,
    Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE: 502,
    Fault.SERVER_PROVIDER_LEGACY_TIMEOUT: 504,
    Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER: 502,
    Fault.SERVER_PROVIDER_RESULT_TOO_LARGE: 502,
    Fault.SERVER_CONSUMER_NETWORK_ERROR: 502,
    Fault.SERVER_CONSUMER_INVALID_RESPONSE_SIGNATURE: 502,
    Fault.SERVER_CONSUMER_LOGGING_FAILED: 500,
    Fault.SERVER_CONSUMER_INTERNAL_ERROR: 500,
    # Over a load limit: the caller may retry after the hint (``Retry-After`` over HTTP).
    Fault.SERVER_PROVIDER_RATE_LIMITED: 429,
}


def http_status_of(fault: Fault, *, status: grpc.StatusCode | None = None) -> int:
    """The HTTP status a fault travels with over HTTP (the gateway), one mapping for all.

    ``status`` is the gRPC status the refusal actually came with, when known: a deadline that
    passed on the way (``DEADLINE_EXCEEDED``) is 504 whatever the code, so a caller can tell a
    far side that did not answer from one that failed.
    """
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        return 504
    found = _HTTP_STATUS.get(fault)
    if found is not None:
        return found
    return http_status_of_grpc(_STATUS.get(fault, grpc.StatusCode.INTERNAL))


def http_status_of_grpc(status: grpc.StatusCode) -> int:
    """The HTTP status of a plain gRPC status that carried no Ruta fault (a provider backend's
    own answer, such as ``NOT_FOUND``): 200 for ``OK``, 500 for what has no closer match."""
    if status is grpc.StatusCode.OK:
        return 200
    return _HTTP_BY_GRPC.get(status, 500)


class RutaError(Exception):
    """Root of every error Ruta raises on purpose.

    Each error carries a stable :class:`Fault` code. Subclasses set ``default_fault``; a raiser may
    pass a more specific ``fault``. The message is what a caller reads: say what was wrong and what
    to do, and never include secrets, paths or connection strings.
    """

    default_fault: Fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR

    def __init__(
        self, message: str, *, fault: Fault | None = None, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fault: Fault = fault if fault is not None else self.default_fault
        #: A load limit's hint: milliseconds after which the same call may pass (None: none).
        self.retry_after_ms = retry_after_ms

    def __str__(self) -> str:
        return f"{self.fault}: {self.message}"


@dataclass(frozen=True, slots=True)
class FaultReport:
    """What a refusal puts on the wire: status, text and trailing metadata."""

    fault: Fault
    fault_id: str
    status: grpc.StatusCode
    details: str
    retry_after_ms: int | None = None

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        entries = ((FAULT_HEADER, str(self.fault)), (FAULT_ID_HEADER, self.fault_id))
        if self.retry_after_ms is None:
            return entries
        return (*entries, (RETRY_AFTER_HEADER, str(self.retry_after_ms)))


def report(error: RutaError, *, fault_id: str | None = None) -> FaultReport:
    """Turn ``error`` into a :class:`FaultReport` with a fresh fault id, and log it once.

    The log line carries the fault id and code, so an operator can find it from what the caller saw.
    """
    fid = fault_id or str(uuid.uuid4())
    details = error.message
    if len(details) > MAX_FAULT_TEXT_LENGTH:
        details = details[: MAX_FAULT_TEXT_LENGTH - 3] + "..."
    _log.info("refused fault=%s fault_id=%s: %s", error.fault, fid, details)
    retry = error.retry_after_ms
    return FaultReport(
        fault=error.fault,
        fault_id=fid,
        status=status_of(error.fault),
        details=details,
        retry_after_ms=None if retry is None else min(max(0, retry), MAX_RETRY_AFTER_MS),
    )


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    error: RutaError,
    *,
    fault_id: str | None = None,
    status: grpc.StatusCode | None = None,
) -> NoReturn:
    """Refuse the current call with ``error``: status, text, ``ruta-fault`` and ``ruta-fault-id``.

    ``fault_id`` and ``status`` keep a peer's fault id and status when its refusal is passed on
    unchanged. Never returns (grpc.aio raises to unwind the handler).
    """
    rep = report(error, fault_id=fault_id)
    context.set_trailing_metadata(rep.trailing_metadata)
    await context.abort(status if status is not None else rep.status, rep.details)
    raise AssertionError("unreachable: grpc.aio abort returned")  # pragma: no cover


def backend_fault_code(code: str) -> str | None:
    """``code`` if it may stand as a provider backend's fault code: the shape of a fault code
    (lower snake case, dotted), at most :data:`MAX_BACKEND_FAULT_LENGTH` characters; else None.
    Any such code is accepted (a backend may have codes of its own); it reaches callers only
    under :data:`BACKEND_FAULT_PREFIX`, so it cannot pass for a security server's fault."""
    if len(code) > MAX_BACKEND_FAULT_LENGTH or not _FAULT_CODE.fullmatch(code):
        return None
    return code


def caller_fault_code(code: str) -> str | None:
    """``code`` (a ``ruta-fault`` value a caller received) if it is one a caller may be given:
    a :class:`Fault` value, or :data:`BACKEND_FAULT_PREFIX` followed by a provider backend's code
    of the right shape; else None. What an edge (the gateway, a client) passes on as it is."""
    if code in _FAULT_VALUES:
        return code
    if code.startswith(BACKEND_FAULT_PREFIX):
        claimed = backend_fault_code(code[len(BACKEND_FAULT_PREFIX) :])
        return None if claimed is None else code
    return None


def fault_from_rpc_error(error: grpc.aio.AioRpcError) -> tuple[Fault | None, str | None]:
    """Read the fault code and fault id a peer put in a refusal's trailing metadata.

    Returns ``(None, None)`` for a status that carried no Ruta fault (for example a transport
    failure), and a ``None`` code for a code this version does not know, a provider backend's
    ``backend.*`` code included (read that one with :func:`caller_fault_code`).
    """
    fault: Fault | None = None
    fault_id: str | None = None
    for key, value in error.trailing_metadata() or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if key == FAULT_HEADER:
            try:
                fault = Fault(text)
            except ValueError:
                fault = None
        elif key == FAULT_ID_HEADER:
            fault_id = text
    return fault, fault_id


def retry_after_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The retry-after hint (``ruta-retry-after-ms``) in a refusal's trailing metadata, in
    milliseconds and bounded by :data:`MAX_RETRY_AFTER_MS`; None when there is none or it is not
    a number."""
    for key, value in metadata or ():
        if key != RETRY_AFTER_HEADER:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if not text.isdigit() or len(text) > len(str(MAX_RETRY_AFTER_MS)):
            return None
        return min(int(text), MAX_RETRY_AFTER_MS)
    return None
