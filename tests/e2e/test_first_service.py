"""docs/guides/first-service.md, run as written: every file block saved under its name, every
command block run in order in one folder (exported variables carry over, as in one terminal),
the blocks the tutorial runs in another terminal started in the background and waited for.

One sandbox for the whole tutorial (its own ``ruta sandbox up``). The only change to the text is
the adapter's port, ``50075``, replaced everywhere by a free one claimed for the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from sandbox.ports import PortClaims
from tests.markdown import CodeBlock, code_blocks, run_commands

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[2]
TUTORIAL = REPOSITORY / "docs" / "guides" / "first-service.md"
TUTORIAL_PORT = "50075"
#: How long a background block may take to print its marker (the sandbox's start, mostly).
BACKGROUND_READY_S = 240.0
_BACKGROUND = re.compile(r"^<!--\s*background:\s*(.+?)\s*-->\s*$", re.MULTILINE)


@dataclass
class Background:
    block: CodeBlock
    marker: str
    process: subprocess.Popen[bytes]
    log: Path


def _markers(text: str) -> dict[int, str]:
    """Opening-fence line -> marker, for blocks preceded by ``<!-- background: MARKER -->``."""
    lines = text.splitlines()
    found = {}
    for number, line in enumerate(lines, start=1):
        match = _BACKGROUND.match(line)
        if match:
            found[number + 1] = match.group(1)
    return found


def _environment(dump: Path) -> dict[str, str]:
    if not dump.exists():
        return {}
    pairs = (item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
    return dict(pairs)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    work = tmp_path / "tutorial"
    work.mkdir()
    return work


def _start(block: CodeBlock, marker: str, cwd: Path, env: dict[str, str]) -> Background:
    log = cwd.parent / f"background-{block.line}.log"
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, **env}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", "exec " + block.text.strip()],
            cwd=cwd,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + BACKGROUND_READY_S
    while marker not in log.read_text("utf-8", "replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the background block at line {block.line} did not print {marker!r}:\n"
                + log.read_text("utf-8", "replace")[-3000:]
            )
        time.sleep(0.2)
    return Background(block, marker, process, log)


def _stop(background: Background) -> None:
    if background.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(background.process.pid, signal.SIGTERM)
        try:
            background.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(background.process.pid, signal.SIGKILL)
            background.process.wait(timeout=30)


def test_the_tutorial_runs_as_written(folder: Path) -> None:
    text = TUTORIAL.read_text("utf-8")
    markers = _markers(text)
    claims = PortClaims()
    port = str(claims.take(1)[0])
    dump = folder.parent / "environment"
    outputs: dict[str, str] = {}
    backgrounds: list[Background] = []
    # npm: the packages were fetched into npm's cache by `make install`.
    env = {"npm_config_prefer_offline": "true", "npm_config_update_notifier": "false"}
    try:
        for written in code_blocks(text):
            block = replace(written, text=written.text.replace(TUTORIAL_PORT, port))
            if block.file is not None:
                path = folder / block.file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.text, "utf-8")
            elif block.language == "sh" and block.line in markers:
                backgrounds.append(_start(block, markers[block.line], folder, env))
            elif block.language == "sh":
                script = f"{block.text}\nenv -0 > {shlex.quote(str(dump))}\n"
                result = run_commands(
                    replace(block, text=script), cwd=folder, env={**env, **_environment(dump)}
                )
                outputs[block.text] = result.stdout + result.stderr
    finally:
        if (folder / "sandbox" / "sandbox.pid").exists():
            subprocess.run(
                [sys.executable, "-m", "ruta", "sandbox", "down", "--dir", str(folder / "sandbox")],
                capture_output=True,
                timeout=180,
                check=False,
            )
        for background in reversed(backgrounds):
            _stop(background)
        claims.release()

    def output_of(command: str) -> str:
        return next(out for text, out in outputs.items() if command in text)

    assert [b.marker for b in backgrounds] == ["is up", "serving"]
    # The sandbox's own `up` exited 0 once `down` (the last block) stopped it.
    assert backgrounds[0].process.returncode == 0, backgrounds[0].log.read_text()[-3000:]
    assert "DEV/GOV/REG/vehicles/vehicles.v1.VehicleRegister" in output_of("ss backend list")
    assert "active" in output_of("contract list")
    python = output_of("python vehicles_client.py sandbox 4410000017")
    assert "ABC-123 Toyota Hilux 2015 2015-05-12" in python
    assert "XYZ-987 Honda CB500 2021 2021-02-03" in python
    assert "LMN-456" not in python
    assert len(re.findall(r"message id: [0-9a-f-]{36}", python)) == 2
    assert "refused: INVALID_ARGUMENT" in python
    # The adapter's own code and fault id reach the caller (docs/adr/0024).
    refused_with = re.search(r"fault: backend\.client\.invalid_request ([0-9a-f-]{36})", python)
    assert refused_with is not None, python
    assert "refused, as it should be" in python
    node = output_of("node vehicles_client.js sandbox 4410000017")
    assert "ABC-123 Toyota Hilux 2015 2015-05-12" in node
    assert re.search(r"message id: [0-9a-f-]{36}", node)
    verified = output_of("ruta audit verify")
    assert "RESULT: VERIFIED" in verified
    assert re.search(r"responses: .*\d+ status OK", verified)
    assert "status INVALID_ARGUMENT" in verified
    # SOC's server kept the refusal of the malformed id it passed back to its backend.
    assert "INVALID_ARGUMENT" in output_of("ruta ss refusals")
    assert "sandbox stopped" in output_of("ruta sandbox down")
    adapter_log = backgrounds[1].log.read_text()
    assert "ListVehiclesByOwner status=OK" in adapter_log
    assert "status=INVALID_ARGUMENT fault=client.invalid_request" in adapter_log
    assert f"fault_id={refused_with.group(1)}" in adapter_log
    assert "fault backend.client.invalid_request" in verified


def test_the_npm_packages_are_the_ones_make_install_fetches() -> None:
    """make install fills npm's cache with exactly what the tutorial installs."""
    makefile = (REPOSITORY / "Makefile").read_text()
    packages = re.search(r"^NODE_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert packages is not None
    npm = next(b.text for b in code_blocks(TUTORIAL.read_text("utf-8")) if "npm install" in b.text)
    assert npm.split()[-len(packages.group(1).split()) :] == packages.group(1).split()
