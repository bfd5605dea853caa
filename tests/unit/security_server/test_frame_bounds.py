"""How large frames may be on the server-to-server link (docs/adr/0050): request frames up to
LARGE_FRAME_BYTES only once the provider confirmed ``large-request-frames``, MAX_FRAME_BYTES
before and otherwise; result frames up to LARGE_FRAME_BYTES, never more unless one result alone
is larger (it then goes alone), every result delivered in order of readiness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
    consumer_capabilities,
    provider_capabilities,
)
from security_server.settings import DEFAULT_MAX_MESSAGE_BYTES
from security_server.transport import LARGE_FRAME_BYTES, MAX_FRAME_BYTES, receive_limit


def test_a_provider_agrees_to_large_request_frames_only_when_its_limit_holds_one() -> None:
    assert receive_limit(DEFAULT_MAX_MESSAGE_BYTES) >= LARGE_FRAME_BYTES
    assert provider_capabilities(
        responses_ahead=True, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ) == frozenset({RESPONSE_AHEAD, LARGE_REQUEST_FRAMES})
    assert provider_capabilities(
        responses_ahead=False, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ) == frozenset({LARGE_REQUEST_FRAMES})
    # The smallest limit a server may configure: its gRPC limit is under a large frame.
    assert receive_limit(1024) < LARGE_FRAME_BYTES
    assert receive_limit(1024) >= MAX_FRAME_BYTES
    assert provider_capabilities(responses_ahead=True, max_message_bytes=1024) == frozenset(
        {RESPONSE_AHEAD}
    )
    smallest = LARGE_FRAME_BYTES - receive_limit(0)
    assert LARGE_REQUEST_FRAMES in provider_capabilities(
        responses_ahead=False, max_message_bytes=smallest
    )
    assert LARGE_REQUEST_FRAMES not in provider_capabilities(
        responses_ahead=False, max_message_bytes=smallest - 1
    )


def test_a_consumer_always_offers_large_request_frames() -> None:
    assert consumer_capabilities(responses_ahead=True) == frozenset(
        {RESPONSE_AHEAD, LARGE_REQUEST_FRAMES}
    )
    assert consumer_capabilities(responses_ahead=False) == frozenset({LARGE_REQUEST_FRAMES})


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


async def _frames_written(
    confirm: frozenset[str], offer: frozenset[str], *, count: int, body_bytes: int
) -> list[tuple[int, int]]:
    provider = _Provider(confirm)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(
        provider.handle
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ruta.v1.Transport", {"ExchangeFrames": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            link = FrameLink(channel, capabilities=offer)
            # One exchange first: the link learns what the provider confirmed.
            await link.exchange(transport_pb2.SignedMessage(body=b"first"), seconds=10)
            message = transport_pb2.SignedMessage(body=b"x" * body_bytes)
            results = await asyncio.gather(
                *(link.exchange(message, seconds=10) for _ in range(count))
            )
            assert len({result.tag for result in results}) == count
            await link.close()
    finally:
        await server.stop(None)
    return provider.frames[1:]


async def test_request_frames_grow_once_the_provider_confirms_large_frames() -> None:
    frames = await _frames_written(
        frozenset({LARGE_REQUEST_FRAMES}),
        consumer_capabilities(responses_ahead=False),
        count=20,
        body_bytes=60_000,
    )
    assert sum(requests for _, requests in frames) == 20
    assert all(size <= LARGE_FRAME_BYTES for size, _ in frames)
    assert max(size for size, _ in frames) > MAX_FRAME_BYTES
    assert max(requests for _, requests in frames) > MAX_FRAME_BYTES // 60_000


@pytest.mark.parametrize(
    ("confirm", "offer"),
    [
        (frozenset(), consumer_capabilities(responses_ahead=False)),  # an older provider
        (frozenset({LARGE_REQUEST_FRAMES}), frozenset()),  # a consumer that does not offer it
    ],
)
async def test_request_frames_stay_small_without_both_ends_agreeing(
    confirm: frozenset[str], offer: frozenset[str]
) -> None:
    frames = await _frames_written(confirm, offer, count=20, body_bytes=60_000)
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
