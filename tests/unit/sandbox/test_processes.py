"""Child-process supervision of the sandbox, on real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.processes import ManagedProcess, SandboxError, process_alive, stop_pid


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_exited_child_is_not_alive() -> None:
    child = subprocess.Popen(_python("pass"))
    deadline = time.monotonic() + 30
    while process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(child.pid)
    child.wait(timeout=5)  # process_alive reaped it; Popen learns so without a warning


def test_a_zombie_grandchild_is_not_alive(tmp_path: Path) -> None:
    """A process whose parent does not reap it stays a zombie: it counts as gone."""
    pid_file = tmp_path / "pid"
    parent = subprocess.Popen(
        _python(
            "import subprocess, sys, time\n"
            f"c = subprocess.Popen([sys.executable, '-c', 'pass'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
            "time.sleep(30)\n"
        )
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        grandchild = int(pid_file.read_text())
        while process_alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not process_alive(grandchild)
    finally:
        stop_pid(parent.pid, timeout=5)
        parent.wait(timeout=5)


def test_managed_process_ready_file_and_stop(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = ManagedProcess(
        name="sleeper",
        argv=_python(
            f"import json, time; open({str(ready)!r}, 'w').write(json.dumps({{'port': 1}}))\n"
            "time.sleep(60)"
        ),
        log_path=tmp_path / "sleeper.log",
        ready_path=ready,
    )
    process.start()
    try:
        assert process.wait_ready(timeout=30) == {"port": 1}
    finally:
        process.stop()
    assert not process_alive(process.pid)


def test_a_child_that_dies_before_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        name="crasher",
        argv=_python("import sys; print('cannot bind the port'); sys.exit(3)"),
        log_path=tmp_path / "crasher.log",
        ready_path=tmp_path / "ready.json",
    )
    process.start()
    with pytest.raises(SandboxError, match="cannot bind the port") as info:
        process.wait_ready(timeout=30)
    assert "exited with status 3" in info.value.message
