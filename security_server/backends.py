"""The provider's call to the backend that serves a service: the seam, and the backends in force
(one gRPC channel per mapped service, replaceable while serving).

:class:`Backends` is what the provider proxy calls through; :class:`BackendChannels` is the real
one; unit tests use an in-memory backend (tests/unit/security_server/twin.py). The provider
looks a service's channel up when it checks the service is served (:meth:`BackendChannels.get`).
A settings reload (:mod:`security_server.reload`) swaps the whole map in one step with
:meth:`BackendChannels.replace`: calls that start afterwards see the new map, while calls that
already hold a channel keep it; a channel no longer mapped is closed only once every call that
could hold it has ended (docs/adr/0016-settings-reload.md). A call awaits grpc's Cython unary
call directly, without ``grpc.aio``'s per-call wrapper and task, where this grpcio offers it
(docs/adr/0047-direct-backend-calls.md); otherwise it goes through ``grpc.aio``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import grpc
import grpc.aio

from ruta.faults import (
    FAULT_HEADER,
    FAULT_ID_HEADER,
    MAX_BACKEND_FAULT_LENGTH,
    Fault,
    RutaError,
)
from ruta.files import FileReadError, read_bounded
from ruta.ids import ServiceId
from security_server.settings import BackendSettings
from security_server.transport import grpc_message_options

__all__ = [
    "MAX_BACKEND_STATUS_TEXT",
    "MAX_CACHED_BACKEND_METHODS",
    "BackendChange",
    "BackendChannels",
    "BackendError",
    "BackendReply",
    "Backends",
]

_log = logging.getLogger(__name__)

# grpc.aio's unary call without its per-call wrapper (docs/adr/0047-direct-backend-calls.md):
# ``grpc.aio`` makes a Python call object, an asyncio task, a metadata object and a weak
# reference for every call, ~73,000 instructions of the ~250,000 a 512-byte call costs; the
# Cython call underneath, which that task awaits, is awaited here directly (the same core call,
# operations, metadata, deadline and status). Used only where this grpcio offers exactly what
# is used (checked once, below, and per channel); otherwise every call goes through grpc.aio.
try:
    from grpc import _common as _grpc_common
    from grpc._cython import cygrpc as _cygrpc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - grpcio without its Cython layer: grpc.aio only
    _DIRECT = False
else:
    _DIRECT = all(
        hasattr(_cygrpc, name) for name in ("AioChannel", "build_census_context")
    ) and all(
        hasattr(_cygrpc._AioCall, name)
        for name in ("unary_unary", "is_ok", "done", "cancel", "_status")
    )
#: What a backend call cancelled by its caller tells gRPC (grpc.aio's own words).
_CANCELLED_DETAILS: Final = "Locally cancelled by application!"

#: Longest status text of a backend's refusal carried back in a signed response body.
MAX_BACKEND_STATUS_TEXT: Final = 1024
#: Backend method callables kept made (one per service method a contract allows).
MAX_CACHED_BACKEND_METHODS: Final = 4096
#: Service objects whose channel (or its absence) a map of backends remembers.
_MAX_KNOWN_SERVICES: Final = 1024
#: Largest certificate or key file read for a backend's TLS.
_MAX_CREDENTIAL_BYTES: Final = 1 << 20
#: Characters of a backend's ``ruta-fault-id`` read (a UUID has 36).
_MAX_FAULT_ID_READ: Final = 64
#: How long a retired channel's last calls may take once they are done with it (gRPC's grace).
_CLOSE_GRACE_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class BackendReply:
    """What a backend answered: ``OK`` with its body, or another status with its text and the
    ``ruta-fault`` and ``ruta-fault-id`` it gave (empty: none; as the backend sent them,
    unchecked: the provider proxy checks them, docs/adr/0024)."""

    status: grpc.StatusCode
    body: bytes = b""
    details: str = ""
    fault: str = ""
    fault_id: str = ""


class Backends(Protocol):
    """The backends this server maps its services to, as the provider proxy calls them."""

    def serves(self, service: ServiceId) -> bool:
        """Whether a backend is mapped for ``service`` now."""
        ...

    def call(
        self,
        service: ServiceId,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> Awaitable[BackendReply]:
        """Call method ``path`` of ``service``'s backend with the raw ``body`` within
        ``seconds``; awaited, its reply (a failed call is a reply with its status; ``details``
        at most :data:`MAX_BACKEND_STATUS_TEXT` characters). An ``async def`` does; so may a
        plain method that hands back the awaitable of the call it starts (no coroutine of its
        own around it)."""
        ...


def _fault_of(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """The ``ruta-fault`` and ``ruta-fault-id`` a backend's refusal carried (text values, cut
    just past what the provider accepts, so an over-long one stays over-long)."""
    return _fault_in(error.trailing_metadata())


def _fault_in(trailing: Any) -> tuple[str, str]:
    """:func:`_fault_of` for trailing metadata as a sequence of ``(key, value)`` pairs."""
    fault = fault_id = ""
    for key, value in trailing or ():
        if not isinstance(value, str):
            continue
        if key == FAULT_HEADER:
            fault = value[: MAX_BACKEND_FAULT_LENGTH + 1]
        elif key == FAULT_ID_HEADER:
            fault_id = value[:_MAX_FAULT_ID_READ]
    return fault, fault_id


class BackendError(RutaError):
    """A backend's channel cannot be made (a TLS file is missing or unreadable)."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


