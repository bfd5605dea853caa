"""SIGKILL of the consumer's security server, the provider's, or the backend, at a seeded random
moment under load (hundreds of calls from 16 concurrent callers that retry with the same message
id, as careful clients do).

After a restart and the end of the load, each server's whole log is exported as an evidence
bundle and verified offline (``ruta audit verify``), then read back directly: every exchange a
caller saw answered is in both logs, both trees verify (every checkpoint, and consistency with the
last checkpoint stored before the kill), and the backend received no message id twice.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Final

import pytest

from ruta.ids import ServerId
from tests.conftest import free_port
from tests.faults.support import (
    CountingBackend,
    Outcome,
    assert_acknowledged_in_both,
    export_and_verify,
    latest_checkpoint,
    read_log,
    reported,
    run_load,
    seeded,
    sqlite_url,
    wait_cosigned_all,
    wait_until,
    with_audit_port,
)
from tests.integration.security_server.bed import POP, SOC, Bed, bed

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

CALLS: Final = 300
CONCURRENCY: Final = 16


async def _spawn(instance: Bed, server: ServerId, consumer_port: int) -> None:
    data = with_audit_port(instance, server)
    data["consumer"] = {**data["consumer"], "listen": f"127.0.0.1:{consumer_port}"}  # type: ignore[dict-item]
    await instance.spawn_server(server, data=data)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("target", ["consumer", "provider", "backend"])
async def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path, target: str) -> None:
    rng = seeded(f"sigkill-{target}")
    ports = {POP: free_port(), SOC: free_port()}
    outcome = Outcome()
    async with bed(tmp_path) as instance:
        backend = CountingBackend(tmp_path / "backend")
        await backend.start()
        instance.backend_address = backend.address
        try:
            for server in (POP, SOC):
                await _spawn(instance, server, ports[server])
            with reported(outcome):
                async with instance.consumer_channel(SOC) as channel:
                    load = asyncio.create_task(
                        run_load(channel, calls=CALLS, concurrency=CONCURRENCY, outcome=outcome)
                    )
                    await wait_until(outcome, rng.randint(20, CALLS // 2))
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    prior = {
                        s: await latest_checkpoint(sqlite_url(instance, s), str(s))
                        for s in (POP, SOC)
                    }
                    if target == "backend":
                        backend.kill()
                        await asyncio.sleep(rng.uniform(0.1, 1.0))
                        await backend.start()
                    else:
                        victim = SOC if target == "consumer" else POP
                        await instance.stop_process(victim, signal.SIGKILL)
                        await asyncio.sleep(rng.uniform(0.1, 1.0))
                        await _spawn(instance, victim, ports[victim])
                    await asyncio.wait_for(load, 300)
                for server in (POP, SOC):
                    await wait_cosigned_all(instance, server)
                    await export_and_verify(
                        instance, server, tmp_path / f"{server.member.member_code}.zip"
                    )
                await instance.stop_process(SOC)
                await instance.stop_process(POP)
                consumer = await read_log(instance, SOC, prior=prior[SOC])
                provider = await read_log(instance, POP, prior=prior[POP])
                assert len(outcome.acknowledged) >= CALLS // 2
                assert_acknowledged_in_both(outcome.acknowledged, consumer, provider)
                acted = backend.acted()
                assert not [m for m, n in acted.items() if n > 1], "the backend acted twice"
                assert all(acted[m] == 1 for m in outcome.acknowledged)
        finally:
            backend.kill()
