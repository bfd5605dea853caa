"""End to end: a security server's GlobalConfClient against a real ``ruta registry serve``
process, started from the anchor ``ruta registry init`` wrote.

The registry is stopped and started again as a process; the client's clock is the real clock
plus an offset the test moves, so the document can expire without waiting ten minutes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ruta.faults import Fault
from ruta.globalconf import (
    ConfigurationAnchor,
    GlobalConf,
    GlobalConfClient,
    GlobalConfSettings,
    OutdatedGlobalConfError,
)
from ruta.ids import MemberId
from tests.conftest import free_port

pytestmark = pytest.mark.integration

RUTA = str(Path(sys.executable).with_name("ruta"))
#: Longest wait for a registry process to start or stop (a slow, shared machine).
_PROCESS_TIMEOUT_SECONDS = 60.0


@dataclass
class OffsetClock:
    """The real clock, moved forward by ``offset`` (so documents can expire in a test)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class RegistryProcess:
    def __init__(self, directory: Path, log: Path) -> None:
        self.directory = directory
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        ready = self.directory / "registry.ready.json"
        with self._log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *(RUTA, "--log-level", "info", "registry", "serve", "--dir", str(self.directory)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._process = process
        async with asyncio.timeout(_PROCESS_TIMEOUT_SECONDS):
            while not ready.exists() or json.loads(ready.read_text())["pid"] != process.pid:
                assert process.returncode is None, self._log.read_text()
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(_PROCESS_TIMEOUT_SECONDS):
            code = await process.wait()
        assert code == 0, self._log.read_text()

    def ruta(self, *args: str) -> None:
        command, *rest = args
        subprocess.run(
            [RUTA, "registry", command, *rest, "--dir", str(self.directory)],
            check=True,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryProcess]:
    directory = tmp_path / "registry"
    await asyncio.to_thread(
        subprocess.run,
        [
            RUTA, "registry", "init", "--dir", str(directory), "--instance", "LAC",
            "--admin-listen", f"127.0.0.1:{free_port()}",
            "--http-listen", f"127.0.0.1:{free_port()}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    process = RegistryProcess(directory, tmp_path / "serve.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(_PROCESS_TIMEOUT_SECONDS):
        while not predicate():  # noqa: ASYNC110 - polls state set by the client's task
            await asyncio.sleep(0.02)


def _usable(client: GlobalConfClient, check: Callable[[GlobalConf], bool]) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return check(client.current())
        except OutdatedGlobalConfError:
            return False

    return probe


async def test_client_follows_a_real_registry_through_an_outage(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    anchor = ConfigurationAnchor.from_file(registry.directory / "globalconf" / "anchor.toml")
    clock = OffsetClock()
    settings = GlobalConfSettings(
        fetch_interval_seconds=0.1, retry_initial_seconds=0.05, retry_max_seconds=0.2
    )
    client = GlobalConfClient(
        anchor=anchor, cache_path=tmp_path / "ss" / "globalconf.bin", settings=settings, clock=clock
    )
    await client.start()
    try:
        first = client.current()
        assert first.instance == "LAC"

        # An administrator's change reaches the server with the next fetch.
        await asyncio.to_thread(
            registry.ruta, "member", "add", "LAC/GOV/POP", "--name", "Population Registry"
        )
        pop = MemberId.parse("LAC/GOV/POP")
        await _until(_usable(client, lambda conf: conf.member(pop) is not None))
        held = client.current()
        assert held.serial > first.serial

        # Registry down: the server keeps working from what it holds until it expires...
        await registry.stop()
        assert client.current().serial >= held.serial
        clock.offset = client.current().expires_at - datetime.now(UTC) + timedelta(seconds=1)
        with pytest.raises(OutdatedGlobalConfError) as outdated:
            client.current()
        assert outdated.value.fault is Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF

        # ...and recovers by itself when the registry is back.
        clock.offset = timedelta(0)
        await registry.start()
        await _until(_usable(client, lambda conf: conf.serial > held.serial))
        assert client.current().member(pop) is not None
    finally:
        await client.stop()
