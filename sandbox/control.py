"""Asking a running sandbox to do something: ``ruta sandbox restart --dir DIR SERVER``.

The supervising process (``ruta sandbox up``) owns its children: only it can restart one so that
the new process is again its child (reaped by it, stopped by ``down``), logs to the same file at
the same level, and is named in ``sandbox.json``. A command asks it through files in
``DIR/control/``: it writes ``restart-ID.request`` (JSON: the request id and the server named),
the supervisor picks it up within a second, does the restart and writes ``ID.answer`` (JSON: the
server's id and new pid, or an error), which the command reads and removes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ruta.files import FileReadError, read_bounded, write_atomically
from sandbox.processes import READY_TIMEOUT_S, STOP_TIMEOUT_S, SandboxError, process_alive

__all__ = [
    "CONTROL_DIR",
    "MAX_SERVER_NAME_LENGTH",
    "RESTART_TIMEOUT_S",
    "RestartRequest",
    "answer_restart",
    "request_restart",
    "take_restart_requests",
]

CONTROL_DIR: Final = "control"
#: How long ``ruta sandbox restart`` waits for the supervisor's answer: stopping the old process,
#: starting the new one and its ready file, and a margin for the supervisor to notice the request.
RESTART_TIMEOUT_S: Final = STOP_TIMEOUT_S + READY_TIMEOUT_S + 30.0
#: Longest server name a request may carry (a server id is at most four 64-character parts).
MAX_SERVER_NAME_LENGTH: Final = 4 * 65
#: Largest request file read (a small JSON object).
MAX_CONTROL_FILE_BYTES: Final = 4096
#: Largest answer file read; an error's text (it may end with a log's tail) is cut to fit.
MAX_ANSWER_FILE_BYTES: Final = 1 << 16
_MAX_ERROR_CHARS: Final = 8192
#: Most requests the supervisor takes in one round (the rest wait for the next).
MAX_REQUESTS_PER_ROUND: Final = 8

_REQUEST_ID: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class RestartRequest:
    """One ``ruta sandbox restart``: which server, and the id its answer is filed under."""

    request_id: str
    server: str


def _control(directory: Path) -> Path:
    return directory / CONTROL_DIR


def _supervisor_alive(directory: Path, pid_file: str) -> bool:
    try:
        pid = int(read_bounded(directory / pid_file, 64).strip())
    except (FileReadError, ValueError):
        return False
    return process_alive(pid)


def request_restart(
    directory: Path, server: str, *, pid_file: str, timeout: float = RESTART_TIMEOUT_S
) -> dict[str, Any]:
    """Ask the sandbox supervising ``directory`` to restart ``server`` (its id or its agency's
    folder name); wait for it and return the answer (``server``, ``pid``).

    Raises :class:`SandboxError` when no sandbox runs there, when the supervisor refuses (an
    unknown server, a server that did not come back: the message says which and ends with the
    tail of its log), or when no answer came within ``timeout`` seconds. A request left behind
    by a timeout is still carried out when the supervisor gets to it.
    """
    if not server or len(server) > MAX_SERVER_NAME_LENGTH:
        raise SandboxError("give the server's id (DEV/GOV/POP/ss1) or its folder name (pop)")
    if not _supervisor_alive(directory, pid_file):
        raise SandboxError(f"no sandbox is running in {directory} (ruta sandbox up --dir DIR)")
    control = _control(directory)
    control.mkdir(exist_ok=True)
    request_id = uuid.uuid4().hex
    answer_path = control / f"{request_id}.answer"
    write_atomically(
        control / f"restart-{request_id}.request",
        json.dumps({"id": request_id, "server": server}).encode("utf-8"),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer_path.exists():
            try:
                answer = json.loads(read_bounded(answer_path, MAX_ANSWER_FILE_BYTES))
            except (FileReadError, ValueError) as exc:
                raise SandboxError(f"the sandbox's answer could not be read: {exc}") from None
            answer_path.unlink(missing_ok=True)
            if not isinstance(answer, dict):
                raise SandboxError("the sandbox's answer is not a JSON object")
            if answer.get("error"):
                raise SandboxError(str(answer["error"]))
            return answer
        if not _supervisor_alive(directory, pid_file):
            raise SandboxError(f"the sandbox in {directory} stopped before it answered")
        time.sleep(0.1)
    raise SandboxError(f"the sandbox did not answer within {timeout:.0f} s")


def take_restart_requests(directory: Path) -> Iterator[RestartRequest]:
    """The restart requests waiting in ``directory`` (oldest first, at most
    :data:`MAX_REQUESTS_PER_ROUND`), each removed as it is taken; unreadable ones are dropped."""
    control = _control(directory)
    if not control.is_dir():
        return
    waiting = sorted(control.glob("restart-*.request"), key=lambda p: p.stat().st_mtime_ns)
    for path in waiting[:MAX_REQUESTS_PER_ROUND]:
        try:
            content = json.loads(read_bounded(path, MAX_CONTROL_FILE_BYTES))
        except (FileReadError, ValueError):
            content = None
        path.unlink(missing_ok=True)
        if not isinstance(content, dict):
            continue
        request_id, server = content.get("id"), content.get("server")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            continue
        if not isinstance(server, str) or len(server) > MAX_SERVER_NAME_LENGTH:
            server = ""
        yield RestartRequest(request_id=request_id, server=server)


def answer_restart(
    directory: Path,
    request: RestartRequest,
    *,
    server: str = "",
    pid: int = 0,
    error: str = "",
) -> None:
    """File the answer to ``request``: the restarted server's id and pid, or ``error``."""
    body: dict[str, Any] = {"id": request.request_id}
    if error:
        body["error"] = error if len(error) <= _MAX_ERROR_CHARS else "…" + error[-_MAX_ERROR_CHARS:]
    else:
        body |= {"server": server, "pid": pid}
    write_atomically(
        _control(directory) / f"{request.request_id}.answer", json.dumps(body).encode("utf-8")
    )
