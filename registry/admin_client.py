"""A client of the registry's admin API (what the ``ruta registry`` admin commands use).

:func:`admin_stub` opens a mutual-TLS channel with an admin's key and certificate;
:func:`call` awaits one RPC and turns a refusal into a :class:`ruta.faults.RutaError` carrying
the registry's fault code and fault id, so the CLI prints ``error: client.permission_denied: …``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import grpc
import grpc.aio

from registry import limits
from ruta.admin_rpc import ADMIN_CALL_TIMEOUT_SECONDS, admin_call
from ruta.pki.tls import channel_credentials
from ruta.v1 import registry_pb2_grpc

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "admin_stub", "call"]

#: Deadline of one admin call.
DEFAULT_TIMEOUT_SECONDS: Final = ADMIN_CALL_TIMEOUT_SECONDS

_T = TypeVar("_T")


@asynccontextmanager
async def admin_stub(
    address: str,
    *,
    key: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    trust: str | os.PathLike[str],
) -> AsyncIterator[registry_pb2_grpc.RegistryAdminAsyncStub]:
    """A ``RegistryAdmin`` stub over mutual TLS to ``address`` (host:port); closed on exit.

    Raises the PKI errors of :func:`ruta.pki.tls.channel_credentials` for unreadable files.
    """
    credentials = channel_credentials(key, cert, trust)
    channel = grpc.aio.secure_channel(
        address,
        credentials,
        options=[("grpc.max_send_message_length", limits.MAX_REQUEST_BYTES)],
    )
    try:
        # Typed as RegistryAdminAsyncStub (the .pyi overload for an aio channel).
        yield registry_pb2_grpc.RegistryAdminStub(channel)
    finally:
        await channel.close()


async def call(rpc: Awaitable[_T]) -> _T:
    """Await one admin RPC for at most :data:`DEFAULT_TIMEOUT_SECONDS`; raise
    :class:`RutaError` with the registry's fault on refusal, or ``server.registry.unavailable``
    when it cannot be reached (see :func:`ruta.admin_rpc.admin_call`)."""
    return await admin_call(rpc)
