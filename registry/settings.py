"""The registry's settings file and the layout of a registry directory.

``ruta registry init --dir DIR`` writes ``DIR/registry.toml``; ``ruta registry serve --dir DIR``
reads it (``RUTA_REGISTRY_*`` environment variables override it, e.g.
``RUTA_REGISTRY_DATABASE_URL``). Every other file has a fixed place in the directory
(:class:`RegistryLayout`), so a registry directory can be moved as a whole.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from ruta.addresses import join_address, split_address
from ruta.globalconf.limits import MAX_ROLE_ISSUERS
from ruta.settings import RutaSettings

__all__ = [
    "SETTINGS_FILE",
    "ConsoleSettings",
    "RegistryLayout",
    "RegistrySettings",
    "connectable_host",
    "split_address",
]

#: The settings file inside a registry directory.
SETTINGS_FILE: Final = "registry.toml"

_Instance = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")


def connectable_host(host: str) -> str:
    """The host to reach a listener bound to ``host`` at: loopback for a wildcard address."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - not binding


class ConsoleSettings(BaseModel):
    """The registry console (``[console]``, docs/operator/console-certificates.md): HTTPS pages
    for administrators, whose browsers present a client certificate from the instance's CA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Where the console listens (HTTPS); unset: no console.
    listen: str | None = None
    #: The page's TLS certificate and key (PEM). Unset: the registry's own TLS pair
    #: (``tls/registry.pem``, ``tls/registry.key``), which names localhost and the admin host.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_address(value)
        return value


class RegistrySettings(RutaSettings):
    """What ``registry.toml`` holds. No secrets: keys live in 0600 files beside it; a database
    password belongs in ``RUTA_REGISTRY_DATABASE_URL``, not in the file."""

    model_config = SettingsConfigDict(env_prefix="RUTA_REGISTRY_")

    instance: _Instance
    #: SQLAlchemy URL of the store; unset means the SQLite file ``registry.db`` in the directory.
    database_url: str | None = None
    #: Where the admin gRPC API (mutual TLS) listens.
    admin_listen: str = "127.0.0.1:4470"
    #: Where the HTTP listener (``/globalconf``, ``/ocsp``, ``/witness``) listens.
    http_listen: str = "127.0.0.1:4480"
    #: The HTTP listener's URL as security servers reach it (used in certificates' OCSP URL, the
    #: configuration anchor and the witness URL). Unset: ``http://`` + ``http_listen``.
    public_url: str | None = None
    #: How long each published configuration may be used (X-Road's default: 600 s).
    globalconf_validity_seconds: int = Field(default=600, ge=30, le=7 * 24 * 3600)
    #: How often the configuration is re-signed even without changes (well under the validity).
    globalconf_republish_seconds: int = Field(default=150, ge=1, le=24 * 3600)
    #: How often the store is checked for changes made through other registry nodes.
    change_poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    #: How long a stapled OCSP response proves a certificate's status (published in the
    #: configuration's ``VerificationParameters``; every verifier, offline ones too, applies it).
    ocsp_freshness_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    #: How far after a signing time an OCSP response's thisUpdate may lie (published likewise).
    ocsp_clock_skew_seconds: int = Field(default=300, ge=1, le=3600)
    #: The witness URL the configuration names. Unset: ``public_url`` + ``/witness``. Every node
    #: of one registry names the same URL (``node add`` writes the first node's).
    witness_url: str | None = None
    #: The witness's key name in its signed-note verifier key.
    witness_name: str = Field(default="ruta-registry-witness", pattern=r"^[^\s+]{1,128}$")
    #: The trust anchors whose certificates carry roles on security servers (auditors, the
    #: citizen service, statistics), published as the configuration's ``role_issuers``: SHA-256
    #: fingerprints (hex, colons allowed) of anchors the configuration lists. Unset: the
    #: registry's own CA; empty: no certificate carries a role
    #: (docs/adr/0039-role-issuers-in-the-global-configuration.md).
    role_issuers: tuple[str, ...] | None = Field(default=None, max_length=MAX_ROLE_ISSUERS)
    #: The web console (off unless ``[console] listen`` is set).
    console: ConsoleSettings = ConsoleSettings()

    @field_validator("admin_listen", "http_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("public_url", "witness_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return None if value is None else value.rstrip("/")

    @field_validator("role_issuers")
    @classmethod
    def _fingerprints(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        found = tuple(v.replace(":", "").lower() for v in value)
        for text in found:
            if not _FINGERPRINT.fullmatch(text):
                raise ValueError("each role issuer is a SHA-256 fingerprint: 64 hex digits")
        if len(set(found)) != len(found):
            raise ValueError("a role issuer is listed twice")
        return found

    def base_url(self, http_port: int | None = None) -> str:
        """The public base URL; ``http_port`` (the bound port) stands in for a port 0."""
        if self.public_url is not None:
            return self.public_url
        host, port = split_address(self.http_listen)
        bound = http_port if http_port is not None else port
        return f"http://{join_address(connectable_host(host), bound)}"

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Self:
        """Read ``DIR/registry.toml`` (raises :class:`ruta.settings.ConfigError`)."""
        return cls.from_file(Path(directory) / SETTINGS_FILE)


@dataclass(frozen=True, slots=True)
class RegistryLayout:
    """Where each file of a registry directory lives."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    @property
    def holds_ca(self) -> bool:
        """Whether this node holds the CA (its keys and records: it issues certificates, answers
        OCSP and serves the admin API); a node made by ``node init`` and ``node add`` holds only
        its public certificates."""
        return (self.ca / "ca.json").exists()

    @property
    def ocsp_cert(self) -> Path:
        """The CA's OCSP responder certificate (PEM), on every node."""
        return self.ca / "ocsp.pem"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "registry.key"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "registry.pem"

    @property
    def signing_key(self) -> Path:
        return self.root / "globalconf" / "signing.key"

    @property
    def signing_cert(self) -> Path:
        return self.root / "globalconf" / "signing.pem"

    @property
    def anchor(self) -> Path:
        """The configuration anchor to hand to security servers."""
        return self.root / "globalconf" / "anchor.toml"

    @property
    def witness_key(self) -> Path:
        return self.root / "witness" / "witness.key"

    @property
    def witness_vkey(self) -> Path:
        """The witness's verifier key (text), on a node that does not run the witness."""
        return self.root / "witness" / "witness.vkey"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin" / "admin.key"

    @property
    def admin_cert(self) -> Path:
        return self.root / "admin" / "admin.pem"

    @property
    def trust(self) -> Path:
        """The CA's trust anchor (PEM): what admin clients trust the registry's TLS cert by."""
        return self.ca / "anchor.pem"

    @property
    def ready(self) -> Path:
        """Written by ``serve`` once listening: the bound addresses (JSON)."""
        return self.root / "registry.ready.json"
