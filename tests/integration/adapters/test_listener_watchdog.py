"""Issue 12, finding 1, against a real ``ruta adapter serve`` process: a request whose ``:path``
is not UTF-8, sent without any credential, ends grpcio's aio server loop; the adapter's listener
is seen down, counted in ``/metrics`` and restarted, and a valid call succeeds again
(docs/adr/0020-listener-watchdog.md)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest

from adapters.descriptors import load_service
from tests.conftest import free_port
from tests.integration.adapters.support import EXAMPLES
from tests.listener_attacks import crash_listener
from tests.processes import ready_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUTA = Path(sys.executable).parent / "ruta"
#: Bound on starting and stopping the process, and on a call once the listener is back.
_SECONDS = 60.0


async def _holdings(address: str, proto: Path) -> int:
    service = load_service("land.v1.LandRegistry", proto=proto)
    method = service.methods["GetHoldings"]
    async with grpc.aio.insecure_channel(address) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            method.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=method.output_class.FromString,
        )
        answer = await call(
            method.input_class(national_id="4410000033"), timeout=_SECONDS, wait_for_ready=True
        )
    return len(answer.parcels)


async def test_the_adapter_survives_the_invalid_path(tmp_path: Path) -> None:
    folder = tmp_path / "land"
    folder.mkdir()
    for name in ("land.proto", "parcels.csv"):
        (folder / name).write_bytes((EXAMPLES / "land" / name).read_bytes())
    text = (EXAMPLES / "land" / "adapter.toml").read_text(encoding="utf-8")
    (folder / "adapter.toml").write_text(
        text.replace("[server]\n", '[server]\nmetrics_listen = "127.0.0.1:0"\n'), encoding="utf-8"
    )
    ready_path = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        *(str(RUTA), "adapter", "serve", str(folder / "adapter.toml")),
        # Below the ephemeral range: no outgoing connection takes it while it is closed.
        *("--listen", f"127.0.0.1:{free_port()}", "--ready-file", str(ready_path)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await ready_file(ready_path, process, seconds=_SECONDS)
        assert await _holdings(ready["address"], folder / "land.proto") == 2

        await crash_listener(ready["address"], metrics_url=ready["metrics"], listener="adapter")
        assert await _holdings(ready["address"], folder / "land.proto") == 2
        async with aiohttp.ClientSession() as session, session.get(ready["metrics"]) as reply:
            assert "process_resident_memory_bytes " in await reply.text()
        running = process.returncode is None  # repaired in place, not restarted
        assert running

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(_SECONDS):
            _out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert b"serves again" in err
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
