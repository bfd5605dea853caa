"""Settings: pydantic-settings models read from a TOML file, overridden by ``RUTA_*`` variables.

Each part subclasses :class:`RutaSettings` with its own fields and environment prefix (for example
``RUTA_SS_`` for a security server). Precedence, highest first: environment variables, the TOML
file, defaults. Nested fields are reached with ``__`` (``RUTA_SS_LOG__RETENTION_DAYS=30``).

A file that cannot be read, is not valid TOML, or does not fit the model raises
:class:`ConfigError` naming the file and the line or field; nothing is half-loaded.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ruta.faults import Fault, RutaError
from ruta.files import FileReadError, read_bounded
from ruta.ids import IdentifierError, MemberId, ServerId, ServiceId, SubsystemId

__all__ = [
    "MAX_CONFIG_FILE_BYTES",
    "ConfigError",
    "MemberIdText",
    "RutaSettings",
    "ServerIdText",
    "ServiceIdText",
    "SubsystemIdText",
    "describe_validation_error",
    "read_text",
    "read_toml",
]

#: Largest settings file read; a config file is hand-written and small.
MAX_CONFIG_FILE_BYTES: Final = 1 << 20


class ConfigError(RutaError):
    """A settings file or environment variable is missing, unreadable or invalid."""

    default_fault = Fault.CLIENT_INVALID_CONFIG


def _identifier(parse: Callable[[str], object]) -> AfterValidator:
    """Keep a setting's text as written once ``parse`` reads it; else refuse it with the
    identifier's own message (which field, and which element of a list, pydantic adds)."""

    def check(value: str) -> str:
        try:
            parse(value)
        except IdentifierError as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(check)


#: Settings' identifiers: the text as written, checked to be a valid identifier of its kind.
MemberIdText = Annotated[str, _identifier(MemberId.parse)]
SubsystemIdText = Annotated[str, _identifier(SubsystemId.parse)]
ServiceIdText = Annotated[str, _identifier(ServiceId.parse)]
ServerIdText = Annotated[str, _identifier(ServerId.parse)]


def describe_validation_error(error: ValidationError) -> str:
    """Render a pydantic error as ``field.path: message`` lines (no input values: they may be
    secrets)."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


class RutaSettings(BaseSettings):
    """Base of every part's settings. Unknown keys are errors, so a typo is never ignored."""

    model_config = SettingsConfigDict(
        env_prefix="RUTA_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments (from_file); the environment wins over them.
        return env_settings, init_settings, file_secret_settings

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None) -> Self:
        """Load settings from a TOML file (or none), then apply ``RUTA_*`` overrides.

        Raises :class:`ConfigError` naming the file and the line (syntax) or field (schema).
        Relative paths inside the file stay as written; parts resolve them against the file's
        folder where that matters.
        """
        if path is None:
            return cls.from_data({}, where="settings")
        return cls.from_data(read_toml(Path(path)), where=f"settings file {Path(path).name}")

    @classmethod
    def from_data(cls, data: dict[str, Any], *, where: str) -> Self:
        """Settings from a parsed document (as :meth:`from_file` reads), then ``RUTA_*``
        overrides. Raises :class:`ConfigError` naming ``where`` and the field."""
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(f"{where} is invalid: {describe_validation_error(exc)}") from None


def read_text(
    path: Path, *, what: str = "settings file", limit: int = MAX_CONFIG_FILE_BYTES
) -> str:
    """Read the UTF-8 text file at ``path`` of at most ``limit`` bytes.

    Raises :class:`ConfigError` naming it as ``what`` plus its file name (never its folder) when
    it is missing, a directory, unreadable, over ``limit`` or not UTF-8.
    """
    try:
        raw = read_bounded(path, limit, what=what)
    except FileReadError as exc:
        raise ConfigError(exc.message) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path.name} is not UTF-8 text") from None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file with a size bound; raise :class:`ConfigError` naming the file and line."""
    text = read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path.name} is not valid TOML: {exc}") from None
