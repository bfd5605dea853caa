"""Errors an adapter raises, each carrying the stable fault code its gRPC status comes from.

Messages name the method, backend or field and say what to do. They never carry connection
strings, credentials, file paths, request values or the legacy system's own error text (which may
echo any of those): a backend logs the exception's class name and raises one of these instead.
"""

from __future__ import annotations

from ruta.faults import Fault, RutaError

__all__ = [
    "AdapterConfigError",
    "AdapterError",
    "InvalidLegacyAnswerError",
    "InvalidRequestError",
    "LegacyNotFoundError",
    "LegacyTimeoutError",
    "LegacyUnavailableError",
    "RequestTooLargeError",
    "ResultTooLargeError",
]


class AdapterError(RutaError):
    """Root of the adapter's deliberate refusals."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


class AdapterConfigError(AdapterError):
    """The adapter file, its ``.proto`` or its legacy system does not fit (found at load/check)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


class InvalidRequestError(AdapterError):
    """The caller's request lacks a required field or has a value the method refuses."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class RequestTooLargeError(AdapterError):
    """The caller's request is over the adapter's size bound."""

    default_fault = Fault.CLIENT_MESSAGE_TOO_LARGE


class LegacyNotFoundError(AdapterError):
    """The legacy system holds no record for the request (gRPC NOT_FOUND)."""

    default_fault = Fault.CLIENT_NOT_FOUND


class LegacyUnavailableError(AdapterError):
    """The legacy system cannot be reached or failed (gRPC UNAVAILABLE)."""

    default_fault = Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE


class LegacyTimeoutError(AdapterError):
    """The legacy system did not answer within the call's deadline (gRPC DEADLINE_EXCEEDED)."""

    default_fault = Fault.SERVER_PROVIDER_LEGACY_TIMEOUT


class InvalidLegacyAnswerError(AdapterError):
    """The legacy system answered something the mapping cannot turn into the response."""

    default_fault = Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER


class ResultTooLargeError(AdapterError):
    """The legacy answer is over a result bound (rows or bytes)."""

    default_fault = Fault.SERVER_PROVIDER_RESULT_TOO_LARGE
