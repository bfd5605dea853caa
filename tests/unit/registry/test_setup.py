"""registry init keeps database passwords out of registry.toml; node init and node add make a
further node without any private key leaving its host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.errors import AlreadyExistsError
from registry.settings import RegistryLayout, RegistrySettings
from registry.setup import add_registry_node, initialise_registry, prepare_registry_node
from ruta.faults import RutaError
from ruta.globalconf import ConfigurationAnchor
from ruta.pki.certs import fingerprint
from ruta.settings import ConfigError

_SECRET = "s3cret-pw"


async def test_a_db_url_with_a_password_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "registry"
    with pytest.raises(ConfigError, match="RUTA_REGISTRY_DATABASE_URL") as caught:
        await initialise_registry(
            directory,
            instance="LAC",
            db_url=f"postgresql://ruta:{_SECRET}@127.0.0.1/ruta",
        )
    assert _SECRET not in str(caught.value)
    assert not RegistryLayout(directory).settings.exists()


@pytest.mark.postgres
async def test_a_password_from_the_environment_stays_out_of_the_settings_file(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trust authentication ignores the password; the point is where the URL ends up.
    with_password = postgres_url.replace("postgres@", f"postgres:{_SECRET}@", 1)
    assert _SECRET in with_password
    monkeypatch.setenv("RUTA_REGISTRY_DATABASE_URL", with_password)
    made = await initialise_registry(
        tmp_path / "registry", instance="LAC", http_listen="127.0.0.1:4480"
    )
    text = made.layout.settings.read_text()
    assert _SECRET not in text
    assert "database_url" not in text


# -- further nodes: node init (keys where they are used) and node add (the grant) ---------------


@pytest.fixture
async def on_postgres(tmp_path: Path) -> Path:
    """A registry directory whose settings name a PostgreSQL store (``node add`` opens no store,
    so none needs to exist)."""
    made = await initialise_registry(tmp_path / "reg", instance="LAC", http_listen="127.0.0.1:4480")
    settings = made.layout.settings
    settings.write_text(
        settings.read_text() + 'database_url = "postgresql+psycopg://ruta@127.0.0.1:1/ruta"\n'
    )
    return made.layout.root


def test_node_add_writes_a_grant_of_public_files_and_extends_the_anchor(
    on_postgres: Path, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    prepared = prepare_registry_node(
        node, instance="LAC", http_listen="127.0.0.1:4481", public_url="http://reg2.example:4480"
    )
    with pytest.raises(AlreadyExistsError):
        prepare_registry_node(node, instance="LAC")
    before = ConfigurationAnchor.from_file(on_postgres / "globalconf" / "anchor.toml")

    added = add_registry_node(on_postgres, prepared.request, tmp_path / "grant")

    grant = sorted(str(p.relative_to(added.grant)) for p in added.grant.rglob("*") if p.is_file())
    assert grant == [
        "ca/anchor.pem",
        "ca/ca.pem",
        "ca/ocsp.pem",
        "globalconf/anchor.toml",
        "registry.toml",
        "tls/registry.pem",
        "witness/witness.vkey",
    ]
    anchor = ConfigurationAnchor.from_file(on_postgres / "globalconf" / "anchor.toml")
    assert anchor == ConfigurationAnchor.from_file(added.grant / "globalconf" / "anchor.toml")
    assert anchor.globalconf_urls == (
        before.globalconf_url,
        "http://reg2.example:4480/globalconf",
    )
    assert anchor.certificates[0] == before.certificates[0]
    assert fingerprint(anchor.certificates[1]) == prepared.signing_cert_sha256
    settings = RegistrySettings.load(added.grant)
    assert settings.witness_url == "http://127.0.0.1:4480/witness"
    assert settings.database_url == "postgresql+psycopg://ruta@127.0.0.1:1/ruta"
    assert settings.http_listen == "127.0.0.1:4481"
    with pytest.raises(AlreadyExistsError):
        add_registry_node(on_postgres, prepared.request, tmp_path / "grant")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"instance": "OTHER"}, "another instance"),
        ({"tls_csr": "not a csr"}, "unreadable"),
        ({"signing_certificate": "not a certificate"}, "unreadable"),
        ({"version": 2}, "invalid"),
        ({"http_listen": "127.0.0.1:4480"}, "already lists"),
        ({"extra": 1}, "invalid"),
    ],
)
def test_node_add_refuses_a_bad_request_and_changes_nothing(
    on_postgres: Path, tmp_path: Path, change: dict[str, object], words: str
) -> None:
    prepared = prepare_registry_node(tmp_path / "node", instance="LAC")
    request = json.loads(prepared.request.read_text()) | change
    prepared.request.write_text(json.dumps(request))
    anchor = (on_postgres / "globalconf" / "anchor.toml").read_bytes()
    with pytest.raises(RutaError, match=words):
        add_registry_node(on_postgres, prepared.request, tmp_path / "grant")
    assert not (tmp_path / "grant").exists()
    assert (on_postgres / "globalconf" / "anchor.toml").read_bytes() == anchor


def test_node_add_keeps_the_database_password_out_of_the_grant(
    on_postgres: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "RUTA_REGISTRY_DATABASE_URL", f"postgresql+psycopg://ruta:{_SECRET}@db.example/ruta"
    )
    # The first node's own overrides do not leak into the new node's settings.
    monkeypatch.setenv("RUTA_REGISTRY_PUBLIC_URL", "http://first.example:4480")
    prepared = prepare_registry_node(
        tmp_path / "node", instance="LAC", http_listen="127.0.0.1:4481"
    )
    added = add_registry_node(on_postgres, prepared.request, tmp_path / "grant")
    assert added.anchor.fallback_urls == ("http://127.0.0.1:4481/globalconf",)
    assert added.settings.witness_url == "http://first.example:4480/witness"
    for path in added.grant.rglob("*"):
        if path.is_file():
            assert _SECRET not in path.read_text()
    monkeypatch.delenv("RUTA_REGISTRY_DATABASE_URL")
    monkeypatch.delenv("RUTA_REGISTRY_PUBLIC_URL")
    # The new node names the same database; its password comes from the environment again.
    settings = RegistrySettings.load(added.grant)
    assert settings.database_url == "postgresql+psycopg://ruta@db.example/ruta"
