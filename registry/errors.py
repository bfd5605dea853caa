"""Errors the registry raises on purpose, each with its stable fault code (:mod:`ruta.faults`)."""

from __future__ import annotations

from ruta.faults import Fault, RutaError

__all__ = [
    "AlreadyExistsError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RegistryError",
    "StoreError",
]


class RegistryError(RutaError):
    """Root of the registry's errors."""

    default_fault = Fault.SERVER_REGISTRY_INTERNAL_ERROR


class NotFoundError(RegistryError):
    """The object a request names does not exist."""

    default_fault = Fault.CLIENT_NOT_FOUND


class AlreadyExistsError(RegistryError):
    """The object a request would add already exists."""

    default_fault = Fault.CLIENT_ALREADY_EXISTS


class InvalidRequestError(RegistryError):
    """A request is malformed, over a bound, or asks for a step the object's state forbids."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


class PermissionDeniedError(RegistryError):
    """The caller's role does not allow this request on this object. ``role`` names the role
    that would (``registry-admin``, ``member-admin:LAC/GOV/POP``, ...), for a page that says so;
    empty when no single role is meant."""

    default_fault = Fault.CLIENT_PERMISSION_DENIED

    def __init__(self, message: str, *, role: str = "") -> None:
        super().__init__(message)
        self.role = role


class StoreError(RegistryError):
    """The store could not be read or written; nothing was changed."""

    default_fault = Fault.SERVER_REGISTRY_INTERNAL_ERROR
