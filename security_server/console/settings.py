"""The auditor console's settings (``[console]`` in a security server's file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ruta.addresses import split_address

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseModel):
    """Where the auditor console listens, and its TLS (docs/operator/security-server-config.md).

    Off unless ``listen`` is set. The page's TLS certificate and key default to the server's
    authentication certificate and key; browsers' client certificates must chain to
    ``client_ca``, by default the trust anchors of the configuration in force.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``host:port`` of the console (HTTPS); empty: no console.
    listen: str = Field(default="", max_length=300)
    #: The certificate (PEM, with its chain) the console presents; default: ``keys.auth_cert``.
    tls_cert: Path | None = None
    #: Its private key; default: ``keys.auth_key``.
    tls_key: Path | None = None
    #: CA certificates (PEM) issuing auditors' browser certificates; default: the instance's
    #: trust anchors.
    client_ca: Path | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            split_address(value)
        return value
