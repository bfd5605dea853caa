"""deploy/systemd: every unit passes ``systemd-analyze verify`` and keeps its sandbox (checked by
``systemd-analyze security --offline``). The units run ``/opt/ruta/bin/ruta``; verify insists that
the executable exists, so each unit is checked with that path pointing at this environment's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))
RUTA = str(Path(sys.executable).with_name("ruta"))
#: Highest overall exposure `systemd-analyze security` may report (0 best, 10 worst; x10 here).
EXPOSURE_THRESHOLD = 20
SANDBOX = (
    "User=ruta",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
)

#: The one directory each unit may write.
DATA_DIRECTORIES = {
    "ruta-registry.service": "/var/lib/ruta/registry",
    "ruta-ss@.service": "/var/lib/ruta/ss/%i",
    "ruta-adapter@.service": "/var/lib/ruta/adapters/%i",
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is installed by make install"
)


def _unit_file(tmp_path: Path, unit: str) -> Path:
    """The unit, its template instantiated (`ruta-ss@pop.service`), ExecStart pointing here."""
    path = tmp_path / unit.replace("@.", "@pop.")
    path.write_text((SYSTEMD / unit).read_text().replace("/opt/ruta/bin/ruta", RUTA))
    return path


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_there_are_units() -> None:
    assert set(UNITS) == set(DATA_DIRECTORIES)


@pytest.mark.parametrize("unit", UNITS)
def test_verify(unit: str, tmp_path: Path) -> None:
    done = _analyze("verify", str(_unit_file(tmp_path, unit)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # warnings (an unknown key, say) are failures too


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    path = _unit_file(tmp_path, "ruta-registry.service")
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    assert "Unknown key" in _analyze("verify", str(path)).stderr


@pytest.mark.parametrize("unit", UNITS)
def test_sandbox(unit: str, tmp_path: Path) -> None:
    text = (SYSTEMD / unit).read_text()
    for line in SANDBOX:
        assert f"\n{line}\n" in text, line
    assert f"\nReadWritePaths={DATA_DIRECTORIES[unit]}\n" in text
    done = _analyze(
        "security",
        "--offline=yes",
        f"--threshold={EXPOSURE_THRESHOLD}",
        str(_unit_file(tmp_path, unit)),
    )
    assert done.returncode == 0, done.stdout


def test_the_dedicated_user() -> None:
    (line,) = [
        line
        for line in (SYSTEMD / "ruta.sysusers.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert line.split()[:2] == ["u", "ruta"]
