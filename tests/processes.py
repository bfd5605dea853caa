"""Waiting for a process a test started until it serves: the ready file it writes once every
listener is bound (:func:`ruta.readiness.write_ready_file`, written atomically)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, Final

#: How long a started process gets to write its ready file unless a test says otherwise.
READY_SECONDS: Final = 60.0
#: How much of the process's log a failure shows.
_LOG_TAIL_CHARACTERS: Final = 3000


async def ready_file(
    path: Path,
    process: asyncio.subprocess.Process | subprocess.Popen[bytes],
    *,
    seconds: float = READY_SECONDS,
    log: Path | None = None,
) -> dict[str, Any]:
    """The JSON object ``process`` wrote to ``path``, once it is there.

    Fails the test (with the end of ``log``, when given) if the process exits first or
    ``seconds`` pass.
    """

    def failure(what: str) -> str:
        tail = log.read_text(errors="replace")[-_LOG_TAIL_CHARACTERS:] if log else ""
        return f"{what}; its log ends:\n{tail}" if tail else what

    try:
        async with asyncio.timeout(seconds):
            while not path.exists():  # noqa: ASYNC240 - a small local file, polled
                code = (
                    process.poll() if isinstance(process, subprocess.Popen) else process.returncode
                )
                assert code is None, failure(f"the process exited ({code}) before it was ready")
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            failure(f"{path.name} did not appear within {seconds:.0f} s")
        ) from None
    content: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))  # noqa: ASYNC240
    return content
