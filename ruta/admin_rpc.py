"""Awaiting one call of the registry's admin API, the same way for every client of it.

The ``ruta registry`` admin commands, ``ruta ss init`` (enrolment) and the sandbox all call the
registry's admin API; :func:`admin_call` gives each call a deadline and turns a refusal into a
:class:`ruta.faults.RutaError` carrying the registry's fault code and fault id, and an
unreachable or silent registry into ``server.registry.unavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final, TypeVar

import grpc
import grpc.aio

from ruta.faults import Fault, RutaError, fault_from_rpc_error

__all__ = ["ADMIN_CALL_TIMEOUT_SECONDS", "admin_call"]

#: Deadline of one admin call.
ADMIN_CALL_TIMEOUT_SECONDS: Final = 30.0
#: Longest transport detail quoted from a failed call.
_MAX_DETAIL_CHARS: Final = 200

_T = TypeVar("_T")


async def admin_call(rpc: Awaitable[_T]) -> _T:
    """Await one admin RPC for at most :data:`ADMIN_CALL_TIMEOUT_SECONDS` and return its answer.

    Raises :class:`RutaError` with the registry's fault (and its fault id in the text) when the
    registry refused, and ``server.registry.unavailable`` when it did not answer in time or the
    call failed without a Ruta fault (unreachable, TLS refused).
    """
    try:
        async with asyncio.timeout(ADMIN_CALL_TIMEOUT_SECONDS):
            return await rpc
    except TimeoutError:
        raise RutaError(
            f"the registry's admin API did not answer within {ADMIN_CALL_TIMEOUT_SECONDS:g} s",
            fault=Fault.SERVER_REGISTRY_UNAVAILABLE,
        ) from None
    except grpc.aio.AioRpcError as error:
        fault, fault_id = fault_from_rpc_error(error)
        if fault is None:
            raise RutaError(
                f"cannot reach the registry's admin API ({error.code().name}: "
                f"{(error.details() or '')[:_MAX_DETAIL_CHARS]})",
                fault=Fault.SERVER_REGISTRY_UNAVAILABLE,
            ) from None
        suffix = f" (fault id {fault_id})" if fault_id else ""
        raise RutaError(f"{error.details()}{suffix}", fault=fault) from None
