"""Child processes of a sandbox: start them with their own log file, wait until they say they are
ready, and stop them (gracefully first, then for good).

A process reports readiness by writing a JSON file (``ready.json``) once every listener is bound;
the sandbox reads the bound addresses from it, so every process can be started on port 0 and two
sandboxes never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ruta.faults import Fault, RutaError
from ruta.files import FileProblem, FileReadError, read_bounded
from ruta.readiness import MAX_READY_FILE_BYTES

__all__ = [
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "ManagedProcess",
    "SandboxError",
    "process_alive",
    "ruta_command",
    "stop_pid",
]

#: How long a child may take to bind its listeners and write its ready file.
READY_TIMEOUT_S: Final = 60.0
#: How long a child may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 15.0


class SandboxError(RutaError):
    """The sandbox could not be set up, started or stopped; the message says which step."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


def ruta_command(*args: str) -> list[str]:
    """The argv that runs ``ruta ARGS`` with the interpreter running this process.

    ``-P`` keeps the working directory off ``sys.path``, so a folder named like a part (a
    sandbox's ``registry/`` data folder, say) can never shadow the installed package.
    """
    return [sys.executable, "-P", "-m", "ruta", *args]


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` is running: a zombie (exited, not yet reaped) is not.

    Reaps ``pid`` if it is our own exited child.
    """
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
    if waited == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return False  # no procfs (or gone): kill(0) already said it exists
    # The state follows the parenthesised command name, which may itself contain ')'.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def stop_pid(pid: int, *, timeout: float = STOP_TIMEOUT_S) -> None:
    """Send SIGTERM to ``pid``, wait up to ``timeout`` seconds, then SIGKILL it (not its
    process group: sandbox children lead their own sessions and are stopped one by one)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.05)


@dataclass
class ManagedProcess:
    """One child process of the sandbox, with its log file and ready file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready_path: Path | None = None
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise SandboxError(f"{self.name} was never started")
        return self.popen.pid

    def start(self) -> None:
        """Start the process detached from our terminal's signals (the sandbox stops it)."""
        if self.ready_path is not None:
            self.ready_path.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - argv is built by the sandbox itself
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def wait_ready(self, *, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the ready file exists and parses; return its content.

        Raises :class:`SandboxError` naming the process and the tail of its log if it exits or
        times out first.
        """
        if self.ready_path is None:
            raise SandboxError(f"{self.name} has no ready file to wait for")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise SandboxError(
                    f"{self.name} exited with status {self.popen.returncode} before it was "
                    f"ready; its log ends:\n{self.log_tail()}"
                )
            if self.ready_path.exists():
                try:
                    content: dict[str, Any] = json.loads(
                        read_bounded(self.ready_path, MAX_READY_FILE_BYTES, what="ready file")
                    )
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass  # not whole yet (a writer without the atomic writer); try again
                except FileReadError as exc:
                    if exc.problem is not FileProblem.MISSING:
                        raise SandboxError(f"{self.name}: {exc.message}") from None
                else:
                    return content
            time.sleep(0.05)
        raise SandboxError(
            f"{self.name} was not ready after {timeout:.0f} s; its log ends:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            stop_pid(self.popen.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
