"""How a started process and its supervisor (the sandbox, a test) talk: ready files and stop
signals.

The process writes one small JSON object, ``{"address": "HOST:PORT", "pid": ..., ...}``, once
every listener is bound, so it can be started on port 0 (:func:`write_ready_file`), and runs
until SIGTERM or SIGINT (:func:`stop_event`), then shuts down cleanly. Whoever looks for it
(the CLI, the sandbox) reads it with :func:`read_ready_file`.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any, Final

from ruta.files import FileReadError, read_bounded, write_atomically

__all__ = ["MAX_READY_FILE_BYTES", "read_ready_file", "stop_event", "write_ready_file"]

#: Largest ready file read (a few addresses and a pid).
MAX_READY_FILE_BYTES: Final = 64 * 1024


def write_ready_file(path: Path, content: dict[str, object]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a reader never sees half a file).

    Raises :class:`OSError` when the folder is not writable; ``path`` is then left as it was.
    """
    write_atomically(path, json.dumps(content).encode("utf-8"))


def read_ready_file(path: Path) -> dict[str, Any] | None:
    """The JSON object a process wrote to ``path`` with :func:`write_ready_file`, or ``None``
    when there is none to use: missing (not ready, or stopped), unreadable, over
    :data:`MAX_READY_FILE_BYTES`, or not a JSON object."""
    try:
        data = json.loads(read_bounded(path, MAX_READY_FILE_BYTES, what="ready file"))
    except (FileReadError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stop_event() -> asyncio.Event:
    """An event set when SIGTERM or SIGINT arrives, from now on (the handlers are installed on
    the running loop at once, so a signal during start-up is not lost). Raises
    :class:`RuntimeError` outside a running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
