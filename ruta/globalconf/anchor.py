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

Several certificates may be listed: one per registry node (each node signs with its own key,
docs/adr/0025-registry-nodes-sign-with-their-own-keys.md) and, while a node rolls its key over,
the old and the new one. Where several registry nodes publish the configuration, the anchor lists
all their URLs instead of one, in the order a server tries them::

    globalconf_urls = ["http://registry1.lac.example:4480/globalconf",
                       "http://registry2.lac.example:4480/globalconf"]

The registry writes this file (:meth:`ConfigurationAnchor.to_toml`); operators copy it to each
server.
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

from ruta.pki.certs import parse_pem_certificates
from ruta.settings import ConfigError, describe_validation_error, read_text

__all__ = [
    "MAX_ANCHOR_CERTIFICATES",
    "MAX_ANCHOR_FILE_BYTES",
    "MAX_ANCHOR_URLS",
    "ConfigurationAnchor",
]

#: Largest anchor file read.
MAX_ANCHOR_FILE_BYTES: Final = 256 * 1024
#: Most configuration-signing certificates one anchor lists.
MAX_ANCHOR_CERTIFICATES: Final = 8
#: Most configuration URLs (registry nodes) one anchor lists.
MAX_ANCHOR_URLS: Final = 8
#: Longest configuration URL.
_MAX_URL_LENGTH: Final = 2048

_INSTANCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class _AnchorFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str
    globalconf_url: str | None = None
    globalconf_urls: list[str] | None = None
    signing_certificates: str

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not _INSTANCE.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ - (letter/digit first)")
        return value

    @field_validator("globalconf_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value)
        return value

    @field_validator("globalconf_urls")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_ANCHOR_URLS:
            raise ValueError(f"must list 1 to {MAX_ANCHOR_URLS} URLs")
        for url in value:
            _check_url(url)
        if len(set(value)) != len(value):
            raise ValueError("lists a URL twice")
        return value

    def urls(self) -> tuple[str, ...]:
        """Every configuration URL the file names; raises ``ValueError`` unless exactly one of
        the two keys is given."""
        if (self.globalconf_url is None) == (self.globalconf_urls is None):
            raise ValueError("give exactly one of globalconf_url and globalconf_urls")
        if self.globalconf_url is not None:
            return (self.globalconf_url,)
        return tuple(self.globalconf_urls or ())


def _check_url(value: str) -> None:
    if not value.startswith(("http://", "https://")) or len(value) > _MAX_URL_LENGTH:
        raise ValueError("must be an http:// or https:// URL")


@dataclass(frozen=True, slots=True)
class ConfigurationAnchor:
    """The instance, where the registry publishes its configuration, and the certificates of
    the keys that may sign it.

    ``globalconf_url`` is the first place a server fetches from; ``fallback_urls`` are the other
    registry nodes, tried in order when it fails (:attr:`globalconf_urls` lists them all).
    """

    instance: str
    globalconf_url: str
    certificates: tuple[x509.Certificate, ...]
    fallback_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        urls = self.globalconf_urls
        if len(urls) > MAX_ANCHOR_URLS:
            raise ConfigError(f"a configuration anchor lists at most {MAX_ANCHOR_URLS} URLs")
        if len(set(urls)) != len(urls):
            raise ConfigError("a configuration anchor lists a configuration URL twice")
        if not self.certificates:
            raise ConfigError("a configuration anchor needs at least one signing certificate")
        if len(self.certificates) > MAX_ANCHOR_CERTIFICATES:
            raise ConfigError(
                f"a configuration anchor lists at most {MAX_ANCHOR_CERTIFICATES} certificates"
            )

    @property
    def globalconf_urls(self) -> tuple[str, ...]:
        """Every configuration URL, in the order a server tries them."""
        return (self.globalconf_url, *self.fallback_urls)

    def with_node(self, *, url: str, certificate: x509.Certificate) -> ConfigurationAnchor:
        """This anchor plus one more registry node: its configuration URL (unless already
        listed) and its configuration-signing certificate (unless already listed).

        Raises :class:`ConfigError` when the anchor would list too many URLs or certificates.
        """
        urls = self.globalconf_urls
        if url not in urls:
            urls = (*urls, url)
        certificates = self.certificates
        if certificate not in certificates:
            certificates = (*certificates, certificate)
        return ConfigurationAnchor(
            instance=self.instance,
            globalconf_url=urls[0],
            fallback_urls=urls[1:],
            certificates=certificates,
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
            urls = model.urls()
        except ValueError as exc:
            raise ConfigError(f"anchor file {name} is invalid: {exc}") from None
        try:
            certs = tuple(parse_pem_certificates(model.signing_certificates.encode()))
        except ValueError:
            raise ConfigError(
                f"anchor file {name}: signing_certificates is not PEM certificate text"
            ) from None
        return cls(
            instance=model.instance,
            globalconf_url=urls[0],
            fallback_urls=urls[1:],
            certificates=certs,
        )

    def _as_dict(self) -> dict[str, str | list[str]]:
        pem = "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in self.certificates)
        data: dict[str, str | list[str]] = {"instance": self.instance}
        if self.fallback_urls:
            data["globalconf_urls"] = list(self.globalconf_urls)
        else:
            data["globalconf_url"] = self.globalconf_url
        data["signing_certificates"] = pem
        return data

    def to_toml(self) -> str:
        """The anchor file text (TOML), readable by :meth:`from_text`."""
        return tomli_w.dumps(self._as_dict(), multiline_strings=True)

    def to_json(self) -> str:
        """The anchor file text (JSON), readable by :meth:`from_text` with ``json_format``."""
        return json.dumps(self._as_dict(), indent=2) + "\n"
