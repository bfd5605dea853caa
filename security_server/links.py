"""The consumer's link to provider servers: "send this signed message to that server".

:class:`PeerLinks` is the seam the consumer proxy calls through. :class:`GrpcPeerLinks` is the real
one: pinned mutual-TLS channels (:class:`~security_server.transport.PeerChannels`), several
messages per frame on one ``Transport.ExchangeFrames`` stream per server
(:mod:`security_server.frames`, docs/adr/0011), ``Transport.Exchange`` for a message larger than
a frame, a provider without frames, or with ``[transport] frames = false``. Unit tests use an
in-memory twin that hands each message to a real :class:`~security_server.provider.ProviderProxy`
in the same process (tests/unit/security_server/twin.py).

A provider that agreed on ``response-ahead`` (docs/adr/0038) answers before its record of the
response is durable: :meth:`ProviderLink.exchange` then returns the response with a
:class:`ProviderCommit`, which the consumer must see succeed before it answers its caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

import grpc
import grpc.aio
from cryptography import x509

from ruta.faults import (
    MAX_RETRY_AFTER_MS,
    Fault,
    fault_from_rpc_error,
    retry_after_of,
    status_from_code,
)
from ruta.globalconf import SecurityServer
from ruta.ids import ServerId
from ruta.v1 import transport_pb2
from security_server.errors import FramesUnsupportedError, TransportError
from security_server.frames import (
    CommitNotice,
    FrameLinks,
    MessageParts,
    expire,
    stream_capabilities,
)
from security_server.transport import EXCHANGE_PATH, PeerChannels

__all__ = [
    "MAX_PROVIDER_SERVERS_TRIED",
    "MAX_STATUS_TEXT_BYTES",
    "GrpcPeerLinks",
    "PeerLinks",
    "PeerRefusal",
    "ProviderCommit",
    "ProviderLink",
    "Reply",
]

_log = logging.getLogger(__name__)

#: Most of a provider member's listed servers tried when connecting (before signing).
MAX_PROVIDER_SERVERS_TRIED: Final = 4
#: Peer channels whose Transport.Exchange callable is kept made.
MAX_CACHED_PEER_CALLS: Final = 64
#: Longest status text passed on from a provider server's refusal.
MAX_STATUS_TEXT_BYTES: Final = 1024


class PeerRefusal(Exception):  # noqa: N818 - a peer's answer, passed on unchanged
    """The provider server refused the message: its fault (None: an unknown code), fault id,
    status, text and retry-after hint (``server.provider.rate_limited``), to be passed on to the
    caller unchanged."""

    def __init__(
        self,
        message: str,
        *,
        fault: Fault | None,
        fault_id: str | None,
        status: grpc.StatusCode,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message[:MAX_STATUS_TEXT_BYTES]
        self.fault = fault
        self.fault_id = fault_id
        self.status = status
        self.retry_after_ms = retry_after_ms


class ProviderCommit(Protocol):
    """The provider's notice for a response it sent ahead of its log commit (docs/adr/0038)."""

    async def wait(self, *, seconds: float) -> None:
        """Return once the provider's record of the response is durable.

        Raises :class:`PeerRefusal` when the provider undid the response (its record could not
        be logged: its ``logging_failed``, fault id and status), :class:`TimeoutError` when
        ``seconds`` pass first, and :class:`~security_server.errors.TransportError` when the
        link broke first (the record may or may not be durable). In every such case the
        response must not reach the caller.
        """
        ...


#: A provider server's signed response, with its :class:`ProviderCommit` when it was sent
#: ahead of the provider's log commit (``None``: the provider's record is durable already).
Reply = tuple[transport_pb2.SignedMessage, ProviderCommit | None]


