"""Security servers as real processes (``ruta ss serve --config FILE``).

200 concurrent calls all succeed, and each appears exactly once per direction in the consumer's
and in the provider's message log. (Killing a server or the backend under load is the fault
suite's: tests/faults/test_kills.py.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest

from sandbox.examples.population import decode_person, encode_get_person
from tests.faults.support import read_log
from tests.integration.security_server.bed import (
    POP,
    SOC,
    bed,
    call_metadata,
    get_person,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLS = 200


async def _call(channel: grpc.aio.Channel) -> str:
    call = get_person(channel)(encode_get_person("38001010001"), metadata=call_metadata())
    raw = await call
    assert decode_person(raw)["given_name"] == "Ana"
    return str(dict(await call.trailing_metadata() or ())["ruta-message-id"])


async def test_concurrent_calls_each_logged_once_on_both_sides(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.spawn_server(POP)
        await instance.spawn_server(SOC)
        async with instance.consumer_channel(SOC) as channel:
            ids = await asyncio.gather(*(_call(channel) for _ in range(CALLS)))
        assert len(set(ids)) == CALLS
        await instance.stop_process(SOC)
        await instance.stop_process(POP)
        consumer = (await read_log(instance, SOC)).count()
        provider = (await read_log(instance, POP)).count()
    for message_id in ids:
        assert consumer[(message_id, "SENT", "request")] == 1
        assert consumer[(message_id, "RECEIVED", "response")] == 1
        assert provider[(message_id, "RECEIVED", "request")] == 1
        assert provider[(message_id, "SENT", "response")] == 1
    assert sum(consumer.values()) == sum(provider.values()) == 2 * CALLS
