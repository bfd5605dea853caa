"""Bytes that are no transport message, sent to a running provider server over real mTLS with a
listed server's authentication certificate, are refused with ``server.provider.invalid_message``
(earlier: ``UNKNOWN`` with no ``ruta-fault``), and the server goes on serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ruta.faults import Fault
from security_server.transport import EXCHANGE_PATH
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    SOC,
    Bed,
    call_metadata,
    fault_of,
    get_person,
    provider_and_consumer,
    provider_channel,
)

pytestmark = pytest.mark.integration

FRAMES_PATH = "/ruta.v1.Transport/ExchangeFrames"
#: Field 1 with wire type 7 (no such type), a truncated varint, a length past the end.
GARBAGE = [b"\xff\xff\xff\xff", b"\x08\x80", b"\x0a\x7fabc"]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Bed]:
    async with provider_and_consumer(tmp_path) as instance:
        yield instance


async def _still_serving(instance: Bed) -> None:
    async with instance.consumer_channel(SOC) as channel:
        await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=10)


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_to_exchange_is_an_invalid_message(running: Bed, garbage: bytes) -> None:
    async with provider_channel(running) as channel:
        exchange: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            EXCHANGE_PATH
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exchange(garbage, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fault_of(caught.value) == Fault.SERVER_PROVIDER_INVALID_MESSAGE
    assert "SignedMessage" in (caught.value.details() or "")
    await _still_serving(running)


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_to_exchange_frames_is_an_invalid_message(
    running: Bed, garbage: bytes
) -> None:
    async with provider_channel(running) as channel:
        frames: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            FRAMES_PATH
        )
        call = frames(timeout=10)
        await call.write(garbage)
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fault_of(caught.value) == Fault.SERVER_PROVIDER_INVALID_MESSAGE
    assert "RequestFrame" in (caught.value.details() or "")
    await _still_serving(running)
