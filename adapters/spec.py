"""The adapter file: a TOML document that says which ``.proto`` service to serve and how.

The file has four parts::

    [adapter]                      # what is served
    service = "population.v1.PopulationRegister"
    proto = "population.proto"     # or descriptor_set = "population.pb"

    [server]                       # optional: where and with which bounds
    listen = "127.0.0.1:50071"

    [backends.population_db]       # one table per legacy system, by kind
    kind = "sql"
    url = "sqlite+aiosqlite:///population.db"

    [methods.GetPerson]            # one table per served method
    backend = "population_db"
    query = "SELECT ... WHERE national_id = :national_id"

String values inside ``[backends.*]`` may name environment variables as ``${NAME}`` or
``${NAME:-default}`` (``$$`` is a literal ``$``), so passwords and addresses stay out of the file.
Relative paths (proto, descriptor set, CSV files, SQLite databases, TLS files, local WSDL files)
are resolved against the folder of the adapter file.

:func:`load_adapter_file` validates the document with pydantic and raises
:class:`~adapters.errors.AdapterConfigError` naming the file, the line (where it can be found) and
the field of every problem, never the values (they may be secrets).
"""

from __future__ import annotations

import os
import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from adapters.errors import AdapterConfigError
from ruta.addresses import split_address
from ruta.settings import ConfigError, read_text

__all__ = [
    "DEFAULT_LISTEN",
    "MAX_ADAPTER_FILE_BYTES",
    "MAX_TIMEOUT_SECONDS",
    "AdapterFile",
    "AdapterSection",
    "BackendSpec",
    "CsvBackendSpec",
    "FieldSpec",
    "LoadedAdapterFile",
    "MethodSpec",
    "RestBackendSpec",
    "ServerSpec",
    "SoapBackendSpec",
    "SqlBackendSpec",
    "load_adapter_file",
    "parse_adapter_text",
    "parse_listen",
]

#: Largest adapter file read: it is hand-written and small.
MAX_ADAPTER_FILE_BYTES: Final = 1 << 20
#: Longest timeout a file may set for one legacy call.
MAX_TIMEOUT_SECONDS: Final = 300.0
#: Default timeout for one legacy call when the file sets none (the caller's deadline still wins).
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
#: Where ``ruta adapter serve`` listens when neither the file nor ``--listen`` says.
DEFAULT_LISTEN: Final = "127.0.0.1:50070"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH_RE = re.compile(rf"{_NAME}(\.({_NAME}|[0-9]+))*")
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)]
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_path(value: str) -> str:
    if not _PATH_RE.fullmatch(value):
        raise ValueError("must be a dotted path of names (and list indexes), like 'address.city'")
    return value


class AdapterSection(_Model):
    """``[adapter]``: the service served and where its descriptors come from."""

    service: str = Field(pattern=rf"^{_NAME}(\.{_NAME})*$", max_length=256)
    proto: str | None = None
    descriptor_set: str | None = None
    include: list[str] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _one_source(self) -> AdapterSection:
        if (self.proto is None) == (self.descriptor_set is None):
            raise ValueError("set exactly one of 'proto' or 'descriptor_set'")
        return self


class ServerSpec(_Model):
    """``[server]``: listening address and the bounds the gRPC server enforces.

    ``metrics_listen`` (optional) serves Prometheus ``GET /metrics`` over HTTP: the listener
    watchdog's ``ruta_listener_up`` and ``ruta_listener_restarts_total``.
    """

    listen: str = DEFAULT_LISTEN
    metrics_listen: str | None = None
    max_request_bytes: int = Field(default=64 * 1024, gt=0, le=16 * 1024 * 1024)
    max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)
    max_concurrent_calls: int = Field(default=64, gt=0, le=10_000)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSpec:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both 'tls_cert' and 'tls_key', or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("'tls_client_ca' needs 'tls_cert' and 'tls_key'")
        return self


