"""Reloading a running security server's settings, with real ``ruta ss serve`` processes.

- under traffic: calls held by the old backend while SIGHUP (through ``ruta ss reload``) swaps
  the backend all finish, calls made after the swap reach the new backend, and none fails;
- ``ruta ss backend add ... --reload`` makes a new backend reachable without a restart, and
  ``remove`` takes it away again;
- an invalid file is refused (by the command, and by the server on a bare SIGHUP) and the server
  keeps serving with its old settings; a restart-only change is reported, not applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
import tomli_w

from sandbox.examples.population import SERVICE_NAME, decode_person
from security_server.reload import RELOAD_FILE
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SERVICE,
    SOC,
    Bed,
    bed,
    call_metadata,
    consumer_refusal,
    get_person,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Calls held by the old backend across the reload, and calls made after it.
HELD_CALLS = 20
LATER_CALLS = 20


class HeldBackend:
    """A population backend that holds every call until :attr:`release` is set, then answers
    with ``answer`` (the real backend's answer)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.release = asyncio.Event()
        self.pending = 0

    async def _get_person(self, _raw: bytes, _context: Any) -> bytes:
        self.pending += 1
        await self.release.wait()
        return self.answer

    async def start(self) -> tuple[grpc.aio.Server, str]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE_NAME,
                    {"GetPerson": grpc.unary_unary_rpc_method_handler(self._get_person)},
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, f"127.0.0.1:{port}"


async def _ruta(*args: str) -> tuple[int, str, str]:
    """Run ``ruta ARGS`` as a process (the loop keeps serving this test's backends meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from ruta.cli import main; main()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _call(channel: grpc.aio.Channel) -> None:
    raw = await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=30)
    assert decode_person(raw)["given_name"] == "Ana"


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _reloads(instance: Bed, outcome: str) -> float:
    """``ruta_settings_reloads_total{outcome}`` as POP's metrics port serves it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(instance.agencies[POP].addresses["metrics"]) as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'ruta_settings_reloads_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def _pop_settings(instance: Bed, backends: list[dict[str, Any]]) -> dict[str, Any]:
    data = instance.settings_dict(POP)
    data["backends"] = backends
    if not backends:
        del data["backends"]
    return data


async def test_reload_under_traffic_loses_no_call(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        async with grpc.aio.insecure_channel(instance.backend_address) as direct:
            answer = await get_person(direct)(PERSON_REQUEST, timeout=10)
        held = HeldBackend(answer)
        held_server, held_address = await held.start()
        try:
            data = _pop_settings(instance, [{"service": str(SERVICE), "address": held_address}])
            await instance.spawn_server(POP, data=data)
            await instance.spawn_server(SOC)
            config = instance.agencies[POP].config_path
            async with instance.consumer_channel(SOC) as channel:
                before = [asyncio.ensure_future(_call(channel)) for _ in range(HELD_CALLS)]
                await _until(lambda: held.pending == HELD_CALLS, "the held calls")

                # Swap the backend while every one of those calls is in flight on the old one.
                data["backends"] = [{"service": str(SERVICE), "address": instance.backend_address}]
                config.write_text(tomli_w.dumps(data))
                code, out, err = await _ruta("ss", "reload", "--config", str(config))
                assert code == 0, err
                assert out.startswith("applied: applied backends"), out
                assert "changed: " + str(SERVICE) in out

                # New calls reach the new backend while the old one still holds its calls.
                served = len(instance.backend.calls)
                await asyncio.gather(*(_call(channel) for _ in range(LATER_CALLS)))
                assert len(instance.backend.calls) - served == LATER_CALLS
                assert held.pending == HELD_CALLS
                assert not any(task.done() for task in before)

                # The old backend answers at last: every call held across the swap succeeds.
                held.release.set()
                await asyncio.wait_for(asyncio.gather(*before), timeout=30)
            assert await _reloads(instance, "applied") == 1
            assert await _reloads(instance, "refused") == 0
        finally:
            await held_server.stop(None)


async def test_backend_added_and_removed_without_restart(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        pop = await instance.spawn_server(POP, data=_pop_settings(instance, []))
        await instance.spawn_server(SOC)
        config = str(pop.config_path)
        assert (await consumer_refusal(instance))[1] == "server.provider.unknown_service"

        code, out, err = await _ruta(
            "ss", "backend", "add", "--config", config, str(SERVICE), instance.backend_address,
            "--reload",
        )  # fmt: skip
        assert code == 0, err
        assert f"added: {SERVICE}" in out
        async with instance.consumer_channel(SOC) as channel:
            await _call(channel)
        assert pop.process is not None
        assert pop.process.poll() is None  # the same process: no restart
        assert "[[backends]]" in pop.config_path.read_text()
        code, out, _ = await _ruta("ss", "backend", "list", "--config", config)
        assert code == 0
        assert f"{SERVICE}\t{instance.backend_address}\tno" in out.splitlines()

        # A restart-only change is reported by name, not applied; the backends stay as they are.
        document = pop.config_path.read_text().replace(
            "max_message_bytes = 65536", "max_message_bytes = 131072"
        )
        pop.config_path.write_text(document)
        code, out, err = await _ruta("ss", "reload", "--config", config)
        assert code == 0, err
        assert out.startswith("needs_restart: nothing to apply"), out
        assert "needs a restart (not applied): limits.max_message_bytes" in out
        status = json.loads((pop.data_dir / RELOAD_FILE).read_text())
        assert status["needs_restart"] == ["limits.max_message_bytes"]
        assert await _reloads(instance, "needs_restart") == 1

        code, out, err = await _ruta(
            "ss", "backend", "remove", "--config", config, str(SERVICE), "--reload"
        )
        assert code == 0, err
        assert f"removed: {SERVICE}" in out
        assert (await consumer_refusal(instance))[1] == "server.provider.unknown_service"


async def test_invalid_file_refused_old_settings_kept(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        pop = await instance.spawn_server(POP)
        await instance.spawn_server(SOC)
        good = pop.config_path.read_text()
        invalid = good.replace(instance.backend_address, "192.0.2.1:50051")
        assert invalid != good
        pop.config_path.write_text(invalid)

        # The command refuses the file before signalling anything.
        code, _, err = await _ruta("ss", "reload", "--config", str(pop.config_path))
        assert code == 1
        assert "plaintext is allowed only to loopback" in err
        assert "keeps its settings" in err
        assert not (pop.data_dir / RELOAD_FILE).exists()

        # A bare SIGHUP: the server refuses the file itself, says why, and keeps serving.
        assert pop.process is not None
        os.kill(pop.process.pid, signal.SIGHUP)
        await _until((pop.data_dir / RELOAD_FILE).exists, "the reload's outcome")
        status = json.loads((pop.data_dir / RELOAD_FILE).read_text())
        assert status["outcome"] == "refused"
        assert "plaintext is allowed only to loopback" in status["message"]
        async with instance.consumer_channel(SOC) as channel:
            await _call(channel)
        assert await _reloads(instance, "refused") == 1
        stderr = (pop.directory / "stderr.log").read_text()
        assert "settings reload refused, the old settings stay" in stderr

        # Not TOML at all: refused the same way.
        pop.config_path.write_text(good + "\n[[backends]\n")
        os.kill(pop.process.pid, signal.SIGHUP)
        await _until(lambda: _outcome(pop.data_dir)["sequence"] == 2, "the second reload")
        assert "is not valid TOML" in _outcome(pop.data_dir)["message"]
        async with instance.consumer_channel(SOC) as channel:
            await _call(channel)
        assert pop.process.poll() is None


def _outcome(data_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((data_dir / RELOAD_FILE).read_text())
    return result
