"""Operational records of refused exchanges: ``DATA_DIR/refusals.jsonl``.

A refusal decided before anything is signed (a missing header, no contract, an outdated
configuration, ...) leaves nothing in the message log, so an auditor's bundle cannot show it.
Each refused exchange, signed or not, is kept here as one JSON line for the operator: time, role
(``consumer``/``provider``), fault code, fault id, gRPC status, client, service, method and
message id, as far as the call was understood; never bodies, subjects, user ids or purposes.
``ruta ss refusals`` reads them.

These are operational records, as trustworthy as the server's operator: no signature, no tree.
Writing one never fails or delays a call much: a line is appended to an open file (no sync), and
a write error is logged once and counted. The file is bounded: past :data:`MAX_REFUSALS_BYTES`
it becomes ``refusals.jsonl.1`` (the previous ``.1`` is dropped) and a new one starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "MAX_REFUSALS_BYTES",
    "MAX_REFUSAL_LINE_BYTES",
    "REFUSALS_FILE",
    "RefusalLog",
    "RefusalRecord",
    "read_refusals",
]

REFUSALS_FILE: Final = "refusals.jsonl"
#: Size past which the file is rotated (one previous file is kept): about 80,000 records.
MAX_REFUSALS_BYTES: Final = 32 << 20
#: Longest line read back; a longer one (not written by this module) is skipped.
MAX_REFUSAL_LINE_BYTES: Final = 8192
#: Longest identifier or code kept in a record (the rest is cut).
_MAX_FIELD_CHARS: Final = 300

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    """One refused exchange, as far as the server understood the call (``unknown`` for a
    client or service the global configuration does not list, ``-`` for no message id)."""

    at: str
    role: str
    fault: str
    fault_id: str
    status: str
    client: str
    service: str
    method: str
    message_id: str

    def to_line(self) -> bytes:
        fields = {key: str(value)[:_MAX_FIELD_CHARS] for key, value in asdict(self).items()}
        return (json.dumps(fields, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")

    @classmethod
    def from_json(cls, data: Any) -> RefusalRecord | None:
        """The record in ``data`` (a parsed line), or ``None`` when it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{f.name: str(data[f.name]) for f in fields(cls)})
        except KeyError:
            return None


class RefusalLog:
    """Appends :class:`RefusalRecord` lines to ``path`` (created 0600), rotating past
    ``max_bytes``. :meth:`add` never raises; :attr:`failures` counts the records lost."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_REFUSALS_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.failures = 0
        self._file: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(descriptor, "ab", buffering=0)
            self._size = os.fstat(descriptor).st_size
        return self._file

    def add(self, record: RefusalRecord) -> None:
        """Append ``record``; on an error, log it (the first time) and count it."""
        line = record.to_line()
        try:
            if self._file is not None and self._size + len(line) > self.max_bytes:
                self.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            file = self._open()
            file.write(line)
            self._size += len(line)
        except OSError as exc:
            if not self.failures:
                _log.warning("refusal records cannot be written: %s", exc.strerror or exc)
            self.failures += 1
            self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # nothing is buffered: writes are unbuffered
                self._file.close()
            self._file = None


def read_refusals(path: Path) -> Iterator[RefusalRecord]:
    """The records in ``path``'s rotated file then ``path``, oldest first; lines that are not
    records (or over :data:`MAX_REFUSAL_LINE_BYTES`) are skipped."""
    for source in (path.with_name(path.name + ".1"), path):
        try:
            handle = source.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            while line := handle.readline(MAX_REFUSAL_LINE_BYTES + 1):
                if len(line) > MAX_REFUSAL_LINE_BYTES:
                    while line and not line.endswith(b"\n"):
                        line = handle.readline(MAX_REFUSAL_LINE_BYTES + 1)
                    continue
                try:
                    record = RefusalRecord.from_json(json.loads(line))
                except (ValueError, UnicodeDecodeError):
                    continue
                if record is not None:
                    yield record
