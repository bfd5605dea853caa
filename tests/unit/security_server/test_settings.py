"""The security server's settings file: what loads, what is refused, path resolution, env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ruta.addresses import split_address
from ruta.faults import Fault
from ruta.settings import ConfigError
from security_server.settings import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SecurityServerSettings,
    is_loopback_address,
)

SERVICE = "DEV/GOV/POP/registry/population.v1.PopulationRegister"


def _minimal() -> dict[str, Any]:
    return {
        "server_id": "DEV/GOV/POP/ss1",
        "data_dir": "data",
        "keys": {
            "auth_key": "keys/auth.key",
            "auth_cert": "keys/auth.pem",
            "signing_key": "keys/sign.key",
            "signing_cert": "/abs/sign.pem",
        },
        "globalconf": {"anchor": "anchor.toml"},
        "consumer": {"listen": "127.0.0.1:0", "client_ca": "ca.pem"},
        "backends": [{"service": SERVICE, "address": "127.0.0.1:50051"}],
    }


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "ss.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_minimal_file_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    settings = SecurityServerSettings.from_file(_write(tmp_path, _minimal()))
    assert str(settings.server_identifier) == "DEV/GOV/POP/ss1"
    assert settings.data_dir == tmp_path / "data"
    assert settings.keys.auth_key == tmp_path / "keys/auth.key"
    assert settings.keys.signing_cert == Path("/abs/sign.pem")
    assert settings.globalconf.anchor == tmp_path / "anchor.toml"
    assert settings.consumer.client_ca == tmp_path / "ca.pem"
    assert settings.limits.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert settings.limits.freshness_seconds == 60
    assert settings.transport.listen == "127.0.0.1:0"
    assert settings.log_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'messagelog.db'}"
    assert str(settings.backends[0].service_id) == SERVICE


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUTA_SS_LIMITS__MAX_MESSAGE_BYTES", "2048")
    settings = SecurityServerSettings.from_file(_write(tmp_path, _minimal()))
    assert settings.limits.max_message_bytes == 2048


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *path, last = dotted.split(".")
    target: Any = data
    for part in path:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return data


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("server_id", "DEV/GOV/POP", "server_id"),
        ("consumer.listen", "nowhere", "consumer.listen"),
        ("consumer.client_ca", None, "consumer"),
        ("consumer.allow_plain_loopback", True, "consumer"),
        (
            "consumer",
            {
                "listen": "0.0.0.0:1",
                "allow_plain_loopback": True,
                "plain_loopback_subsystems": ["DEV/GOV/POP/registry"],
            },
            "consumer",
        ),
        (
            "consumer",
            {
                "listen": "127.0.0.1:0",
                "allow_plain_loopback": True,
                "plain_loopback_subsystems": ["bad"],
            },
            "plain_loopback_subsystems",
        ),
        ("backends.0.service", "DEV/GOV/TAX/income/x.v1.X", "not a service of this member"),
        ("backends.0.address", "10.0.0.1:50051", "backends"),
        ("backends.0.tls", True, "backends"),
        ("limits", {"max_message_bytes": 10}, "limits.max_message_bytes"),
        ("limits", {"freshness_seconds": 0}, "limits.freshness_seconds"),
        ("surprise", 1, "surprise"),
    ],
)
def test_refused(tmp_path: Path, field: str, value: Any, where: str) -> None:
    data = _minimal()
    if value is None:
        data["consumer"].pop("client_ca")
    else:
        _set(data, field, value)
    with pytest.raises(ConfigError) as info:
        SecurityServerSettings.from_file(_write(tmp_path, data))
    assert info.value.fault is Fault.CLIENT_INVALID_CONFIG
    assert where in info.value.message
    assert str(tmp_path) not in info.value.message


def test_duplicate_backend_refused(tmp_path: Path) -> None:
    data = _minimal()
    data["backends"].append(dict(data["backends"][0]))
    with pytest.raises(ConfigError, match="given twice"):
        SecurityServerSettings.from_file(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:9", ("::1", 9)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["", "host", ":80", "host:x", "host:70000"])
def test_split_address_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        split_address(address)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("::ffff:7f05:505", True),  # the same, 127.5.5.5, in hex
        ("localhost", True),  # the one name judged loopback, as before
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:0.0.0.0", False),
        ("0.0.0.0", False),
        ("::", False),
        ("LOCALHOST", False),  # names are not resolved nor case-folded
        ("localhost.", False),
        ("localhost.example.org", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback


def test_to_toml_round_trips(tmp_path: Path) -> None:
    settings = SecurityServerSettings.from_file(_write(tmp_path, _minimal()))
    again = tmp_path / "again.toml"
    again.write_text(settings.to_toml())
    assert SecurityServerSettings.from_file(again) == settings
    assert "\n[[backends]]\n" in again.read_text()  # the documented form, not an inline array


def test_server_section_names_the_nodes_log_trees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = SecurityServerSettings.from_file(_write(tmp_path, _minimal()))
    assert plain.server.workers == 1
    assert plain.log_origin() == "DEV/GOV/POP/ss1"  # the server's own log, as before clusters
    data = {**_minimal(), "server": {"workers": 4, "node": "b"}}
    settings = SecurityServerSettings.from_file(_write(tmp_path, data))
    assert [settings.log_origin(i) for i in (0, 3)] == [
        "DEV/GOV/POP/ss1/b",
        "DEV/GOV/POP/ss1/b.w3",
    ]
    again = tmp_path / "again.toml"
    again.write_text(settings.to_toml())
    assert SecurityServerSettings.from_file(again) == settings
    # A worker's port override (how the supervisor starts workers 1..N-1) keeps the section.
    monkeypatch.setenv("RUTA_SS_CONSUMER__LISTEN", "127.0.0.1:4500")
    moved = SecurityServerSettings.from_file(_write(tmp_path, data))
    assert moved.consumer.listen == "127.0.0.1:4500"
    assert moved.consumer.client_ca == settings.consumer.client_ca


@pytest.mark.parametrize(
    ("field", "value"),
    [("workers", 0), ("workers", 65), ("node", ".hidden"), ("node", "a/b"), ("node", "x" * 65)],
)
def test_server_section_refused(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        SecurityServerSettings.from_file(_write(tmp_path, {**_minimal(), "server": {field: value}}))
