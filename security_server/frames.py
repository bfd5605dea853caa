"""Several messages per frame on the server-to-server link (DESIGN.md): both ends.

Consumer side: a :class:`FrameLink` keeps one ``Transport.ExchangeFrames`` stream open on a pinned
channel to one provider server. Every exchange puts its signed request in the link's outbox with a
tag and waits for the result with that tag; one writer task sends everything waiting in the outbox
as one frame (bounded by :data:`MAX_FRAME_REQUESTS` and
:data:`~security_server.transport.MAX_FRAME_BYTES`, or
:data:`~security_server.transport.LARGE_FRAME_BYTES` once the provider confirmed
:data:`LARGE_REQUEST_FRAMES`, docs/adr/0050; a message larger than ``MAX_FRAME_BYTES`` is not
framed but sent over ``Exchange``, so it is refused alone if it is too large for the provider),
one reader task hands each result of each incoming frame to its waiter. Under load a frame
carries many requests, so one gRPC write and one read serve many exchanges instead of one unary
call each; alone, a request goes in a frame of its own at once. Nothing about a message
changes: it is signed, verified and logged exactly as over ``Transport.Exchange`` (the provider
runs the same code for each), and a provider's refusal comes back per message with the same
fault code, id and status. A request is serialised once, before it is put in the outbox, and a
frame is written as its requests' bytes joined (:func:`framed_request_parts`): a 64 KiB body is
copied twice on its way out (into the frame, into gRPC), not once per protobuf wrapper and size
check.

When the stream breaks (network, provider restart) every waiting exchange gets
``server.consumer.network_error`` and the link is replaced on the next call. A provider that does
not offer ``ExchangeFrames`` (an older version) is remembered and called over ``Exchange``.

Responses ahead of the provider's commit (docs/adr/0038): a link may offer capabilities in the
stream's metadata (``ruta-frames-capabilities``); the provider confirms those it accepts in its
initial metadata. With ``response-ahead`` agreed, the provider may write a response as soon as it
is signed, with ``commit_pending``, commit its log record meanwhile and then send a notice:
the response's tag in ``ResultFrame.durable``, or a refusal in ``ResultFrame.undone``. It chooses
per response (not under load, and while its log's commits are slow enough: docs/adr/0048);
any other response comes durable, without ``commit_pending``.
:meth:`FrameLink.send` returns such a response at once with a future for its notice;
:meth:`FrameLink.exchange` waits for the notice itself. A provider that sends a response ahead
without having agreed to is breaking the protocol: the link fails.

Provider side: a :class:`FramesStream` serves one ``ExchangeFrames`` call. Each request it reads
is handled exactly as one ``Transport.Exchange`` call (same checks, log records and faults), in a
task of its own; results go back, several per frame (up to
:data:`~security_server.transport.LARGE_FRAME_BYTES`, a larger one alone), as they are ready.
Reading pauses at :data:`MAX_STREAM_IN_FLIGHT` requests of the stream, and at the transport
port's ``max_concurrent_calls`` on all streams together.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

import grpc
import grpc.aio

from ruta.tasks import TaskOwner
from ruta.v1 import transport_pb2
from ruta.wire import varint
from security_server.errors import FramesUnsupportedError, MalformedMessageError, TransportError
from security_server.transport import LARGE_FRAME_BYTES, MAX_FRAME_BYTES, holds_large_frames

__all__ = [
    "CAPABILITIES_HEADER",
    "FRAMES_PATH",
    "LARGE_REQUEST_FRAMES",
    "MAX_FRAME_REQUESTS",
    "MAX_STREAM_IN_FLIGHT",
    "RESPONSE_AHEAD",
    "CommitNotice",
    "FrameLink",
    "FrameLinks",
    "FramesStream",
    "FramesUnsupportedError",
    "MessageParts",
    "SendAhead",
    "capabilities_metadata",
    "capabilities_of",
    "expire",
    "framed_request_parts",
    "framed_result_parts",
    "result_frame_bytes",
    "signed_message_parts",
    "stream_capabilities",
    "within",
]

_log = logging.getLogger(__name__)

FRAMES_PATH: Final = "/ruta.v1.Transport/ExchangeFrames"
#: Most requests written in one frame (the provider refuses more).
MAX_FRAME_REQUESTS: Final = 1024
#: Most framed requests one stream may have in flight on the provider (reading waits beyond it).
MAX_STREAM_IN_FLIGHT: Final = 1024
#: Room for a framed request's tag and timeout around its message.
FRAMED_OVERHEAD_BYTES: Final = 32
#: Largest ``timeout_ms`` (a uint32).
_MAX_UINT32: Final = 2**32 - 1
#: Links kept, one per peer channel; replaced channels' links are dropped past this.
MAX_LINKS: Final = 64
#: The metadata key in which a consumer offers, and a provider confirms, stream capabilities
#: (comma-separated tokens; unknown ones are ignored).
CAPABILITIES_HEADER: Final = "ruta-frames-capabilities"
#: Longest capabilities value read (longer: none are taken).
MAX_CAPABILITIES_BYTES: Final = 256
#: The capability of responses sent ahead of the provider's log commit (docs/adr/0038).
RESPONSE_AHEAD: Final = "response-ahead"
#: The capability of request frames up to :data:`~security_server.transport.LARGE_FRAME_BYTES`
#: instead of :data:`~security_server.transport.MAX_FRAME_BYTES` (docs/adr/0050): a provider
#: confirms it when its gRPC limit holds such a frame.
LARGE_REQUEST_FRAMES: Final = "large-request-frames"

#: What a response's durability notice says: ``None`` once the provider's record of it is
#: durable, the refusal that undoes it, or the link's failure (the record may or may not be
#: durable; the caller is not answered either way).
CommitNotice: TypeAlias = transport_pb2.Refusal | TransportError | None
#: What the consumer's reader hands a waiting exchange: its result, and the future of its notice
#: when the response came ahead of the provider's commit.
_Arrived: TypeAlias = tuple[transport_pb2.FramedResult, "asyncio.Future[CommitNotice] | None"]


def capabilities_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> frozenset[str]:
    """The capability tokens named in ``metadata``'s :data:`CAPABILITIES_HEADER` (bounded)."""
    tokens: set[str] = set()
    for key, value in metadata or ():
        if key != CAPABILITIES_HEADER or not isinstance(value, str):
            continue
        if len(value) > MAX_CAPABILITIES_BYTES:
            return frozenset()
        tokens.update(token.strip() for token in value.split(","))
    tokens.discard("")
    return frozenset(tokens)


