"""How ``ruta audit export --sandbox DIR --server ID`` finds the address and credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ruta.evidence.cli import group, sandbox_target
from ruta.faults import RutaError

SERVER = "DEV/GOV/POP/ss1"
AUDITOR = {"cert": "clients/auditor/cert.pem", "key": "clients/auditor/key.pem", "ca": "ca.pem"}


def _sandbox(tmp_path: Path, data: dict[str, Any]) -> Path:
    (tmp_path / "sandbox.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    "servers",
    [
        [{"id": SERVER, "audit": "127.0.0.1:7001"}],
        {SERVER: {"audit_address": "127.0.0.1:7001"}},
        [{"id": SERVER, "data_dir": "servers/pop/data"}],
    ],
)
def test_sandbox_shapes(tmp_path: Path, servers: Any) -> None:
    ready = tmp_path / "servers" / "pop" / "data"
    ready.mkdir(parents=True)
    (ready / "ready.json").write_text(json.dumps({"audit": "127.0.0.1:7001"}))
    directory = _sandbox(tmp_path, {"servers": servers, "auditor": AUDITOR})
    address, cert, key, ca = sandbox_target(directory, SERVER)
    assert address == "127.0.0.1:7001"
    assert (cert, key, ca) == tuple(tmp_path / AUDITOR[k] for k in ("cert", "key", "ca"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"servers": [{"id": SERVER, "audit": "x:1"}]}, "auditor"),
        ({"servers": [], "auditor": AUDITOR}, "no server"),
        ({"servers": [{"id": SERVER}], "auditor": AUDITOR}, "no audit address"),
    ],
)
def test_sandbox_refusals(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(RutaError) as caught:
        sandbox_target(_sandbox(tmp_path, data), SERVER)
    assert message in caught.value.message


def test_no_sandbox_file(tmp_path: Path) -> None:
    with pytest.raises(RutaError, match=r"sandbox\.json does not exist"):
        sandbox_target(tmp_path, SERVER)


@pytest.mark.parametrize("option", ["--from-seq", "--until-seq"])
def test_export_refuses_a_sequence_no_log_holds(tmp_path: Path, option: str) -> None:
    # 2**64 - 1 once reached the server and came back as UNKNOWN: OverflowError.
    existing = tmp_path / "x.pem"
    existing.write_text("x")
    args = ["export", "--out", str(tmp_path / "b.zip"), "--address", "127.0.0.1:9"]
    args += ["--cert", str(existing), "--key", str(existing), "--ca", str(existing)]
    result = CliRunner().invoke(group, [*args, option, str(2**64 - 1)])
    assert result.exit_code == 2
    assert "9223372036854775807" in result.output


def test_until_seq_says_the_end_is_excluded() -> None:
    result = CliRunner().invoke(group, ["export", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--until-seq" in text
    assert "NOT exported (the end is excluded" in text
    assert "--to-seq" not in text


def test_the_old_to_seq_is_refused_with_the_new_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        group, ["export", "--out", str(tmp_path / "x.zip"), "--to-seq", "10"]
    )
    assert result.exit_code == 2
    assert "--to-seq was renamed --until-seq" in result.output
