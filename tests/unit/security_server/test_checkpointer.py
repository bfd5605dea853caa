"""Checkpointer against a real witness over HTTP on loopback (registry.witness_http in-process)."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from registry.witness import MemoryWitnessStateStore, Witness
from registry.witness_http import witness_app
from ruta.checkpoint import open_checkpoint, verify_cosignature
from ruta.faults import Fault
from ruta.pki.keys import generate_ed25519_key
from security_server.checkpointer import (
    Checkpointer,
    CheckpointSettings,
    WitnessTarget,
    WitnessUnavailableError,
    load_or_create_log_key,
    log_verifier,
)
from security_server.database import open_database
from security_server.errors import Side, fault_for
from security_server.log import BodyKey, MessageLog
from tests.conftest import free_port
from tests.unit.security_server.log.support import ORIGIN, FakeClock, make_entry


class _WitnessServer:
    """The registry's witness app on a fixed loopback port that can be stopped and restarted."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        runner = web.AppRunner(witness_app(self.witness), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[MessageLog]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'ss.db'}")
    opened = await MessageLog.open(engine, origin=ORIGIN, body_key=BodyKey.generate())
    try:
        yield opened
    finally:
        await opened.close()
        await engine.dispose()


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_log_key_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "log-ed25519.key"
    key = load_or_create_log_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_log_key(path)
    assert log_verifier(ORIGIN, key).vkey() == log_verifier(ORIGIN, again).vkey()


async def test_cosignatures_arrive_window_closes_and_reopens(log: MessageLog) -> None:
    key = generate_ed25519_key()
    witness_key = generate_ed25519_key()
    witness = Witness(
        name="registry.test/witness",
        key=witness_key,
        logs={ORIGIN: [log_verifier(ORIGIN, key)]},
        store=MemoryWitnessStateStore(),
    )
    server = _WitnessServer(witness)
    await server.up()
    clock = FakeClock()
    settings = CheckpointSettings(interval_seconds=0.02, cosign_window_seconds=60)
    target = WitnessTarget(url=server.url, verifier=witness.verifier)
    async with aiohttp.ClientSession() as session:
        cp = await Checkpointer.open(
            log=log,
            key=key,
            witness=lambda: target,
            session=session,
            settings=settings,
            clock=clock,
        )
        cp.start()
        try:
            await log.append([make_entry(), make_entry()])
            await _until(lambda: cp.cosigned is not None and cp.cosigned.size == 2)
            stored = await log.latest_checkpoint(cosigned=True)
            assert stored is not None
            assert stored.cosignature is not None
            checkpoint, _ = open_checkpoint(stored.note, cp.verifier)
            assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 2)
            assert checkpoint.root == log.head().root
            verify_cosignature(checkpoint.body(), stored.cosignature, witness.verifier)
            cp.check_cosigned()

            # The log grows: the next checkpoint is cosigned with a consistency proof from 2.
            await log.append([make_entry()])
            await _until(lambda: cp.cosigned is not None and cp.cosigned.size == 3)

            # The witness goes away; past the window exchanges are refused on both sides.
            await server.down()
            await log.append([make_entry()])
            await _until(lambda: cp.last_error is not None)
            clock.advance(61)
            with pytest.raises(WitnessUnavailableError) as caught:
                cp.check_cosigned()
            # Side-neutral: each proxy names its own witness_unavailable fault.
            assert (
                fault_for(Side.PROVIDER, caught.value) is Fault.SERVER_PROVIDER_WITNESS_UNAVAILABLE
            )
            assert (
                fault_for(Side.CONSUMER, caught.value) is Fault.SERVER_CONSUMER_WITNESS_UNAVAILABLE
            )

            # The witness is back: the pending checkpoint is cosigned and exchanges resume.
            await server.up()
            await _until(lambda: cp.cosigned is not None and cp.cosigned.size == 4)
            cp.check_cosigned()
            assert cp.last_error is None
        finally:
            await cp.stop()
            await server.down()


async def test_conflict_answered_from_the_witness_size_and_restart_resumes(
    log: MessageLog,
) -> None:
    key = generate_ed25519_key()
    witness = Witness(
        name="registry.test/witness",
        key=generate_ed25519_key(),
        logs={ORIGIN: [log_verifier(ORIGIN, key)]},
        store=MemoryWitnessStateStore(),
    )
    server = _WitnessServer(witness)
    await server.up()
    target = WitnessTarget(url=server.url, verifier=witness.verifier)
    try:
        async with aiohttp.ClientSession() as session:
            first = await Checkpointer.open(
                log=log, key=key, witness=lambda: target, session=session
            )
            await log.append([make_entry(), make_entry()])
            assert (await first.tick()) is not None
            # Forget the stored cosignature: a fresh checkpointer believes the witness is at
            # an older size, gets 409 with the witness's size, and answers from there.
            stale = await Checkpointer.open(
                log=log, key=key, witness=lambda: target, session=session
            )
            stale._cosigned = None
            await log.append([make_entry()])
            cosigned = await stale.tick()
            assert cosigned is not None
            assert cosigned.size == 3
            # A restarted checkpointer resumes from what is stored.
            resumed = await Checkpointer.open(
                log=log, key=key, witness=lambda: target, session=session
            )
            assert resumed.cosigned is not None
            assert resumed.cosigned.size == 3
            resumed.check_cosigned()
            assert (await resumed.tick()) is None  # nothing new, cosignature fresh
    finally:
        await server.down()


async def test_no_witness_configured_means_no_cosignature(log: MessageLog) -> None:
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        cp = await Checkpointer.open(
            log=log,
            key=generate_ed25519_key(),
            witness=lambda: None,
            session=session,
            settings=CheckpointSettings(cosign_window_seconds=10),
            clock=clock,
        )
        assert await cp.tick() is None
        assert cp.last_error is not None
        cp.check_cosigned()
        clock.advance(11)
        with pytest.raises(WitnessUnavailableError):
            cp.check_cosigned()
