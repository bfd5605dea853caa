"""The provider's call to the backend that serves a service: the seam and its gRPC form.

:class:`Backends` is what the provider proxy calls through; :class:`GrpcBackends` is the real one
(one channel per mapped backend, opened at start and shared by every call; the raw body goes to
the backend's method path as bytes). Unit tests use an in-memory backend instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import grpc
import grpc.aio

from ruta.ids import ServiceId
from security_server.settings import BackendSettings
from security_server.transport import grpc_message_options

__all__ = [
    "MAX_BACKEND_STATUS_TEXT",
    "MAX_CACHED_BACKEND_METHODS",
    "BackendReply",
    "Backends",
    "GrpcBackends",
]

#: Longest status text of a backend's refusal carried back in a signed response body.
MAX_BACKEND_STATUS_TEXT: Final = 1024
#: Backend method callables kept made (one per service method a contract allows).
MAX_CACHED_BACKEND_METHODS: Final = 4096
#: Largest TLS file (CA, key, certificate) read for a backend connection.
MAX_BACKEND_TLS_FILE_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class BackendReply:
    """What a backend answered: ``OK`` with its body, or another status with its text."""

    status: grpc.StatusCode
    body: bytes = b""
    details: str = ""


class Backends(Protocol):
    """The backends this server maps its services to."""

    def serves(self, service: ServiceId) -> bool:
        """Whether a backend is mapped for ``service``."""
        ...

    async def call(
        self,
        service: ServiceId,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> BackendReply:
        """Call method ``path`` of ``service``'s backend with the raw ``body`` and return its
        reply within ``seconds`` (a failed call is a reply with its status; ``details`` at most
        :data:`MAX_BACKEND_STATUS_TEXT` characters). Only called for a service it serves."""
        ...

    async def close(self) -> None: ...


def _read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_BACKEND_TLS_FILE_BYTES)


class GrpcBackends:
    """One gRPC channel per mapped backend, opened at start and shared by every call."""

    def __init__(self, backends: tuple[BackendSettings, ...], *, max_message_bytes: int) -> None:
        options = grpc_message_options(max_message_bytes)
        self._channels: dict[ServiceId, grpc.aio.Channel] = {}
        # Keyed by the channel's id: channels live as long as this object (closed together).
        self._methods: dict[tuple[int, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        for backend in backends:
            if backend.tls:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(backend.ca) if backend.ca else None,
                    private_key=_read(backend.client_key) if backend.client_key else None,
                    certificate_chain=_read(backend.client_cert) if backend.client_cert else None,
                )
                channel = grpc.aio.secure_channel(backend.address, credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(backend.address, options=options)
            self._channels[backend.service_id] = channel

    def serves(self, service: ServiceId) -> bool:
        return service in self._channels

    @property
    def services(self) -> Mapping[ServiceId, grpc.aio.Channel]:
        return self._channels

    def _method(
        self, channel: grpc.aio.Channel, path: str
    ) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        # Made once per path (only paths a contract allowed get here; bounded all the same).
        key = (id(channel), path)
        call = self._methods.get(key)
        if call is None:
            call = channel.unary_unary(path)
            if len(self._methods) < MAX_CACHED_BACKEND_METHODS:
                self._methods[key] = call
        return call

    async def call(
        self,
        service: ServiceId,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> BackendReply:
        call = self._method(self._channels[service], path)
        try:
            answer: bytes = await call(body, metadata=tuple(metadata), timeout=seconds)
        except grpc.aio.AioRpcError as exc:
            return BackendReply(
                status=exc.code(), details=(exc.details() or "")[:MAX_BACKEND_STATUS_TEXT]
            )
        return BackendReply(status=grpc.StatusCode.OK, body=answer)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._methods.clear()
