"""How every Ruta process writes its log: one setup, two formats, one level rule for servers.

``ruta --log-level LEVEL --log-format text|json …`` (or ``RUTA_LOG_LEVEL`` / ``RUTA_LOG_FORMAT``)
calls :func:`configure_logging` once, before any command runs, so every part logs the same way
without configuring anything itself:

- ``text``: ``TIME LEVEL LOGGER MESSAGE``, one line per record, for people;
- ``json``: one JSON object per line, for log shippers, with ``time`` (UTC, ISO 8601),
  ``level``, ``logger``, ``message`` and every field the caller passed in ``extra=`` (a per-call
  line carries ``method``, ``status``, ``fault``, ``fault_id``, ``message_id``, ``duration_ms``).

Long-running servers log one line per call at ``info``; :func:`serve_at_info` lowers the level
to ``info`` for them unless the operator chose a level. Log lines never carry secrets or the
values of requests and answers: callers pass identifiers, codes and durations only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final, TextIO

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_LOG_LEVEL",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "configure_logging",
    "serve_at_info",
]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
DEFAULT_LOG_LEVEL: Final = "warning"
DEFAULT_LOG_FORMAT: Final = "text"
#: Longest message a JSON line carries (a bound on what one record can put in the log).
MAX_JSON_MESSAGE_CHARS: Final = 16 * 1024

_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if len(message) > MAX_JSON_MESSAGE_CHARS:
            message = message[: MAX_JSON_MESSAGE_CHARS - 3] + "..."
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class _RutaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


def configure_logging(
    *,
    level: str = DEFAULT_LOG_LEVEL,
    log_format: str = DEFAULT_LOG_FORMAT,
    stream: TextIO | None = None,
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (standard error) as
    ``log_format``. Replaces the handler an earlier call installed, so calling it twice leaves
    one; handlers installed by others (a test's log capture) are left alone.

    Raises ValueError for a level or format not in :data:`LOG_LEVELS` / :data:`LOG_FORMATS`.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = _RutaHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _RutaHandler):  # others' handlers (a test's capture) stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def serve_at_info(*, level_chosen: bool) -> None:
    """For a long-running server: log ``info`` lines (one per call) unless the operator chose a
    level (``--log-level`` or ``RUTA_LOG_LEVEL``); a chosen level is kept as it is."""
    root = logging.getLogger()
    if not level_chosen and root.level > logging.INFO:
        root.setLevel(logging.INFO)