class SqlBackendSpec(_Model):
    """A database reached through SQLAlchemy (async driver in the URL)."""

    kind: Literal["sql"]
    url: SecretStr
    timeout_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS
    max_rows: int = Field(default=1000, gt=0, le=100_000)
    pool_size: int = Field(default=5, gt=0, le=100)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if "://" not in text or "+" not in text.split("://", 1)[0]:
            raise ValueError(
                "must be a SQLAlchemy URL with an async driver, like "
                "'sqlite+aiosqlite:///file.db' or 'postgresql+psycopg://user@host/db'"
            )
        return value


class RestBackendSpec(_Model):
    """A legacy HTTP/JSON service reached with aiohttp."""

    kind: Literal["rest"]
    base_url: str = Field(pattern=r"^https?://[^\s]+$")
    headers: dict[str, SecretStr] = Field(default_factory=dict, max_length=32)
    timeout_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS
    retries: int = Field(default=2, ge=0, le=5)
    backoff_seconds: float = Field(default=0.1, ge=0, le=10)
    max_response_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)


class SoapBackendSpec(_Model):
    """A legacy SOAP service described by a WSDL (URL or local file), called with zeep."""

    kind: Literal["soap"]
    wsdl: str = Field(min_length=1, max_length=2048)
    service: str | None = None
    port: str | None = None
    timeout_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS
    max_response_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)
    threads: int = Field(default=4, gt=0, le=64)


class CsvBackendSpec(_Model):
    """A CSV file with a header row, indexed on one key column and reloaded when it changes.

    A request's key matches a key cell exactly, as written in the file. ``trim_keys`` says that
    the file's key cells carry padding to ignore (whitespace around them is removed when the file
    is indexed); the request's value is never trimmed.
    """

    kind: Literal["csv"]
    path: str = Field(min_length=1)
    key: str = Field(min_length=1, max_length=256)
    trim_keys: bool = False
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    max_file_bytes: int = Field(default=64 * 1024 * 1024, gt=0, le=1024 * 1024 * 1024)
    timeout_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS


BackendSpec = Annotated[
    SqlBackendSpec | RestBackendSpec | SoapBackendSpec | CsvBackendSpec,
    Field(discriminator="kind"),
]


class FieldSpec(_Model):
    """How one response field is filled: ``from`` a path in the legacy record, with options.

    ``convert`` prepares the value before it is converted to the field's protobuf type:
    ``strip``, ``upper``, ``lower``, ``date`` / ``datetime`` (parsed with ``date_format``, or ISO
    8601, and written as ISO 8601). ``scale`` multiplies a number (``100`` turns euros into cents).
    ``default`` is used when the legacy record has no value. ``each`` maps the elements of a
    repeated message field.
    """

    from_: str | None = Field(default=None, alias="from")
    default: Scalar | list[Scalar] | None = None
    required: bool = False
    convert: Literal["strip", "upper", "lower", "date", "datetime"] | None = None
    date_format: str | None = Field(default=None, max_length=64)
    scale: float | None = None
    each: dict[str, str | FieldSpec] | None = None

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)

    @field_validator("each")
    @classmethod
    def _each(cls, value: dict[str, str | FieldSpec] | None) -> dict[str, str | FieldSpec] | None:
        return None if value is None else _check_field_map(value)


def _check_field_map(value: dict[str, str | FieldSpec]) -> dict[str, str | FieldSpec]:
    for target, source in value.items():
        if not _PATH_RE.fullmatch(target):
            raise ValueError(f"{target}: is not a dotted path of field names")
        if isinstance(source, str) and not _PATH_RE.fullmatch(source):
            raise ValueError(f"{target}: source is not a dotted path, like 'address.city'")
    return value


