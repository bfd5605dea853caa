"""The container health check as deployed (deploy/): ``ruta health`` asks a running
``ruta ss serve`` process's transport port, presenting the server's own authentication
certificate, as the Dockerfile's HEALTHCHECK and the Kubernetes probes do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.security_server.bed import POP, bed

pytestmark = pytest.mark.integration

RUTA = str(Path(sys.executable).with_name("ruta"))


async def test_health_of_a_running_server_through_its_own_certificate(tmp_path: Path) -> None:
    async with bed(tmp_path) as instance:
        agency = await instance.spawn_server(POP)
        env = {
            "RUTA_HEALTH_ADDRESS": agency.addresses["transport"],
            "RUTA_HEALTH_CA": str(instance.pki.trust_path),
            "RUTA_HEALTH_CERT": str(agency.auth.cert_path),
            "RUTA_HEALTH_KEY": str(agency.auth.key_path),
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [RUTA, "health", "--timeout", "10"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr
        await instance.stop_process(POP)
        done = await asyncio.to_thread(
            subprocess.run,
            [RUTA, "health", "--timeout", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1
        assert done.stdout.startswith("UNREACHABLE")
