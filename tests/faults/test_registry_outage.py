"""Registry down: exchanges go on from the last good configuration until it expires, then the
consumer refuses with ``server.consumer.outdated_globalconf`` (fail closed); registry back: the
servers fetch a fresh configuration and serve again, with no restart.

The configuration's validity is short (stamped so that it expires a few seconds after the
registry goes away). What was kept is read from both logs afterwards, not from counters.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import grpc
import pytest

from tests.faults.support import (
    Outcome,
    assert_acknowledged_in_both,
    read_log,
    run_load,
)
from tests.integration.security_server.bed import POP, SOC, bed, consumer_refusal

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(180)
async def test_registry_outage_fails_closed_then_resumes_without_restart(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        pids = {}
        for server in (POP, SOC):
            pids[server] = (await instance.spawn_server(server)).process.pid  # type: ignore[union-attr]
        now = datetime.datetime.now(datetime.UTC)
        stamped = now - instance.publisher.validity + datetime.timedelta(seconds=10)
        published = instance.publisher.publish(instance.configuration(), now=stamped)
        await instance.wait_for_process_serial(published.serial, SOC, POP)
        await instance.stop_registry()

        outcome = Outcome()
        async with instance.consumer_channel(SOC) as channel:
            # Registry down, configuration still valid: exchanges go on.
            await run_load(channel, calls=40, concurrency=8, outcome=outcome)
            assert len(outcome.acknowledged) == 40, outcome.faults
            left = published.expires_at - datetime.datetime.now(datetime.UTC)
            await asyncio.sleep(max(0.0, left.total_seconds()) + 0.3)
            for _ in range(3):
                code, fault = await consumer_refusal(instance, deadline=10)
                assert (code, fault) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "server.consumer.outdated_globalconf",
                )
            # Registry back on its address with a fresh configuration: service resumes.
            await instance.start_registry(port=instance.registry_port)
            serial = instance.publish()
            await instance.wait_for_process_serial(serial, SOC, POP)
            resumed = Outcome()
            await run_load(channel, calls=40, concurrency=8, outcome=resumed)
            assert len(resumed.acknowledged) == 40, resumed.faults
        for server in (POP, SOC):  # the same processes served throughout
            assert instance.agencies[server].process.pid == pids[server]  # type: ignore[union-attr]
        await instance.stop_process(SOC)
        await instance.stop_process(POP)
        consumer = await read_log(instance, SOC)
        provider = await read_log(instance, POP)
    assert_acknowledged_in_both(outcome.acknowledged + resumed.acknowledged, consumer, provider)