@dataclass(frozen=True, slots=True)
class BackendChange:
    """What :meth:`BackendChannels.replace` changed, by service (text form, sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _read(path: Path, service: ServiceId, what: str) -> bytes:
    """The whole file (never cut at the bound: a larger one is refused)."""
    try:
        return read_bounded(path, _MAX_CREDENTIAL_BYTES, what=what)
    except FileReadError as exc:
        reason = exc.problem.value.replace("_", " ")
        raise BackendError(
            f"backend {service}: its {what} file {path.name} cannot be read ({reason})"
        ) from None


def _credentials(backend: BackendSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials of ``backend`` (``None``: plaintext), read now."""
    if not backend.tls:
        return None
    service = backend.service_id
    if backend.ca is None:  # pragma: no cover - the settings model requires ca with tls
        raise BackendError(f"backend {service}: tls needs ca")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(backend.ca, service, "ca"),
        private_key=_read(backend.client_key, service, "client_key")
        if backend.client_key
        else None,
        certificate_chain=_read(backend.client_cert, service, "client_cert")
        if backend.client_cert
        else None,
    )


@dataclass(eq=False)
class _Generation:
    """One map of backends, and the calls that looked a channel up while it was in force."""

    settings: dict[ServiceId, BackendSettings]
    channels: dict[ServiceId, grpc.aio.Channel]
    users: set[asyncio.Task[object]] = field(default_factory=set)
    #: :attr:`channels` looked up before, by the service object asked about (the provider hands
    #: the same remembered objects call after call; each entry keeps its object, checked with
    #: ``is``): no identifier hashed and compared per lookup. Emptied when full.
    known: dict[int, tuple[ServiceId, grpc.aio.Channel | None]] = field(default_factory=dict)