class MethodSpec(_Model):
    """``[methods.NAME]``: how one unary method is answered.

    Common keys: ``backend``, ``params`` (legacy parameter name -> request field path; by default
    every top-level scalar request field under its own name), ``required`` and ``patterns``
    (request checks; a pattern must match the whole value as sent, nothing is trimmed first),
    ``expect`` (``one`` record, or ``many`` offered to the mapping as ``rows``),
    ``result_path``, ``fields`` (response field path -> source) and ``auto_fields``.

    Per kind: sql ``query``; rest ``http_method``, ``path``, ``query_params``, ``body``,
    ``headers``, ``idempotent``, ``not_found_status``; soap ``operation``, ``not_found_faults``;
    csv ``lookup`` (the parameter holding the key).
    """

    backend: str
    timeout_seconds: Timeout | None = None
    params: dict[str, str] | None = Field(default=None, max_length=64)
    required: list[str] = Field(default_factory=list, max_length=64)
    patterns: dict[str, str] = Field(default_factory=dict, max_length=64)
    expect: Literal["one", "many"] = "one"
    not_found_when_empty: bool = False
    result_path: str | None = None
    fields: dict[str, str | FieldSpec] = Field(default_factory=dict, max_length=256)
    auto_fields: bool = True
    # sql
    query: str | None = Field(default=None, max_length=64 * 1024)
    # rest
    http_method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] = "GET"
    path: str | None = Field(default=None, max_length=2048)
    query_params: dict[str, str] = Field(default_factory=dict, max_length=64)
    body: dict[str, str] | None = Field(default=None, max_length=64)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    idempotent: bool | None = None
    not_found_status: list[int] = Field(default_factory=lambda: [404], max_length=16)
    # soap
    operation: str | None = Field(default=None, pattern=rf"^{_NAME}$")
    not_found_faults: list[str] = Field(default_factory=list, max_length=16)
    # csv
    lookup: str | None = None

    @field_validator("result_path")
    @classmethod
    def _result_path(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            for name, path in value.items():
                if not re.fullmatch(_NAME, name):
                    raise ValueError(f"parameter name {name!r} is not a plain name")
                _check_path(path)
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str | FieldSpec]) -> dict[str, str | FieldSpec]:
        return _check_field_map(value)

    @field_validator("required")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        for path in value:
            _check_path(path)
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for path, pattern in value.items():
            _check_path(path)
            try:
                # A pattern whose meaning a later Python changes (``[[``, ``--`` and the like in
                # a set draw a FutureWarning) is refused rather than read two ways.
                with warnings.catch_warnings():
                    warnings.simplefilter("error", FutureWarning)
                    re.compile(pattern)
            except (re.error, FutureWarning) as exc:
                raise ValueError(
                    f"pattern for {path!r} is not a regular expression: {exc}"
                ) from None
        return value


_KIND_KEYS: Final[dict[str, frozenset[str]]] = {
    "sql": frozenset({"query"}),
    "rest": frozenset(
        {"http_method", "path", "query_params", "body", "headers", "idempotent", "not_found_status"}
    ),
    "soap": frozenset({"operation", "not_found_faults"}),
    "csv": frozenset({"lookup"}),
}
_KIND_REQUIRED: Final[dict[str, str | None]] = {
    "sql": "query",
    "rest": "path",
    "soap": "operation",
    "csv": None,
}


class AdapterFile(_Model):
    """The whole adapter file."""

    adapter: AdapterSection
    server: ServerSpec = Field(default_factory=ServerSpec)
    backends: dict[str, BackendSpec] = Field(min_length=1, max_length=64)
    methods: dict[str, MethodSpec] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _methods_fit_backends(self) -> AdapterFile:
        problems: list[str] = []
        for name, method in self.methods.items():
            backend = self.backends.get(method.backend)
            if backend is None:
                problems.append(
                    f"methods.{name}.backend: no backend named {method.backend!r} "
                    f"(known: {', '.join(sorted(self.backends))})"
                )
                continue
            kind = backend.kind
            needed = _KIND_REQUIRED[kind]
            if needed is not None and getattr(method, needed) is None:
                problems.append(f"methods.{name}.{needed}: required for a {kind} backend")
            for other, keys in _KIND_KEYS.items():
                if other == kind:
                    continue
                problems.extend(
                    f"methods.{name}.{key}: only for {other} backends, not {kind}"
                    for key in sorted(keys & method.model_fields_set)
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True, slots=True)
class LoadedAdapterFile:
    """A validated adapter file and the folder its relative paths are resolved against."""

    spec: AdapterFile
    base_dir: Path
    name: str

    def resolve(self, path: str) -> Path:
        """The absolute path of ``path`` as written in the file (relative to the file's folder)."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) and check the port; raise ValueError."""
    return split_address(value, what="listen address")