class ProviderLink(Protocol):
    """A connection to one provider server, made before anything is signed."""

    @property
    def server(self) -> SecurityServer:
        """The server the link reaches (the request names it as receiver)."""
        ...

    async def exchange(self, message: MessageParts, *, seconds: float) -> Reply:
        """Send ``message`` (a serialised ``SignedMessage`` in parts,
        :func:`~security_server.frames.signed_message_parts`) and return the server's signed
        response (not yet checked), with its :class:`ProviderCommit` when the response came
        ahead of the provider's commit.

        Raises :class:`PeerRefusal` when the server refused it, :class:`TimeoutError` when
        ``seconds`` pass first, and :class:`~security_server.errors.TransportError` when it
        could not be reached (the message may or may not have arrived).
        """
        ...


class PeerLinks(Protocol):
    """How the consumer reaches provider servers."""

    @property
    def frames(self) -> bool:
        """Whether messages travel several per frame."""
        ...

    async def connect(
        self, servers: Sequence[SecurityServer], anchors: Sequence[x509.Certificate]
    ) -> ProviderLink:
        """A link to one of ``servers`` (one member's) that can be reached, its identity pinned
        to the configuration: the first that answers, in an order that spreads calls over them
        (at most :data:`MAX_PROVIDER_SERVERS_TRIED` are tried). Raises the last
        :class:`~security_server.errors.TransportError` when none can be reached."""
        ...

    async def close(self) -> None:
        """End every link (exchanges still waiting get a TransportError)."""
        ...


class GrpcPeerLinks:
    """The real links: gRPC over pinned mutual TLS (see the module docstring)."""

    def __init__(
        self,
        channels: PeerChannels,
        *,
        frames: bool,
        on_frame: Callable[[int], None] | None = None,
        responses_ahead: bool = False,
    ) -> None:
        self._channels = channels
        self._links = (
            FrameLinks(
                on_frame=on_frame,
                capabilities=stream_capabilities(
                    responses_ahead=responses_ahead,
                    max_message_bytes=channels.max_message_bytes,
                ),
            )
            if frames
            else None
        )
        # Providers that do not offer frames, remembered and called once per message.
        self._unary_only: set[ServerId] = set()
        # Transport.Exchange callables, made once per peer channel (by the channel's id; the
        # channel is kept beside its callable so a reused id is never mistaken for it). Requests
        # go as serialised already.
        self._exchange_calls: dict[
            int,
            tuple[
                grpc.aio.Channel,
                grpc.aio.UnaryUnaryMultiCallable[bytes, transport_pb2.SignedMessage],
            ],
        ] = {}

    @property
    def frames(self) -> bool:
        return self._links is not None

    async def connect(
        self, servers: Sequence[SecurityServer], anchors: Sequence[x509.Certificate]
    ) -> ProviderLink:
        # Made only when no server could be used (an exception per call cost ~3 us).
        failure: TransportError | None = None
        # Round robin over the member's servers, those that failed lately last (balance.py).
        for server in self._channels.order(servers)[:MAX_PROVIDER_SERVERS_TRIED]:
            try:
                channel = await self._channels.channel(server, anchors)
            except TransportError as exc:
                _log.warning("provider server %s unusable: %s", server.id, exc.message)
                failure = exc
                continue
            return _GrpcProviderLink(self, server, channel)
        raise failure or TransportError("the provider's member lists no security server")

    async def close(self) -> None:
        if self._links is not None:
            await self._links.close()

    async def _exchange(
        self,
        server: SecurityServer,
        channel: grpc.aio.Channel,
        message: MessageParts,
        seconds: float,
    ) -> Reply:
        # Its size decides the path; the frame carries its parts, joined once. (A server id is
        # hashed through its nested identifiers: looked up only when some server is unary only.)
        links = self._links
        if (
            links is not None
            and not (self._unary_only and server.id in self._unary_only)
            and links.fits_size(sum(map(len, message)))
        ):
            # Framed, in this coroutine (one frame fewer to resume per exchange).
            link = links.link(channel)
            try:
                result, commit = await link.send(message, seconds=seconds)
            except FramesUnsupportedError:
                self._unary_only.add(server.id)
                _log.warning("provider server %s takes one call per message", server.id)
            except TransportError:
                raise self._link_failed(server) from None
            else:
                if result.HasField("response"):
                    return result.response, (
                        None if commit is None else _FramedCommit(self, server, commit)
                    )
                raise self._refused(server, result.refusal)
        return await self._unary(server, channel, b"".join(message), seconds), None

    def _link_failed(self, server: SecurityServer) -> TransportError:
        self._channels.discard(server)
        return TransportError(f"security server {server.id} could not be reached (the link failed)")

    @staticmethod
    def _refused(server: SecurityServer, refusal: transport_pb2.Refusal) -> Exception:
        """A framed refusal as the consumer passes it on (an unknown fault: a TransportError)."""
        try:
            fault: Fault | None = Fault(refusal.fault)
        except ValueError:
            return TransportError(
                f"security server {server.id} refused the request with an unknown fault"
            )
        return PeerRefusal(
            refusal.message,
            fault=fault,
            fault_id=refusal.fault_id or None,
            status=status_from_code(refusal.status_code),
            retry_after_ms=min(refusal.retry_after_ms, MAX_RETRY_AFTER_MS) or None,
        )

    async def _unary(
        self,
        server: SecurityServer,
        channel: grpc.aio.Channel,
        message: bytes,
        seconds: float,
    ) -> transport_pb2.SignedMessage:
        made = self._exchange_calls.get(id(channel))
        if made is not None and made[0] is channel:
            exchange = made[1]
        else:
            exchange = channel.unary_unary(
                EXCHANGE_PATH,
                request_serializer=None,
                response_deserializer=transport_pb2.SignedMessage.FromString,
            )
            if len(self._exchange_calls) >= MAX_CACHED_PEER_CALLS:
                self._exchange_calls.clear()  # channels replaced after failures: start over
            self._exchange_calls[id(channel)] = (channel, exchange)
        try:
            response: transport_pb2.SignedMessage = await exchange(message, timeout=seconds)
        except grpc.aio.AioRpcError as exc:
            fault, fault_id = fault_from_rpc_error(exc)
            if fault is not None:
                raise PeerRefusal(
                    exc.details() or "",
                    fault=fault,
                    fault_id=fault_id,
                    status=exc.code(),
                    retry_after_ms=retry_after_of(exc.trailing_metadata()),
                ) from None
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                self._channels.discard(server)
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError from None
            raise TransportError(
                f"security server {server.id} could not be reached ({exc.code().name})"
            ) from None
        return response