def stream_capabilities(*, responses_ahead: bool, max_message_bytes: int) -> frozenset[str]:
    """A server's frames capabilities, the same rule both ways: what its links offer as a
    consumer and what it agrees to as a provider when a consumer offers them.
    :data:`RESPONSE_AHEAD` if it takes or sends responses ahead (``[transport]
    responses_ahead``), and :data:`LARGE_REQUEST_FRAMES` if its own gRPC limits, for
    ``max_message_bytes`` (``[limits]``, applied at start), hold a frame of
    :data:`~security_server.transport.LARGE_FRAME_BYTES`
    (:func:`~security_server.transport.holds_large_frames`: gRPC holds a server to its limit
    on its port and on its channels, sending and receiving)."""
    capabilities = {RESPONSE_AHEAD} if responses_ahead else set()
    if holds_large_frames(max_message_bytes):
        capabilities.add(LARGE_REQUEST_FRAMES)
    return frozenset(capabilities)


def result_frame_bytes(max_message_bytes: int) -> int:
    """The bound of the result frames a provider server configured with ``max_message_bytes``
    writes (docs/adr/0050): :data:`~security_server.transport.LARGE_FRAME_BYTES` where its own
    gRPC send limit holds such a frame, otherwise
    :data:`~security_server.transport.MAX_FRAME_BYTES` (a larger frame would fail the whole
    stream on gRPC's limit)."""
    return LARGE_FRAME_BYTES if holds_large_frames(max_message_bytes) else MAX_FRAME_BYTES


