"""Security servers as real processes (``ruta ss serve --config FILE``).

- 200 concurrent calls all succeed, and each appears exactly once per direction in the
  consumer's and in the provider's message log;
- killing the provider with SIGKILL during load loses no exchange a client saw succeed: after a
  restart each one is in both logs.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ruta.ids import ServerId
from sandbox.examples.population import decode_person, encode_get_person
from security_server.database import open_database
from security_server.log import MessageLog, load_or_create_body_key
from tests.integration.security_server.bed import (
    POP,
    SOC,
    Bed,
    bed,
    call_metadata,
    get_person,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLS = 200


async def _logged(instance: Bed, server: ServerId) -> collections.Counter[tuple[str, str, str]]:
    """(message id, direction, kind) -> count, read from a stopped server's log."""
    data_dir = instance.agencies[server].data_dir
    engine = await open_database(f"sqlite+aiosqlite:///{data_dir / 'messagelog.db'}")
    try:
        log = await MessageLog.open(
            engine, origin=str(server), body_key=load_or_create_body_key(data_dir / "keys")
        )
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        try:
            after = None
            while True:
                page = await log.query(after=after, limit=1000)
                for record in page.records:
                    counts[(record.message_id, record.direction.name, str(record.kind))] += 1
                if page.next_after is None:
                    break
                after = page.next_after
        finally:
            await log.close()
        return counts
    finally:
        await engine.dispose()


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
        consumer = await _logged(instance, SOC)
        provider = await _logged(instance, POP)
    for message_id in ids:
        assert consumer[(message_id, "SENT", "request")] == 1
        assert consumer[(message_id, "RECEIVED", "response")] == 1
        assert provider[(message_id, "RECEIVED", "request")] == 1
        assert provider[(message_id, "SENT", "response")] == 1
    assert sum(consumer.values()) == sum(provider.values()) == 2 * CALLS


async def test_provider_killed_during_load_loses_no_acknowledged_exchange(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        await instance.spawn_server(POP)
        await instance.spawn_server(SOC)
        succeeded: list[str] = []
        target = 100
        reached = asyncio.Event()

        async def worker(channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    succeeded.append(await _call(channel))
                except grpc.aio.AioRpcError:
                    continue  # refused while the provider is down: not acknowledged
                if len(succeeded) >= target:
                    reached.set()

        stop = asyncio.Event()
        async with instance.consumer_channel(SOC) as channel:
            workers = [asyncio.create_task(worker(channel, stop)) for _ in range(16)]
            await reached.wait()
            await instance.stop_process(POP, signal.SIGKILL)
            reached.clear()
            target = len(succeeded) + 50
            await instance.spawn_server(POP)
            await reached.wait()
            stop.set()
            await asyncio.gather(*workers)
        await instance.stop_process(SOC)
        await instance.stop_process(POP)
        consumer = await _logged(instance, SOC)
        provider = await _logged(instance, POP)
    for message_id in succeeded:
        assert consumer[(message_id, "SENT", "request")] == 1
        assert consumer[(message_id, "RECEIVED", "response")] == 1
        assert provider[(message_id, "RECEIVED", "request")] == 1
        assert provider[(message_id, "SENT", "response")] == 1
