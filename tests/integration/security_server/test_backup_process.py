"""``ruta ss backup`` as an operator runs it: a process copying a provider server that runs as
``ruta ss serve`` and keeps answering exchanges meanwhile. The copy holds both records of every
exchange answered before it began, its tree is a prefix of the live one (the same root at its
size), and it opens with the keys it carries."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.examples.population import encode_get_person
from security_server.backup import MANIFEST_FILE
from security_server.database import create_engine
from security_server.log import LogReader, load_or_create_body_key
from security_server.settings import SecurityServerSettings
from tests.integration.security_server.bed import POP, SOC, bed, call_metadata, get_person

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _reader(database: Path, origin: str, keys: Path) -> tuple[LogReader, AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    reader = await LogReader.open(engine, origin=origin, body_key=load_or_create_body_key(keys))
    return reader, engine


async def test_a_backup_of_a_serving_provider_holds_every_answered_exchange(
    tmp_path: Path,
) -> None:
    async with bed(tmp_path) as instance:
        for server in (POP, SOC):
            await instance.spawn_server(server)
        pop = instance.agencies[POP]
        settings = SecurityServerSettings.from_file(pop.config_path)
        answered = 0
        stop = asyncio.Event()

        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)

            async def exchange() -> None:
                nonlocal answered
                await call(encode_get_person("38001010001"), metadata=call_metadata())
                answered += 1

            async def keep_calling() -> None:
                while not stop.is_set():
                    await asyncio.gather(*(exchange() for _ in range(4)))

            for _ in range(20):
                await exchange()
            load = asyncio.create_task(keep_calling())
            await asyncio.sleep(0.2)
            before = answered
            destination = tmp_path / "backup"
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from ruta.cli import main; main()",
                "ss",
                "backup",
                "--config",
                str(pop.config_path),
                str(destination),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            stop.set()
            await load
        assert process.returncode == 0, err.decode()
        origin = settings.log_origin()
        assert f"log {origin}: " in out.decode()
        manifest = json.loads((destination / MANIFEST_FILE).read_text())
        copied = manifest["records"][origin]
        # Both records (request, response) of every exchange answered before the copy began.
        assert copied >= 2 * before

        data = destination / "data"
        backup, backup_engine = await _reader(data / "messagelog.db", origin, data / "keys")
        live, live_engine = await _reader(
            pop.data_dir / "messagelog.db", origin, pop.data_dir / "keys"
        )
        try:
            assert backup.size() == copied
            assert live.size() >= copied
            # The copy is the live log as of one commit: the same tree up to its size.
            assert await backup.root() == await live.root(copied)
            # Its bodies open with the key it carries, as the live log's do.
            last = copied - 1
            body = await backup.get_body(last)
            assert body is not None
            assert body == await live.get_body(last)
        finally:
            await backup_engine.dispose()
            await live_engine.dispose()
