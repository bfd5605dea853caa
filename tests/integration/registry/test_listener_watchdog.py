"""Issue 12, finding 1, against a real ``ruta registry serve`` process: a request whose ``:path``
is not UTF-8 ends grpcio's aio server loop of the admin API's listener; the listener is seen down,
counted in ``/metrics`` and restarted, and the admin CLI works again
(docs/adr/0020-listener-watchdog.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.listener_attacks import client_tls, crash_listener
from tests.processes import ready_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUTA = str(Path(sys.executable).with_name("ruta"))
#: Longest wait for the registry to start or stop, or a CLI call to finish (a shared machine).
_PROCESS_SECONDS = 60.0


def _ruta(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUTA, *args], capture_output=True, text=True, timeout=_PROCESS_SECONDS, check=False
    )


async def test_the_admin_listener_survives_the_invalid_path(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    init = await asyncio.to_thread(
        _ruta,
        *("registry", "init", "--dir", str(directory), "--instance", "LAC"),
        # The port crashed is claimed below the ephemeral range: while it is closed, an outgoing
        # connection could take a port-0 port (tests/integration/security_server/
        # test_listener_watchdog.py says more).
        *("--admin-listen", f"127.0.0.1:{free_port()}"),
        *("--http-listen", f"127.0.0.1:{free_port()}"),
    )
    assert init.returncode == 0, init.stderr
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(RUTA, "--log-level", "info", "registry", "serve", "--dir", str(directory)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready_path = directory / "registry.ready.json"
        ready = await ready_file(ready_path, process, seconds=_PROCESS_SECONDS, log=log_path)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{ready['http']}/metrics") as reply,
        ):
            metrics = await reply.text()
        for kind in ("ca", "ocsp", "tls", "globalconf_signing"):
            assert f'ruta_certificate_expires_timestamp_seconds{{kind="{kind}"}}' in metrics
        assert "process_resident_memory_bytes " in metrics

        # The TLS layer asks for a client certificate from the registry's CA: the local
        # operator's will do (any member's administrator holds one too).
        await crash_listener(
            ready["admin"],
            metrics_url=f"{ready['http']}/metrics",
            listener="admin",
            tls=client_tls(
                ca=directory / "ca" / "anchor.pem",
                cert=directory / "admin" / "admin.pem",
                key=directory / "admin" / "admin.key",
            ),
        )

        added = await asyncio.to_thread(
            _ruta, "registry", "member", "add", "LAC/GOV/POP", "--name", "Population", "--dir",
            str(directory),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        listed = await asyncio.to_thread(
            _ruta, "registry", "member", "list", "--json", "--dir", str(directory)
        )
        assert listed.returncode == 0, listed.stderr
        # The CLI's JSON is protobuf's JSON mapping: identifiers are objects of their parts.
        [member] = json.loads(listed.stdout)
        assert (member["id"]["instance"], member["id"]["member_code"]) == ("LAC", "POP")
        assert process.returncode is None  # repaired in place, not restarted
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(_PROCESS_SECONDS):
            code = await process.wait()
    assert code == 0, log_path.read_text()
