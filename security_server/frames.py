"""Several messages per frame on the server-to-server link (DESIGN.md), consumer side.

A :class:`FrameLink` keeps one ``Transport.ExchangeFrames`` stream open on a pinned channel to one
provider server. Every exchange puts its signed request in the link's outbox with a tag and
waits for the result with that tag; one writer task sends everything waiting in the outbox as one
frame (bounded by :data:`MAX_FRAME_REQUESTS` and
:data:`~security_server.transport.MAX_FRAME_BYTES`; a larger message is not framed but sent over
``Exchange``, so it is refused alone if it is too large for the provider), one reader task hands
each result of each incoming frame to its waiter. Under load a frame carries many requests, so
one gRPC write and one read serve many exchanges instead of one unary call each; alone, a request
goes in a frame of its own at once. Nothing about a message changes: it is signed, verified and
logged exactly as over ``Transport.Exchange`` (the provider runs the same code for each), and a
provider's refusal comes back per message with the same fault code, id and status.

When the stream breaks (network, provider restart) every waiting exchange gets
``server.consumer.network_error`` and the link is replaced on the next call. A provider that does
not offer ``ExchangeFrames`` (an older version) is remembered and called over ``Exchange``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable
from typing import Final

import grpc
import grpc.aio

from ruta.tasks import TaskOwner
from ruta.v1 import transport_pb2
from security_server.errors import FramesUnsupportedError, TransportError
from security_server.transport import MAX_FRAME_BYTES

__all__ = [
    "FRAMES_PATH",
    "MAX_FRAME_REQUESTS",
    "FrameLink",
    "FrameLinks",
    "FramesUnsupportedError",
]

_log = logging.getLogger(__name__)

FRAMES_PATH: Final = "/ruta.v1.Transport/ExchangeFrames"
#: Most requests written in one frame (the provider refuses more).
MAX_FRAME_REQUESTS: Final = 1024
#: Room for a framed request's tag and timeout around its message.
FRAMED_OVERHEAD_BYTES: Final = 32
#: Links kept, one per peer channel; replaced channels' links are dropped past this.
MAX_LINKS: Final = 64


class FrameLink:
    """One ``ExchangeFrames`` stream to one provider server (see the module docstring)."""

    def __init__(
        self, channel: grpc.aio.Channel, *, on_frame: Callable[[int], None] | None = None
    ) -> None:
        self._channel = channel
        self._on_frame = on_frame
        open_stream: grpc.aio.StreamStreamMultiCallable[
            transport_pb2.RequestFrame, transport_pb2.ResultFrame
        ] = channel.stream_stream(
            FRAMES_PATH,
            request_serializer=transport_pb2.RequestFrame.SerializeToString,
            response_deserializer=transport_pb2.ResultFrame.FromString,
        )
        self._call = open_stream()
        self._outbox: collections.deque[transport_pb2.FramedRequest] = collections.deque()
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
        self, message: transport_pb2.SignedMessage, *, seconds: float
    ) -> transport_pb2.FramedResult:
        """Send ``message`` in the next frame and return its result (a response or a refusal).

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
        self._outbox.append(
            transport_pb2.FramedRequest(
                tag=tag, message=message, timeout_ms=max(1, int(seconds * 1000))
            )
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
                    frame = self._next_frame()
                    await self._call.write(frame)
                    self.frames_written += 1
                    self.requests_written += len(frame.requests)
                    if self._on_frame is not None:
                        self._on_frame(len(frame.requests))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any write failure ends the link
            self._fail(self._stream_error(exc))

    def _next_frame(self) -> transport_pb2.RequestFrame:
        frame = transport_pb2.RequestFrame()
        size = 0
        outbox = self._outbox
        while outbox and len(frame.requests) < MAX_FRAME_REQUESTS:
            item = outbox[0]
            item_size = item.ByteSize()
            if frame.requests and size + item_size > MAX_FRAME_BYTES:
                break
            frame.requests.append(outbox.popleft())
            size += item_size
        return frame

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
    def fits(message: transport_pb2.SignedMessage) -> bool:
        """Whether ``message`` travels framed (no larger than a frame may be)."""
        return message.ByteSize() <= MAX_FRAME_BYTES - FRAMED_OVERHEAD_BYTES

    def __init__(self, *, on_frame: Callable[[int], None] | None = None) -> None:
        #: Told the number of requests of every frame written (metrics).
        self._on_frame = on_frame
        # By the channel's id; the link holds its channel, so a reused id is never mistaken.
        self._links: dict[int, FrameLink] = {}
        # Closing links that were replaced (a failed link's close, not waited for by a call).
        self._retired = TaskOwner()

    def link(self, channel: grpc.aio.Channel) -> FrameLink:
        link = self._links.get(id(channel))
        if link is not None and link.channel is channel and link.usable:
            return link
        if link is not None:
            self._retire(link)
        if len(self._links) >= MAX_LINKS:
            for old in self._links.values():
                self._retire(old)
            self._links.clear()
        link = self._links[id(channel)] = FrameLink(channel, on_frame=self._on_frame)
        return link

    def _retire(self, link: FrameLink) -> None:
        self._retired.spawn(link.close(), name="ruta-frames-link-close")

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
        await self._retired.wait()
