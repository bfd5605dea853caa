"""How large frames may be on the server-to-server link (docs/adr/0050): request frames up to
LARGE_FRAME_BYTES only once the provider confirmed ``large-request-frames``, MAX_FRAME_BYTES
before and otherwise; result frames up to LARGE_FRAME_BYTES, never more unless one result alone
is larger (it then goes alone), every result delivered in order of readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from ruta.v1 import transport_pb2
from security_server.frames import (
    LARGE_REQUEST_FRAMES,
    RESPONSE_AHEAD,
    FrameLink,
    FramesStream,
    SendAhead,
    capabilities_metadata,
    result_frame_bytes,
    stream_capabilities,
)
from security_server.settings import DEFAULT_MAX_MESSAGE_BYTES
from security_server.transport import (
    LARGE_FRAME_BYTES,
    LARGE_FRAME_SPARE_BYTES,
    MAX_FRAME_BYTES,
    MAX_PEER_RECEIVE_BYTES,
    grpc_message_options,
    receive_limit,
)

#: The smallest ``max_message_bytes`` whose gRPC limits hold a large frame with its spare room.
SMALLEST_FOR_LARGE_FRAMES = LARGE_FRAME_BYTES + LARGE_FRAME_SPARE_BYTES - receive_limit(0)
#: A configured limit under it (a server may configure as little as 1 KiB).
SMALL_LIMIT = 256 * 1024


def test_a_provider_agrees_to_large_request_frames_only_when_its_limit_holds_one() -> None:
    assert receive_limit(DEFAULT_MAX_MESSAGE_BYTES) >= LARGE_FRAME_BYTES
    assert stream_capabilities(
        responses_ahead=True, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ) == frozenset({RESPONSE_AHEAD, LARGE_REQUEST_FRAMES})
    assert stream_capabilities(
        responses_ahead=False, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ) == frozenset({LARGE_REQUEST_FRAMES})
    # The smallest limit a server may configure: its gRPC limit is under a large frame.
    assert receive_limit(1024) < LARGE_FRAME_BYTES
    assert receive_limit(1024) >= MAX_FRAME_BYTES
    assert stream_capabilities(responses_ahead=True, max_message_bytes=1024) == frozenset(
        {RESPONSE_AHEAD}
    )
    smallest = SMALLEST_FOR_LARGE_FRAMES
    assert LARGE_REQUEST_FRAMES in stream_capabilities(
        responses_ahead=False, max_message_bytes=smallest
    )
    assert LARGE_REQUEST_FRAMES not in stream_capabilities(
        responses_ahead=False, max_message_bytes=smallest - 1
    )


def test_a_consumer_offers_large_request_frames_only_when_its_own_limit_holds_one() -> None:
    # gRPC holds a channel to its send limit too: a consumer configured with a small
    # max_message_bytes must not write frames larger than that, whatever the provider takes.
    default = DEFAULT_MAX_MESSAGE_BYTES
    assert stream_capabilities(responses_ahead=True, max_message_bytes=default) == frozenset(
        {RESPONSE_AHEAD, LARGE_REQUEST_FRAMES}
    )
    assert stream_capabilities(responses_ahead=False, max_message_bytes=default) == frozenset(
        {LARGE_REQUEST_FRAMES}
    )
    assert stream_capabilities(responses_ahead=True, max_message_bytes=SMALL_LIMIT) == frozenset(
        {RESPONSE_AHEAD}
    )
    smallest = SMALLEST_FOR_LARGE_FRAMES
    assert LARGE_REQUEST_FRAMES in stream_capabilities(
        responses_ahead=False, max_message_bytes=smallest
    )
    assert not stream_capabilities(responses_ahead=False, max_message_bytes=smallest - 1)


def test_a_providers_result_frames_stay_within_its_own_limit() -> None:
    assert result_frame_bytes(DEFAULT_MAX_MESSAGE_BYTES) == LARGE_FRAME_BYTES
    assert result_frame_bytes(SMALLEST_FOR_LARGE_FRAMES) == LARGE_FRAME_BYTES
    assert result_frame_bytes(SMALLEST_FOR_LARGE_FRAMES - 1) == MAX_FRAME_BYTES
    assert result_frame_bytes(1024) == MAX_FRAME_BYTES


class _Provider:
    """A bare ``ExchangeFrames`` server that records each request frame's size and count and
    answers every request with an empty response; it confirms ``confirm`` (if any)."""

    def __init__(self, confirm: frozenset[str]) -> None:
        self.confirm = confirm
        self.frames: list[tuple[int, int]] = []  # (bytes, requests) of each frame read

    async def handle(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        if self.confirm:
            await context.send_initial_metadata(capabilities_metadata(self.confirm))
        async for raw in requests:
            frame = transport_pb2.RequestFrame.FromString(raw)
            self.frames.append((len(raw), len(frame.requests)))
            results = transport_pb2.ResultFrame()
            for request in frame.requests:
                results.results.add(tag=request.tag, response=transport_pb2.SignedMessage())
            yield results.SerializeToString()


@contextlib.asynccontextmanager
async def _frames_port(
    handle: Callable[..., Any], options: list[tuple[str, Any]]
) -> AsyncIterator[int]:
    """A plaintext loopback gRPC server with ``options`` serving ``handle`` as
    ``Transport.ExchangeFrames`` (bytes in and out); its port."""
    server = grpc.aio.server(options=options)
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(handle)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ruta.v1.Transport", {"ExchangeFrames": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _frames_written(
    confirm: frozenset[str],
    offer: frozenset[str],
    *,
    count: int,
    body_bytes: int,
    channel_limit: int | None = None,
) -> list[tuple[int, int]]:
    provider = _Provider(confirm)
    limit = [("grpc.max_receive_message_length", 4 << 20)]
    async with _frames_port(provider.handle, limit) as port:
        # As a consumer server's channel to a provider: its own limit both ways, any result in.
        options = (
            [
                *grpc_message_options(channel_limit),
                ("grpc.max_receive_message_length", MAX_PEER_RECEIVE_BYTES),
            ]
            if channel_limit is not None
            else None
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            link = FrameLink(channel, capabilities=offer)
            # One exchange first: the link learns what the provider confirmed.
            await link.exchange(transport_pb2.SignedMessage(body=b"first"), seconds=10)
            message = transport_pb2.SignedMessage(body=b"x" * body_bytes)
            results = await asyncio.gather(
                *(link.exchange(message, seconds=10) for _ in range(count))
            )
            assert len({result.tag for result in results}) == count
            await link.close()
    return provider.frames[1:]


async def test_request_frames_grow_once_the_provider_confirms_large_frames() -> None:
    frames = await _frames_written(
        frozenset({LARGE_REQUEST_FRAMES}),
        stream_capabilities(responses_ahead=False, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES),
        count=20,
        body_bytes=60_000,
    )
    assert sum(requests for _, requests in frames) == 20
    assert all(size <= LARGE_FRAME_BYTES for size, _ in frames)
    assert max(size for size, _ in frames) > MAX_FRAME_BYTES
    assert max(requests for _, requests in frames) > MAX_FRAME_BYTES // 60_000


@pytest.mark.parametrize(
    ("confirm", "offer", "channel_limit"),
    [
        # an older provider
        (
            frozenset(),
            stream_capabilities(responses_ahead=False, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES),
            None,
        ),
        # a consumer that does not offer it
        (frozenset({LARGE_REQUEST_FRAMES}), frozenset(), None),
        # A consumer configured with a small max_message_bytes does not offer large frames, so
        # its frames fit its own channel's send limit: every exchange is answered (a 1 MiB
        # frame would fail the stream).
        (
            frozenset({LARGE_REQUEST_FRAMES}),
            stream_capabilities(responses_ahead=False, max_message_bytes=SMALL_LIMIT),
            SMALL_LIMIT,
        ),
    ],
)
async def test_request_frames_stay_small_without_both_ends_agreeing(
    confirm: frozenset[str], offer: frozenset[str], channel_limit: int | None
) -> None:
    frames = await _frames_written(
        confirm, offer, count=20, body_bytes=60_000, channel_limit=channel_limit
    )
    assert sum(requests for _, requests in frames) == 20
    assert all(size <= MAX_FRAME_BYTES for size, _ in frames)


@pytest.mark.parametrize("ahead", [False, True])
async def test_result_frames_stay_within_the_bound_and_a_larger_result_goes_alone(
    ahead: bool,
) -> None:
    # Responses of ~300 KiB: three to a 1 MiB frame; one of 1.5 MiB goes alone; every result
    # (and, ahead, every notice) is written once.
    sizes = dict.fromkeys(range(1, 12), 300000)
    sizes[5] = 1_500_000
    written: list[transport_pb2.ResultFrame] = []
    raw_sizes: list[int] = []
    released = asyncio.Event()

    async def answer(
        item: transport_pb2.FramedRequest, send_ahead: SendAhead | None
    ) -> transport_pb2.SignedMessage | transport_pb2.Refusal:
        await released.wait()
        response = transport_pb2.SignedMessage(body=b"r" * sizes[item.tag])
        if send_ahead is not None:
            send_ahead(response)
        return response

    async def frames() -> AsyncIterator[transport_pb2.RequestFrame]:
        yield transport_pb2.RequestFrame(
            requests=[transport_pb2.FramedRequest(tag=tag) for tag in sizes]
        )

    async def write(frame: bytes) -> None:
        raw_sizes.append(len(frame))
        written.append(transport_pb2.ResultFrame.FromString(frame))

    stream = FramesStream(
        frames(),
        answer=answer,
        write=write,
        on_frame=lambda _: None,
        max_frame_bytes=LARGE_FRAME_BYTES,
        shared_room=asyncio.Semaphore(64),
        ahead=ahead,
    )
    runner = asyncio.create_task(stream.run(asyncio.Event()))
    await asyncio.sleep(0.05)  # every request read and waiting
    released.set()
    await asyncio.wait_for(runner, 10)

    tags = [result.tag for frame in written for result in frame.results]
    assert sorted(tags) == sorted(sizes)
    for size, frame in zip(raw_sizes, written, strict=True):
        alone = len(frame.results) == 1 and frame.results[0].tag == 5
        assert size <= LARGE_FRAME_BYTES or alone
    assert any(len(frame.results) == 3 for frame in written)
    if ahead:
        assert sorted(tag for frame in written for tag in frame.durable) == sorted(sizes)


async def _results_through_a_provider_port(
    *, max_message_bytes: int, max_frame_bytes: int, count: int, body_bytes: int
) -> set[int]:
    """``count`` requests in one frame to a real gRPC server whose limits are a provider's
    configured with ``max_message_bytes``, answered by a :class:`FramesStream` bound by
    ``max_frame_bytes`` with responses of ``body_bytes``; the tags of the results read."""

    async def handle(requests: AsyncIterator[bytes], context: Any) -> None:
        async def frames() -> AsyncIterator[transport_pb2.RequestFrame]:
            async for raw in requests:
                yield transport_pb2.RequestFrame.FromString(raw)

        async def answer(
            item: transport_pb2.FramedRequest, send_ahead: SendAhead | None
        ) -> transport_pb2.SignedMessage | transport_pb2.Refusal:
            await asyncio.sleep(0.02)  # all ready together: frames as full as they may be
            return transport_pb2.SignedMessage(body=b"r" * body_bytes)

        stream = FramesStream(
            frames(),
            answer=answer,
            write=context.write,
            on_frame=lambda _: None,
            max_frame_bytes=max_frame_bytes,
            shared_room=asyncio.Semaphore(64),
            ahead=False,
        )
        await stream.run(asyncio.Event())

    tags: set[int] = set()
    async with _frames_port(handle, grpc_message_options(max_message_bytes)) as port:
        options = [("grpc.max_receive_message_length", MAX_PEER_RECEIVE_BYTES)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            call: Any = channel.stream_stream("/ruta.v1.Transport/ExchangeFrames")()
            frame = transport_pb2.RequestFrame(
                requests=[transport_pb2.FramedRequest(tag=tag) for tag in range(1, count + 1)]
            )
            await call.write(frame.SerializeToString())
            async for raw in call:
                tags.update(r.tag for r in transport_pb2.ResultFrame.FromString(raw).results)
                if len(tags) == count:
                    break
            call.cancel()
    return tags


async def test_a_provider_with_a_small_limit_keeps_its_result_frames_within_it() -> None:
    # Eight ~100 KB responses ready at once: bound by result_frame_bytes(SMALL_LIMIT), every one
    # arrives; bound by LARGE_FRAME_BYTES, the ~800 KB frame is over the server's own gRPC send
    # limit and the whole stream fails (what the bound prevents).
    answered = await _results_through_a_provider_port(
        max_message_bytes=SMALL_LIMIT,
        max_frame_bytes=result_frame_bytes(SMALL_LIMIT),
        count=8,
        body_bytes=100_000,
    )
    assert answered == set(range(1, 9))
    with pytest.raises(grpc.aio.AioRpcError):
        await _results_through_a_provider_port(
            max_message_bytes=SMALL_LIMIT,
            max_frame_bytes=LARGE_FRAME_BYTES,
            count=8,
            body_bytes=100_000,
        )
