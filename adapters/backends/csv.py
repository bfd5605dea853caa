"""The csv backend: a CSV file with a header row, indexed on one key column.

A request's key matches a key cell exactly (``trim_keys`` removes padding from the file's key
cells, never from the request).

The file is read whole (up to ``max_file_bytes``) and indexed by the key column; each call first
compares the file's modification time and size with the indexed copy's and reloads when either
changed, so a file replaced in place is served as soon as it lands. Replace the file atomically
(write a new file, then rename it over the old one) so that a half-written file is never read.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.backends import Backend, BoundCall
from adapters.errors import (
    AdapterConfigError,
    InvalidLegacyAnswerError,
    LegacyUnavailableError,
)
from adapters.spec import CsvBackendSpec, MethodSpec

__all__ = ["CsvBackend", "CsvIndex", "load_index"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CsvIndex:
    """One loaded copy of the file: its header and its rows by key."""

    stamp: tuple[int, int] | None  # (mtime_ns, size) the copy was read at; None: do not reuse
    columns: tuple[str, ...]
    rows: Mapping[str, tuple[Mapping[str, str | None], ...]]


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return (st.st_mtime_ns, st.st_size)


def load_index(path: Path, spec: CsvBackendSpec, name: str) -> CsvIndex:
    """Read and index the file at ``path``.

    Raises :class:`LegacyUnavailableError` when the file cannot be read or is over the size
    bound, and :class:`InvalidLegacyAnswerError` when it is not CSV text in the configured
    encoding or has no key column. Texts name the backend, never the path.
    """
    try:
        with path.open("rb") as file:
            before = _stamp(os.fstat(file.fileno()))
            if before[1] > spec.max_file_bytes:
                raise LegacyUnavailableError(
                    f"CSV backend {name}: the file is over its size bound of "
                    f"{spec.max_file_bytes} bytes"
                )
            raw = file.read(spec.max_file_bytes + 1)
            after = _stamp(os.fstat(file.fileno()))
    except OSError as exc:
        _log.warning("backend %s: cannot read the file (%s)", name, type(exc).__name__)
        raise LegacyUnavailableError(f"CSV backend {name}: the file cannot be read") from None
    if len(raw) > spec.max_file_bytes:
        raise LegacyUnavailableError(
            f"CSV backend {name}: the file is over its size bound of {spec.max_file_bytes} bytes"
        )
    try:
        text = raw.decode(spec.encoding)
    except (UnicodeDecodeError, LookupError):
        raise InvalidLegacyAnswerError(
            f"CSV backend {name}: the file is not {spec.encoding} text"
        ) from None
    text = text.removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=spec.delimiter, strict=True)
    rows: dict[str, list[Mapping[str, str | None]]] = {}
    try:
        columns = tuple(reader.fieldnames or ())
        if spec.key not in columns:
            raise InvalidLegacyAnswerError(
                f"CSV backend {name}: the file has no key column {spec.key!r}"
            )
        for row in reader:
            if None in row:
                raise InvalidLegacyAnswerError(
                    f"CSV backend {name}: line {reader.line_num} has more cells than the header"
                )
            key = row.get(spec.key) or ""
            if spec.trim_keys:
                key = key.strip()
            # A CSV cell cannot be null: an empty cell is a missing value (defaults apply).
            rows.setdefault(key, []).append({k: (v if v != "" else None) for k, v in row.items()})
    except csv.Error:
        raise InvalidLegacyAnswerError(
            f"CSV backend {name}: line {reader.line_num} is not valid CSV"
        ) from None
    return CsvIndex(
        stamp=before if before == after else None,
        columns=columns,
        rows={key: tuple(found) for key, found in rows.items()},
    )


class CsvBackend(Backend):
    """A CSV file looked up by key, reloaded when it changes."""

    kind = "csv"
    answers_rows = True
    text_cells = True

    def __init__(self, name: str, spec: CsvBackendSpec, base_dir: Path) -> None:
        super().__init__(name, timeout=spec.timeout_seconds)
        self.spec = spec
        path = Path(spec.path).expanduser()
        self.path = path if path.is_absolute() else base_dir / path
        self._index: CsvIndex | None = None
        self._lock = asyncio.Lock()

    def bind(
        self,
        method: str,
        spec: MethodSpec,
        params: frozenset[str],
        *,
        lists: Mapping[str, int] | None = None,
    ) -> BoundCall:
        """Return the lookup call; its key is ``lookup``, or the request's only parameter."""
        lookup = spec.lookup
        if lookup is None:
            if len(params) != 1:
                raise AdapterConfigError(
                    f"methods.{method}.lookup: name the parameter that holds the key "
                    f"(parameters: {', '.join(sorted(params)) or 'none'})"
                )
            (lookup,) = params
        elif lookup not in params:
            raise AdapterConfigError(
                f"methods.{method}.lookup: no request parameter {lookup!r} "
                f"(parameters: {', '.join(sorted(params)) or 'none'})"
            )
        return _CsvCall(self, lookup)

    async def index(self) -> CsvIndex:
        """The current index, reloaded (in a thread) if the file changed since it was read."""
        try:
            stamp = _stamp(await asyncio.to_thread(os.stat, self.path))
        except OSError as exc:
            _log.warning("backend %s: cannot stat the file (%s)", self.name, type(exc).__name__)
            raise LegacyUnavailableError(
                f"CSV backend {self.name}: the file cannot be read"
            ) from None
        current = self._index
        if current is not None and current.stamp == stamp:
            return current
        async with self._lock:
            current = self._index
            if current is None or current.stamp != stamp:
                current = await asyncio.to_thread(load_index, self.path, self.spec, self.name)
                self._index = current
                _log.info("backend %s: indexed %d keys", self.name, len(current.rows))
            return current

    async def aclose(self) -> None:
        self._index = None


class _CsvCall(BoundCall):
    def __init__(self, backend: CsvBackend, lookup: str) -> None:
        self.backend = backend
        self.lookup = lookup

    async def fetch(self, params: Mapping[str, Any], budget: float) -> Any:
        index = await self.backend.index()
        # Exact: a padded request value is another key (it must not reach someone's record).
        key = str(params[self.lookup])
        return [dict(row) for row in index.rows.get(key, ())]

    async def probe(self, budget: float) -> frozenset[str] | None:
        index = await self.backend.index()
        return frozenset(index.columns)
