"""A property-based run (schemathesis) against the gateway's own OpenAPI description, with a real
bus behind it, finds no 500 (a bounded number of examples per operation)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.integration.gateway.gwbed import gateway_bed, gateway_url
from tests.integration.security_server.bed import BENEFITS, PURPOSE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Examples per operation: enough to reach every refusal path, bounded for a shared machine.
MAX_EXAMPLES: Final = 30
SCHEMATHESIS: Final = Path(sys.executable).parent / "schemathesis"


async def test_no_server_errors_under_generated_requests(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        base = gateway_url(instance)
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "14",
            "--phases",
            "examples,coverage,fuzzing",
            "--header",
            f"X-Road-Client: {BENEFITS}",
            "--header",
            f"Ruta-Purpose: {PURPOSE}",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=280)
        report = out.decode(errors="replace")
        # Exit status 0: no check failed (a 500 fails not_a_server_error).
        assert process.returncode == 0, report[-6000:]
        assert "passed" in report, report[-3000:]
