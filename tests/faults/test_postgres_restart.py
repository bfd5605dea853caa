"""PostgreSQL restarted under load: both security servers keep their message logs in a
PostgreSQL cluster of this test's own, which is stopped hard (``pg_ctl -m immediate``, as a crash)
at a seeded random moment and started again. The servers reconnect by themselves; every exchange
a caller saw answered is in both logs, read back afterwards and verified against the last
checkpoint taken before the restart.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Final

import pytest

from tests.faults.support import (
    Outcome,
    PrivatePostgres,
    assert_acknowledged_in_both,
    latest_checkpoint,
    private_postgres_problem,
    read_log,
    reported,
    run_load,
    seeded,
    wait_until,
)
from tests.integration.security_server.bed import POP, SOC, bed

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

CALLS: Final = 300


@pytest.mark.timeout(300)
async def test_postgres_restart_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    problem = private_postgres_problem()
    if problem is not None:
        pytest.skip(problem)
    rng = seeded("postgres-restart")
    # Not under tmp_path: the postgres user must be able to reach the cluster's folder.
    cluster = PrivatePostgres(Path(tempfile.mkdtemp(prefix="ruta-faults-pg-")) / "cluster")
    outcome = Outcome()
    try:
        await asyncio.to_thread(cluster.init)
        urls = {POP: cluster.create_database("ruta_pop"), SOC: cluster.create_database("ruta_soc")}
        async with bed(tmp_path) as instance:
            for server in (POP, SOC):
                data = instance.settings_dict(server)
                data["log"] = {"url": urls[server]}
                await instance.spawn_server(server, data=data)
            with reported(outcome):
                async with instance.consumer_channel(SOC) as channel:
                    load = asyncio.create_task(
                        run_load(channel, calls=CALLS, concurrency=16, outcome=outcome)
                    )
                    await wait_until(outcome, rng.randint(30, CALLS // 2))
                    prior = {s: await latest_checkpoint(urls[s], str(s)) for s in (POP, SOC)}
                    await asyncio.to_thread(cluster.stop, "immediate")
                    await asyncio.sleep(rng.uniform(0.2, 1.5))
                    await asyncio.to_thread(cluster.start)
                    await asyncio.wait_for(load, 240)
                # Served again after the restart, by the same processes.
                answered = len(outcome.acknowledged)
                async with instance.consumer_channel(SOC) as channel:
                    await run_load(channel, calls=20, concurrency=4, outcome=outcome)
                assert len(outcome.acknowledged) == answered + 20, outcome.faults
                await instance.stop_process(SOC)
                await instance.stop_process(POP)
                consumer = await read_log(instance, SOC, url=urls[SOC], prior=prior[SOC])
                provider = await read_log(instance, POP, url=urls[POP], prior=prior[POP])
                assert_acknowledged_in_both(outcome.acknowledged, consumer, provider)
    finally:
        await asyncio.to_thread(cluster.destroy)
        shutil.rmtree(cluster.directory.parent, ignore_errors=True)
