"""Several messages per frame on the server-to-server link (DESIGN.md): both ends.

Consumer side: a :class:`FrameLink` keeps one ``Transport.ExchangeFrames`` stream open on a pinned
channel to one provider server. Every exchange puts its signed request in the link's outbox with a
tag and waits for the result with that tag; one writer task sends everything waiting in the outbox
as one frame (bounded by :data:`MAX_FRAME_REQUESTS` and
:data:`~security_server.transport.MAX_FRAME_BYTES`; a larger message is not framed but sent over
``Exchange``, so it is refused alone if it is too large for the provider), one reader task hands
each result of each incoming frame to its waiter. Under load a frame carries many requests, so one
gRPC write and one read serve many exchanges instead of one unary call each; alone, a request goes
in a frame of its own at once. Nothing about a message changes: it is signed, verified and logged
exactly as over ``Transport.Exchange`` (the provider runs the same code for each), and a
provider's refusal comes back per message with the same fault code, id and status. A request is
serialised once, before it is put in the outbox, and a frame is written as its requests' bytes
joined (:func:`framed_request_parts`): a 64 KiB body is copied twice on its way out (into the
frame, into gRPC), not once per protobuf wrapper and size check.

When the stream breaks (network, provider restart) every waiting exchange gets
``server.consumer.network_error`` and the link is replaced on the next call. A provider that does
not offer ``ExchangeFrames`` (an older version) is remembered and called over ``Exchange``.

Provider side: a :class:`FramesStream` serves one ``ExchangeFrames`` call. Each request it reads
is handled exactly as one ``Transport.Exchange`` call (same checks, log records and faults), in a
task of its own; results go back, several per frame, as they are ready. Reading pauses at
:data:`MAX_STREAM_IN_FLIGHT` requests of the stream, and at the transport port's
``max_concurrent_calls`` on all streams together.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import grpc
import grpc.aio

from ruta.tasks import TaskOwner
from ruta.v1 import transport_pb2
from security_server.errors import FramesUnsupportedError, MalformedMessageError, TransportError
from security_server.transport import MAX_FRAME_BYTES

__all__ = [
    "FRAMES_PATH",
    "MAX_FRAME_REQUESTS",
    "MAX_STREAM_IN_FLIGHT",
    "FrameLink",
    "FrameLinks",
    "FramesStream",
    "FramesUnsupportedError",
    "framed_request_parts",
    "framed_result_parts",
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def framed_request_parts(tag: int, message: bytes, timeout_ms: int) -> tuple[bytes, bytes, bytes]:
    """One ``FramedRequest`` as it sits in a ``RequestFrame`` (its ``requests`` key and length
    included), in three parts: what goes before the serialised ``SignedMessage`` ``message``,
    ``message`` itself, and what follows it. Joined, they are exactly the bytes protobuf's
    deterministic serialisation writes for that element (a unit test holds them to it); kept
    apart, so the message is copied once, into the frame."""
    suffix = _TIMEOUT_KEY + _varint(timeout_ms) if timeout_ms else b""
    head = _TAG_KEY + _varint(tag) if tag else b""
    head += _MESSAGE_KEY + _varint(len(message))
    return _REQUESTS_KEY + _varint(len(head) + len(message) + len(suffix)) + head, message, suffix


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
    head = (_TAG_KEY + _varint(tag) if tag else b"") + key + _varint(len(encoded))
    return _RESULTS_KEY + _varint(len(head) + len(encoded)) + head, encoded


class FrameLink:
    """One ``ExchangeFrames`` stream to one provider server (see the module docstring)."""

    def __init__(
        self, channel: grpc.aio.Channel, *, on_frame: Callable[[int], None] | None = None
    ) -> None:
        self._channel = channel
        self._on_frame = on_frame
        # Frames are written as bytes already serialised (see _next_frame).
        open_stream: grpc.aio.StreamStreamMultiCallable[bytes, transport_pb2.ResultFrame] = (
            channel.stream_stream(
                FRAMES_PATH,
                request_serializer=None,
                response_deserializer=transport_pb2.ResultFrame.FromString,
            )
        )
        self._call = open_stream()
        # Each waiting request as the parts of its serialised FramedRequest element.
        self._outbox: collections.deque[tuple[bytes, bytes, bytes]] = collections.deque()
        self._waiting: dict[int, asyncio.Future[transport_pb2.FramedResult]] = {}
        self._wakeup = asyncio.Event()
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
        its result (a response or a refusal).

        Raises :class:`TimeoutError` when ``seconds`` (the caller's deadline) pass first, and
        :class:`~security_server.transport.TransportError` (``network_error``, or
        :class:`FramesUnsupportedError`) when the stream fails before the result arrives.
        """
        if self._failure is not None:
            raise self._failure
        tag = next(self._tags)
        future: asyncio.Future[transport_pb2.FramedResult] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[tag] = future
        encoded = message if isinstance(message, bytes) else message.SerializeToString()
        self._outbox.append(
            framed_request_parts(tag, encoded, min(_MAX_UINT32, max(1, int(seconds * 1000))))
        )
        self._wakeup.set()
        try:
            async with asyncio.timeout(seconds):
                return await future
        finally:
            self._waiting.pop(tag, None)

    async def close(self) -> None:
        """Fail whatever waits, end the stream, stop both tasks."""
        self._fail(TransportError("the link to the provider server was closed"))
        await self._tasks.cancel()

    async def _write(self) -> None:
        try:
            while self._failure is None:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._outbox:
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

    def _next_frame(self) -> tuple[bytes, int]:
        """The next serialised ``RequestFrame`` from the outbox, and how many requests it
        carries: its elements' bytes joined (one copy of each message)."""
        parts: list[bytes] = []
        size = 0
        requests = 0
        outbox = self._outbox
        while outbox and requests < MAX_FRAME_REQUESTS:
            head, message, tail = outbox[0]
            item_size = len(head) + len(message) + len(tail)
            if requests and size + item_size > MAX_FRAME_BYTES:
                break
            outbox.popleft()
            parts += (head, message, tail)
            size += item_size
            requests += 1
        return b"".join(parts), requests

    async def _read(self) -> None:
        try:
            async for frame in self._call:
                for result in frame.results:
                    future = self._waiting.get(result.tag)
                    if future is not None and not future.done():
                        future.set_result(result)
            self._fail(TransportError("the provider server ended the frames stream"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any read failure ends the link
            self._fail(self._stream_error(exc))

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
        self._outbox.clear()
        self._call.cancel()
        self._wakeup.set()


class FrameLinks:
    """One :class:`FrameLink` per peer channel, made on first use and replaced once failed."""

    @staticmethod
    def fits(message: transport_pb2.SignedMessage | bytes) -> bool:
        """Whether ``message`` (or its serialised bytes) travels framed (no larger than a frame
        may be)."""
        size = len(message) if isinstance(message, bytes) else message.ByteSize()
        return size <= MAX_FRAME_BYTES - FRAMED_OVERHEAD_BYTES

    def __init__(self, *, on_frame: Callable[[int], None] | None = None) -> None:
        #: Told the number of requests of every frame written (metrics).
        self._on_frame = on_frame
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
            link = FrameLink(channel, on_frame=self._on_frame)
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


class FramesStream:
    """One ``ExchangeFrames`` call on the provider side: a reader task starts one task per
    request (``answer`` handles it as ``Transport.Exchange`` would and gives its result as
    :func:`framed_result_parts`), the call's own task writes results back in frames (``write``,
    a serialised ``ResultFrame``: the results' parts joined) as they complete; ``on_frame`` is
    told each frame's size.
    """

    def __init__(
        self,
        frames: AsyncIterator[transport_pb2.RequestFrame],
        *,
        answer: Callable[[transport_pb2.FramedRequest], Awaitable[tuple[bytes, bytes]]],
        write: Callable[[bytes], Awaitable[None]],
        on_frame: Callable[[int], None],
        max_frame_bytes: int,
        shared_room: asyncio.Semaphore,
    ) -> None:
        self._answer_one = answer
        self._on_frame = on_frame
        # Framed requests in flight on every stream of this server together (the transport
        # port's max_concurrent_calls): many streams do not multiply the bound.
        self._shared_room = shared_room
        self._held = 0  # places taken in the shared room and not yet given back
        self._frames = frames
        self._write = write
        self._max_frame_bytes = max_frame_bytes
        # None: everything read has been answered; the stream may end.
        self._results: asyncio.Queue[tuple[bytes, bytes] | None] = asyncio.Queue()
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
            while (first := await self._results.get()) is not None:
                frame, results = self._frame(first)
                await self._write(frame)
                self._on_frame(results)
                for _ in range(results):
                    # A request's place is free once its result is written.
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

    def _frame(self, first: tuple[bytes, bytes]) -> tuple[bytes, int]:
        """A serialised ``ResultFrame`` of ``first`` and the results ready after it, and how
        many results it carries."""
        parts = list(first)
        size = len(first[0]) + len(first[1])
        results = 1
        while not self._results.empty() and size < self._max_frame_bytes:
            result = self._results.get_nowait()
            if result is None:
                self._results.put_nowait(None)  # ends the stream after this frame
                break
            parts += result
            size += len(result[0]) + len(result[1])
            results += 1
        return b"".join(parts), results

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
        self._results.put_nowait(await self._answer_one(item))
