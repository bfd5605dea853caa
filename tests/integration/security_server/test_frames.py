"""Several messages per frame on the server-to-server link (``Transport.ExchangeFrames``).

Real servers, real mTLS (bed.py). The consumer server sends over frames by default, so every
other exchange test runs over them too; these tests look at the frames themselves: many requests
share a frame, each result finds its caller, a refusal stays per message with its fault code
and id, bounds hold, a provider without the method is called once per message, and turning
frames off in the settings goes back to one call per message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from ruta.v1 import transport_pb2
from sandbox.examples.population import decode_person, encode_get_person
from security_server.errors import Reason
from security_server.frames import (
    FRAMED_OVERHEAD_BYTES,
    LARGE_REQUEST_FRAMES,
    RESPONSE_AHEAD,
    FrameLink,
    FrameLinks,
    FramesUnsupportedError,
    stream_capabilities,
)
from security_server.settings import DEFAULT_MAX_MESSAGE_BYTES
from security_server.transport import (
    LARGE_FRAME_BYTES,
    LARGE_FRAME_SPARE_BYTES,
    MAX_FRAME_BYTES,
    TransportError,
    receive_limit,
)
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    get_person,
    provider_and_consumer,
    provider_channel,
    signed_request,
)

pytestmark = pytest.mark.integration

PERSON = encode_get_person("38001010001")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with provider_and_consumer(tmp_path) as instance:
        yield instance


async def test_the_consumer_sends_over_frames_by_default(running: Bed) -> None:
    app = running.agencies[SOC].app
    assert app is not None
    assert app.consumer is not None
    assert app.consumer.frames


async def test_concurrent_exchanges_share_frames_and_each_gets_its_own_answer(
    running: Bed,
) -> None:
    messages = [signed_request(running)[1] for _ in range(40)]
    async with provider_channel(running) as channel:
        link = FrameLink(channel)
        try:
            results = await asyncio.gather(*(link.exchange(m, seconds=10) for m in messages))
        finally:
            await link.close()
    for message, result in zip(messages, results, strict=True):
        assert result.HasField("response")
        request = transport_pb2.MessageHeader.FromString(message.header)
        response = transport_pb2.MessageHeader.FromString(result.response.header)
        assert response.message_id == request.message_id
        assert decode_person(result.response.body)["family_name"] == "Pérez"
    assert link.requests_written == 40
    assert link.frames_written < 40  # gathered in one loop iteration: shared frames


async def test_a_refusal_stays_with_its_message(running: Bed) -> None:
    _, good = signed_request(running)
    _, replayed = signed_request(running)
    async with provider_channel(running) as channel:
        link = FrameLink(channel)
        try:
            first = await link.exchange(replayed, seconds=10)
            again, fine = await asyncio.gather(
                link.exchange(replayed, seconds=10), link.exchange(good, seconds=10)
            )
        finally:
            await link.close()
    assert first.HasField("response")
    assert fine.HasField("response")
    assert again.HasField("refusal")
    assert again.refusal.fault == "server.provider.replayed_message"
    assert again.refusal.status_code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    uuid.UUID(again.refusal.fault_id)


async def test_a_frame_over_the_bound_ends_the_stream_with_a_fault(running: Bed) -> None:
    frame = transport_pb2.RequestFrame(
        requests=[transport_pb2.FramedRequest(tag=i) for i in range(1025)]
    )
    async with provider_channel(running) as channel:
        call: Any = channel.stream_stream(
            "/ruta.v1.Transport/ExchangeFrames",
            request_serializer=transport_pb2.RequestFrame.SerializeToString,
            response_deserializer=transport_pb2.ResultFrame.FromString,
        )()
        await call.write(frame)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
    trailing = dict(info.value.trailing_metadata() or ())
    assert trailing["ruta-fault"] == "server.provider.invalid_message"


async def test_a_server_without_frames_is_reported_as_such(tmp_path: Path) -> None:
    server = grpc.aio.server()  # no handlers: every method is UNIMPLEMENTED
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            link = FrameLink(channel)
            with pytest.raises(FramesUnsupportedError):
                await link.exchange(transport_pb2.SignedMessage(), seconds=10)
            assert not link.usable
            await link.close()
    finally:
        await server.stop(None)


async def test_frames_can_be_turned_off(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.start_server(POP)
        data = instance.settings_dict(SOC)
        data["transport"] = {**data.get("transport", {}), "frames": False}
        app = await instance.start_server(SOC, data=data)
        assert app.consumer is not None
        assert not app.consumer.frames
        async with instance.consumer_channel(SOC) as channel:
            person = decode_person(await get_person(channel)(PERSON, metadata=call_metadata()))
        assert person["family_name"] == "Pérez"


def test_only_messages_that_fit_a_frame_travel_framed() -> None:
    # A larger message goes over Exchange, where a provider whose limit it exceeds refuses it
    # alone instead of the whole stream failing on gRPC's size limit.
    small = transport_pb2.SignedMessage(body=b"x" * 1024)
    large = transport_pb2.SignedMessage(body=b"x" * MAX_FRAME_BYTES)
    assert FrameLinks.fits_size(small.ByteSize())
    assert not FrameLinks.fits_size(large.ByteSize())
    # The bound itself: what a frame holds besides one message is reserved.
    assert FrameLinks.fits_size(MAX_FRAME_BYTES - FRAMED_OVERHEAD_BYTES)
    assert not FrameLinks.fits_size(MAX_FRAME_BYTES - FRAMED_OVERHEAD_BYTES + 1)


async def test_a_result_frame_never_outgrows_the_bound(running: Bed) -> None:
    # 40 answers of ~1 KiB each come back in frames the provider fills with what is ready:
    # every frame it writes stays within LARGE_FRAME_BYTES (or is a single result; sizes near
    # the bound: tests/unit/security_server/test_frame_bounds.py).
    messages = [signed_request(running)[1] for _ in range(40)]
    async with provider_channel(running) as channel:
        call: Any = channel.stream_stream(
            "/ruta.v1.Transport/ExchangeFrames",
            request_serializer=transport_pb2.RequestFrame.SerializeToString,
            response_deserializer=transport_pb2.ResultFrame.FromString,
        )()
        await call.write(
            transport_pb2.RequestFrame(
                requests=[
                    transport_pb2.FramedRequest(tag=i, message=m, timeout_ms=10_000)
                    for i, m in enumerate(messages)
                ]
            )
        )
        await call.done_writing()
        tags: list[int] = []
        async for frame in call:
            assert len(frame.results) == 1 or frame.ByteSize() <= LARGE_FRAME_BYTES
            tags.extend(result.tag for result in frame.results)
    assert sorted(tags) == list(range(40))


async def test_framed_requests_share_the_servers_concurrency_bound(tmp_path: Path) -> None:
    # max_concurrent_calls = 2 bounds framed requests across every stream: ten requests in two
    # streams are all answered (places recycle as results are written), and a stream cut short
    # gives its places back, so a later stream is served in full.
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data.setdefault("limits", {})["max_concurrent_calls"] = 2
        await instance.start_server(POP, data=data)
        await instance.start_server(SOC)
        async with provider_channel(instance) as channel:
            first, second = FrameLink(channel), FrameLink(channel)
            try:
                results = await asyncio.gather(
                    *(
                        link.exchange(signed_request(instance)[1], seconds=10)
                        for link in (first, second)
                        for _ in range(5)
                    )
                )
                assert all(r.HasField("response") for r in results)
                await first.close()  # ends its stream
                again = await asyncio.gather(
                    *(second.exchange(signed_request(instance)[1], seconds=10) for _ in range(4))
                )
                assert all(r.HasField("response") for r in again)
            finally:
                await first.close()
                await second.close()


def _sample(app: Any, name: str, role: str) -> float:
    text = app.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{role="{role}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_frames_are_counted_in_the_metrics(running: Bed) -> None:
    async with running.consumer_channel(SOC) as channel:
        await asyncio.gather(
            *(get_person(channel)(PERSON, metadata=call_metadata()) for _ in range(6))
        )
    consumer, provider = running.agencies[SOC].app, running.agencies[POP].app
    for app, role in ((consumer, "consumer"), (provider, "provider")):
        frames = _sample(app, "ruta_transport_frames_total", role)
        messages = _sample(app, "ruta_transport_framed_messages_total", role)
        assert frames >= 1
        assert messages == 6  # every request (consumer) and every result (provider) once
        assert frames <= messages


async def test_a_link_on_a_channel_closed_meanwhile_is_a_network_error() -> None:
    """Found by the fault suite: a call that still held a peer's channel after another call
    closed it (its link had failed) opened a frames link on the closed channel, and grpc's
    UsageError came out as ``server.consumer.internal_error``."""
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    await channel.close()
    links = FrameLinks()
    with pytest.raises(TransportError) as info:
        links.link(channel)
    assert info.value.reason is Reason.PEER_UNREACHABLE
    await links.close()


@pytest.mark.parametrize(
    ("max_message_bytes", "large"),
    [(4 << 20, True), (LARGE_FRAME_BYTES + LARGE_FRAME_SPARE_BYTES - receive_limit(0) - 1, False)],
)
async def test_a_provider_confirms_large_request_frames_when_its_limit_holds_one(
    tmp_path: Path,
    max_message_bytes: int,
    large: bool,
) -> None:
    # docs/adr/0050: the consumer's links offer large-request-frames; a real provider confirms it
    # only when its transport port's gRPC limit (its max_message_bytes plus the envelope) holds
    # a frame of LARGE_FRAME_BYTES; the exchange is answered either way.
    async with bed(tmp_path) as instance:
        await instance.start_server(
            POP, data=instance.settings_dict(POP, max_message_bytes=max_message_bytes)
        )
        await instance.start_server(SOC)
        async with provider_channel(instance) as channel:
            offer = stream_capabilities(
                responses_ahead=True, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
            )
            link = FrameLink(channel, capabilities=offer)
            try:
                result = await link.exchange(signed_request(instance)[1], seconds=10)
                assert result.HasField("response")
                assert (LARGE_REQUEST_FRAMES in link.agreed) is large
                assert RESPONSE_AHEAD in link.agreed
            finally:
                await link.close()
