"""The configuration anchor file: TOML and JSON, and every way it can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruta.faults import Fault
from ruta.globalconf import ConfigurationAnchor
from ruta.pki.testing import TestPki
from ruta.settings import ConfigError


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> ConfigurationAnchor:
    pki = TestPki(tmp_path_factory.mktemp("anchor"))
    return ConfigurationAnchor(
        instance="LAC",
        globalconf_url="https://registry.lac.example:8443/globalconf",
        certificates=(pki.sign("LAC/GOV/REG").certificate, pki.sign("LAC/GOV/REG").certificate),
    )


@pytest.mark.parametrize(("suffix", "render"), [(".toml", "to_toml"), (".json", "to_json")])
def test_file_round_trip(
    anchor: ConfigurationAnchor, tmp_path: Path, suffix: str, render: str
) -> None:
    path = tmp_path / f"anchor{suffix}"
    path.write_text(getattr(anchor, render)())
    assert ConfigurationAnchor.from_file(path) == anchor


def _fields(anchor: ConfigurationAnchor) -> dict[str, str]:
    data: dict[str, str] = json.loads(anchor.to_json())
    return data


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"instance": "LAC/GOV"}, "instance"),
        ({"globalconf_url": "ftp://registry/globalconf"}, "globalconf_url"),
        ({"signing_certificates": "not pem"}, "signing_certificates"),
        ({"signing_certificates": ""}, "signing_certificates"),
        ({"extra": "x"}, "extra"),
    ],
)
def test_invalid_fields(
    anchor: ConfigurationAnchor, tmp_path: Path, change: dict[str, str], words: str
) -> None:
    data = _fields(anchor) | change
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=words) as info:
        ConfigurationAnchor.from_file(path)
    assert info.value.fault is Fault.CLIENT_INVALID_CONFIG
    assert str(tmp_path) not in str(info.value)  # names the file, never its folder


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("anchor.toml", b"instance = ", "not valid TOML"),
        ("anchor.json", b"{", "not valid JSON"),
        ("anchor.toml", b"\xff\xfe", "not UTF-8"),
        ("anchor.toml", b'instance = "LAC"\n', "signing_certificates"),
        ("anchor.toml", b"x" * (300 * 1024), "larger than"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=words):
        ConfigurationAnchor.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ConfigurationAnchor.from_file(tmp_path / "nowhere.toml")


@pytest.fixture(scope="module")
def two_nodes(
    anchor: ConfigurationAnchor, tmp_path_factory: pytest.TempPathFactory
) -> ConfigurationAnchor:
    pki = TestPki(tmp_path_factory.mktemp("second"))
    return anchor.with_node(
        url="https://registry2.lac.example:8443/globalconf",
        certificate=pki.sign("LAC/GOV/REG2").certificate,
    )


def test_with_node_adds_the_url_and_the_certificate(
    anchor: ConfigurationAnchor, two_nodes: ConfigurationAnchor
) -> None:
    assert two_nodes.globalconf_urls == (
        anchor.globalconf_url,
        "https://registry2.lac.example:8443/globalconf",
    )
    assert two_nodes.certificates[:2] == anchor.certificates
    assert len(two_nodes.certificates) == len(anchor.certificates) + 1
    # Adding a node that is already listed changes nothing.
    again = two_nodes.with_node(
        url=two_nodes.fallback_urls[0], certificate=two_nodes.certificates[-1]
    )
    assert again == two_nodes


@pytest.mark.parametrize(("suffix", "render"), [(".toml", "to_toml"), (".json", "to_json")])
def test_several_urls_round_trip(
    two_nodes: ConfigurationAnchor, tmp_path: Path, suffix: str, render: str
) -> None:
    path = tmp_path / f"anchor{suffix}"
    text = getattr(two_nodes, render)()
    path.write_text(text)
    assert "globalconf_urls" in text
    assert ConfigurationAnchor.from_file(path) == two_nodes


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"globalconf_urls": ["https://a/globalconf"]}, "exactly one"),
        ({"globalconf_url": None}, "exactly one"),
        ({"globalconf_url": None, "globalconf_urls": []}, "1 to 8"),
        ({"globalconf_url": None, "globalconf_urls": ["https://a/g"] * 2}, "twice"),
        (
            {"globalconf_url": None, "globalconf_urls": [f"https://r{i}/g" for i in range(9)]},
            "1 to 8",
        ),
        ({"globalconf_url": None, "globalconf_urls": ["https://a/g", "file:///g"]}, "http"),
    ],
)
def test_invalid_url_lists(
    anchor: ConfigurationAnchor, tmp_path: Path, change: dict[str, object], words: str
) -> None:
    data = {key: value for key, value in (_fields(anchor) | change).items() if value is not None}
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=words):
        ConfigurationAnchor.from_file(path)


def test_too_many_urls_in_code(anchor: ConfigurationAnchor) -> None:
    with pytest.raises(ConfigError, match="at most 8 URLs"):
        ConfigurationAnchor(
            instance="LAC",
            globalconf_url="https://r0/g",
            fallback_urls=tuple(f"https://r{i}/g" for i in range(1, 9)),
            certificates=anchor.certificates,
        )
