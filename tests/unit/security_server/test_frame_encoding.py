"""The consumer's frames are written as bytes joined by hand (security_server.frames): they must
be exactly what protobuf's deterministic serialisation of the same RequestFrame gives, and parse
back to the same requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ruta.v1 import transport_pb2
from security_server.frames import (
    FramesStream,
    SendAhead,
    framed_request_parts,
    framed_result_parts,
    signed_message_parts,
    within,
)


def _message(body: bytes) -> transport_pb2.SignedMessage:
    return transport_pb2.SignedMessage(
        header=b"h" * 300,
        body=body,
        signature=transport_pb2.Signature(value=b"v" * 72, certificate=b"c" * 528),
    )


@pytest.mark.parametrize("body_size", [0, 1, 127, 128, 512, 16_383, 16_384, 65_536, 200_000])
@pytest.mark.parametrize(("tag", "timeout_ms"), [(1, 1), (127, 30_000), (2**40, 2**32 - 1)])
def test_framed_request_bytes_are_protobufs_own(body_size: int, tag: int, timeout_ms: int) -> None:
    message = _message(bytes(range(256)) * (body_size // 256) + b"x" * (body_size % 256))
    frame = transport_pb2.RequestFrame()
    frame.requests.add(tag=tag, message=message, timeout_ms=timeout_ms)
    frame.requests.add(tag=tag + 1, message=_message(b"second"), timeout_ms=5)

    joined = b"".join(
        (
            *framed_request_parts(tag, message.SerializeToString(), timeout_ms),
            *framed_request_parts(tag + 1, _message(b"second").SerializeToString(), 5),
        )
    )

    assert joined == frame.SerializeToString(deterministic=True)
    parsed = transport_pb2.RequestFrame.FromString(joined)
    assert [r.tag for r in parsed.requests] == [tag, tag + 1]
    assert parsed.requests[0].message == message
    assert parsed.requests[0].timeout_ms == timeout_ms


@pytest.mark.parametrize("body_size", [0, 1, 127, 128, 512, 16_384, 65_536, 200_000])
@pytest.mark.parametrize("header_size", [0, 1, 300, 8_192])
@pytest.mark.parametrize("certificate", [b"", b"c" * 528])
def test_signed_message_parts_are_protobufs_own(
    body_size: int, header_size: int, certificate: bytes
) -> None:
    signature = transport_pb2.Signature(
        algorithm=transport_pb2.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256,
        value=b"v" * 72,
        certificate=certificate,
    )
    message = transport_pb2.SignedMessage(
        header=b"h" * header_size, body=b"b" * body_size, signature=signature
    )
    parts = signed_message_parts(
        message.header, message.body, signature.SerializeToString(deterministic=True)
    )

    assert b"".join(parts) == message.SerializeToString(deterministic=True)
    assert b"".join(parts) == message.SerializeToString()
    # Framed from its parts, it is the same element as framed from its bytes.
    assert b"".join(framed_request_parts(7, parts, 30)) == b"".join(
        framed_request_parts(7, message.SerializeToString(), 30)
    )


def test_an_empty_signed_message_has_no_parts() -> None:
    assert signed_message_parts(b"", b"", b"") == ()
    assert transport_pb2.SignedMessage().SerializeToString() == b""


async def test_within_gives_the_result_and_leaves_no_timer() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.call_soon(future.set_result, 5)
    assert await within(future, 10) == 5
    done: asyncio.Future[int] = loop.create_future()
    done.set_result(6)
    assert await within(done, 0) == 6


async def test_within_times_out_and_ends_the_future() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(future, 0.01)
    assert future.done()
    with pytest.raises(asyncio.InvalidStateError):
        future.set_result(1)


async def test_cancelling_the_caller_cancels_the_future_as_awaiting_it_does() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(within(future, 10))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert future.cancelled()


def test_a_zero_tag_or_timeout_is_left_out_as_protobuf_leaves_it_out() -> None:
    message = _message(b"body").SerializeToString()
    frame = transport_pb2.RequestFrame()
    frame.requests.add(message=transport_pb2.SignedMessage.FromString(message))

    assert b"".join(framed_request_parts(0, message, 0)) == frame.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize("body_size", [0, 127, 128, 65_536, 200_000])
@pytest.mark.parametrize("tag", [0, 1, 300, 2**40])
def test_framed_result_bytes_are_protobufs_own(body_size: int, tag: int) -> None:
    response = _message(b"r" * body_size)
    refusal = transport_pb2.Refusal(
        status_code=8, fault="server.provider.rate_limited", fault_id="x", retry_after_ms=250
    )
    frame = transport_pb2.ResultFrame()
    frame.results.add(tag=tag, response=response)
    frame.results.add(tag=tag + 1, refusal=refusal)
    frame.results.add(tag=tag + 2, response=transport_pb2.SignedMessage())

    joined = b"".join(
        (
            *framed_result_parts(tag, response),
            *framed_result_parts(tag + 1, refusal),
            *framed_result_parts(tag + 2, transport_pb2.SignedMessage()),
        )
    )

    assert joined == frame.SerializeToString(deterministic=True)
    parsed = transport_pb2.ResultFrame.FromString(joined)
    assert parsed.results[0].response == response
    assert parsed.results[1].refusal == refusal
    assert parsed.results[2].HasField("response")


async def test_responses_ahead_and_their_notices_are_protobufs_own_bytes() -> None:
    """On a stream that agreed on response-ahead (docs/adr/0038): a response sent ahead carries
    commit_pending, its durable notice goes in ResultFrame.durable, an undone one's refusal in
    ResultFrame.undone; the frame the provider writes is exactly protobuf's deterministic bytes
    for the same ResultFrame, and counts what it finishes (notices, results not sent ahead)."""
    ahead, plain, undone = _message(b"ahead"), _message(b"plain"), _message(b"undone")
    refusal = transport_pb2.Refusal(
        status_code=13, fault="server.provider.logging_failed", fault_id="f", message="m"
    )

    async def answer(
        item: transport_pb2.FramedRequest, send_ahead: SendAhead | None
    ) -> transport_pb2.SignedMessage | transport_pb2.Refusal:
        assert send_ahead is not None
        if item.tag == 2:
            return plain  # committed before it is sent: no notice
        response = ahead if item.tag == 1 else undone
        send_ahead(response)
        return response if item.tag == 1 else refusal

    async def frames() -> AsyncIterator[transport_pb2.RequestFrame]:
        return
        yield

    async def write(_: bytes) -> None:
        return None

    stream = FramesStream(
        frames(),
        answer=answer,
        write=write,
        on_frame=lambda _: None,
        max_frame_bytes=1 << 20,
        shared_room=asyncio.Semaphore(8),
        ahead=True,
    )
    for tag in (1, 2, 3):
        await stream._answer(transport_pb2.FramedRequest(tag=tag))
    first = stream._results.get_nowait()
    assert first is not None
    joined, results, finished = stream._frame(first)

    expected = transport_pb2.ResultFrame(durable=[1])
    expected.results.add(tag=1, response=ahead, commit_pending=True)
    expected.results.add(tag=2, response=plain)
    expected.results.add(tag=3, response=undone, commit_pending=True)
    expected.undone.add(tag=3, refusal=refusal)
    assert joined == expected.SerializeToString(deterministic=True)
    assert (results, finished) == (3, 3)