def capabilities_metadata(capabilities: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """``capabilities`` as the metadata that offers (or confirms) them."""
    return ((CAPABILITIES_HEADER, ",".join(sorted(capabilities))),) if capabilities else ()


# Wire keys of the fields a consumer writes (ruta/v1/transport.proto): RequestFrame.requests (1,
# length-delimited); FramedRequest.tag (1, varint), .message (2, length-delimited), .timeout_ms
# (3, varint). Written in field-number order, as deterministic serialisation writes them.
_REQUESTS_KEY: Final = b"\x0a"
_TAG_KEY: Final = b"\x08"
_MESSAGE_KEY: Final = b"\x12"
_TIMEOUT_KEY: Final = b"\x18"
# And those a provider writes: ResultFrame.results (1, length-delimited); FramedResult.tag (1,
# varint), .response (2) or .refusal (3), both length-delimited.
_RESULTS_KEY: Final = b"\x0a"
_RESPONSE_KEY: Final = b"\x12"
_REFUSAL_KEY: Final = b"\x1a"
# And with response-ahead (docs/adr/0038): FramedResult.commit_pending (4, varint) set;
# ResultFrame.durable (2, packed varints) and .undone (3, length-delimited).
_COMMIT_PENDING: Final = b"\x20\x01"
_DURABLE_KEY: Final = b"\x12"
_UNDONE_KEY: Final = b"\x1a"


#: A serialised ``SignedMessage`` in parts (:func:`signed_message_parts`): joined, its bytes.
MessageParts: TypeAlias = tuple[bytes, ...]
# SignedMessage's wire keys: header (1), body (2), signature (3), all length-delimited.
_HEADER_KEY: Final = b"\x0a"
_BODY_KEY: Final = b"\x12"
_SIGNATURE_KEY: Final = b"\x1a"


def signed_message_parts(header: bytes, body: bytes, signature: bytes) -> MessageParts:
    """The ``SignedMessage`` of ``header`` (serialised header bytes), ``body`` and
    ``signature`` (a serialised ``Signature``) as :data:`MessageParts`: joined, exactly the
    bytes protobuf writes for it (a unit test holds them to it; an empty field is left out as
    protobuf leaves it out). Kept apart, so the body is copied once, into the frame, instead of
    into a message, its serialisation and the frame."""
    parts: list[bytes] = []
    if header:
        parts += (_HEADER_KEY + varint(len(header)), header)
    if body:
        parts += (_BODY_KEY + varint(len(body)), body)
    if signature:
        parts += (_SIGNATURE_KEY + varint(len(signature)), signature)
    return tuple(parts)


def framed_request_parts(
    tag: int, message: bytes | MessageParts, timeout_ms: int
) -> tuple[bytes, ...]:
    """One ``FramedRequest`` as it sits in a ``RequestFrame`` (its ``requests`` key and length
    included), in parts: what goes before the serialised ``SignedMessage`` ``message`` (bytes,
    or :data:`MessageParts`), the message's parts, and what follows it. Joined, they are exactly
    the bytes protobuf's deterministic serialisation writes for that element (a unit test holds
    them to it); kept apart, so the message is copied once, into the frame."""
    parts = (message,) if isinstance(message, bytes) else message
    size = sum(map(len, parts))
    suffix = _TIMEOUT_KEY + varint(timeout_ms) if timeout_ms else b""
    head = _TAG_KEY + varint(tag) if tag else b""
    head += _MESSAGE_KEY + varint(size)
    return (_REQUESTS_KEY + varint(len(head) + size + len(suffix)) + head, *parts, suffix)


def framed_result_parts(
    tag: int, outcome: transport_pb2.SignedMessage | transport_pb2.Refusal
) -> tuple[bytes, bytes]:
    """One ``FramedResult`` (the response or the refusal of request ``tag``) as it sits in a
    ``ResultFrame`` (its ``results`` key and length included), in two parts: what goes before
    the serialised ``outcome``, and that. Joined, they are exactly the bytes protobuf writes for
    that element (a unit test holds them to it), without the copies of wrapping the response in
    a ``FramedResult`` and that in a ``ResultFrame``."""
    encoded = outcome.SerializeToString(deterministic=True)
    key = _REFUSAL_KEY if isinstance(outcome, transport_pb2.Refusal) else _RESPONSE_KEY
    head = (_TAG_KEY + varint(tag) if tag else b"") + key + varint(len(encoded))
    return _RESULTS_KEY + varint(len(head) + len(encoded)) + head, encoded


def _pending_result_parts(
    tag: int, response: transport_pb2.SignedMessage
) -> tuple[bytes, bytes, bytes]:
    """As :func:`framed_result_parts`, for a response sent ahead of its record's commit: with
    ``commit_pending`` after the response (field order; docs/adr/0038)."""
    encoded = response.SerializeToString(deterministic=True)
    head = (_TAG_KEY + varint(tag) if tag else b"") + _RESPONSE_KEY + varint(len(encoded))
    length = len(head) + len(encoded) + len(_COMMIT_PENDING)
    return _RESULTS_KEY + varint(length) + head, encoded, _COMMIT_PENDING


_T = TypeVar("_T")


def expire(future: asyncio.Future[Any]) -> None:
    """End ``future`` with :class:`TimeoutError` unless it is done (a timer's callback: what
    :func:`within` arms, for callers that await a future in their own frame)."""
    if not future.done():
        future.set_exception(TimeoutError())


async def within(future: asyncio.Future[_T], seconds: float) -> _T:
    """``await future``, or :class:`TimeoutError` once ``seconds`` pass first (``future`` then
    ends with it: its result is not wanted any more). What ``asyncio.timeout`` does around
    awaiting one future, with one timer and no cancelling and un-cancelling of the task (two
    of these per exchange on the consumer). Cancelling the caller cancels ``future``, as
    awaiting it directly does."""
    if future.done():
        return future.result()
    timer = asyncio.get_running_loop().call_later(seconds, expire, future)
    try:
        return await future
    finally:
        timer.cancel()


class FrameLink:
    """One ``ExchangeFrames`` stream to one provider server (see the module docstring)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        on_frame: Callable[[int], None] | None = None,
        capabilities: frozenset[str] = frozenset(),
    ) -> None:
        self._channel = channel
        self._on_frame = on_frame
        #: Offered in the stream's metadata; :attr:`agreed` once the provider confirmed them.
        self._offered = capabilities
        self.agreed: frozenset[str] = frozenset()
        # The largest request frame written: larger once the provider confirmed it takes one.
        self._frame_bytes = MAX_FRAME_BYTES
        # Frames are written as bytes already serialised (see _next_frame).
        open_stream: grpc.aio.StreamStreamMultiCallable[bytes, transport_pb2.ResultFrame] = (
            channel.stream_stream(
                FRAMES_PATH,
                request_serializer=None,
                response_deserializer=transport_pb2.ResultFrame.FromString,
            )
        )
        self._call = open_stream(metadata=capabilities_metadata(capabilities) or None)
        # Each waiting request as the parts of its serialised FramedRequest element.
        self._outbox: collections.deque[tuple[bytes, ...]] = collections.deque()
        # By tag: the result, with the future of its notice when it came ahead of the
        # provider's commit.
        self._waiting: dict[int, asyncio.Future[_Arrived]] = {}
        # Notices awaited for responses that came with commit_pending, by tag: made by the
        # reader with the result, resolved and dropped by it with the notice (a future's value,
        # never its exception, so an abandoned one logs nothing). A provider holds each such
        # request's place in its in-flight bound until its notice is written, so more than
        # MAX_STREAM_IN_FLIGHT here is a provider breaking the protocol.
        self._commits: dict[int, asyncio.Future[CommitNotice]] = {}
        # What the writer awaits while the outbox is empty (a bare future: set by the next
        # request or by a failure; an asyncio.Event cost a future and five Python calls a wake).
        self._idle: asyncio.Future[None] | None = None
        self._tags = itertools.count(1)
        self._failure: TransportError | None = None
        #: Frames and requests written so far (how full the frames run).
        self.frames_written = 0
        self.requests_written = 0
        # The link's two tasks, owned by it: closing the link ends both.
        self._tasks = TaskOwner()
        self._tasks.spawn(self._write(), name="ruta-frames-writer")
        self._tasks.spawn(self._read(), name="ruta-frames-reader")

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    @property
    def usable(self) -> bool:
        """False once the stream has failed or been closed."""
        return self._failure is None

    async def exchange(
        self, message: transport_pb2.SignedMessage | bytes, *, seconds: float
    ) -> transport_pb2.FramedResult:
        """Send ``message`` (a ``SignedMessage``, or one serialised) in the next frame and return
        its final result (a response whose provider record is durable, or a refusal: also the
        one that undoes a response sent ahead).

        Raises :class:`TimeoutError` when ``seconds`` (the caller's deadline) pass first, and
        :class:`~security_server.transport.TransportError` (``network_error``, or
        :class:`FramesUnsupportedError`) when the stream fails before the result arrives.
        """
        deadline = asyncio.get_running_loop().time() + seconds
        result, commit = await self.send(message, seconds=seconds)
        if commit is None:
            return result
        async with asyncio.timeout_at(deadline):
            notice = await commit
        if notice is None:
            return result
        if isinstance(notice, TransportError):
            raise notice
        return transport_pb2.FramedResult(tag=result.tag, refusal=notice)

    async def send(
        self, message: transport_pb2.SignedMessage | bytes | MessageParts, *, seconds: float
    ) -> tuple[transport_pb2.FramedResult, asyncio.Future[CommitNotice] | None]:
        """Send ``message`` (a ``SignedMessage``, or one serialised, whole or in
        :data:`MessageParts`) in the next frame and return its result as soon as it arrives,
        with, for a response sent ahead of the provider's commit (``commit_pending``), the
        future of its notice (:data:`CommitNotice`): the response may be used only once that
        says durable. Raises as :meth:`exchange`.
        """
        if self._failure is not None:
            raise self._failure
        tag = next(self._tags)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Arrived] = loop.create_future()
        self._waiting[tag] = future
        encoded = (
            message.SerializeToString()
            if isinstance(message, transport_pb2.SignedMessage)
            else message
        )
        self._outbox.append(
            framed_request_parts(tag, encoded, min(_MAX_UINT32, max(1, int(seconds * 1000))))
        )
        idle = self._idle  # the writer's wake-up (_wake), inline: once per exchange
        if idle is not None:
            self._idle = None
            if not idle.done():
                idle.set_result(None)
        # What within() does, in this frame (one coroutine fewer per exchange).
        timer = loop.call_later(seconds, expire, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(tag, None)

    async def close(self) -> None:
        """Fail whatever waits, end the stream, stop both tasks."""
        self._fail(TransportError("the link to the provider server was closed"))
        await self._tasks.cancel()

    async def _write(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            while self._failure is None:
                if not self._outbox:
                    # Nothing awaits between the check and the future being in place, so a
                    # request put in the outbox after it finds the future (_wake).
                    idle: asyncio.Future[None] = loop.create_future()
                    self._idle = idle
                    await idle
                    continue
                frame, requests = self._next_frame()
                await self._call.write(frame)
                self.frames_written += 1
                self.requests_written += requests
                if self._on_frame is not None:
                    self._on_frame(requests)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any write failure ends the link
            self._fail(self._stream_error(exc))

    def _wake(self) -> None:
        """Wake the writer if it waits for the outbox (see :meth:`_write`)."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():
                idle.set_result(None)

    def _next_frame(self) -> tuple[bytes, int]:
        """The next serialised ``RequestFrame`` from the outbox, and how many requests it
        carries: its elements' bytes joined (one copy of each message)."""
        parts: list[bytes] = []
        size = 0
        requests = 0
        outbox = self._outbox
        limit = self._frame_bytes
        while outbox and requests < MAX_FRAME_REQUESTS:
            item = outbox[0]
            item_size = sum(map(len, item))
            if requests and size + item_size > limit:
                break
            outbox.popleft()
            parts += item
            size += item_size
            requests += 1
        return b"".join(parts), requests

    async def _read(self) -> None:
        try:
            if self._offered:
                self.agreed = self._offered & capabilities_of(await self._call.initial_metadata())
                if LARGE_REQUEST_FRAMES in self.agreed:
                    self._frame_bytes = LARGE_FRAME_BYTES
            ahead = RESPONSE_AHEAD in self.agreed
            async for frame in self._call:
                if not self._deliver(frame, ahead=ahead):
                    return
            self._fail(TransportError("the provider server ended the frames stream"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any read failure ends the link
            self._fail(self._stream_error(exc))

    def _deliver(self, frame: transport_pb2.ResultFrame, *, ahead: bool) -> bool:
        """Hand each result and notice of ``frame`` to its waiter; false when the frame broke
        the protocol (the link has failed)."""
        commits = self._commits
        for result in frame.results:
            if result.commit_pending and not ahead:
                self._fail(
                    TransportError(
                        "the provider server sent a response ahead of its log commit on a "
                        "stream that did not agree to it"
                    )
                )
                return False
            future = self._waiting.get(result.tag)
            if future is None or future.done():
                continue
            if not result.commit_pending:
                future.set_result((result, None))
                continue
            if len(commits) >= MAX_STREAM_IN_FLIGHT:
                self._fail(
                    TransportError(
                        "the provider server left too many responses without their "
                        "durability notice"
                    )
                )
                return False
            commit: asyncio.Future[CommitNotice] = asyncio.get_running_loop().create_future()
            commits[result.tag] = commit
            future.set_result((result, commit))
        for tag in frame.durable:
            notified = commits.pop(tag, None)
            if notified is not None and not notified.done():
                notified.set_result(None)
        for undone in frame.undone:
            notified = commits.pop(undone.tag, None)
            if notified is not None and not notified.done():
                notified.set_result(undone.refusal)
        return True

    @staticmethod
    def _stream_error(exc: Exception) -> TransportError:
        if isinstance(exc, grpc.aio.AioRpcError):
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return FramesUnsupportedError(
                    "the provider server does not offer Transport.ExchangeFrames"
                )
            return TransportError(
                f"the frames stream to the provider server failed ({exc.code().name})"
            )
        return TransportError("the frames stream to the provider server failed")

    def _fail(self, error: TransportError) -> None:
        if self._failure is not None:
            return
        self._failure = error
        if not isinstance(error, FramesUnsupportedError):
            _log.info("frames link closed: %s", error.message)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()
        # Responses sent ahead whose notice never came: undone (their callers are not answered).
        for commit in self._commits.values():
            if not commit.done():
                commit.set_result(error)
        self._commits.clear()
        self._outbox.clear()
        self._call.cancel()
        self._wake()


class FrameLinks:
    """One :class:`FrameLink` per peer channel, made on first use and replaced once failed."""

    @staticmethod
    def fits_size(size: int) -> bool:
        """Whether a serialised ``SignedMessage`` of ``size`` bytes travels framed."""
        return size <= MAX_FRAME_BYTES - FRAMED_OVERHEAD_BYTES

    def __init__(
        self,
        *,
        on_frame: Callable[[int], None] | None = None,
        capabilities: frozenset[str] = frozenset(),
    ) -> None:
        #: Told the number of requests of every frame written (metrics).
        self._on_frame = on_frame
        #: Offered on every stream (docs/adr/0038).
        self._capabilities = capabilities
        # By the channel's id; the link holds its channel, so a reused id is never mistaken.
        self._links: dict[int, FrameLink] = {}
        # Closing links that were replaced (a failed link's close, not waited for by a call).
        self._retired = TaskOwner()

    def link(self, channel: grpc.aio.Channel) -> FrameLink:
        """The usable link on ``channel``, opened if need be. Raises :class:`TransportError`
        (peer unreachable) when the channel was closed meanwhile."""
        link = self._links.get(id(channel))
        if link is not None and link.channel is channel and link.usable:
            return link
        if link is not None:
            self._retire(link)
        if len(self._links) >= MAX_LINKS:
            for old in self._links.values():
                self._retire(old)
            self._links.clear()
        try:
            link = FrameLink(channel, on_frame=self._on_frame, capabilities=self._capabilities)
        except grpc.aio.UsageError:
            # Another call saw this peer's link fail and closed the channel under this one.
            raise TransportError("the link to the provider server was closed; retry") from None
        self._links[id(channel)] = link
        return link

    def _retire(self, link: FrameLink) -> None:
        self._retired.spawn(link.close(), name="ruta-frames-link-close")

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
        await self._retired.wait()


@dataclass(frozen=True, slots=True)
class _Pending:
    """A response sent ahead of its record's commit: its ``FramedResult`` element's parts (with
    ``commit_pending``)."""

    parts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Undone:
    """The refusal that replaces a response sent ahead whose record did not become durable: its
    ``FramedResult`` element's parts, under ``ResultFrame.undone``."""

    parts: tuple[bytes, ...]


#: What a request's task hands the stream's writer: a result's parts, a response sent ahead, the
#: tag of a response sent ahead that is now durable, a response sent ahead undone, or ``None``
#: (the stream may end).
_Outgoing: TypeAlias = tuple[bytes, bytes] | _Pending | int | _Undone | None

#: Room counted in a frame for one durable tag (a varint of at most ten bytes).
_TAG_ROOM: Final = 10


def _outgoing_size(item: _Outgoing) -> int:
    """The bytes ``item`` adds to a result frame (for a durable tag, at most)."""
    if isinstance(item, tuple):
        return len(item[0]) + len(item[1])
    if isinstance(item, _Pending | _Undone):
        return sum(map(len, item.parts))
    return _TAG_ROOM if isinstance(item, int) else 0


#: Sends a signed response ahead of its log commit (docs/adr/0038).
SendAhead: TypeAlias = Callable[[transport_pb2.SignedMessage], None]


class FramesStream:
    """One ``ExchangeFrames`` call on the provider side: a reader task starts one task per
    request (``answer`` handles it as ``Transport.Exchange`` would and gives its outcome, a
    response or a refusal), the call's own task writes results back in frames (``write``, a
    serialised ``ResultFrame``: the results' parts joined, :func:`framed_result_parts`) as they
    complete; ``on_frame`` is told each frame's size.

    With ``ahead`` (the stream agreed on ``response-ahead``, docs/adr/0038) ``answer`` gets a
    :data:`SendAhead`: it may send a signed response before its log record is durable (written
    with ``commit_pending``), and what it returns then is that response's notice: the response
    again once its record is durable (the tag goes in ``ResultFrame.durable``), or a refusal
    (in ``ResultFrame.undone``). A request's place in the stream's bounds is held until its
    final word, the notice, is written.
    """

    def __init__(
        self,
        frames: AsyncIterator[transport_pb2.RequestFrame],
        *,
        answer: Callable[
            [transport_pb2.FramedRequest, SendAhead | None],
            Awaitable[transport_pb2.SignedMessage | transport_pb2.Refusal],
        ],
        write: Callable[[bytes], Awaitable[None]],
        on_frame: Callable[[int], None],
        max_frame_bytes: int,
        shared_room: asyncio.Semaphore,
        ahead: bool = False,
    ) -> None:
        self._answer_one = answer
        self._ahead = ahead
        self._on_frame = on_frame
        # Framed requests in flight on every stream of this server together (the transport
        # port's max_concurrent_calls): many streams do not multiply the bound.
        self._shared_room = shared_room
        self._held = 0  # places taken in the shared room and not yet given back
        self._frames = frames
        self._write = write
        self._max_frame_bytes = max_frame_bytes
        # None: everything read has been answered; the stream may end.
        self._results: asyncio.Queue[_Outgoing] = asyncio.Queue()
        # What did not fit in the last frame written: the first of the next one.
        self._carried: list[_Outgoing] = []
        self._room = asyncio.Semaphore(MAX_STREAM_IN_FLIGHT)
        # The stream's own tasks (reader, drain watcher) and one task per request read: none
        # outlives the stream.
        self._own = TaskOwner()
        self._requests = TaskOwner()
        self._draining = False

    async def run(self, draining: asyncio.Event) -> None:
        """Serve the stream until the consumer ends it or ``draining`` is set (then finish what
        was read); raises :class:`~security_server.errors.MalformedMessageError` for a
        malformed frame."""
        reader = self._own.spawn(self._read(), name="ruta-frames-reader")

        def stop_reading(_: object) -> None:
            self._draining = True
            if not reader.done():
                reader.cancel()

        watcher = self._own.spawn(draining.wait(), name="ruta-frames-drain")
        watcher.add_done_callback(stop_reading)
        try:
            while (first := await self._next()) is not None:
                frame, results, finished = self._frame(first)
                await self._write(frame)
                if results:  # a frame of notices alone carries no message
                    self._on_frame(results)
                for _ in range(finished):
                    # A request's place is free once its (final) result is written.
                    self._room.release()
                    self._shared_room.release()
                    self._held -= 1
            await reader
        finally:
            await self._own.cancel()
            await self._requests.cancel()
            for _ in range(self._held):  # results never written: their places go back
                self._shared_room.release()
            self._held = 0

    async def _next(self) -> _Outgoing:
        """The first element of the next frame: the one the last frame had no room for, or the
        next one ready."""
        if self._carried:
            return self._carried.pop()
        return await self._results.get()

    def _frame(
        self, first: tuple[bytes, bytes] | _Pending | int | _Undone
    ) -> tuple[bytes, int, int]:
        """A serialised ``ResultFrame`` of ``first`` and what is ready after it, no larger than
        ``max_frame_bytes`` unless ``first`` alone is (it then goes alone; what would not fit is
        the next frame's first); how many results it carries, and how many requests it
        finishes (a response sent ahead finishes with its notice). Results come first, then the
        durable tags, then the undone refusals: field order, as deterministic serialisation
        writes them."""
        parts: list[bytes] = []
        durable: list[bytes] = []
        undone: list[bytes] = []
        results = finished = size = 0
        item: _Outgoing = first
        while True:
            if isinstance(item, tuple):
                parts += item
                results += 1
                finished += 1
            elif isinstance(item, _Pending):
                parts += item.parts
                results += 1
            elif isinstance(item, int):
                durable.append(varint(item))
                finished += 1
            elif isinstance(item, _Undone):
                undone += item.parts
                finished += 1
            size += _outgoing_size(item)
            if self._results.empty():
                break
            item = self._results.get_nowait()
            if item is None:
                self._results.put_nowait(None)  # ends the stream after this frame
                break
            if size + _outgoing_size(item) > self._max_frame_bytes:
                self._carried.append(item)
                break
        if durable:
            tags = b"".join(durable)
            parts += (_DURABLE_KEY, varint(len(tags)), tags)
        parts += undone
        return b"".join(parts), results, finished

    async def _read(self) -> None:
        try:
            try:
                async for frame in self._frames:
                    if len(frame.requests) > MAX_FRAME_REQUESTS:
                        raise MalformedMessageError(
                            f"a frame carries at most {MAX_FRAME_REQUESTS} requests"
                        )
                    for item in frame.requests:
                        await self._room.acquire()
                        await self._shared_room.acquire()
                        self._held += 1
                        self._requests.spawn(self._answer(item), name="ruta-framed-request")
            except asyncio.CancelledError:
                if not self._draining:
                    raise
                # The server is stopping: read no more, but answer what was read.
            await self._requests.wait()
        finally:
            self._results.put_nowait(None)

    async def _answer(self, item: transport_pb2.FramedRequest) -> None:
        results = self._results
        tag = item.tag
        if not self._ahead:
            results.put_nowait(framed_result_parts(tag, await self._answer_one(item, None)))
            return
        sent = False

        def send_ahead(response: transport_pb2.SignedMessage) -> None:
            nonlocal sent
            sent = True
            results.put_nowait(_Pending(_pending_result_parts(tag, response)))

        outcome = await self._answer_one(item, send_ahead)
        if not sent:
            results.put_nowait(framed_result_parts(tag, outcome))
        elif isinstance(outcome, transport_pb2.Refusal):
            head, encoded = framed_result_parts(tag, outcome)
            results.put_nowait(_Undone((_UNDONE_KEY + head[1:], encoded)))
        else:
            results.put_nowait(tag)  # its record is durable
