"""``ruta gateway serve --config FILE`` as a real process: it writes ready.json, carries a call
through the bus, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import tomli_w

from tests.integration.gateway.gwbed import gateway_bed
from tests.integration.gateway.test_service_access import _call
from tests.integration.security_server.bed import SERVICE, SOC
from tests.processes import ready_file

pytestmark = pytest.mark.integration


async def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        settings = instance.gateway_settings(SOC)
        settings["data_dir"] = "process-data"  # relative: resolved against the file's folder
        config = tmp_path / "gw" / "gateway.toml"
        config.parent.mkdir()
        config.write_text(tomli_w.dumps(settings))
        ready = config.parent / "process-data" / "ready.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ruta",
            "gateway",
            "serve",
            "--config",
            str(config),
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            base = (await ready_file(ready, process))["http"]
            status, _, body = await _call(
                f"{base}/r1/{SERVICE}/GetPerson", body={"nationalId": "38001010001"}
            )
            assert status == 200, body
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert not ready.exists()
