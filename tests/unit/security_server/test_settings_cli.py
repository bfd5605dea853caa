"""``ruta ss backend add|remove|list``: the settings file edited safely, in the documented form."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner, Result

from security_server.settings import SecurityServerSettings
from security_server.settings_cli import backend, reload
from tests.unit.security_server.settings_document import settings_document

SERVICE = "DEV/GOV/POP/registry/population.v1.PopulationRegister"
VEHICLES = "DEV/GOV/POP/vehicles/vehicles.v1.Register"


def _document() -> dict[str, Any]:
    return settings_document(
        globalconf={"anchor": "anchor.toml", "fetch_interval_seconds": 5.0},
        limits={"max_message_bytes": 65536},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ss.toml"
    # The inline array older ``ss init`` runs wrote.
    inline = f'backends = [{{ service = "{SERVICE}", address = "127.0.0.1:50051" }}]\n'
    path.write_text(inline + tomli_w.dumps(_document()))
    path.chmod(0o640)
    return path


def _backend(*args: str) -> Result:
    return CliRunner().invoke(backend, list(args))


def test_add_writes_backends_tables_and_keeps_other_settings(config: Path) -> None:
    assert "backends = [" in config.read_text()
    result = _backend("add", "--config", str(config), VEHICLES, "127.0.0.1:50060")
    assert result.exit_code == 0, result.output
    text = config.read_text()
    assert "backends = [" not in text
    assert text.count("[[backends]]") == 2
    document = tomllib.loads(text)
    assert document["globalconf"] == {"anchor": "anchor.toml", "fetch_interval_seconds": 5.0}
    assert document["limits"] == {"max_message_bytes": 65536}
    assert document["backends"][1] == {
        "service": VEHICLES,
        "address": "127.0.0.1:50060",
        "tls": False,
    }
    assert config.stat().st_mode & 0o777 == 0o640
    assert not list(config.parent.glob(".*.tmp"))
    listed = _backend("list", "--config", str(config))
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [
        "SERVICE\tADDRESS\tTLS",
        f"{SERVICE}\t127.0.0.1:50051\tno",
        f"{VEHICLES}\t127.0.0.1:50060\tno",
    ]


def test_add_with_tls_stores_absolute_paths(config: Path, tmp_path: Path) -> None:
    ca = tmp_path / "backend-ca.pem"
    ca.write_text("not read here")
    result = _backend(
        "add", "--config", str(config), VEHICLES, "vehicles.example:443", "--tls", "--ca", str(ca)
    )
    assert result.exit_code == 0, result.output
    settings = SecurityServerSettings.from_file(config)
    assert settings.backends[1].ca == ca
    assert settings.backends[1].tls


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", SERVICE, "127.0.0.1:1"], "has a backend already (give --replace)"),
        (["add", VEHICLES, "192.0.2.1:80"], "plaintext is allowed only to loopback"),
        (["add", "DEV/GOV/TAX/x/a.v1.B", "127.0.0.1:1"], "is not a service of this member"),
        (["add", "not-a-service", "127.0.0.1:1"], "Invalid value"),
        (
            ["add", VEHICLES, "no-port"],
            "Invalid value for ADDRESS: address 'no-port' must have the form host:port",
        ),
        (["remove", VEHICLES], "has no backend in ss.toml"),
    ],
)
def test_refused_edits_leave_the_file_unchanged(config: Path, args: list[str], says: str) -> None:
    before = config.read_text()
    result = _backend(args[0], "--config", str(config), *args[1:])
    assert result.exit_code != 0
    assert says in result.output
    assert config.read_text() == before


def test_replace_and_remove(config: Path) -> None:
    result = _backend("add", "--config", str(config), SERVICE, "127.0.0.1:50099", "--replace")
    assert result.exit_code == 0, result.output
    assert SecurityServerSettings.from_file(config).backends[0].address == "127.0.0.1:50099"
    result = _backend("remove", "--config", str(config), SERVICE)
    assert result.exit_code == 0, result.output
    assert "backends" not in tomllib.loads(config.read_text())
    assert SecurityServerSettings.from_file(config).backends == ()


def test_reload_refuses_an_invalid_file_without_signalling(config: Path) -> None:
    config.write_text(config.read_text().replace("127.0.0.1:50051", "192.0.2.1:50051"))
    result = CliRunner().invoke(reload, ["--config", str(config)])
    assert result.exit_code == 1
    assert "plaintext is allowed only to loopback" in result.output
    assert "nothing was changed and the running server keeps its settings" in result.output


def test_reload_without_a_running_server_says_so(config: Path) -> None:
    result = CliRunner().invoke(reload, ["--config", str(config)])
    assert result.exit_code == 1
    assert "no running server for DEV/GOV/POP/ss1" in result.output


def test_reload_does_not_signal_a_pid_left_in_a_stale_ready_file(config: Path) -> None:
    """A ready.json written before the process with its pid started (the server died, the pid
    was reused): refused, nothing signalled (the pid here is this test's own process)."""
    data = config.parent / "data"
    data.mkdir()
    ready = data / "ready.json"
    ready.write_text(json.dumps({"server_id": "DEV/GOV/POP/ss1", "pid": os.getpid()}))
    os.utime(ready, (1_000_000_000, 1_000_000_000))
    result = CliRunner().invoke(reload, ["--config", str(config)])
    assert result.exit_code == 1
    assert "is not running (ready.json is left from a process that has ended)" in result.output
