"""The installed ``ruta`` console script, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from ruta import __version__
from ruta.cli import LazyGroup

RUTA = Path(sys.executable).parent / "ruta"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUTA), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_help_and_version_from_console_script() -> None:
    helped = _run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "secure data-exchange bus" in helped.stdout
    version = _run("--version")
    assert version.returncode == 0
    assert __version__ in version.stdout


def test_parts_contribute_groups_through_entry_points(tmp_path: Path) -> None:
    """A command group arrives through the ``ruta.cli`` entry point group, with no edit to
    ruta/cli.py, and a deliberate RutaError prints its fault code, not a traceback."""
    (tmp_path / "example_part.py").write_text(
        "import click\n"
        "from ruta.faults import Fault, RutaError\n"
        "@click.group(name='example')\n"
        "def group() -> None:\n    'An example part.'\n"
        "@group.command()\n"
        "def hello() -> None:\n    click.echo('hello from a part')\n"
        "@group.command()\n"
        "def refuse() -> None:\n"
        "    raise RutaError('no such thing', fault=Fault.CLIENT_NOT_FOUND)\n",
        encoding="utf-8",
    )
    dist = tmp_path / "example_part-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: example-part\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ruta.cli]\nexample = example_part:group\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    listed = _run("--help", env=env)
    assert "example" in listed.stdout
    said = _run("example", "hello", env=env)
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip() == "hello from a part"
    refused = _run("example", "refuse", env=env)
    assert refused.returncode == 2
    assert "client.not_found: no such thing" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_lazy_group_imports_a_command_only_when_used() -> None:
    group = LazyGroup(name="g", lazy_commands={"ver": "ruta.cli:main", "bad": "ruta:__version__"})
    assert group.list_commands(click.Context(group)) == ["bad", "ver"]
    ran = CliRunner().invoke(group, ["ver", "--version"])
    assert ran.exit_code == 0
    assert "ruta, version" in ran.output
    assert CliRunner().invoke(group, ["bad"]).exit_code != 0


def test_every_part_group_is_installed() -> None:
    listed = _run("--help")
    for part in ("registry", "ss", "adapter"):
        assert part in listed.stdout
        assert _run(part, "--help").returncode == 0
