from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import SettingsConfigDict

from ruta.faults import Fault
from ruta.settings import (
    MAX_CONFIG_FILE_BYTES,
    ConfigError,
    MemberIdText,
    RutaSettings,
    ServerIdText,
    ServiceIdText,
    SubsystemIdText,
    describe_validation_error,
)


class _Log(BaseModel):
    retention_days: int = Field(default=180, ge=1)


class _ExampleSettings(RutaSettings):
    model_config = SettingsConfigDict(env_prefix="RUTA_EXAMPLE_")

    listen: str = "127.0.0.1:5500"
    max_message_bytes: int = Field(default=4 << 20, gt=0)
    log: _Log = _Log()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ruta.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file() -> None:
    assert _ExampleSettings.from_file(None).listen == "127.0.0.1:5500"


def test_file_values_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path, 'listen = "0.0.0.0:1"\n[log]\nretention_days = 30\n')
    settings = _ExampleSettings.from_file(path)
    assert settings.listen == "0.0.0.0:1"
    assert settings.log.retention_days == 30


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, 'listen = "0.0.0.0:1"\n[log]\nretention_days = 30\n')
    monkeypatch.setenv("RUTA_EXAMPLE_LISTEN", "127.0.0.1:9")
    monkeypatch.setenv("RUTA_EXAMPLE_LOG__RETENTION_DAYS", "7")
    settings = _ExampleSettings.from_file(path)
    assert settings.listen == "127.0.0.1:9"
    assert settings.log.retention_days == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen = ", "not valid TOML"),
        ("listen = 1\nlisten = 2\n", "not valid TOML"),
        ("lisen = 'x'\n", "lisen: Extra inputs are not permitted"),
        ("max_message_bytes = -1\n", "max_message_bytes: Input should be greater than 0"),
        ("[log]\nretention_days = 'soon'\n", "log.retention_days"),
    ],
)
def test_bad_files_name_line_or_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _ExampleSettings.from_file(_write(tmp_path, text))
    assert expected in info.value.message
    assert "ruta.toml" in info.value.message
    assert info.value.fault is Fault.CLIENT_INVALID_CONFIG


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 2"):
        _ExampleSettings.from_file(_write(tmp_path, "listen = 'a'\nmax_message_bytes = = 3\n"))


def test_values_are_not_echoed(tmp_path: Path) -> None:
    """A rejected value may be a secret: the error names the field, not the value."""
    with pytest.raises(ConfigError) as info:
        _ExampleSettings.from_file(_write(tmp_path, "max_message_bytes = 'hunter2-secret'\n"))
    assert "hunter2-secret" not in info.value.message


@pytest.mark.parametrize("problem", ["missing", "directory", "binary", "huge"])
def test_unreadable_files(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "ruta.toml"
    if problem == "directory":
        path.mkdir()
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    elif problem == "huge":
        path.write_bytes(b"#" * (MAX_CONFIG_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match=r"ruta\.toml"):
        _ExampleSettings.from_file(path)


class _Identifiers(BaseModel):
    member: MemberIdText = "DEV/GOV/POP"
    subsystems: tuple[SubsystemIdText, ...] = ()
    service: ServiceIdText = "DEV/GOV/POP/registry/population.v1.PopulationRegister"
    server: ServerIdText = "DEV/GOV/POP/ss1"


def test_identifier_settings_keep_the_text_and_name_the_bad_one() -> None:
    good = _Identifiers(subsystems=("DEV/GOV/SOC/benefits", "DEV/GOV/TAX/ledger"))
    assert good.subsystems == ("DEV/GOV/SOC/benefits", "DEV/GOV/TAX/ledger")
    assert good.member == "DEV/GOV/POP"
    with pytest.raises(ValidationError) as caught:
        _Identifiers(
            member="DEV/GOV",
            subsystems=("DEV/GOV/SOC/benefits", "benefits"),
            service="DEV/GOV/POP/registry",
            server="DEV/GOV/POP",
        )
    described = describe_validation_error(caught.value)
    assert "member: Value error, member 'DEV/GOV' has 2 part(s)" in described
    assert "subsystems.1: Value error, subsystem 'benefits' has 1 part(s)" in described
    assert "service: Value error, service 'DEV/GOV/POP/registry' has 4 part(s)" in described
    assert "server: Value error, server 'DEV/GOV/POP' has 3 part(s)" in described