def _interpolate(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, str):

        def _sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {name} is not set")
            return ""

        return _ENV_RE.sub(_sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{where}.{i}", problems) for i, v in enumerate(value)]
    return value


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _normalise_key(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number (1-based) of the TOML key a pydantic error location names."""
    parts = [str(p) for p in loc]
    lines = text.splitlines()
    best_line, best_len = 0, 0
    sections: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines, start=1):
        match = _HEADER_RE.match(line)
        if match:
            key = _normalise_key(match.group(1)).split(".")
            sections.append((number, key))
            if key == parts[: len(key)] and len(key) > best_len:
                best_line, best_len = number, len(key)
    end = len(lines)
    for number, _key in sections:
        if number > best_line:
            end = number - 1
            break
    for part in parts[best_len:]:
        key_re = re.compile(rf"^\s*[\"']?{re.escape(part)}[\"']?\s*(\.|=)")
        for number in range(best_line + 1, end + 1):
            if key_re.match(lines[number - 1]):
                return number
        inline_re = re.compile(rf"[{{,]\s*[\"']?{re.escape(part)}[\"']?\s*=")
        for number in range(best_line + 1, end + 1):
            if inline_re.search(lines[number - 1]):
                return number
    return best_line or None


def parse_adapter_text(text: str, *, name: str = "adapter file") -> AdapterFile:
    """Validate the TOML ``text`` of an adapter file.

    Raises :class:`AdapterConfigError` listing every problem as ``line N: field.path: message``
    (values are never echoed). Nothing is returned half-valid.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AdapterConfigError(f"{name} is not valid TOML: {exc}") from None
    problems: list[str] = []
    backends = data.get("backends")
    if isinstance(backends, dict):
        data["backends"] = _interpolate(backends, "backends", problems)
    if problems:
        raise AdapterConfigError(f"{name} is invalid:\n  " + "\n  ".join(problems))
    try:
        return AdapterFile.model_validate(data)
    except ValidationError as exc:
        raise AdapterConfigError(_describe(exc, text, name)) from None


def _describe(error: ValidationError, text: str, name: str) -> str:
    lines: list[str] = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        key, sep, rest = message.partition(": ")
        if loc and sep and item["type"] == "value_error" and _PATH_RE.fullmatch(key):
            # A check over a whole table names the key it is about first: point at that key.
            loc, where, message = (*loc, key), f"{where}.{key}", rest
        line = _line_of(text, loc) if loc else None
        prefix = f"line {line}: " if line else ""
        if item["type"] == "value_error" and loc == ():
            # A whole-file check: its message already names the fields, one per '; '.
            lines.extend(_locate_named(part, text) for part in message.split("; "))
            continue
        lines.append(f"{prefix}{where}: {message}")
    return f"{name} is invalid:\n  " + "\n  ".join(lines)


def _locate_named(message: str, text: str) -> str:
    field, sep, _rest = message.partition(": ")
    if not sep:
        return message
    line = _line_of(text, tuple(field.split(".")))
    return f"line {line}: {message}" if line else message


def load_adapter_file(path: str | os.PathLike[str]) -> LoadedAdapterFile:
    """Read and validate the adapter file at ``path`` (size-bounded, UTF-8 TOML).

    Raises :class:`AdapterConfigError` naming the file by its name only, with the line and field
    of each problem.
    """
    file = Path(path)
    name = f"adapter file {file.name}"
    try:
        text = read_text(file, what="adapter file", limit=MAX_ADAPTER_FILE_BYTES)
    except ConfigError as exc:
        raise AdapterConfigError(exc.message) from None
    spec = parse_adapter_text(text, name=name)
    return LoadedAdapterFile(spec=spec, base_dir=file.resolve().parent, name=name)