class BackendChannels:
    """One channel per mapped backend, shared by every call; replaced as a whole on reload."""

    def __init__(self, backends: tuple[BackendSettings, ...], *, max_message_bytes: int) -> None:
        """Open a channel for each backend (channels connect lazily). Raises
        :class:`BackendError` when a backend's TLS file cannot be read."""
        self._options = grpc_message_options(max_message_bytes)
        self._current = self._generation(backends, keep={})
        # Keyed by the channel's id: an entry goes when its channel is closed.
        self._methods: dict[tuple[int, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        #: Whether calls go to grpc's Cython call directly (see ``_DIRECT``); tests turn it off
        #: to compare both ways.
        self.direct = _DIRECT
        # Channels no longer mapped, by the task that closes them once their calls are done.
        self._retiring: dict[asyncio.Task[None], list[grpc.aio.Channel]] = {}

    def _generation(
        self,
        backends: tuple[BackendSettings, ...],
        *,
        keep: Mapping[ServiceId, tuple[BackendSettings, grpc.aio.Channel]],
    ) -> _Generation:
        settings = {backend.service_id: backend for backend in backends}
        fresh = {
            service: backend
            for service, backend in settings.items()
            if service not in keep or keep[service][0] != backend
        }
        # Every file is read before any channel opens: a failure leaves nothing to close.
        credentials = {service: _credentials(backend) for service, backend in fresh.items()}
        channels: dict[ServiceId, grpc.aio.Channel] = {}
        for service, backend in settings.items():
            if service not in fresh:
                channels[service] = keep[service][1]
                continue
            secure = credentials[service]
            channels[service] = (
                grpc.aio.insecure_channel(backend.address, options=self._options)
                if secure is None
                else grpc.aio.secure_channel(backend.address, secure, options=self._options)
            )
        return _Generation(settings, channels)

    def get(self, service: ServiceId) -> grpc.aio.Channel | None:
        """The channel of ``service``'s backend in force now (``None``: not served here).

        The calling task holds the channel until it ends: a later :meth:`replace` does not
        close it under the call."""
        generation = self._current
        known = generation.known.get(id(service))
        if known is not None and known[0] is service:
            channel = known[1]
        else:
            channel = generation.channels.get(service)
            if len(generation.known) >= _MAX_KNOWN_SERVICES:
                generation.known.clear()
            generation.known[id(service)] = (service, channel)
        if channel is not None:
            task = asyncio.current_task()
            if task is not None and task not in generation.users:
                generation.users.add(task)
                task.add_done_callback(generation.users.discard)
        return channel

    def method(
        self, channel: grpc.aio.Channel, path: str
    ) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        """The bytes-in, bytes-out callable of ``path`` on ``channel``, made once per path (only
        paths a contract allowed get here; bounded all the same)."""
        key = (id(channel), path)
        call = self._methods.get(key)
        if call is None:
            call = channel.unary_unary(path)
            if len(self._methods) < MAX_CACHED_BACKEND_METHODS:
                self._methods[key] = call
        return call

    def serves(self, service: ServiceId) -> bool:
        """Whether ``service`` is mapped now; the calling task then holds its channel (see
        :meth:`get`), so a reload does not close it under the call that follows."""
        return self.get(service) is not None

    def call(
        self,
        service: ServiceId,
        path: str,
        body: bytes,
        *,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> Awaitable[BackendReply]:
        """The backend call (see :class:`Backends`): the channel is looked up now, in the
        calling task; awaiting what this returns makes the call. A direct call is handed back
        as it is, without a coroutine of this method around it (one layer fewer to pass at
        each of its steps)."""
        channel = self.get(service)
        if channel is None:  # unmapped by a reload since the call was checked
            return _replied(
                BackendReply(grpc.StatusCode.UNAVAILABLE, details="the backend was unmapped")
            )
        if self.direct:
            raw = getattr(channel, "_channel", None)
            if isinstance(raw, _cygrpc.AioChannel):
                return _direct_call(raw, path, body, tuple(metadata), seconds)
        return self._aio_call(channel, path, body, metadata, seconds)

    async def _aio_call(
        self,
        channel: grpc.aio.Channel,
        path: str,
        body: bytes,
        metadata: Sequence[tuple[str, str]],
        seconds: float,
    ) -> BackendReply:
        """One call through ``grpc.aio`` (where the direct call is not offered or is off)."""
        try:
            answer: bytes = await self.method(channel, path)(
                body, metadata=tuple(metadata), timeout=seconds
            )
        except grpc.aio.AioRpcError as exc:
            fault, fault_id = _fault_of(exc)
            return BackendReply(
                status=exc.code(),
                details=(exc.details() or "")[:MAX_BACKEND_STATUS_TEXT],
                fault=fault,
                fault_id=fault_id,
            )
        return BackendReply(status=grpc.StatusCode.OK, body=answer)

    @property
    def services(self) -> Mapping[ServiceId, grpc.aio.Channel]:
        return self._current.channels

    @property
    def backends(self) -> tuple[BackendSettings, ...]:
        """The backends in force, in the order they were given."""
        return tuple(self._current.settings.values())

    def replace(self, backends: tuple[BackendSettings, ...]) -> BackendChange:
        """Put ``backends`` in force at once and say what changed.

        A backend whose settings are unchanged keeps its channel. Calls that start afterwards
        use the new map; calls that already looked a channel up finish on it, and a channel no
        longer mapped is closed once they have all ended. Raises :class:`BackendError` (a TLS
        file cannot be read) with nothing changed.
        """
        old = self._current
        keep = {s: (b, old.channels[s]) for s, b in old.settings.items()}
        new = self._generation(backends, keep=keep)
        self._current = new  # the swap: one assignment, no await before or after it
        kept = {id(c) for c in new.channels.values()}
        retired = [c for c in old.channels.values() if id(c) not in kept]
        if retired:
            task = asyncio.get_running_loop().create_task(self._retire(old, retired))
            self._retiring[task] = retired
            task.add_done_callback(lambda done: self._retiring.pop(done, None))
        return BackendChange(
            added=tuple(sorted(str(s) for s in new.settings if s not in old.settings)),
            removed=tuple(sorted(str(s) for s in old.settings if s not in new.settings)),
            changed=tuple(
                sorted(
                    str(s)
                    for s, b in new.settings.items()
                    if s in old.settings and old.settings[s] != b
                )
            ),
        )

    async def _retire(self, old: _Generation, channels: list[grpc.aio.Channel]) -> None:
        """Close ``channels`` once every call that looked one up in ``old`` has ended."""
        users = set(old.users)
        if users:
            await asyncio.wait(users)
        await self._close(channels)

    async def _close(self, channels: list[grpc.aio.Channel]) -> None:
        ids = {id(c) for c in channels}
        for key in [k for k in self._methods if k[0] in ids]:
            del self._methods[key]
        for channel in channels:
            await channel.close(_CLOSE_GRACE_SECONDS)

    async def close(self) -> None:
        """Close every channel, those in force and those retiring (the server is stopping)."""
        channels = list(self._current.channels.values())
        for task, retired in list(self._retiring.items()):
            task.cancel()
            channels.extend(retired)
        self._current = _Generation({}, {})
        for channel in channels:
            await channel.close()
        self._methods.clear()


async def _replied(reply: BackendReply) -> BackendReply:
    return reply


async def _direct_call(
    channel: Any, path: str, body: bytes, metadata: tuple[tuple[str, str], ...], seconds: float
) -> BackendReply:
    """One unary call of ``path`` on the Cython channel of a ``grpc.aio`` channel, as
    ``grpc.aio``'s unary call makes it (the deadline from ``time.time()``, the census context,
    no call credentials, ``wait_for_ready`` unset, an unregistered method), awaited in the
    caller's task instead of a task of its own. A caller cancelled (or its coroutine closed)
    while it waits cancels the call, as ``grpc.aio`` does."""
    call = channel.call(path.encode(), time.time() + seconds, None, None, 0)
    try:
        answer: bytes = await call.unary_unary(body, metadata, _cygrpc.build_census_context())
    except BaseException:
        if not call.done():
            call.cancel(_CANCELLED_DETAILS)
        raise
    if call.is_ok():
        return BackendReply(status=grpc.StatusCode.OK, body=answer)
    status = call._status  # the call's final status, what grpc.aio reads too
    fault, fault_id = _fault_in(status.trailing_metadata())
    return BackendReply(
        status=_grpc_common.CYGRPC_STATUS_CODE_TO_STATUS_CODE[status.code()],
        details=(status.details() or "")[:MAX_BACKEND_STATUS_TEXT],
        fault=fault,
        fault_id=fault_id,
    )
