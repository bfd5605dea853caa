"""The message log's volume fills up: a server whose log lives on a small filesystem of its own
(a tmpfs) refuses exchanges with ``server.consumer.logging_failed`` or
``server.provider.logging_failed`` once nothing more can be stored, never acknowledges an exchange
it could not log, and serves again once space returns, with no restart.

Both logs are read back afterwards: every call a caller saw answered is in both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest

from tests.faults.support import (
    ID_TAKEN,
    Outcome,
    assert_acknowledged_in_both,
    fill,
    logical_call,
    read_log,
    reported,
    run_load,
    small_filesystem,
    small_filesystem_problem,
)
from tests.integration.security_server.bed import POP, SOC, bed

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

#: Calls made on a full volume before a refusal must have been seen (bounds the scenario).
MAX_CALLS_UNTIL_FULL: Final = 400


@pytest.mark.timeout(240)
@pytest.mark.parametrize("side", ["consumer", "provider"])
async def test_full_log_volume_refuses_then_resumes(tmp_path: Path, side: str) -> None:
    problem = small_filesystem_problem()
    if problem is not None:
        pytest.skip(problem)
    full = SOC if side == "consumer" else POP
    outcome = Outcome()
    with small_filesystem(tmp_path / "logvolume", "8m") as volume:
        async with bed(tmp_path / "bed") as instance:
            urls: dict[object, str] = {}
            for server in (POP, SOC):
                data = instance.settings_dict(server)
                if server == full:
                    urls[server] = f"sqlite+aiosqlite:///{volume / 'messagelog.db'}"
                    data["log"] = {"url": urls[server]}
                await instance.spawn_server(server, data=data)
            with reported(outcome):
                async with instance.consumer_channel(SOC) as channel:
                    await run_load(channel, calls=30, concurrency=8, outcome=outcome)
                    assert len(outcome.acknowledged) == 30, outcome.faults
                    ballast = volume / "ballast"
                    await asyncio.to_thread(fill, ballast)
                    expected = f"server.{side}.logging_failed"
                    for _ in range(MAX_CALLS_UNTIL_FULL // 8):
                        await run_load(
                            channel, calls=8, concurrency=8, outcome=outcome, retry_window=0
                        )
                        if outcome.faults[expected]:
                            break
                    assert outcome.faults[expected], f"no {expected}: {dict(outcome.faults)}"
                    unexpected = set(outcome.faults) - {expected, *ID_TAKEN}
                    assert not unexpected, dict(outcome.faults)
                    ballast.unlink()
                    # Space is back: the same processes serve again (bounded retries).
                    before = len(outcome.acknowledged)
                    for _ in range(20):
                        await logical_call(channel, outcome, retry_window=0)
                        await asyncio.sleep(0.2)
                        if len(outcome.acknowledged) > before:
                            break
                    await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                    assert len(outcome.acknowledged) >= before + 20, dict(outcome.faults)
                await instance.stop_process(SOC)
                await instance.stop_process(POP)
                consumer = await read_log(instance, SOC, url=urls.get(SOC))
                provider = await read_log(instance, POP, url=urls.get(POP))
                assert_acknowledged_in_both(outcome.acknowledged, consumer, provider)
