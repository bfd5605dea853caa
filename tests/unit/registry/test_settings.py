"""Registry settings: listen addresses, the public URL and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.settings import RegistrySettings, split_address
from registry.setup import _tls_names
from ruta.settings import ConfigError


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:4470", ("127.0.0.1", 4470)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["", "host", ":80", "host:", "host:http", "host:70000"])
def test_split_address_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_address(address)


@pytest.mark.parametrize(
    ("values", "port", "expected"),
    [
        ({"http_listen": "127.0.0.1:4480"}, None, "http://127.0.0.1:4480"),
        ({"http_listen": "0.0.0.0:0"}, 5555, "http://127.0.0.1:5555"),
        ({"public_url": "https://registry.example/"}, 5555, "https://registry.example"),
    ],
)
def test_base_url(values: dict[str, str], port: int | None, expected: str) -> None:
    settings = RegistrySettings(instance="LAC", **values)  # type: ignore[arg-type]
    assert settings.base_url(port) == expected


@pytest.mark.parametrize(
    ("listen", "dns", "ips"),
    [
        ("127.0.0.1:1", ("localhost",), ("127.0.0.1",)),
        ("0.0.0.0:1", ("localhost",), ("127.0.0.1",)),
        ("10.0.0.5:1", ("localhost",), ("10.0.0.5", "127.0.0.1")),
        ("registry.example:1", ("localhost", "registry.example"), ("127.0.0.1",)),
    ],
)
def test_registry_tls_names(listen: str, dns: tuple[str, ...], ips: tuple[str, ...]) -> None:
    assert _tls_names(listen) == (dns, ips)


def test_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "registry.toml").write_text('instance = "LAC"\nadmin_listen = "127.0.0.1:1"\n')
    monkeypatch.setenv("RUTA_REGISTRY_ADMIN_LISTEN", "127.0.0.1:2")
    assert RegistrySettings.load(tmp_path).admin_listen == "127.0.0.1:2"
    (tmp_path / "registry.toml").write_text('instance = "LAC"\ntypo = 1\n')
    with pytest.raises(ConfigError, match="typo"):
        RegistrySettings.load(tmp_path)


@pytest.mark.parametrize(
    ("http_listen", "bound", "expected"),
    [
        ("127.0.0.1:4480", None, "http://127.0.0.1:4480"),
        ("0.0.0.0:0", 5555, "http://127.0.0.1:5555"),
        ("[::1]:4480", None, "http://[::1]:4480"),
        ("[::]:0", 5555, "http://127.0.0.1:5555"),
    ],
)
def test_base_url_is_a_url_for_every_listen_address(
    http_listen: str, bound: int | None, expected: str
) -> None:
    settings = RegistrySettings(instance="LAC", http_listen=http_listen)
    assert settings.base_url(bound) == expected


def test_role_issuers_are_fingerprints_in_either_spelling() -> None:
    sha256 = "ab" * 32
    colons = ":".join(["AB"] * 32)
    settings = RegistrySettings(instance="LAC", role_issuers=(colons, "cd" * 32))
    assert settings.role_issuers == (sha256, "cd" * 32)
    assert RegistrySettings(instance="LAC").role_issuers is None
    assert RegistrySettings(instance="LAC", role_issuers=()).role_issuers == ()


@pytest.mark.parametrize(
    "role_issuers",
    [("ab" * 31,), ("zz" * 32,), ("ab" * 32, "AB" * 32), tuple(f"{i:064x}" for i in range(17))],
)
def test_role_issuers_that_are_no_fingerprints_are_refused(role_issuers: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="role_issuers"):
        RegistrySettings(instance="LAC", role_issuers=role_issuers)