class _FramedCommit:
    """A :class:`ProviderCommit` over a frames link: the notice's future (docs/adr/0038)."""

    __slots__ = ("_future", "_owner", "_server")

    def __init__(
        self,
        owner: GrpcPeerLinks,
        server: SecurityServer,
        future: asyncio.Future[CommitNotice],
    ) -> None:
        self._owner = owner
        self._server = server
        self._future = future

    async def wait(self, *, seconds: float) -> None:
        future = self._future
        if future.done():
            notice = future.result()
        else:
            # What frames.within does, in this frame (one coroutine fewer per exchange).
            timer = asyncio.get_running_loop().call_later(seconds, expire, future)
            try:
                notice = await future
            finally:
                timer.cancel()
        if notice is None:
            return
        if isinstance(notice, TransportError):
            raise self._owner._link_failed(self._server)
        raise self._owner._refused(self._server, notice)


class _GrpcProviderLink:
    def __init__(
        self, owner: GrpcPeerLinks, server: SecurityServer, channel: grpc.aio.Channel
    ) -> None:
        self._owner = owner
        self._server = server
        self._channel = channel

    @property
    def server(self) -> SecurityServer:
        return self._server

    def exchange(self, message: MessageParts, *, seconds: float) -> Coroutine[Any, Any, Reply]:
        # The owner's coroutine itself, not one awaiting it (one frame fewer to resume).
        return self._owner._exchange(self._server, self._channel, message, seconds)
