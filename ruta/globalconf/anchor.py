"""The configuration anchor: what a security server trusts before it has any configuration.

An anchor file names the instance, where the registry publishes the global configuration and the
registry's configuration-signing certificate(s). It is TOML (or JSON, when the file name ends in
``.json``)::

    instance = "LAC"
    globalconf_url = "http://registry.lac.example:8080/globalconf"
    signing_certificates = '''
    -----BEGIN CERTIFICATE-----
    ...
    -----END CERTIFICATE-----
    '''

Several certificates may be listed while the registry rolls its signing key over. The registry
writes this file (:meth:`ConfigurationAnchor.to_toml`); operators copy it to each server.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ruta.settings import ConfigError, describe_validation_error, read_text

__all__ = [
    "MAX_ANCHOR_CERTIFICATES",
    "MAX_ANCHOR_FILE_BYTES",
    "ConfigurationAnchor",
]

#: Largest anchor file read.
MAX_ANCHOR_FILE_BYTES: Final = 256 * 1024
#: Most configuration-signing certificates one anchor lists.
MAX_ANCHOR_CERTIFICATES: Final = 8

_INSTANCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class _AnchorFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str
    globalconf_url: str
    signing_certificates: str

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not _INSTANCE.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ - (letter/digit first)")
        return value

    @field_validator("globalconf_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) > 2048:
            raise ValueError("must be an http:// or https:// URL")
        return value


@dataclass(frozen=True, slots=True)
class ConfigurationAnchor:
    """The instance, the registry's configuration URL and its configuration-signing certs."""

    instance: str
    globalconf_url: str
    certificates: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.certificates:
            raise ConfigError("a configuration anchor needs at least one signing certificate")
        if len(self.certificates) > MAX_ANCHOR_CERTIFICATES:
            raise ConfigError(
                f"a configuration anchor lists at most {MAX_ANCHOR_CERTIFICATES} certificates"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Read an anchor file (TOML, or JSON for ``*.json``).

        Raises :class:`ruta.settings.ConfigError` naming the file (not its folder) and the
        problem; nothing is half-loaded.
        """
        file = Path(path)
        text = read_text(file, what="anchor file", limit=MAX_ANCHOR_FILE_BYTES)
        return cls.from_text(text, name=file.name, json_format=file.suffix.lower() == ".json")

    @classmethod
    def from_text(
        cls, raw: bytes | str, *, name: str = "anchor", json_format: bool = False
    ) -> Self:
        """Parse anchor file content; raises :class:`ConfigError` as :meth:`from_file`."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise ConfigError(f"anchor file {name} is not UTF-8 text") from None
        try:
            data: Any = json.loads(text) if json_format else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = "JSON" if json_format else "TOML"
            raise ConfigError(f"anchor file {name} is not valid {kind}: {exc}") from None
        try:
            model = _AnchorFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"anchor file {name} is invalid: {describe_validation_error(exc)}"
            ) from None
        try:
            certs = tuple(x509.load_pem_x509_certificates(model.signing_certificates.encode()))
        except ValueError:
            raise ConfigError(
                f"anchor file {name}: signing_certificates is not PEM certificate text"
            ) from None
        return cls(instance=model.instance, globalconf_url=model.globalconf_url, certificates=certs)

    def _as_dict(self) -> dict[str, str]:
        pem = "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in self.certificates)
        return {
            "instance": self.instance,
            "globalconf_url": self.globalconf_url,
            "signing_certificates": pem,
        }

    def to_toml(self) -> str:
        """The anchor file text (TOML), readable by :meth:`from_text`."""
        return tomli_w.dumps(self._as_dict(), multiline_strings=True)

    def to_json(self) -> str:
        """The anchor file text (JSON), readable by :meth:`from_text` with ``json_format``."""
        return json.dumps(self._as_dict(), indent=2) + "\n"
