"""Errors of the message log and the replay guard; each carries its stable fault code."""

from __future__ import annotations

from ruta.faults import Fault, RutaError

__all__ = [
    "LogError",
    "LogIntegrityError",
    "LogKeyError",
    "LogRangeError",
    "LogWriteError",
    "ReplayedMessageError",
    "StaleMessageError",
]


class LogError(RutaError):
    """Root of the message log's errors."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


class LogWriteError(LogError):
    """An append or a replay claim was not made durable; nothing of it is acknowledged.

    Side-neutral: the proxy that appended maps it to its own ``logging_failed`` fault
    (:func:`security_server.errors.fault_for`).
    """

    default_fault = Fault.SERVER_PROVIDER_LOGGING_FAILED


class LogIntegrityError(LogError):
    """The stored tree does not agree with itself (size, root, nodes or leaves); the log refuses
    to open or to serve rather than extend or prove a damaged history."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


class LogKeyError(LogError):
    """The body encryption key is missing, unreadable, has unsafe permissions or does not open a
    stored body."""

    default_fault = Fault.SERVER_PROVIDER_INTERNAL_ERROR


class LogRangeError(LogError):
    """A caller asked for a sequence number or tree size the log does not have (yet)."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class ReplayedMessageError(LogError):
    """The client already sent a message with this id within the freshness window."""

    default_fault = Fault.SERVER_PROVIDER_REPLAYED_MESSAGE


class StaleMessageError(LogError):
    """The message's creation time is outside the freshness window (too old or in the future)."""

    default_fault = Fault.SERVER_PROVIDER_STALE_MESSAGE
