"""``ruta sandbox restart``'s request channel: a request filed, taken and answered, with a
supervisor played by a thread of the test (its pid file names this process)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.control import (
    MAX_SERVER_NAME_LENGTH,
    answer_restart,
    request_restart,
    take_restart_requests,
)
from sandbox.processes import SandboxError

PID_FILE = "sandbox.pid"


def _supervisor(directory: Path, answers: dict[str, int], stop: threading.Event) -> None:
    """Answer every request: a known server with its pid, anything else with an error."""
    while not stop.is_set():
        for request in take_restart_requests(directory):
            if request.server in answers:
                answer_restart(
                    directory, request, server=request.server, pid=answers[request.server]
                )
            else:
                answer_restart(directory, request, error=f"no server {request.server!r}")
        time.sleep(0.02)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    thread = threading.Thread(
        target=_supervisor, args=(tmp_path, {"DEV/GOV/POP/ss1": 4321}, stop), daemon=True
    )
    thread.start()
    yield tmp_path
    stop.set()
    thread.join(timeout=10)


def test_a_request_is_answered_and_cleaned_up(running: Path) -> None:
    answer = request_restart(running, "DEV/GOV/POP/ss1", pid_file=PID_FILE, timeout=30)
    assert answer["server"] == "DEV/GOV/POP/ss1"
    assert answer["pid"] == 4321
    assert list((running / "control").iterdir()) == []


def test_the_supervisors_refusal_is_raised(running: Path) -> None:
    with pytest.raises(SandboxError, match="no server 'nope'"):
        request_restart(running, "nope", pid_file=PID_FILE, timeout=30)


def test_no_supervisor_no_request(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="no sandbox is running"):
        request_restart(tmp_path, "pop", pid_file=PID_FILE, timeout=1)
    assert not (tmp_path / "control").exists()


@pytest.mark.parametrize("server", ["", "x" * (MAX_SERVER_NAME_LENGTH + 1)])
def test_a_name_out_of_bounds_is_refused_before_asking(tmp_path: Path, server: str) -> None:
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")
    with pytest.raises(SandboxError, match="server's id"):
        request_restart(tmp_path, server, pid_file=PID_FILE, timeout=1)


def test_unreadable_requests_are_dropped(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    (control / "restart-a.request").write_text("not json")
    (control / "restart-b.request").write_text('{"id": "../../etc", "server": "pop"}')
    (control / "restart-c.request").write_text(f'{{"id": "{"0" * 32}", "server": "pop"}}')
    taken = list(take_restart_requests(tmp_path))
    assert [(r.request_id, r.server) for r in taken] == [("0" * 32, "pop")]
    assert list(control.iterdir()) == []
