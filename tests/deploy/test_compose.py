"""deploy/compose: the Compose file passes the Compose specification's JSON schema (vendored in
check-jsonschema, no network), and runs every Ruta service the way the operator guide says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "compose.yaml"
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_the_compose_file_passes_the_compose_specification() -> None:
    done = _check(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_mistakes(tmp_path: Path) -> None:
    wrong = tmp_path / "compose.yaml"
    wrong.write_text(COMPOSE.read_text().replace("read_only: true", "read_onyl: true", 1))
    done = _check(wrong)
    assert done.returncode != 0
    assert "read_onyl" in done.stdout


def test_a_small_instance(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: service.get("command", [])[:2] for name, service in services.items()}
    assert commands["registry"] == ["registry", "serve"]
    assert [name for name, command in commands.items() if command == ["ss", "serve"]] == [
        "ss-pop",
        "ss-tax",
    ]
    assert services["postgres"]["image"].startswith("postgres:")


def test_ruta_services_are_locked_down(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        if name == "postgres":
            continue
        assert not service["user"].startswith("0"), name
        assert service["cap_drop"] == ["ALL"], name
        assert "RUTA_HEALTH_ADDRESS" in service["environment"], name
        assert "limits" in service["deploy"]["resources"], name


def test_no_secret_in_the_file(compose: dict[str, Any]) -> None:
    url = compose["services"]["registry"]["environment"]["RUTA_REGISTRY_DATABASE_URL"]
    assert "${RUTA_DB_PASSWORD:?" in url
    assert compose["secrets"]["postgres_password"]["file"] == "./secrets/postgres_password"
